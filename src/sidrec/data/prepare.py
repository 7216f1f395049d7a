"""Raw frames -> the canonical schema of docs/architecture.md, with a split.

Cleaning order: events without a user/item/timestamp, exact duplicate (user, item, timestamp) rows, events of
items without metadata, items without any text, then an iterated k-core. Every dropped event row is counted under
its reason (`dropped`), and so is every dropped metadata row (`dropped_items`). Ids are re-indexed densely in sorted
source-id order; events are sorted by (user, timestamp) and a user's events with equal timestamps are ordered by
`split.ties` (`sidrec.data.split.order_events`): a seeded permutation by default, the same on every machine.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sidrec.config import DatasetConfig, SplitConfig
from sidrec.data.loaders import DataError
from sidrec.data.split import assign_split, order_events


@dataclass
class Prepared:
    items: pd.DataFrame
    events: pd.DataFrame
    split: dict
    dropped: dict
    """Dropped event rows by reason."""
    dropped_items: dict = field(default_factory=dict)
    """Dropped metadata rows by reason: duplicate_source_id, without_text, without_events (never in the cleaned
    log), k_core (all of the item's events removed by the k-core)."""


def item_text(title: str, description: str, year, genres: list[str]) -> str:
    """What the encoder reads: title + description when there is one, else title + year + genres."""
    if description:
        return f"{title}. {description}" if title else description
    head = f"{title} ({int(year)})" if pd.notna(year) else title
    return f"{head}. Genres: {', '.join(genres)}." if len(genres) else head


def _sort_key(ids: pd.Series) -> pd.Series:
    """Numeric order when every id is an integer (MovieLens), else lexicographic (Amazon ASINs)."""
    num = pd.to_numeric(ids, errors="coerce")
    return num if num.notna().all() else ids


def _dedup_metadata(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per source_id. Of rows sharing an id the one with the most text is kept (ties: the smallest by
    content), so the result never depends on the order of the metadata file."""
    dup = meta["source_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return meta
    rows = meta[dup]
    text = rows["title"].fillna("").astype(str).str.len() + rows["description"].fillna("").astype(str).str.len()
    content = np.array([repr(tuple(r)) for r in rows.itertuples(index=False)])
    best = rows.iloc[np.lexsort((content, -text.to_numpy()))].drop_duplicates(subset=["source_id"])
    return pd.concat([meta[~dup], best])


def k_core(events: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Iteratively drop users with < min_user events and items with < min_item events until stable."""
    while True:
        u = events.groupby("source_user")["source_item"].transform("size")
        i = events.groupby("source_item")["source_user"].transform("size")
        keep = (u >= min_user) & (i >= min_item)
        if keep.all():
            return events
        events = events[keep]


def prepare(events: pd.DataFrame, meta: pd.DataFrame, ds: DatasetConfig, sp: SplitConfig, seed: int = 0) -> Prepared:
    """Clean, filter, re-index and split raw frames from `sidrec.data.loaders.load_raw`.

    `seed` seeds the order of equal-timestamp events under `split.ties: random`.
    """
    dropped: Counter = Counter()
    events = events.assign(source_pos=np.arange(len(events), dtype="int64"))  # raw file order, for `ties: source`
    n0 = len(events)
    events = events.dropna(subset=["source_user", "source_item", "timestamp"])
    events = events[(events["source_user"].astype(str) != "") & (events["source_item"].astype(str) != "")]
    dropped["missing_user_item_or_timestamp"] = n0 - len(events)

    n0 = len(events)
    events = events.drop_duplicates(subset=["source_user", "source_item", "timestamp"])
    dropped["duplicate_user_item_timestamp"] = n0 - len(events)

    dropped_items: Counter = Counter()
    n_meta = len(meta)
    meta = _dedup_metadata(meta)
    dropped_items["duplicate_source_id"] = n_meta - len(meta)
    n0 = len(events)
    events = events[events["source_item"].isin(meta["source_id"])]
    dropped["item_without_metadata"] = n0 - len(events)

    has_text = ((meta["title"].fillna("").astype(str).str.len() > 0)
                | (meta["description"].fillna("").astype(str).str.len() > 0))
    dropped_items["without_text"] = int((~has_text).sum())
    n0 = len(events)
    events = events[events["source_item"].isin(meta.loc[has_text, "source_id"])]
    dropped["item_without_text"] = n0 - len(events)

    n0 = len(events)
    before_k_core = meta.loc[has_text, "source_id"].isin(events["source_item"])
    dropped_items["without_events"] = int((~before_k_core).sum())
    events = k_core(events, ds.min_user_events, ds.min_item_events)
    dropped["k_core"] = n0 - len(events)
    dropped_items["k_core"] = int(before_k_core.sum()) - int(events["source_item"].nunique())
    if events.empty and n0 == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
        raise DataError(f"prepare: no events left after cleaning (dropped: {reasons or 'the log is empty'}); "
                        "fix the raw files: events need a user, an item with metadata and text, and a timestamp")
    if events.empty:
        raise DataError(f"prepare: no events left after cleaning and the k-core filter "
                        f"(dataset.min_user_events={ds.min_user_events}, min_item_events={ds.min_item_events}); lower them")

    # dense ids in sorted source order
    users = events["source_user"].drop_duplicates()
    users = users.iloc[np.argsort(_sort_key(users).to_numpy(), kind="stable")]
    user_index = pd.Series(np.arange(len(users)), index=users.to_numpy())
    meta = meta[meta["source_id"].isin(events["source_item"])]
    meta = meta.iloc[np.argsort(_sort_key(meta["source_id"]).to_numpy(), kind="stable")].reset_index(drop=True)
    item_index = pd.Series(np.arange(len(meta)), index=meta["source_id"].to_numpy())

    ev = pd.DataFrame({
        "user_id": user_index.loc[events["source_user"].to_numpy()].to_numpy().astype("int64"),
        "item_id": item_index.loc[events["source_item"].to_numpy()].to_numpy().astype("int64"),
        "timestamp": events["timestamp"].to_numpy().astype("int64"),
    })
    ev = order_events(ev, events["source_pos"].to_numpy(), sp.ties, seed)
    ev, split = assign_split(ev, sp)
    split["ties"] = sp.ties
    split = {"dataset": ds.name, **split}  # data_metrics and split.json name the dataset

    first_seen = ev.groupby("item_id")["timestamp"].min()
    items = pd.DataFrame({
        "item_id": np.arange(len(meta), dtype="int64"),
        "source_id": meta["source_id"].astype(str).to_numpy(),
        "title": meta["title"].to_numpy(),
        "text": [item_text(t, d, y, g) for t, d, y, g in
                 zip(meta["title"], meta["description"], meta["year"], meta["genres"])],
        "genres": [list(g) for g in meta["genres"]],
        "year": meta["year"].astype("Int64").array,
        "first_seen": first_seen.reindex(np.arange(len(meta))).to_numpy().astype("int64"),
    })
    return Prepared(items=items, events=ev, split=split, dropped=dict(dropped), dropped_items=dict(dropped_items))


def data_metrics(p: Prepared) -> dict:
    """metrics/data.json: sizes per split, cold-start items, history lengths, dropped event and metadata rows by reason."""
    ev, split = p.events, p.split
    per_split = ev["split"].value_counts()
    cold = set(split["cold_start_items"])
    test = ev[ev["split"] == "test"]
    return {
        "dataset": split["dataset"],
        "protocol": split["protocol"],
        "users": int(ev["user_id"].nunique()),
        "items": int(len(p.items)),
        "events": int(len(ev)),
        "events_train": int(per_split.get("train", 0)),
        "events_valid": int(per_split.get("valid", 0)),
        "events_test": int(per_split.get("test", 0)),
        "cold_start_items": len(cold),
        "cold_start_test_events": int(test["item_id"].isin(cold).sum()),
        "median_history_length": float(ev.groupby("user_id").size().median()),
        **tie_metrics(ev),
        "median_train_history_length": float(ev[ev["split"] == "train"].groupby("user_id").size().median()),
        "dropped": {k: int(v) for k, v in p.dropped.items()},
        "dropped_total": int(sum(p.dropped.values())),
        "dropped_items": {k: int(v) for k, v in p.dropped_items.items()},
        "dropped_items_total": int(sum(p.dropped_items.values())),
    }


def tie_metrics(ev: pd.DataFrame) -> dict:
    """How much the order of equal-timestamp events matters, and whether it leaks through the item ids.

    Returns:
        `tied_events_share`: share of events (after a user's first) whose timestamp equals the user's previous event's;
        `test_tied_share`: the same among test events; `test_target_id_above_previous`: among test events with a
        previous event, the share whose item id is higher than the previous item's (about 0.5 when ties are ordered
        at random; 1.0 on tied cases when they are ordered by id); `test_tied_target_id_above_previous`: the same on
        the tied test events only.
    """
    same_user = ev["user_id"].to_numpy()[1:] == ev["user_id"].to_numpy()[:-1]
    ts, item = ev["timestamp"].to_numpy(), ev["item_id"].to_numpy()
    tied = same_user & (ts[1:] == ts[:-1])
    above = same_user & (item[1:] > item[:-1])
    test = ev["split"].to_numpy()[1:] == "test"
    with_prev = same_user & test

    def share(num, den) -> float:
        return float(num.sum() / den.sum()) if den.sum() else 0.0
    return {
        "tied_events_share": share(tied, same_user),
        "test_tied_share": share(tied & test, with_prev),
        "test_target_id_above_previous": share(above & test, with_prev),
        "test_tied_target_id_above_previous": share(above & tied & test, tied & test),
    }
