"""What a real raw file of each format looks like: rows cut short, timestamps outside the dataset's period and
absent optional columns, on the tiny fixtures of each format (ml-100k atomic, ml-1m `.dat`, Amazon json.gz)."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fixtures import REPO_ROOT, run_stage_script, temp_leftovers, write_amazon, write_ml100k, write_ml1m
from sidrec.data.loaders import TIMESTAMP_BOUNDS, load_raw, load_raw_report, timestamp_bounds
from test_loaders import data_error

WRITERS = {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "amazon-beauty": write_amazon}
EVENTS_FILE = {"ml-100k": "ml-100k.inter", "ml-1m": "ratings.dat", "amazon-beauty": "reviews_Beauty_5.json.gz"}
TS_COL = {"ml-100k": "timestamp", "ml-1m": "Timestamp", "amazon-beauty": "unixReviewTime"}


def _read(path: Path) -> list[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read().splitlines()
    return path.read_text(encoding="iso-8859-1").splitlines()


def _write(path: Path, lines: list[str], newline_at_end: bool = True) -> None:
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="iso-8859-1")


# --- good files ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(WRITERS))
def test_good_file_loads_without_warnings(tmp_path, name):
    log = WRITERS[name](tmp_path, n_users=12, n_items=45, seed=1)
    events, meta, warnings = load_raw_report(name, tmp_path)
    assert warnings == {}
    assert len(events) == len(log.events) and len(meta) == len(log.items)
    lo, hi, *_ = timestamp_bounds(name)
    assert lo <= events["timestamp"].min() and events["timestamp"].max() < hi
    e2, m2 = load_raw(name, tmp_path)  # load_raw keeps its return value
    pd.testing.assert_frame_equal(e2, events)
    pd.testing.assert_frame_equal(m2, meta)


def test_bounds_table():
    assert set(TIMESTAMP_BOUNDS) == {"ml-100k", "ml-1m", "amazon"}
    for name in ["ml-100k", "ml-1m", "amazon-beauty", "amazon-sports", "amazon-toys"]:
        lo, hi, first, last, why = timestamp_bounds(name)
        assert lo < hi and why
    # the real ml-100k (recbole 1.2.1) spans 874724710..893286638, ml-1m 956703932..1046454590
    lo, hi, *_ = timestamp_bounds("ml-100k")
    assert lo <= 874_724_710 and 893_286_638 < hi
    lo, hi, *_ = timestamp_bounds("ml-1m")
    assert lo <= 956_703_932 and 1_046_454_590 < hi
    lo, hi, *_ = timestamp_bounds("amazon-beauty")
    assert lo <= pd.Timestamp("1996-05-20", tz="UTC").timestamp() and pd.Timestamp("2023-09-30", tz="UTC").timestamp() < hi


# --- a row cut short ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, file", [("ml-100k", "ml-100k.inter"), ("ml-100k", "ml-100k.item"),
                                        ("ml-1m", "ratings.dat"), ("ml-1m", "movies.dat")])
def test_truncated_last_row_fails_with_its_line_number(tmp_path, name, file):
    """The file cut in the middle of its last row's second field: fewer fields than the header / the format."""
    WRITERS[name](tmp_path, n_users=8, n_items=40)
    path = tmp_path / file
    lines = _read(path)
    sep = "\t" if name == "ml-100k" else "::"
    lines[-1] = lines[-1].split(sep)[0] + sep + lines[-1].split(sep)[1][:1]
    _write(path, lines, newline_at_end=False)
    msg = data_error(name, tmp_path, file, f"line {len(lines)} ", "2 fields", "cut short")
    assert "re-download" in msg


def test_line_numbers_count_blank_lines(tmp_path):
    write_ml1m(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "ratings.dat"
    lines = _read(path)
    lines = lines[:3] + ["", ""] + lines[3:]
    lines[-1] = lines[-1].rsplit("::", 1)[0]
    _write(path, lines)
    data_error("ml-1m", tmp_path, "ratings.dat", f"line {len(lines)} ", "3 fields")


@pytest.mark.parametrize("name", list(WRITERS))
def test_truncated_last_timestamp_fails(tmp_path, name):
    """Cut inside the last timestamp: the row still has every field, but its time is 1970-1973."""
    WRITERS[name](tmp_path, n_users=8, n_items=40)
    path = tmp_path / EVENTS_FILE[name]
    lines = _read(path)
    if name == "amazon-beauty":  # json: cutting the line leaves invalid JSON, so cut the number inside the object
        rec = json.loads(lines[-1])
        rec["unixReviewTime"] = int(str(rec["unixReviewTime"])[:6])
        lines[-1] = json.dumps(rec)
    else:
        lines[-1] = lines[-1][:-4]
    _write(path, lines)
    msg = data_error(name, tmp_path, EVENTS_FILE[name], TS_COL[name], "1 timestamp(s)", f"line {len(lines)}", "1970")
    assert "re-download" in msg


def test_truncated_amazon_json_line(tmp_path):
    write_amazon(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "reviews_Beauty_5.json.gz"
    lines = _read(path)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    _write(path, lines, newline_at_end=False)
    msg = data_error("amazon-beauty", tmp_path, path.name, f"line {len(lines)} ", "cut short", "re-download")
    _write(path, lines)  # with its newline: still not JSON, still the line number
    data_error("amazon-beauty", tmp_path, path.name, f"line {len(lines)} ", "not JSON")
    assert msg


def test_truncated_amazon_meta_line(tmp_path):
    write_amazon(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "meta_Beauty.json.gz"
    lines = _read(path)
    lines[-1] = lines[-1][:30]
    _write(path, lines, newline_at_end=False)
    data_error("amazon-beauty", tmp_path, path.name, f"line {len(lines)} ", "cut short")


def test_truncated_gzip_stream(tmp_path):
    write_amazon(tmp_path, n_users=30, n_items=60)
    path = tmp_path / "reviews_Beauty_5.json.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    data_error("amazon-beauty", tmp_path, path.name, "gzip", "cut short")


# --- timestamps outside the period --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("when", ["1970-01-02", "2030-06-01"])
def test_timestamp_outside_the_period(tmp_path, name, when):
    WRITERS[name](tmp_path, n_users=8, n_items=40)
    path = tmp_path / EVENTS_FILE[name]
    lines = _read(path)
    t = int(pd.Timestamp(when, tz="UTC").timestamp())
    k = 3  # a row in the middle
    if name == "amazon-beauty":
        rec = json.loads(lines[k])
        rec["unixReviewTime"] = t
        lines[k] = json.dumps(rec)
    else:
        sep = "\t" if name == "ml-100k" else "::"
        lines[k] = lines[k].rsplit(sep, 1)[0] + sep + str(t)
    _write(path, lines)
    first, last, _ = TIMESTAMP_BOUNDS["amazon" if name.startswith("amazon") else name]
    data_error(name, tmp_path, path.name, TS_COL[name], "1 timestamp(s)", first, last, f"line {k + 1}:", when,
               "re-download")


def test_ml1m_file_as_ml100k_is_out_of_period(tmp_path):
    """Another dataset's ratings under ml-100k's name: every timestamp is outside 1997-1998."""
    write_ml100k(tmp_path, n_users=8, n_items=40)
    ml1m = write_ml1m(tmp_path / "m", n_users=8, n_items=40)
    path = tmp_path / "ml-100k.inter"
    head = _read(path)[0]
    body = [f"{u}\t{i}\t3\t{t}" for u, i, t in ml1m.events.itertuples(index=False)]
    _write(path, [head, *body])
    data_error("ml-100k", tmp_path, path.name, f"{len(body)} timestamp(s)")


# --- absent optional columns --------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, column, field", [("class:token_seq", "class", "genres"),
                                                   ("release_year:token", "release_year", "year")])
def test_ml100k_renamed_optional_column_is_a_counted_warning(tmp_path, caplog, header, column, field):
    log = write_ml100k(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "ml-100k.item"
    lines = _read(path)
    lines[0] = lines[0].replace(header, "renamed:token")
    _write(path, lines)
    with caplog.at_level(logging.WARNING, logger="sidrec.data.loaders"):
        events, meta, warnings = load_raw_report("ml-100k", tmp_path)
    assert warnings == {f"missing_column:ml-100k.item:{column}": 40}
    assert len(meta) == len(log.items) and len(events) == len(log.events)
    if field == "genres":
        assert (meta["genres"].map(len) == 0).all()
    else:
        assert meta["year"].isna().all()
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "ml-100k.item" in msgs[0] and column in msgs[0] and "renamed" in msgs[0]


def test_ml1m_without_years_and_genres_is_a_counted_warning(tmp_path, caplog):
    """ml-1m has no header to rename: rows whose title lacks `(Year)` or whose genres are empty are counted."""
    write_ml1m(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "movies.dat"
    lines = _read(path)
    lines = [f"{i}::{t.rsplit(' (', 1)[0]}::{g if int(i) % 2 else ''}"
             for i, t, g in (ln.split("::") for ln in lines)]
    _write(path, lines)
    with caplog.at_level(logging.WARNING, logger="sidrec.data.loaders"):
        _, meta, warnings = load_raw_report("ml-1m", tmp_path)
    assert warnings == {"missing_value:movies.dat:year": 40, "missing_value:movies.dat:genres": 20}
    assert meta["year"].isna().all()
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


@pytest.mark.parametrize("key", ["categories", "description", "title"])
def test_amazon_renamed_optional_column_is_a_counted_warning(tmp_path, key):
    log = write_amazon(tmp_path, n_users=8, n_items=40)
    path = tmp_path / "meta_Beauty.json.gz"
    _write(path, [ln.replace(f"'{key}'", "'renamed'") for ln in _read(path)])
    events, meta, warnings = load_raw_report("amazon-beauty", tmp_path)
    assert warnings == {f"missing_column:meta_Beauty.json.gz:{key}": len(log.items)}
    col = {"categories": "genres"}.get(key, key)
    assert all(v in ("", []) for v in meta[col])


def test_a_failing_load_logs_no_warning(tmp_path, caplog):
    """Warnings are logged only once every check passed: an error stays the stage's only line."""
    write_ml100k(tmp_path, n_users=8, n_items=40)
    item = tmp_path / "ml-100k.item"
    _write(item, [_read(item)[0].replace("class:", "genre:"), *_read(item)[1:]])
    inter = tmp_path / "ml-100k.inter"
    _write(inter, [*_read(inter), "1\t2\t3\t4"])
    with caplog.at_level(logging.WARNING, logger="sidrec.data.loaders"):
        data_error("ml-100k", tmp_path, "ml-100k.inter", "1970")
    assert not caplog.records


# --- the prepare stage ----------------------------------------------------------------------------------------------

REAL_PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def _run_prepare(root: Path, name: str):
    params = {**REAL_PARAMS, "dataset": {**REAL_PARAMS["dataset"], "name": name}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return run_stage_script("prepare.py", "--params", "params.yaml", "--raw", "raw", "--out", "out/prepared",
                            "--metrics", "out/metrics/data.json", cwd=root)


def test_prepare_stage_writes_load_warnings(tmp_path):
    (tmp_path / "a").mkdir()
    write_ml1m(tmp_path / "a" / "raw", n_users=20, n_items=40)
    res = _run_prepare(tmp_path / "a", "ml-1m")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "a" / "out/metrics/data.json").read_text())
    assert m["load_warnings"] == {} and m["events"] > 0

    (tmp_path / "b").mkdir()
    write_ml100k(tmp_path / "b" / "raw", n_users=20, n_items=40)
    item = tmp_path / "b" / "raw" / "ml-100k.item"
    _write(item, [_read(item)[0].replace("class:", "genre:"), *_read(item)[1:]])
    res = _run_prepare(tmp_path / "b", "ml-100k")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "b" / "out/metrics/data.json").read_text())
    assert m["load_warnings"] == {"missing_column:ml-100k.item:class": 40}
    assert "WARNING" in res.stderr and "no class column" in res.stderr


@pytest.mark.parametrize("case", ["truncated-row", "1970-timestamp", "truncated-json"])
def test_prepare_stage_writes_nothing_on_error(tmp_path, case):
    name = {"truncated-row": "ml-1m", "1970-timestamp": "ml-100k", "truncated-json": "amazon-beauty"}[case]
    raw = tmp_path / "raw"
    WRITERS[name](raw, n_users=20, n_items=40)
    path = raw / EVENTS_FILE[name]
    lines = _read(path)
    if case == "truncated-row":
        lines[-1] = lines[-1][:3]
    elif case == "1970-timestamp":
        lines[-1] = lines[-1].rsplit("\t", 1)[0] + "\t86400"
    else:
        lines[-1] = lines[-1][:20]
    _write(path, lines, newline_at_end=case != "truncated-json")
    res = _run_prepare(tmp_path, name)
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and path.name in err[0], res.stderr
    assert f"line {len(lines)}" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert temp_leftovers(tmp_path) == []
