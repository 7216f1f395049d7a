"""Stage report: per-system metrics + per-case results (+ steer cases, LLM-stage metrics, seed spread) ->
reports/comparison.md and bar charts with per-user bootstrap CIs; listed systems that were not run get "not run"
rows.

The systems are those of the DAG: the default ones and the ablations switched on in params.yaml (`ablations`), so the
outputs an earlier run of an ablation left in the workspace are not reported once it is off."""
import argparse
import logging

from sidrec.config import load_params
from sidrec.evaluate.report import build_report
from sidrec.io import setup_logging

log = logging.getLogger("stages.report")

DEFAULT_SYSTEMS = ("baseline", "sasrec", "popularity", "content-knn", "plum", "lamia")
"""The systems dvc.yaml always builds (its `evaluate` foreach; tests/test_ablations.py keeps the two in step)."""
ORDER = ("baseline", "sasrec", "popularity", "content-knn", "plum-gpt", "plum", "rqvae-llm", "lamia-gpt", "lamia")
"""Report order: the references, then each tokenizer's systems (the GPT ablation next to its LLM system)."""


def dag_systems(ablations) -> list[str]:
    """The default systems and the ablations switched on (`AblationsConfig`), in report order."""
    on = set(DEFAULT_SYSTEMS) | set(ablations.systems)
    return [s for s in ORDER if s in on] + sorted(on - set(ORDER))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml", help="reads seed, eval.k, eval.bootstrap and ablations")
    ap.add_argument("--metrics-dir", required=True, help="metrics (holds <system>.json, steer_*.json, sid_*.json)")
    ap.add_argument("--eval-dir", required=True, help="data/eval (holds <system>.parquet per-case results)")
    ap.add_argument("--systems", help="comma-separated systems to report, e.g. baseline,sasrec,popularity (default: "
                    "the default systems and the ablations on in params.yaml); those without metrics/eval files "
                    "are reported as not run")
    ap.add_argument("--baseline", default="baseline", help="system the paired comparison is made against")
    ap.add_argument("--steer-dir", help="data/steer (holds <system>.parquet steer cases); with --items")
    ap.add_argument("--items", help="data/prepared/items.parquet (titles and genres of the steerability examples)")
    ap.add_argument("--seed-spread", help="metrics/seed_spread.json (test score per training seed); absent file = "
                    "seed spread: not measured")
    ap.add_argument("--out", required=True, help="reports/comparison.md")
    ap.add_argument("--plots-dir", required=True, help="reports/figures")
    args = ap.parse_args()
    setup_logging()
    p = load_params(args.params)
    if args.systems is None:
        systems = dag_systems(p.ablations)
    else:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        if not systems:
            ap.error("--systems names no system")
    build_report(args.metrics_dir, args.eval_dir, systems, args.out, args.plots_dir,
                 baseline=args.baseline, k=p.eval.k, n_boot=p.eval.bootstrap, seed=p.seed,
                 steer_dir=args.steer_dir, items=args.items, seed_spread=args.seed_spread)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
