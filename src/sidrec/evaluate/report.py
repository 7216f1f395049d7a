"""The cross-system comparison report: accuracy, paired significance, cold start, steerability and ID quality.

Reads what the evaluate stage wrote per system (`metrics/<system>.json`, `data/eval/<system>.parquet` with one row per
test case in a shared case order, with the case's `user_id`) and renders one Markdown file plus bar charts with
bootstrap error bars. Every interval and paired test resamples users, each with all of its test cases (the test cases
come from few users, and a user's cases are correlated): the report recomputes the accuracy intervals per user from
the per-case files, so it never mixes bootstrap units. Differences against the baseline (TIGER, Rajput et al. 2023)
use the paired bootstrap over the same users (Berg-Kirkpatrick et al., 2012; see
`sidrec.evaluate.metrics.paired_bootstrap`) and are judged against the spread over training seeds when that was
measured (`--seed-spread`). Systems that were not run get a "not run" row. Figures are Vega-Lite specs rendered
offline to PNG by vl-convert, with matplotlib as the fallback renderer.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import bootstrap_ci, count_users, ndcg_at_k, paired_bootstrap, recall_at_k
from sidrec.evaluate.report_render import (MISSING, NOT_RUN, bar_chart_png, fmt_ci, fmt_scalar, md_table,
                                           write_png)
from sidrec.io import atomic_path, read_json

log = logging.getLogger(__name__)

CASE_COLUMNS = ("case_id", "user_id", "target", "cold", "rank")
NOT_MEASURED = "seed spread: not measured"
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


def cases_from_users(n_cases: int, n_users: int) -> str:
    """`9900 cases from 166 users`."""
    return f"{n_cases} cases from {n_users} users"


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


def flatten_scalars(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": scalar}; lists and other non-scalars are dropped."""
    out = {}
    for key, v in d.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flatten_scalars(v, prefix=f"{name}."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[name] = v
    return out


def scalar_table(rows: dict[str, dict], first_col: str) -> str:
    """Generic table: one row per entry of `rows`, one column per flattened scalar key (union, first-seen order).

    Args:
        rows: row label -> (possibly nested) dict of values.
        first_col: header of the label column.

    Returns:
        Markdown table; absent values render as an em dash.
    """
    flat = {label: flatten_scalars(d) for label, d in rows.items()}
    cols = list(dict.fromkeys(key for d in flat.values() for key in d if key != first_col))  # no repeated label
    body = [[label] + [fmt_scalar(d.get(c)) for c in cols] for label, d in flat.items()]
    return md_table([first_col] + cols, body)


def accuracy_section(results: list[SystemResult], ks: list[int], not_run: list[str] = ()) -> str:
    """Accuracy table (recall/ndcg at every k with per-user CIs, coverage, invalid rate), rows already sorted; one
    "not run" row per system in `not_run`."""
    metrics = [f"{name}@{k}" for name in ("recall", "ndcg") for k in ks]
    extras = list(dict.fromkeys(key for r in results for key in r.metrics if key.startswith("coverage@")))
    if any("invalid_rate_unconstrained" in r.metrics for r in results):
        extras.append("invalid_rate_unconstrained")
    rows = [[r.name] + [fmt_ci(r.metrics["test"], m) for m in metrics]
            + [f"{r.metrics[e]:.4f}" if isinstance(r.metrics.get(e), float) else fmt_scalar(r.metrics.get(e))
               for e in extras] for r in results]
    rows += [[name, NOT_RUN] + [MISSING] * (len(metrics) + len(extras) - 1) for name in not_run]
    n, u = len(results[0].cases), results[0].metrics["test_users"]
    return (f"## Accuracy\n\nMean over the same {cases_from_users(n, u)} with 95% per-user bootstrap intervals "
            f"(users drawn with replacement, each with all of its cases); sorted by {metrics[-1]}.\n\n"
            + md_table(["system"] + metrics + extras, rows))


def unit_section(results: list[SystemResult], k: int, n_boot: int, seed: int) -> str:
    """Per-user next to case-level 95% intervals of the test ndcg@k and recall@k, with the width ratio."""
    rows = []
    for r in results:
        ranks, users = r.cases["rank"].to_numpy(), r.cases["user_id"].to_numpy()
        row = [r.name]
        for fn in (ndcg_at_k, recall_at_k):
            v = fn(ranks, k)
            (ul, uh), (cl, ch) = (bootstrap_ci(v, u, n_boot=n_boot, seed=seed) for u in (users, None))
            row += [f"[{ul:.4f}, {uh:.4f}]", f"[{cl:.4f}, {ch:.4f}]", f"{(uh - ul) / (ch - cl):.2f}" if ch > cl
                    else MISSING]
        rows.append(row)
    n, u = len(results[0].cases), results[0].metrics["test_users"]
    return (f"## Per-user vs case-level intervals (k = {k})\n\nThe same {cases_from_users(n, u)}, 95% intervals "
            f"from {n_boot} resamples of users (the report's unit) and, for comparison only, of cases as if they were "
            f"independent; ratio = per-user width / case-level width.\n\n"
            + md_table(["system", f"ndcg@{k} per user", f"ndcg@{k} per case", "ratio", f"recall@{k} per user",
                        f"recall@{k} per case", "ratio"], rows))


def _fmt_sd(sds: dict[str, float | None]) -> str:
    known = [v for v in sds.values() if v is not None]
    if len(known) == len(sds):
        return f"{max(known):.4f}"
    unknown = ", ".join(s for s, v in sds.items() if v is None)
    return (f"{max(known):.4f} (not measured: {unknown})" if known else "not measured")


def paired_section(results: list[SystemResult], baseline: str, k: int, n_boot: int, seed: int,
                   not_run: list[str] = (), spread: dict | None = None) -> str:
    """Paired per-user bootstrap of per-case NDCG@k of every system against `baseline` over the shared cases, with a
    verdict against the seed spread (`verdict`); "not run" rows for the systems in `not_run`."""
    title = f"## Paired comparison against `{baseline}` (NDCG@{k})\n\n"
    ref = next((r for r in results if r.name == baseline), None)
    if ref is None:
        return title + f"`{baseline}` is not among the evaluated systems ({NOT_RUN}); no paired comparison."
    others = [r for r in results if r is not ref]
    if not others and not not_run:
        return title + f"Only `{baseline}` was evaluated; nothing to compare."
    base, users = ndcg_at_k(ref.cases["rank"].to_numpy(), k), ref.cases["user_id"].to_numpy()
    rows = []
    for r in others:
        res = paired_bootstrap(ndcg_at_k(r.cases["rank"].to_numpy(), k), base, users, n_boot=n_boot, seed=seed)
        sds = {r.name: seed_sd(spread, r.name, f"ndcg@{k}"), baseline: seed_sd(spread, baseline, f"ndcg@{k}")}
        rows.append([r.name, f"{res['diff']:+.4f}", f"[{res['ci_low']:+.4f}, {res['ci_high']:+.4f}]",
                     f"{res['p_value']:.4f}", _fmt_sd(sds), verdict(res["diff"], res["ci_low"], res["ci_high"], sds)])
    rows += [[name, NOT_RUN, MISSING, MISSING, MISSING, NOT_RUN] for name in not_run]
    note = (f"Difference = system minus `{baseline}` in mean per-case NDCG@{k} over the same "
            f"{cases_from_users(len(base), count_users(users))}; 95% percentile interval and two-sided p-value from "
            f"{n_boot} paired bootstrap resamples of users (both systems resampled with the same users, each user "
            f"with all of its cases; seed {seed}, null-centered; the smallest attainable p is "
            f"{1 / (n_boot + 1):.4f}). Seed sd = the larger standard deviation of NDCG@{k} over training seeds of the "
            f"two systems. Verdict: *real* when the interval excludes 0 and |Δ| exceeds the seed sd; *within the seed "
            f"spread* when the interval excludes 0 but |Δ| does not exceed it; *noise* when the interval holds 0.")
    if spread is None:
        note += f" {NOT_MEASURED[0].upper()}{NOT_MEASURED[1:]} for any system, so no difference is called real."
    return title + note + "\n\n" + md_table(["system", f"Δ ndcg@{k}", "95% CI (per user)", "p-value", "seed sd",
                                             "verdict"], rows)


def seed_spread_section(results: list[SystemResult], spread: dict | None, not_run: list[str] = ()) -> str:
    """Mean ± sd of the test ndcg@10 / recall@10 over training seeds per system, or "seed spread: not measured"."""
    title = "## Seed spread\n\n"
    if spread is None:
        return title + (f"{NOT_MEASURED}: no seed-spread file was given, so the paired differences below cannot be "
                        "compared with the run-to-run variation of training.")
    n, u = len(results[0].cases), results[0].metrics["test_users"]
    rows = []
    for name in [r.name for r in results] + list(not_run):
        entry = spread["systems"].get(name)
        if not entry:
            rows.append([name, "not measured", MISSING, MISSING])
            continue
        cells = []
        for key in ("ndcg@10", "recall@10"):
            values = entry.get(key) if isinstance(entry.get(key), list) and entry.get(key) else None
            mean = entry.get(f"{key}_mean", float(np.mean(values)) if values else None)
            sd = seed_sd(spread, name, key)
            cells.append(MISSING if mean is None else f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f}")
        rows.append([name, ", ".join(map(str, entry.get("seeds", []))) or MISSING, *cells])
    command = f" Measured by `{spread['command']}`." if spread.get("command") else ""
    return (title + f"Test score over training seeds (mean ± sample sd; each run scored on the test set, here "
            f"{cases_from_users(n, u)}).{command}\n\n"
            + md_table(["system", "seeds", "ndcg@10", "recall@10"], rows))


def cold_start_section(results: list[SystemResult], k: int, not_run: list[str] = (), n_boot: int = 1000,
                       seed: int = 0) -> str:
    """Cold-start table (targets with zero train events, per-user intervals) with each semantic-ID system's
    validation-chosen epsilon, its cold-start recall without the fill, the share of cold items in its top-k lists,
    the cost of the fill in overall NDCG@k (paired per user, filled vs. plain lists on the same cases), and what the
    model reaches by itself without trie or fill; zeros are shown and explained, never hidden; "not run" rows for
    the systems in `not_run`."""
    rows, blind = [], []
    for r in sorted(results, key=lambda r: -r.metrics.get("cold_start", {}).get(f"recall@{k}", 0.0)):
        cold = r.metrics.get("cold_start", {})
        n = cold.get("cases", 0)
        eps = r.metrics.get("cold_epsilon", {})
        applies = eps.get("applies", False)
        base = r.metrics.get("eps0", {}).get("cold_start", {})
        cost = MISSING
        if applies and eps.get("chosen", 0.0) > 0 and "rank_eps0" in r.cases:
            users = r.cases["user_id"].to_numpy()
            d = paired_bootstrap(ndcg_at_k(r.cases["rank"].to_numpy(), k), ndcg_at_k(r.cases["rank_eps0"].to_numpy(), k),
                                 users, n_boot=n_boot, seed=seed)
            cost = f"{d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        elif applies:
            cost = "0 (epsilon 0)"
        free = r.metrics.get("cold_start_unconstrained", {})
        share = r.metrics.get(f"cold_share@{k}")
        rows.append([r.name, str(n), str(r.metrics.get("cold_start_users", MISSING)), fmt_ci(cold, f"recall@{k}"),
                     fmt_ci(cold, f"ndcg@{k}"), f"{eps.get('chosen', 0.0):.1f}" if applies else "n/a",
                     f"{base[f'recall@{k}']:.4f}" if applies and f"recall@{k}" in base else MISSING,
                     f"{share:.4f}" if isinstance(share, float) else MISSING, cost,
                     f"{free[f'recall@{k}']:.4f} ({free.get('cold_share_of_valid', 0.0):.4f})"
                     if f"recall@{k}" in free else MISSING])
        if n and cold.get(f"recall@{k}", 0.0) == 0.0:
            blind.append(f"`{r.name}`")
    rows += [[name, NOT_RUN] + [MISSING] * 8 for name in not_run]
    ref = results[0].metrics
    text = (f"## Cold start\n\nTest cases whose target had zero training events: "
            f"{cases_from_users(ref['cold_start']['cases'], ref.get('cold_start_users', 0))}; 95% intervals resample "
            f"those users. A semantic-ID system may fill up to floor(epsilon x {k}) slots of each list with cold items "
            f"whose ID starts with a prefix its beam search kept (TIGER's cold-start fill: the deepest matching prefix "
            f"first, ordered by the model's prefix score; the cold items take the last slots). Epsilon is chosen per "
            f"system on validation: the highest validation cold-start Recall@{k} whose NDCG@{k} stays within "
            f"`eval.cold_max_loss` of epsilon 0. *recall@{k} at eps 0*: the same system without the fill. "
            f"*cold share@{k}*: share of all test top-{k} slots holding a cold item. *cost in NDCG@{k}*: overall "
            f"test NDCG@{k} with the fill minus without, paired per user over every test case. *unconstrained*: "
            f"cold-start Recall@{k} of a beam search over the whole vocabulary with neither trie nor fill (in "
            f"brackets, the share of its valid outputs that are cold items): does the model produce a cold item's ID "
            f"by itself?\n\n")
    text += md_table(["system", "cold cases", "cold users", f"recall@{k}", f"ndcg@{k}", "epsilon", f"recall@{k} at eps 0",
                      f"cold share@{k}", f"cost in NDCG@{k}", "unconstrained"], rows)
    if blind:
        text += (f"\n\n{', '.join(blind)} never placed a cold-start target in the top {k}: a recall of 0 here means "
                 "the system cannot recommend items it never saw in training.")
    knn = next((r for r in results if r.name == "content-knn"), None)
    if knn is not None:
        yard = knn.metrics.get("cold_start", {}).get(f"recall@{k}", 0.0)
        better = [f"`{r.name}`" for r in results if r.metrics.get("cold_epsilon", {}).get("applies")
                  and r.metrics.get("cold_start", {}).get(f"recall@{k}_ci_low", 0.0) > yard]
        text += (f"\n\nThe yardstick is `content-knn` (cosine to the history's mean content embedding, no "
                 f"interactions): cold-start Recall@{k} {yard:.4f}. "
                 + (f"Above it with the lower end of their interval: {', '.join(better)}." if better else
                    "No semantic-ID system's interval lies above it."))
    if all(r.metrics.get("cold_start", {}).get("cases", 0) == 0 for r in results):
        text += "\n\nThe test split has no cold-start cases, so this table carries no information."
    return text


def optional_sections(metrics_dir: str | Path, systems: list[str], steer_dir: str | Path | None = None,
                      items: pd.DataFrame | None = None, k: int = 10, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Steerability, LLM-path and ID-quality (`sid_<tokenizer>.json`) sections, when their files exist.

    With `steer_dir` and `items`, steerability gets the full lens (`report_lenses.steer_section`: per-pair shares,
    per-user paired tests, qualitative examples; listed systems without steer files get a "not run" row); without
    them, a plain table of each `steer_<system>.json`.
    """
    from sidrec.evaluate.report_lenses import llm_section, load_steer, steer_section

    metrics_dir = Path(metrics_dir)
    out = []
    if steer_dir is not None and items is not None:
        steer = load_steer(metrics_dir, steer_dir, systems)
        if steer:
            out.append(steer_section(steer, items["title"].astype(str).tolist(), items["genres"].tolist(), k, n_boot,
                                     seed, not_run=[s for s in systems if s not in steer]))
    else:
        steer = {s: read_json(metrics_dir / f"steer_{s}.json") for s in systems
                 if (metrics_dir / f"steer_{s}.json").exists()}
        if steer:
            out.append("## Steerability\n\nCounterfactual prompts: the steer stage's metrics per system (`cases` from "
                       "`steer_users` users where recorded; intervals resample users).\n\n"
                       + scalar_table(steer, "system"))
    cpt = sorted(p.stem.removeprefix("cpt_") for p in metrics_dir.glob("cpt_*.json"))
    llm = llm_section(metrics_dir, [t for t in cpt if t in systems or f"{t}-llm" in systems])  # LLM system t or t-llm
    if llm:
        out.append(llm)
    sid = {p.stem.removeprefix("sid_"): read_json(p) for p in sorted(metrics_dir.glob("sid_*.json"))}
    if sid:
        out.append("## Semantic ID quality\n\n" + scalar_table(sid, "tokenizer"))
    return out


def write_bar_chart(results: list[SystemResult], key: str, path: str | Path) -> Path:
    """Bar chart of `test[key]` per system with CI error bars, written atomically as PNG.

    Args:
        results: systems in display order.
        key: metric key in the `test` block, e.g. `ndcg@10`.
        path: output PNG path.

    Returns:
        The written path.
    """
    rows = [{"system": r.name, "value": r.metrics["test"][key], "low": r.metrics["test"].get(f"{key}_ci_low"),
             "high": r.metrics["test"].get(f"{key}_ci_high")} for r in results]
    rows = [{**row, "low": row["low"] if row["low"] is not None else row["value"],
             "high": row["high"] if row["high"] is not None else row["value"]} for row in rows]
    return write_png(path, bar_chart_png(rows, key.replace("recall", "Recall").replace("ndcg", "NDCG")))


def build_report(metrics_dir: str | Path, eval_dir: str | Path, systems: list[str], out: str | Path,
                 plots_dir: str | Path, baseline: str = "baseline", k: int = 10, n_boot: int = 1000,
                 seed: int = 0, steer_dir: str | Path | None = None, items: str | Path | None = None,
                 seed_spread: str | Path | None = None) -> str:
    """Write the comparison report (Markdown) and its figures.

    Args:
        metrics_dir: directory with `<system>.json`, optional `steer_<system>.json` and `sid_<tokenizer>.json`.
        eval_dir: directory with `<system>.parquet` per-case results.
        systems: systems to report, e.g. ["baseline", "sasrec", "popularity"]; those without metrics or per-case
            files were not run and get a "not run" row.
        out: Markdown output path.
        plots_dir: directory for the PNG figures (linked relatively from the Markdown).
        baseline: system the paired comparison is made against.
        k: headline cut-off (sorting, paired test, cold start, figures).
        n_boot: bootstrap resamples (per-user intervals and paired tests).
        seed: bootstrap seed.
        steer_dir: optional directory with `<system>.parquet` steer cases (with `items`: the full steerability lens).
        items: optional items.parquet (titles and genres for the steerability examples).
        seed_spread: optional seed-spread JSON (see `load_seed_spread`); absent = "seed spread: not measured".

    Returns:
        The Markdown text that was written to `out`.

    Raises:
        ReportError: no system available, misaligned cases, or `k` not reported by every system.
    """
    results = load_systems(metrics_dir, eval_dir, systems)
    not_run = [s for s in systems if s not in {r.name for r in results}]
    check_aligned(results)
    ks = metric_ks(results)
    if k not in ks:
        raise ReportError(f"report: headline cut-off k={k} not reported by every system (common ks: {ks})")
    results = [with_user_intervals(r, ks, n_boot, seed) for r in results]
    results.sort(key=lambda r: -r.metrics["test"][f"ndcg@{k}"])
    spread = load_seed_spread(seed_spread)
    out, plots_dir = Path(out), Path(plots_dir)
    n, n_cold = len(results[0].cases), int(results[0].cases["cold"].sum())
    ran = f"{len(results)} systems ({', '.join(f'`{r.name}`' for r in results)})"
    skipped = f"; not run: {', '.join(f'`{s}`' for s in not_run)}" if not_run else ""
    intro = (f"# Generative recommendation with Semantic IDs: system comparison\n\n"
             f"{ran} evaluated on the same test cases in the same order: "
             f"{cases_from_users(n, results[0].metrics['test_users'])} ({n_cold} cold-start){skipped}; cut-offs "
             f"k = {', '.join(map(str, ks))}. "
             f"Each test case has one held-out target, so Recall@k is the hit rate and NDCG@k = 1/log2(rank + 2). "
             f"Intervals are 95% percentile bootstraps over users ({n_boot} resamples, seed {seed}): users are drawn "
             f"with replacement and keep all of their test cases, because a user's cases are correlated and a few "
             f"heavy users hold many of them.")
    sections = [intro, accuracy_section(results, ks, not_run), unit_section(results, k, n_boot, seed),
                seed_spread_section(results, spread, not_run),
                paired_section(results, baseline, k, n_boot, seed, not_run, spread),
                cold_start_section(results, k, not_run, n_boot, seed),
                *optional_sections(metrics_dir, systems, steer_dir,
                                   pd.read_parquet(items) if items is not None else None, k, n_boot, seed)]
    from sidrec.evaluate.report_budget import budget_section, curve_section

    sections += [s for s in (budget_section(metrics_dir, systems),
                             curve_section(metrics_dir, systems, plots_dir / "learning_curve.png", out.parent, k)) if s]
    figures = []
    for key in (f"ndcg@{k}", f"recall@{k}"):
        png = write_bar_chart(results, key, plots_dir / f"{key.replace('@', '_at_')}.png")
        figures.append(f"![{key}]({Path(os.path.relpath(png, out.parent)).as_posix()})")
    sections.append("## Figures\n\n" + "\n\n".join(figures))
    text = "\n\n".join(sections) + "\n"
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("report: %d systems -> %s (figures in %s)", len(results), out, plots_dir)
    return text
