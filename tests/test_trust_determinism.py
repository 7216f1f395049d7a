"""Determinism: the same params twice give bitwise-identical semantic IDs, models and per-case results, and the same
metrics within 1e-6, on a tiny config.

The two runs differ in everything that must not matter: the repository's absolute path, PYTHONHASHSEED (set and
dict orders of strings), the state of the global random generators when each stage starts (reseeded differently
before every stage), and the two runs go side by side on the same cores. Each run executes the stage commands of
dvc.yaml in DVC's order inside one interpreter (`fixtures.start_stages_in_one_process`), from raw data through the
three tokenizers to a trained, evaluated GPT recommender and the popularity baseline.

What is allowed to differ, and why (everything else is compared bitwise):
- `runtime_s`, `peak_rss_mb` in metrics/*.json: wall-clock time and memory of the stage;
- the `timestamp` column of dvclive's plots/**/*.tsv: wall-clock time of each logged step.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from fixtures import start_stages_in_one_process

TARGETS = ["evaluate@baseline", "tokenize@plum", "tokenize@atomic", "evaluate@popularity"]
# one grid point (dropout 0.1 keeps the RNG in play), bf16 autocast as in params.yaml, fewer RQ-VAE epochs
TINY = {"gpt": {"search": {"lr": [0.001]}, "dropout": 0.1, "mixed_precision": "bf16"}, "rqvae": {"epochs": 8}}
COMPARED = ("data", "models", "metrics", "plots")
VOLATILE_KEYS = {"runtime_s", "peak_rss_mb"}
TOLERANCE = 1e-6


def outputs(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for d in COMPARED for p in sorted((root / d).rglob("*")) if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def json_diffs(a, b, where: str = "") -> list[str]:
    """Paths where two JSON values differ by more than TOLERANCE (numbers) or at all (anything else)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k not in VOLATILE_KEYS for d in json_diffs(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diffs(x, y, f"{where}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE
        return [] if same else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def tsv_without_timestamps(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "timestamp"} for row in csv.DictReader(fh, delimiter="\t")]


def test_same_params_twice_give_the_same_results(make_tiny_repo):
    repos = [make_tiny_repo(params=TINY), make_tiny_repo(params=TINY)]
    runs = [start_stages_in_one_process(r.root, r.env, TARGETS, seed) for r, seed in zip(repos, (1, 2))]
    for r, proc in zip(repos, runs):
        log = r.root.parent / f"{r.root.name}-run.log"
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    a, b = (outputs(r.root) for r in repos)
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    assert {"data/sids/rqvae.parquet", "data/sids/plum.parquet", "models/gpt/rqvae/model.safetensors",
            "data/eval/baseline.parquet", "metrics/baseline.json"} <= set(a)

    diffs = []
    for rel in sorted(a):
        if rel.endswith(".json") and rel.startswith(("metrics/", "plots/")):
            diffs += [f"{rel}{d}" for d in json_diffs(*(json.loads(x[rel].read_text()) for x in (a, b)))]
        elif rel.endswith(".tsv") and rel.startswith("plots/"):
            diffs += [rel] if tsv_without_timestamps(a[rel]) != tsv_without_timestamps(b[rel]) else []
        elif sha256(a[rel]) != sha256(b[rel]):
            diffs.append(f"{rel}: bytes differ")
    assert diffs == [], "nondeterministic outputs:\n" + "\n".join(diffs)

    for tok in ("rqvae", "plum", "atomic"):  # the IDs themselves, decoded, not only their files
        codes = [pd.read_parquet(r.root / f"data/sids/{tok}.parquet")["codes"].map(tuple).tolist() for r in repos]
        assert codes[0] == codes[1] and len(set(codes[0])) == len(codes[0])
