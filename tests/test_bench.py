"""The benchmark scripts' logic (their figures are printed, not asserted): the SFT baseline batch computes the same
loss as the sft stage's batch, and the pipeline benchmark runs exactly the stages a target needs, in order."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from llm_fixtures import tiny_llama
from sidrec.models.llm import sft_batch

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_logits_sft_batch_has_the_stage_batch_loss() -> None:
    """bench/train.py compares two ways of computing one loss: left padding with target-only logits (the stage)
    and right padding with logits everywhere; on sequences of different lengths the losses must agree."""
    bench = load("train")
    model = tiny_llama(40, seed=3)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 40, (n,), generator=g).tolist() for n in (9, 14, 6, 11)]
    ours = model(**sft_batch(seqs, 1, 3)).loss
    plain = bench.full_logits_batch(seqs, 1, 3)
    assert int((plain["labels"] != -100).sum()) == 3 * len(seqs)
    torch.testing.assert_close(model(**plain).loss, ours, rtol=1e-5, atol=1e-5)


def test_pipeline_bench_runs_what_a_target_needs_in_dag_order() -> None:
    bench = load("pipeline")
    steps = bench.read_dag(REPO)[0]
    names = [s.stage for s in bench.needed(steps, ["embed"])]
    assert names == ["fetch", "prepare", "embed"]
    baseline = [s.stage for s in bench.needed(steps, ["evaluate@baseline"])]
    assert baseline.index("tokenize@rqvae") < baseline.index("train@rqvae-gpt") < baseline.index("evaluate@baseline")
    assert "cpt@plum" not in baseline
    assert len(bench.needed(steps, [])) == len(steps)
    with pytest.raises(SystemExit, match="evaluate@nope"):
        bench.needed(steps, ["evaluate@nope"])


@pytest.mark.parametrize("text, expected", [("gpt.epochs=2", ("gpt.epochs", 2)), ("gpt.search={}", ("gpt.search", {})),
                                            ("llm.base=Qwen/Qwen2.5-1.5B", ("llm.base", "Qwen/Qwen2.5-1.5B")),
                                            ("lambda=0.5", ("lambda", 0.5))])
def test_pipeline_bench_parses_overrides(text, expected) -> None:
    assert load("pipeline").parse_set(text) == expected


def test_pipeline_bench_rejects_an_override_without_value() -> None:
    with pytest.raises(SystemExit, match="section.key=value"):
        load("pipeline").parse_set("gpt.epochs")


def _run_json(commit: str, stages: list[tuple[str, float, float]], **extra) -> dict:
    rows, at = [], 0.0
    for name, wall, rss in stages:
        at += wall
        rows.append({"stage": name, "wall_s": wall, "peak_rss_mb": rss, "exit": 0, "threads": 1, "finished_at_s": at})
    return {"commit": commit, "jobs": 2, "threads": 1, "cpu": "Test CPU", "nproc": 2, "stages": rows,
            "total_s": at, "complete": True, **extra}


def test_speed_section_is_generated_from_the_results() -> None:
    speed = load("speed_readme")
    repro = _run_json("abc1234", [("prepare", 3.0, 190.0), ("cpt@plum", 4000.0, 9000.0)], date="2026-12-04")
    knob = _run_json("abc1234", [("prepare", 1.2, 150.0), ("tokenize@plum", 95.0, 600.0)], overrides=["lambda=0.5"])
    text = speed.section(repro, knob)
    assert "**66.7 min** wall for 2 stages" in text and "wall <= 60.0 min: **missed**" in text
    assert "peak RSS <= 8 GiB: **missed**" in text and "8.8 GB (cpt@plum)" in text
    assert "`-S lambda=0.5`" in text and "1 of 2 stages did work (tokenize@plum)" in text
    assert text.index("| cpt@plum | 4000 |") < text.index("| prepare | 3 |")
    fast = _run_json("abc1234", [("prepare", 3.0, 190.0)])
    assert "**met**" in speed.section(fast, None) and "first knob" not in speed.section(fast, None)
    readme = f"# x\n## Speed\nintro\n{speed.BEGIN}\nold\n{speed.END}\nrest\n"
    out = speed.render(readme, "NEW")
    assert out == f"# x\n## Speed\nintro\n{speed.BEGIN}\nNEW\n{speed.END}\nrest\n" and speed.render(out, "NEW") == out
    with pytest.raises(SystemExit, match="markers"):
        speed.render("# no markers\n", "NEW")


def test_readme_speed_section_is_what_the_committed_results_give() -> None:
    speed = load("speed_readme")
    repro = json.loads((REPO / "bench" / "results" / "make_repro.json").read_text())
    knob_path = REPO / "bench" / "results" / "lambda.json"
    knob = json.loads(knob_path.read_text()) if knob_path.exists() else None
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert speed.render(readme, speed.section(repro, knob)) == readme, "run python bench/speed_readme.py"
