"""Train/validation/test splits and the leakage rule.

`temporal` (docs/evaluation.md): two global cutoffs at interaction-time quantiles; an event belongs to
train if ts <= train_end, valid if train_end < ts <= valid_end, test otherwise. Every model sees the same past.
`leave_one_out` (TIGER's protocol, for published tables): per user, last event test, second-to-last valid.
The leakage rule: only train events may feed anything learned from interactions. `sidrec.data.leakage` checks it
on what the pipeline actually built (stage `leakage`), from the raw timestamps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sidrec.config import SplitConfig
from sidrec.data.loaders import DataError

SPLITS = ("train", "valid", "test")


def order_events(ev: pd.DataFrame, source_pos: np.ndarray, ties: str, seed: int) -> pd.DataFrame:
    """Sort events by (user, timestamp) and order each (user, timestamp) block by `ties`.

    Args:
        ev: events with user_id, item_id, timestamp (any order).
        source_pos: (N,) each event's position in the raw file.
        ties: `random` (a permutation seeded by `seed`, drawn over the (user, timestamp, item_id) order so it does
            not depend on the raw file's order), `source` (raw file order) or `item_id` (ascending id).
        seed: seed of the `random` order.

    Returns:
        The events in that order, with a fresh index; the same inputs give the same order on every machine.
    """
    source_pos = np.asarray(source_pos)
    if ties == "item_id":
        key = ev["item_id"].to_numpy()
    elif ties == "source":
        key = source_pos
    elif ties == "random":
        canon = np.lexsort((source_pos, ev["item_id"].to_numpy(), ev["timestamp"].to_numpy(), ev["user_id"].to_numpy()))
        key = np.empty(len(ev), dtype=np.int64)
        key[canon] = np.random.default_rng(seed).permutation(len(ev))
    else:
        raise DataError(f"split.ties: unknown tie order {ties!r}; use random, source or item_id")
    order = np.lexsort((key, ev["timestamp"].to_numpy(), ev["user_id"].to_numpy()))
    return ev.iloc[order].reset_index(drop=True)


def assign_split(ev: pd.DataFrame, sp: SplitConfig) -> tuple[pd.DataFrame, dict]:
    """Add a `split` column to events sorted by (user, timestamp, tie order); returns (events, split info)."""
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
