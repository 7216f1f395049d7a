"""The cold-start lens (docs/evaluation.md): choosing the cold-start fill's epsilon on validation, and what each
system does with items that had zero train events.

A cold item never appeared as a training target, so a generative model gives its full ID a low probability even
when its content code is close to what the user likes. TIGER's remedy is `sidrec.generate.cold_fill`: up to
floor(epsilon * k) slots of the top-k go to cold items whose ID starts with a prefix the beam search kept. Epsilon
is a trade-off (each cold slot replaces the list's lowest-ranked warm item), so it is chosen per system on
validation:

- Selection cases: every validation case whose target is cold (there are few), plus the seeded sample of
  `eval.valid_cases` warm validation cases that model selection uses everywhere else. Overall validation NDCG@k is
  estimated by weighting the two groups with their shares of all validation cases (an unbiased estimate of the
  full validation set's NDCG at a fraction of the decoding).
- Rule: among the grid, the epsilon with the highest cold-start Recall@k whose estimated NDCG@k is at least
  (1 - `eval.cold_max_loss`) x epsilon 0's; ties go to the smaller epsilon. Without cold validation cases, 0.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sidrec.data.sequences import make_cases
from sidrec.evaluate.metrics import cold_share, ndcg_at_k, recall_at_k, target_ranks

log = logging.getLogger(__name__)


def selection_cases(events: pd.DataFrame, max_history: int, cold_items: set[int], warm_cases: int,
                    seed: int) -> tuple[pd.DataFrame, dict]:
    """Validation cases for choosing epsilon: every cold-target case + a seeded sample of `warm_cases` warm ones.

    Returns:
        (cases in (user, time) order with a fresh case_id, counts {"cold", "warm", "cold_total", "warm_total"}:
        selected and available cases of each group).
    """
    every = make_cases(events, "valid", max_history, cold_items)
    cold, warm = every[every["cold"]], every[~every["cold"]]
    if warm_cases and len(warm) > warm_cases:
        warm = warm.iloc[np.sort(np.random.default_rng(seed).choice(len(warm), warm_cases, replace=False))]
    cases = pd.concat([cold, warm]).sort_values("case_id").reset_index(drop=True)
    cases["case_id"] = np.arange(len(cases))
    counts = {"cold": int(cases["cold"].sum()), "warm": int((~cases["cold"]).sum()),
              "cold_total": int(every["cold"].sum()), "warm_total": int((~every["cold"]).sum())}
    return cases, counts


def score_lists(items: np.ndarray, cases: pd.DataFrame, counts: dict, k: int) -> dict:
    """Estimated overall NDCG@k (cold and warm means weighted by their validation shares) and cold Recall@k."""
    ranks = target_ranks(items, cases["target"].to_numpy())
    gain = ndcg_at_k(ranks, k)
    hit = recall_at_k(ranks, k)
    is_cold = cases["cold"].to_numpy()
    total = counts["cold_total"] + counts["warm_total"]
    cold_ndcg = float(gain[is_cold].mean()) if is_cold.any() else 0.0
    warm_ndcg = float(gain[~is_cold].mean()) if (~is_cold).any() else 0.0
    ndcg = (counts["cold_total"] * cold_ndcg + counts["warm_total"] * warm_ndcg) / max(total, 1)
    return {f"ndcg@{k}": ndcg, f"cold_recall@{k}": float(hit[is_cold].mean()) if is_cold.any() else 0.0,
            f"warm_ndcg@{k}": warm_ndcg}


def choose_epsilon(rec, cases: pd.DataFrame, counts: dict, grid, k: int, max_loss: float) -> dict:
    """Decode the selection cases once, fill at every epsilon of `grid` and apply the rule of this module.

    Args:
        rec: a semantic-ID recommender (`sidrec.generate.TrieRecommender`) whose `decode.cold_items` is set.
        cases, counts: from `selection_cases`.
        grid: epsilon values (0 included).
    Returns:
        {"chosen": epsilon, "grid": [...], "valid": [{"epsilon", "ndcg@k", "cold_recall@k", "warm_ndcg@k"}, ...],
         "cases": counts, "rule": text}.
    """
    beams = rec.beams(cases, k, progress=rec.progress)
    rows = [{"epsilon": float(e), **score_lists(rec.fill(beams, cases, float(e)), cases, counts, k)} for e in grid]
    reference = next(r for r in rows if r["epsilon"] == 0.0)[f"ndcg@{k}"]
    allowed = [r for r in rows if r[f"ndcg@{k}"] >= (1.0 - max_loss) * reference]
    chosen = 0.0
    if counts["cold"] > 0:
        best = max(r[f"cold_recall@{k}"] for r in allowed)
        chosen = min(r["epsilon"] for r in allowed if r[f"cold_recall@{k}"] == best)
    for r in rows:
        log.info("cold-start fill on validation: epsilon %.2f  ndcg@%d %.4f  cold recall@%d %.4f%s", r["epsilon"], k,
                 r[f"ndcg@{k}"], k, r[f"cold_recall@{k}"], "  <- chosen" if r["epsilon"] == chosen else "")
    return {"chosen": chosen, "grid": [float(e) for e in grid], "valid": rows, "cases": counts,
            "rule": f"max validation cold Recall@{k} with NDCG@{k} >= (1 - {max_loss}) x epsilon-0 NDCG@{k}"}


def unconstrained_cold(rec, cases: pd.DataFrame, cold_items, k: int) -> dict:
    """Does the model ever produce a cold item's ID by itself? Beam search over the full vocabulary (no trie, no
    fill) on the cold-target cases: Recall@k, and the share of valid decoded items that are cold."""
    cold_cases = cases[cases["cold"]]
    if len(cold_cases) == 0:
        return {"cases": 0}
    items, _ = rec.unconstrained(cold_cases, k)
    ranks = target_ranks(items, cold_cases["target"].to_numpy())
    valid = items >= 0
    return {"cases": int(len(cold_cases)), f"recall@{k}": float(recall_at_k(ranks, k).mean()),
            "valid_share": float(valid.mean()), "cold_share_of_valid": cold_share(items, cold_items),
            "cases_with_a_cold_item": float(np.isin(items, np.asarray(sorted(cold_items))).any(axis=1).mean())}
