"""Stage cooccur: co-occurrence pairs from train-event sessions (+ held-out pairs from validation events)."""
import argparse
import logging

import pandas as pd

from sidrec.config import load_params
from sidrec.data.cooccur import mine_pairs
from sidrec.io import StageClock, setup_logging, write_json, write_parquet

log = logging.getLogger("stages.cooccur")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--events", required=True)
    ap.add_argument("--out", required=True, help="data/pairs.parquet")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    setup_logging()
    clock = StageClock()
    p = load_params(args.params).plum
    pairs, metrics = mine_pairs(pd.read_parquet(args.events), p.session_gap, p.window, p.min_count)
    write_parquet(args.out, pairs)
    write_json(args.metrics, clock.stamp(metrics))
    log.info("%d training pairs over %d items, %d held-out pairs -> %s", metrics["pairs_train"],
             metrics["items_covered_train"], metrics["pairs_heldout"], args.out)


if __name__ == "__main__":
    main()
