"""The ablation switch (params.yaml `ablations`): the DAG dvc.yaml resolves to with it off (the default) and on.

Off, DVC builds the default systems and their references only; on, the *_ablation foreach groups add the stages of
plum-gpt, lamia-gpt and rqvae-llm, with the commands, deps, params and output paths the default groups give a
system of the same kind. The DAG is read through DVC's API from copies of the repository's dvc.yaml and params.yaml.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "stages"))
from pipelines import ablations as switch  # noqa: E402
from pipelines.dag import stage_name  # noqa: E402
from sidrec.config import AblationsConfig, ParamsError, from_dict, load_params, read_yaml  # noqa: E402

ON = {"gpt": {"plum-gpt": "plum", "lamia-gpt": "lamia"}, "llm": {"rqvae-llm": "rqvae"}}
README_ON = ["++ablations.gpt={plum-gpt: plum, lamia-gpt: lamia}", "++ablations.llm={rqvae-llm: rqvae}"]

DEFAULT_STAGES = {
    "validate_params", "fetch", "prepare", "embed", "cooccur",
    "tokenize@rqvae", "tokenize@plum", "tokenize@atomic", "tokenize@lamia",
    "train@rqvae-gpt", "train@atomic-gpt", "train_popularity", "leakage", "llm_base", "palette",
    "cpt@plum", "cpt@lamia", "sft@plum", "sft@lamia",
    "evaluate@baseline", "evaluate@sasrec", "evaluate@popularity", "evaluate@content-knn", "evaluate@plum",
    "evaluate@lamia",
    "steer@plum", "steer@lamia", "steer@baseline", "steer@sasrec", "steer@popularity",
    "report",
}
# stage -> its outputs (today's paths) and the default stage of the same kind it must equal with `swap` applied
ABLATION_STAGES = {
    "train_ablation@plum-gpt": ({"models/gpt/plum", "plots/train_plum-gpt", "metrics/train_plum-gpt.json"},
                                "train@rqvae-gpt", {"rqvae": "plum"}),
    "train_ablation@lamia-gpt": ({"models/gpt/lamia", "plots/train_lamia-gpt", "metrics/train_lamia-gpt.json"},
                                 "train@rqvae-gpt", {"rqvae": "lamia"}),
    "evaluate_ablation_gpt@plum-gpt": ({"data/eval/plum-gpt.parquet", "metrics/plum-gpt.json"},
                                       "evaluate@baseline", {"baseline": "plum-gpt", "rqvae": "plum"}),
    "evaluate_ablation_gpt@lamia-gpt": ({"data/eval/lamia-gpt.parquet", "metrics/lamia-gpt.json"},
                                        "evaluate@baseline", {"baseline": "lamia-gpt", "rqvae": "lamia"}),
    "cpt_ablation@rqvae-llm": ({"models/llm/rqvae/cpt", "plots/cpt_rqvae", "metrics/cpt_rqvae.json"},
                               "cpt@plum", {"plum": "rqvae"}),
    "sft_ablation@rqvae-llm": ({"models/llm/rqvae/sft", "plots/sft_rqvae", "metrics/sft_rqvae.json"},
                               "sft@plum", {"plum": "rqvae"}),
    "evaluate_ablation_llm@rqvae-llm": ({"data/eval/rqvae-llm.parquet", "metrics/rqvae-llm.json"},
                                        "evaluate@plum", {"plum": "rqvae-llm", "sids/rqvae-llm": "sids/rqvae",
                                                          "llm/rqvae-llm": "llm/rqvae"}),
    "steer_ablation@rqvae-llm": ({"data/steer/rqvae-llm.parquet", "metrics/steer_rqvae-llm.json"},
                                 "steer@plum", {"plum": "rqvae-llm", "sids/rqvae-llm": "sids/rqvae",
                                                "llm/rqvae-llm": "llm/rqvae"}),
}
ABLATION_PATHS = {p for outs, _, _ in ABLATION_STAGES.values() for p in outs} | {
    "data/eval/plum-gpt.parquet", "data/eval/lamia-gpt.parquet", "data/eval/rqvae-llm.parquet"}


def make_repo(root: Path, overrides: list[str] | None = None) -> Path:
    """A DVC repo at `root` with the repository's dvc.yaml and params.yaml, `overrides` applied as `dvc exp run -S`
    applies them (DVC's own function)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, root / name)
    if overrides:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(root / "params.yaml", overrides)
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True).close()
    return root


def read_stages(root: Path) -> dict[str, dict]:
    """name -> {cmd, deps, params, outs, upstream} of every stage DVC resolves (paths relative to `root`)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    def rel(p: str) -> str:
        return Path(os.path.relpath(p, root)).as_posix()

    out = {}
    with Repo(str(root)) as repo:
        graph = repo.index.graph
        for s in repo.index.stages:
            out[stage_name(s, root)] = {
                "cmd": s.cmd,
                "deps": [rel(d.fs_path) for d in s.deps if not isinstance(d, ParamsDependency)],
                "params": sorted(k for d in s.deps if isinstance(d, ParamsDependency) for k in d.params),
                "outs": {rel(o.fs_path) for o in s.outs},
                "upstream": {stage_name(p, root) for p in graph.successors(s)},
            }
    return out


@pytest.fixture(scope="module")
def off(tmp_path_factory) -> dict[str, dict]:
    return read_stages(make_repo(tmp_path_factory.mktemp("off")))


@pytest.fixture(scope="module")
def on(tmp_path_factory) -> dict[str, dict]:
    root = make_repo(tmp_path_factory.mktemp("on"), README_ON)
    assert load_params(root / "params.yaml").ablations == AblationsConfig(**ON)
    return read_stages(root)


def test_the_repository_default_is_off():
    assert read_yaml(REPO_ROOT / "params.yaml")["ablations"] == {"gpt": {}, "llm": {}}
    assert load_params(REPO_ROOT / "params.yaml").ablations.systems == ()


def test_default_dag_is_the_compared_systems_and_references(off):
    assert set(off) == DEFAULT_STAGES
    written = {p for s in off.values() for p in s["outs"]}
    assert not written & ABLATION_PATHS
    report = off["report"]
    assert "--systems" not in report["cmd"] and "ablations" in report["params"]
    assert not set(report["deps"]) & ABLATION_PATHS, "the report may not need files of an ablation that is off"
    assert {"data/eval", "data/steer"} <= set(report["deps"])
    plots = (REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8").split("\nplots:\n", 1)[1]
    assert not any(p in plots for p in ("plum-gpt", "lamia-gpt", "cpt_rqvae", "sft_rqvae"))


def test_content_knn_and_popularity_read_no_semantic_ids(off):
    knn, pop = off["evaluate@content-knn"], off["evaluate@popularity"]
    assert "data/embeddings/content.npy" in knn["deps"] and "src/sidrec/models/content.py" in knn["deps"]
    for stage in (knn, pop, off["steer@popularity"]):
        assert "data/prepared/items.parquet" in stage["deps"]
        assert not any(d.startswith("data/sids/") for d in stage["deps"])
    assert "steer@content-knn" not in off


def test_ablations_on_add_exactly_their_stages_at_todays_paths(on):
    assert set(on) == DEFAULT_STAGES | set(ABLATION_STAGES)
    for name, (outs, _, _) in ABLATION_STAGES.items():
        assert on[name]["outs"] == outs, name
    assert {"evaluate_ablation_gpt@plum-gpt", "evaluate_ablation_gpt@lamia-gpt", "evaluate_ablation_llm@rqvae-llm",
            "steer_ablation@rqvae-llm"} <= on["report"]["upstream"], "the report runs after the ablations"
    assert on["cpt_ablation@rqvae-llm"]["upstream"] >= {"llm_base", "tokenize@rqvae"}
    assert "sft_ablation@rqvae-llm" in on["evaluate_ablation_llm@rqvae-llm"]["upstream"]
    assert "train_ablation@plum-gpt" in on["evaluate_ablation_gpt@plum-gpt"]["upstream"]


@pytest.mark.parametrize("name", sorted(ABLATION_STAGES))
def test_an_ablation_stage_is_its_default_twin_with_other_names(on, name):
    """Same command, deps and params as the default stage of the same kind: an ablation measures the tokenizer or
    the recommender, nothing else."""
    _, twin, swap = ABLATION_STAGES[name]

    def renamed(text: str) -> str:
        for a, b in swap.items():
            text = text.replace(a, b)
        return text

    ref = on[twin]
    assert on[name]["cmd"] == renamed(ref["cmd"])
    assert on[name]["deps"] == [renamed(d) for d in ref["deps"]]
    assert on[name]["params"] == ref["params"]


def test_ablation_stages_list_the_sidrec_modules_they_import(on):
    from test_dvc_deps import missing_deps

    problems = {n: missing_deps(REPO_ROOT, on[n]["cmd"], on[n]["deps"]) for n in ABLATION_STAGES}
    assert not any(problems.values()), problems


def test_report_lists_the_systems_of_the_dag(off, on):
    from report import dag_systems

    for stages, abl in ((off, AblationsConfig()), (on, AblationsConfig(**ON))):
        evaluated = {n.split("@", 1)[1] for n in stages if n.startswith("evaluate")}
        assert set(dag_systems(abl)) == evaluated
    assert dag_systems(AblationsConfig(**ON)) == ["baseline", "sasrec", "popularity", "content-knn", "plum-gpt",
                                                  "plum", "rqvae-llm", "lamia-gpt", "lamia"]
    assert dag_systems(AblationsConfig(gpt={"lamia-gpt": "lamia"})) == [
        "baseline", "sasrec", "popularity", "content-knn", "plum", "lamia-gpt", "lamia"]


def test_report_skips_the_llm_path_of_an_ablation_that_is_off(tmp_path):
    """An earlier run's metrics/cpt_rqvae.json stays in the workspace; only listed systems' LLM paths are reported."""
    import json

    from sidrec.evaluate.report import optional_sections

    cpt = {"heldout_ppl_before": 20.0, "heldout_ppl_after": 15.0, "heldout_ppl_sid_before": 90.0,
           "heldout_ppl_sid_after": 30.0}
    for tok in ("plum", "rqvae"):
        (tmp_path / f"cpt_{tok}.json").write_text(json.dumps(cpt))
    text = "\n".join(optional_sections(tmp_path, ["baseline", "plum"]))
    assert "| plum |" in text and "rqvae" not in text
    text = "\n".join(optional_sections(tmp_path, ["baseline", "plum", "rqvae-llm"]))
    assert "rqvae" in text


@pytest.mark.parametrize("value, match", [
    ({"gpt": {"plum-gtp": "plum"}, "llm": {}}, r"unknown ablation system `ablations.gpt.plum-gtp` "
                                                r"\(did you mean `plum-gpt`\? `ablations.gpt` allows plum-gpt: plum, "
                                                r"lamia-gpt: lamia"),
    ({"gpt": {}, "llm": {"plum-llm": "plum"}}, r"`ablations.llm` allows rqvae-llm: rqvae"),
    ({"gpt": {"rqvae-llm": "rqvae"}, "llm": {}}, r"rqvae-llm is an `ablations.llm` system"),
    ({"gpt": {"plum-gpt": "rqvae"}, "llm": {}}, r"`ablations.gpt.plum-gpt` is 'rqvae', but plum-gpt reads the plum "
                                                r"tokenizer; write `plum-gpt: plum`"),
    ({"gpt": {}, "llm": {"rqvae-llm": "plum"}}, r"write `rqvae-llm: rqvae`"),
    ({"gpt": None, "llm": {}}, r"`ablations.gpt` is None; write a mapping"),
    ({"gpt": {}}, r"missing key `ablations.llm`"),
    ({"gpt": {}, "llm": {}, "all": True}, r"unknown key `ablations.all`"),
])
def test_config_errors_are_one_line(value, match):
    with pytest.raises(ParamsError, match=match) as e:
        from_dict(AblationsConfig, value, "ablations")
    assert "\n" not in str(e.value)


def test_params_yaml_errors_name_the_key(tmp_path):
    text = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "params.yaml"
    bad.write_text(switch.switch(text, {"gpt": {"plum-gpt": "lamia"}, "llm": {}}), encoding="utf-8")
    with pytest.raises(ParamsError, match="ablations.gpt.plum-gpt"):
        load_params(bad)


def test_switch_script_round_trips_params_yaml(tmp_path):
    """`make repro ABLATIONS=1` / `=0`: only the two lines change, and off restores the file byte for byte, also
    after `dvc exp run -S` rewrote the section in block style."""
    from dvc.utils.hydra import apply_overrides

    original = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    p = tmp_path / "params.yaml"
    p.write_text(original, encoding="utf-8")
    run = [sys.executable, str(REPO_ROOT / "pipelines" / "ablations.py")]
    subprocess.run(run + ["1", "--params", str(p)], check=True, capture_output=True)
    assert load_params(p).ablations == AblationsConfig(**ON)
    changed = [(a, b) for a, b in zip(original.splitlines(), p.read_text().splitlines()) if a != b]
    assert len(changed) == 2 and all(a.split(":")[0] in ("  gpt", "  llm") for a, _ in changed)
    subprocess.run(run + ["off", "--params", str(p)], check=True, capture_output=True)
    assert p.read_text(encoding="utf-8") == original
    apply_overrides(p, [README_ON[0]])
    assert load_params(p).ablations.gpt == ON["gpt"]
    subprocess.run(run + ["0", "--params", str(p)], check=True, capture_output=True)
    assert load_params(p).ablations == AblationsConfig()
