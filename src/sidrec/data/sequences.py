"""User sequences: training windows and evaluation cases (docs/evaluation.md).

Training windows come from train events only (the leakage rule). An evaluation case is one held-out event with
at least one earlier event of its user; its history is the user's last `max_history` earlier items (of any
split: they happened before the target), and `seen` is every earlier item, which recommenders may exclude.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def train_sequences(events: pd.DataFrame) -> list[np.ndarray]:
    """Each user's train items in time order (users with no train events are skipped)."""
    tr = events[events["split"] == "train"]
    return [g.to_numpy() for _, g in tr.groupby("user_id", sort=True)["item_id"]]


def sliding_windows(seqs: list[np.ndarray], window: int, stride: int) -> list[np.ndarray]:
    """Cut each sequence into windows of up to `window` items every `stride` items, the last one ending at the end.

    Every item (but a user's first) is a target inside some window with up to window-1 items of context;
    overlapping windows re-present targets with different context lengths (TIGER/GRID augmentation).
    A stride >= window would skip targets, so it is capped at window - 1.
    """
    stride = max(1, min(stride, window - 1))
    out = []
    for s in seqs:
        if len(s) < 2:
            continue
        if len(s) <= window:
            out.append(s)
            continue
        starts = list(range(0, len(s) - window + 1, stride))
        if starts[-1] != len(s) - window:
            starts.append(len(s) - window)
        out.extend(s[a:a + window] for a in starts)
    return out


def make_cases(events: pd.DataFrame, split: str, max_history: int, cold_items: set[int],
               max_cases: int = 0, seed: int = 0) -> pd.DataFrame:
    """Evaluation cases for `split` in (user, time) order; optionally a seeded sample of `max_cases` of them.

    Returns:
        DataFrame with case_id, user_id, target, history (last max_history earlier items), seen (all earlier
        items), cold (target had zero train events).
    """
    rows = []
    for uid, g in events.groupby("user_id", sort=True):
        items = g["item_id"].to_numpy()
        in_split = (g["split"] == split).to_numpy()
        for pos in np.flatnonzero(in_split):
            if pos == 0:
                continue
            rows.append((int(uid), int(items[pos]), items[max(0, pos - max_history):pos].tolist(),
                         items[:pos].tolist()))
    cases = pd.DataFrame(rows, columns=["user_id", "target", "history", "seen"])
    if max_cases and len(cases) > max_cases:
        keep = np.sort(np.random.default_rng(seed).choice(len(cases), size=max_cases, replace=False))
        cases = cases.iloc[keep]
    cases = cases.reset_index(drop=True)
    cases.insert(0, "case_id", np.arange(len(cases)))
    cases["cold"] = cases["target"].isin(cold_items)
    return cases
