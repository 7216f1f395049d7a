"""`make repro`'s scheduler (pipelines/parallel.py): dependency order, the job limit, critical path first, failures.

The whole DAG through the real runner is in test_pipeline_full.py; here `schedule` runs fake stages that record
when they started and ended.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from pipelines.parallel import StageRun, needed, remaining_work, schedule, stage_env


@dataclass(frozen=True)
class FakeStep:
    stage: str
    upstream: tuple[str, ...] = ()


# a -> b -> d, a -> c -> d, and a long chain a -> e -> f beside them
STEPS = [FakeStep("a"), FakeStep("b", ("a",)), FakeStep("c", ("a",)), FakeStep("e", ("a",)),
         FakeStep("d", ("b", "c")), FakeStep("f", ("e",))]


class Recorder:
    """A fake stage runner: sleeps, records start/end order and the largest number running at once."""

    def __init__(self, fail: str = "") -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.now = self.peak = 0
        self.fail = fail

    def __call__(self, name: str) -> StageRun:
        with self.lock:
            self.started.append(name)
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
            self.finished.append(name)
        return StageRun(name, 0.05, 0.0, 1 if name == self.fail else 0, 1)


def test_remaining_work_is_the_critical_path_from_each_stage() -> None:
    work = {"a": 1, "b": 2, "c": 5, "d": 1, "e": 10, "f": 10}
    total = remaining_work(STEPS, work)
    assert total == {"f": 10, "e": 20, "d": 1, "c": 6, "b": 3, "a": 21}
    assert remaining_work(STEPS, {})["a"] == 3  # unknown work counts 1 s per stage: the longest chain a-b-d


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_schedule_respects_dependencies_and_the_job_limit(jobs) -> None:
    rec = Recorder()
    runs = schedule(STEPS, jobs, {}, rec)
    assert sorted(r.stage for r in runs) == sorted(s.stage for s in STEPS)
    for step in STEPS:
        for up in step.upstream:
            assert rec.finished.index(up) < rec.started.index(step.stage), (up, step.stage)
    assert rec.peak <= jobs
    if jobs > 1:
        assert rec.peak > 1, "independent stages should run side by side"


def test_schedule_starts_the_longest_remaining_chain_first() -> None:
    rec = Recorder()
    priority = remaining_work(STEPS, {"a": 1, "b": 1, "c": 1, "d": 1, "e": 10, "f": 10})
    schedule(STEPS, 1, priority, rec)
    assert rec.started[:3] == ["a", "e", "f"]
    rec = Recorder()
    schedule(STEPS, 1, remaining_work(STEPS, {"c": 50}), rec)
    assert rec.started[:2] == ["a", "c"]


def test_a_failure_stops_new_starts_and_running_stages_finish() -> None:
    rec = Recorder(fail="b")
    priority = {"b": 3.0, "c": 2.0, "e": 1.0}
    runs = schedule(STEPS, 2, priority, rec)
    ran = {r.stage for r in runs}
    assert "d" not in ran and "f" not in ran  # d needs b; f's parent e never started or started after b failed
    assert {"a", "b", "c"} <= ran  # c ran beside b and was allowed to finish
    assert [r.exit for r in runs if r.stage == "b"] == [1]
    with pytest.raises(ValueError, match="jobs"):
        schedule(STEPS, 0, {}, rec)


def test_needed_keeps_dag_order_and_rejects_unknown_targets() -> None:
    assert [s.stage for s in needed(STEPS, ["d"])] == ["a", "b", "c", "d"]
    assert [s.stage for s in needed(STEPS, [])] == [s.stage for s in STEPS]
    with pytest.raises(SystemExit, match="nope"):
        needed(STEPS, ["nope"])


def test_a_stage_imports_the_sidrec_of_the_project_it_runs_in(tmp_path):
    """bench/pipeline.py runs a clone: its stages must run the clone's code, not the checkout sidrec is installed from."""
    pkg = tmp_path / "src" / "sidrec"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    env = stage_env(1, tmp_path)
    where = subprocess.run([sys.executable, "-c", "import sidrec; print(sidrec.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(pkg / "__init__.py")
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
