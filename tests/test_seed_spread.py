"""The seed-spread collector: queued commands per (system, seed) and the spread over seeds."""
from __future__ import annotations

import json
import statistics

import pytest

from pipelines.seed_spread import experiment_metrics, queue_commands, spread


def test_queue_commands_retrain_the_chosen_configuration(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_rqvae-gpt.json").write_text(json.dumps({"chosen": {"lr": 0.003}}))
    (tmp_path / "metrics" / "train_atomic-gpt.json").write_text(json.dumps({"chosen": {"lr": 0.001}}))
    cmds = queue_commands(tmp_path, ["baseline", "sasrec"], [1, 2])
    assert len(cmds) == 4
    assert cmds[0] == ["dvc", "exp", "run", "--queue", "-n", "seed1-baseline", "-S", "gpt.seed=1",
                       "-S", "gpt.search.lr=[0.003]", "evaluate@baseline"]
    assert cmds[3][-1] == "evaluate@sasrec" and "gpt.search.lr=[0.001]" in cmds[3] and "gpt.seed=2" in cmds[3]
    with pytest.raises(SystemExit, match="not a GPT system"):
        queue_commands(tmp_path, ["popularity"], [1])


def test_queue_commands_switch_a_gpt_ablation_on(tmp_path):
    """plum-gpt is off by default (params.yaml `ablations`): its experiment switches it on and targets its stage."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_plum-gpt.json").write_text(json.dumps({"chosen": {"lr": 0.001}}))
    (cmd,) = queue_commands(tmp_path, ["plum-gpt"], [1])
    assert cmd[-1] == "evaluate_ablation_gpt@plum-gpt" and "++ablations.gpt.plum-gpt=plum" in cmd


def test_spread_is_the_sample_sd_over_seeds():
    s = spread({42: {"ndcg@10": 0.08, "recall@10": 0.15}, 1: {"ndcg@10": 0.09, "recall@10": 0.16},
                2: {"ndcg@10": 0.07, "recall@10": 0.17}})
    assert s["seeds"] == [1, 2, 42] and s["ndcg@10"] == [0.09, 0.07, 0.08]
    assert s["ndcg@10_mean"] == pytest.approx(0.08)
    assert s["ndcg@10_sd"] == pytest.approx(statistics.stdev([0.08, 0.09, 0.07]))
    assert spread({42: {"ndcg@10": 0.1, "recall@10": 0.2}})["ndcg@10_sd"] == 0.0


def test_experiment_metrics_reads_dvc_exp_show():
    show = [{"rev": "workspace", "name": None, "data": {"metrics": {}}},
            {"rev": "abc", "name": "main", "data": {"metrics": {}},
             "experiments": [{"revs": [{"rev": "e1", "name": "seed1-baseline", "data": {"metrics": {
                 "metrics/baseline.json": {"data": {"test": {"ndcg@10": 0.081, "recall@10": 0.152}}}}}}]}]}]
    assert experiment_metrics(show, "baseline", "seed1-baseline") == {"ndcg@10": 0.081, "recall@10": 0.152}
    assert experiment_metrics(show, "baseline", "seed2-baseline") is None
