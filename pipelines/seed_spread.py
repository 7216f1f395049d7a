"""The noise floor of the comparison: GPT systems retrained with other training seeds, as DVC experiments.

A bootstrap interval covers the sampling of test users, not the training run: two runs of the same configuration
with another `gpt.seed` (weight init, dropout, batch order; the data, the split and the validation sample stay
fixed) land at different test scores. This script queues those runs with DVC's own experiment queue and collects
their metrics into `metrics/seed_spread.json`, which the report reads to call a difference real only when it exceeds
the seed spread.

Each system is retrained at its chosen configuration (the learning rate the committed run picked on validation,
read from its `metrics/train_<stage>.json`), so an experiment is one training, not the whole grid:

    python pipelines/seed_spread.py queue --seeds 1 2      # dvc exp run --queue per (system, seed)
    dvc queue start -j 2                                   # two at a time, one thread each (OMP_NUM_THREADS=1)
    python pipelines/seed_spread.py collect --seeds 1 2    # dvc exp show --json -> metrics/seed_spread.json

The workspace's own run counts as the seed `gpt.seed` of params.yaml (42): the grid trains every configuration with
that seed, so its chosen model is the single-configuration run at that seed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sidrec.config import AblationsConfig, load_params  # noqa: E402
from sidrec.io import read_json, write_json  # noqa: E402

TRAIN_STAGE = {"baseline": "rqvae-gpt", "sasrec": "atomic-gpt", "plum-gpt": "plum-gpt", "lamia-gpt": "lamia-gpt"}
"""GPT system -> its train stage key (train@<key> or train_ablation@<key>, metrics/train_<key>.json)."""
ABLATIONS = AblationsConfig.ALLOWED["gpt"]
"""GPT systems built only when params.yaml `ablations.gpt` lists them: the experiment switches them on."""
METRICS = ("ndcg@10", "recall@10")


def exp_name(system: str, seed: int) -> str:
    return f"seed{seed}-{system}"


def queue_commands(root: Path, systems: list[str], seeds: list[int]) -> list[list[str]]:
    """One `dvc exp run --queue` per (system, seed): `-S gpt.seed`, the chosen lr as a one-point grid, the target."""
    cmds = []
    for system in systems:
        if system not in TRAIN_STAGE:
            raise SystemExit(f"error: --systems: {system!r} is not a GPT system; use {', '.join(TRAIN_STAGE)}")
        chosen = read_json(root / "metrics" / f"train_{TRAIN_STAGE[system]}.json").get("chosen", {})
        for seed in seeds:
            overrides = [f"gpt.seed={seed}"] + [f"gpt.search.{k}=[{v}]" for k, v in sorted(chosen.items())]
            target = f"evaluate@{system}"
            if system in ABLATIONS:
                overrides.append(f"++ablations.gpt.{system}={ABLATIONS[system]}")
                target = f"evaluate_ablation_gpt@{system}"
            cmd = ["dvc", "exp", "run", "--queue", "-n", exp_name(system, seed)]
            for o in overrides:
                cmd += ["-S", o]
            cmds.append(cmd + [target])
    return cmds


def _runs(node) -> list[dict]:
    """Every {name, data} record of `dvc exp show --json` (the workspace, baseline commits and experiments)."""
    out = []
    if isinstance(node, dict):
        if "data" in node and isinstance(node["data"], dict) and ("name" in node or "rev" in node):
            out.append(node)
        for v in node.values():
            out += _runs(v)
    elif isinstance(node, list):
        for v in node:
            out += _runs(v)
    return out


def experiment_metrics(show: list, system: str, name: str) -> dict | None:
    """The test metrics of `metrics/<system>.json` in the experiment named `name`, or None if it is absent."""
    for run in _runs(show):
        if run.get("name") != name:
            continue
        files = (run["data"].get("metrics") or {})
        m = (files.get(f"metrics/{system}.json") or {}).get("data")
        if m:
            return {k: float(m["test"][k]) for k in METRICS}
    return None


def spread(per_seed: dict[int, dict]) -> dict:
    """{seeds, ndcg@10: [...], recall@10: [...], <metric>_mean, <metric>_sd} over seeds (sd: sample sd, n - 1)."""
    seeds = sorted(per_seed)
    out: dict = {"seeds": seeds}
    for k in METRICS:
        vals = [per_seed[s][k] for s in seeds]
        out[k] = vals
        out[f"{k}_mean"] = statistics.fmean(vals)
        out[f"{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def collect(root: Path, systems: list[str], seeds: list[int], out: Path) -> dict:
    show = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True,
                                     check=True).stdout)
    base_seed = load_params(root / "params.yaml").gpt.seed
    result: dict = {"systems": {}, "bootstrap_unit": "training seed",
                    "command": "python pipelines/seed_spread.py queue --seeds " + " ".join(map(str, seeds))
                               + " && dvc queue start -j 2 && python pipelines/seed_spread.py collect"}
    for system in systems:
        m = read_json(root / "metrics" / f"{system}.json")
        per_seed = {base_seed: {k: float(m["test"][k]) for k in METRICS}}
        for seed in seeds:
            got = experiment_metrics(show, system, exp_name(system, seed))
            if got is None:
                raise SystemExit(f"error: experiment {exp_name(system, seed)} has no metrics/{system}.json; "
                                 "run `dvc queue status` and wait for it, or queue it again")
            per_seed[seed] = got
        result["systems"][system] = spread(per_seed)
    write_json(out, result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["queue", "collect"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds besides params.yaml's")
    ap.add_argument("--systems", nargs="+", default=["baseline", "sasrec"])
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--out", default="metrics/seed_spread.json")
    args = ap.parse_args()
    root = Path(args.root)
    if args.action == "queue":
        for cmd in queue_commands(root, args.systems, args.seeds):
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=root, check=True)
        print("queued; start them with: OMP_NUM_THREADS=1 dvc queue start -j 2")
    else:
        res = collect(root, args.systems, args.seeds, root / args.out)
        for system, s in res["systems"].items():
            print(f"{system}: ndcg@10 {s['ndcg@10_mean']:.4f} ± {s['ndcg@10_sd']:.4f} (sd over seeds {s['seeds']}), "
                  f"recall@10 {s['recall@10_mean']:.4f} ± {s['recall@10_sd']:.4f}")
        print(f"written to {root / args.out}")


if __name__ == "__main__":
    main()
