"""The cross-system comparison report: accuracy, paired significance, cold start, steerability and ID quality.

`build_report` reads what the evaluate stage wrote per system (`metrics/<system>.json`, `data/eval/<system>.parquet`
with one row per test case in a shared case order, with the case's `user_id`) and renders one Markdown file plus bar
charts with bootstrap error bars. Every interval and paired test resamples users, each with all of its test cases (the
test cases come from few users, and a user's cases are correlated): the report recomputes the accuracy intervals per
user from the per-case files, so it never mixes bootstrap units. Differences against the baseline (TIGER, Rajput et
al. 2023) use the paired bootstrap over the same users (Berg-Kirkpatrick et al., 2012; see
`sidrec.evaluate.metrics.paired_bootstrap`) and are judged against the spread over training seeds when that was
measured (`--seed-spread`). Systems that were not run get a "not run" row. Figures are Vega-Lite specs rendered
offline to PNG by vl-convert, with matplotlib as the fallback renderer.

This module holds the accuracy, interval, seed-spread and paired sections and assembles the report; the inputs and
their statistics live in `report_data`, the cold-start, steerability and LLM lenses in `report_lenses`, the training
budget and learning curves in `report_budget`, the Markdown and PNG rendering in `report_render`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.evaluate.metrics import bootstrap_ci, count_users, ndcg_at_k, paired_bootstrap, recall_at_k
from sidrec.evaluate.report_budget import budget_section, curve_section
from sidrec.evaluate.report_data import (ReportError, SystemResult, check_aligned, load_seed_spread, load_systems,
                                         metric_ks, seed_sd, verdict, with_user_intervals)
from sidrec.evaluate.report_lenses import cold_start_section, llm_section, load_steer, steer_section
from sidrec.evaluate.report_render import (MISSING, NOT_RUN, bar_chart_png, cases_from_users, fmt_ci, fmt_scalar,
                                           md_table, write_png)
from sidrec.io import atomic_path, read_json

log = logging.getLogger(__name__)

NOT_MEASURED = "seed spread: not measured"


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



def optional_sections(metrics_dir: str | Path, systems: list[str], steer_dir: str | Path | None = None,
                      items: pd.DataFrame | None = None, k: int = 10, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Steerability, LLM-path and ID-quality (`sid_<tokenizer>.json`) sections, when their files exist.

    With `steer_dir` and `items`, steerability gets the full lens (`report_lenses.steer_section`: per-pair shares,
    per-user paired tests, qualitative examples; listed systems without steer files get a "not run" row); without
    them, a plain table of each `steer_<system>.json`.
    """
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
