"""The Kubeflow pipeline compiled from dvc.yaml (pipelines/kubeflow.py) and the step runner (pipelines/step.py).

The committed pipelines/kubeflow.yaml must be what the generator makes of today's dvc.yaml and params.yaml; its DAG
must be DVC's DAG (same stages, same edges, same commands); it reloads with kfp's component loader; resources follow
`kubeflow:` in params.yaml. A synthetic repo exercises foreach, matrix, interpolation, a Python-keyword param and
a directory dep over several producers. Two compiled steps run for real in a tiny repo with kfp's placeholders
resolved by hand (no cluster here), passing artifacts and a partial dict parameter.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, create_tiny_repo

sys.path.insert(0, str(REPO_ROOT))
from pipelines import dag, kubeflow, step  # noqa: E402

COMMITTED = REPO_ROOT / "pipelines" / "kubeflow.yaml"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> str:
    """pipelines/kubeflow.yaml as the generator makes it now from the repository's dvc.yaml and params.yaml."""
    out = tmp_path_factory.mktemp("kfp") / "kubeflow.yaml"
    return kubeflow.compile_pipeline(REPO_ROOT, out).read_text(encoding="utf-8")


def load(text: str) -> dict:
    return yaml.safe_load(text)


def dag_of(spec: dict) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(task -> DVC stage name, {(producer stage, consumer stage)}) of a compiled pipeline."""
    tasks = spec["root"]["dag"]["tasks"]
    stage = {t: body["taskInfo"]["name"] for t, body in tasks.items()}
    edges = set()
    for t, body in tasks.items():
        producers = set(body.get("dependentTasks", []))
        for art in body.get("inputs", {}).get("artifacts", {}).values():
            producers.add(art["taskOutputArtifact"]["producerTask"])
        edges |= {(stage[p], stage[t]) for p in producers}
    return stage, edges


def dvc_dag(root: Path) -> tuple[dict[str, object], set[tuple[str, str]]]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = {s: dag.stage_name(s, Path(root)) for s in repo.index.stages}
        stages = {name[s]: s for s in name}
        edges = {(name[b], name[a]) for a, b in repo.index.graph.edges}  # dvc: consumer -> producer
    return stages, edges


def executor_args(spec: dict, task: str) -> list[str]:
    label = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]["args"]


def flag_values(args: list[str], flag: str, width: int) -> list[list[str]]:
    return [args[i + 1:i + 1 + width] for i, a in enumerate(args) if a == flag]


def test_committed_yaml_is_generated_from_the_current_dvc_yaml(fresh):
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    if committed != fresh:
        import difflib

        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                                 "pipelines/kubeflow.yaml", "generated now", n=1))[:60])
        pytest.fail("pipelines/kubeflow.yaml is stale (dvc.yaml or params.yaml changed): run "
                    f"`python pipelines/kubeflow.py` (or `make kubeflow`) and commit it.\n{diff}")


def test_compiled_dag_is_dvcs_dag():
    spec = load(COMMITTED.read_text(encoding="utf-8"))
    stage_of, edges = dag_of(spec)
    stages, dvc_edges = dvc_dag(REPO_ROOT)
    assert sorted(stage_of.values()) == sorted(stages)
    assert edges == dvc_edges
    for task, name in stage_of.items():  # each step runs exactly the stage's command, from its wdir
        args = executor_args(spec, task)
        cmds = stages[name].cmd if isinstance(stages[name].cmd, list) else [stages[name].cmd]
        assert [c for (c,) in flag_values(args, "--cmd", 1)] == cmds, name
        assert flag_values(args, "--wdir", 1) == [["."]]


def test_every_out_is_an_output_and_every_produced_dep_an_input():
    spec = load(COMMITTED.read_text(encoding="utf-8"))
    stage_of, _ = dag_of(spec)
    stages, _ = dvc_dag(REPO_ROOT)
    produced = {}
    for name, s in stages.items():
        for o in s.outs:
            produced[Path(o.fs_path).relative_to(REPO_ROOT).as_posix()] = name
    for task, name in stage_of.items():
        args = executor_args(spec, task)
        outs = {p for p, _ in flag_values(args, "--output", 2)}
        assert outs == {Path(o.fs_path).relative_to(REPO_ROOT).as_posix() for o in stages[name].outs}, name
        ins = {p for p, _ in flag_values(args, "--input", 2)}
        deps = [Path(d.fs_path).relative_to(REPO_ROOT).as_posix() for d in stages[name].deps]
        wanted = {p for p, producer in produced.items()
                  if producer != name and any(dag._overlaps(p, d) for d in deps)}
        assert ins == wanted, name
        for rel, placeholder in flag_values(args, "--input", 2) + flag_values(args, "--output", 2):
            assert re.fullmatch(r"\{\{\$\.(inputs|outputs)\.artifacts\['\w+'\]\.path\}\}", placeholder), placeholder


def test_params_are_pipeline_parameters_and_lambda_is_mapped():
    spec = load(COMMITTED.read_text(encoding="utf-8"))
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert "lambda" not in inputs and inputs["lambda_"]["defaultValue"] == raw["lambda"]
    assert inputs["lambda_"]["parameterType"] == "NUMBER_DOUBLE"
    assert inputs["seed"]["parameterType"] == "NUMBER_INTEGER" and inputs["seed"]["defaultValue"] == raw["seed"]
    assert "kubeflow" not in inputs  # resources are compiled in, no stage reads them
    stage_of, _ = dag_of(spec)
    stages, _ = dvc_dag(REPO_ROOT)
    task = next(t for t, n in stage_of.items() if n == "tokenize@plum")
    passed = {key: kind for key, kind, _ in flag_values(executor_args(spec, task), "--param", 3)}
    assert passed["lambda"] == "float"
    declared = {k for d in stages["tokenize@plum"].deps if hasattr(d, "params") for k in d.params}
    assert declared <= set(passed)


def test_resources_follow_params_yaml():
    from sidrec.config import load_params

    kf = load_params(REPO_ROOT / "params.yaml").kubeflow
    spec = load(COMMITTED.read_text(encoding="utf-8"))
    stage_of, _ = dag_of(spec)
    gpus = 0
    for task, name in stage_of.items():
        label = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][label]["container"]
        res, want = container["resources"], kf.resources(name)
        assert container["image"] == kf.image
        assert res["resourceCpuRequest"] == want["cpu"] and res["resourceMemoryRequest"] == want["memory"], name
        if want["gpu"]:
            gpus += 1
            assert res["accelerator"]["resourceType"] == want["accelerator"]
            assert int(res["accelerator"]["resourceCount"]) == want["gpu"]
        else:
            assert "accelerator" not in res, name
    assert gpus >= 1  # the training stages ask for a GPU in params.yaml


def test_yaml_reloads_with_the_kfp_component_loader(tmp_path):
    from kfp import compiler, components, dsl

    comp = components.load_component_from_file(str(COMMITTED))
    spec = load(COMMITTED.read_text(encoding="utf-8"))
    assert set(comp.component_spec.inputs) == set(spec["root"]["inputDefinitions"]["parameters"])

    @dsl.pipeline(name="sidrec-sweep")
    def sweep(lambda_: float = 0.1):  # the loaded pipeline is reusable as a step of another pipeline
        comp(lambda_=lambda_)

    compiler.Compiler().compile(sweep, str(tmp_path / "sweep.yaml"))
    assert "exec-tokenize-plum" in (tmp_path / "sweep.yaml").read_text(encoding="utf-8")


SYNTHETIC_DVC = """
stages:
  make:
    foreach: [a, b]
    do:
      cmd: python make.py ${item} ${size} > out/${item}.txt
      params: [size, "lambda"]
      outs:
        - out/${item}.txt
  pair:
    matrix:
      left: [a, b]
      fold: [0, 1]
    cmd: python pair.py out/${item.left}.txt ${item.fold}
    deps:
      - out/${item.left}.txt
    params: [model.depth]
    outs:
      - pairs/${item.left}-${item.fold}
  summary:
    cmd: python summary.py pairs
    deps: [pairs, out/a.txt]
    params: [model]
    outs: [summary.json]
"""


def test_generator_is_generic_over_foreach_matrix_and_interpolation(tmp_path):
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    (tmp_path / "dvc.yaml").write_text(SYNTHETIC_DVC, encoding="utf-8")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "size": 3, "lambda": 0.25, "model": {"depth": 2, "width": 8},
        "kubeflow": {"image": "reg.example/x:1", "cpu": "1", "memory": "1G", "gpu": 0,
                     "accelerator": "nvidia.com/gpu", "stages": {"pair": {"gpu": 2}}}}), encoding="utf-8")
    spec = load(kubeflow.compile_pipeline(tmp_path, tmp_path / "p.yaml").read_text(encoding="utf-8"))
    stage_of, edges = dag_of(spec)
    stages, dvc_edges = dvc_dag(tmp_path)
    assert sorted(stage_of.values()) == sorted(stages) and len(stages) == 7
    assert edges == dvc_edges
    assert ("pair@a-1", "summary") in edges and ("make@b", "summary") not in edges
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"size", "lambda_", "model"}  # model.depth is covered by the section model
    task = next(t for t, n in stage_of.items() if n == "make@b")
    args = executor_args(spec, task)
    assert flag_values(args, "--cmd", 1) == [["python make.py b 3 > out/b.txt"]]
    assert ["lambda", "float", "{{$.inputs.parameters['lambda_']}}"] in flag_values(args, "--param", 3)
    summary = next(t for t, n in stage_of.items() if n == "summary")
    assert {p for p, _ in flag_values(executor_args(spec, summary), "--input", 2)} == {
        "pairs/a-0", "pairs/a-1", "pairs/b-0", "pairs/b-1", "out/a.txt"}
    pair = next(t for t, n in stage_of.items() if n == "pair@b-0")
    label = spec["components"][spec["root"]["dag"]["tasks"][pair]["componentRef"]["name"]]["executorLabel"]
    assert spec["deploymentSpec"]["executors"][label]["container"]["resources"]["accelerator"]["resourceCount"] == "2"


def resolve(spec: dict, task: str, artifacts: Path, values: dict) -> list[str]:
    """A compiled step's args with kfp's placeholders filled in as the kfp launcher would: parameters rendered as
    JSON (dicts arrive with every number a float, as protobuf Structs carry them), artifacts as local paths."""
    tasks = spec["root"]["dag"]["tasks"]

    def fill(arg: str) -> str:
        m = re.fullmatch(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}", arg)
        if m:
            v = values[m.group(1)]
            return v if isinstance(v, str) else json.dumps(v)
        m = re.fullmatch(r"\{\{\$\.(inputs|outputs)\.artifacts\['(\w+)'\]\.path\}\}", arg)
        if m and m.group(1) == "outputs":
            return str(artifacts / task / m.group(2))
        if m:
            src = tasks[task]["inputs"]["artifacts"][m.group(2)]["taskOutputArtifact"]
            return str(artifacts / src["producerTask"] / src["outputArtifactKey"])
        assert "{{" not in arg, arg
        return arg

    return [fill(a) for a in executor_args(spec, task)]


def test_compiled_steps_run_with_artifacts_and_a_partial_parameter(tmp_path):
    repo = create_tiny_repo(tmp_path / "repo")
    spec = load(kubeflow.compile_pipeline(repo.root, tmp_path / "tiny.yaml").read_text(encoding="utf-8"))
    values = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert isinstance(values["dataset"]["min_user_events"], float)  # what a real run receives
    values["split"] = {"protocol": "leave_one_out"}  # a partial section: the rest comes from params.yaml
    artifacts = tmp_path / "artifacts"
    for task in ("fetch", "prepare"):
        args = resolve(spec, task, artifacts, values)
        repo.run(sys.executable, str(REPO_ROOT / "pipelines" / "step.py"), "--workdir", str(repo.root), *args)
    raw = artifacts / "fetch" / "data_raw_ml_1m"
    written = repo.root / "data" / "raw" / "ml-1m"  # fetch checks the ml-1m files the fixture wrote
    assert sorted(p.name for p in raw.iterdir()) == sorted(p.name for p in written.iterdir())
    prepared = artifacts / "prepare" / "data_prepared"
    assert {p.name for p in prepared.iterdir()} >= {"items.parquet", "events.parquet", "split.json"}
    assert json.loads((prepared / "split.json").read_text())["protocol"] == "leave_one_out"
    assert json.loads((artifacts / "prepare" / "metrics_data_json").read_text())
    assert not (repo.root / "data" / "prepared").exists()  # moved into the artifact, not copied
    params = yaml.safe_load((repo.root / "params.yaml").read_text())
    assert params["split"]["valid_frac"] == 0.1 and params["dataset"]["min_user_events"] == 5
    assert isinstance(params["dataset"]["min_user_events"], int)  # 5.0 from the Struct is an int again


@pytest.mark.parametrize("old,new,want", [(5, 5.0, 5), (16.0, 16, 16.0), (0.5, 1, 1.0), (True, False, False),
                                          ({"a": 1, "b": {"c": 2.0}}, {"b": {"c": 3}}, {"a": 1, "b": {"c": 3.0}})])
def test_step_merge_keeps_params_yaml_types(old, new, want):
    got = step.merge(old, new)
    assert got == want and type(got) is type(want)
    if isinstance(want, dict):
        assert type(got["b"]["c"]) is float


def test_step_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("seed: 1\nmodel: {depth: 2}\n", encoding="utf-8")
    assert step.main(["--workdir", str(tmp_path), "--cmd", "true", "--param", "model.width", "int", "3"]) == 1
    assert "parameter `model.width` is not in params.yaml" in capsys.readouterr().err
    assert step.main(["--workdir", str(tmp_path), "--cmd", "true", "--param", "seed", "int", "x"]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    assert step.main(["--workdir", str(tmp_path), "--cmd", "true", "--output", "out.txt", str(tmp_path / "a")]) == 1
    assert "did not write its out out.txt" in capsys.readouterr().err
    assert step.main(["--workdir", str(tmp_path), "--cmd", "exit 3"]) == 1
    assert "exited 3" in capsys.readouterr().err
    missing = str(tmp_path / "nope")
    assert step.main(["--workdir", str(tmp_path), "--cmd", "true", "--input", "x", missing]) == 1
    assert f"artifact path {missing} does not exist" in capsys.readouterr().err


def test_cli_check_reports_drift(tmp_path):
    stale = tmp_path / "kubeflow.yaml"
    stale.write_text("# stale\n", encoding="utf-8")
    res = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "kubeflow.py"), "--check", "--out", str(stale)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and "is stale" in res.stderr and "python pipelines/kubeflow.py" in res.stderr


def test_kubeflow_resources_precedence():
    from sidrec.config import KubeflowConfig

    kf = KubeflowConfig(cpu="2", memory="8G", gpu=0, stages={"train": {"gpu": 1, "memory": "32G"},
                                                             "train@atomic-gpt": {"gpu": 0}})
    assert kf.resources("train@rqvae-gpt") == {"cpu": "2", "memory": "32G", "gpu": 1, "accelerator": "nvidia.com/gpu"}
    assert kf.resources("train@atomic-gpt")["gpu"] == 0 and kf.resources("train@atomic-gpt")["memory"] == "32G"
    assert kf.resources("train_popularity") == {"cpu": "2", "memory": "8G", "gpu": 0, "accelerator": "nvidia.com/gpu"}


@pytest.mark.parametrize("key,value,named", [
    ("cpu", 2, "kubeflow.cpu"), ("cpu", "two", "kubeflow.cpu"), ("memory", "8GB", "kubeflow.memory"),
    ("gpu", -1, "kubeflow.gpu"), ("image", "a b", "kubeflow.image"), ("stages", {"train": {"gpus": 1}},
                                                                        "kubeflow.stages.train"),
    ("stages", {"cpt": {"memory": "1.5G"}}, "kubeflow.stages.cpt.memory"), ("region", "eu", "kubeflow.region")])
def test_bad_kubeflow_params_are_one_line_errors(key, value, named):
    from sidrec.config import Params, ParamsError, from_dict

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["kubeflow"][key] = value
    with pytest.raises(ParamsError, match=re.escape(f"`{named}`")) as err:
        from_dict(Params, raw)
    assert "\n" not in str(err.value)
