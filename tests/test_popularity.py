"""Popularity reference (sidrec.models.popularity) on a hand-made log: train events only (the leakage rule), the
recency window, seen-item exclusion with item-id tie breaks, save/load; the grid of models/search.py; loading by
system name; validation_score on hand-ranked cases."""
import math

import numpy as np
import pandas as pd
import pytest

from sidrec.config import GPTConfig
from sidrec.evaluate.accuracy import validation_score
from sidrec.models.popularity import DAY, PopularityRecommender, popularity_scores
from sidrec.models.search import grid
from sidrec.systems import load_recommender

NUM_ITEMS = 6


def events() -> pd.DataFrame:
    rows = [  # (item_id, day, split); the last train event is on day 10
        (0, 0.0, "train"), (0, 1.0, "train"),
        (1, 9.0, "train"), (1, 9.5, "train"),
        (2, 10.0, "train"),
        (3, 0.0, "train"), (3, 0.5, "train"), (3, 0.7, "train"),
        (5, 8.0, "train"),  # exactly window_days=2 before the cutoff: outside the window
        *[(4, 11.0, "valid")] * 5, *[(4, 12.0, "test")] * 5,  # the most popular item overall, but only after train
    ]
    df = pd.DataFrame(rows, columns=["item_id", "day", "split"])
    return pd.DataFrame({"user_id": np.arange(len(df)) % 3, "item_id": df["item_id"],
                         "timestamp": (df["day"] * DAY).astype(np.int64), "split": df["split"]})


def cases(seen: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame({"case_id": range(len(seen)), "history": seen, "seen": seen})


def test_popularity_scores_count_train_events_only():
    np.testing.assert_array_equal(popularity_scores(events(), NUM_ITEMS, 0), [2, 2, 1, 3, 0, 1])


def test_popularity_scores_window():
    # window 2 days: train events with timestamp > day 10 - 2 days
    np.testing.assert_array_equal(popularity_scores(events(), NUM_ITEMS, 2), [0, 2, 1, 0, 0, 0])
    np.testing.assert_array_equal(popularity_scores(events(), NUM_ITEMS, 3), [0, 2, 1, 0, 0, 1])
    np.testing.assert_array_equal(popularity_scores(events(), NUM_ITEMS, 1000), [2, 2, 1, 3, 0, 1])


def test_recommend_excludes_seen_and_breaks_ties_by_id():
    rec = PopularityRecommender(popularity_scores(events(), NUM_ITEMS, 0), window_days=0)
    # ranking: 3 (3), 0 (2) before 1 (2), 2 (1) before 5 (1), 4 (0)
    items, scores = rec.recommend(cases([[3], [], [0, 2], [3, 0, 1, 2, 5]]), k=3)
    np.testing.assert_array_equal(items, [[0, 1, 2], [3, 0, 1], [3, 1, 5], [4, -1, -1]])
    np.testing.assert_array_equal(scores[:3], [[2, 2, 1], [3, 2, 2], [3, 2, 1]])
    assert scores[3, 0] == 0 and np.isneginf(scores[3, 1:]).all()
    assert items.dtype == np.int64 and scores.dtype == np.float32
    keep = PopularityRecommender(rec.scores, window_days=0, exclude_seen=False)
    items, _ = keep.recommend(cases([[3], [0, 2]]), k=3)
    np.testing.assert_array_equal(items, [[3, 0, 1], [3, 0, 1]])
    assert rec.invalid_rate(cases([[3]]), 3) == 0.0


def test_recommend_tie_break_is_by_id_not_position():
    rec = PopularityRecommender(np.array([1.0, 5.0, 1.0, 5.0, 1.0]), window_days=0)
    items, _ = rec.recommend(cases([[]]), k=5)
    np.testing.assert_array_equal(items, [[1, 3, 0, 2, 4]])


def test_save_load_round_trip(tmp_path):
    rec = PopularityRecommender(popularity_scores(events(), NUM_ITEMS, 3), window_days=3)
    rec.save(tmp_path / "popularity", {"valid_ndcg@10": 0.5})
    back = PopularityRecommender.load(tmp_path / "popularity")
    np.testing.assert_array_equal(back.scores, rec.scores)
    assert back.window_days == 3
    c = cases([[1], [], [2, 5]])
    for a, b in zip(rec.recommend(c, 4), back.recommend(c, 4)):
        np.testing.assert_array_equal(a, b)
    assert PopularityRecommender.load(tmp_path / "popularity", exclude_seen=False).exclude_seen is False
    by_name = load_recommender("popularity", str(tmp_path / "popularity"), sids_path="unused")
    np.testing.assert_array_equal(by_name.recommend(c, 4)[0], rec.recommend(c, 4)[0])
    with pytest.raises(ValueError, match="unknown 'tiger'"):
        load_recommender("tiger", str(tmp_path / "popularity"), sids_path="unused")


def test_validation_score_hand_computed():
    rec = PopularityRecommender(np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]), window_days=0)
    c = cases([[], [0], [], []]).assign(target=[0, 2, 3, 5])
    # lists: [0,1,2,3,4] (target rank 0), [1,2,3,4,5] (rank 1), [0,1,2,3,4] (rank 3), target 5 missed
    got = validation_score(rec, c, k=5)
    ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(5) + 0) / 4
    assert got["score"] == pytest.approx(ndcg) and got["ndcg@5"] == pytest.approx(ndcg)
    assert got["recall@5"] == pytest.approx(0.75)


def test_grid_expands_combinations():
    base = GPTConfig()
    assert grid(base, {}) == [base]
    configs = grid(base, {"lr": [1e-3, 3e-3], "dropout": [0.1, 0.3], "n_layer": [2]})
    assert len(configs) == 4
    assert {(c.lr, c.dropout, c.n_layer) for c in configs} == {(1e-3, 0.1, 2), (1e-3, 0.3, 2), (3e-3, 0.1, 2),
                                                               (3e-3, 0.3, 2)}
    assert all(c.n_embd == base.n_embd and c.epochs == base.epochs for c in configs)
    assert base.n_layer == GPTConfig().n_layer  # the base is not modified
    with pytest.raises(TypeError):
        grid(base, {"no_such_field": [1]})
