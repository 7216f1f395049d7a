"""A stage imports the `sidrec` of the checkout it runs in, not the editable install's.

`dvc exp run --queue` runs stages in a temporary checkout of the experiment's commit while `pip install -e .` points
`import sidrec` at the workspace's src/: without `stages/sidrec` (a link to ../src/sidrec, first on the stage
script's sys.path) a queued experiment would run whatever the workspace holds at that moment (found when a params
key added in the workspace failed two queued lambda runs).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_stages_link_to_the_checkouts_own_src():
    link = REPO_ROOT / "stages" / "sidrec"
    assert link.is_symlink() and os.readlink(link) == "../src/sidrec"


def test_a_stage_in_another_checkout_imports_that_checkouts_sidrec(tmp_path):
    for name in ("stages", "src"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "stages" / "probe.py").write_text("import sidrec\nprint(sidrec.__file__)\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "stages/probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out).resolve().is_relative_to(tmp_path.resolve()), out
