"""Benchmark: how much wider a per-user interval gets when a system is evaluated on a sample of the test cases.

LLM evaluation decodes every test case (~15 min per LLM system on one core). A seeded, user-stratified sample
(every test user keeps ceil(f * its cases) of its cases, drawn at random) would cut that by 1/f, at the price of a
wider interval. This script measures that price on an evaluation already run: from `data/eval/<system>.parquet`
it computes the per-user bootstrap interval of NDCG@10 on all cases and on samples of each fraction (several sample
seeds), and prints the width ratio. Not a test: it prints figures.

    python bench/eval_sample.py --eval data/eval/plum.parquet data/eval/lamia.parquet --fractions 0.25 0.5
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sidrec.evaluate.metrics import bootstrap_ci, ndcg_at_k  # noqa: E402


def stratified_sample(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices: each user keeps ceil(fraction * its cases) of its cases, drawn without replacement."""
    rng = np.random.default_rng(seed)
    keep = []
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        keep.append(rng.choice(rows, size=math.ceil(fraction * rows.size), replace=False))
    return np.sort(np.concatenate(keep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", nargs="+", required=True, help="per-case files data/eval/<system>.parquet")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--sample-seeds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    for path in args.eval:
        df = pd.read_parquet(path)
        v = ndcg_at_k(df["rank"].to_numpy(), args.k)
        users = df["user_id"].to_numpy()
        lo, hi = bootstrap_ci(v, users, n_boot=args.n_boot, seed=42)
        print(f"{path}: {len(df)} cases from {np.unique(users).size} users, ndcg@{args.k} {v.mean():.4f} "
              f"[{lo:.4f}, {hi:.4f}] width {hi - lo:.4f}")
        for f in args.fractions:
            widths, means, sizes = [], [], []
            for s in range(args.sample_seeds):
                idx = stratified_sample(users, f, seed=s)
                a, b = bootstrap_ci(v[idx], users[idx], n_boot=args.n_boot, seed=42)
                widths.append(b - a)
                means.append(v[idx].mean())
                sizes.append(idx.size)
            ratio = np.mean(widths) / (hi - lo)
            print(f"  fraction {f:.2f}: {np.mean(sizes):.0f} cases, width {np.mean(widths):.4f} "
                  f"(x{ratio:.3f} of all cases; <= 1.10 allowed), mean ndcg@{args.k} over sample seeds "
                  f"{np.mean(means):.4f} (sd {np.std(means, ddof=1):.4f})")


if __name__ == "__main__":
    main()
