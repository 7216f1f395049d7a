"""Atomic item IDs: one token per item (the ID-based reference; with the GPT recommender it is SASRec-style,
Kang & McAuley 2018). It carries no content, so items unseen in training get untrained tokens."""
from __future__ import annotations

import numpy as np

from sidrec.tokenizers.sids import SidTable


def atomic_table(num_items: int) -> SidTable:
    """Item i -> code (i,), vocabulary = the catalogue."""
    return SidTable(np.arange(num_items, dtype=np.int64)[:, None], [num_items],
                    {"tokenizer": "atomic", "levels": 1, "codebook_size": num_items, "suffix_size": 0,
                     "collision_rate": 0.0})
