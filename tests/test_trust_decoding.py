"""Decoding safety: over random catalogues, tries, prompts and banned lists, trie-constrained beam search returns
only catalogue items, never a duplicate, never a banned item, and always min(k, items left) of them, best first.

Catalogues are drawn with 1-4 code positions, either one token range per position (RQ-style layout) or one range
shared by every position (parallel codes, LAMIA-style), 1-40 items; the models are tiny random GPT-2 and Llama
(the two architecture families the decoder serves). Hypothesis is derandomized, so CI replays the same cases.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidrec.generate import ItemTrie, beam_search
from test_generate import make_model

VOCAB = 48
CODES = 12  # tokens per position; layered catalogues put position d at 12 * d .. 12 * d + 11
MODELS = {kind: make_model(kind, VOCAB, seed=3) for kind in ("gpt2", "llama")}
PROPERTY = dict(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only adds synchronisation (and stalls on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def catalogues(draw) -> np.ndarray:
    """(N, P) unique item token paths."""
    depth = draw(st.integers(1, 4))
    layered = draw(st.booleans())
    paths = draw(st.lists(st.tuples(*[st.integers(0, CODES - 1)] * depth), min_size=1, max_size=40, unique=True))
    tokens = np.array(paths, dtype=np.int64).reshape(len(paths), depth)
    event(f"depth {depth}, {'one range per position' if layered else 'one shared range'}")
    return tokens + CODES * np.arange(depth) if layered else tokens


@st.composite
def decode_cases(draw):
    tokens = draw(catalogues())
    n = len(tokens)
    beam = draw(st.integers(1, 12))
    k = draw(st.integers(1, beam))
    prompts = draw(st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8), min_size=1, max_size=4))
    banned = draw(st.one_of(st.none(), st.lists(st.lists(st.integers(0, n - 1), unique=True, max_size=n),
                                                min_size=len(prompts), max_size=len(prompts))))
    return tokens, beam, k, prompts, banned, draw(st.integers(1, 4)), draw(st.sampled_from(sorted(MODELS)))


@settings(max_examples=300, **PROPERTY)
@given(case=decode_cases())
def test_property_constrained_decoding_is_safe(case):
    tokens, beam, k, prompts, banned, batch_size, kind = case
    n = len(tokens)
    items, scores = beam_search(MODELS[kind], prompts, ItemTrie(tokens), beam_size=beam, k=k, batch_size=batch_size,
                                banned=banned, pad_token_id=0)
    assert items.shape == scores.shape == (len(prompts), k)
    for i, (row, row_scores) in enumerate(zip(items.tolist(), scores)):
        ban = set(banned[i]) if banned is not None else set()
        want = min(k, n - len(ban))
        found = [it for it in row if it >= 0]
        assert row == found + [-1] * (k - len(found)), f"a gap before the last result: {row}"
        assert all(0 <= it < n for it in found), f"an item outside the catalogue: {row}"
        assert len(set(found)) == len(found), f"a duplicate: {row}"
        assert not set(found) & ban, f"a banned item: {row}, banned {sorted(ban)}"
        assert len(found) == want, f"{len(found)} results, expected min(k={k}, {n} items - {len(ban)} banned)"
        assert np.isfinite(row_scores[:want]).all() and np.isneginf(row_scores[want:]).all()
        assert (np.diff(row_scores[:want]) <= 1e-6).all(), "results are not best first"
    event("results < k (small catalogue or many banned)" if n - (len(banned[0]) if banned else 0) < k
          else "k results")


@settings(max_examples=150, **PROPERTY)
@given(tokens=catalogues())
def test_property_trie_matches_the_catalogue(tokens):
    """Every prefix allows exactly the next tokens some item continues with; full paths map back to their item."""
    trie = ItemTrie(tokens)
    rows = [tuple(r) for r in tokens.tolist()]
    for d in range(tokens.shape[1]):
        for prefix in {r[:d] for r in rows}:
            assert trie.allowed(prefix).tolist() == sorted({r[d] for r in rows if r[:d] == prefix})
    assert [trie.item_of(r) for r in rows] == list(range(len(rows)))
    outside = (VOCAB,) * tokens.shape[1]
    assert trie.item_of(outside) == -1 and trie.allowed(outside[:1]).tolist() == []
