"""The benchmark scripts' logic (their figures are printed, not asserted): the SFT baseline batch computes the same
loss as the sft stage's batch, and the pipeline benchmark runs exactly the stages a target needs, in order."""
from __future__ import annotations

import importlib.util
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
