"""The LAMIA tokenizer (PCA + K-Means per palette position): codes in range and 1-to-1, determinism, recovery of
independent per-position factors, the independence diagnostics at their extremes, codebook_size > items,
quantizer round trip, a 4-position table through the token layout and the trie, and the tokenize stage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import normalized_mutual_info_score

from sidrec.generate import ItemTrie
from sidrec.tokenizers.lamia import PaletteQuantizer, fit_quantizer, independence, lamia_sids
from sidrec.tokenizers.sids import SidTable, TokenLayout

REPO = Path(__file__).resolve().parents[1]


def factor_palette(n: int = 400, length: int = 4, k: int = 5, dim: int = 48, noise: float = 0.05, seed: int = 0):
    """Position j of item i = one of k cluster centres chosen by an independent factor f_j(i), in a subspace of its
    own, plus noise. Returns (palette (n, L, dim), factors (n, L))."""
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, k, size=(n, length))
    sub = dim // length
    centres = rng.normal(size=(length, k, sub)) * 3
    x = rng.normal(scale=noise, size=(n, length, dim))
    for j in range(length):
        x[:, j, j * sub:(j + 1) * sub] += centres[j, factors[:, j]]
    return x.astype(np.float32), factors


def test_codes_in_range_unique_and_deterministic():
    x, _ = factor_palette()
    t1, _, m1 = lamia_sids(x, codebook_size=8, pca_dim=16, n_init=2, seed=3)
    t2, _, m2 = lamia_sids(x, codebook_size=8, pca_dim=16, n_init=2, seed=3)
    assert t1.vocab_sizes[:4] == [8, 8, 8, 8] and len(t1.vocab_sizes) == 5
    assert t1.codes.shape == (400, 5) and (t1.codes[:, :4] < 8).all() and (t1.codes >= 0).all()
    assert len(np.unique(t1.codes, axis=0)) == 400  # 1-to-1 thanks to the suffix
    np.testing.assert_array_equal(t1.codes, t2.codes)
    assert m1 == m2
    assert t1.info["levels"] == 4 and t1.info["suffix_size"] == t1.vocab_sizes[-1] == m1["suffix_size"]
    # 5^4 = 625 factor combinations over 400 items: collisions happen, the suffix resolves them
    assert 0 < m1["collision_rate"] < 1 and m1["max_items_per_code"] == t1.vocab_sizes[-1]
    for key in ("utilization_l3", "perplexity_l0", "unique_codes", "uniqueness", "mean_cosine_between_positions",
                "nmi_between_positions", "nmi_p0_p3", "cosine_p1_p2", "pca_explained_variance"):
        assert key in m1


def test_each_position_recovers_its_own_factor_and_positions_are_independent():
    x, factors = factor_palette()
    _, codes = fit_quantizer(x, codebook_size=5, pca_dim=8, n_init=4, seed=0)
    for j in range(4):
        assert normalized_mutual_info_score(factors[:, j], codes[:, j]) > 0.99
    diag = independence(x, codes)
    assert diag["nmi_between_positions"] < 0.05  # independent factors -> near-independent partitions
    assert abs(diag["mean_cosine_between_positions"]) < 0.05  # disjoint subspaces


def test_identical_positions_give_nmi_one_and_cosine_one():
    x, _ = factor_palette(length=1, dim=12)
    same = np.repeat(x, 3, axis=1)  # three identical positions
    _, codes = fit_quantizer(same, codebook_size=5, pca_dim=4, n_init=2, seed=0, per_position=False)
    diag = independence(same, codes)
    assert diag["mean_cosine_between_positions"] == pytest.approx(1.0)
    assert diag["nmi_between_positions"] == pytest.approx(1.0)
    assert diag["nmi_p0_p1"] == pytest.approx(1.0) and diag["cosine_p0_p2"] == pytest.approx(1.0)


def test_independence_hand_computed():
    palette = np.array([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 0.0]]])  # cosines 0 and 1/sqrt(2)
    codes = np.array([[0, 0], [1, 1]])
    diag = independence(palette, codes)
    assert diag["mean_cosine_between_positions"] == pytest.approx((0 + 2 ** -0.5) / 2)
    assert diag["nmi_between_positions"] == pytest.approx(1.0)
    # position 0: cos((1,0), (1,1)) = 1/sqrt(2); position 1: cos((0,2), (1,0)) = 0
    assert diag["mean_cosine_between_items"] == pytest.approx(2 ** -0.5 / 2)


def test_more_clusters_than_items_is_capped_with_the_vocabulary_kept(caplog):
    x, _ = factor_palette(n=6, k=3)
    with caplog.at_level("WARNING"):
        table, quant, metrics = lamia_sids(x, codebook_size=16, pca_dim=64, n_init=1, seed=0)
    assert "codebook_size 16" in caplog.text and "pca_dim 64 capped" in caplog.text
    assert table.vocab_sizes[:4] == [16] * 4 and (table.codes[:, :4] < 6).all()
    assert metrics["pca_dim"] == 6 and metrics["utilization_l0"] <= 6 / 16
    np.testing.assert_array_equal(quant.codes(x), table.codes[:, :4])  # unused (NaN) centroids never win


def test_quantizer_round_trip_assigns_the_fitted_codes(tmp_path):
    x, _ = factor_palette()
    for per_position in (True, False):
        quant, codes = fit_quantizer(x, codebook_size=8, pca_dim=16, n_init=2, seed=0, per_position=per_position)
        quant.save(tmp_path / "q", {"tokenizer": "lamia"})
        again = PaletteQuantizer.load(tmp_path / "q")
        np.testing.assert_array_equal(again.codes(x), codes)
        assert json.loads((tmp_path / "q" / "config.json").read_text())["tokenizer"] == "lamia"


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"lamia: palette vectors must be \(N >= 2, L, D\)"):
        fit_quantizer(np.zeros((10, 64)), 4, 8, 1, 0)


def test_four_parallel_positions_round_trip_through_layout_and_trie(tmp_path):
    x, _ = factor_palette(n=200)
    table, _, _ = lamia_sids(x, codebook_size=6, pca_dim=8, n_init=2, seed=0)
    table.save(tmp_path / "lamia.parquet")
    table = SidTable.load(tmp_path / "lamia.parquet")
    assert table.info["parallel"] is True and table.codes.shape[1] == 5
    tokens = TokenLayout(table.vocab_sizes).item_tokens(table.codes)
    trie = ItemTrie(tokens)
    assert trie.depth == 5
    for item in range(0, 200, 17):
        path = tokens[item].tolist()
        for d in range(5):
            assert path[d] in trie.allowed(path[:d]).tolist()
        assert trie.node_of(path) >= 0 and trie._leaf_item[trie.node_of(path)] == item
    assert len(trie.allowed([])) == len(np.unique(table.codes[:, 0]))


def test_tokenize_stage_lamia(tmp_path):
    x, _ = factor_palette(n=120)
    np.save(tmp_path / "vectors.npy", x)
    pairs = pd.DataFrame({"a": [0, 1, 2, 3], "b": [4, 5, 6, 7], "count": [1, 1, 1, 1],
                          "split": ["train", "train", "heldout", "heldout"]})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["codebook_size"] = 8
    params["lamia"].update(pca_dim=16, n_init=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, str(REPO / "stages" / "tokenize_items.py"), "--params", "params.yaml",
                          "--method", "lamia", "--input", "vectors.npy", "--pairs", "pairs.parquet",
                          "--out", "sids/lamia.parquet", "--model-dir", "tok/lamia", "--metrics", "sid_lamia.json",
                          "--plots", "plots"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    table = SidTable.load(tmp_path / "sids/lamia.parquet")
    assert table.num_items == 120 and table.vocab_sizes[:4] == [8] * 4
    metrics = json.loads((tmp_path / "sid_lamia.json").read_text())
    rq_schema = ["tokenizer", "items", "levels", "codebook_size", "utilization_l0", "perplexity_l0", "unique_codes",
                 "collision_rate", "uniqueness", "max_items_per_code", "suffix_size", "heldout_pairs_share_l0",
                 "random_pairs_share_l0", "runtime_s", "peak_rss_mb"]
    assert all(k in metrics for k in rq_schema) and metrics["tokenizer"] == "lamia" and metrics["levels"] == 4
    assert 0 <= metrics["nmi_between_positions"] <= 1 and "mean_cosine_between_positions" in metrics
    assert all(np.isscalar(v) for v in metrics.values())
    np.testing.assert_array_equal(PaletteQuantizer.load(tmp_path / "tok/lamia").codes(x), table.codes[:, :4])
