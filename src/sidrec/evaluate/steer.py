"""The steerability lens (docs/evaluation.md, steerability): do recommendations follow a natural-language constraint that runs
against the user's history?

Counterfactual cases: for each (history genre, requested genre) pair of `steer.pairs`, users whose train history
leans on the history genre (share of their train items carrying it >= `dominance`) and not on the requested one
(its share in their history <= its share of the catalogue) are asked for the requested genre ("Constraint: Suggest
a Horror movie." after a history of Children's films), so the request runs against what the history suggests.
Per case:
- satisfied@k: share of the top-k that carry the requested genre (empty slots count as unsatisfied);
- closeness@k: mean cosine similarity of the recommended items' content embeddings to the history's mean
  embedding (does the system stay personal while it obeys?);
- reference_closeness@k: the same for the k most popular unseen items of the requested genre (a genre filter on
  popularity: obeys fully, ignores the user);
- base rate: share of the unseen catalogue carrying the requested genre (what a constraint-blind random pick meets).
Systems that cannot read text answer the same cases with the constraint ignored.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import bootstrap_ci, count_users

log = logging.getLogger(__name__)


def steer_cases(events: pd.DataFrame, items: pd.DataFrame, pairs, dominance: float, max_users: int,
                max_history: int, seed: int) -> pd.DataFrame:
    """Counterfactual cases, in pair order then user order.

    Args:
        events: the prepared events (train split used only).
        items: the prepared items (`genres`: list[str]).
        pairs: (history genre, requested genre) pairs.
        dominance: minimum share of a user's train items carrying the history genre (the user must also take the
            requested genre no more often than its share of the catalogue).
        max_users: cases per pair (seeded sample of the qualifying users).
        max_history: items of history per case (the most recent train items).
        seed: sampling seed.
    Returns:
        DataFrame: case_id, user_id, source, constraint, history, seen (all train items), target (-1), cold (False).
    """
    genres = [set(g) for g in items["genres"]]
    known = sorted(set().union(*genres))
    for src, dst in pairs:
        for g in (src, dst):
            if g not in known:
                raise ValueError(f"params: `steer.pairs` names genre {g!r}, which no item has; use one of "
                                 f"{', '.join(known)}")
        if src == dst:
            raise ValueError(f"params: `steer.pairs` pair [{src!r}, {dst!r}] asks for the history genre itself")
    train = events[events["split"] == "train"]
    seqs = {int(u): g.to_numpy() for u, g in train.groupby("user_id", sort=True)["item_id"]}
    rng = np.random.default_rng(seed)
    rows = []
    for src, dst in pairs:
        has = np.array([src in g for g in genres])
        wants = np.array([dst in g for g in genres])
        users = [u for u, s in seqs.items() if has[s].mean() >= dominance and wants[s].mean() <= wants.mean()]
        if not users:
            log.warning("steer: no user has >= %.0f%% %s items and few %s items; pair %s->%s has no cases",
                        100 * dominance, src, dst, src, dst)
        if len(users) > max_users:
            users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
        rows += [(u, src, dst, seqs[u][-max_history:].tolist(), seqs[u].tolist()) for u in users]
    cases = pd.DataFrame(rows, columns=["user_id", "source", "constraint", "history", "seen"])
    cases.insert(0, "case_id", np.arange(len(cases)))
    cases["target"] = -1
    cases["cold"] = False
    return cases


def _mean_cosine(vectors: np.ndarray, rows: np.ndarray, anchor: np.ndarray) -> float:
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return float("nan")
    v = vectors[rows]
    return float((v @ anchor / (np.linalg.norm(v, axis=1) * np.linalg.norm(anchor) + 1e-12)).mean())


def steer_metrics(topk: np.ndarray, cases: pd.DataFrame, item_genres, embeddings: np.ndarray,
                  train_counts: np.ndarray, k: int, n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Score the recommendations of the steer cases.

    Args:
        topk: (B, >=k) recommended item ids, -1 for empty slots.
        cases: from `steer_cases` (constraint, history, seen, source).
        item_genres: per item, its genres.
        embeddings: (N, D) content embeddings.
        train_counts: (N,) train-event counts (popularity for the reference).
        k: cut-off.
    Returns:
        (per-case frame: satisfied, closeness, reference_closeness; metrics dict). The satisfied@k interval resamples
        users (`cases.user_id`; one user can be a case of several pairs), each with all of its cases:
        `steer_users` distinct users, `bootstrap_unit` "user"; `satisfied@k_ci_low_case` / `_ci_high_case` hold the
        case-level interval for comparison. Every pair reports its `users` too.
    """
    genres = [set(g) for g in item_genres]
    n = len(genres)
    topk = np.asarray(topk)[:, :k]
    sat, close, ref, base = [], [], [], []
    for row, (_, c) in zip(topk, cases.iterrows()):
        has = np.array([c["constraint"] in g for g in genres])
        unseen = np.ones(n, dtype=bool)
        unseen[np.asarray(c["seen"], dtype=np.int64)] = False
        anchor = embeddings[np.asarray(c["history"], dtype=np.int64)].mean(0)
        sat.append(float(sum(1 for i in row if i >= 0 and has[i]) / k))
        close.append(_mean_cosine(embeddings, row, anchor))
        pool = np.flatnonzero(has & unseen)
        popular = pool[np.argsort(-train_counts[pool], kind="stable")[:k]]
        ref.append(_mean_cosine(embeddings, popular, anchor))
        base.append(float(has[unseen].mean()) if unseen.any() else 0.0)
    per_case = cases.assign(topk=list(topk), satisfied=sat, closeness=close, reference_closeness=ref, base_rate=base)
    users = cases["user_id"].to_numpy()
    metrics = {"cases": len(cases), "steer_users": count_users(users), "bootstrap_unit": "user"}
    if len(cases):
        low, high = bootstrap_ci(np.asarray(sat), users, n_boot=n_boot, seed=seed)
        low_case, high_case = bootstrap_ci(np.asarray(sat), None, n_boot=n_boot, seed=seed)
        metrics.update({f"satisfied@{k}": float(np.mean(sat)), f"satisfied@{k}_ci_low": low,
                        f"satisfied@{k}_ci_high": high, f"satisfied@{k}_ci_low_case": low_case,
                        f"satisfied@{k}_ci_high_case": high_case, "base_rate": float(np.mean(base)),
                        f"closeness@{k}": float(np.nanmean(close)),
                        f"reference_closeness@{k}": float(np.nanmean(ref))})
    pairs = {}
    for (src, dst), g in per_case.groupby(["source", "constraint"], sort=False):
        pairs[f"{src}->{dst}"] = {"cases": len(g), "users": count_users(g["user_id"]),
                                  f"satisfied@{k}": float(g["satisfied"].mean()),
                                  f"closeness@{k}": float(g["closeness"].mean()),
                                  "base_rate": float(g["base_rate"].mean())}
    metrics["pairs"] = pairs
    return per_case, metrics
