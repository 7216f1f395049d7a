"""Raw loaders on tiny files in each native format, and the one-line DataErrors for every broken input."""
from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from fixtures import AMELIE, write_amazon, write_ml100k, write_ml1m
from sidrec.data.fetch import fetch
from sidrec.data.loaders import DataError, expected_files, load_raw

EVENT_COLS = ["source_user", "source_item", "timestamp"]
ITEM_COLS = ["source_id", "title", "description", "year", "genres"]
WRITERS = {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "amazon-beauty": write_amazon}


def data_error(name: str, raw_dir: Path, *needles: str) -> str:
    """load_raw must raise a one-line DataError containing every needle."""
    with pytest.raises(DataError) as ei:
        load_raw(name, raw_dir)
    msg = str(ei.value)
    assert "\n" not in msg, f"multi-line message: {msg!r}"
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def assert_raw_schema(events: pd.DataFrame, items: pd.DataFrame) -> None:
    assert list(events.columns) == EVENT_COLS and list(items.columns) == ITEM_COLS
    assert pd.api.types.is_string_dtype(events["source_user"]) and pd.api.types.is_string_dtype(events["source_item"])
    assert events["timestamp"].dtype == "int64"
    assert pd.api.types.is_string_dtype(items["source_id"]) and pd.api.types.is_string_dtype(items["title"])
    assert pd.api.types.is_string_dtype(items["description"])
    assert items["year"].dtype == "Int64"
    assert all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in items["genres"])


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("name", list(WRITERS))
def test_loader_gives_the_raw_schema(tmp_path, name):
    log = WRITERS[name](tmp_path, n_users=12, n_items=45, seed=3)
    events, items = load_raw(name, tmp_path)
    assert_raw_schema(events, items)
    assert_same(events, log.events)
    assert_same(items, log.items)


def test_ml100k_details(tmp_path):
    write_ml100k(tmp_path, n_users=12, n_items=45)
    _, items = load_raw("ml-100k", tmp_path)
    last = items.iloc[-1]  # like ml-100k's item 267: no year, class `unknown`
    assert pd.isna(last["year"]) and last["genres"] == []
    assert items["year"].iloc[:-1].notna().all()


def test_ml1m_non_ascii_title_and_year(tmp_path):
    write_ml1m(tmp_path, n_users=12, n_items=45)
    _, items = load_raw("ml-1m", tmp_path)
    amelie = items[items["source_id"] == "1"].iloc[0]
    assert amelie["title"] == AMELIE == "Amélie (Fabuleux destin d'Amélie Poulain, Le)"
    assert amelie["year"] == 2001 and amelie["genres"] == ["Comedy", "Romance"]
    assert not items["title"].str.contains(r"\(\d{4}\)$").any(), "the year should be cut out of every title"
    assert items["year"].notna().all()


def test_ml1m_title_without_year(tmp_path):
    write_ml1m(tmp_path, n_users=12, n_items=45)
    with open(tmp_path / "movies.dat", "a", encoding="iso-8859-1") as fh:
        fh.write("999::Untitled Project::Drama\n")
    _, items = load_raw("ml-1m", tmp_path)
    row = items[items["source_id"] == "999"].iloc[0]
    assert row["title"] == "Untitled Project" and pd.isna(row["year"])


def test_amazon_details(tmp_path):
    log = write_amazon(tmp_path, n_users=12, n_items=45)
    _, items = load_raw("amazon-beauty", tmp_path)
    assert items["title"].iloc[0] == "Crème Brûlée Lip Balm"
    assert items["title"].iloc[1] == "" and items["description"].iloc[1] != ""
    assert (items["description"] == "").any()
    # the first category path, without the root "Beauty" every item shares
    assert all(g[0] in {"Skin Care", "Makeup", "Hair Care", "Fragrance"} and len(g) == 2 for g in items["genres"])
    assert items["year"].isna().all()
    assert len(items) == len(log.items) == 47  # two metadata lines for items nobody reviewed


def test_amazon_python2_literals(tmp_path):
    write_amazon(tmp_path, n_users=8, n_items=40)
    with gzip.open(tmp_path / "meta_Beauty.json.gz", "at", encoding="utf-8") as fh:
        fh.write("{'asin': 'B0ESCAPED1', 'title': u'Cr\\xe8me Fra\\xeeche', 'categories': [[u'Beauty', u'Makeup']]}\n")
    _, items = load_raw("amazon-beauty", tmp_path)
    row = items[items["source_id"] == "B0ESCAPED1"].iloc[0]
    assert row["title"] == "Crème Fraîche" and row["genres"] == ["Makeup"] and row["description"] == ""


@pytest.mark.parametrize("name, category", [("amazon-sports", "Sports_and_Outdoors"), ("amazon-toys", "Toys_and_Games")])
def test_other_amazon_categories(tmp_path, name, category):
    log = write_amazon(tmp_path, category=category, n_users=8, n_items=40)
    events, items = load_raw(name, tmp_path)
    assert len(events) == len(log.events) and len(items) == len(log.items)
    assert {g[0] for g in items["genres"]} <= {"Skin Care", "Makeup", "Hair Care", "Fragrance"}


# --- errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ml-100k", "ml-1m", "amazon-beauty"])
def test_missing_files_named(tmp_path, name):
    data_error(name, tmp_path, *expected_files(name))
    WRITERS[name](tmp_path, n_users=8, n_items=40)
    first, second = expected_files(name)
    (tmp_path / second).unlink()
    msg = data_error(name, tmp_path, second)
    assert first not in msg.split("missing", 1)[1].split(" in ")[0]


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _rewrite_gz(path: Path, old: str, new: str) -> None:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    assert old in text
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text.replace(old, new))


@pytest.mark.parametrize("file, header, column", [
    ("ml-100k.inter", "timestamp:float", "timestamp"),
    ("ml-100k.inter", "user_id:token", "user_id"),
    ("ml-100k.item", "movie_title:token_seq", "movie_title"),
])
def test_ml100k_missing_column(tmp_path, file, header, column):
    write_ml100k(tmp_path, n_users=8, n_items=40)
    _rewrite(tmp_path / file, header, "renamed:token")
    data_error("ml-100k", tmp_path, file, column)


@pytest.mark.parametrize("file, key", [("reviews_Beauty_5.json.gz", "unixReviewTime"),
                                       ("reviews_Beauty_5.json.gz", "reviewerID"),
                                       ("meta_Beauty.json.gz", "asin")])
def test_amazon_missing_column(tmp_path, file, key):
    write_amazon(tmp_path, n_users=8, n_items=40)
    q = "'" if file.startswith("meta") else '"'  # metadata lines are Python literals, reviews are JSON
    _rewrite_gz(tmp_path / file, f"{q}{key}{q}", f"{q}renamed{q}")
    data_error("amazon-beauty", tmp_path, file, key)


@pytest.mark.parametrize("name, file, keep_header", [
    ("ml-100k", "ml-100k.inter", False), ("ml-100k", "ml-100k.inter", True), ("ml-100k", "ml-100k.item", True),
    ("ml-1m", "ratings.dat", False), ("ml-1m", "movies.dat", False),
])
def test_empty_file(tmp_path, name, file, keep_header):
    WRITERS[name](tmp_path, n_users=8, n_items=40)
    path = tmp_path / file
    head = path.read_text(encoding="iso-8859-1").splitlines()[0] + "\n"
    path.write_text(head if keep_header else "", encoding="iso-8859-1")
    data_error(name, tmp_path, file)


@pytest.mark.parametrize("file", ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"])
def test_amazon_empty_file(tmp_path, file):
    write_amazon(tmp_path, n_users=8, n_items=40)
    with gzip.open(tmp_path / file, "wt", encoding="utf-8") as fh:
        fh.write("\n")
    data_error("amazon-beauty", tmp_path, file)


def test_non_numeric_timestamp_ml100k(tmp_path):
    write_ml100k(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "ml-100k.inter"
    lines = path.read_text(encoding="utf-8").splitlines()
    u, i, r, _ = lines[5].split("\t")
    lines[5] = "\t".join([u, i, r, "yesterday"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_error("ml-100k", tmp_path, "ml-100k.inter", "timestamp", "yesterday")


def test_non_numeric_timestamp_ml1m(tmp_path):
    write_ml1m(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "ratings.dat"
    lines = path.read_text(encoding="iso-8859-1").splitlines()
    lines[-1] = lines[-1].rsplit("::", 1)[0] + "::2001-01-01"
    path.write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    data_error("ml-1m", tmp_path, "ratings.dat", "Timestamp", "2001-01-01")


def test_non_numeric_timestamp_amazon(tmp_path):
    write_amazon(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "reviews_Beauty_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    lines[2] = lines[2].replace('"unixReviewTime": ', '"unixReviewTime": "soon", "x": ')
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    data_error("amazon-beauty", tmp_path, "reviews_Beauty_5.json.gz", "unixReviewTime", "soon")


def test_wrong_field_count(tmp_path):
    write_ml1m(tmp_path, n_users=8, n_items=40)
    with open(tmp_path / "ratings.dat", "a", encoding="iso-8859-1") as fh:
        fh.write("1::2::3\n")
    data_error("ml-1m", tmp_path, "ratings.dat", "UserID::MovieID::Rating::Timestamp")
    write_ml100k(tmp_path / "b", n_users=8, n_items=40)
    with open(tmp_path / "b" / "ml-100k.item", "a", encoding="utf-8") as fh:
        fh.write("999\tNo Year Column\n")
    data_error("ml-100k", tmp_path / "b", "ml-100k.item", "2 fields")


def test_amazon_unparseable_lines(tmp_path):
    write_amazon(tmp_path, n_users=8, n_items=40)
    with gzip.open(tmp_path / "meta_Beauty.json.gz", "at", encoding="utf-8") as fh:
        fh.write("{'asin': 'B000000000', 'title': \n")
    data_error("amazon-beauty", tmp_path, "meta_Beauty.json.gz", "line")
    (tmp_path / "reviews_Beauty_5.json.gz").write_bytes(b"not gzip at all")
    data_error("amazon-beauty", tmp_path, "reviews_Beauty_5.json.gz", "gzip")


def test_ml100k_not_utf8(tmp_path):
    write_ml100k(tmp_path, n_users=8, n_items=40)
    with open(tmp_path / "ml-100k.item", "ab") as fh:
        fh.write("999\tAmélie\t2001\tComedy\n".encode("iso-8859-1"))
    data_error("ml-100k", tmp_path, "ml-100k.item", "utf-8")


def test_unknown_dataset(tmp_path):
    msg = data_error("netflix", tmp_path, "dataset.name", "netflix")
    assert "ml-1m" in msg
    with pytest.raises(DataError, match="dataset.name"):
        fetch("netflix", tmp_path)


# --- fetch for user-placed datasets -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, writer, published", [
    ("ml-1m", write_ml1m, "GroupLens"),
    ("amazon-beauty", write_amazon, "Amazon"),
])
def test_fetch_placed_dataset(tmp_path, name, writer, published):
    with pytest.raises(DataError) as ei:
        fetch(name, tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and published in msg and str(tmp_path) in msg
    assert all(f in msg for f in expected_files(name))
    writer(tmp_path, n_users=8, n_items=40)
    paths = fetch(name, tmp_path)
    assert paths == [tmp_path / f for f in expected_files(name)]
    assert all(p.is_file() for p in paths)
