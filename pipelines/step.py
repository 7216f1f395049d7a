"""Run one DVC stage inside a Kubeflow step (the entry point of every component in pipelines/kubeflow.yaml).

The image holds the repository checkout (Dockerfile). A step reads nothing behind the pipeline's back:
1. every input artifact (another stage's DVC out) is symlinked to the repository path its producer wrote;
2. the pipeline parameters the stage declares in dvc.yaml are merged into params.yaml (dicts deep-merged, so a
   partial section such as `{"n_layer": 6}` works; ints stay ints, floats stay floats);
3. the stage's own `cmd` runs unchanged from its `wdir`;
4. every DVC out of the stage is moved to its output artifact path.
Before the command, outs the image may hold are removed as `dvc repro` does, except `persist: true` outs (`--keep`):
fetch's data/raw/<name>/ keeps the raw files of a non-embedded dataset baked into the image.

Usage (what the compiled components run; `--workdir` defaults to the checkout this file lives in):
    python pipelines/step.py --cmd "python stages/prepare.py ..." --param split json '{"protocol": "temporal"}'
        --input data/raw/ml-100k /tmp/in/fetch --output data/prepared /tmp/out/prepared
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from sidrec.config import read_yaml

log = logging.getLogger("pipelines.step")
KINDS = ("str", "int", "float", "bool", "json")


class StepError(RuntimeError):
    """A step cannot run: a missing artifact, a bad parameter, or a stage that did not write its outs."""


def decode(kind: str, text: str):
    """A parameter value as kfp renders it into the command line -> a Python value of params.yaml."""
    if kind == "str":
        return text
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise StepError(f"parameter: {text!r} is not a boolean")
        return text.lower() == "true"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise StepError(f"parameter: {text!r} is not valid JSON ({e.msg})") from None
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise StepError(f"parameter: {text!r} is not an integer")
    elif kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise StepError(f"parameter: {text!r} is not a number")
        value = float(value)
    return value


def merge(old, new):
    """`new` over `old`: dicts merged key by key, numbers keep the type params.yaml has (a JSON round trip through
    kfp may turn 16.0 into 16 or 256 into 256.0), anything else replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for k, v in new.items():
            out[k] = merge(old[k], v) if k in old else v
        return out
    if isinstance(old, bool) or isinstance(new, bool):
        return new
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, int) and isinstance(new, float) and new.is_integer():
        return int(new)
    return new


def set_params(path: Path, overrides: list[tuple[str, object]]) -> None:
    """Merge each (dotted key, value) into the params file at `path`; a key params.yaml lacks is an error."""
    data = read_yaml(path) or {}
    for dotted, value in overrides:
        *parents, last = dotted.split(".")
        node = data
        for k in parents:
            if not isinstance(node.get(k), dict):
                raise StepError(f"parameter `{dotted}`: {path.name} has no section `{k}`")
            node = node[k]
        if last not in node:
            raise StepError(f"parameter `{dotted}` is not in {path.name}")
        node[last] = merge(node[last], value)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def place_input(workdir: Path, rel: str, artifact: str) -> None:
    """Symlink the artifact at `artifact` to `workdir/rel`, replacing whatever the image has there."""
    src, dest = Path(artifact), workdir / rel
    if not src.exists():
        raise StepError(f"input {rel}: artifact path {src} does not exist")
    if dest.exists() or dest.is_symlink():
        _remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(src.resolve(), target_is_directory=src.is_dir())


def collect_output(workdir: Path, rel: str, artifact: str) -> None:
    """Move the stage's out `workdir/rel` (file or directory) to the output artifact path."""
    src, dest = workdir / rel, Path(artifact)
    if not src.exists():
        raise StepError(f"the stage did not write its out {rel}")
    if dest.exists() or dest.is_symlink():
        _remove(dest)  # kfp may pre-create the artifact directory
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))


def run(workdir: Path, cmds: list[str], wdir: str, params: list[tuple[str, str, str]],
        inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], keep: tuple[str, ...] = (),
        params_file: str = "params.yaml") -> None:
    """Steps 1-4 of the module docstring."""
    for rel, artifact in inputs:
        place_input(workdir, rel, artifact)
    if params:
        set_params(workdir / params_file, [(key, decode(kind, text)) for key, kind, text in params])
    for rel, _ in outputs:  # as `dvc repro` does: a stage starts without its old outs, persisted ones excepted
        if rel not in keep and ((workdir / rel).exists() or (workdir / rel).is_symlink()):
            _remove(workdir / rel)
    for cmd in cmds:
        log.info("running: %s", cmd)
        res = subprocess.run(cmd, shell=True, cwd=workdir / wdir)
        if res.returncode != 0:
            raise StepError(f"`{cmd}` exited {res.returncode}")
    for rel, artifact in outputs:
        collect_output(workdir, rel, artifact)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(Path(__file__).resolve().parents[1]),
                    help="the repository checkout (default: the one this file is in)")
    ap.add_argument("--wdir", default=".", help="the stage's wdir, relative to --workdir")
    ap.add_argument("--cmd", action="append", required=True, help="the stage's command (repeat for a list)")
    ap.add_argument("--param", nargs=3, action="append", default=[], metavar=("KEY", "KIND", "VALUE"),
                    help=f"a params.yaml key, its kind ({', '.join(KINDS)}) and its value")
    ap.add_argument("--input", nargs=2, action="append", default=[], metavar=("PATH", "ARTIFACT"))
    ap.add_argument("--output", nargs=2, action="append", default=[], metavar=("PATH", "ARTIFACT"))
    ap.add_argument("--keep", action="append", default=[], metavar="PATH", help="a `persist: true` out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    bad = [kind for _, kind, _ in args.param if kind not in KINDS]
    if bad:
        ap.error(f"--param kind {bad[0]!r}; use one of {', '.join(KINDS)}")
    try:
        run(Path(args.workdir).resolve(), args.cmd, args.wdir, [tuple(p) for p in args.param],
            [tuple(i) for i in args.input], [tuple(o) for o in args.output], tuple(args.keep))
    except StepError as e:
        print(f"step: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
