"""Trie-constrained beam search over Semantic-ID paths (TIGER, Rajput et al. 2023, sec. 3.2; trie as in GENRE, 2021).

Every catalogue item is a fixed-length path of P token ids. Decoding keeps `beam_size` partial paths per
case; at depth d each beam may only extend to a token that continues some item's path (an `ItemTrie` edge),
so every finished beam names a real item. A beam's score is the sum of the model's full-vocabulary
log-probabilities of its tokens, log p(t_1..t_P | prompt) = sum_d log softmax(logits_d)[t_d]: the trie masks
continuations but does not renormalize, the same score as HF `generate` with `prefix_allowed_tokens_fn`.

The decoder works for any HF causal LM that accepts a custom 4-D attention mask (GPT-2, Llama, ...): prompts are
left-padded with explicit position ids, one shared prefill per case batch fills the KV cache, and every later
step feeds the K beam tokens of a case as one row with a tree-attention mask, so the prompt's keys and values
are never copied per beam (HF `generate` prefills the prompt once per beam instead).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sidrec.generate.trie import ItemTrie

NEG_INF = float("-inf")


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists; returns input_ids, attention_mask and position_ids, each (B, T) int64."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(prompts), t), dtype=torch.int64)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = torch.as_tensor(list(p), dtype=torch.int64)
        mask[i, t - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens at 0..len-1, as if unpadded
    return ids.to(device), mask.to(device), pos.to(device)


def _ban(logp: torch.Tensor, nodes: torch.Tensor, depth: int, trie: ItemTrie, valid: torch.Tensor,
         exhausted: list[torch.Tensor] | None) -> torch.Tensor:
    """-inf on every edge that leads only to items banned for the beam's case (at any depth, so beams are never
    wasted on prefixes with nothing left to recommend).

    Args:
        logp: (b * width, A) candidate log-probs of the trie children; nodes: (b, width) beam nodes at `depth`.
        valid: (b * width, A) which child slots exist; exhausted: from `ItemTrie.exhausted`, or None.
    """
    if exhausted is None or len(exhausted[depth]) == 0:
        return logp
    b, width = nodes.shape
    start = trie.offsets[depth][nodes.view(-1).clamp(min=0)]  # (R,) first child edge of each beam
    child = start[:, None] + torch.arange(logp.shape[1])[None, :]  # (R, A) child edge ids
    case = torch.arange(b).repeat_interleave(width)[:, None]  # (R, 1)
    edges = len(trie.subtree[depth])
    dead = torch.isin(case * edges + child, exhausted[depth]) & valid.cpu()
    return logp.masked_fill(dead.to(logp.device), NEG_INF)


def _candidates(logits: torch.Tensor, nodes: torch.Tensor, depth: int, trie: ItemTrie,
                banned: list[torch.Tensor] | None, constrained: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-beam next tokens and their log-probs: the trie's children, or the whole vocabulary.

    Args:
        logits: (R, V) next-token logits of the R = b * width beams; modified in place.
        nodes: (b, width) CPU node ids of the beams at `depth`.
        depth: number of item tokens decoded so far.
        trie: the catalogue trie.
        banned: exhausted edges per depth (see `_ban`); constrained mode only.
        constrained: restrict to the trie's children (else every token of the vocabulary).
    Returns:
        tokens (R, A) and log-probs (R, A), -inf for a disallowed slot; A = V when unconstrained.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (R, 1): normalizer over the full vocabulary
    if not constrained:
        return torch.arange(logits.shape[1], device=logits.device).expand_as(logits), logits - lse
    tokens, valid = trie.children(depth, nodes.view(-1))  # (R, A) each
    tokens, valid = tokens.to(logits.device), valid.to(logits.device)
    if int(tokens.max()) >= logits.shape[1]:
        raise ValueError(f"generate: item token {int(tokens.max())} is outside the model vocabulary {logits.shape[1]}")
    logp = (logits.gather(1, tokens) - lse).masked_fill(~valid, NEG_INF)
    return tokens, _ban(logp, nodes, depth, trie, valid, banned)


def _last_logits_only(model) -> dict:
    """{"logits_to_keep": 1} when the model (or the base model under a PEFT wrapper) accepts it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool "may attend" mask as the additive float mask attention adds to its scores: 0 where allowed, the
    dtype's minimum elsewhere (what transformers' eager attention takes, and sdpa given a float mask)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _tree_mask(prompt_mask: torch.Tensor, ancestors: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D attention mask of one decode step: each new beam token sees the prompt, its ancestors, itself.

    Args:
        prompt_mask: (b, T) 1 for real prompt tokens, 0 for left padding.
        ancestors: (b, K, S) bool, which of the S beam tokens already in the cache lie on each new beam's path.
        dtype: the model's floating dtype.
    Returns:
        (b, 1, K, T + S + K) float mask, 0 where attention is allowed and the dtype's minimum elsewhere.
    """
    b, k, _ = ancestors.shape
    own = torch.eye(k, dtype=torch.bool, device=ancestors.device).expand(b, k, k)
    keep = torch.cat([prompt_mask.bool()[:, None, :].expand(b, k, -1), ancestors, own], dim=2)
    return additive_mask(keep, dtype)[:, None]


@torch.inference_mode()
def _decode_batch(model, prompts: Sequence[Sequence[int]], trie: ItemTrie, beam_size: int,
                  banned: list[torch.Tensor] | None, pad_token_id: int,
                  constrained: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for one batch of cases: one shared prefill, then P - 1 tree-attention decode steps.

    The KV cache is never copied per beam: it keeps one row per case, and each step appends the K new beam
    tokens of a case side by side (positions = their depth). A 4-D mask lets every beam token attend to the
    prompt and to the tokens of its own path only, so the K beams share the prompt's keys and values (tree
    attention, as in speculative-decoding verifiers). Tokens of pruned beams stay in the cache, masked out.

    Returns:
        leaves (b, K) leaf node ids (-1 = path not an item), scores (b, K) summed log-probs, descending, and the
        beams after each of the first P - 1 tokens: prefix nodes (b, P - 1, K) (trie node ids at depth d + 1 in
        slot d, -1 = none) and their prefix scores (b, P - 1, K), each depth's beams best first.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype if param.dtype.is_floating_point else torch.float32
    b, k = len(prompts), beam_size
    ids, mask, pos = left_pad(prompts, pad_token_id, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **_last_logits_only(model))
    cache, logits = out.past_key_values, out.logits[:, -1]  # logits (b, V)
    next_pos = pos[:, -1] + 1  # (b,)
    scores = torch.zeros((b, 1), device=device)  # (b, width): width 1 before the first step
    nodes = torch.zeros((b, 1), dtype=torch.int64)  # (b, width) on CPU, where the trie lives
    ancestors = torch.zeros((b, 1, 0), dtype=torch.bool, device=device)  # (b, width, S) beam tokens on each path
    prefix_nodes, prefix_scores = [], []  # the beams after d + 1 tokens, d < P - 1 (for the cold-start fill)
    for d in range(trie.depth):
        width = scores.shape[1]
        tokens, cand = _candidates(logits, nodes, d, trie, banned, constrained)  # (b * width, A)
        a = tokens.shape[1]
        cand = (scores.view(-1, 1) + cand).view(b, width * a)  # (b, width * A)
        tokens = tokens.reshape(b, width * a)
        if width * a < k:  # tiny catalogue: pad with impossible candidates
            cand = torch.cat([cand, cand.new_full((b, k - width * a), NEG_INF)], dim=1)
            tokens = torch.cat([tokens, tokens.new_zeros((b, k - width * a))], dim=1)
        scores, idx = cand.topk(k, dim=1)  # (b, K), sorted descending
        token = tokens.gather(1, idx)  # (b, K)
        beam = (idx // a).clamp(max=width - 1)  # (b, K); padded candidates point at any beam of the case
        src = (torch.arange(b, device=device)[:, None] * width + beam).view(-1)  # (b * K,) parent beam row
        nodes = trie.step(d, nodes.view(-1)[src.cpu()], token.view(-1).cpu()).view(b, k)
        if d == trie.depth - 1:
            break
        prefix_nodes.append(nodes)
        prefix_scores.append(scores.cpu())
        # a new beam's path = its parent's path + the parent's own token (the last K slots of the cache)
        ancestors = ancestors.gather(1, beam[..., None].expand(b, k, ancestors.shape[2]))
        if d > 0:
            ancestors = torch.cat([ancestors, torch.nn.functional.one_hot(beam, width).bool()], dim=2)
        out = model(input_ids=token, attention_mask=_tree_mask(mask, ancestors, dtype),
                    position_ids=(next_pos + d)[:, None].expand(b, k), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits.reshape(b * k, -1)  # logits (b * K, V)
    if prefix_nodes:
        prefixes = (torch.stack(prefix_nodes, 1), torch.stack(prefix_scores, 1).float())  # (b, P - 1, K) each
    else:
        prefixes = (torch.zeros((b, 0, k), dtype=torch.int64), torch.zeros((b, 0, k)))
    return nodes, scores.cpu(), prefixes


def _as_trie(trie_or_tokens: ItemTrie | np.ndarray) -> ItemTrie:
    return trie_or_tokens if isinstance(trie_or_tokens, ItemTrie) else ItemTrie(trie_or_tokens)


def _banned_tensors(trie: ItemTrie, banned: Sequence[Sequence[int]] | None,
                    cases: np.ndarray) -> list[torch.Tensor] | None:
    """Exhausted trie edges per depth for the banned items of `cases` (case index = position in the batch)."""
    if banned is None:
        return None
    pairs = {(i, int(it)) for i, c in enumerate(cases) for it in banned[c]}
    if not pairs:
        return None
    case, items = (torch.tensor(v, dtype=torch.int64) for v in zip(*sorted(pairs)))
    if items.min() < 0 or items.max() >= trie.num_items:
        raise ValueError(f"generate: banned item ids must lie in [0, {trie.num_items})")
    return trie.exhausted(case, items)


@dataclass(frozen=True)
class Beams:
    """A beam search's results plus the beams it kept on the way (what the cold-start fill matches against).

    items (B, k) int64 and scores (B, k) float32: as `beam_search` returns them.
    prefix_nodes (B, P - 1, K) int64: slot d holds the trie nodes (depth d + 1) of the K beams kept after d + 1
        tokens, best first; -1 where a beam was padding. prefix_scores (B, P - 1, K) float32: their summed log-probs.
    """

    items: np.ndarray
    scores: np.ndarray
    prefix_nodes: np.ndarray
    prefix_scores: np.ndarray


def _search(model, prompts: Sequence[Sequence[int]], trie: ItemTrie, beam_size: int, k: int, batch_size: int,
            banned: Sequence[Sequence[int]] | None, pad_token_id: int | None, progress: bool,
            constrained: bool) -> Beams:
    """Shared driver of `beam_search` and `unconstrained_beam_search` (see those for the contract)."""
    if not 1 <= k <= beam_size:
        raise ValueError(f"generate: need 1 <= k <= beam_size, got k={k}, beam_size={beam_size}")
    if banned is not None and len(banned) != len(prompts):
        raise ValueError(f"generate: banned has {len(banned)} lists for {len(prompts)} prompts")
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    items = np.full((len(prompts), k), -1, dtype=np.int64)
    scores = np.full((len(prompts), k), NEG_INF, dtype=np.float32)
    prefix_nodes = np.full((len(prompts), trie.depth - 1, beam_size), -1, dtype=np.int64)
    prefix_scores = np.full((len(prompts), trie.depth - 1, beam_size), NEG_INF, dtype=np.float32)
    order = np.argsort([len(p) for p in prompts], kind="stable")  # similar lengths share a batch: less padding
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for cases in tqdm(chunks, desc="beam search", disable=not progress):
        leaves, top, (p_nodes, p_scores) = _decode_batch(model, [prompts[c] for c in cases], trie, beam_size,
                                                         _banned_tensors(trie, banned, cases) if constrained else None,
                                                         pad_token_id, constrained)
        found = trie.leaf_items(leaves)[:, :k]  # (b, k)
        top = top[:, :k]
        dead = torch.isinf(top)  # only beams that ran out of valid continuations
        items[cases] = found.masked_fill(dead, -1).numpy()
        scores[cases] = top.numpy()
        prefix_nodes[cases] = p_nodes.masked_fill(torch.isinf(p_scores), -1).numpy()
        prefix_scores[cases] = p_scores.numpy()
    model.train(was_training)
    return Beams(items, scores, prefix_nodes, prefix_scores)


def beam_search(model, prompts: Sequence[Sequence[int]], trie: ItemTrie | np.ndarray, beam_size: int = 10,
                k: int = 10, batch_size: int = 64, banned: Sequence[Sequence[int]] | None = None,
                pad_token_id: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k catalogue items per prompt by trie-constrained beam search.

    Args:
        model: any HF causal LM (logits over a vocabulary that contains the item tokens).
        prompts: B token-id lists of any lengths.
        trie: an `ItemTrie`, or the (N, P) item token array to build one from.
        beam_size: beams kept per case at every depth.
        k: items returned per case, k <= beam_size.
        batch_size: cases per forward pass (each expands to batch_size * beam_size rows).
        banned: optional B lists of item ids never to return for that case (e.g. the history).
        pad_token_id: id used for left padding (masked out); default model.config.pad_token_id or 0.
        progress: show a progress bar over batches.
    Returns:
        items (B, k) int64 distinct item ids, best first, -1 only when fewer than k items are reachable;
        scores (B, k) float32 summed log-probabilities, -inf where items is -1.
    """
    beams = _search(model, prompts, _as_trie(trie), beam_size, k, batch_size, banned, pad_token_id, progress,
                    constrained=True)
    return beams.items, beams.scores


def beam_search_with_prefixes(model, prompts: Sequence[Sequence[int]], trie: ItemTrie | np.ndarray,
                              beam_size: int = 10, k: int = 10, batch_size: int = 64,
                              banned: Sequence[Sequence[int]] | None = None, pad_token_id: int | None = None,
                              progress: bool = False) -> Beams:
    """`beam_search` (the same items and scores, bit for bit) plus the beams kept after each of the first P - 1
    tokens, for `cold_fill`. Args: as `beam_search`."""
    return _search(model, prompts, _as_trie(trie), beam_size, k, batch_size, banned, pad_token_id, progress,
                   constrained=True)


def unconstrained_beam_search(model, prompts: Sequence[Sequence[int]], trie: ItemTrie | np.ndarray,
                              beam_size: int = 10, k: int = 10, batch_size: int = 64,
                              banned: Sequence[Sequence[int]] | None = None, pad_token_id: int | None = None,
                              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Plain beam search over the full vocabulary for P tokens; decoded paths are then looked up as items.

    Args: as `beam_search`.
    Returns:
        items (B, k) int64, -1 where the decoded path is not an item (the invalid-ID rate is
        (items == -1).mean()); scores (B, k) float32 summed log-probabilities of the decoded paths.
    """
    beams = _search(model, prompts, _as_trie(trie), beam_size, k, batch_size, banned, pad_token_id, progress,
                    constrained=False)
    return beams.items, beams.scores
