"""Command line: `python -m sidrec recommend --system baseline --history "Toy Story,Aladdin" -k 10`.

LLM systems (plum, rqvae-llm, lamia) also take `--constraint "Horror"` (the prompt asks for a Horror movie); systems that
cannot read text refuse it rather than silently ignore it.

Titles (case-insensitive, exact or unique substring) or item ids in; titles and scores out. Paths default to the
DVC outputs of the pipeline run in the current directory; a missing one is the stages' one-line `error: ...` naming
the paths and the fix (run `dvc repro`, or point --root at the repository), not a traceback.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import pandas as pd

from sidrec.data.loaders import DataError
from sidrec.io import _user_error_hook
from sidrec.recommend import DecodeSettings
from sidrec.systems import SYSTEMS, load_recommender


def system_paths(system: str, root: Path) -> tuple[Path, Path]:
    """(model dir, sids parquet) of a trained system, as laid out by dvc.yaml."""
    tok, kind = SYSTEMS[system]
    if kind == "content":  # content-knn: the content embeddings are its whole model
        return root / "data" / "embeddings" / "content.npy", root / "data" / "prepared" / "items.parquet"
    model = root / "models" / {"popularity": "popularity", "gpt": f"gpt/{tok}", "llm": f"llm/{tok}/sft"}[kind]
    return model, root / "data" / "sids" / f"{tok or 'atomic'}.parquet"


def require_outputs(system: str, root: Path) -> None:
    """Every pipeline output `recommend --system <system>` reads exists under `root`, or one DataError naming the
    missing ones and the fix."""
    model, sids = system_paths(system, root)
    needed = [root / "data" / "prepared" / "items.parquet", model] + ([sids] if SYSTEMS[system][0] else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DataError(f"--system {system}: {', '.join(missing)} not found (outputs of the DVC pipeline); run "
                        "`dvc repro` first, or pass --root <the repository that ran it>")


def resolve_items(history: str, items: pd.DataFrame) -> list[int]:
    """Comma-separated titles or item ids -> item ids; one clear error for anything unknown or ambiguous."""
    titles = items["title"].str.lower()
    out = []
    for raw in (h.strip() for h in history.split(",")):
        if not raw:
            continue
        if raw.isdigit() and int(raw) < len(items):
            out.append(int(raw))
            continue
        exact = items.index[titles == raw.lower()]
        part = items.index[titles.str.contains(raw.lower(), regex=False)]
        hits = exact if len(exact) else part
        if len(hits) == 1:
            out.append(int(items.loc[hits[0], "item_id"]))
            continue
        if len(hits) > 1:
            names = ", ".join(items.loc[hits[:5], "title"])
            raise SystemExit(f"--history: {raw!r} matches {len(hits)} items ({names}, ...); write the full title or an item id")
        close = difflib.get_close_matches(raw, items["title"].tolist(), n=3)
        raise SystemExit(f"--history: no item titled {raw!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if not out:
        raise SystemExit("--history: give at least one title or item id, comma-separated")
    return out


def recommend_cmd(args) -> None:
    root = Path(args.root)
    require_outputs(args.system, root)
    items = pd.read_parquet(root / "data" / "prepared" / "items.parquet")
    history = resolve_items(args.history, items)
    model, sids = system_paths(args.system, root)
    rec = load_recommender(args.system, str(model), str(sids), DecodeSettings(beam_size=max(10, args.k)))
    if args.constraint and not getattr(rec, "reads_constraints", False):
        raise SystemExit(f"--constraint: system {args.system} cannot read text; use an LLM system (plum, rqvae-llm, lamia)")
    cases = pd.DataFrame({"history": [history[-args.max_history:]], "seen": [history],
                          "constraint": [args.constraint or None]})
    top, scores = rec.recommend(cases, args.k)
    print(f"history: {' | '.join(items.loc[history, 'title'])}" + (f"  [constraint: {args.constraint}]"
                                                                    if args.constraint else ""))
    for rank, (i, s) in enumerate(zip(top[0], scores[0]), 1):
        if i >= 0:
            print(f"{rank:>2}. {items.loc[i, 'title']}  (item {i}, score {s:.3f})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="sidrec", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recommend", help="top-k items for a history")
    r.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    r.add_argument("--history", required=True, help='comma-separated titles or item ids, e.g. "Toy Story,Aladdin"')
    r.add_argument("-k", type=int, default=10)
    r.add_argument("--constraint", help='LLM systems only: e.g. "Horror" -> "Suggest a Horror movie"')
    r.add_argument("--max-history", type=int, default=20)
    r.add_argument("--root", default=".", help="repository root holding data/ and models/")
    args = ap.parse_args(argv)
    sys.excepthook = _user_error_hook  # what the stages' setup_logging installs, without their INFO log format
    recommend_cmd(args)


if __name__ == "__main__":
    sys.exit(main())
