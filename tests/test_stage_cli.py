"""`sidrec.io.start_stage`, the start of every stage script but report's: the command line (`--params` + required
flags), logging, the clock and the validated params.yaml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sidrec.config import Params
from sidrec.io import StageClock, start_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAGS = {"--events": None, "--out": "data/pairs.parquet", "--model-dir": {"help": "models/x"},
         "--method": {"choices": ["a", "b"]}}


@pytest.fixture(autouse=True)
def _keep_excepthook(monkeypatch):
    """start_stage installs the stages' user-error hook; put the test process's own back afterwards."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


def test_parsed_values_params_and_clock(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # --params defaults to ./params.yaml
    args, p, clock = start_stage("doc", FLAGS, argv=["--events", "e.parquet", "--out", "o", "--model-dir", "m",
                                                      "--method", "b"])
    assert vars(args) == {"params": "params.yaml", "events": "e.parquet", "out": "o", "model_dir": "m",
                          "method": "b"}
    assert isinstance(p, Params) and p.seed == yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["seed"]
    assert isinstance(clock, StageClock) and set(clock.stamp({"a": 1})) == {"a", "runtime_s", "peak_rss_mb"}


def test_params_flag_is_read(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["seed"] = raw["seed"] + 7
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(raw))
    args, p, _ = start_stage(None, {"--out": None}, argv=["--params", str(path), "--out", "o"])
    assert args.params == str(path) and p.seed == raw["seed"]


@pytest.mark.parametrize("argv, message", [
    (["--events", "e", "--model-dir", "m", "--method", "a"], "the following arguments are required: --out"),
    (["--events", "e", "--out", "o", "--model-dir", "m", "--method", "c"], "argument --method: invalid choice: 'c'"),
])
def test_bad_command_line_is_argparses_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        start_stage("doc", FLAGS, argv=argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("usage: ") and message in err


def test_a_stage_script_keeps_its_interface():
    """`--help` shows the stage's docstring and its flags with their help; a missing flag is named."""
    script = REPO_ROOT / "stages" / "fetch.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "Stage fetch: raw files of `dataset.name`" in out
    assert "--params PARAMS" in out and "--out OUT" in out and "data/raw/<name>" in out
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert res.returncode == 2 and "the following arguments are required: --out" in res.stderr


def test_bad_params_is_one_error_line(tmp_path):
    """A stage run against a params.yaml with a misspelt key fails with the one-line `error: params: ...`."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["sede"] = raw.pop("seed")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / "validate_params.py"), "--out", "x.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.startswith("error: params") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
