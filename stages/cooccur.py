"""Stage cooccur: co-occurrence pairs from train-event sessions (+ held-out pairs from validation events)."""
import logging

import pandas as pd

from sidrec.data.cooccur import mine_pairs
from sidrec.io import start_stage, write_json, write_parquet

log = logging.getLogger("stages.cooccur")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--events": None, "--out": "data/pairs.parquet", "--metrics": None})
    c = p.plum
    pairs, metrics = mine_pairs(pd.read_parquet(args.events), c.session_gap, c.window, c.min_count)
    write_parquet(args.out, pairs)
    write_json(args.metrics, clock.stamp(metrics))
    log.info("%d training pairs over %d items, %d held-out pairs -> %s", metrics["pairs_train"],
             metrics["items_covered_train"], metrics["pairs_heldout"], args.out)


if __name__ == "__main__":
    main()
