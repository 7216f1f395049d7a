"""The cross-system comparison report: accuracy, paired significance, cold start, steerability and ID quality.

Reads what the evaluate stage wrote per system (`metrics/<system>.json`, `data/eval/<system>.parquet` with one row per
test case in a shared case order) and renders one Markdown file plus bar charts with bootstrap error bars.
Differences against the baseline (TIGER, Rajput et al. 2023) use the paired bootstrap over the same test cases
(Berg-Kirkpatrick et al., 2012; see `sidrec.evaluate.metrics.paired_bootstrap`). Figures are Vega-Lite specs rendered
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

from sidrec.evaluate.metrics import ndcg_at_k, paired_bootstrap
from sidrec.io import atomic_path, read_json

log = logging.getLogger(__name__)

CASE_COLUMNS = ("case_id", "target", "cold", "rank")
_METRIC_KEY = re.compile(r"^(recall|ndcg)@(\d+)$")
_MISSING = "—"


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
        The available systems, in the requested order; missing ones are skipped with a warning.

    Raises:
        ReportError: when no system is available or a per-case file lacks a required column.
    """
    out = []
    for name in systems:
        mpath, epath = Path(metrics_dir) / f"{name}.json", Path(eval_dir) / f"{name}.parquet"
        missing = [str(p) for p in (mpath, epath) if not p.exists()]
        if missing:
            log.warning("report: skipping system %r, missing %s", name, ", ".join(missing))
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
        for col in ("case_id", "target"):
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


def fmt_ci(block: dict, key: str) -> str:
    """`0.0512 [0.046, 0.057]` from `block[key]`, `block[key_ci_low]`, `block[key_ci_high]`."""
    if key not in block:
        return _MISSING
    low, high = block.get(f"{key}_ci_low"), block.get(f"{key}_ci_high")
    if low is None or high is None:
        return f"{block[key]:.4f}"
    return f"{block[key]:.4f} [{low:.3f}, {high:.3f}]"


def fmt_scalar(v) -> str:
    """A table cell for a scalar: 4 significant digits for floats, text otherwise."""
    if v is None:
        return _MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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


def accuracy_section(results: list[SystemResult], ks: list[int]) -> str:
    """Accuracy table (recall/ndcg at every k with CIs, coverage, invalid rate), rows already sorted."""
    metrics = [f"{name}@{k}" for name in ("recall", "ndcg") for k in ks]
    extras = list(dict.fromkeys(key for r in results for key in r.metrics if key.startswith("coverage@")))
    if any("invalid_rate_unconstrained" in r.metrics for r in results):
        extras.append("invalid_rate_unconstrained")
    rows = [[r.name] + [fmt_ci(r.metrics["test"], m) for m in metrics]
            + [f"{r.metrics[e]:.4f}" if isinstance(r.metrics.get(e), float) else fmt_scalar(r.metrics.get(e))
               for e in extras] for r in results]
    return ("## Accuracy\n\nMean over all test cases with 95% bootstrap intervals; sorted by "
            f"{metrics[-1]}.\n\n" + md_table(["system"] + metrics + extras, rows))


def paired_section(results: list[SystemResult], baseline: str, k: int, n_boot: int, seed: int) -> str:
    """Paired bootstrap of per-case NDCG@k of every system against `baseline` over the shared cases."""
    title = f"## Paired comparison against `{baseline}` (NDCG@{k})\n\n"
    ref = next((r for r in results if r.name == baseline), None)
    if ref is None:
        return title + f"`{baseline}` is not among the evaluated systems; no paired comparison."
    others = [r for r in results if r is not ref]
    if not others:
        return title + f"Only `{baseline}` was evaluated; nothing to compare."
    base = ndcg_at_k(ref.cases["rank"].to_numpy(), k)
    rows = []
    for r in others:
        res = paired_bootstrap(ndcg_at_k(r.cases["rank"].to_numpy(), k), base, n_boot=n_boot, seed=seed)
        rows.append([r.name, f"{res['diff']:+.4f}", f"[{res['ci_low']:+.4f}, {res['ci_high']:+.4f}]",
                     f"{res['p_value']:.4f}"])
    note = (f"Difference = system minus `{baseline}` in mean per-case NDCG@{k} over the same {len(base)} cases; "
            f"95% percentile interval and two-sided p-value from {n_boot} paired bootstrap resamples "
            f"(seed {seed}, null-centered; the smallest attainable p is {1 / (n_boot + 1):.4f}).\n\n")
    return title + note + md_table(["system", f"Δ ndcg@{k}", "95% CI", "p-value"], rows)


def cold_start_section(results: list[SystemResult], k: int) -> str:
    """Cold-start table (targets with zero train events); zeros are shown and explained, never hidden."""
    rows, blind = [], []
    for r in results:
        cold = r.metrics.get("cold_start", {})
        n = cold.get("cases", 0)
        rows.append([r.name, str(n), fmt_ci(cold, f"recall@{k}"), fmt_ci(cold, f"ndcg@{k}")])
        if n and cold.get(f"recall@{k}", 0.0) == 0.0:
            blind.append(f"`{r.name}`")
    text = "## Cold start\n\nTest cases whose target had zero training events.\n\n"
    text += md_table(["system", "cold cases", f"recall@{k}", f"ndcg@{k}"], rows)
    if blind:
        text += (f"\n\n{', '.join(blind)} never placed a cold-start target in the top {k}: a recall of 0 here means "
                 "the system cannot recommend items it never saw in training.")
    if all(r.metrics.get("cold_start", {}).get("cases", 0) == 0 for r in results):
        text += "\n\nThe test split has no cold-start cases, so this table carries no information."
    return text


def optional_sections(metrics_dir: str | Path, systems: list[str], steer_dir: str | Path | None = None,
                      items: pd.DataFrame | None = None, k: int = 10, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Steerability, LLM-path and ID-quality (`sid_<tokenizer>.json`) sections, when their files exist.

    With `steer_dir` and `items`, steerability gets the full lens (`report_lenses.steer_section`: per-pair shares,
    paired tests, qualitative examples); without them, a plain table of each `steer_<system>.json`.
    """
    from sidrec.evaluate.report_lenses import llm_section, load_steer, steer_section

    metrics_dir = Path(metrics_dir)
    out = []
    if steer_dir is not None and items is not None:
        steer = load_steer(metrics_dir, steer_dir, systems)
        if steer:
            out.append(steer_section(steer, items["title"].astype(str).tolist(), items["genres"].tolist(), k, n_boot,
                                     seed))
    else:
        steer = {s: read_json(metrics_dir / f"steer_{s}.json") for s in systems
                 if (metrics_dir / f"steer_{s}.json").exists()}
        if steer:
            out.append("## Steerability\n\nCounterfactual prompts (see DESIGN.md).\n\n" + scalar_table(steer, "system"))
    llm = llm_section(metrics_dir, sorted(p.stem.removeprefix("cpt_") for p in metrics_dir.glob("cpt_*.json")))
    if llm:
        out.append(llm)
    sid = {p.stem.removeprefix("sid_"): read_json(p) for p in sorted(metrics_dir.glob("sid_*.json"))}
    if sid:
        out.append("## Semantic ID quality\n\n" + scalar_table(sid, "tokenizer"))
    return out


def _bar_spec(rows: list[dict], label: str) -> dict:
    """Vega-Lite: one bar per system (listed order) with a bootstrap-interval error bar."""
    x = {"field": "system", "type": "nominal", "sort": [r["system"] for r in rows], "axis": {"labelAngle": -30}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{label} with 95% bootstrap intervals", "width": max(160, 60 * len(rows)), "height": 240,
        "data": {"values": rows},
        "layer": [
            {"mark": "bar", "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": label}}},
            {"mark": {"type": "errorbar", "ticks": {"size": 14}, "color": "black"},
             "encoding": {"x": x, "y": {"field": "low", "type": "quantitative", "title": label},
                          "y2": {"field": "high"}}},
        ],
    }


def _render_vegalite(spec: dict) -> bytes:
    import vl_convert

    return vl_convert.vegalite_to_png(spec, scale=2)


def _render_matplotlib(rows: list[dict], label: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([r["value"] for r in rows])
    err = np.array([[r["value"] - r["low"] for r in rows], [r["high"] - r["value"] for r in rows]])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(rows)), 3.5))
    ax.bar([r["system"] for r in rows], values, yerr=np.clip(err, 0, None), capsize=4)
    ax.set_ylabel(label)
    ax.set_title(f"{label} with 95% bootstrap intervals", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    plt.close(fig)
    return buf.getvalue()


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
    label = key.replace("recall", "Recall").replace("ndcg", "NDCG")
    try:
        png = _render_vegalite(_bar_spec(rows, label))
    except Exception as e:  # noqa: BLE001 - any renderer failure falls back to matplotlib
        log.warning("report: vl-convert failed (%s: %s); rendering %s with matplotlib", type(e).__name__, e, path)
        png = _render_matplotlib(rows, label)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return path


def build_report(metrics_dir: str | Path, eval_dir: str | Path, systems: list[str], out: str | Path,
                 plots_dir: str | Path, baseline: str = "baseline", k: int = 10, n_boot: int = 1000,
                 seed: int = 0, steer_dir: str | Path | None = None, items: str | Path | None = None) -> str:
    """Write the comparison report (Markdown) and its figures.

    Args:
        metrics_dir: directory with `<system>.json`, optional `steer_<system>.json` and `sid_<tokenizer>.json`.
        eval_dir: directory with `<system>.parquet` per-case results.
        systems: systems to include, e.g. ["baseline", "sasrec", "popularity"]; missing ones are skipped.
        out: Markdown output path.
        plots_dir: directory for the PNG figures (linked relatively from the Markdown).
        baseline: system the paired comparison is made against.
        k: headline cut-off (sorting, paired test, cold start, figures).
        n_boot: paired bootstrap resamples.
        seed: paired bootstrap seed.
        steer_dir: optional directory with `<system>.parquet` steer cases (with `items`: the full steerability lens).
        items: optional items.parquet (titles and genres for the steerability examples).

    Returns:
        The Markdown text that was written to `out`.

    Raises:
        ReportError: no system available, misaligned cases, or `k` not reported by every system.
    """
    results = load_systems(metrics_dir, eval_dir, systems)
    check_aligned(results)
    ks = metric_ks(results)
    if k not in ks:
        raise ReportError(f"report: headline cut-off k={k} not reported by every system (common ks: {ks})")
    results.sort(key=lambda r: -r.metrics["test"][f"ndcg@{k}"])
    out, plots_dir = Path(out), Path(plots_dir)
    n, n_cold = len(results[0].cases), int(results[0].cases["cold"].sum())
    intro = (f"# Generative recommendation with Semantic IDs: system comparison\n\n"
             f"{len(results)} systems ({', '.join(f'`{r.name}`' for r in results)}) evaluated on the same {n} test "
             f"cases in the same order ({n_cold} cold-start); cut-offs k = {', '.join(map(str, ks))}. "
             f"Each test case has one held-out target, so Recall@k is the hit rate and NDCG@k = 1/log2(rank + 2). "
             f"Intervals are 95% percentile bootstraps over test cases, as written by the evaluate stage.")
    sections = [intro, accuracy_section(results, ks), paired_section(results, baseline, k, n_boot, seed),
                cold_start_section(results, k),
                *optional_sections(metrics_dir, [r.name for r in results], steer_dir,
                                   pd.read_parquet(items) if items is not None else None, k, n_boot, seed)]
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
