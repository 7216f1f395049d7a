"""`python -m sidrec recommend` without the pipeline's outputs: the stages' one-line `error: ...` (the missing paths
and the fix), exit status 1, no traceback. (A run against a reproduced pipeline: tests/test_pipeline_full.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO_ROOT


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1",
           "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "sidrec", "recommend", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("system, missing", [
    ("baseline", ["data/prepared/items.parquet", "models/gpt/rqvae", "data/sids/rqvae.parquet"]),
    ("popularity", ["data/prepared/items.parquet", "models/popularity"]),
])
def test_missing_outputs_are_one_error_line(tmp_path, system, missing) -> None:
    res = run_cli(tmp_path, "--system", system, "--history", "Toy Story")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and res.stdout == ""
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: --system {system}: ") and "Traceback" not in res.stderr
    assert all(p in lines[0] for p in missing)
    assert "run `dvc repro` first" in lines[0] and "--root" in lines[0]


def test_only_the_missing_outputs_are_named(tmp_path) -> None:
    """With data/prepared/ in place (another --root) the message names the model and SIDs, not the items."""
    items = tmp_path / "repo" / "data" / "prepared" / "items.parquet"
    items.parent.mkdir(parents=True)
    pd.DataFrame({"item_id": [0], "title": ["Toy Story"]}).to_parquet(items)
    res = run_cli(tmp_path, "--system", "plum", "--history", "Toy Story", "--root", "repo")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "repo/models/llm/plum/sft" in lines[0] and "repo/data/sids/plum.parquet" in lines[0]
    assert "items.parquet" not in lines[0]
