"""Stage prepare: raw files -> items.parquet, events.parquet (with split), split.json; metrics/data.json."""
import argparse
import logging
from pathlib import Path

from sidrec.config import load_params
from sidrec.data.loaders import load_raw_report
from sidrec.data.prepare import data_metrics, prepare
from sidrec.io import StageClock, atomic_path, setup_logging, write_json, write_parquet

log = logging.getLogger("stages.prepare")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", required=True, help="data/raw/<name>")
    ap.add_argument("--out", required=True, help="data/prepared")
    ap.add_argument("--metrics", required=True, help="metrics/data.json")
    args = ap.parse_args()
    setup_logging()
    clock = StageClock()
    p = load_params(args.params)
    # every check (the loaders' and prepare's) runs before anything is written: an error leaves no output
    events, meta, load_warnings = load_raw_report(p.dataset.name, args.raw)
    prep = prepare(events, meta, p.dataset, p.split, seed=p.seed)
    prep.split["dataset"] = p.dataset.name
    metrics = {**data_metrics(prep), "load_warnings": load_warnings}  # optional raw columns absent: rows affected
    out = Path(args.out)
    with atomic_path(out, is_dir=True) as tmp:  # the three files appear together or not at all
        write_parquet(tmp / "items.parquet", prep.items)
        write_parquet(tmp / "events.parquet", prep.events)
        write_json(tmp / "split.json", prep.split)
    m = clock.stamp(metrics)
    write_json(args.metrics, m)
    log.info("prepared %d users, %d items, %d events -> %s", m["users"], m["items"], m["events"], out)


if __name__ == "__main__":
    main()
