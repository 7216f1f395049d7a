"""Compile dvc.yaml into a Kubeflow Pipelines (kfp v2) pipeline: pipelines/kubeflow.yaml.

The stages are read through DVC's own API (`Repo.index`: foreach/matrix expanded, `${...}` interpolated from
params.yaml; `index.graph`: the DAG), so the pipeline is not a second copy to keep in sync. Regenerate it after any
change to dvc.yaml or params.yaml: `make kubeflow` (or `python pipelines/kubeflow.py`); tests/test_kubeflow.py
fails when the committed YAML drifts from what this script makes of the current dvc.yaml.

- Steps: one container component per stage, running `python /app/pipelines/step.py --cmd "<the stage's cmd>" ...`
  in the image built by the Dockerfile (the repository checkout at /app); display name = the DVC stage name.
- Artifacts: every DVC out (data, models, metrics, plots) is an output artifact named after its path
  (`data/sids/rqvae.parquet` -> `data_sids_rqvae_parquet`). Every out of another stage that one of the stage's
  deps overlaps (the same path, a file inside it, or a directory around it, as DVC matches them) is an input
  artifact wired from that producer and placed at the producer's path before the command runs. Code deps
  (stages/, src/) come with the image.
- Parameters: the params.yaml keys the stages declare, coarsened to the outermost declared key (a stage reading
  `eval` and another reading `eval.k` share the parameter `eval`), become typed pipeline parameters whose defaults
  are today's values; each step takes those covering its own keys and merges them into params.yaml. Names: dots ->
  `_`, Python keywords get a trailing `_` (`lambda` -> `lambda_`, as in `sidrec.config`), so `lambda_=0.5` at
  submission is `dvc exp run -S lambda=0.5`; a dict parameter may be partial (`gpt={"n_layer": 6}`).
- Resources: the `kubeflow:` section of params.yaml (image, default cpu/memory/gpu, overrides per stage or foreach
  group) -> CPU and memory requests and an accelerator limit per step.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import json
import keyword
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "pipelines" / "kubeflow.yaml"
WORKDIR = "/app"  # the Dockerfile's WORKDIR: where the repository checkout sits in the image
STEP = f"{WORKDIR}/pipelines/step.py"
PIPELINE_NAME = "sidrec"
HEADER = "# Generated from dvc.yaml and params.yaml by `python pipelines/kubeflow.py`; do not edit.\n"
KINDS = {bool: "bool", int: "int", float: "float", str: "str", dict: "json", list: "json"}


@dataclass(frozen=True)
class Param:
    """A pipeline parameter: one params.yaml key (or section) that some stage declares."""

    name: str
    key: str
    value: object

    @property
    def kind(self) -> str:
        """How step.py decodes the value kfp renders into the command line."""
        return KINDS[type(self.value)]


@dataclass(frozen=True)
class Input:
    """An input artifact of a step: the out `path` of stage `producer`, exposed there as `output`."""

    name: str
    path: str
    producer: str
    output: str


@dataclass(frozen=True)
class Step:
    """One DVC stage as a Kubeflow step."""

    stage: str
    cmds: tuple[str, ...]
    wdir: str
    params: tuple[str, ...]
    inputs: tuple[Input, ...]
    outputs: tuple[tuple[str, str], ...]
    keep: tuple[str, ...]
    upstream: tuple[str, ...]

    @property
    def component_name(self) -> str:
        return identifier(self.stage.replace("@", "-"))


def identifier(text: str) -> str:
    """A Python identifier for a path, stage or dotted key: non-word runs -> `_`, keywords get a trailing `_`."""
    name = re.sub(r"\W+", "_", text).strip("_") or "_"
    if name[0].isdigit():
        name = f"_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


def _overlaps(a: str, b: str) -> bool:
    """True when repository paths `a` and `b` are equal or one contains the other (DVC's dep/out matching)."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def _lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"dvc.yaml declares the param `{key}`, which params.yaml does not have")
        node = node[part]
    return node


def _unique(names: dict[str, str], what: str) -> None:
    """`names`: generated name -> source; two sources with one name are an error."""
    seen: dict[str, str] = {}
    for source, name in names.items():
        if name in seen:
            raise ValueError(f"{what} {seen[name]!r} and {source!r} both map to the name {name!r}; rename one")
        seen[name] = source


def read_yaml(path: Path):
    """params.yaml as DVC reads it (YAML 1.2: `no` is a string): `sidrec.config.read_yaml`, importable from a
    checkout where sidrec is not installed."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from sidrec.config import read_yaml as read

    return read(path)


def stage_name(stage, root: Path) -> str:
    """A stage's DVC address relative to the repository root (`train@rqvae-gpt`; `sub/dvc.yaml:x` for nested
    dvc.yaml files), whatever the current directory."""
    path = Path(os.path.relpath(stage.path, root)).as_posix()
    return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"


def read_dag(root: str | Path = ROOT) -> tuple[list[Step], dict[str, Param]]:
    """The stages of `root`/dvc.yaml (topologically sorted, ties in dvc.yaml order) and the pipeline parameters.

    Raises:
        ValueError on what a pipeline cannot express (a params file other than params.yaml, name clashes).
    """
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        graph = repo.index.graph  # edges: consumer -> producer
        order = {s: i for i, s in enumerate(stages)}
        stages = list(nx.lexicographical_topological_sort(graph.reverse(copy=True), key=order.__getitem__))
        values = read_yaml(root / "params.yaml") or {}

        def rel(path: str) -> str:
            return PurePosixPath(Path(os.path.relpath(path, root)).as_posix()).as_posix()

        declared: dict = {}  # stage -> declared params.yaml keys
        outs: dict = {}  # stage -> [(artifact name, path, persist)]
        for s in stages:
            keys = []
            for d in s.deps:
                if not isinstance(d, ParamsDependency):
                    continue
                if rel(d.fs_path) != "params.yaml":
                    raise ValueError(f"stage {stage_name(s, root)}: params from {rel(d.fs_path)}; only params.yaml is "
                                     "passed to the pipeline")
                keys += list(d.params) or list(values)  # no keys listed = the whole file
            declared[s] = list(dict.fromkeys(keys))
            outs[s] = [(identifier(rel(o.fs_path)), rel(o.fs_path), bool(o.persist)) for o in s.outs]

        every = {k for keys in declared.values() for k in keys}
        top = sorted(k for k in every if not any(k.startswith(f"{a}.") for a in every if a != k))
        params = {identifier(k): Param(identifier(k), k, _lookup(values, k)) for k in top}
        _unique({k: identifier(k) for k in top}, "params")
        for p in params.values():
            if type(p.value) not in KINDS:
                raise ValueError(f"param `{p.key}` is {p.value!r}; a pipeline parameter needs a bool, number, "
                                 "string, list or mapping")
        _unique({path: name for s in stages for name, path, _ in outs[s]}, "outs")

        steps = []
        for s in stages:
            covering = dict.fromkeys(next(t for t in top if k == t or k.startswith(f"{t}.")) for k in declared[s])
            dep_paths = [rel(d.fs_path) for d in s.deps if not isinstance(d, ParamsDependency)]
            upstream = [p for p in stages if graph.has_edge(s, p)]
            inputs = [Input(name, path, stage_name(p, root), name) for p in upstream for name, path, _ in outs[p]
                      if any(_overlaps(path, d) for d in dep_paths)]
            cmds = s.cmd if isinstance(s.cmd, list) else [s.cmd]
            own = [name for name, _, _ in outs[s]]
            _unique({**{i.path: i.name for i in inputs}, **{path: name for name, path, _ in outs[s]},
                     **{f"param {identifier(k)}": identifier(k) for k in covering}}, f"stage {stage_name(s, root)}:")
            steps.append(Step(
                stage=stage_name(s, root), cmds=tuple(cmds), wdir=rel(s.wdir) or ".",
                params=tuple(identifier(k) for k in covering), inputs=tuple(inputs),
                outputs=tuple((name, path) for name, path, _ in outs[s]),
                keep=tuple(path for name, path, persist in outs[s] if persist and name in own),
                upstream=tuple(stage_name(p, root) for p in upstream)))
        _unique({s.stage: s.component_name for s in steps}, "stages")
    return steps, params


def _component(step: Step, params: dict[str, Param], image: str):
    """A kfp container component for one step: typed parameters, input and output artifacts, step.py's command."""
    from kfp import dsl

    spec = [(n, params[n].value.__class__) for n in step.params] + \
           [(i.name, dsl.Input[dsl.Artifact]) for i in step.inputs] + \
           [(name, dsl.Output[dsl.Artifact]) for name, _ in step.outputs]

    def body(*placeholders):
        bound = dict(zip([name for name, _ in spec], placeholders))
        args = ["--wdir", step.wdir]
        for cmd in step.cmds:
            args += ["--cmd", cmd]
        for n in step.params:
            args += ["--param", params[n].key, params[n].kind, bound[n]]
        for i in step.inputs:
            args += ["--input", i.path, bound[i.name].path]
        for name, path in step.outputs:
            args += ["--output", path, bound[name].path]
        for path in step.keep:
            args += ["--keep", path]
        return dsl.ContainerSpec(image=image, command=["python", STEP], args=args)

    body.__name__ = step.component_name
    body.__doc__ = f"DVC stage {step.stage}: {' && '.join(step.cmds)}"
    body.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=tp) for name, tp in spec])
    return dsl.container_component(body)


def build_pipeline(steps: list[Step], params: dict[str, Param], kubeflow):
    """The kfp pipeline: one task per step, artifacts wired producer -> consumer, resources from `kubeflow`
    (a `sidrec.config.KubeflowConfig`)."""
    from kfp import dsl

    components = {s.stage: _component(s, params, kubeflow.image) for s in steps}
    names = list(params)

    def pipeline(*channels):
        bound = dict(zip(names, channels))
        tasks = {}
        for s in steps:
            kwargs = {n: bound[n] for n in s.params}
            kwargs.update({i.name: tasks[i.producer].outputs[i.output] for i in s.inputs})
            task = components[s.stage](**kwargs).set_display_name(s.stage)
            wired = {i.producer for i in s.inputs}
            for producer in s.upstream:  # an edge without an artifact (cannot happen with DVC's matching) still orders
                if producer not in wired:
                    task.after(tasks[producer])
            res = kubeflow.resources(s.stage)
            task.set_cpu_request(res["cpu"]).set_memory_request(res["memory"])
            if res["gpu"]:
                task.set_accelerator_type(res["accelerator"]).set_accelerator_limit(res["gpu"])
            tasks[s.stage] = task

    pipeline.__name__ = PIPELINE_NAME
    pipeline.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.value, annotation=type(p.value))
         for n, p in params.items()])
    return dsl.pipeline(name=PIPELINE_NAME, description=(
        "sidrec: the DVC pipeline of dvc.yaml, one step per stage. Parameters are params.yaml keys "
        "(dots -> _, lambda -> lambda_)."))(pipeline)


def compile_pipeline(root: str | Path = ROOT, out: str | Path = DEFAULT_OUT) -> Path:
    """Read `root`'s dvc.yaml and params.yaml and write the compiled pipeline YAML to `out`."""
    from kfp import compiler

    steps, params = read_dag(root)  # puts a checkout's src/ on sys.path when sidrec is not installed
    from sidrec.config import KubeflowConfig, from_dict

    section = (read_yaml(Path(root) / "params.yaml") or {}).get("kubeflow")
    kubeflow = KubeflowConfig() if section is None else from_dict(KubeflowConfig, section, "kubeflow")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func=build_pipeline(steps, params, kubeflow), package_path=str(path))
        body = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # kfp's own header comment prints dict defaults in protobuf map order, which changes from run to run
    body = body[next(i for i, line in enumerate(body) if not line.startswith("#")):]
    summary = [f"#   {n}: {type(p.value).__name__} = {json.dumps(p.value, sort_keys=True)}  (params.yaml `{p.key}`)\n"
               for n, p in params.items()]
    out.write_text(HEADER + "# Pipeline parameters (defaults: today's params.yaml):\n" + "".join(summary)
                   + "".join(body), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(ROOT), help="repository root with dvc.yaml and params.yaml")
    ap.add_argument("--out", default=None, help="output YAML (default: pipelines/kubeflow.yaml of --repo)")
    ap.add_argument("--check", action="store_true", help="compile to a temporary file and fail if --out differs")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.repo) / "pipelines" / "kubeflow.yaml"
    if not args.check:
        print(f"wrote {compile_pipeline(args.repo, out)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_pipeline(args.repo, Path(tmp) / "kubeflow.yaml").read_text(encoding="utf-8")
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    if fresh == old:
        print(f"{out} is up to date with dvc.yaml")
        return 0
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), fresh.splitlines(True), str(out), "fresh", n=1))
    print(f"\n{out} is stale: run `python pipelines/kubeflow.py`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
