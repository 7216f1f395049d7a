"""Stage train@popularity: train-event counts with a recency window chosen on validation NDCG@10."""
import logging

import pandas as pd

from sidrec.data.sequences import make_cases
from sidrec.evaluate.accuracy import validation_score
from sidrec.io import read_json, start_stage, write_json
from sidrec.models.popularity import PopularityRecommender, popularity_scores

log = logging.getLogger("stages.train_popularity")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--events": None, "--split": None, "--items": None, "--out": None,
                                           "--metrics": None})
    events = pd.read_parquet(args.events)
    n = len(pd.read_parquet(args.items, columns=["item_id"]))
    cold = set(read_json(args.split)["cold_start_items"])
    valid = make_cases(events, "valid", p.eval.max_history, cold, p.eval.valid_cases, p.seed)
    scores, best = {}, None
    for w in p.popularity.window_days:
        rec = PopularityRecommender(popularity_scores(events, n, w), w, p.eval.exclude_seen)
        scores[f"window_{w}d"] = validation_score(rec, valid, p.eval.k)["score"]
        log.info("window %d days: valid ndcg@10 %.4f", w, scores[f"window_{w}d"])
        if best is None or scores[f"window_{w}d"] > scores[f"window_{best.window_days}d"]:
            best = rec
    best.save(args.out)
    write_json(args.metrics, clock.stamp({"valid_ndcg@10": scores[f"window_{best.window_days}d"],
                                          "chosen_window_days": best.window_days, "search": scores}))


if __name__ == "__main__":
    main()
