"""Tiny raw datasets in each native format, written into a directory for loader, prepare and pipeline tests.

One synthetic log (`make_log`) is written in the formats `sidrec.data.loaders` reads:
RecBole atomic files (ml-100k), MovieLens-1M `.dat` (ISO-8859-1, `::`), the Amazon 2014 5-core dumps
(reviews as gzipped JSON lines, metadata as gzipped Python-literal lines).

The log looks like the real ones where it matters to the pipeline: users have 5-30 events at non-decreasing
timestamps spread over the whole period, some events of a user share a timestamp, and a share of the items is
released only near the end, so a temporal split has cold-start items. Everything is a function of `seed`.
Each writer returns a `RawLog` holding what a loader should give back (the raw schema of loaders.py).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ML_GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
             "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
             "Western"]
_WORDS = ["Silent", "River", "Night", "Return", "Glass", "Empire", "Summer", "Ghost", "Last", "Garden", "Iron",
          "Winter", "Secret", "Storm", "Little", "City", "Dark", "Heart", "Journey", "Stone"]
AMELIE = "Amélie (Fabuleux destin d'Amélie Poulain, Le)"
DAY = 86400


@dataclass
class RawLog:
    """What was written, in the raw schema of `sidrec.data.loaders` (events in file order)."""
    events: pd.DataFrame
    """source_user (str), source_item (str), timestamp (int64)."""
    items: pd.DataFrame
    """source_id (str), title (str), description (str), year (Int64), genres (list[str])."""
    files: list[Path] = field(default_factory=list)


def make_log(n_users: int, n_items: int, seed: int, t0: int, span: int, day: bool = False) -> pd.DataFrame:
    """A synthetic interaction log: columns user (0..n_users-1), item (0..n_items-1), rating, timestamp.

    70% of the items exist from t0, the rest are released over (0.3, 0.97) of the period; recently released
    items are picked more often, so late items collect their first events late (cold start under a temporal
    split). Each user is active over a random window, 5-30 events, ~15% of them sharing the previous
    timestamp. Item 0 is the most popular. `day=True` rounds timestamps to whole days (Amazon).
    """
    if n_items < 40:
        raise ValueError("make_log needs n_items >= 40 so every user can find 30 distinct items")
    rng = np.random.default_rng(seed)
    release = np.full(n_items, float(t0))
    late = rng.permutation(np.arange(1, n_items))[: int(0.3 * n_items)]
    release[late] = t0 + span * rng.uniform(0.3, 0.98, size=len(late))
    base = 1.0 / np.arange(1, n_items + 1) ** 0.6  # popularity falls with the item id
    rows = []
    for u in range(n_users):
        n = int(rng.integers(5, 31))
        start = t0 + span * rng.uniform(0.0, 0.85)
        end = min(start + span * rng.uniform(0.1, 0.7), t0 + span)
        ts = np.sort(rng.uniform(start, end, size=n)).astype(np.int64)
        if day:
            ts = ts // DAY * DAY
        tie = rng.random(n) < 0.15
        for k in range(1, n):
            if tie[k]:
                ts[k] = ts[k - 1]
        seen: set[int] = set()
        for t in ts:
            ok = release <= t
            ok[list(seen)] = False
            if not ok.any():
                continue
            w = base * ok * np.where(t - release < 0.05 * span, 20.0, 1.0)
            i = int(rng.choice(n_items, p=w / w.sum()))
            seen.add(i)
            rows.append((u, i, int(rng.integers(1, 6)), int(t)))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def _title(rng: np.random.Generator) -> str:
    k = int(rng.integers(1, 4))
    return " ".join(rng.choice(_WORDS, size=k, replace=False))


def _genres(rng: np.random.Generator) -> list[str]:
    return sorted(rng.choice(ML_GENRES, size=int(rng.integers(1, 4)), replace=False).tolist())


def _raw_events(log: pd.DataFrame, user_ids, item_ids) -> pd.DataFrame:
    return pd.DataFrame({"source_user": [user_ids[u] for u in log["user"]],
                         "source_item": [item_ids[i] for i in log["item"]],
                         "timestamp": log["timestamp"].astype("int64").to_numpy()})


def write_ml100k(dir: str | Path, n_users: int = 30, n_items: int = 60, seed: int = 0) -> RawLog:
    """RecBole atomic files `ml-100k.inter` and `ml-100k.item` (rows in random order, as in the wheel).

    Item ids are 1..n_items, user ids 1..n_users. The last item mimics ml-100k's item 267: no release year
    and class `unknown` (the loader maps it to year NA, no genres).
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 100)
    log = make_log(n_users, n_items, seed, t0=874_724_710, span=18_500_000)
    log = log.iloc[rng.permutation(len(log))].reset_index(drop=True)
    uid = {u: str(u + 1) for u in range(n_users)}
    iid = {i: str(i + 1) for i in range(n_items)}
    inter = dir / "ml-100k.inter"
    with open(inter, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, i, r, t in log.itertuples(index=False):
            fh.write(f"{uid[u]}\t{iid[i]}\t{r}\t{t}\n")
    titles, years, genres = [], [], []
    for i in range(n_items):
        titles.append(_title(rng))
        unknown = i == n_items - 1
        years.append(None if unknown else int(rng.integers(1930, 1998)))
        genres.append([] if unknown else _genres(rng))
    item = dir / "ml-100k.item"
    with open(item, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(n_items):
            y = "" if years[i] is None else str(years[i])
            g = " ".join(genres[i]) or "unknown"
            fh.write(f"{iid[i]}\t{titles[i]}\t{y}\t{g}\n")
    items = pd.DataFrame({"source_id": [iid[i] for i in range(n_items)], "title": titles, "description": "",
                          "year": pd.array(years, dtype="Int64"), "genres": genres})
    return RawLog(_raw_events(log, uid, iid), items, [inter, item])


def write_ml1m(dir: str | Path, n_users: int = 30, n_items: int = 60, seed: int = 0) -> RawLog:
    """MovieLens-1M `ratings.dat` (sorted by user, as shipped) and `movies.dat`, ISO-8859-1 encoded.

    Item 1 is the popular "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)": non-ASCII, and its title
    has a parenthesis before the year.
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 200)
    log = make_log(n_users, n_items, seed, t0=956_703_932, span=89_750_000)
    log = log.sort_values("user", kind="stable").reset_index(drop=True)
    uid = {u: str(u + 1) for u in range(n_users)}
    iid = {i: str(i + 1) for i in range(n_items)}
    ratings = dir / "ratings.dat"
    with open(ratings, "w", encoding="iso-8859-1", newline="\n") as fh:
        for u, i, r, t in log.itertuples(index=False):
            fh.write(f"{uid[u]}::{iid[i]}::{r}::{t}\n")
    titles = [AMELIE] + [_title(rng) for _ in range(n_items - 1)]
    years = [2001] + [int(rng.integers(1919, 2001)) for _ in range(n_items - 1)]
    genres = [["Comedy", "Romance"]] + [_genres(rng) for _ in range(n_items - 1)]
    movies = dir / "movies.dat"
    with open(movies, "w", encoding="iso-8859-1", newline="\n") as fh:
        for i in range(n_items):
            fh.write(f"{iid[i]}::{titles[i]} ({years[i]})::{'|'.join(genres[i])}\n")
    items = pd.DataFrame({"source_id": [iid[i] for i in range(n_items)], "title": titles, "description": "",
                          "year": pd.array(years, dtype="Int64"), "genres": genres})
    return RawLog(_raw_events(log, uid, iid), items, [ratings, movies])


def _code(rng: np.random.Generator, prefix: str, n: int) -> str:
    return prefix + "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), size=n))


def write_amazon(dir: str | Path, category: str = "Beauty", n_users: int = 30, n_items: int = 60,
                 seed: int = 0) -> RawLog:
    """Amazon 2014 `reviews_<category>_5.json.gz` (JSON lines, sorted by asin) and `meta_<category>.json.gz`.

    Metadata lines are Python dict literals (single quotes), as in the real dump. Timestamps are whole days,
    so equal timestamps are common. Item 0 has a non-ASCII title; item 1 has a description but no title;
    every 4th item has no description; the last item has neither title nor description (no text); two extra
    metadata lines are items nobody reviewed. `categories` is a list of paths; the loader keeps the first
    path without its root.
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 300)
    log = make_log(n_users, n_items, seed, t0=1_262_304_000, span=4 * 365 * DAY, day=True)
    uid = {u: _code(rng, "A", 13) for u in range(n_users)}
    iid = {i: _code(rng, "B00", 7) for i in range(n_items + 2)}
    log = log.assign(asin=[iid[i] for i in log["item"]]).sort_values("asin", kind="stable").reset_index(drop=True)
    reviews = dir / f"reviews_{category}_5.json.gz"
    with gzip.open(reviews, "wt", encoding="utf-8") as fh:
        for u, i, r, t, asin in log.itertuples(index=False):
            rec = {"reviewerID": uid[u], "asin": asin, "reviewerName": f"user {u}", "helpful": [0, 0],
                   "reviewText": "Works well.", "overall": float(r), "summary": "ok", "unixReviewTime": int(t),
                   "reviewTime": pd.Timestamp(int(t), unit="s").strftime("%m %d, %Y")}
            fh.write(json.dumps(rec) + "\n")
    subs = ["Skin Care", "Makeup", "Hair Care", "Fragrance"]
    titles, descs, genres = [], [], []
    meta = dir / f"meta_{category}.json.gz"
    with gzip.open(meta, "wt", encoding="utf-8") as fh:
        for i in range(n_items + 2):
            path = [category, str(rng.choice(subs)), f"Kind {int(rng.integers(0, 5))}"]
            d = {"asin": iid[i], "imUrl": f"http://ecx.images-amazon.com/images/I/{iid[i]}.jpg",
                 "salesRank": {category: int(rng.integers(1, 100_000))},
                 "categories": [path, [category, "Tools & Accessories"]]}
            title = "Crème Brûlée Lip Balm" if i == 0 else ("" if i in (1, n_items - 1) else _title(rng))
            desc = "" if (i % 4 == 3 or i == n_items - 1) else f"A {path[1].lower()} product with {_title(rng).lower()}."
            if title:
                d["title"] = title
            if desc:
                d["description"] = desc
            fh.write(repr(d) + "\n")
            titles.append(title)
            descs.append(desc)
            genres.append(path[1:])
    items = pd.DataFrame({"source_id": [iid[i] for i in range(n_items + 2)], "title": titles, "description": descs,
                          "year": pd.array([None] * (n_items + 2), dtype="Int64"), "genres": genres})
    return RawLog(_raw_events(log, uid, iid), items, [reviews, meta])


# --- running stage scripts outside DVC --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def stage_env() -> dict:
    """Environment for a stage script run by hand: this checkout's src/ on PYTHONPATH, offline, no DVC variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "PYTHONPATH"))}
    env.update({"PYTHONPATH": str(REPO_ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    return env


def run_stage_script(script: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python stages/<script> args...` in `cwd` (relative paths resolve there); returns the finished process."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages" / script), *args], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=timeout)


def temp_leftovers(root: Path) -> list[Path]:
    """Temporary siblings `atomic_path` writes (`.<name>.<pid>.<random>.tmp`) anywhere under `root`."""
    return sorted(p for p in Path(root).rglob(".*.tmp"))


# Runs the stage commands of dvc.yaml for `targets` and everything upstream, in DVC's order, inside one Python
# process (argv = [targets as JSON, seed]): the same scripts and arguments DVC would run, with the interpreter and
# the libraries started once (accelerate's process-wide state is reset between stages). Before each stage the
# global RNGs (random, numpy, torch) are reseeded from `seed`, so a stage that draws from them without seeding its
# own generators gives different results for different seeds.
_IN_PROCESS_RUNNER = """
import json, random, runpy, shlex, sys
import networkx as nx, numpy as np, torch
from accelerate.state import AcceleratorState
from dvc.repo import Repo

targets, seed = json.loads(sys.argv[1]), int(sys.argv[2])
with Repo(".") as repo:
    by_name = {s.addressing: s for s in repo.index.stages}
    order = []
    for target in targets:
        order += [s for s in nx.dfs_postorder_nodes(repo.index.graph, by_name[target]) if s not in order]
    commands = [(s.addressing, shlex.split(s.cmd)) for s in order]
for i, (name, argv) in enumerate(commands):
    assert argv[0] == "python", argv
    AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton, fixed by the first stage
    random.seed(seed + i)
    np.random.seed(seed + i)
    torch.manual_seed(seed + i)
    print(f"stage {name}", flush=True)
    sys.argv = argv[1:]
    runpy.run_path(argv[1], run_name="__main__")
"""


def start_stages_in_one_process(root: Path, env: dict, targets: list[str], seed: int) -> subprocess.Popen:
    """Start `_IN_PROCESS_RUNNER` in `root` (a tiny repo) with PYTHONHASHSEED=seed; output goes to root/../run.log."""
    with open(Path(root).parent / f"{Path(root).name}-run.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-c", _IN_PROCESS_RUNNER, json.dumps(targets), str(seed)], cwd=root,
                                env={**env, "PYTHONHASHSEED": str(seed)}, stdout=log, stderr=subprocess.STDOUT)
