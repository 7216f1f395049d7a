"""The report's training-budget table and learning curves, from training-stage metrics written here by hand."""
from __future__ import annotations

import json

import pytest

from sidrec.evaluate.report_budget import _crossing, budget_section, curve_section, training_budget


def _curve(points: list[tuple[int, float]]) -> list[dict]:
    return [{"step": i + 1, "targets": t, "valid_ndcg@10": v, "valid_recall@10": 2 * v} for i, (t, v) in enumerate(points)]


@pytest.fixture()
def metrics(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    files = {
        "train_rqvae-gpt.json": {"targets_processed": 480_000, "tokens_processed": 2_000_000, "trainable_parameters": 900_000,
                                 "history_length": 20, "runs": 2, "runtime_s": 600, "threads": 1,
                                 "curve": _curve([(1000, 0.01), (4000, 0.03), (16000, 0.05), (160000, 0.08)])},
        "cpt_plum.json": {"history_targets": 11_000, "tokens_processed": 90_000, "runtime_s": 900, "threads": 1},
        "sft_plum.json": {"targets": 23_000, "targets_seen": 11_500, "tokens_processed": 130_000,
                          "trainable_parameters": 2_900_000, "history_length": 20, "runtime_s": 1200, "threads": 1,
                          "curve": _curve([(2900, 0.04), (5800, 0.045), (11500, 0.06), (23000, 0.05)])},
    }
    for name, body in files.items():
        (d / name).write_text(json.dumps(body))
    return d


def test_budget_rows_add_cpt_and_sft_for_the_llm_and_count_the_gpt_search(metrics):
    plum = training_budget(metrics, "plum")
    assert plum["tokens"] == 220_000 and plum["core_min"] == pytest.approx(35.0) and plum["cpt_targets"] == 11_000
    assert training_budget(metrics, "baseline")["core_min"] == pytest.approx(10.0)
    assert training_budget(metrics, "popularity") is None and training_budget(metrics, "lamia") is None
    md = budget_section(metrics, ["baseline", "popularity", "plum", "lamia"])
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1].strip() for line in lines] == ["`baseline`", "`plum`"]
    assert "23,000 (kept checkpoint: 11,500)" in lines[1] and "| 20 |" in lines[1]
    assert budget_section(metrics, ["popularity"]) == ""


def test_crossing_is_found_on_log_targets_and_absent_when_one_curve_stays_above():
    gpt = _curve([(1000, 0.01), (10000, 0.03), (100000, 0.09)])
    llm = _curve([(1000, 0.03), (10000, 0.04), (100000, 0.05)])
    at = _crossing(llm, gpt, "valid_ndcg@10")
    assert 10000 < at < 100000  # the LLM leads at 10k (0.04 vs 0.03) and trails at 100k
    assert _crossing(_curve([(1000, 0.2), (5000, 0.3)]), gpt, "valid_ndcg@10") is None


def test_curve_section_writes_the_figure_and_states_the_crossing(metrics, tmp_path):
    png = tmp_path / "reports" / "figures" / "learning_curve.png"
    md = curve_section(metrics, ["baseline", "plum", "sasrec"], png, tmp_path / "reports")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![learning curve](figures/learning_curve.png)" in md
    assert "`plum` and `baseline` cross at about" in md  # plum leads up to 16k targets, baseline at 23k
    assert "2,900: 0.0400" in md and "`sasrec`" not in md
    assert curve_section(metrics, ["popularity"], png, tmp_path) == ""


def test_without_a_crossing_the_section_says_where_the_gpt_catches_up(metrics, tmp_path):
    sft = json.loads((metrics / "sft_plum.json").read_text())
    sft["curve"] = _curve([(2900, 0.04), (5800, 0.045), (11500, 0.06), (23000, 0.07)])
    (metrics / "sft_plum.json").write_text(json.dumps(sft))
    md = curve_section(metrics, ["baseline", "plum"], tmp_path / "c.png", tmp_path)
    assert "do not cross over their common range of targets; `plum` is above" in md
    assert "`baseline` first reaches `plum`'s last score (0.0700 at 23,000 targets" in md
    assert "at the point of 160,000 targets (7x the targets" in md
