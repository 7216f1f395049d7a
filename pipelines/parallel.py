"""`dvc repro` with independent stages side by side: the pipeline on every core of one machine.

`dvc repro` runs one stage at a time. This pipeline's stages use a second core poorly (on this 2-core CPU a GPT
training step on 2 threads is 1.4x one thread, a LoRA step 1.36x; measured), and its DAG has long independent
branches (one LLM chain per tokenizer, one GPT training per system), so two stages side by side on one thread each
finish the DAG sooner than one stage on two threads.

Each stage runs as `dvc repro --single-item <stage>` once every stage it depends on has finished, so DVC itself
decides whether it is stale (an up-to-date stage returns at once), runs it, caches its outputs and writes its entry
of dvc.lock; DVC takes its repository lock for that bookkeeping (`--wait-for-lock`: a stage waits for the other's
bookkeeping instead of failing) and releases it while the command runs. The result
is the one `dvc repro` gives: afterwards `dvc status` reports nothing to do. Among the stages that are ready, the one
with the longest path of work still behind it starts first (a stage's work = the `runtime_s` its metrics JSON
recorded in the last run, 1 s when it has none), so the long LLM chains do not wait behind short stages.

Every stage gets the same thread count, `--threads` (default: CPUs // jobs), whatever runs beside it: float
reductions depend on the thread count, and a stage's output should not depend on the schedule.

    python pipelines/parallel.py                      # every stage; 2 stages side by side, CPUs // 2 threads each
    python pipelines/parallel.py --jobs 1             # one stage at a time on every core, as `dvc repro`
    python pipelines/parallel.py evaluate@plum        # a target and what it needs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class StageRun:
    """What one `dvc repro --single-item` cost: wall seconds, peak RSS (MB) of its process tree, exit status."""

    stage: str
    wall_s: float
    peak_rss_mb: float
    exit: int
    threads: int


def needed(steps: Sequence, targets: Sequence[str]) -> list:
    """The steps `targets` depend on (themselves included), in the order of `steps`; every step without targets.

    Args:
        steps: topologically sorted objects with `.stage` (name) and `.upstream` (names), as `read_dag` returns.
        targets: stage names.
    """
    if not targets:
        return list(steps)
    by_name = {s.stage: s for s in steps}
    unknown = [t for t in targets if t not in by_name]
    if unknown:
        raise SystemExit(f"error: targets {', '.join(unknown)}: not a stage of dvc.yaml "
                         f"(stages: {', '.join(by_name)})")
    keep, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += by_name[name].upstream
    return [s for s in steps if s.stage in keep]


def recorded(root: Path, step, key: str) -> float:
    """The largest numeric `key` among the step's metrics JSON outputs in `root` (0 when none records it)."""
    best = 0.0
    for _, path in step.outputs:
        f = root / path
        if f.suffix == ".json" and f.is_file():
            try:
                best = max(best, float(json.loads(f.read_text(encoding="utf-8")).get(key, 0.0)))
            except (ValueError, TypeError, AttributeError):
                pass
    return best


def remaining_work(steps: Sequence, work: dict[str, float]) -> dict[str, float]:
    """Per stage: its own work plus the longest chain of work downstream of it (the critical path from it on).

    Args:
        steps: topologically sorted, with `.stage` and `.upstream`; upstream names outside `steps` are ignored.
        work: seconds per stage name (missing = 1).
    """
    down: dict[str, list[str]] = {s.stage: [] for s in steps}
    for s in steps:
        for u in s.upstream:
            if u in down:
                down[u].append(s.stage)
    total: dict[str, float] = {}
    for s in reversed(steps):  # consumers before producers
        total[s.stage] = work.get(s.stage, 1.0) + max((total[c] for c in down[s.stage]), default=0.0)
    return total


def run_stage(root: Path, stage: str, log_file: Path, env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB of the dvc process tree, exit status) of `dvc repro --single-item stage`.

    The RSS is the maximum over the stage process and its descendants (`wait4` rusage of this child alone), so it
    stays the stage's own figure when other stages run beside it.
    """
    with open(log_file, "ab") as log:
        log.write(f"\n=== {stage}\n".encode())
        log.flush()
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: max RSS over it and its descendants
        proc.returncode = os.waitstatus_to_exitcode(status)
        return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def schedule(steps: Sequence, jobs: int, priority: dict[str, float],
             run: Callable[[str], StageRun], report: Callable[[StageRun], None] = lambda r: None) -> list[StageRun]:
    """Run every step once all its upstream steps succeeded, at most `jobs` at a time, highest priority first.

    A failure stops new starts; the stages already running finish. Returns the runs in completion order.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    names = {s.stage for s in steps}
    waiting = {s.stage: set(s.upstream) & names for s in steps}
    runs: list[StageRun] = []
    running: dict[Future, str] = {}
    failed = False
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while running or (waiting and not failed):
            ready = sorted((n for n, deps in waiting.items() if not deps), key=lambda n: -priority.get(n, 0.0))
            for name in ready[:jobs - len(running)] if not failed else []:
                del waiting[name]
                running[pool.submit(run, name)] = name
            if not running:  # nothing ready and nothing running: a cycle, which dvc.yaml cannot hold
                raise RuntimeError(f"stages never became ready: {', '.join(waiting)}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                name = running.pop(fut)
                result = fut.result()
                runs.append(result)
                report(result)
                if result.exit != 0:
                    failed = True
                    continue
                for deps in waiting.values():
                    deps.discard(name)
    return runs


def default_log_dir(root: Path) -> Path:
    """Where `repro` writes each stage's output (`<stage>.log`, appended to on every run)."""
    return Path(root) / ".dvc" / "tmp" / "repro-logs"


def stage_env(threads: int, root: Path) -> dict:
    """The environment of a stage process: offline hub, `threads` for every thread pool torch and numpy use, and
    `root`/src first on the import path, so a stage imports the sidrec of the project it runs in (not the checkout
    an editable install points to, e.g. when `bench/pipeline.py` runs a clone)."""
    t = str(threads)
    path = os.pathsep.join(p for p in (str(Path(root) / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": path,
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t}


def repro(root: Path, targets: Sequence[str] = (), jobs: int | None = None, threads: int | None = None,
          log_dir: Path | None = None, report: Callable[[StageRun], None] = lambda r: None) -> list[StageRun]:
    """Reproduce `targets` (default: every stage) of the DVC project at `root`, `jobs` stages at a time.

    Args:
        root: the project (dvc.yaml, params.yaml).
        targets: stage names; their upstream stages run too.
        jobs: stages side by side (default: 2, or 1 on a 1-CPU machine).
        threads: threads per stage (default: max(1, CPUs // jobs)).
        log_dir: one `<stage>.log` per stage here (default: `root`/.dvc/tmp/repro-logs).
        report: called with each finished stage.
    Returns:
        one `StageRun` per stage that ran, in completion order.
    """
    from pipelines.dag import read_dag  # DVC's own graph, topologically sorted

    root = Path(root).resolve()
    cpus = os.cpu_count() or 1
    jobs = min(2, cpus) if jobs is None else jobs
    if jobs < 1:
        raise SystemExit(f"error: --jobs {jobs}: must be >= 1")
    threads = max(1, cpus // jobs) if threads is None else threads
    if threads < 1:
        raise SystemExit(f"error: --threads {threads}: must be >= 1")
    steps = needed(read_dag(root)[0], list(targets))
    priority = remaining_work(steps, {s.stage: max(recorded(root, s, "runtime_s"), 1.0) for s in steps})
    log_dir = Path(log_dir) if log_dir else default_log_dir(root)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = stage_env(threads, root)

    def run(name: str) -> StageRun:
        wall, rss, code = run_stage(root, name, log_dir / f"{name}.log", env)
        return StageRun(name, wall, rss, code, threads)

    return schedule(steps, jobs, priority, run, report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help="stages to reach (default: every stage)")
    ap.add_argument("--jobs", "-j", type=int, default=None, help="stages side by side (default: 2)")
    ap.add_argument("--threads", type=int, default=None, help="threads per stage (default: CPUs // jobs)")
    ap.add_argument("--root", default=str(ROOT), help="the DVC project (default: this repository)")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    log_dir = default_log_dir(root)
    start = time.perf_counter()
    print(f"{root}: {args.jobs or min(2, os.cpu_count() or 1)} stages side by side, stage output in "
          f"{log_dir}/<stage>.log", flush=True)

    def report(r: StageRun) -> None:
        state = "ok" if r.exit == 0 else f"FAILED (exit {r.exit}; see {log_dir / (r.stage + '.log')})"
        print(f"{time.perf_counter() - start:8.0f} s  {r.stage:24s} {r.wall_s:8.1f} s {r.peak_rss_mb:7.0f} MB "
              f"{r.threads} thr  {state}", flush=True)

    runs = repro(root, args.targets, args.jobs, args.threads, log_dir, report)
    total = time.perf_counter() - start
    print(f"total {total:.0f} s ({total / 60:.1f} min), {len(runs)} stages")
    if any(r.exit != 0 for r in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
