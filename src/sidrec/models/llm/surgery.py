"""Vocabulary surgery and LoRA setup (docs/systems.md, PLUM).

Vocabulary surgery: one new token `<p{position}_{code}>` per (code position, code) of a SID table (levels and
collision suffix), added to the tokenizer and the embedding matrix. Each new row starts at the centroid of its
cluster, not at random: the mean, over the items that carry that code, of the mean LLM input embedding of the
item's title tokens, plus Gaussian noise of `noise` x the embedding matrix's std (and the same for the output
matrix when it is not tied). A code no item carries starts at the catalogue centroid. LAMIA's palette tokens are
added through the same `grow_vocabulary` (sidrec.models.palette).

LoRA (peft `LoraConfig`, rank `lora_rank`) trains adapters on every linear layer of the transformer blocks plus
only the new rows of the embedding (`trainable_token_indices`), and of `lm_head` when it is not tied ("all-linear"
skips `lm_head`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sidrec.tokenizers.sids import SidTable, TokenLayout

log = logging.getLogger(__name__)


def grow_vocabulary(model: PreTrainedModel, tok: PreTrainedTokenizerBase, names: list[str], what: str,
                    special: bool = False) -> tuple[np.ndarray, int]:
    """Add the tokens `names` to `tok` and room for them to the model's embedding matrices, in place; the new
    rows are left for the caller to initialize.

    Args:
        what: what the tokens are, for the error when the tokenizer already has one (e.g. "SID tokens").
        special: add them as special tokens (never split, skipped by `decode(skip_special_tokens=True)`).
    Returns:
        (len(names),) int64 token ids in the order of `names`, and the number of embedding rows before.
    """
    clash = [n for n in names if n in tok.get_vocab()]
    if clash:
        raise ValueError(f"llm: the tokenizer already has {what} ({clash[0]}, ...); start from models/llm_base")
    tok.add_tokens(names, special_tokens=special)
    ids = np.asarray(tok.convert_tokens_to_ids(names), dtype=np.int64)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(old_rows, int(ids.max()) + 1), mean_resizing=False)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    return ids, old_rows


def sid_token_names(vocab_sizes: list[int]) -> list[str]:
    """`<p{position}_{code}>` for every code position and code, in TokenLayout order (no specials)."""
    return TokenLayout(vocab_sizes).token_names()[: int(sum(vocab_sizes))]


def title_embeddings(model: PreTrainedModel, tok: PreTrainedTokenizerBase, titles: list[str],
                     output: bool = False) -> torch.Tensor:
    """(N, H) mean embedding of each title's tokens, from the input (or output) embedding matrix."""
    weight = (model.get_output_embeddings() if output else model.get_input_embeddings()).weight.detach()
    rows = []
    for title in titles:
        ids = tok(str(title), add_special_tokens=False).input_ids or [tok.eos_token_id]
        rows.append(weight[ids].float().mean(0))
    return torch.stack(rows)


def code_centroids(item_vectors: torch.Tensor, sids: SidTable) -> torch.Tensor:
    """(sum(vocab_sizes), H): per (position, code), the mean of the item vectors that carry it (catalogue mean
    for a code no item carries), in TokenLayout order."""
    layout = TokenLayout(sids.vocab_sizes)
    tokens = torch.from_numpy(layout.item_tokens(sids.codes))  # (N, P)
    n_tok, h = int(sum(sids.vocab_sizes)), item_vectors.shape[1]
    sums = torch.zeros(n_tok, h).index_add_(0, tokens.reshape(-1), item_vectors.repeat_interleave(tokens.shape[1], 0))
    counts = torch.bincount(tokens.reshape(-1), minlength=n_tok).float()[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), item_vectors.mean(0, keepdim=True))


def add_sid_vocabulary(model: PreTrainedModel, tok: PreTrainedTokenizerBase, sids: SidTable, titles: list[str],
                       noise: float, seed: int) -> np.ndarray:
    """Vocabulary surgery in place: add the SID tokens, resize, set every new row to its code centroid + noise.

    Args:
        model, tok: the base LLM and its tokenizer.
        sids: the item SID table (levels + suffix).
        titles: (N,) item titles in item_id order (what the centroids average).
        noise: noise std as a multiple of the embedding matrix's std (0 = exact centroids).
        seed: noise seed.
    Returns:
        (sum(vocab_sizes),) int64 LLM token id of every SID token, in TokenLayout order.
    """
    if len(titles) != sids.num_items:
        raise ValueError(f"llm: {len(titles)} titles for {sids.num_items} items in the SID table")
    names = sid_token_names(sids.vocab_sizes)
    item_in = title_embeddings(model, tok, titles)
    tied = _tied(model)
    item_out = None if tied else title_embeddings(model, tok, titles, output=True)
    ids, old_rows = grow_vocabulary(model, tok, names, "SID tokens")
    gen = torch.Generator().manual_seed(seed)
    index = torch.from_numpy(ids)
    with torch.no_grad():
        for matrix, vectors in ((model.get_input_embeddings().weight, item_in),
                                (None if tied else model.get_output_embeddings().weight, item_out)):
            if matrix is None:
                continue
            init = code_centroids(vectors, sids)
            init = init + noise * float(matrix[:old_rows].std()) * torch.randn(init.shape, generator=gen)
            matrix[index] = init.to(matrix.dtype)
    log.info("vocabulary surgery: %d SID tokens (ids %d..%d), centroid init, tied=%s", len(ids), ids.min(),
             ids.max(), tied)
    return ids


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float


def with_lora(model: PreTrainedModel, new_token_ids: np.ndarray, lora: LoraSettings):
    """peft model: LoRA on every linear layer of the blocks + trainable rows for the new tokens only, in the input
    embedding and, when the model is untied (Qwen/Llama style), in `lm_head` too ("all-linear" skips `lm_head`).
    A tied model gets the input-embedding rows only; peft ties `lm_head` to them."""
    if lora.rank > model.config.hidden_size:
        from sidrec.config import ParamsError

        raise ParamsError(f"params: `lora_rank` {lora.rank} exceeds the LLM hidden size {model.config.hidden_size}; "
                          "use a smaller rank")
    rows = [int(i) for i in new_token_ids]
    trainable = {_module_name(model, model.get_input_embeddings()): rows}
    if not _tied(model):  # "all-linear" skips lm_head: the new items' output rows must train too
        trainable[_module_name(model, model.get_output_embeddings())] = rows
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules="all-linear",
                     trainable_token_indices=trainable, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _module_name(model: PreTrainedModel, module: torch.nn.Module) -> str:
    """The last component of `module`'s name in `model` (what peft's `trainable_token_indices` keys match)."""
    return next(n for n, m in model.named_modules() if m is module).split(".")[-1]


def _tied(model: PreTrainedModel) -> bool:
    """True when the output matrix is the input embedding matrix (or there is no output matrix)."""
    out = model.get_output_embeddings()
    return out is None or out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
