"""The recommender contract shared by every system (RecBole-style: one small interface, one evaluator).

`recommend(cases, k) -> (items (B, k) int64, scores (B, k) float32)` where `cases` holds per-case `history`
(last max_history item ids) and `seen` (every earlier item id); `-1` marks a missing slot.
`invalid_rate(cases, k) -> float`: share of unconstrained top-k outputs that are not catalogue items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DecodeSettings:
    beam_size: int = 10
    batch_size: int = 64
    exclude_seen: bool = True
    """Never recommend an item the user already interacted with (MovieLens users rate a film once)."""
    llm_dtype: str = "bfloat16"
    """LLM systems loaded from disk only (`LLMRecommender.load`): weights while decoding. `bfloat16` (as
    `eval.llm_dtype`) casts them once at load (1.6x faster decoding on a bf16-capable CPU, same validation NDCG);
    `float32` = as trained (bf16 autocast per the model's `mixed_precision`)."""
    cold_epsilon: float = 0.0
    """Semantic-ID systems: share of each top-k list that cold items matching a kept beam prefix may fill
    (`sidrec.generate.cold_fill`, floor(cold_epsilon * k) slots); 0 = plain beam search."""
    cold_items: tuple[int, ...] = ()
    """The items eligible for that fill (zero train events)."""


class Recommender(Protocol):
    def recommend(self, cases: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def invalid_rate(self, cases: pd.DataFrame, k: int) -> float: ...
