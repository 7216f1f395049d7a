"""Benchmark: the whole DVC pipeline from an empty cache, in a temporary clone; wall time and peak RSS per stage.

The committed HEAD is cloned into a temporary directory (no DVC cache, no data, no models: every stage runs), the
optional `--set` overrides are merged into the clone's params.yaml, and each stage of dvc.yaml runs as its own
`dvc repro --single-item <stage>` once its upstream stages finished, `--jobs` stages side by side (the scheduler of
`pipelines/parallel.py`, which `make repro` uses; `--jobs 1` = one stage at a time, as plain `dvc repro`). So each
stage's figures are its own: wall time including DVC's hashing and caching, and the peak RSS of the stage (the
larger of its `dvc` process tree's and the figure the stage recorded in its metrics JSON). Prints a table, the total
and the speed/memory targets; `--out` keeps the figures as JSON. Not a test: it prints figures.

    python bench/pipeline.py                                   # every default system, 2 stages side by side
    python bench/pipeline.py --jobs 1                          # one stage at a time on every core
    python bench/pipeline.py --targets evaluate@baseline       # one system and what it needs
    python bench/pipeline.py --set gpt.epochs=2 --set 'gpt.search={}' --out /tmp/bench.json

A knob's cost: `--reuse` runs in the clone a previous `--workdir` run left (its DVC cache full), after applying
the `--set` overrides, so only the stages the override makes stale do work (an up-to-date stage is DVC's check of
its hashes, a second or two); that is what `dvc exp run -S ...` costs a user after `make repro`:

    python bench/pipeline.py --workdir /work/run --out bench/results/make_repro.json
    python bench/pipeline.py --workdir /work/run --reuse --set lambda=0.5 --out bench/results/lambda.json
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

from pipelines.dag import read_dag  # noqa: E402  (topological stage order from DVC's own graph)
from pipelines.parallel import (StageRun, needed, recorded, remaining_work, run_stage, schedule,  # noqa: E402
                                stage_env)
from pipelines.step import set_params  # noqa: E402
from sidrec.io import write_json  # noqa: E402

TARGET_TOTAL_S = 60 * 60
TARGET_RSS_MB = 8 * 1024


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def parse_set(text: str) -> tuple[str, object]:
    """`key.sub=value`; the value is JSON when it parses as JSON (numbers, lists, {}), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"error: --set {text!r}: write --set section.key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params.yaml override")
    ap.add_argument("--targets", nargs="*", default=[], help="stages to reach (default: every stage)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="stages side by side (default: 2, as make repro)")
    ap.add_argument("--workdir", help="where to clone (default: a temporary directory, removed afterwards)")
    ap.add_argument("--reuse", action="store_true", help="run in WORKDIR/repo, the clone of an earlier --workdir run "
                    "(with its DVC cache), instead of a new clone: only what the --set overrides make stale runs")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs {args.jobs}: must be >= 1")
    if args.reuse and not (args.workdir and (Path(args.workdir) / "repo" / "dvc.yaml").exists()):
        raise SystemExit("error: --reuse needs --workdir DIR where an earlier run left DIR/repo; run without --reuse "
                         "first")

    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    if dirty:
        print("note: the working tree has uncommitted changes; the benchmark runs the committed HEAD")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sidrec-bench-"))
    clone = work / "repo"
    if not args.reuse:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    if args.set:
        set_params(clone / "params.yaml", [parse_set(s) for s in args.set])
    steps = needed(read_dag(clone)[0], args.targets)
    by_name = {s.stage: s for s in steps}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = stage_env(threads, clone)
    # the committed metrics' runtime_s order the ready stages (longest remaining chain first)
    priority = remaining_work(steps, {s.stage: max(recorded(ROOT, s, "runtime_s"), 1.0) for s in steps})
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"commit {head}, {len(steps)} stages, clone {clone}, stage logs {log_dir}/<stage>.log, "
          f"{os.cpu_count()} CPUs, {args.jobs} stages side by side, {threads} thread(s) each", flush=True)
    rows, total_start = [], time.perf_counter()

    def run(name: str) -> StageRun:
        wall, tree_rss, code = run_stage(clone, name, log_dir / f"{name}.log", env)
        return StageRun(name, wall, max(tree_rss, recorded(clone, by_name[name], "peak_rss_mb")), code, threads)

    def report(r: StageRun) -> None:
        rows.append({"stage": r.stage, "wall_s": round(r.wall_s, 1), "peak_rss_mb": round(r.peak_rss_mb, 1),
                     "exit": r.exit, "threads": r.threads,
                     "finished_at_s": round(time.perf_counter() - total_start, 1)})
        print(f"[{len(rows):2d}/{len(steps)}] {r.stage:24s} {r.wall_s:9.1f} s {r.peak_rss_mb:9.0f} MB  "
              f"(at {rows[-1]['finished_at_s'] / 60:6.1f} min)" + ("" if r.exit == 0 else
              f"   FAILED (exit {r.exit}; see {log_dir / (r.stage + '.log')})"), flush=True)

    schedule(steps, args.jobs, priority, run, report)
    total = time.perf_counter() - total_start
    peak = max((r["peak_rss_mb"] for r in rows), default=0.0)
    done = all(r["exit"] == 0 for r in rows) and len(rows) == len(steps)
    stage_sum = sum(r["wall_s"] for r in rows)
    print(f"total {total:9.1f} s ({total / 60:.1f} min) wall over {len(rows)} stages (sum of stage walls "
          f"{stage_sum / 60:.1f} min); largest stage peak RSS {peak:.0f} MB")
    if done and not args.targets and not args.set and not args.reuse:
        print(f"target whole DAG <= {TARGET_TOTAL_S / 60:.0f} min: {'met' if total <= TARGET_TOTAL_S else 'MISSED'}; "
              f"peak RSS <= {TARGET_RSS_MB} MB: {'met' if peak <= TARGET_RSS_MB else 'MISSED'}")
    if args.out:
        date = time.strftime("%Y-%m-%d", time.gmtime())
        write_json(args.out, {"commit": head, "date": date, "overrides": args.set, "reuse": args.reuse,
                              "targets": args.targets,
                              "jobs": args.jobs,
                              "threads": threads, "cpu": cpu_model(), "nproc": os.cpu_count(), "stages": rows,
                              "total_s": round(total, 1), "peak_rss_mb": round(peak, 1), "complete": done})
        print(f"figures written to {args.out}")
    if not done:  # keep the clone and its logs for a look at the failure
        raise SystemExit(f"stopped after a failed stage; clone and logs kept in {work}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"clone kept in {clone} (its outputs and DVC cache): `--workdir {work} --reuse` times an override")


if __name__ == "__main__":
    main()
