"""What the comparison report reads, and the per-user statistics its verdicts rest on.

`load_systems` reads what the evaluate stage wrote per system (`metrics/<system>.json`, `data/eval/<system>.parquet`
with one row per test case in a shared case order, with the case's `user_id`); `check_aligned` refuses systems
evaluated on different cases. `with_user_intervals` recomputes every accuracy interval from the per-case file by
resampling users, so the report never mixes bootstrap units. `load_seed_spread`, `seed_sd` and `verdict` judge a
paired difference against the spread over training seeds.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import bootstrap_ci, count_users, ndcg_at_k, recall_at_k
from sidrec.io import read_json

log = logging.getLogger(__name__)

CASE_COLUMNS = ("case_id", "user_id", "target", "cold", "rank")
_METRIC_KEY = re.compile(r"^(recall|ndcg)@(\d+)$")


class ReportError(ValueError):
    """The inputs of the report are unusable (no systems, misaligned cases, missing keys)."""


@dataclass(frozen=True)
class SystemResult:
    """What the evaluate stage wrote for one system."""

    name: str
    metrics: dict
    """Contents of `metrics/<system>.json` (schema of `sidrec.evaluate.metrics.summarize` plus stage extras)."""
    cases: pd.DataFrame
    """Per-case results, columns `CASE_COLUMNS` at least, in the shared case order."""


def load_systems(metrics_dir: str | Path, eval_dir: str | Path, systems: list[str]) -> list[SystemResult]:
    """Load every requested system whose metrics JSON and per-case parquet both exist.

    Args:
        metrics_dir: directory holding `<system>.json`.
        eval_dir: directory holding `<system>.parquet`.
        systems: system names, in the order the caller listed them.

    Returns:
        The available systems, in the requested order; missing ones (not run) are left out with a warning and get a
        "not run" row in the report.

    Raises:
        ReportError: when no system is available or a per-case file lacks a required column.
    """
    out = []
    for name in systems:
        mpath, epath = Path(metrics_dir) / f"{name}.json", Path(eval_dir) / f"{name}.parquet"
        missing = [str(p) for p in (mpath, epath) if not p.exists()]
        if missing:
            log.warning("report: system %r not run (missing %s)", name, ", ".join(missing))
            continue
        cases = pd.read_parquet(epath)
        absent = [c for c in CASE_COLUMNS if c not in cases.columns]
        if absent:
            raise ReportError(f"report: {epath} lacks column(s) {absent}; expected at least {list(CASE_COLUMNS)}")
        out.append(SystemResult(name, read_json(mpath), cases))
    if not out:
        raise ReportError(f"report: none of the systems {systems} has both {metrics_dir}/<system>.json "
                          f"and {eval_dir}/<system>.parquet")
    return out


def check_aligned(results: list[SystemResult]) -> None:
    """Raise unless every system evaluated the same cases (case_id and target) in the same order.

    Args:
        results: loaded systems; the first is the reference.

    Raises:
        ReportError: naming the first system and position that disagree with the reference.
    """
    ref = results[0]
    for r in results:
        if r.metrics.get("cases") != len(r.cases):
            raise ReportError(f"report: {r.name}: metrics say {r.metrics.get('cases')} cases but the per-case file "
                              f"has {len(r.cases)} rows")
        if r is ref:
            continue
        if len(r.cases) != len(ref.cases):
            raise ReportError(f"report: cases misaligned: {r.name} has {len(r.cases)} cases, "
                              f"{ref.name} has {len(ref.cases)}")
        for col in ("case_id", "user_id", "target"):
            a, b = ref.cases[col].to_numpy(), r.cases[col].to_numpy()
            bad = np.flatnonzero(a != b)
            if bad.size:
                i = int(bad[0])
                raise ReportError(f"report: cases misaligned: {col} differs between {ref.name} and {r.name} at "
                                  f"row {i} ({a[i]} vs {b[i]}; {bad.size} rows differ); every system must be "
                                  f"evaluated on the same cases in the same order")


def metric_ks(results: list[SystemResult]) -> list[int]:
    """Cut-offs k for which every system reports both recall@k and ndcg@k in its `test` block, ascending."""
    per_system = []
    for r in results:
        found = {}
        for key in r.metrics.get("test", {}):
            m = _METRIC_KEY.match(key)
            if m:
                found.setdefault(int(m.group(2)), set()).add(m.group(1))
        per_system.append({k for k, names in found.items() if names == {"recall", "ndcg"}})
    return sorted(set.intersection(*per_system))


def interval_block(ranks: np.ndarray, users, ks: list[int], n_boot: int, seed: int) -> dict:
    """{recall@k, recall@k_ci_low, recall@k_ci_high, ndcg@k, ...} of `ranks` (B,) with 95% intervals that resample
    `users` (B,) (None = cases); zeros for B = 0."""
    block = {}
    for name, fn in (("recall", recall_at_k), ("ndcg", ndcg_at_k)):
        for k in ks:
            v = fn(ranks, k)
            low, high = bootstrap_ci(v, users, n_boot=n_boot, seed=seed)
            block.update({f"{name}@{k}": float(v.mean()) if v.size else 0.0, f"{name}@{k}_ci_low": low,
                          f"{name}@{k}_ci_high": high})
    return block


def with_user_intervals(r: SystemResult, ks: list[int], n_boot: int, seed: int) -> SystemResult:
    """`r` with its `test` and `cold_start` intervals recomputed from the per-case file, resampling users.

    Also sets `test_users`, `cold_start_users` and `bootstrap_unit` = "user"; other keys (coverage, invalid rate)
    are kept from the metrics JSON.
    """
    ranks, users = r.cases["rank"].to_numpy(), r.cases["user_id"].to_numpy()
    cold = r.cases["cold"].to_numpy(dtype=bool)
    test = {**r.metrics.get("test", {}), **interval_block(ranks, users, ks, n_boot, seed)}
    cold_block = {**r.metrics.get("cold_start", {}), "cases": int(cold.sum()),
                  **interval_block(ranks[cold], users[cold], ks, n_boot, seed)}
    return SystemResult(r.name, {**r.metrics, "test": test, "cold_start": cold_block, "test_users": count_users(users),
                                 "cold_start_users": count_users(users[cold]), "bootstrap_unit": "user"}, r.cases)


def load_seed_spread(path: str | Path | None) -> dict | None:
    """Contents of the seed-spread JSON (`{"systems": {system: {"seeds", "ndcg@10", "ndcg@10_sd", ...}},
    "command"}`), or None when no path is given or the file does not exist."""
    if path is None or not Path(path).exists():
        return None
    spread = read_json(path)
    if not isinstance(spread.get("systems"), dict):
        raise ReportError(f"report: {path} lacks a `systems` mapping; expected {{\"systems\": {{system: {{...}}}}}}")
    return spread


DETERMINISTIC = ("popularity", "content-knn")
"""Systems with no training seed (counts, cosines): the same inputs give the same lists, so their seed sd is 0."""


def seed_sd(spread: dict | None, system: str, key: str) -> float | None:
    """Seed standard deviation of `key` (e.g. `ndcg@10`) for `system`: `<key>_sd`, else the sample sd of the listed
    per-seed values (>= 2 of them); else 0 for a system without a training seed (`DETERMINISTIC`); None when not
    measured."""
    entry = (spread or {}).get("systems", {}).get(system) or {}
    if entry.get(f"{key}_sd") is not None:
        return float(entry[f"{key}_sd"])
    values = entry.get(key)
    if isinstance(values, list) and len(values) >= 2:
        return float(np.std(np.asarray(values, dtype=np.float64), ddof=1))
    return 0.0 if system in DETERMINISTIC else None


def verdict(diff: float, ci_low: float, ci_high: float, sds: dict[str, float | None]) -> str:
    """Call a paired difference "real", "within the seed spread" or "noise".

    Args:
        diff, ci_low, ci_high: the per-user paired difference and its 95% interval.
        sds: system -> seed sd of the metric (None = not measured), for both systems of the pair.

    Returns:
        "noise" when the interval holds 0; "within the seed spread" when it excludes 0 but |diff| <= the larger known
        seed sd; "real" when it excludes 0 and |diff| exceeds the seed sd of both systems; otherwise a note that the
        seed spread was not measured for the systems that lack it.
    """
    if ci_low <= 0.0 <= ci_high:
        return "noise"
    known = [v for v in sds.values() if v is not None]
    if known and abs(diff) <= max(known):
        return "within the seed spread"
    unknown = [s for s, v in sds.items() if v is None]
    if unknown:
        return "interval excludes 0; seed spread not measured for " + ", ".join(f"`{s}`" for s in unknown)
    return "real"
