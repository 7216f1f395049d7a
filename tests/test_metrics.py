"""Ranking metrics against hand-computed values; per-user and case-level bootstrap intervals and the paired test
against known behaviour."""
import json
import math

import numpy as np
import pytest

from sidrec.evaluate import metrics
from sidrec.evaluate.metrics import (bootstrap_ci, coverage_at_k, ndcg_at_k, paired_bootstrap, recall_at_k, summarize,
                                     target_ranks)


def test_target_ranks_hand_computed():
    topk = np.array([[3, 1, 2], [5, 6, 7]])
    np.testing.assert_array_equal(target_ranks(topk, np.array([1, 9])), [1, -1])
    # First occurrence wins; -1 padding never matches a real item.
    topk = np.array([[4, 4, 2], [-1, -1, 3], [-1, -1, -1]])
    np.testing.assert_array_equal(target_ranks(topk, np.array([4, 3, 0])), [0, 2, -1])


def test_target_ranks_rejects_bad_input():
    with pytest.raises(ValueError, match="targets"):
        target_ranks(np.array([[1, 2]]), np.array([-1]))
    with pytest.raises(ValueError, match="target_ranks"):
        target_ranks(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="target_ranks"):
        target_ranks(np.array([[1, 2], [3, 4]]), np.array([1]))


def test_recall_and_ndcg_hand_computed():
    ranks = np.array([0, 1, -1, 3, 9])
    np.testing.assert_array_equal(recall_at_k(ranks, 1), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(recall_at_k(ranks, 2), [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(recall_at_k(ranks, 10), [1, 1, 0, 1, 1])
    np.testing.assert_allclose(ndcg_at_k(ranks, 2), [1.0, 1 / math.log2(3), 0, 0, 0])
    np.testing.assert_allclose(ndcg_at_k(ranks, 10), [1.0, 1 / math.log2(3), 0, 1 / math.log2(5), 1 / math.log2(11)])
    # The brief's example: topk [[3,1,2],[5,6,7]], targets [1,9] -> ndcg@2 = [1/log2(3), 0].
    r = target_ranks(np.array([[3, 1, 2], [5, 6, 7]]), np.array([1, 9]))
    np.testing.assert_allclose(ndcg_at_k(r, 2), [1 / math.log2(3), 0.0])
    np.testing.assert_allclose(ndcg_at_k(r, 1), [0.0, 0.0])


def test_rank_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(np.array([0]), 0)
    with pytest.raises(ValueError, match=">= -1"):
        ndcg_at_k(np.array([-2]), 5)


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = (np.random.default_rng(1).random(400) < 0.3).astype(float)
    low, high = bootstrap_ci(values, n_boot=500, seed=7)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, n_boot=500, seed=7)
    assert (low, high) != bootstrap_ci(values, n_boot=500, seed=8)


def test_bootstrap_ci_width_matches_normal_theory_and_shrinks():
    rng = np.random.default_rng(0)
    small = (rng.random(100) < 0.5).astype(float)
    large = (rng.random(2000) < 0.5).astype(float)
    w_small = np.subtract(*bootstrap_ci(small, seed=0)[::-1])
    w_large = np.subtract(*bootstrap_ci(large, seed=0)[::-1])
    assert w_large < w_small / 3  # width ~ 1/sqrt(n): sqrt(20) ~ 4.5 times narrower
    expected = 2 * 1.96 * large.std() / math.sqrt(large.size)  # ~0.0438
    assert abs(w_large - expected) / expected < 0.15


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci(np.array([]), seed=0) == (0.0, 0.0)
    assert bootstrap_ci(np.full(50, 0.25), seed=0) == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.array([0.1]), n_boot=0)


def test_bootstrap_chunking_keeps_the_interval(monkeypatch):
    values = (np.random.default_rng(3).random(300) < 0.4).astype(float)
    whole = bootstrap_ci(values, n_boot=400, seed=0)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMS", 1000)  # 3 resamples per chunk
    chunked = bootstrap_ci(values, n_boot=400, seed=0)
    assert chunked == bootstrap_ci(values, n_boot=400, seed=0)
    assert chunked[0] < values.mean() < chunked[1]
    assert chunked == pytest.approx(whole, abs=0.02)


def test_paired_bootstrap_clearly_better_system():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.6).astype(float)
    b = (rng.random(500) < 0.3).astype(float)
    res = paired_bootstrap(a, b, seed=0)
    assert set(res) == {"diff", "ci_low", "ci_high", "p_value"}
    assert res["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < res["ci_low"] < res["diff"] < res["ci_high"]
    assert res["p_value"] < 0.01
    flipped = paired_bootstrap(b, a, seed=0)
    assert flipped["diff"] == pytest.approx(-res["diff"]) and flipped["p_value"] < 0.01


def test_paired_bootstrap_identical_and_near_identical_systems():
    a = (np.random.default_rng(2).random(300) < 0.4).astype(float)
    same = paired_bootstrap(a, a.copy(), seed=0)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    d = np.zeros(200)
    d[:6], d[6:11] = 1.0, -1.0  # mean diff 0.005, standard error ~0.017: no evidence of a difference
    res = paired_bootstrap(d, np.zeros(200), seed=0)
    assert res["ci_low"] < 0 < res["ci_high"]
    assert res["p_value"] > 0.5


def test_paired_bootstrap_p_value_is_two_sided():
    # d = +1 in 50 cases, -1 in 30 of 400: mean 0.05, se 0.0222, z = 2.25 -> two-sided p ~ 0.024 (one-sided ~ 0.012).
    d = np.zeros(400)
    d[:50], d[50:80] = 1.0, -1.0
    res = paired_bootstrap(d, np.zeros(400), n_boot=4000, seed=0)
    assert 0.015 < res["p_value"] < 0.04
    with pytest.raises(ValueError, match="same cases"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_coverage_hand_computed():
    topk = np.array([[0, 1, -1], [1, 2, 3], [12, 2, 4]])
    assert coverage_at_k(topk, num_items=10, k=2) == pytest.approx(3 / 10)  # {0, 1, 2}; 12 is out of range
    assert coverage_at_k(topk, num_items=10, k=3) == pytest.approx(5 / 10)  # {0, 1, 2, 3, 4}
    assert coverage_at_k(np.full((4, 3), -1), num_items=5) == 0.0
    with pytest.raises(ValueError, match="num_items"):
        coverage_at_k(topk, num_items=0)


def test_per_user_interval_is_wider_when_users_have_correlated_cases():
    # 40 users with 25 identical cases each: only 40 independent draws, not 1000.
    rng = np.random.default_rng(0)
    per_user = (rng.random(40) < 0.4).astype(float)
    users = np.repeat(np.arange(40), 25)
    values = per_user[users]
    low_u, high_u = bootstrap_ci(values, users, n_boot=1000, seed=0)
    low_c, high_c = bootstrap_ci(values, None, n_boot=1000, seed=0)
    assert low_u < values.mean() < high_u
    assert (high_u - low_u) > 3 * (high_c - low_c)  # sqrt(25) = 5 times wider in theory
    # The per-user interval equals the case-level interval over the 40 user means (equal cluster sizes).
    assert (low_u, high_u) == pytest.approx(bootstrap_ci(per_user, None, n_boot=1000, seed=0), abs=1e-12)


def test_one_case_per_user_matches_the_case_level_bootstrap():
    values = (np.random.default_rng(4).random(500) < 0.3).astype(float)
    case = bootstrap_ci(values, None, n_boot=400, seed=3)
    assert bootstrap_ci(values, np.arange(500), n_boot=400, seed=3) == pytest.approx(case, abs=1e-12)
    # Distinct but shuffled user ids: other clusters order, same distribution.
    shuffled = bootstrap_ci(values, np.random.default_rng(5).permutation(500) + 1000, n_boot=2000, seed=3)
    assert shuffled == pytest.approx(bootstrap_ci(values, None, n_boot=2000, seed=3), abs=0.01)


def test_per_user_bootstrap_is_a_ratio_estimator_over_unequal_users():
    # user 0: 1 case of 1.0; user 1: 9 cases of 0.0. Every resample mean is (n0 * 1) / (n0 * 1 + n1 * 9).
    values = np.r_[1.0, np.zeros(9)]
    users = np.r_[0, np.ones(9, dtype=int)]
    means = metrics._bootstrap_means(values, 300, 0, users)
    assert set(np.round(means, 12)) <= {0.0, 0.1, 1.0}
    assert {0.0, 0.1, 1.0} <= set(np.round(means, 12))  # with 2 users: both, user 1 twice, user 0 twice


def test_per_user_bootstrap_is_deterministic_chunked_and_rejects_bad_users(monkeypatch):
    rng = np.random.default_rng(6)
    users = rng.integers(0, 30, size=600)
    values = (rng.random(600) < 0.2 + 0.02 * users).astype(float)
    whole = bootstrap_ci(values, users, n_boot=500, seed=1)
    assert whole == bootstrap_ci(values, users, n_boot=500, seed=1)
    assert whole != bootstrap_ci(values, users, n_boot=500, seed=2)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMS", 100)  # 3 resamples per chunk
    chunked = bootstrap_ci(values, users, n_boot=500, seed=1)
    assert chunked == bootstrap_ci(values, users, n_boot=500, seed=1)
    assert chunked == pytest.approx(whole, abs=0.03)
    with pytest.raises(ValueError, match="users must be"):
        bootstrap_ci(values, users[:-1])
    with pytest.raises(ValueError, match="users must be"):
        bootstrap_ci(values, 500)  # n_boot passed positionally where users go


def test_paired_bootstrap_resamples_users_jointly():
    rng = np.random.default_rng(7)
    users = np.repeat(np.arange(30), 20)
    a = (rng.random(600) < 0.4).astype(float)
    same = paired_bootstrap(a, a.copy(), users, seed=0)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    # b = a minus a per-user shift that is strongly user-correlated: the per-user test is wider than the case one.
    shift = np.repeat(rng.normal(0.02, 0.1, size=30), 20)
    b = a - shift
    per_user = paired_bootstrap(a, b, users, seed=0)
    per_case = paired_bootstrap(a, b, None, seed=0)
    assert per_user["diff"] == pytest.approx(shift.mean()) == pytest.approx(per_case["diff"])
    assert per_user["ci_high"] - per_user["ci_low"] > 3 * (per_case["ci_high"] - per_case["ci_low"])
    assert per_user["p_value"] > per_case["p_value"]
    # Joint resampling: the difference of separately-computed resampled means equals the resampled mean difference.
    ma = metrics._bootstrap_means(a, 200, 9, users)
    mb = metrics._bootstrap_means(b, 200, 9, users)
    np.testing.assert_allclose(ma - mb, metrics._bootstrap_means(a - b, 200, 9, users), atol=1e-12)


def _metric_keys(ks):
    return {f"{m}@{k}{s}" for m in ("recall", "ndcg") for k in ks for s in ("", "_ci_low", "_ci_high")}


def test_summarize_schema_and_values():
    topk = np.array([[3, 1, 2], [5, 6, 7], [1, 0, 4], [2, 3, 9]])
    targets = np.array([1, 9, 1, 2])
    ranks = target_ranks(topk, targets)  # [1, -1, 0, 0]
    cold = np.array([False, True, True, False])
    out = summarize(ranks, cold, topk, num_items=20, ks=(1, 3), n_boot=200, seed=0, users=np.array([7, 7, 8, 9]))
    assert set(out) == {"cases", "test_users", "cold_start_users", "bootstrap_unit", "test", "cold_start",
                        "coverage@3"}
    assert out["test_users"] == 3 and out["cold_start_users"] == 2 and out["bootstrap_unit"] == "user"
    assert set(out["test"]) == _metric_keys((1, 3)) | _case_keys(3)
    assert set(out["cold_start"]) == {"cases"} | _metric_keys((1, 3))
    assert out["cases"] == 4 and out["cold_start"]["cases"] == 2
    assert out["test"]["recall@1"] == pytest.approx(0.5)
    assert out["test"]["recall@3"] == pytest.approx(0.75)
    assert out["test"]["ndcg@3"] == pytest.approx((1 / math.log2(3) + 2) / 4)
    assert out["cold_start"]["recall@3"] == pytest.approx(0.5)  # cases 1 (miss) and 2 (hit at 0)
    assert out["coverage@3"] == pytest.approx(9 / 20)  # {0, 1, 2, 3, 4, 5, 6, 7, 9}
    json.dumps(out)  # scalars only, JSON-serializable without help


def _case_keys(k):
    return {f"{m}@{k}_ci_{side}_case" for m in ("ndcg", "recall") for side in ("low", "high")}


def test_summarize_intervals_resample_users():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(20), 30)
    hit_user = rng.random(20) < 0.5
    ranks = np.where(hit_user[users], 0, -1)  # every case of a user hits or every one misses
    topk = np.zeros((600, 10), dtype=int)
    out = summarize(ranks, np.zeros(600, dtype=bool), topk, num_items=5, n_boot=500, seed=0, users=users)
    t = out["test"]
    assert out["test_users"] == 20 and out["cold_start_users"] == 0
    assert t["ndcg@10_ci_high"] - t["ndcg@10_ci_low"] > 3 * (t["ndcg@10_ci_high_case"] - t["ndcg@10_ci_low_case"])
    assert t["recall@10_ci_low"] == pytest.approx(bootstrap_ci(recall_at_k(ranks, 10), users, n_boot=500, seed=0)[0])
    assert t["recall@10_ci_low_case"] == pytest.approx(bootstrap_ci(recall_at_k(ranks, 10), n_boot=500, seed=0)[0])
    with pytest.raises(ValueError, match="users"):
        summarize(ranks, np.zeros(600, dtype=bool), topk, num_items=5, users=users[:10])


def test_summarize_default_keys_and_no_cold_cases_gives_zeros():
    rng = np.random.default_rng(0)
    topk = rng.integers(0, 30, size=(40, 10))
    ranks = target_ranks(topk, rng.integers(0, 30, size=40))
    out = summarize(ranks, np.zeros(40, dtype=bool), topk, num_items=30, n_boot=100)
    assert set(out) == {"cases", "test_users", "cold_start_users", "bootstrap_unit", "test", "cold_start",
                        "coverage@10"}
    assert out["bootstrap_unit"] == "case" and out["test_users"] == 40  # users=None: every case its own user
    assert list(out["test"]) == ["recall@5", "recall@5_ci_low", "recall@5_ci_high", "recall@10", "recall@10_ci_low",
                                 "recall@10_ci_high", "ndcg@5", "ndcg@5_ci_low", "ndcg@5_ci_high", "ndcg@10",
                                 "ndcg@10_ci_low", "ndcg@10_ci_high", "ndcg@10_ci_low_case", "ndcg@10_ci_high_case",
                                 "recall@10_ci_low_case", "recall@10_ci_high_case"]
    # With one case per user the case-level comparison keys repeat the main interval.
    assert out["test"]["ndcg@10_ci_low_case"] == pytest.approx(out["test"]["ndcg@10_ci_low"])
    cold = out["cold_start"]
    assert cold["cases"] == 0
    assert all(v == 0.0 and not math.isnan(v) for key, v in cold.items() if key != "cases")


def test_summarize_rejects_bad_input():
    topk = np.zeros((3, 2), dtype=int)
    with pytest.raises(ValueError, match="bool"):
        summarize(np.zeros(3, dtype=int), np.zeros(3), topk, num_items=5)
    with pytest.raises(ValueError, match="shapes"):
        summarize(np.zeros(2, dtype=int), np.zeros(2, dtype=bool), topk, num_items=5)
