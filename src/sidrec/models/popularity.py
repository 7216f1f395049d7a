"""Popularity reference: rank items by train-event counts, optionally only the last `window_days` before the
train cutoff (recency matters under a temporal split; the window is tuned on validation like every model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.io import atomic_path

DAY = 86400


def popularity_scores(events: pd.DataFrame, num_items: int, window_days: int) -> np.ndarray:
    """(N,) train-event counts, within `window_days` of the last train event when window_days > 0."""
    tr = events[events["split"] == "train"]
    if window_days > 0:
        tr = tr[tr["timestamp"] > tr["timestamp"].max() - window_days * DAY]
    return np.bincount(tr["item_id"].to_numpy(), minlength=num_items).astype(np.float64)


class PopularityRecommender:
    """The same top list for everyone, minus what the user has already seen when `exclude_seen`."""

    def __init__(self, scores: np.ndarray, window_days: int, exclude_seen: bool = True) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.window_days = window_days
        self.exclude_seen = exclude_seen
        # ties broken by item id so the ranking is deterministic
        self.order = np.lexsort((np.arange(len(scores)), -self.scores))

    def recommend(self, cases: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (B, k) and their counts as scores."""
        head = self.order[: k + (max(map(len, cases["seen"])) if self.exclude_seen and len(cases) else 0)]
        items = np.full((len(cases), k), -1, dtype=np.int64)
        for i, seen in enumerate(cases["seen"] if self.exclude_seen else [[]] * len(cases)):
            picks = head[~np.isin(head, seen)][:k] if len(seen) else head[:k]
            items[i, :len(picks)] = picks
        scores = np.where(items >= 0, self.scores[np.maximum(items, 0)], -np.inf)
        return items, scores.astype(np.float32)

    def invalid_rate(self, cases: pd.DataFrame, k: int) -> float:
        return 0.0  # it ranks catalogue items directly: nothing it returns can be invalid

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        with atomic_path(path, is_dir=True) as tmp:
            np.save(tmp / "scores.npy", self.scores)
            (tmp / "config.json").write_text(json.dumps({"window_days": self.window_days, **(extra or {})}, indent=2))

    @classmethod
    def load(cls, path: str | Path, exclude_seen: bool = True) -> "PopularityRecommender":
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        return cls(np.load(path / "scores.npy", allow_pickle=False), cfg["window_days"], exclude_seen)
