"""Top-k ranking metrics for next-item recommendation with one held-out target per test case.

With r the 0-based position of the target in the top-k list (r = -1 when absent):
- Recall@k = 1[0 <= r < k] (one relevant item per case, so Recall@k equals HitRate@k, as in TIGER, Rajput et al. 2023);
- NDCG@k = 1 / log2(r + 2) if 0 <= r < k else 0 (Jarvelin & Kekalainen, 2002; the ideal DCG is 1 with a single target);
- Coverage@k = |union of top-k lists| / |catalogue|.
Intervals are percentile bootstraps of the mean over test cases (Efron & Tibshirani, 1993, ch. 13); system differences
use the paired bootstrap over the same cases (Berg-Kirkpatrick et al., 2012). The resampling unit is the user (a
cluster bootstrap, Davison & Hinkley, 1997, 3.8; Field & Welsh, 2007): test cases of one user are correlated and a
few heavy users hold a large share of them, so users are drawn with replacement and keep all their cases, and the
statistic is the mean over the resample's cases (a ratio estimator). Passing `users=None` resamples cases instead.
All functions are pure and deterministic under their `seed`.
"""
from __future__ import annotations

import numpy as np

_CHUNK_ELEMS = 4_000_000
"""Resample-index elements drawn at once (32 MB of int64), so large test sets never hold an (n_boot, B) matrix."""


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its top-k list.

    Args:
        topk: (B, K) recommended item ids, best first; -1 marks an empty slot.
        targets: (B,) held-out item ids (>= 0).

    Returns:
        (B,) int64 rank of the first occurrence of the target in its row, or -1 when it is absent.
    """
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2 or targets.ndim != 1 or topk.shape[0] != targets.shape[0]:
        raise ValueError(f"target_ranks: need topk (B, K) and targets (B,), got {topk.shape} and {targets.shape}")
    if (targets < 0).any():
        raise ValueError("target_ranks: targets must be item ids >= 0 (-1 is reserved for empty slots)")
    hit = topk == targets[:, None]  # (B, K)
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


def _check_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {ranks.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ranks.size and ranks.min() < -1:
        raise ValueError("ranks must be >= -1 (-1 = target not recommended)")
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-case Recall@k (hit indicator, one target per case).

    Args:
        ranks: (B,) 0-based target ranks, -1 when absent.
        k: cut-off.

    Returns:
        (B,) float64, 1.0 where 0 <= rank < k else 0.0.
    """
    ranks = _check_ranks(ranks, k)
    return ((ranks >= 0) & (ranks < k)).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-case NDCG@k with a single relevant item.

    Args:
        ranks: (B,) 0-based target ranks, -1 when absent.
        k: cut-off.

    Returns:
        (B,) float64, 1 / log2(rank + 2) where 0 <= rank < k else 0.0.
    """
    ranks = _check_ranks(ranks, k)
    hit = (ranks >= 0) & (ranks < k)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def _clusters(n: int, users) -> tuple[np.ndarray, int]:
    """Cluster code per case and the number of clusters.

    Args:
        n: number of cases B.
        users: (B,) user id per case, or None for one cluster per case (the case-level bootstrap).

    Returns:
        ((B,) int64 codes in [0, U), U); with `users=None` the codes are 0..B-1 in case order.
    """
    if users is None:
        return np.arange(n, dtype=np.int64), n
    users = np.asarray(users)
    if users.shape != (n,):
        raise ValueError(f"users must be (B,) = ({n},), one user id per case, got shape {users.shape}")
    uniq, codes = np.unique(users, return_inverse=True)
    return codes.astype(np.int64).ravel(), int(uniq.size)


def _cluster_totals(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster case sums (U,) float64 and case counts (U,) float64 of `values` (B,)."""
    sums = np.bincount(codes, weights=values, minlength=n_clusters).astype(np.float64)
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    return sums, counts


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int, users=None) -> np.ndarray:
    """(n_boot,) means over all cases of cluster-bootstrap resamples of `values` (B,).

    Each resample draws U clusters (users) with replacement and keeps every case of each drawn cluster; its mean is
    sum(drawn clusters' case sums) / sum(drawn clusters' case counts), a ratio estimator. Multiplicities come from
    `np.bincount` of the drawn cluster indices, in chunks of about `_CHUNK_ELEMS` elements (bounded memory).
    With `users=None` every case is its own cluster (the case-level bootstrap).
    """
    codes, n_clusters = _clusters(values.shape[0], users)
    sums, counts = _cluster_totals(values, codes, n_clusters)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMS // n_clusters)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        r = min(n_boot, start + rows) - start
        idx = rng.integers(0, n_clusters, size=(r, n_clusters))  # (r, U) drawn cluster indices
        offsets = (np.arange(r, dtype=np.int64) * n_clusters)[:, None]
        mult = np.bincount((idx + offsets).ravel(), minlength=r * n_clusters).reshape(r, n_clusters)  # (r, U)
        out[start:start + r] = (mult @ sums) / (mult @ counts)
    return out


def _check_values(values: np.ndarray, n_boot: int, alpha: float = 0.05) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return values


def count_users(users) -> int:
    """Number of distinct user ids in `users` (B,); 0 for B = 0."""
    return int(np.unique(np.asarray(users)).size)


def bootstrap_ci(values: np.ndarray, users=None, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean over cases, resampling users (clusters).

    Args:
        values: (B,) per-case metric values.
        users: (B,) user id per case; users are drawn with replacement and keep all their cases (the per-user
            cluster bootstrap). None makes every case its own cluster (the case-level bootstrap).
        n_boot: bootstrap resamples.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of the resampling generator; the same seed gives the same interval.

    Returns:
        (low, high) = the alpha/2 and 1 - alpha/2 quantiles of the resampled means; (0.0, 0.0) for B = 0.
    """
    values = _check_values(values, n_boot, alpha)
    if values.size == 0:
        return 0.0, 0.0
    means = _bootstrap_means(values, n_boot, seed, users)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, users=None, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Paired bootstrap test of mean(a) - mean(b) over the same test cases, resampling users jointly.

    One resample of users serves both systems, so the resampled difference of means is the resampled (ratio) mean of
    d = a - b. The interval is the percentile interval of those resampled means. The two-sided p-value uses the
    shifted (null-centered) bootstrap: under H0 the distribution of d* - mean(d) stands in for the null distribution
    of the mean difference, so p = (1 + #{|d*_i - mean(d)| >= |mean(d)|}) / (n_boot + 1) (Efron & Tibshirani, 1993,
    16.4; the +1 keeps a Monte-Carlo p-value away from an impossible 0, Davison & Hinkley, 1997, 4.2). Identical
    systems get p = 1.

    Args:
        a: (B,) per-case metric of system A.
        b: (B,) per-case metric of system B, same cases in the same order.
        users: (B,) user id per case (the resampling unit); None resamples cases.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator.
        alpha: 1 - confidence level of the interval.

    Returns:
        dict(diff=mean(a - b), ci_low, ci_high, p_value), all floats; zeros and p = 1 when B = 0.
    """
    a = _check_values(a, n_boot, alpha)
    b = _check_values(b, n_boot, alpha)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a and b must cover the same cases, got {a.shape} and {b.shape}")
    if a.size == 0:
        return {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    d = a - b
    diff = float(d.mean())
    means = _bootstrap_means(d, n_boot, seed, users)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # Tolerance so that float noise in identical resampled means never counts as "less extreme".
    extreme = np.abs(means - diff) >= abs(diff) - 1e-12
    p_value = (1.0 + float(extreme.sum())) / (n_boot + 1.0)
    return {"diff": diff, "ci_low": float(low), "ci_high": float(high), "p_value": p_value}


def coverage_at_k(topk: np.ndarray, num_items: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one top-k list.

    Args:
        topk: (B, K) recommended item ids, best first; ids outside [0, num_items) (e.g. -1) are ignored.
        num_items: catalogue size.
        k: cut-off (only the first k columns count).

    Returns:
        |distinct valid ids in topk[:, :k]| / num_items, in [0, 1].
    """
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise ValueError(f"coverage_at_k: topk must be (B, K), got shape {topk.shape}")
    if num_items < 1 or k < 1:
        raise ValueError(f"coverage_at_k: need num_items >= 1 and k >= 1, got {num_items} and {k}")
    ids = topk[:, :k].ravel()
    ids = ids[(ids >= 0) & (ids < num_items)]
    return float(np.unique(ids).size / num_items)


def _metric_block(ranks: np.ndarray, users, ks: tuple[int, ...], n_boot: int, seed: int) -> dict:
    """{recall@k, recall@k_ci_low, recall@k_ci_high, ..., ndcg@k, ...} with per-user intervals (`users` (B,), None =
    per case); zeros (never NaN) for an empty subset."""
    block = {}
    for name, fn in (("recall", recall_at_k), ("ndcg", ndcg_at_k)):
        for k in ks:
            v = fn(ranks, k)
            low, high = bootstrap_ci(v, users, n_boot=n_boot, seed=seed)
            block[f"{name}@{k}"] = float(v.mean()) if v.size else 0.0
            block[f"{name}@{k}_ci_low"] = low
            block[f"{name}@{k}_ci_high"] = high
    return block


def _case_level_block(ranks: np.ndarray, k: int, n_boot: int, seed: int) -> dict:
    """{ndcg@k_ci_low_case, ndcg@k_ci_high_case, recall@k_..._case}: case-level intervals, for comparison only."""
    block = {}
    for name, fn in (("ndcg", ndcg_at_k), ("recall", recall_at_k)):
        low, high = bootstrap_ci(fn(ranks, k), None, n_boot=n_boot, seed=seed)
        block[f"{name}@{k}_ci_low_case"] = low
        block[f"{name}@{k}_ci_high_case"] = high
    return block


def summarize(ranks: np.ndarray, cold_mask: np.ndarray, topk: np.ndarray, num_items: int,
              ks: tuple[int, ...] = (5, 10), n_boot: int = 1000, seed: int = 0, users=None) -> dict:
    """The metrics JSON of one system (one schema for every system).

    Args:
        ranks: (B,) 0-based target ranks, -1 when absent (see `target_ranks`).
        cold_mask: (B,) bool, True where the target had zero train events.
        topk: (B, K) recommended item ids (for coverage).
        num_items: catalogue size.
        ks: cut-offs.
        n_boot: bootstrap resamples per interval.
        seed: bootstrap seed (the same resamples for every metric of a subset).
        users: (B,) user id per case, the bootstrap unit (users are resampled, each with all its cases); None makes
            every case its own user (case-level intervals, `bootstrap_unit` "case").

    Returns:
        {"cases": B, "test_users": U, "cold_start_users": U_cold, "bootstrap_unit": "user" | "case",
         "test": {metric keys, plus case-level comparison keys}, "cold_start": {"cases": B_cold, metric keys},
         f"coverage@{max(ks)}": float}; metric keys are `recall@k`, `recall@k_ci_low`, `recall@k_ci_high`, then the
        same for `ndcg@k` (intervals over the bootstrap unit). The test block also holds
        `ndcg@K_ci_low_case`, `ndcg@K_ci_high_case`, `recall@K_ci_low_case`, `recall@K_ci_high_case` for K = max(ks):
        the case-level interval (cases resampled as if independent), kept only to show how much narrower it is than
        the per-user one. Scalars only.
    """
    ranks = np.asarray(ranks)
    cold_mask = np.asarray(cold_mask)
    topk = np.asarray(topk)
    if cold_mask.dtype != bool:
        raise ValueError(f"summarize: cold_mask must be bool, got {cold_mask.dtype}")
    if not (ranks.shape == cold_mask.shape and topk.ndim == 2 and topk.shape[0] == ranks.shape[0]):
        raise ValueError(f"summarize: shapes disagree: ranks {ranks.shape}, cold_mask {cold_mask.shape}, "
                         f"topk {topk.shape}")
    if not ks:
        raise ValueError("summarize: ks must name at least one cut-off")
    unit = "case" if users is None else "user"
    users = np.arange(ranks.size) if users is None else np.asarray(users)
    if users.shape != ranks.shape:
        raise ValueError(f"summarize: users must be (B,) = {ranks.shape}, got shape {users.shape}")
    ks = tuple(int(k) for k in ks)
    cold = ranks[cold_mask]
    return {
        "cases": int(ranks.size),
        "test_users": count_users(users),
        "cold_start_users": count_users(users[cold_mask]),
        "bootstrap_unit": unit,
        "test": {**_metric_block(ranks, users, ks, n_boot, seed), **_case_level_block(ranks, max(ks), n_boot, seed)},
        "cold_start": {"cases": int(cold.size), **_metric_block(cold, users[cold_mask], ks, n_boot, seed)},
        f"coverage@{max(ks)}": coverage_at_k(topk, num_items, k=max(ks)),
    }


def cold_share(topk: np.ndarray, cold_items) -> float:
    """Share of the filled top-k slots that hold cold items."""
    filled = topk >= 0
    if not filled.any():
        return 0.0
    return float((np.isin(topk, np.asarray(sorted(cold_items), dtype=np.int64)) & filled).sum() / filled.sum())
