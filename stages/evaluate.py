"""Stage evaluate@<system>: the shared test cases through one system; metrics/<system>.json and the per-case
results data/eval/<system>.parquet (for paired tests in the report). A semantic-ID system first chooses its
cold-start fill's epsilon on validation (sidrec.evaluate.cold); the test lists are scored with and without it."""
import logging
from dataclasses import replace

import pandas as pd

from sidrec.data.sequences import make_cases
from sidrec.evaluate.accuracy import evaluate
from sidrec.evaluate.cold import choose_epsilon, selection_cases, unconstrained_cold
from sidrec.io import read_json, start_stage, write_json, write_parquet
from sidrec.recommend import DecodeSettings
from sidrec.systems import decodes_sids, load_recommender

log = logging.getLogger("stages.evaluate")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--system": None, "--model": "model directory",
                                           "--sids": "data/sids/<tokenizer>.parquet", "--events": None, "--split": None,
                                           "--items": None, "--out": "data/eval/<system>.parquet", "--metrics": None})
    events = pd.read_parquet(args.events)
    n = len(pd.read_parquet(args.items, columns=["item_id"]))
    cold = set(read_json(args.split)["cold_start_items"])
    cases = make_cases(events, "test", p.eval.max_history, cold, p.eval.max_cases, p.seed)
    decode = DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen, p.eval.llm_dtype,
                            cold_items=tuple(sorted(cold)))
    rec = load_recommender(args.system, args.model, args.sids, decode)
    selection = {"chosen": 0.0, "grid": [0.0], "applies": False}
    if decodes_sids(args.system):  # the cold-start fill's epsilon, chosen on validation (sidrec.evaluate.cold)
        valid, counts = selection_cases(events, p.eval.max_history, cold, p.eval.valid_cases, p.seed)
        log.info("%s: choosing the cold-start epsilon on %d validation cases (%d cold-target)", args.system,
                 len(valid), counts["cold"])
        selection = {**choose_epsilon(rec, valid, counts, p.eval.epsilon_grid(args.system), p.eval.k,
                                      p.eval.cold_max_loss), "applies": True}
        rec.decode = replace(decode, cold_epsilon=selection["chosen"])
    log.info("%s: %d test cases (%d cold-start), cold-start epsilon %.2f", args.system, len(cases),
             int(cases["cold"].sum()), selection["chosen"])
    per_case, metrics = evaluate(rec, cases, n, p.eval.k, p.eval.bootstrap, p.seed, p.eval.invalid_cases,
                                 cold_items=cold)
    metrics["cold_epsilon"] = selection
    if decodes_sids(args.system):  # does the model reach cold items by itself? (no trie, no fill)
        metrics["cold_start_unconstrained"] = unconstrained_cold(rec, cases, cold, p.eval.k)
    write_parquet(args.out, per_case)
    write_json(args.metrics, clock.stamp({"system": args.system, **metrics}))
    log.info("%s: ndcg@10 %.4f recall@10 %.4f, cold-start recall@10 %.4f (epsilon %.2f) -> %s", args.system,
             metrics["test"]["ndcg@10"], metrics["test"]["recall@10"], metrics["cold_start"].get("recall@10", 0.0),
             selection["chosen"], args.metrics)

if __name__ == "__main__":
    main()
