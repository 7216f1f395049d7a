"""Train/validation/test splits and the leakage rule.

`temporal` (seeds/000 Phase 0): two global cutoffs at interaction-time quantiles; an event belongs to
train if ts <= train_end, valid if train_end < ts <= valid_end, test otherwise. Every model sees the same past.
`leave_one_out` (TIGER's protocol, for published tables): per user, last event test, second-to-last valid.
The leakage rule: only train events may feed anything learned from interactions; `check_no_leakage` enforces
that no train event lies after the train cutoff (or after a later event of the same user for leave-one-out).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sidrec.config import SplitConfig
from sidrec.data.loaders import DataError

SPLITS = ("train", "valid", "test")


def assign_split(ev: pd.DataFrame, sp: SplitConfig) -> tuple[pd.DataFrame, dict]:
    """Add a `split` column to events sorted by (user, timestamp, item_id); returns (events, split info)."""
    ev = ev.copy()
    if sp.protocol == "temporal":
        ts = ev["timestamp"].to_numpy()
        train_end = int(np.quantile(ts, 1.0 - sp.valid_frac - sp.test_frac, method="lower"))
        valid_end = int(np.quantile(ts, 1.0 - sp.test_frac, method="lower"))
        ev["split"] = np.where(ts <= train_end, "train", np.where(ts <= valid_end, "valid", "test"))
        cutoffs = {"train_end": train_end, "valid_end": valid_end,
                   "train_end_utc": str(pd.Timestamp(train_end, unit="s")),
                   "valid_end_utc": str(pd.Timestamp(valid_end, unit="s"))}
    else:
        from_end = ev.groupby("user_id").cumcount(ascending=False).to_numpy()
        n = ev.groupby("user_id")["item_id"].transform("size").to_numpy()
        # users with 1 event keep it for training; with 2: train + test; with >= 3: train + valid + test
        ev["split"] = np.where((from_end == 0) & (n >= 2), "test",
                               np.where((from_end == 1) & (n >= 3), "valid", "train"))
        cutoffs = {"train_end": None, "valid_end": None}
    check_no_leakage(ev, sp.protocol, cutoffs)
    counts = ev["split"].value_counts()
    train_items = set(ev.loc[ev["split"] == "train", "item_id"].unique())
    cold = sorted(int(i) for i in set(ev["item_id"].unique()) - train_items)
    info = {
        "protocol": sp.protocol,
        "valid_frac": sp.valid_frac if sp.protocol == "temporal" else None,
        "test_frac": sp.test_frac if sp.protocol == "temporal" else None,
        **cutoffs,
        "counts": {s: int(counts.get(s, 0)) for s in SPLITS},
        "cold_start_items": cold,
    }
    return ev, info


def check_no_leakage(ev: pd.DataFrame, protocol: str, cutoffs: dict) -> None:
    """Fail if a train event lies after the train cutoff (temporal) or after a held-out event of its user (LOO)."""
    train = ev[ev["split"] == "train"]
    if protocol == "temporal":
        late = train["timestamp"] > cutoffs["train_end"]
        if late.any():
            raise DataError(f"split: {int(late.sum())} train event(s) after the train cutoff {cutoffs['train_end']}; "
                            "the split is leaking future interactions")
    else:
        order = ev.groupby("user_id").cumcount()
        last_train = order[ev["split"] == "train"].groupby(ev["user_id"]).max()
        first_held = order[ev["split"] != "train"].groupby(ev["user_id"]).min()
        both = last_train.index.intersection(first_held.index)
        if (last_train.loc[both] > first_held.loc[both]).any():
            raise DataError("split: a train event comes after a held-out event of the same user; the split is leaking")
