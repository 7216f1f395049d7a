"""Report sections on what each system's training cost and bought: the budget table and the learning curves.

Both read only the training stages' metrics (docs/evaluation.md, "Training budget and learning curves"):

- GPT systems (`train_<stage>.json`, e.g. baseline = train_rqvae-gpt): the chosen configuration's supervised
  next-item targets and tokens, the model's parameters (all trainable), the whole stage's time (its grid search
  included) and the history length; `curve` holds validation NDCG@10 at `gpt.curve_targets` and at each epoch check.
- LLM systems (`cpt_<tokenizer>.json` + `sft_<tokenizer>.json`, + `palette.json` for LAMIA): SFT's targets (CPT's
  history sentences add next-item predictions of their own, shown apart), CPT + SFT tokens, the LoRA-trainable
  parameters, the stages' time; `curve` holds validation NDCG@10 at `sft.checkpoints` log-spaced steps.

Core-minutes are a stage's wall time x the torch threads it ran with: an upper bound on the CPU it used. Curve
points are taken along one training run (its learning-rate schedule set for the full run), not from separate runs
stopped at each budget: an early point is a model mid-schedule.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from sidrec.evaluate.report_render import curve_png, md_table, write_png
from sidrec.io import read_json

log = logging.getLogger(__name__)

GPT_STAGE = {"baseline": "rqvae-gpt", "sasrec": "atomic-gpt", "plum-gpt": "plum-gpt", "lamia-gpt": "lamia-gpt"}
"""System -> its GPT train stage key (metrics/train_<key>.json)."""
LLM_TOKENIZER = {"plum": "plum", "lamia": "lamia", "rqvae-llm": "rqvae"}
"""System -> the tokenizer of its cpt@/sft@ stages (metrics/cpt_<t>.json, sft_<t>.json)."""
CURVE_PAIRS = (("plum", "plum-gpt"), ("plum", "baseline"), ("lamia", "lamia-gpt"))
"""(LLM system, GPT system) pairs whose crossing the curve section states, when both were run."""


def _read(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _core_min(*metrics: dict | None) -> float:
    return sum((m.get("runtime_s") or 0) * (m.get("threads") or 1) for m in metrics if m) / 60


def training_budget(metrics_dir: str | Path, system: str) -> dict | None:
    """One system's training figures (see the module doc), or None for a system without gradient training or
    whose training metrics are missing."""
    d = Path(metrics_dir)
    if system in GPT_STAGE:
        m = _read(d / f"train_{GPT_STAGE[system]}.json")
        if m is None or "targets_processed" not in m:
            return None
        return {"reader": "GPT (from scratch)", "targets": m["targets_processed"], "cpt_targets": 0,
                "tokens": m["tokens_processed"], "trainable": m["trainable_parameters"], "core_min": _core_min(m),
                "history": m["history_length"], "runs": m.get("runs", 1), "curve": m.get("curve", [])}
    if system in LLM_TOKENIZER:
        t = LLM_TOKENIZER[system]
        cpt, sft = _read(d / f"cpt_{t}.json"), _read(d / f"sft_{t}.json")
        if cpt is None or sft is None or "targets" not in sft:
            return None
        palette = _read(d / "palette.json") if system == "lamia" else None
        return {"reader": "LLM (LoRA)", "targets": sft["targets"], "cpt_targets": cpt.get("history_targets", 0),
                "tokens": cpt.get("tokens_processed", 0) + sft["tokens_processed"],
                "trainable": sft["trainable_parameters"], "core_min": _core_min(palette, cpt, sft),
                "history": sft["history_length"], "runs": 1, "curve": sft.get("curve", []),
                "kept_targets": sft.get("targets_seen")}
    return None


def budget_section(metrics_dir: str | Path, systems: list[str]) -> str:
    """Markdown: one row per system with gradient training (empty string when none has budget metrics)."""
    rows = []
    for s in systems:
        b = training_budget(metrics_dir, s)
        if b is None:
            continue
        targets = f"{b['targets']:,}"
        if b.get("kept_targets") is not None and b["kept_targets"] != b["targets"]:
            targets += f" (kept checkpoint: {b['kept_targets']:,})"
        rows.append([f"`{s}`", b["reader"], targets, f"{b['cpt_targets']:,}" if b["cpt_targets"] else "-",
                     f"{b['tokens']:,}", f"{b['trainable']:,}", f"{b['core_min']:.1f}", str(b["history"])])
    if not rows:
        return ""
    head = ["system", "reader", "supervised next-item targets", "+ CPT history targets", "tokens processed",
            "trainable parameters", "core-minutes of training", "history length"]
    table = md_table(head, rows)
    return ("## Training budget\n\n"
            "What each system's training consumed. GPT: the chosen learning rate's run, all epochs until early "
            "stopping (targets and tokens), the whole stage's time including the grid search. LLM: SFT's targets "
            "(every item after a window's first, plus one per constrained prompt), CPT + SFT tokens, LoRA adapters "
            "and new token rows as trainable parameters, the time of CPT + SFT (+ the palette for `lamia`) including "
            "SFT's validation checkpoints. Core-minutes = wall time x torch threads (an upper bound). Popularity and "
            "content-knn have no gradient training.\n\n" + table)


def _crossing(a: list[dict], b: list[dict], key: str) -> float | None:
    """Targets (log-linear interpolation) where curve `a` first overtakes curve `b` over their common range."""
    xa = np.log([r["targets"] for r in a])
    xb = np.log([r["targets"] for r in b])
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if lo >= hi:
        return None
    grid = np.linspace(lo, hi, 200)
    diff = np.interp(grid, xa, [r[key] for r in a]) - np.interp(grid, xb, [r[key] for r in b])
    sign = np.sign(diff)
    flips = np.flatnonzero(sign[1:] * sign[:-1] < 0)
    return float(np.exp(grid[flips[0] + 1])) if len(flips) else None


def curve_section(metrics_dir: str | Path, systems: list[str], png: str | Path, report_dir: str | Path,
                  k: int = 10) -> str:
    """Markdown learning-curve section (table + figure written to `png`), or "" when no system has a curve."""
    key = f"valid_ndcg@{k}"
    budgets = {s: training_budget(metrics_dir, s) for s in systems}
    series = {s: sorted(b["curve"], key=lambda r: r["targets"]) for s, b in budgets.items()
              if b is not None and b["curve"] and key in b["curve"][0]}
    if not series:
        return ""
    png = write_png(png, curve_png(series, key))
    rows = [f"| `{s}` | {budgets[s]['reader']} | " + ", ".join(f"{r['targets']:,}: {r[key]:.4f}" for r in pts) + " |"
            for s, pts in series.items()]
    notes = []
    for llm, gpt in CURVE_PAIRS:
        if llm not in series or gpt not in series:
            continue
        at = _crossing(series[llm], series[gpt], key)
        rate = {s: budgets[s]["core_min"] / max(budgets[s]["targets"] * budgets[s]["runs"], 1) for s in (llm, gpt)}
        if at is None:
            last = series[llm][-1]
            behind = np.interp(np.log(last["targets"]), np.log([r["targets"] for r in series[gpt]]),
                               [r[key] for r in series[gpt]])
            lead = llm if last[key] > behind else gpt
            notes.append(f"`{llm}` and `{gpt}` do not cross over their common range of targets; `{lead}` is above.")
            reach = next((r["targets"] for r in series[gpt] if r[key] >= last[key]), None)
            if lead == llm and reach is not None:
                notes.append(f"`{gpt}` first reaches `{llm}`'s last score ({last[key]:.4f} at {last['targets']:,} "
                             f"targets, about {last['targets'] * rate[llm]:.1f} core-minutes) at the point of "
                             f"{reach:,} targets ({reach / last['targets']:.0f}x the targets, about "
                             f"{reach * rate[gpt]:.1f} core-minutes).")
        else:
            notes.append(f"`{llm}` and `{gpt}` cross at about {at:,.0f} targets, where `{llm}` has cost about "
                         f"{at * rate[llm]:.1f} core-minutes of training and `{gpt}` {at * rate[gpt]:.2f}.")
        notes.append(f"Training cost per 1,000 targets: `{llm}` {1000 * rate[llm]:.2f} core-minutes, `{gpt}` "
                     f"{1000 * rate[gpt]:.3f} (stage time over targets processed, grid search included).")
    rel = Path(os.path.relpath(png, report_dir)).as_posix()
    return ("## Learning curves\n\n"
            f"Validation NDCG@{k} on the selection cases (eval.valid_cases, the same for every system) against "
            "supervised next-item targets seen: GPT systems at `gpt.curve_targets` and at each epoch check, LLM "
            "systems at SFT's log-spaced checkpoints. Points lie along one run each, its learning-rate schedule set "
            "for the whole run.\n\n"
            "| system | reader | targets seen: validation NDCG@10 |\n|---|---|---|\n" + "\n".join(rows)
            + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + f"\n\n![learning curve]({rel})")
