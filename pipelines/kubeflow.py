"""Compile dvc.yaml into a Kubeflow Pipelines (kfp v2) pipeline: pipelines/kubeflow.yaml.

The stages are read by `pipelines/dag.py` through DVC's own API (`Repo.index`: foreach/matrix expanded, `${...}`
interpolated from params.yaml; `index.graph`: the DAG), so the pipeline is not a second copy to keep in sync.
Regenerate it after any change to dvc.yaml or params.yaml: `make kubeflow` (or `python pipelines/kubeflow.py`);
tests/test_kubeflow.py fails when the committed YAML drifts from what this script makes of the current dvc.yaml.

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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python pipelines/kubeflow.py` puts only pipelines/ on the path
    sys.path.insert(0, str(ROOT))

from pipelines.dag import Param, Step, read_dag, read_yaml  # noqa: E402  (the stages, read through DVC's API)

DEFAULT_OUT = ROOT / "pipelines" / "kubeflow.yaml"
WORKDIR = "/app"  # the Dockerfile's WORKDIR: where the repository checkout sits in the image
STEP = f"{WORKDIR}/pipelines/step.py"
PIPELINE_NAME = "sidrec"
HEADER = "# Generated from dvc.yaml and params.yaml by `python pipelines/kubeflow.py`; do not edit.\n"


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
