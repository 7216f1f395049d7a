"""How the report renders what it found: Markdown cells and tables, and PNG figures.

Figures are Vega-Lite specs rendered offline by vl-convert (`dvc plots show` and the Vega-Lite CDN are not needed),
with matplotlib as the fallback renderer when vl-convert is missing or fails; both write PNG atomically.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sidrec.io import atomic_path

log = logging.getLogger(__name__)

MISSING = "—"
"""The cell of a value that does not exist (not measured, not applicable)."""
NOT_RUN = "not run"
"""The cell of a system whose stages did not run."""
VEGA_LITE = "https://vega.github.io/schema/vega-lite/v5.json"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ci(block: dict, key: str) -> str:
    """`0.0512 [0.046, 0.057]` from `block[key]`, `block[key_ci_low]`, `block[key_ci_high]`."""
    if key not in block:
        return MISSING
    low, high = block.get(f"{key}_ci_low"), block.get(f"{key}_ci_high")
    if low is None or high is None:
        return f"{block[key]:.4f}"
    return f"{block[key]:.4f} [{low:.3f}, {high:.3f}]"


def fmt_scalar(v) -> str:
    """A table cell for a scalar: 4 significant digits for floats, text otherwise."""
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def fmt_fixed(v, digits: int = 3) -> str:
    """A table cell for a number with `digits` decimals; None or NaN -> MISSING."""
    return MISSING if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def render_png(spec: dict, draw: Callable, figsize: tuple[float, float], what: str) -> bytes:
    """PNG bytes of the Vega-Lite `spec` (vl-convert); if that fails, of `draw(ax)` on a matplotlib axis of
    `figsize` inches (the fallback says why in a warning naming `what`)."""
    try:
        import vl_convert

        return vl_convert.vegalite_to_png(spec, scale=2)
    except Exception as e:  # noqa: BLE001 - any renderer failure falls back to matplotlib
        log.warning("report: vl-convert failed (%s: %s); rendering %s with matplotlib", type(e).__name__, e, what)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    plt.close(fig)
    return buf.getvalue()


def write_png(path: str | Path, png: bytes) -> Path:
    """Write `png` to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return path


def bar_chart_png(rows: list[dict], label: str) -> bytes:
    """One bar per row (`system`, `value`, interval `low`..`high`), in the listed order, with error bars."""
    title = f"{label} with 95% per-user bootstrap intervals"
    x = {"field": "system", "type": "nominal", "sort": [r["system"] for r in rows], "axis": {"labelAngle": -30}}
    spec = {
        "$schema": VEGA_LITE, "title": title, "width": max(160, 60 * len(rows)), "height": 240,
        "data": {"values": rows},
        "layer": [
            {"mark": "bar", "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": label}}},
            {"mark": {"type": "errorbar", "ticks": {"size": 14}, "color": "black"},
             "encoding": {"x": x, "y": {"field": "low", "type": "quantitative", "title": label},
                          "y2": {"field": "high"}}},
        ],
    }

    def draw(ax) -> None:
        values = np.array([r["value"] for r in rows])
        err = np.array([[r["value"] - r["low"] for r in rows], [r["high"] - r["value"] for r in rows]])
        ax.bar([r["system"] for r in rows], values, yerr=np.clip(err, 0, None), capsize=4)
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30)

    return render_png(spec, draw, (max(4.5, 1.0 * len(rows)), 3.5), f"the {label} bar chart")


def curve_png(series: dict[str, list[dict]], key: str) -> bytes:
    """Learning curves: per system, `key` against `targets` (log axis)."""
    label = key.removeprefix("valid_").replace("ndcg", "NDCG").replace("recall", "Recall")
    x_title = "supervised next-item targets seen (log)"
    rows = [{"system": s, "targets": r["targets"], "value": r[key]} for s, pts in series.items() for r in pts]
    spec = {"$schema": VEGA_LITE,
            "title": f"Validation {label} against supervised next-item targets seen", "width": 420, "height": 260,
            "data": {"values": rows}, "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "targets", "type": "quantitative", "scale": {"type": "log"},
                               "title": x_title},
                         "y": {"field": "value", "type": "quantitative", "title": f"validation {label}"},
                         "color": {"field": "system", "type": "nominal"}}}

    def draw(ax) -> None:
        for s, pts in series.items():
            ax.plot([r["targets"] for r in pts], [r[key] for r in pts], marker="o", label=s)
        ax.set_xscale("log")
        ax.set_xlabel(x_title)
        ax.set_ylabel(f"validation {label}")
        ax.legend()

    return render_png(spec, draw, (6, 3.8), "the learning curve")


def cases_from_users(n_cases: int, n_users: int) -> str:
    """`9900 cases from 166 users`."""
    return f"{n_cases} cases from {n_users} users"
