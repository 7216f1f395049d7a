"""Semantic-ID tables (sidrec.tokenizers.sids, atomic): collision suffix and ID statistics against hand-computed
values, SidTable validation errors, parquet + sidecar round trip, and the GPT token layout."""
import json

import numpy as np
import pandas as pd
import pytest

from sidrec.tokenizers.atomic import atomic_table
from sidrec.tokenizers.sids import SPECIALS, SidTable, TokenLayout, add_collision_suffix, code_stats


def test_collision_suffix_hand_example():
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1], [1, 2], [0, 0], [2, 1]])
    full = add_collision_suffix(codes)
    # (1,2) is shared by items 0, 2, 4 -> 0, 1, 2 in item order; (0,0) by items 1, 5 -> 0, 1; the rest are unique.
    np.testing.assert_array_equal(full[:, -1], [0, 0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(full[:, :-1], codes)
    assert full.dtype == np.int64
    assert len(np.unique(full, axis=0)) == len(full)


def test_collision_suffix_all_unique_and_all_shared():
    unique = np.array([[0, 1], [1, 0], [2, 2]])
    np.testing.assert_array_equal(add_collision_suffix(unique)[:, -1], [0, 0, 0])
    shared = np.zeros((4, 3), dtype=np.int64)
    np.testing.assert_array_equal(add_collision_suffix(shared)[:, -1], [0, 1, 2, 3])


def test_code_stats_hand_computed():
    codes = np.array([[0, 1], [0, 1], [1, 2], [2, 2]])
    s = code_stats(codes, codebook_size=4)
    # level 0: counts [2, 1, 1, 0] -> 3 of 4 codes used; p = [.5, .25, .25], H = 1.5 ln 2, perplexity 2^1.5
    assert s["utilization_l0"] == pytest.approx(0.75)
    assert s["perplexity_l0"] == pytest.approx(2 ** 1.5)
    # level 1: counts [0, 2, 2, 0] -> 2 of 4 used; p = [.5, .5], perplexity 2
    assert s["utilization_l1"] == pytest.approx(0.5)
    assert s["perplexity_l1"] == pytest.approx(2.0)
    # full codes (0,1) x2, (1,2), (2,2): 2 of 4 items share their code
    assert s["unique_codes"] == 3
    assert s["collision_rate"] == pytest.approx(0.5)
    assert s["uniqueness"] == pytest.approx(0.75)
    assert s["max_items_per_code"] == 2


def test_code_stats_uniform_and_collapsed():
    uniform = np.array([[0], [1], [2], [3]])
    s = code_stats(uniform, 4)
    assert s["perplexity_l0"] == pytest.approx(4.0) and s["utilization_l0"] == 1.0
    assert s["collision_rate"] == 0.0 and s["max_items_per_code"] == 1
    collapsed = np.zeros((5, 1), dtype=np.int64)
    s = code_stats(collapsed, 4)
    assert s["perplexity_l0"] == pytest.approx(1.0) and s["utilization_l0"] == 0.25
    assert s["collision_rate"] == 1.0 and s["max_items_per_code"] == 5


def test_sid_table_rejects_bad_codes():
    with pytest.raises(ValueError, match="share a full code"):
        SidTable(np.array([[0, 1], [0, 1]]), [2, 2], {})
    with pytest.raises(ValueError, match="outside its position's range"):
        SidTable(np.array([[0, 2], [1, 0]]), [2, 2], {})
    with pytest.raises(ValueError, match="outside its position's range"):
        SidTable(np.array([[0, -1], [1, 0]]), [2, 2], {})
    with pytest.raises(ValueError, match="does not match 3 positions"):
        SidTable(np.array([[0, 1], [1, 0]]), [2, 2, 2], {})
    with pytest.raises(ValueError, match="does not match"):
        SidTable(np.array([0, 1]), [2], {})


def test_sid_table_round_trip(tmp_path):
    codes = add_collision_suffix(np.array([[3, 1], [3, 1], [0, 2], [1, 1]]))
    table = SidTable(codes, [4, 3, 2], {"levels": 2, "codebook_size": 4, "suffix_size": 2})
    path = tmp_path / "sids" / "rqvae.parquet"
    table.save(path)
    assert path.exists() and path.with_suffix(".json").exists()
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["vocab_sizes"] == [4, 3, 2] and side["items"] == 4 and side["positions"] == 3 and side["levels"] == 2
    back = SidTable.load(path)
    np.testing.assert_array_equal(back.codes, table.codes)
    assert back.codes.dtype == np.int64
    assert back.vocab_sizes == [4, 3, 2]
    assert back.info["suffix_size"] == 2
    df = pd.read_parquet(path)
    np.testing.assert_array_equal(df["item_id"], np.arange(4))


def test_sid_table_load_rejects_unordered_items(tmp_path):
    path = tmp_path / "sids.parquet"
    SidTable(np.array([[0], [1]]), [2], {}).save(path)
    df = pd.read_parquet(path)
    df.iloc[::-1].to_parquet(path, index=False)
    with pytest.raises(ValueError, match="item_id must be 0..N-1"):
        SidTable.load(path)


def test_token_layout_offsets_specials_vocab():
    layout = TokenLayout([4, 4, 3])
    np.testing.assert_array_equal(layout.offsets, [0, 4, 8])
    assert (layout.bos, layout.sep, layout.eos, layout.pad) == (11, 12, 13, 14)
    assert layout.vocab_size == 15
    np.testing.assert_array_equal(layout.item_tokens(np.array([[0, 0, 0], [3, 2, 1]])), [[0, 4, 8], [3, 6, 9]])
    names = layout.token_names()
    assert len(names) == layout.vocab_size == len(set(names))
    assert [names[layout.bos], names[layout.sep], names[layout.eos], names[layout.pad]] == list(SPECIALS)
    # the same code value at different positions is a different token
    ones = layout.item_tokens(np.array([[1, 1, 1]]))[0]
    assert len({names[t] for t in ones}) == 3


def test_atomic_table():
    table = atomic_table(5)
    np.testing.assert_array_equal(table.codes, np.arange(5)[:, None])
    assert table.vocab_sizes == [5]
    assert table.info["tokenizer"] == "atomic" and table.info["collision_rate"] == 0.0
    layout = TokenLayout(table.vocab_sizes)
    assert layout.bos == 5 and layout.vocab_size == 9
    np.testing.assert_array_equal(layout.item_tokens(table.codes)[:, 0], np.arange(5))
