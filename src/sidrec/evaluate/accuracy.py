"""The accuracy lens: one `evaluate()` for every system (docs/evaluation.md).

Every system answers the same cases in the same order; per-case ranks (with the case's user) are kept so the report
can run paired bootstrap tests between systems. Intervals resample users, each with all of their test cases.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import cold_share, ndcg_at_k, summarize, target_ranks
from sidrec.recommend import Recommender

log = logging.getLogger(__name__)


def validation_score(rec: Recommender, cases: pd.DataFrame, k: int = 10) -> dict:
    """Mean NDCG@k and Recall@k on validation cases; `score` (NDCG@k) drives early stopping and selection."""
    items, _ = rec.recommend(cases, k)
    ranks = target_ranks(items, cases["target"].to_numpy())
    ndcg = float(ndcg_at_k(ranks, k).mean())
    return {"score": ndcg, f"ndcg@{k}": ndcg, f"recall@{k}": float(((ranks >= 0) & (ranks < k)).mean())}


def evaluate(rec: Recommender, cases: pd.DataFrame, num_items: int, k: int = 10, n_boot: int = 1000,
             seed: int = 0, invalid_cases: int = 1000, cold_items=()) -> tuple[pd.DataFrame, dict]:
    """Recommend for every case, score the lists, and measure the unconstrained invalid-ID rate.

    Args:
        rec: any `Recommender`.
        cases: from `sidrec.data.sequences.make_cases` (case_id, user_id, target, history, seen, cold).
        num_items: catalogue size (for coverage).
        invalid_cases: seeded sample of cases for the unconstrained invalid-ID rate (a second decode).
        cold_items: the items with zero train events (for the share of cold items in the lists).
    Returns:
        (per-case frame: case_id, user_id, target, cold, topk, rank, and rank_eps0, the rank without the cold-start
        fill (= rank when the system has none); metrics dict in the shared schema, with per-user intervals,
        `test_users` / `cold_start_users`, `cold_share@k`, and `eps0` (the same summary without the fill)).
    """
    epsilon = getattr(getattr(rec, "decode", None), "cold_epsilon", 0.0)
    if hasattr(rec, "beams") and epsilon > 0:  # one decode gives both the plain and the filled lists
        beams = rec.beams(cases, k, progress=getattr(rec, "progress", False))
        plain, items = beams.items, rec.fill(beams, cases, epsilon)
    else:
        items, _ = rec.recommend(cases, k)
        plain = items
    targets = cases["target"].to_numpy()
    ranks, ranks0 = target_ranks(items, targets), target_ranks(plain, targets)
    per_case = pd.DataFrame({"case_id": cases["case_id"].to_numpy(), "user_id": cases["user_id"].to_numpy(),
                             "target": targets, "cold": cases["cold"].to_numpy(),
                             "topk": list(items), "rank": ranks, "rank_eps0": ranks0})
    users, cold = cases["user_id"].to_numpy(), cases["cold"].to_numpy()
    metrics = summarize(ranks, cold, items, num_items, ks=(5, k), n_boot=n_boot, seed=seed, users=users)
    base = summarize(ranks0, cold, plain, num_items, ks=(5, k), n_boot=n_boot, seed=seed, users=users)
    metrics["eps0"] = {"test": base["test"], "cold_start": base["cold_start"]}
    metrics[f"cold_share@{k}"] = cold_share(items, cold_items) if len(cold_items) else 0.0
    metrics[f"cold_share@{k}_eps0"] = cold_share(plain, cold_items) if len(cold_items) else 0.0
    sample = cases
    if len(cases) > invalid_cases:
        sample = cases.iloc[np.sort(np.random.default_rng(seed).choice(len(cases), invalid_cases, replace=False))]
    metrics["invalid_rate_unconstrained"] = float(rec.invalid_rate(sample, k))
    metrics["invalid_rate_cases"] = len(sample)
    return per_case, metrics
