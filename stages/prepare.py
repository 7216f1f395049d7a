"""Stage prepare: raw files -> items.parquet, events.parquet (with split), split.json; metrics/data.json."""
import logging
from pathlib import Path

from sidrec.data.loaders import load_raw_report
from sidrec.data.prepare import data_metrics, prepare
from sidrec.io import atomic_path, start_stage, write_json, write_parquet

log = logging.getLogger("stages.prepare")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--raw": "data/raw/<name>", "--out": "data/prepared",
                                           "--metrics": "metrics/data.json"})
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
