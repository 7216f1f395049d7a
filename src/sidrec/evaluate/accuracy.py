"""The accuracy lens: one `evaluate()` for every system (docs/evaluation.md).

Every system answers the same cases in the same order; per-case ranks (with the case's user) are kept so the report
can run paired bootstrap tests between systems. Intervals resample users, each with all of their test cases.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import ndcg_at_k, summarize, target_ranks
from sidrec.recommend import Recommender

log = logging.getLogger(__name__)


def validation_score(rec: Recommender, cases: pd.DataFrame, k: int = 10) -> dict:
    """Mean NDCG@k and Recall@k on validation cases; `score` (NDCG@k) drives early stopping and selection."""
    items, _ = rec.recommend(cases, k)
    ranks = target_ranks(items, cases["target"].to_numpy())
    ndcg = float(ndcg_at_k(ranks, k).mean())
    return {"score": ndcg, f"ndcg@{k}": ndcg, f"recall@{k}": float(((ranks >= 0) & (ranks < k)).mean())}


def evaluate(rec: Recommender, cases: pd.DataFrame, num_items: int, k: int = 10, n_boot: int = 1000,
             seed: int = 0, invalid_cases: int = 1000) -> tuple[pd.DataFrame, dict]:
    """Recommend for every case, score the lists, and measure the unconstrained invalid-ID rate.

    Args:
        rec: any `Recommender`.
        cases: from `sidrec.data.sequences.make_cases` (case_id, user_id, target, history, seen, cold).
        num_items: catalogue size (for coverage).
        invalid_cases: seeded sample of cases for the unconstrained invalid-ID rate (a second decode).
    Returns:
        (per-case frame: case_id, user_id, target, cold, topk, rank; metrics dict in the shared schema, with
        per-user intervals and `test_users` / `cold_start_users`).
    """
    items, _ = rec.recommend(cases, k)
    ranks = target_ranks(items, cases["target"].to_numpy())
    per_case = pd.DataFrame({"case_id": cases["case_id"].to_numpy(), "user_id": cases["user_id"].to_numpy(),
                             "target": cases["target"].to_numpy(), "cold": cases["cold"].to_numpy(),
                             "topk": list(items), "rank": ranks})
    metrics = summarize(ranks, cases["cold"].to_numpy(), items, num_items, ks=(5, k), n_boot=n_boot, seed=seed,
                        users=cases["user_id"].to_numpy())
    sample = cases
    if len(cases) > invalid_cases:
        sample = cases.iloc[np.sort(np.random.default_rng(seed).choice(len(cases), invalid_cases, replace=False))]
    metrics["invalid_rate_unconstrained"] = float(rec.invalid_rate(sample, k))
    metrics["invalid_rate_cases"] = len(sample)
    return per_case, metrics
