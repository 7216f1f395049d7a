"""Benchmark: the whole DVC pipeline from an empty cache, in a temporary clone; wall time and peak RSS per stage.

The committed HEAD is cloned into a temporary directory (no DVC cache, no data, no models: every stage runs), the
optional `--set` overrides are merged into the clone's params.yaml, and each stage of dvc.yaml runs in topological
order as its own `dvc repro --single-item <stage>`, so each stage's figures are its own: wall time including DVC's
hashing and caching, and the peak RSS of the stage (the larger of the `dvc` process tree's and the figure the
stage recorded in its metrics JSON). Prints a table, the total and the speed/memory targets; `--out` keeps the
figures as JSON. Not a test: it prints figures.

    python bench/pipeline.py                                   # every default system (hours on 2 CPU cores)
    python bench/pipeline.py --targets evaluate@baseline       # one system and what it needs
    python bench/pipeline.py --set gpt.epochs=2 --set 'gpt.search={}' --out /tmp/bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.kubeflow import read_dag  # noqa: E402  (topological stage order from DVC's own graph)
from pipelines.step import set_params  # noqa: E402
from sidrec.io import write_json  # noqa: E402

TARGET_TOTAL_S = 45 * 60
TARGET_RSS_MB = 8 * 1024


def parse_set(text: str) -> tuple[str, object]:
    """`key.sub=value`; the value is JSON when it parses as JSON (numbers, lists, {}), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"error: --set {text!r}: write --set section.key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def needed(steps, targets: list[str]) -> list:
    """The steps `targets` depend on (themselves included), in topological order; every step without targets."""
    if not targets:
        return steps
    by_name = {s.stage: s for s in steps}
    unknown = [t for t in targets if t not in by_name]
    if unknown:
        raise SystemExit(f"error: --targets {', '.join(unknown)}: not a stage of dvc.yaml "
                         f"(stages: {', '.join(by_name)})")
    keep, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += by_name[name].upstream
    return [s for s in steps if s.stage in keep]


def recorded_rss(clone: Path, step) -> float:
    """The largest `peak_rss_mb` among the step's metrics JSON outputs (0 when it records none)."""
    best = 0.0
    for _, path in step.outputs:
        f = clone / path
        if f.suffix == ".json" and f.is_file():
            try:
                best = max(best, float(json.loads(f.read_text(encoding="utf-8")).get("peak_rss_mb", 0.0)))
            except (ValueError, AttributeError):
                pass
    return best


def run_stage(clone: Path, stage: str, log_file: Path, env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB of the dvc process tree, exit status) of `dvc repro -s stage` in `clone`."""
    with open(log_file, "ab") as log:
        log.write(f"\n=== {stage}\n".encode())
        log.flush()
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=clone,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: max RSS over it and its descendants
        proc.returncode = os.waitstatus_to_exitcode(status)
        return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params.yaml override")
    ap.add_argument("--targets", nargs="*", default=[], help="stages to reach (default: every stage)")
    ap.add_argument("--workdir", help="where to clone (default: a temporary directory, removed afterwards)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    if dirty:
        print("note: the working tree has uncommitted changes; the benchmark runs the committed HEAD")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sidrec-bench-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    if args.set:
        set_params(clone / "params.yaml", [parse_set(s) for s in args.set])
    steps = needed(read_dag(clone)[0], args.targets)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log_file = work / "repro.log"
    print(f"commit {head}, {len(steps)} stages, clone {clone}, stage logs {log_file}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    rows, total_start = [], time.perf_counter()
    for i, step in enumerate(steps, 1):
        wall, tree_rss, code = run_stage(clone, step.stage, log_file, env)
        rss = max(tree_rss, recorded_rss(clone, step))
        rows.append({"stage": step.stage, "wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1), "exit": code})
        print(f"[{i:2d}/{len(steps)}] {step.stage:24s} {wall:9.1f} s {rss:9.0f} MB" + ("" if code == 0 else
              f"   FAILED (exit {code}; see {log_file})"), flush=True)
        if code != 0:
            break
    total = time.perf_counter() - total_start
    peak = max((r["peak_rss_mb"] for r in rows), default=0.0)
    done = all(r["exit"] == 0 for r in rows) and len(rows) == len(steps)
    print(f"total {total:9.1f} s ({total / 60:.1f} min) over {len(rows)} stages; largest stage peak RSS {peak:.0f} MB")
    if done and not args.targets and not args.set:
        print(f"target whole DAG <= {TARGET_TOTAL_S / 60:.0f} min: {'met' if total <= TARGET_TOTAL_S else 'MISSED'}; "
              f"peak RSS <= {TARGET_RSS_MB} MB: {'met' if peak <= TARGET_RSS_MB else 'MISSED'}")
    if args.out:
        write_json(args.out, {"commit": head, "overrides": args.set, "stages": rows, "total_s": round(total, 1),
                              "complete": done})
        print(f"figures written to {args.out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if not done:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
