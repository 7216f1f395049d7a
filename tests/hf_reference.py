"""Reference decoder for tests and bench/beam.py (not part of the library): HF `generate` with beam search and
`prefix_allowed_tokens_fn` over an `ItemTrie`, returning results in the format of `sidrec.generate.beam_search`,
so the tests can check that sidrec's decoder finds the same top-k items with the same scores.

Tests import it directly (tests/ is on sys.path under pytest); bench/beam.py adds tests/ to sys.path.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from sidrec.generate.beam import NEG_INF, _as_trie, left_pad
from sidrec.generate.trie import ItemTrie


def _hf_results(trie: ItemTrie, paths: torch.Tensor, beam_scores: torch.Tensor, k: int,
                constrained: bool) -> tuple[list[int], list[float]]:
    """One case of `generate` output -> its k best results: (K, P) paths and (K,) scores, best first."""
    items: list[int] = []
    scores: list[float] = []
    for path, score in zip(paths.tolist(), beam_scores.tolist()):
        item = trie.item_of(path)
        # HF seeds the duplicate beams of step 0 with -1e9; those and dead beams are not results
        if score > -1e8 and (item not in items or (item < 0 and not constrained)):
            items.append(item)
            scores.append(score)
    return items[:k], scores[:k]


def hf_generate_topk(model, prompts: Sequence[Sequence[int]], trie: ItemTrie | np.ndarray, beam_size: int = 10,
                     k: int = 10, batch_size: int = 16, pad_token_id: int | None = None,
                     constrained: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reference decoder: HF `generate` (beam search + `prefix_allowed_tokens_fn`) on left-padded batches.

    Args: as `beam_search` (no banned items); constrained=False drops the trie, as `unconstrained_beam_search`.
    Returns:
        items (B, k) int64 and scores (B, k) float32 in the format of `beam_search`.
    """
    trie = _as_trie(trie)
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    # generate() fills a None eos_token_id from model.generation_config (Llama: eos 2, an item token here), so eos
    # is set to an id past the vocabulary: no beam stops before P tokens. length_penalty 0: plain summed log-probs
    vocab = model.get_output_embeddings().weight.shape[0]
    config = GenerationConfig(num_beams=beam_size, num_return_sequences=beam_size, max_new_tokens=trie.depth,
                              do_sample=False, length_penalty=0.0, early_stopping=True, eos_token_id=vocab,
                              pad_token_id=pad_token_id, return_dict_in_generate=True, output_scores=True)
    allowed_cache: dict[tuple[int, ...], list[int]] = {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    items = np.full((len(prompts), k), -1, dtype=np.int64)
    scores = np.full((len(prompts), k), NEG_INF, dtype=np.float32)
    for start in range(0, len(prompts), batch_size):
        ids, mask, _ = left_pad(prompts[start:start + batch_size], pad_token_id, device)
        t = ids.shape[1]

        def allowed_fn(batch_id: int, sent: torch.Tensor) -> list[int]:
            prefix = tuple(sent[t:].tolist())
            if prefix not in allowed_cache:  # a dead beam still needs one token: it keeps its -inf score
                allowed_cache[prefix] = trie.allowed(prefix).tolist() or [pad_token_id]
            return allowed_cache[prefix]

        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                 prefix_allowed_tokens_fn=allowed_fn if constrained else None)
        paths = out.sequences[:, t:].view(len(ids), beam_size, -1).cpu()  # (b, K, P)
        beam_scores = out.sequences_scores.view(len(ids), beam_size).cpu()  # (b, K)
        for i in range(len(ids)):
            found, top = _hf_results(trie, paths[i], beam_scores[i], k, constrained)
            items[start + i, :len(found)] = found
            scores[start + i, :len(found)] = top
    model.train(was_training)
    return items, scores
