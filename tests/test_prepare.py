"""prepare: cleaning counted in `dropped`, the iterated k-core, item text, dense ids, sorted events, data metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fixtures import write_amazon
from sidrec.config import DatasetConfig, SplitConfig
from sidrec.data.loaders import DataError, load_raw
from sidrec.data.prepare import data_metrics, item_text, k_core, prepare

LOO = SplitConfig(protocol="leave_one_out")
DROP_REASONS = {"missing_user_item_or_timestamp", "duplicate_user_item_timestamp", "item_without_metadata",
                "item_without_text", "k_core"}


def raw_events(rows) -> pd.DataFrame:
    return pd.DataFrame({"source_user": [str(r[0]) for r in rows], "source_item": [str(r[1]) for r in rows],
                         "timestamp": np.array([r[2] for r in rows], dtype="int64")})


def raw_items(ids, title="T{}", description="", year=1999, genres=("Drama",)) -> pd.DataFrame:
    return pd.DataFrame({"source_id": [str(i) for i in ids],
                         "title": [title.format(i) for i in ids],
                         "description": description,
                         "year": pd.array([year] * len(ids), dtype="Int64"),
                         "genres": [list(genres) for _ in ids]})


def ds(min_user: int = 1, min_item: int = 1) -> DatasetConfig:
    return DatasetConfig(name="ml-1m", min_user_events=min_user, min_item_events=min_item)


# --- k-core -------------------------------------------------------------------------------------------------------

# u1 rated A, B and X; X has no other rating. Dropping X leaves u1 with 2 < 3 events, so u1 must go too:
# a single pass would keep u1 with two events.
CASCADE = [("u1", "A", 1), ("u1", "B", 2), ("u1", "X", 3),
           ("u2", "A", 1), ("u2", "B", 2), ("u2", "C", 3),
           ("u3", "A", 4), ("u3", "B", 5), ("u3", "C", 6)]


def test_k_core_iterates_until_stable():
    out = k_core(raw_events(CASCADE), min_user=3, min_item=2)
    assert set(out["source_user"]) == {"u2", "u3"}
    assert set(out["source_item"]) == {"A", "B", "C"}
    assert (out.groupby("source_user").size() >= 3).all() and (out.groupby("source_item").size() >= 2).all()


def test_k_core_in_prepare_counts_dropped():
    p = prepare(raw_events(CASCADE), raw_items("ABCX"), ds(3, 2), LOO)
    assert p.dropped["k_core"] == 3
    assert len(p.events) == 6 and p.events["user_id"].nunique() == 2
    assert p.items["source_id"].tolist() == ["A", "B", "C"]


def test_nothing_left_is_an_error():
    with pytest.raises(DataError, match="min_user_events") as ei:
        prepare(raw_events(CASCADE), raw_items("ABCX"), ds(10, 1), LOO)
    assert "\n" not in str(ei.value)


# --- cleaning -----------------------------------------------------------------------------------------------------

def test_duplicates_dropped_and_counted():
    rows = [(1, 1, 10), (1, 1, 10), (1, 2, 11), (1, 1, 12), (2, 1, 10), (2, 2, 10), (2, 2, 10), (2, 2, 10)]
    p = prepare(raw_events(rows), raw_items([1, 2]), ds(), LOO)
    assert p.dropped["duplicate_user_item_timestamp"] == 3
    assert len(p.events) == 5
    # the same item again at another time is a re-watch, not a duplicate
    assert p.events[p.events["user_id"] == 0]["item_id"].tolist() == [0, 1, 0]


def test_items_without_text_or_metadata_dropped_and_counted():
    rows = [(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (2, 2, 5), (2, 3, 6), (2, 4, 7)]
    items = raw_items([1, 2, 3])
    items.loc[items["source_id"] == "2", "title"] = ""  # no title, no description -> no text
    p = prepare(raw_events(rows), items, ds(), LOO)
    assert p.dropped["item_without_text"] == 2 and p.dropped["item_without_metadata"] == 2
    assert p.items["source_id"].tolist() == ["1", "3"]
    assert sum(p.dropped.values()) == 4 and len(p.events) == 3


def test_missing_user_item_or_timestamp():
    ev = raw_events([(1, 1, 1), (1, 2, 2), (2, 1, 3)])
    ev.loc[2, "source_user"] = ""
    p = prepare(ev, raw_items([1, 2]), ds(), LOO)
    assert p.dropped["missing_user_item_or_timestamp"] == 1 and len(p.events) == 2


def test_amazon_items_without_text_counted(tmp_path):
    write_amazon(tmp_path, n_users=20, n_items=45)
    events, meta = load_raw("amazon-beauty", tmp_path)
    no_text = meta.loc[(meta["title"] == "") & (meta["description"] == ""), "source_id"]
    assert len(no_text) == 1
    p = prepare(events, meta, ds(), LOO)
    assert p.dropped["item_without_text"] == int(events["source_item"].isin(no_text).sum()) > 0
    assert not p.items["source_id"].isin(no_text).any()


# --- item text ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("title, description, year, genres, want", [
    ("Glass Jar", "A jar made of glass.", pd.NA, ["Kitchen"], "Glass Jar. A jar made of glass."),
    ("", "A jar made of glass.", pd.NA, [], "A jar made of glass."),
    ("Toy Story", "", 1995, ["Animation", "Children's"], "Toy Story (1995). Genres: Animation, Children's."),
    ("Toy Story", "", pd.NA, ["Comedy"], "Toy Story. Genres: Comedy."),
    ("Toy Story", "", 1995, [], "Toy Story (1995)"),
])
def test_item_text(title, description, year, genres, want):
    assert item_text(title, description, year, genres) == want


def test_item_text_in_prepared_items():
    items = raw_items([1, 2], genres=("Comedy", "Romance"))
    items.loc[0, "description"] = "Two friends open a bakery."
    p = prepare(raw_events([(1, 1, 1), (1, 2, 2)]), items, ds(), LOO)
    assert p.items["text"].tolist() == ["T1. Two friends open a bakery.", "T2 (1999). Genres: Comedy, Romance."]
    assert p.items["genres"].tolist() == [["Comedy", "Romance"]] * 2 and p.items["year"].tolist() == [1999, 1999]


# --- ids, order, schema -------------------------------------------------------------------------------------------

def test_dense_ids_in_sorted_source_order_and_sorted_events():
    rng = np.random.default_rng(0)
    users, items = [3, 10, 7, 22], [100, 9, 55, 20, 1]
    rows = [(int(rng.choice(users)), int(rng.choice(items)), int(rng.integers(0, 20))) for _ in range(200)]
    rows += [(u, i, 30 + 7 * k + j) for j, u in enumerate(users) for k, i in enumerate(items)]  # all present
    p = prepare(raw_events(rows), raw_items(items[::-1]), ds(), SplitConfig(protocol="leave_one_out", ties="item_id"))
    # numeric source ids sort numerically ("9" before "10"), not as strings
    assert p.items["source_id"].tolist() == ["1", "9", "20", "55", "100"]
    assert p.items["item_id"].tolist() == list(range(5))
    assert sorted(p.events["user_id"].unique().tolist()) == [0, 1, 2, 3]
    src_user = {"3": 0, "7": 1, "10": 2, "22": 3}
    raw = raw_events(rows).drop_duplicates()
    assert p.events.groupby("user_id").size().to_dict() == {src_user[u]: n for u, n in
                                                            raw.groupby("source_user").size().items()}
    key = p.events[["user_id", "timestamp", "item_id"]]
    assert key.equals(key.sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True))
    assert not key.duplicated().any()
    assert p.events.index.equals(pd.RangeIndex(len(p.events)))
    first = p.events.groupby("item_id")["timestamp"].min()
    assert p.items["first_seen"].tolist() == first.loc[p.items["item_id"]].tolist()


def test_string_ids_sort_lexicographically():
    rows = [("A2", "B01", 1), ("A10", "B10", 2), ("A2", "B2", 3)]
    p = prepare(raw_events(rows), raw_items(["B2", "B10", "B01"]), ds(), LOO)
    assert p.items["source_id"].tolist() == ["B01", "B10", "B2"]
    assert p.events["user_id"].tolist() == [0, 1, 1]  # "A10" < "A2"


def test_schema_and_data_metrics(tmp_path):
    write_amazon(tmp_path, n_users=30, n_items=50)
    events, meta = load_raw("amazon-beauty", tmp_path)
    p = prepare(events, meta, DatasetConfig(name="amazon-beauty"), SplitConfig())
    assert list(p.events.columns) == ["user_id", "item_id", "timestamp", "split"]
    assert all(p.events[c].dtype == "int64" for c in ["user_id", "item_id", "timestamp"])
    assert {"item_id", "source_id", "title", "text", "genres", "year", "first_seen"} <= set(p.items.columns)
    assert p.items["text"].str.len().gt(0).all()
    first = p.events.groupby("item_id")["timestamp"].min()
    assert p.items["first_seen"].tolist() == first.loc[p.items["item_id"]].tolist()
    assert p.items["first_seen"].nunique() > 1
    assert set(p.dropped) == DROP_REASONS

    m = data_metrics(p)
    assert set(m) == {"dataset", "protocol", "users", "items", "events", "events_train", "events_valid",
                      "events_test", "cold_start_items", "cold_start_test_events", "median_history_length",
                      "median_train_history_length", "dropped", "dropped_total", "dropped_items",
                      "dropped_items_total", "tied_events_share", "test_tied_share", "test_target_id_above_previous",
                      "test_tied_target_id_above_previous"}
    assert m["dataset"] == "amazon-beauty" and m["protocol"] == "temporal"
    assert m["items"] == len(p.items) and m["events"] == len(p.events)
    assert m["events_train"] + m["events_valid"] + m["events_test"] == m["events"]
    assert m["users"] == p.events["user_id"].nunique()
    assert m["cold_start_items"] == len(p.split["cold_start_items"]) > 0
    cold = set(p.split["cold_start_items"])
    assert m["cold_start_test_events"] == int(p.events.query("split == 'test'")["item_id"].isin(cold).sum())
    assert m["dropped"] == p.dropped and m["dropped_total"] == sum(p.dropped.values()) > 0
    assert m["dropped_items"] == p.dropped_items and m["dropped_items_total"] == len(meta) - len(p.items) > 0
    assert all(isinstance(v, (int, float, str)) for k, v in m.items() if k not in ("dropped", "dropped_items"))
