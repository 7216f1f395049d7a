"""The DVC pipeline as data: the stages of dvc.yaml, topologically sorted, with their params, artifacts and edges.

`read_dag` reads the stages through DVC's own API (`Repo.index`: foreach/matrix expanded, `${...}` interpolated from
params.yaml; `index.graph`: the DAG), so no second copy of the pipeline is kept in sync. Its users: the Kubeflow
compiler (`pipelines/kubeflow.py`), the parallel scheduler (`pipelines/parallel.py`) and the pipeline benchmark
(`bench/pipeline.py`).

- Step: one DVC stage; `upstream` are the stages it depends on, `inputs` the outs of those stages its deps overlap
  (the same path, a file inside it, or a directory around it, as DVC matches them), `outputs` its own outs, each
  named after its path (`data/sids/rqvae.parquet` -> `data_sids_rqvae_parquet`).
- Param: a params.yaml key the stages declare, coarsened to the outermost declared key (a stage reading `eval` and
  another reading `eval.k` share the parameter `eval`); names: dots -> `_`, Python keywords get a trailing `_`
  (`lambda` -> `lambda_`, as in `sidrec.config`).
"""
from __future__ import annotations

import keyword
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


ROOT = Path(__file__).resolve().parents[1]
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
