"""Stage evaluate@<system>: the shared test cases through one system; metrics/<system>.json and the per-case
results data/eval/<system>.parquet (for paired tests in the report)."""
import argparse
import logging

import pandas as pd

from sidrec.config import load_params
from sidrec.data.sequences import make_cases
from sidrec.evaluate.accuracy import evaluate
from sidrec.io import StageClock, read_json, setup_logging, write_json, write_parquet
from sidrec.recommend import DecodeSettings
from sidrec.systems import load_recommender

log = logging.getLogger("stages.evaluate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--system", required=True)
    ap.add_argument("--model", required=True, help="model directory")
    ap.add_argument("--sids", required=True, help="data/sids/<tokenizer>.parquet")
    ap.add_argument("--events", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--items", required=True)
    ap.add_argument("--out", required=True, help="data/eval/<system>.parquet")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    setup_logging()
    clock = StageClock()
    p = load_params(args.params)
    events = pd.read_parquet(args.events)
    n = len(pd.read_parquet(args.items, columns=["item_id"]))
    cold = set(read_json(args.split)["cold_start_items"])
    cases = make_cases(events, "test", p.eval.max_history, cold, p.eval.max_cases, p.seed)
    decode = DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen, p.eval.llm_dtype)
    rec = load_recommender(args.system, args.model, args.sids, decode)
    log.info("%s: %d test cases (%d cold-start)", args.system, len(cases), int(cases["cold"].sum()))
    per_case, metrics = evaluate(rec, cases, n, p.eval.k, p.eval.bootstrap, p.seed, p.eval.invalid_cases)
    write_parquet(args.out, per_case)
    write_json(args.metrics, clock.stamp({"system": args.system, **metrics}))
    log.info("%s: ndcg@10 %.4f recall@10 %.4f -> %s", args.system, metrics["test"]["ndcg@10"],
             metrics["test"]["recall@10"], args.metrics)


if __name__ == "__main__":
    main()
