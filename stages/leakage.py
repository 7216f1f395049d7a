"""Stage leakage: check what was built from interactions (the GPT's training windows, the CPT and SFT corpora,
co-occurrence pairs, popularity counts, the prepared split) against the raw timestamps; metrics/leakage.json, or
exit 1 with a one-line error naming the leaking artifact and an example."""
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.data.leakage import check_leakage
from sidrec.data.loaders import DataError, load_raw
from sidrec.io import read_json, start_stage, write_json

log = logging.getLogger("stages.leakage")


def load_popularity(path: Path) -> tuple[np.ndarray, int]:
    """models/popularity as written by `PopularityRecommender.save`: (scores, window_days)."""
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return np.load(path / "scores.npy", allow_pickle=False), int(cfg.get("window_days", 0))


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--raw": "data/raw/<name>", "--prepared": "data/prepared",
                                           "--pairs": "data/pairs.parquet", "--popularity": "models/popularity",
                                           "--metrics": "metrics/leakage.json"})
    prepared = Path(args.prepared)
    split = read_json(prepared / "split.json")
    if split.get("dataset", p.dataset.name) != p.dataset.name:
        raise DataError(f"leakage: {prepared}/split.json is for {split['dataset']!r}, params say dataset.name "
                        f"{p.dataset.name!r}; rerun prepare")
    raw_events, _ = load_raw(p.dataset.name, args.raw)
    report = check_leakage(raw_events, pd.read_parquet(prepared / "items.parquet"),
                           pd.read_parquet(prepared / "events.parquet"), split, p,
                           pairs=pd.read_parquet(args.pairs), popularity=load_popularity(Path(args.popularity)))
    write_json(args.metrics, clock.stamp(report))
    log.info("no leakage: %s", ", ".join(f"{k} {v['violations']}" for k, v in report.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
