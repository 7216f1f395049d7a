"""End to end: `dvc repro embed` on a tiny ml-1m in a throw-away repo, then the outputs and DVC's bookkeeping.

One repro is shared by the module (it loads the real embedded MiniLM, a few seconds); tests that change
params.yaml put it back.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import create_tiny_repo

DATA_METRIC_KEYS = {"dataset", "protocol", "users", "items", "events", "events_train", "events_valid", "events_test",
                    "cold_start_items", "cold_start_test_events", "median_history_length",
                    "median_train_history_length", "dropped", "dropped_total", "runtime_s", "peak_rss_mb"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = create_tiny_repo(tmp_path_factory.mktemp("e2e") / "repo")
    repo.repro("embed")
    return repo


def test_repro_foundation(built):
    root = built.root
    for rel in ["data/prepared/items.parquet", "data/prepared/events.parquet", "data/prepared/split.json",
                "data/embeddings/content.npy", "data/embeddings/content.json", "metrics/data.json",
                "metrics/embed.json", "dvc.lock"]:
        assert (root / rel).is_file(), f"{rel} was not written"

    items = pd.read_parquet(root / "data/prepared/items.parquet")
    events = pd.read_parquet(root / "data/prepared/events.parquet")
    split = built.read_json("data/prepared/split.json")
    n = len(items)
    assert n > 0 and items["item_id"].tolist() == list(range(n))
    assert {"item_id", "source_id", "title", "text", "genres", "year", "first_seen"} <= set(items.columns)
    assert any("Amélie" in t for t in items["text"]), "the ISO-8859-1 title did not survive the pipeline"
    assert set(events["split"]) == {"train", "valid", "test"}
    assert events["item_id"].between(0, n - 1).all()
    assert sorted(events["item_id"].unique().tolist()) == list(range(n))
    assert split["dataset"] == "ml-1m" and split["protocol"] == "temporal"
    assert split["counts"] == events["split"].value_counts().to_dict()
    assert sum(split["counts"].values()) == len(events)
    assert set(split["cold_start_items"]) <= set(range(n))

    emb = np.load(root / "data/embeddings/content.npy")
    side = built.read_json("data/embeddings/content.json")
    assert emb.dtype == np.float32 and emb.shape == (n, side["dim"]) and side["items"] == n
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert len(np.unique(emb.round(4), axis=0)) == n, "distinct item texts should give distinct embeddings"

    data = built.read_json("metrics/data.json")
    assert DATA_METRIC_KEYS <= set(data)
    assert data["dataset"] == "ml-1m" and data["items"] == n and data["events"] == len(events)
    assert data["cold_start_items"] == len(split["cold_start_items"])
    embed = built.read_json("metrics/embed.json")
    assert embed["items"] == n and embed["dim"] == emb.shape[1]

    assert built.status("embed") == {}, "dvc status should report nothing to do right after repro"


@pytest.mark.parametrize("override, changed, unchanged", [
    ({"encoder": {"batch_size": 16}}, {"embed"}, {"fetch", "prepare"}),
    ({"split": {"test_frac": 0.2}}, {"prepare"}, {"fetch", "embed"}),
    ({"seed": 7}, {"embed", "prepare"}, {"fetch"}),  # the seed orders equal-timestamp events (split.ties: random)
], ids=["encoder", "split", "seed"])
def test_params_invalidate_only_their_stages(built, override, changed, unchanged):
    before = built.params_path.read_text(encoding="utf-8")
    try:
        built.set_params(override)
        stale = set(built.status("embed"))
        assert changed <= stale and not (unchanged & stale), stale
    finally:
        built.params_path.write_text(before, encoding="utf-8")
    assert built.status("embed") == {}


def test_tiny_repo_params(make_tiny_repo):
    from sidrec.config import load_params

    repo = make_tiny_repo(params={"split": {"protocol": "leave_one_out"}, "encoder": {"batch_size": 8}})
    p = load_params(repo.params_path)
    assert p.dataset.name == "ml-1m" and p.split.protocol == "leave_one_out" and p.encoder.batch_size == 8
    assert (repo.root / "data/raw/ml-1m/ratings.dat").is_file()
    assert "remote" not in (repo.root / ".dvc/config").read_text()
    with pytest.raises(KeyError, match="split.protcol"):
        repo.set_params({"split": {"protcol": "temporal"}})
    assert repo.run("git", "status", "--porcelain").stdout == "", "the fixture commits everything it writes"
