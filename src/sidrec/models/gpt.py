"""The from-scratch decoder recommender (TIGER's generative retrieval with a GPT-2-config decoder; docs/systems.md).

A user history becomes one flat stream `[BOS] <p0_12> <p1_55> <p2_108> <p3_0> [SEP] <p0_45> ... [SEP]` over a
vocabulary of one token range per code position plus specials (sids.TokenLayout). The model is a
`transformers.GPT2LMHeadModel` built from a `GPT2Config` with random weights (never pretrained), trained with
next-token cross-entropy on ID tokens only, and decoded with the trie-constrained beam search of `sidrec.generate`.
With the `atomic` tokenizer (one token per item) the same model is a SASRec-style causal ID recommender.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from sidrec.generate import ItemTrie, TrieRecommender
from sidrec.io import atomic_path
from sidrec.recommend import DecodeSettings
from sidrec.tokenizers.sids import SidTable, TokenLayout

IGNORE = -100


@dataclass(frozen=True)
class GPTArch:
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    max_history: int


def build_gpt(arch: GPTArch, layout: TokenLayout, positions: int) -> GPT2LMHeadModel:
    """A randomly initialized GPT-2 decoder over `layout`'s vocabulary (input/output embeddings tied)."""
    cfg = GPT2Config(vocab_size=layout.vocab_size, n_positions=positions, n_embd=arch.n_embd,
                     n_layer=arch.n_layer, n_head=arch.n_head, resid_pdrop=arch.dropout,
                     embd_pdrop=arch.dropout, attn_pdrop=arch.dropout, bos_token_id=layout.bos,
                     eos_token_id=layout.eos, pad_token_id=layout.pad,
                     attn_implementation="eager")  # at n_embd 128 on a CPU, 12-15% faster per step than sdpa
    return GPT2LMHeadModel(cfg)


class SequenceCodec:
    """Item-id sequences <-> token streams for one SidTable (shared by training, decoding and the CLI)."""

    def __init__(self, sids: SidTable) -> None:
        self.sids = sids
        self.layout = TokenLayout(sids.vocab_sizes)
        self.item_tokens = self.layout.item_tokens(sids.codes)  # (N, P)
        self.positions = sids.codes.shape[1]

    def stream(self, items) -> list[int]:
        """[BOS] tokens(i1) [SEP] tokens(i2) [SEP] ... : the prompt after which the next item is decoded."""
        toks = np.concatenate([self.item_tokens[np.asarray(items, dtype=np.int64)],
                               np.full((len(items), 1), self.layout.sep)], axis=1)
        return [self.layout.bos, *toks.reshape(-1).tolist()]

    def max_positions(self, max_history: int) -> int:
        return 1 + (max_history + 1) * (self.positions + 1)

    def collate(self, windows: list[np.ndarray]) -> dict:
        """Right-padded training batch; labels are the ID tokens only (BOS, SEP and PAD are ignored)."""
        streams = [self.stream(w) for w in windows]
        width = max(map(len, streams))
        ids = torch.full((len(streams), width), self.layout.pad, dtype=torch.long)
        mask = torch.zeros((len(streams), width), dtype=torch.long)
        for i, s in enumerate(streams):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        labels = torch.where(ids < self.layout.bos, ids, torch.full_like(ids, IGNORE))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class GPTRecommender(TrieRecommender, nn.Module):
    """GPT2LMHeadModel + its codec; `loss(batch)` for the shared training loop."""

    def __init__(self, model: GPT2LMHeadModel, codec: SequenceCodec, arch: GPTArch,
                 decode: DecodeSettings = DecodeSettings()) -> None:
        super().__init__()
        self.model = model
        self.codec = codec
        self.arch = arch
        self.decode = decode
        self.trie = ItemTrie(codec.item_tokens)
        self.pad_id = codec.layout.pad

    def _prompts(self, cases) -> list[list[int]]:
        # the model has positions for max_history items of history only: older items are dropped
        return [self.codec.stream(h[-self.arch.max_history:]) for h in cases["history"]]

    def loss(self, batch: dict) -> dict:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"])
        return {"loss": out.loss}

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """`save_pretrained` directory (safetensors + config) plus sidrec.json with the architecture."""
        with atomic_path(path, is_dir=True) as tmp:
            self.model.save_pretrained(tmp)
            meta = {"arch": self.arch.__dict__, "vocab_sizes": self.codec.sids.vocab_sizes, **(extra or {})}
            (tmp / "sidrec.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, sids: SidTable, decode: DecodeSettings = DecodeSettings()) -> "GPTRecommender":
        path = Path(path)
        meta = json.loads((path / "sidrec.json").read_text())
        if list(meta["vocab_sizes"]) != list(sids.vocab_sizes):
            raise ValueError(f"{path}: trained on vocab sizes {meta['vocab_sizes']}, the sids have {sids.vocab_sizes}")
        model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")  # safetensors; as trained
        return cls(model.eval(), SequenceCodec(sids), GPTArch(**meta["arch"]), decode)
