"""Bad input: malformed raw files and invalid params get a one-line error naming the field and the fix, a non-zero
exit, and leave no output behind; whatever is accepted comes out clean, with every dropped row counted by reason.

Property tests (hypothesis, derandomized so CI is reproducible) corrupt raw files of every format, generate raw
frames full of duplicates, unsorted timestamps, one-event users and text-less items, and edit params.yaml keys to
arbitrary values. Hand-written cases pin the specific failures; stage scripts run as subprocesses (and once under
`dvc repro`) prove the exit status, the single line on stderr and the missing outputs.
"""
from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import gzip
import json
import math
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TINY_PARAMS, deep_merge
from fixtures import (AMELIE, REPO_ROOT, run_stage_script, temp_leftovers, write_amazon, write_ml100k,
                      write_ml1m)
from llm_fixtures import write_tiny_llm
from sidrec.config import DatasetConfig, Params, ParamsError, SplitConfig, load_params
from sidrec.data.loaders import DataError, expected_files, load_raw
from sidrec.data.prepare import data_metrics, prepare
from sidrec.tokenizers.sids import SidTable, add_collision_suffix
from test_loaders import assert_raw_schema, data_error

PROPERTY = dict(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FIX_WORDS = re.compile(r"\b(use|must|write|re-download|re-place|re-encode|rename|lower|add|place|expected|divide|fix)\b")
REAL_PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def one_line_naming(msg: str, *needles: str) -> None:
    assert "\n" not in msg.strip(), f"multi-line message: {msg!r}"
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    assert FIX_WORDS.search(msg), f"the message says what is wrong but not how to fix it: {msg!r}"


def check_prepared(raw_events: pd.DataFrame, raw_meta: pd.DataFrame, p, ds: DatasetConfig) -> None:
    """What `prepare` promises for any input it accepts."""
    items, ev = p.items, p.events
    assert items["item_id"].tolist() == list(range(len(items))) and items["source_id"].is_unique
    assert items["text"].str.len().gt(0).all(), "an item without text reached the encoder"
    assert list(ev.columns) == ["user_id", "item_id", "timestamp", "split"]
    assert sorted(ev["user_id"].unique()) == list(range(ev["user_id"].nunique())), "user ids are not dense"
    assert sorted(ev["item_id"].unique()) == list(range(len(items))), "an item without events, or a dangling id"
    key = ev[["user_id", "timestamp", "item_id"]]
    order = ev[["user_id", "timestamp"]]
    assert order.equals(order.sort_values(["user_id", "timestamp"]).reset_index(drop=True))
    assert not key.duplicated().any()
    assert (ev.groupby("user_id").size() >= ds.min_user_events).all()
    assert (ev.groupby("item_id").size() >= ds.min_item_events).all()
    assert set(ev["split"]) <= {"train", "valid", "test"}
    # provenance: every kept (item, timestamp) pair is in the raw log
    kept = set(zip(items["source_id"].to_numpy()[ev["item_id"]], ev["timestamp"]))
    assert kept <= set(zip(raw_events["source_item"], raw_events["timestamp"]))
    # accounting: every dropped row has a reason
    assert all(v >= 0 for v in [*p.dropped.values(), *p.dropped_items.values()])
    assert sum(p.dropped.values()) == len(raw_events) - len(ev)
    assert sum(p.dropped_items.values()) == len(raw_meta) - len(items)
    m = data_metrics(p)
    assert m["dropped"] == p.dropped and m["dropped_items"] == p.dropped_items


def load_and_prepare_or_error(name: str, raw_dir: Path, ds: DatasetConfig) -> str | None:
    """Load + prepare; None when accepted (and checked), else the one-line DataError message."""
    try:
        events, meta = load_raw(name, raw_dir)
        assert_raw_schema(events, meta)
        p = prepare(events, meta, ds, SplitConfig())
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(f in msg for f in expected_files(name)) or msg.startswith(("prepare:", "split:")), msg
        event(f"rejected: {msg.split(':')[0]}")
        return msg
    check_prepared(events, meta, p, ds)
    event("accepted")
    return None


# --- property: corrupted raw files of every format --------------------------------------------------------------

def mostly(valid, bad):
    """`valid` nine times in ten, else `bad`: most corrupted lines are almost right, as in real dumps.
    (`st.one_of` would not do: it merges repeated branches, giving one in two.)"""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else valid)


junk = st.one_of(st.text(max_size=6), st.integers(-10**21, 10**21).map(str), st.floats().map(str),
                 st.sampled_from(["", " ", "inf", "-inf", "nan", "1e30", "1.5", "-5", "1600000000000", "é", "::",
                                  "\t", "unkonwn"]))
user, item = mostly(st.integers(1, 12).map(str), junk), mostly(st.integers(1, 45).map(str), junk)
unix = mostly(st.integers(956_703_932, 1_046_453_932).map(str), junk)
title = mostly(st.text(st.characters(codec="latin-1", exclude_characters=":\t\r\n"), min_size=1, max_size=8), junk)
year, genres = mostly(st.integers(1900, 2000).map(str), junk), mostly(st.sampled_from(["Drama", "Comedy|War"]), junk)
rating = mostly(st.integers(1, 5).map(str), junk)
ml1m_lines = {"ratings.dat": st.tuples(user, item, rating, unix).map("::".join),
              "movies.dat": st.tuples(item, st.tuples(title, year).map(lambda t: f"{t[0]} ({t[1]})"),
                                      genres).map("::".join)}
ml100k_lines = {"ml-100k.inter": st.tuples(user, item, rating, unix).map("\t".join),
                "ml-100k.item": st.tuples(item, title, year, genres).map("\t".join)}
wrong_width = junk.map(lambda j: j + "::" + j)  # a line with the wrong number of fields
min_user = st.integers(1, 5)


def _append(path: Path, lines: list[str], encoding: str = "utf-8", shuffle_seed: int | None = None) -> None:
    old = path.read_text(encoding=encoding).splitlines()
    if shuffle_seed is not None:  # timestamps out of order (and the header, if any, stays first)
        head, body = (old[:1], old[1:]) if path.suffix in (".inter", ".item") else ([], old)
        old = head + [body[i] for i in np.random.default_rng(shuffle_seed).permutation(len(body))]
    text = "\n".join(old + [ln.replace("\n", " ").replace("\r", " ") for ln in lines]) + "\n"
    path.write_text(text, encoding=encoding, errors="replace")


@settings(max_examples=80, **PROPERTY)
@given(which=st.sampled_from(list(ml1m_lines)), data=st.data(), shuffle=st.one_of(st.none(), st.integers(0, 9)),
       mu=min_user)
def test_property_ml1m_files(tmp_path_factory, which, data, shuffle, mu):
    extra = data.draw(st.lists(mostly(ml1m_lines[which], wrong_width), min_size=1, max_size=4))
    d = tmp_path_factory.mktemp("ml1m")
    write_ml1m(d, n_users=8, n_items=40)
    _append(d / which, extra, "iso-8859-1", shuffle)
    load_and_prepare_or_error("ml-1m", d, DatasetConfig(name="ml-1m", min_user_events=mu))


@settings(max_examples=80, **PROPERTY)
@given(which=st.sampled_from(list(ml100k_lines)), data=st.data(), shuffle=st.one_of(st.none(), st.integers(0, 9)),
       mu=min_user)
def test_property_ml100k_files(tmp_path_factory, which, data, shuffle, mu):
    extra = data.draw(st.lists(mostly(ml100k_lines[which], wrong_width.map(lambda j: j.replace("::", "\t"))),
                               min_size=1, max_size=4))
    d = tmp_path_factory.mktemp("ml100k")
    write_ml100k(d, n_users=8, n_items=40)
    _append(d / which, extra, "utf-8", shuffle)
    load_and_prepare_or_error("ml-100k", d, DatasetConfig(name="ml-100k", min_user_events=mu))


scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=5),
                   st.lists(st.integers(), max_size=2))
asin_index = mostly(st.integers(0, 41), scalar)  # an index into the fixture's asins, or a junk value
review = st.fixed_dictionaries({"reviewerID": mostly(st.sampled_from(["A1", "A2", "A3"]), scalar), "asin": asin_index,
                                "unixReviewTime": mostly(st.integers(1_262_304_000, 1_388_534_400), scalar)})
meta_record = st.fixed_dictionaries({"asin": asin_index}, optional={
    "title": mostly(st.text(max_size=8), scalar), "description": mostly(st.text(max_size=8), scalar),
    "categories": mostly(st.just([["Beauty", "Makeup"]]), scalar)})
amazon_lines = {"reviews_Beauty_5.json.gz": mostly(review, meta_record), "meta_Beauty.json.gz": meta_record}
not_an_object = st.one_of(scalar.map(repr), st.text(max_size=12))


@settings(max_examples=80, **PROPERTY)
@given(which=st.sampled_from(list(amazon_lines)), data=st.data(), mu=min_user)
def test_property_amazon_files(tmp_path_factory, which, data, mu):
    d = tmp_path_factory.mktemp("amazon")
    asins = write_amazon(d, n_users=8, n_items=40).items["source_id"].tolist()
    records = data.draw(st.lists(mostly(amazon_lines[which], not_an_object), min_size=1, max_size=3))
    with gzip.open(d / which, "at", encoding="utf-8", errors="replace") as fh:
        for r in records:
            if isinstance(r, dict):
                if isinstance(r["asin"], int) and not isinstance(r["asin"], bool) and 0 <= r["asin"] < len(asins):
                    r = {**r, "asin": asins[r["asin"]]}
                r = json.dumps(r) if which.startswith("reviews") else repr(r)
            fh.write(r.replace("\n", " ").replace("\r", " ") + "\n")
    load_and_prepare_or_error("amazon-beauty", d, DatasetConfig(name="amazon-beauty", min_user_events=mu))


# --- property: prepare on messy raw frames ----------------------------------------------------------------------

raw_rows = st.lists(st.tuples(mostly(st.integers(0, 7), st.none()), mostly(st.integers(0, 11), st.none()),
                              st.integers(0, 40)), min_size=15, max_size=70)
catalogue = st.lists(st.sampled_from(["text"] * 6 + ["no text", "absent", "twice"]), min_size=12, max_size=12)


@settings(max_examples=150, **PROPERTY)
@given(rows=raw_rows, states=catalogue, mu=st.integers(1, 4), mi=st.integers(1, 3),
       protocol=st.sampled_from(["temporal", "leave_one_out"]), seed=st.integers(0, 2**16))
def test_property_prepare_messy_frames(rows, states, mu, mi, protocol, seed):
    """Duplicates, unsorted timestamps, one-event users, ids without metadata or text, duplicate metadata rows."""
    events = pd.DataFrame({"source_user": pd.array([None if u is None else f"u{u}" for u, _, _ in rows], dtype="str"),
                           "source_item": pd.array([None if i is None else str(i) for _, i, _ in rows], dtype="str"),
                           "timestamp": np.array([t for _, _, t in rows], dtype="int64")})
    metas = [(i, st_ != "no text") for i, st_ in enumerate(states) if st_ != "absent"]
    metas += [(i, False) for i, st_ in enumerate(states) if st_ == "twice"]  # a second, text-less line: first wins
    meta = pd.DataFrame({"source_id": pd.array([str(i) for i, _ in metas], dtype="str"),
                         "title": pd.array([f"T{i}" if text else "" for i, text in metas], dtype="str"),
                         "description": pd.array([""] * len(metas), dtype="str"),
                         "year": pd.array([1999] * len(metas), dtype="Int64"),
                         "genres": [["Drama"] for _ in metas]})
    ds, sp = DatasetConfig(name="ml-1m", min_user_events=mu, min_item_events=mi), SplitConfig(protocol=protocol)
    try:
        p = prepare(events, meta, ds, sp)
    except DataError as e:
        one_line_naming(str(e), "prepare: no events left")
        assert "min_user_events" in str(e) or "fix the raw files" in str(e)
        event("rejected: no events left")
        return
    check_prepared(events, meta, p, ds)
    assert set(p.items["source_id"]) <= {str(i) for i, s_ in enumerate(states) if s_ in ("text", "twice")}
    event("accepted")
    rng = np.random.default_rng(seed)  # the file order must not matter
    q = prepare(events.iloc[rng.permutation(len(events))], meta.iloc[rng.permutation(len(meta))], ds, sp)
    pd.testing.assert_frame_equal(p.events, q.events)
    pd.testing.assert_frame_equal(p.items, q.items)
    assert (p.split, p.dropped) == (q.split, q.dropped)


# --- property: any value for any numeric params key -------------------------------------------------------------

def _numeric_keys(cls, prefix: str = "") -> list[str]:
    """Dotted params.yaml keys of every int or float field of the config dataclasses."""
    out = []
    for f in dataclasses.fields(cls):
        key = {"lambda_": "lambda"}.get(f.name, f.name)
        dotted = f"{prefix}.{key}" if prefix else key
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_keys(tp, dotted)
        elif tp in (int, float):
            out.append(dotted)
    return out


NUMERIC_KEYS = _numeric_keys(Params)
TOP_LEVEL_RULES = {"codebook_size": lambda v: v >= 2, "lambda": lambda v: v >= 0, "palette_length": lambda v: v >= 1,
                   "lora_rank": lambda v: v >= 1, "seed": lambda v: v >= 0}
any_value = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from(["8", None, True, [], {}]))


def _set(data: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for k in parents:
        node = node[k]
    node[last] = value
    return out


@settings(max_examples=200, **PROPERTY)
@given(key=st.sampled_from(NUMERIC_KEYS), value=any_value)
def test_property_params_values(tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(_set(REAL_PARAMS, key, value), sort_keys=False), encoding="utf-8")
    never_ok = value is None or isinstance(value, (str, bool, list, dict)) or \
        (isinstance(value, float) and not math.isfinite(value))
    try:
        p = load_params(path)
    except ParamsError as e:
        section = key.rsplit(".", 1)[0] + "." if "." in key else None
        named = re.findall(r"`([^`]+)`", str(e))
        assert named and (named[0] == key or (section and named[0].startswith(section))), (key, str(e))
        one_line_naming(str(e))
        event("rejected")
        return
    event("accepted")
    assert not never_ok, f"`{key}: {value!r}` was accepted"
    if key in TOP_LEVEL_RULES:
        assert TOP_LEVEL_RULES[key](value), f"`{key}: {value!r}` was accepted"
    node = p
    for k in key.split("."):
        node = getattr(node, {"lambda": "lambda_"}.get(k, k))
    assert node == value


# --- hand-written cases -----------------------------------------------------------------------------------------

def _rewrite_line(path: Path, index: int, fn, encoding: str = "iso-8859-1") -> None:
    lines = path.read_text(encoding=encoding).splitlines()
    lines[index] = fn(lines[index])
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


@pytest.mark.parametrize("value, needle", [("inf", "Timestamp"), ("-inf", "Timestamp"), ("1e30", "Timestamp"),
                                           ("-5", "Timestamp"), ("1600000000000", "milliseconds"),
                                           ("99999999999999999999", "Timestamp")])
def test_timestamps_must_be_unix_seconds(tmp_path, value, needle):
    write_ml1m(tmp_path, n_users=8, n_items=40)
    _rewrite_line(tmp_path / "ratings.dat", -1, lambda ln: ln.rsplit("::", 1)[0] + "::" + value)
    one_line_naming(data_error("ml-1m", tmp_path, "ratings.dat", needle))


def test_fractional_timestamps_are_floored(tmp_path):
    log = write_ml1m(tmp_path, n_users=8, n_items=40)
    _rewrite_line(tmp_path / "ratings.dat", 0, lambda ln: ln + ".75")
    events, _ = load_raw("ml-1m", tmp_path)
    assert events["timestamp"].tolist() == log.events["timestamp"].tolist()


def test_timestamps_out_of_order_in_the_file(tmp_path):
    write_ml1m(tmp_path / "a", n_users=20, n_items=40, seed=4)
    write_ml1m(tmp_path / "b", n_users=20, n_items=40, seed=4)
    _append(tmp_path / "b" / "ratings.dat", [], "iso-8859-1", shuffle_seed=1)
    ds = DatasetConfig(name="ml-1m")
    a, b = (prepare(*load_raw("ml-1m", tmp_path / x), ds, SplitConfig()) for x in "ab")
    assert (tmp_path / "a" / "ratings.dat").read_bytes() != (tmp_path / "b" / "ratings.dat").read_bytes()
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)


def test_users_with_one_event(tmp_path):
    write_ml1m(tmp_path / "a", n_users=20, n_items=40)
    write_ml1m(tmp_path / "b", n_users=20, n_items=40)
    with open(tmp_path / "b" / "ratings.dat", "a", encoding="iso-8859-1") as fh:
        fh.write("9001::1::5::978300760\n9002::2::4::978300761\n")  # two users with a single rating
    ds = DatasetConfig(name="ml-1m")  # min_user_events 5
    base = prepare(*load_raw("ml-1m", tmp_path / "a"), ds, SplitConfig())
    events, meta = load_raw("ml-1m", tmp_path / "b")
    p = prepare(events, meta, ds, SplitConfig())
    pd.testing.assert_frame_equal(p.events, base.events)
    assert p.dropped["k_core"] == base.dropped["k_core"] + 2
    assert data_metrics(p)["dropped"]["k_core"] == p.dropped["k_core"]
    loo = prepare(events, meta, DatasetConfig(name="ml-1m", min_user_events=1), SplitConfig(protocol="leave_one_out"))
    per_user = loo.events.groupby("user_id")["split"].agg(list)
    singles = per_user[per_user.map(len) == 1]
    assert len(singles) == 2 and all(s == ["train"] for s in singles), "a lone event can only be trained on"


def test_ml1m_reencoded_as_utf8_reads_the_same(tmp_path):
    write_ml1m(tmp_path / "latin1", n_users=8, n_items=40)
    (tmp_path / "utf8").mkdir()
    for f in expected_files("ml-1m"):
        text = (tmp_path / "latin1" / f).read_text(encoding="iso-8859-1")
        (tmp_path / "utf8" / f).write_text(text, encoding="utf-8")
    a, b = load_raw("ml-1m", tmp_path / "latin1"), load_raw("ml-1m", tmp_path / "utf8")
    assert AMELIE in b[1]["title"].tolist(), "UTF-8 bytes were read as ISO-8859-1 (mojibake)"
    pd.testing.assert_frame_equal(a[1], b[1])


@pytest.mark.parametrize("year", ["1995.5", "inf", "unkonwn", "", "-3"])
def test_ml100k_unparseable_year_is_unknown(tmp_path, year):
    write_ml100k(tmp_path, n_users=8, n_items=40)
    _rewrite_line(tmp_path / "ml-100k.item", 1, lambda ln: "\t".join(
        [*ln.split("\t")[:2], year, ln.split("\t")[3]]), encoding="utf-8")
    _, items = load_raw("ml-100k", tmp_path)
    assert pd.isna(items["year"].iloc[0]) and items["year"].iloc[1:-1].notna().all()


def test_ml100k_duplicate_header_column(tmp_path):
    write_ml100k(tmp_path, n_users=8, n_items=40)
    _rewrite_line(tmp_path / "ml-100k.inter", 0, lambda ln: ln.replace("rating:float", "user_id:token"), "utf-8")
    one_line_naming(data_error("ml-100k", tmp_path, "ml-100k.inter", "user_id", "twice"))


@pytest.mark.parametrize("file, line, needles", [
    ("reviews_Beauty_5.json.gz", "[1, 2]", ["line", "list"]),
    ("meta_Beauty.json.gz", "'B000000001'", ["line", "str"]),
    ("reviews_Beauty_5.json.gz", json.dumps({"reviewerID": "A1", "asin": ["B1", "B2"], "unixReviewTime": 1}),
     ["asin", "ids"]),
    ("meta_Beauty.json.gz", repr({"asin": "B0000000X1", "title": ["Two", "Titles"]}), ["title", "text"]),
])
def test_amazon_wrong_types(tmp_path, file, line, needles):
    write_amazon(tmp_path, n_users=8, n_items=40)
    with gzip.open(tmp_path / file, "at", encoding="utf-8") as fh:
        fh.write(line + "\n")
    one_line_naming(data_error("amazon-beauty", tmp_path, file, *needles))


def test_every_dropped_row_is_counted_by_reason(tmp_path):
    """data.json: a review without a reviewer, a duplicate review, a duplicate metadata line, an item without text,
    items nobody reviewed, and the k-core, each under its own reason."""
    log = write_amazon(tmp_path, n_users=30, n_items=45)
    first = log.events.iloc[0]
    with gzip.open(tmp_path / "reviews_Beauty_5.json.gz", "at", encoding="utf-8") as fh:
        fh.write(json.dumps({"asin": first["source_item"], "unixReviewTime": 1300000000}) + "\n")
        fh.write(json.dumps({"reviewerID": first["source_user"], "asin": first["source_item"],
                             "unixReviewTime": int(first["timestamp"])}) + "\n")
    with gzip.open(tmp_path / "meta_Beauty.json.gz", "at", encoding="utf-8") as fh:
        fh.write(repr({"asin": first["source_item"], "title": "A second metadata line"}) + "\n")
    events, meta = load_raw("amazon-beauty", tmp_path)
    p = prepare(events, meta, DatasetConfig(name="amazon-beauty"), SplitConfig())
    m = data_metrics(p)
    assert m["dropped"]["missing_user_item_or_timestamp"] == 1
    assert m["dropped"]["duplicate_user_item_timestamp"] == 1
    no_text = set(meta.loc[(meta["title"] == "") & (meta["description"] == ""), "source_id"])
    assert len(no_text) == 1  # the fixture's last item: no title, no description
    assert m["dropped"]["item_without_text"] == int(events["source_item"].isin(no_text).sum())
    assert m["dropped_items"]["duplicate_source_id"] == 1
    assert m["dropped_items"]["without_text"] == 1
    unreviewed = set(meta["source_id"]) - no_text - set(events["source_item"].dropna())
    assert len(unreviewed) >= 2  # the fixture's two metadata lines nobody reviewed
    assert m["dropped_items"]["without_events"] == len(unreviewed)
    assert m["dropped_total"] == len(events) - len(p.events)
    assert m["dropped_items_total"] == len(meta) - len(p.items)


# --- stage scripts: exit status, one line on stderr, no output --------------------------------------------------

def error_line(stderr: str) -> str:
    """The stage's error: the last line of stderr, `error: ...`, with no traceback anywhere (log lines may precede it)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in stderr, stderr[-3000:]
    return lines[-1]


def _ml100k_renamed(d):
    write_ml100k(d, n_users=20, n_items=40)
    _rewrite_line(d / "ml-100k.inter", 0, lambda ln: ln.replace("timestamp:float", "time:float"), "utf-8")


def _ml100k_not_utf8(d):
    write_ml100k(d, n_users=20, n_items=40)
    with open(d / "ml-100k.item", "ab") as fh:
        fh.write("999\tAmélie\t2001\tComedy\n".encode("iso-8859-1"))


def _ml1m_empty(d):
    write_ml1m(d, n_users=20, n_items=40)
    (d / "ratings.dat").write_text("", encoding="iso-8859-1")


def _ml1m_inf_timestamp(d):
    write_ml1m(d, n_users=20, n_items=40)
    _rewrite_line(d / "ratings.dat", 3, lambda ln: ln.rsplit("::", 1)[0] + "::inf")


def _ml1m_ok(d):
    write_ml1m(d, n_users=20, n_items=40)


STAGE_CASES = {  # id: (dataset, raw writer, params edits, what the line must name)
    "renamed-column": ("ml-100k", _ml100k_renamed, {}, ["ml-100k.inter", "timestamp"]),
    "not-utf8": ("ml-100k", _ml100k_not_utf8, {}, ["ml-100k.item", "utf-8"]),
    "empty-file": ("ml-1m", _ml1m_empty, {}, ["ratings.dat"]),
    "inf-timestamp": ("ml-1m", _ml1m_inf_timestamp, {}, ["ratings.dat", "Timestamp"]),
    "nothing-left": ("ml-1m", _ml1m_ok, {"dataset": {"min_user_events": 1000}}, ["min_user_events"]),
    "negative-codebook-size": ("ml-1m", _ml1m_ok, {"codebook_size": -3}, ["`codebook_size`"]),
    "palette-length-0": ("ml-1m", _ml1m_ok, {"palette_length": 0}, ["`palette_length`"]),
    "unknown-dataset": ("ml-1m", _ml1m_ok, {"dataset": {"name": "netflix"}}, ["`dataset.name`", "ml-1m"]),
    "negative-lambda": ("ml-1m", _ml1m_ok, {"lambda": -0.5}, ["`lambda`"]),
    "nan-lambda": ("ml-1m", _ml1m_ok, {"lambda": float("nan")}, ["`lambda`"]),
}


def _run_prepare_case(root: Path, case: str) -> tuple:
    name, writer, edits, needles = STAGE_CASES[case]
    root.mkdir(parents=True)
    params = deep_merge(REAL_PARAMS, {"dataset": {"name": name}})
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, edits), sort_keys=False), encoding="utf-8")
    writer(root / "raw")
    res = run_stage_script("prepare.py", "--params", "params.yaml", "--raw", "raw", "--out", "out/prepared",
                           "--metrics", "out/metrics/data.json", cwd=root)
    return res, needles


def test_prepare_stage_fails_cleanly(tmp_path):
    """Every case above through `python stages/prepare.py` (run concurrently: each is mostly interpreter start-up)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(STAGE_CASES, pool.map(lambda c: _run_prepare_case(tmp_path / c, c), STAGE_CASES)))
    for case, (res, needles) in runs.items():
        assert res.returncode != 0, f"{case}: exited 0"
        assert len(res.stderr.strip().splitlines()) == 1, f"{case}: {res.stderr}"  # prepare logs nothing before
        one_line_naming(error_line(res.stderr), *needles)
        out = tmp_path / case / "out"
        assert not (out / "prepared").exists() and not (out / "metrics" / "data.json").exists(), case
        assert temp_leftovers(tmp_path / case) == [], case


def test_failed_repro_leaves_no_stale_output(tiny_repo):
    """Under DVC: a good `prepare`, then the raw file breaks: the rerun fails with the one line and the earlier
    outputs are gone (DVC removes them before the command), so nothing stale passes for current."""
    tiny_repo.repro("prepare")
    assert (tiny_repo.root / "data/prepared/events.parquet").exists()
    lock = yaml.safe_load((tiny_repo.root / "dvc.lock").read_text())["stages"]["prepare"]
    (tiny_repo.root / "data/raw/ml-1m/ratings.dat").write_text("", encoding="iso-8859-1")
    res = tiny_repo.dvc("repro", "prepare", check=False)
    assert res.returncode != 0
    ours = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error: ")]
    assert len(ours) == 1 and "ratings.dat" in ours[0] and "Traceback" not in res.stdout + res.stderr
    assert not (tiny_repo.root / "data/prepared").exists() and not (tiny_repo.root / "metrics/data.json").exists()
    assert yaml.safe_load((tiny_repo.root / "dvc.lock").read_text())["stages"]["prepare"] == lock
    assert temp_leftovers(tiny_repo.root / "data") == []


def test_lora_rank_above_hidden_size_stage(tmp_path):
    """`lora_rank` 64 on a tiny random Llama (hidden size 32) through `python stages/cpt.py`."""
    write_ml1m(tmp_path / "raw", n_users=12, n_items=40)
    prep = prepare(*load_raw("ml-1m", tmp_path / "raw"), DatasetConfig(name="ml-1m"), SplitConfig())
    prep.items.to_parquet(tmp_path / "items.parquet")
    prep.events.to_parquet(tmp_path / "events.parquet")
    codes = add_collision_suffix(np.random.default_rng(0).integers(0, 4, size=(len(prep.items), 2)))
    SidTable(codes, [4, 4, int(codes[:, -1].max()) + 1], {"tokenizer": "toy"}).save(tmp_path / "sids.parquet")
    write_tiny_llm(tmp_path / "base", prep.items["title"].tolist())
    params = deep_merge(deep_merge(REAL_PARAMS, TINY_PARAMS), {"lora_rank": 64})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    res = run_stage_script("cpt.py", "--params", "params.yaml", "--base", "base", "--sids", "sids.parquet",
                           "--items", "items.parquet", "--events", "events.parquet", "--out", "out/cpt",
                           "--metrics", "out/cpt.json", "--plots", "out/plots", cwd=tmp_path)
    assert res.returncode != 0
    assert not (tmp_path / "out/cpt").exists() and not (tmp_path / "out/cpt.json").exists()
    assert temp_leftovers(tmp_path) == []
    one_line_naming(error_line(res.stderr), "`lora_rank`", "hidden size")
