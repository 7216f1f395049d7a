"""content-knn: the content-based reference (docs/systems.md). It ranks every item the case may receive by the
cosine between the item's content embedding and the mean content embedding of the case's history (its last
`eval.max_history` items, as every system reads), so an item with
no events at all (a cold-start item) is as reachable as a popular one. No training, no interactions: it is the
yardstick for cold start and a sanity floor for everything else.

The embeddings are the frozen text embeddings every semantic-ID tokenizer starts from (stage embed,
data/embeddings/content.npy, rows in item_id order).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CHUNK = 1024  # cases scored per matrix product


class ContentKNNRecommender:
    """Cosine(item, mean of the history's items) over L2-normalized embeddings; exclusions as every system.

    Args:
        embeddings: (N, H) content embedding per item id.
        exclude_seen: never recommend an item of the case's `seen` list.
    """

    def __init__(self, embeddings: np.ndarray, exclude_seen: bool = True) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError(f"content-knn: embeddings must be a non-empty (N, H) array, got shape {emb.shape}")
        self.embeddings = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.exclude_seen = exclude_seen

    def recommend(self, cases: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (B, k), best first (ties by item id), and their cosines; -1 / -inf where fewer remain."""
        n = len(self.embeddings)
        items = np.full((len(cases), k), -1, dtype=np.int64)
        scores = np.full((len(cases), k), -np.inf, dtype=np.float32)
        histories = list(cases["history"])
        seens = list(cases["seen"]) if self.exclude_seen else [[]] * len(cases)
        for start in range(0, len(cases), CHUNK):
            hist = histories[start:start + CHUNK]
            query = np.zeros((len(hist), self.embeddings.shape[1]), dtype=np.float32)
            for i, h in enumerate(hist):
                h = np.asarray(list(h), dtype=np.int64)
                if len(h):
                    query[i] = self.embeddings[h].mean(0)
            query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
            sim = query @ self.embeddings.T  # (b, N); an empty history scores every item 0 (item-id order)
            for i, seen in enumerate(seens[start:start + CHUNK]):
                if len(seen):
                    sim[i, np.asarray(list(seen), dtype=np.int64)] = -np.inf
            order = np.lexsort((np.broadcast_to(np.arange(n), sim.shape), -sim), axis=1)[:, :k]  # (b, k)
            top = np.take_along_axis(sim, order, axis=1)
            ok = np.isfinite(top)
            items[start:start + len(hist)] = np.where(ok, order, -1)
            scores[start:start + len(hist)] = np.where(ok, top, -np.inf)
        return items, scores

    def invalid_rate(self, cases: pd.DataFrame, k: int) -> float:
        return 0.0  # it ranks catalogue items directly: nothing it returns can be invalid

    @classmethod
    def load(cls, path: str | Path, exclude_seen: bool = True) -> "ContentKNNRecommender":
        """`path`: the content embeddings (.npy, item_id order), or the directory holding content.npy."""
        path = Path(path)
        if path.is_dir():
            path = path / "content.npy"
        if not path.exists():
            raise FileNotFoundError(f"content-knn: {path} not found; run `dvc repro embed` first")
        return cls(np.load(path, allow_pickle=False), exclude_seen)
