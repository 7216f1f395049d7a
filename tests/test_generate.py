"""Tests for the trie-constrained beam search (sidrec.generate) on tiny random GPT-2 and Llama models.

References: HF `generate` with `prefix_allowed_tokens_fn`, and exact item scores by teacher forcing every
catalogue path (beam search with beam_size >= N is exhaustive, so it must reproduce the exact ranking).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hf_reference import hf_generate_topk
from sidrec.generate import ItemTrie, beam_search, unconstrained_beam_search
from sidrec.tokenizers.sids import TokenLayout, add_collision_suffix

N_ITEMS = 60


def make_model(kind: str, vocab_size: int, seed: int = 0):
    """Tiny random causal LM; a wide init spreads the logits so top-k ties are unlikely."""
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, n_positions=64,
                            initializer_range=0.2, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size, initializer_range=0.2,
                         bos_token_id=0, eos_token_id=2)  # eos 2 is an item token: generate must not stop on it
    return LlamaForCausalLM(config).eval()


def make_catalogue(n: int, levels: int = 3, codebook: int = 4, seed: int = 0) -> tuple[TokenLayout, np.ndarray]:
    """Random RQ-style codes + collision suffix -> (layout, (n, levels + 1) item tokens)."""
    codes = add_collision_suffix(np.random.default_rng(seed).integers(0, codebook, size=(n, levels)))
    layout = TokenLayout([codebook] * levels + [int(codes[:, -1].max()) + 1])
    return layout, layout.item_tokens(codes)


def make_prompts(layout: TokenLayout, lengths: list[int], seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[layout.bos] + rng.integers(0, layout.sep + 1, size=n).tolist() for n in lengths]


def exact_scores(model, prompt: list[int], item_tokens: np.ndarray) -> np.ndarray:
    """(N,) log p(item path | prompt), by teacher forcing all paths in one batch."""
    paths = torch.as_tensor(item_tokens)  # (N, P)
    ids = torch.cat([torch.tensor(prompt).expand(len(paths), -1), paths[:, :-1]], dim=1)  # (N, T + P - 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)  # (N, T + P - 1, V)
    logp = logp[:, len(prompt) - 1:]  # (N, P, V): the distributions that predict the path tokens
    return logp.gather(2, paths[:, :, None]).squeeze(2).sum(1).numpy()


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue(N_ITEMS)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, catalogue):
    return make_model(request.param, catalogue[0].vocab_size)


def assert_same_topk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    for items_a, items_b in zip(a[0], b[0]):
        assert set(items_a.tolist()) == set(items_b.tolist())
    np.testing.assert_allclose(a[1], b[1], atol=1e-4)


def test_trie_matches_brute_force():
    tokens = np.unique(np.random.default_rng(3).integers(0, 5, size=(40, 3)) + np.array([0, 10, 20]), axis=0)
    tokens = tokens[np.random.default_rng(4).permutation(len(tokens))]  # item order unrelated to token order
    trie = ItemTrie(tokens)
    for d in range(3):
        for prefix in {tuple(r[:d]) for r in tokens.tolist()}:
            expected = sorted({r[d] for r in tokens.tolist() if tuple(r[:d]) == prefix})
            assert trie.allowed(prefix).tolist() == expected
    assert trie.allowed((99,)).tolist() == [] and trie.allowed(tuple(tokens[0])).tolist() == []
    assert [trie.item_of(r) for r in tokens.tolist()] == list(range(len(tokens)))
    assert trie.item_of((tokens[0, 0], tokens[0, 1], 99)) == -1
    with pytest.raises(ValueError, match="share"):
        ItemTrie(np.array([[1, 2], [1, 2]]))


def test_matches_hf_generate(model, catalogue):
    layout, tokens = catalogue
    prompts = make_prompts(layout, [3, 11, 0, 16, 6, 1])
    ours = beam_search(model, prompts, tokens, batch_size=4, pad_token_id=layout.pad)
    ref = hf_generate_topk(model, prompts, tokens, batch_size=3, pad_token_id=layout.pad)
    assert_same_topk(ours, ref)


def test_scores_are_item_logprobs_and_exhaustive_beam_is_exact(model, catalogue):
    layout, tokens = catalogue
    prompts = make_prompts(layout, [2, 9])
    items, scores = beam_search(model, prompts, tokens, pad_token_id=layout.pad)
    full_items, full_scores = beam_search(model, prompts, tokens, beam_size=N_ITEMS, k=10, pad_token_id=layout.pad)
    for i, prompt in enumerate(prompts):
        exact = exact_scores(model, prompt, tokens)
        np.testing.assert_allclose(scores[i], exact[items[i]], atol=1e-4)
        np.testing.assert_array_equal(full_items[i], np.argsort(-exact, kind="stable")[:10])
        np.testing.assert_allclose(full_scores[i], np.sort(exact)[::-1][:10], atol=1e-4)


def test_results_are_distinct_catalogue_items(model, catalogue):
    layout, tokens = catalogue
    items, scores = beam_search(model, make_prompts(layout, [1, 5, 12]), tokens, k=7, pad_token_id=layout.pad)
    assert items.shape == scores.shape == (3, 7)
    for row, row_scores in zip(items, scores):
        assert ((row >= 0) & (row < N_ITEMS)).all() and len(set(row.tolist())) == 7
        assert np.isfinite(row_scores).all() and (np.diff(row_scores) <= 0).all()


def test_tiny_catalogue_returns_only_real_items(model, catalogue):
    layout, tokens = catalogue
    tiny = tokens[[5, 17, 42]]  # 3 items: most beams run out of valid continuations
    prompts = make_prompts(layout, [4, 8])
    items, scores = beam_search(model, prompts, tiny, beam_size=10, k=10, pad_token_id=layout.pad)
    assert sorted(items[0, :3].tolist()) == sorted(items[1, :3].tolist()) == [0, 1, 2]
    assert (items[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()
    assert_same_topk((items, scores), hf_generate_topk(model, prompts, tiny, pad_token_id=layout.pad))


def test_banned_items_are_skipped(model, catalogue):
    layout, tokens = catalogue
    prompts = make_prompts(layout, [3, 7, 10])
    full_items, _ = beam_search(model, prompts, tokens, beam_size=N_ITEMS, k=N_ITEMS, pad_token_id=layout.pad)
    banned = [full_items[0, :3].tolist(), [int(full_items[1, 1]), 0, 59], list(range(2, N_ITEMS))]
    items, scores = beam_search(model, prompts, tokens, beam_size=N_ITEMS, k=10, banned=banned,
                                pad_token_id=layout.pad)
    for i in range(2):  # exhaustive search: the unbanned ranking with the banned items removed
        expected = [it for it in full_items[i].tolist() if it not in banned[i]][:10]
        assert items[i].tolist() == expected
    assert sorted(items[2, :2].tolist()) == [0, 1] and (items[2, 2:] == -1).all()
    assert np.isneginf(scores[2, 2:]).all()
    beam_items, _ = beam_search(model, prompts, tokens, banned=banned, pad_token_id=layout.pad)
    for row, ban in zip(beam_items, banned):
        assert not set(row.tolist()) & set(ban)


def test_banned_prefixes_do_not_waste_beams(model, catalogue):
    """Banning every item under the best level-0 prefixes must not leave the top-k short: exhausted prefixes are
    pruned at the depth where they become empty, not only at the last token."""
    layout, tokens = catalogue
    prompt = make_prompts(layout, [6])
    exact = exact_scores(model, prompt[0], tokens)  # (N,)
    first = tokens[:, 0]
    best_prefixes = sorted(set(first), key=lambda t: -exact[first == t].max())[:2]
    ban = np.flatnonzero(np.isin(first, best_prefixes)).tolist()
    items, _ = beam_search(model, prompt, tokens, beam_size=3, k=3, banned=[ban], pad_token_id=layout.pad)
    assert (items >= 0).all() and not set(items[0].tolist()) & set(ban)


def test_padding_invariance(model, catalogue):
    layout, tokens = catalogue
    short, *longer = make_prompts(layout, [2, 15, 9, 12], seed=7)
    alone = beam_search(model, [short], tokens, pad_token_id=layout.pad)
    batched = beam_search(model, longer + [short], tokens, batch_size=8, pad_token_id=layout.pad)
    np.testing.assert_array_equal(alone[0][0], batched[0][-1])
    np.testing.assert_allclose(alone[1][0], batched[1][-1], atol=1e-5)


def test_parallel_codes(model, catalogue):
    layout, _ = catalogue
    rng = np.random.default_rng(5)  # every position draws independently from one shared token range
    tokens = np.unique(rng.integers(0, 10, size=(80, 3)), axis=0)[:50]
    trie = ItemTrie(tokens)
    prompts = make_prompts(layout, [5, 13])
    assert_same_topk(beam_search(model, prompts, trie, pad_token_id=layout.pad),
                     hf_generate_topk(model, prompts, trie, pad_token_id=layout.pad))
    items, _ = beam_search(model, prompts, trie, beam_size=len(tokens), k=10, pad_token_id=layout.pad)
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(items[i], np.argsort(-exact_scores(model, prompt, tokens), kind="stable")[:10])


def test_unconstrained_flags_invalid_paths(model, catalogue):
    layout, tokens = catalogue
    tiny = tokens[[5, 17, 42]]  # random paths over the whole vocabulary are almost never one of 3 items
    prompts = make_prompts(layout, [3, 9])
    items, scores = unconstrained_beam_search(model, prompts, tiny, pad_token_id=layout.pad)
    ref_items, ref_scores = hf_generate_topk(model, prompts, tiny, pad_token_id=layout.pad, constrained=False)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    assert (items == -1).all() and np.isfinite(scores).all()


def test_unconstrained_equals_constrained_when_every_path_is_an_item(model, catalogue):
    vocab = catalogue[0].vocab_size
    tokens = np.array(list(itertools.product(range(vocab), repeat=2)))  # (V * V, 2): the trie allows everything
    prompts = [[1, 4, 2], [7]]
    free = unconstrained_beam_search(model, prompts, tokens, pad_token_id=0)
    constrained = beam_search(model, prompts, tokens, pad_token_id=0)
    assert (free[0] >= 0).all()
    np.testing.assert_array_equal(free[0], constrained[0])
    np.testing.assert_allclose(free[1], constrained[1], atol=1e-5)


def test_bad_arguments(model, catalogue):
    layout, tokens = catalogue
    prompts = make_prompts(layout, [3])
    with pytest.raises(ValueError, match="k <= beam_size"):
        beam_search(model, prompts, tokens, beam_size=5, k=10)
    with pytest.raises(ValueError, match="banned item ids"):
        beam_search(model, prompts, tokens, banned=[[N_ITEMS]])
    with pytest.raises(ValueError, match="outside the model vocabulary"):
        beam_search(model, prompts, tokens + 1000)
