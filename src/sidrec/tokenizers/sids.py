"""Semantic-ID tables: collision suffix (TIGER section 3.1), ID-quality statistics, storage, and token layout.

A `SidTable` maps every catalogue item to a fixed-length code tuple. Position p takes values in
[0, vocab_sizes[p]); for RQ-VAE the positions are levels 0..L-1 plus the collision suffix. The mapping is
1-to-1: items sharing their full code get suffix 0, 1, ... in item_id order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.io import atomic_path, read_json, write_json

SPECIALS = ("[BOS]", "[SEP]", "[EOS]", "[PAD]")


def add_collision_suffix(codes: np.ndarray) -> np.ndarray:
    """Append a suffix column: 0, 1, ... among items (in row = item_id order) that share their full code.

    Args:
        codes: (N, L) int array.
    Returns:
        (N, L + 1) int64 array whose rows are unique.
    """
    codes = np.asarray(codes, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    suffix = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(inverse):  # rows are in item_id order, so the suffix is deterministic
        suffix[i] = seen.get(g, 0)
        seen[g] = suffix[i] + 1
    return np.concatenate([codes, suffix[:, None]], axis=1)


def code_stats(codes: np.ndarray, codebook_size: int) -> dict:
    """ID-quality statistics of (N, L) codes before the suffix: per-level utilization and perplexity, collisions."""
    codes = np.asarray(codes)
    n, levels = codes.shape
    out: dict = {}
    for lv in range(levels):
        counts = np.bincount(codes[:, lv], minlength=codebook_size)
        p = counts[counts > 0] / n
        out[f"utilization_l{lv}"] = float((counts > 0).sum() / codebook_size)
        out[f"perplexity_l{lv}"] = float(np.exp(-(p * np.log(p)).sum()))
    _, inverse, group_sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    per_item = group_sizes[inverse.reshape(-1)]
    out["unique_codes"] = int(len(group_sizes))
    out["collision_rate"] = float((per_item > 1).mean())
    out["uniqueness"] = float(len(group_sizes) / n)
    out["max_items_per_code"] = int(group_sizes.max())
    return out


@dataclass
class SidTable:
    """Item -> code tuple. `codes[i]` is item i's code; position p ranges over [0, vocab_sizes[p])."""

    codes: np.ndarray  # (N, P) int64
    vocab_sizes: list[int]
    info: dict

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.vocab_sizes):
            raise ValueError(f"sids: codes shape {self.codes.shape} does not match {len(self.vocab_sizes)} positions")
        if (self.codes < 0).any() or (self.codes >= np.asarray(self.vocab_sizes)).any():
            raise ValueError("sids: a code lies outside its position's range")
        if len(np.unique(self.codes, axis=0)) != len(self.codes):
            raise ValueError("sids: two items share a full code; add the collision suffix")

    @property
    def num_items(self) -> int:
        return len(self.codes)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        df = pd.DataFrame({"item_id": np.arange(self.num_items), "codes": list(self.codes)})
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        write_json(path.with_suffix(".json"), {**self.info, "vocab_sizes": self.vocab_sizes,
                                               "positions": len(self.vocab_sizes), "items": self.num_items})

    @classmethod
    def load(cls, path: str | Path) -> "SidTable":
        path = Path(path)
        df = pd.read_parquet(path)
        info = read_json(path.with_suffix(".json"))
        if not np.array_equal(df["item_id"].to_numpy(), np.arange(len(df))):
            raise ValueError(f"{path}: item_id must be 0..N-1 in order")
        return cls(np.stack(df["codes"].to_numpy()), list(info["vocab_sizes"]), info)


class TokenLayout:
    """GPT vocabulary: one token range per code position, then the specials [BOS] [SEP] [EOS] [PAD].

    token(p, c) = offsets[p] + c, so `<p0_12>` and `<p1_12>` are different tokens (docs/architecture.md, token layout).
    """

    def __init__(self, vocab_sizes: list[int]) -> None:
        self.vocab_sizes = list(vocab_sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.vocab_sizes)[:-1]]).astype(np.int64)
        base = int(sum(self.vocab_sizes))
        self.bos, self.sep, self.eos, self.pad = base, base + 1, base + 2, base + 3
        self.vocab_size = base + len(SPECIALS)

    def item_tokens(self, codes: np.ndarray) -> np.ndarray:
        """(N, P) codes -> (N, P) token ids."""
        return np.asarray(codes, dtype=np.int64) + self.offsets[None, :]

    def token_names(self) -> list[str]:
        """Readable names `<p{position}_{code}>`, e.g. `<p0_12>`, then the specials."""
        names = [f"<p{p}_{c}>" for p, v in enumerate(self.vocab_sizes) for c in range(v)]
        return names + list(SPECIALS)
