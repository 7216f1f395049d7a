"""Stage steer@<system>: the steerability lens. Counterfactual cases (a history dominated by one genre, a request
for another, `steer.pairs`) through one system; systems that cannot read text answer with the constraint ignored.
-> metrics/steer_<system>.json and per-case data/steer/<system>.parquet."""
import logging

import numpy as np
import pandas as pd

from sidrec.evaluate.steer import steer_cases, steer_metrics
from sidrec.io import start_stage, write_json, write_parquet
from sidrec.models.popularity import popularity_scores
from sidrec.recommend import DecodeSettings
from sidrec.systems import load_recommender

log = logging.getLogger("stages.steer")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--system": None, "--model": "model directory",
                                           "--sids": "data/sids/<tokenizer>.parquet", "--events": None, "--items": None,
                                           "--embeddings": "data/embeddings/content.npy",
                                           "--out": "data/steer/<system>.parquet", "--metrics": None})
    events, items = pd.read_parquet(args.events), pd.read_parquet(args.items)
    cases = steer_cases(events, items, p.steer.pairs, p.steer.dominance, p.steer.max_users, p.eval.max_history,
                        p.seed)
    rec = load_recommender(args.system, args.model, args.sids,
                           DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen, p.eval.llm_dtype))
    reads = bool(getattr(rec, "reads_constraints", False))
    log.info("%s: %d steer cases over %d pairs (constraint %s)", args.system, len(cases), len(p.steer.pairs),
             "in the prompt" if reads else "ignored: the system cannot read text")
    topk = rec.recommend(cases, p.eval.k)[0] if len(cases) else np.zeros((0, p.eval.k), dtype=np.int64)
    per_case, metrics = steer_metrics(topk, cases, items["genres"], np.load(args.embeddings),
                                      popularity_scores(events, len(items), 0), p.eval.k, p.eval.bootstrap, p.seed)
    write_parquet(args.out, per_case)
    write_json(args.metrics, clock.stamp({"system": args.system, "reads_constraints": reads, **metrics}))
    log.info("%s: satisfied@%d %.3f (base rate %.3f) -> %s, %s", args.system, p.eval.k,
             metrics.get(f"satisfied@{p.eval.k}", float("nan")), metrics.get("base_rate", float("nan")),
             args.metrics, args.out)


if __name__ == "__main__":
    main()
