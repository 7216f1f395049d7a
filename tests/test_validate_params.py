"""Every params.yaml key is validated on every change: a typo anywhere is a one-line error with the fix.

A stage validates params.yaml only when it reruns, and it reruns only when a key it declares changed; the
validate_params stage declares the whole file, so `dvc repro` runs it (and fails on a misspelt key) after any edit.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from sidrec.config import Params, ParamsError, from_dict, load_params, read_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL = REPO_ROOT / "params.yaml"
SCRIPT = REPO_ROOT / "stages" / "validate_params.py"


@pytest.fixture
def raw() -> dict:
    return read_yaml(REAL)


def _sections(cls, node: dict, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(dotted section, its keys) of every dataclass-backed mapping in `node` ("" = the top level)."""
    out = [(prefix, [str(k) for k in node])]
    hints = typing.get_type_hints(cls)
    for key, value in node.items():
        tp = hints.get("lambda_" if key == "lambda" else key)
        if tp is not None and dataclasses.is_dataclass(tp) and isinstance(value, dict):
            out += _sections(tp, value, f"{prefix}.{key}" if prefix else key)
    return out


def _node(data: dict, dotted: str) -> dict:
    for part in filter(None, dotted.split(".")):
        data = data[part]
    return data


def _typo(key: str, keys: list[str]) -> str:
    """A misspelling of `key` that is not a key of its section: its last letter doubled."""
    typo = key + key[-1]
    assert typo not in keys
    return typo


def _error(data: dict) -> str:
    with pytest.raises(ParamsError) as ei:
        from_dict(Params, data)
    msg = str(ei.value)
    assert "\n" not in msg, f"multi-line message: {msg!r}"
    return msg


def test_real_params_yaml_passes():
    load_params(REAL)


def test_a_typo_of_any_key_in_any_section_is_a_one_line_error_with_the_fix(raw):
    """Every key of every section (the top level, dataset, ..., nested dataclass sections) misspelt in turn."""
    sections = _sections(Params, raw)
    assert {"", "plum", "gpt", "eval", "kubeflow", "palette"} <= {s for s, _ in sections}
    failures = []
    for section, keys in sections:
        for key in keys:
            data = copy.deepcopy(raw)
            node = _node(data, section)
            typo = _typo(key, keys)
            node[typo] = node.pop(key)
            dotted = f"{section}.{typo}" if section else typo
            fix = f"{section}.{key}" if section else key
            msg = _error(data)
            want = f"params: unknown key `{dotted}` (did you mean `{fix}`?); fix params.yaml"
            if msg != want:
                failures.append(f"{dotted}: {msg!r}, want {want!r}")
    assert not failures, "\n".join(failures)


def test_the_briefs_example(raw):
    data = copy.deepcopy(raw)
    data["plum"]["temprature"] = data["plum"].pop("temperature")
    assert _error(data) == ("params: unknown key `plum.temprature` (did you mean `plum.temperature`?); "
                            "fix params.yaml")


def test_an_extra_key_is_an_error_even_next_to_the_right_one(raw):
    data = copy.deepcopy(raw)
    data["rqvae"]["lr_"] = 0.01  # both rqvae.lr and the misspelt copy: the copy would be ignored silently
    assert "unknown key `rqvae.lr_` (did you mean `rqvae.lr`?)" in _error(data)


def test_an_unrelated_key_lists_the_known_keys(raw):
    data = copy.deepcopy(raw)
    data["lamia"]["zzzz"] = 1
    msg = _error(data)
    assert msg.startswith("params: unknown key `lamia.zzzz` (known keys here: pca_dim, n_init, pca_per_position)")
    assert msg.endswith("; fix params.yaml")


def test_lambda_suggests_the_params_yaml_key_not_the_field(raw):
    data = copy.deepcopy(raw)
    data["lambda_"] = data.pop("lambda")
    assert "(did you mean `lambda`?)" in _error(data)


def test_typo_in_gpt_search(raw):
    data = copy.deepcopy(raw)
    data["gpt"]["search"] = {"lrr": [0.001, 0.003]}
    assert _error(data) == "params: unknown key `gpt.search.lrr` (did you mean `gpt.search.lr`?); fix params.yaml"
    data["gpt"]["search"] = {"epochs": [1, 2]}  # a real gpt key, just not a searchable one
    assert "`gpt.search.epochs` is not searchable; use one of" in _error(data)


def test_typo_in_kubeflow_stage_overrides(raw):
    data = copy.deepcopy(raw)
    data["kubeflow"]["stages"]["train"] = {"memroy": "32G"}
    msg = _error(data)
    assert "`kubeflow.stages.train` has unknown key `memroy` (did you mean `memory`?); fix params.yaml" in msg


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 42\nplum: [1, 2\n", encoding="utf-8")
    with pytest.raises(ParamsError) as ei:
        load_params(bad)
    assert "\n" not in str(ei.value) and "is not valid YAML" in str(ei.value)


# --- the stage script ---------------------------------------------------------------------------------------------

def _run(params: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--params", str(params), "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_stage_writes_the_metrics_for_the_real_file(tmp_path):
    out = tmp_path / "metrics" / "params_check.json"
    res = _run(REAL, out)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(out.read_text(encoding="utf-8"))
    assert metrics["valid"] is True and metrics["keys_checked"] > 50 and metrics["top_level_keys"] == len(read_yaml(REAL))
    assert [p.name for p in out.parent.iterdir()] == ["params_check.json"]  # no temporary sibling left


@pytest.mark.parametrize("key, value, named", [
    ("plum.temprature", 0.5, "plum.temprature"),
    ("gpt.search", {"lrr": [0.001]}, "gpt.search.lrr"),
    ("seeed", 1, "seeed"),
])
def test_stage_exits_non_zero_with_one_line_for_a_bad_file(tmp_path, raw, key, value, named):
    data = copy.deepcopy(raw)
    *parents, last = key.split(".")
    _node(data, ".".join(parents))[last] = value
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    out = tmp_path / "params_check.json"
    res = _run(bad, out)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: params: unknown key `{named}` (did you mean") and "fix params.yaml" in lines[0]
    assert not out.exists()


def test_stage_fails_in_one_line_for_a_missing_file(tmp_path):
    res = _run(tmp_path / "nope.yaml", tmp_path / "out.json")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "not found" in res.stderr


# --- dvc.yaml -----------------------------------------------------------------------------------------------------

def test_the_stage_depends_on_the_whole_file_and_feeds_nothing():
    """params.yaml is a file dep (any change to it reruns the stage), no `params:` keys (which would make every
    section, `kubeflow` too, a Kubeflow pipeline parameter), and no stage downstream."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        stage = next(s for s in repo.index.stages if s.addressing == "validate_params")
        rel = [Path(d.fs_path).relative_to(REPO_ROOT).as_posix() for d in stage.deps]
        assert "params.yaml" in rel and "stages/validate_params.py" in rel and "src/sidrec/config.py" in rel
        assert not [d for d in stage.deps if isinstance(d, ParamsDependency)]
        assert [Path(o.fs_path).relative_to(REPO_ROOT).as_posix() for o in stage.outs] == ["metrics/params_check.json"]
        assert not list(repo.index.graph.predecessors(stage)), "a stage depends on validate_params"
        assert stage.cmd.split() == ["python", "stages/validate_params.py", "--params", "params.yaml",
                                     "--out", "metrics/params_check.json"]
