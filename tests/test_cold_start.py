"""The cold-start lens: TIGER's fill (sidrec.generate.cold_fill), the epsilon selection (sidrec.evaluate.cold), the
content-knn reference and the epsilon params checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.config import NON_SID_SYSTEMS, SID_SYSTEMS, EvalConfig, ParamsError, from_dict
from sidrec.evaluate.cold import choose_epsilon, score_lists, selection_cases
from sidrec.generate import ItemTrie, beam_search, beam_search_with_prefixes, cold_fill, cold_slots
from sidrec.models.content import ContentKNNRecommender
from tests.test_generate import make_catalogue, make_model, make_prompts

N = 60


@pytest.fixture(scope="module")
def setup():
    layout, tokens = make_catalogue(N)
    model = make_model("gpt2", layout.vocab_size)
    prompts = make_prompts(layout, [3, 11, 5, 16, 6, 1, 8, 2])
    return layout, tokens, model, prompts


def test_prefixes_leave_beam_search_bit_for_bit(setup):
    layout, tokens, model, prompts = setup
    items, scores = beam_search(model, prompts, tokens, pad_token_id=layout.pad)
    beams = beam_search_with_prefixes(model, prompts, tokens, pad_token_id=layout.pad)
    np.testing.assert_array_equal(beams.items, items)
    np.testing.assert_array_equal(beams.scores, scores)
    assert beams.prefix_nodes.shape == (len(prompts), tokens.shape[1] - 1, 10)
    # slot d holds depth-(d + 1) nodes: each kept prefix's score is its exact teacher-forced log-probability
    trie = ItemTrie(tokens)
    for i, prompt in enumerate(prompts[:3]):
        for d in range(tokens.shape[1] - 1):
            for node, score in zip(beams.prefix_nodes[i, d], beams.prefix_scores[i, d]):
                if node < 0:
                    continue
                path = next(r for r in tokens.tolist() if trie.node_of(r[:d + 1]) == node)[:d + 1]
                with torch.no_grad():
                    ids = torch.tensor([prompt + path[:-1]])
                    logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0, len(prompt) - 1:]
                exact = float(logp.gather(1, torch.tensor(path)[:, None]).sum())
                assert score == pytest.approx(exact, abs=1e-4)


def test_epsilon_zero_is_plain_beam_search(setup):
    layout, tokens, model, prompts = setup
    beams = beam_search_with_prefixes(model, prompts, tokens, pad_token_id=layout.pad)
    assert cold_fill(ItemTrie(tokens), beams, list(range(N)), cold_slots(0.0, 10)) is beams.items
    assert cold_slots(0.3, 10) == 3 and cold_slots(0.29, 10) == 2 and cold_slots(1.0, 10) == 10
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cold_slots(1.5, 10)


def test_fill_takes_the_last_slots_deepest_prefix_first(setup):
    layout, tokens, model, prompts = setup
    trie = ItemTrie(tokens)
    beams = beam_search_with_prefixes(model, prompts, tokens, pad_token_id=layout.pad)
    listed = set(beams.items.ravel().tolist())
    cold = [i for i in range(N) if i not in listed]  # items no list holds
    banned = [[cold[0]]] * len(prompts)
    out = cold_fill(trie, beams, cold, 3, banned)
    p = tokens.shape[1]
    for i in range(len(prompts)):
        added = [x for x in out[i] if x not in beams.items[i]]
        assert len(added) <= 3 and cold[0] not in added
        assert out[i][:10 - len(added)].tolist() == beams.items[i][:10 - len(added)].tolist()  # warm head untouched
        assert set(added) <= set(cold) and len(set(out[i].tolist())) == 10
        # the expected order: cold items under the kept prefixes, deepest prefix first, then by prefix score
        expected = []
        for d in range(p - 2, -1, -1):
            order = np.argsort(-beams.prefix_scores[i, d], kind="stable")
            for node in beams.prefix_nodes[i, d][order]:
                expected += [c for c in sorted(cold) if node >= 0 and trie.node_of(tokens[c, :d + 1]) == node
                             and c != cold[0] and c not in expected]
        assert added == expected[:3]
    assert any(x not in beams.items[i] for i, row in enumerate(out) for x in row)  # the fill did something


def test_fill_adds_only_items_under_kept_prefixes(setup):
    from dataclasses import replace

    layout, tokens, model, prompts = setup
    beams = beam_search_with_prefixes(model, prompts[:1], tokens, pad_token_id=layout.pad)
    trie = ItemTrie(tokens)
    # keep a single first-token prefix and no deeper one: only cold items below it may be added
    node = int(beams.prefix_nodes[0, 0, 0])
    nodes = np.full_like(beams.prefix_nodes, -1)
    nodes[0, 0, 0] = node
    only = replace(beams, prefix_nodes=nodes)
    listed = set(beams.items[0].tolist())
    under = [c for c in range(N) if trie.node_of(tokens[c, :1]) == node and c not in listed]
    far = [c for c in range(N) if trie.node_of(tokens[c, :1]) != node and c not in listed]
    assert under and far
    np.testing.assert_array_equal(cold_fill(trie, only, far, 3), beams.items)  # nothing matches: list unchanged
    out = cold_fill(trie, only, far + under, 3)
    assert out[0, 7:].tolist() == sorted(under)[:3] and out[0, :7].tolist() == beams.items[0, :7].tolist()


class _Rec:
    """A semantic-ID recommender double over the tiny GPT (prompts from each case's history)."""

    progress = False

    def __init__(self, model, tokens, layout, cold):
        from sidrec.generate import TrieRecommender
        from sidrec.recommend import DecodeSettings

        class R(TrieRecommender):
            def _prompts(self, cases):
                return [[layout.bos] + [int(x) % layout.sep for x in h] for h in cases["history"]]

        self.inner = R()
        self.inner.model, self.inner.trie, self.inner.pad_id = model, ItemTrie(tokens), layout.pad
        self.inner.decode = DecodeSettings(cold_items=tuple(cold))


def _events(rng, users=30, items=N):
    rows = []
    for u in range(users):
        for t in range(12):
            split = "train" if t < 8 else ("valid" if t < 10 else "test")
            rows.append((u, int(rng.integers(0, items - 5)) if split == "train" else int(rng.integers(0, items)),
                         t, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


def test_selection_cases_and_rule(setup):
    layout, tokens, model, _ = setup
    events = _events(np.random.default_rng(0))
    cold = set(range(N)) - set(events.loc[events["split"] == "train", "item_id"])
    cases, counts = selection_cases(events, 5, cold, 20, seed=0)
    assert counts["cold"] == counts["cold_total"] > 0 and counts["warm"] == 20 < counts["warm_total"]
    assert cases["cold"].sum() == counts["cold"] and list(cases["case_id"]) == list(range(len(cases)))
    rec = _Rec(model, tokens, layout, cold).inner
    out = choose_epsilon(rec, cases, counts, (0.0, 0.1, 0.3), 10, max_loss=0.05)
    rows = {r["epsilon"]: r for r in out["valid"]}
    assert out["chosen"] in rows and rows[0.0]["cold_recall@10"] <= max(r["cold_recall@10"] for r in rows.values())
    ok = [e for e, r in rows.items() if r["ndcg@10"] >= 0.95 * rows[0.0]["ndcg@10"]]
    best = max(rows[e]["cold_recall@10"] for e in ok)
    assert out["chosen"] == min(e for e in ok if rows[e]["cold_recall@10"] == best)
    # no tolerance at all: only an epsilon that costs nothing may be chosen
    strict = choose_epsilon(rec, cases, counts, (0.0, 0.1, 0.3), 10, max_loss=0.0)
    assert {r["epsilon"]: r for r in strict["valid"]}[strict["chosen"]]["ndcg@10"] >= rows[0.0]["ndcg@10"]


def test_score_lists_weights_groups_by_their_validation_shares():
    cases = pd.DataFrame({"target": [1, 2, 3, 4], "cold": [True, False, False, False]})
    items = np.array([[1, 9], [9, 2], [9, 9], [9, 9]])
    out = score_lists(items, cases, {"cold_total": 10, "warm_total": 90}, k=2)
    warm = (1 / np.log2(3)) / 3
    assert out["cold_recall@2"] == 1.0 and out["warm_ndcg@2"] == pytest.approx(warm)
    assert out["ndcg@2"] == pytest.approx(0.1 * 1.0 + 0.9 * warm)


def test_content_knn_ranks_by_cosine_to_the_history_mean():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.7, 0.7]], dtype=np.float32)
    rec = ContentKNNRecommender(emb)
    cases = pd.DataFrame({"history": [[0], [2], []], "seen": [[0], [2], []]})
    items, scores = rec.recommend(cases, 3)
    assert items[0].tolist() == [1, 4, 2] and items[1].tolist() == [4, 1, 0]
    assert items[2].tolist() == [0, 1, 2]  # no history: every item scores 0, item-id order
    assert np.all(np.diff(scores[0]) <= 0) and rec.invalid_rate(cases, 3) == 0.0
    keep = ContentKNNRecommender(emb, exclude_seen=False)
    assert keep.recommend(cases.iloc[:1], 1)[0].tolist() == [[0]]
    few, few_scores = rec.recommend(pd.DataFrame({"history": [[0]], "seen": [[0, 1, 2, 3]]}), 3)
    assert few.tolist() == [[4, -1, -1]] and np.isinf(few_scores[0, 1:]).all()


def test_content_knn_load(tmp_path):
    np.save(tmp_path / "content.npy", np.eye(3, dtype=np.float32))
    assert ContentKNNRecommender.load(tmp_path).embeddings.shape == (3, 3)
    with pytest.raises(FileNotFoundError, match="dvc repro embed"):
        ContentKNNRecommender.load(tmp_path / "missing.npy")


def _eval(**over) -> dict:
    base = {"max_history": 20, "beam_size": 10, "k": 10, "max_cases": 0, "valid_cases": 1000, "exclude_seen": True,
            "bootstrap": 1000, "invalid_cases": 1000, "batch_size": 64, "llm_dtype": "bfloat16",
            "cold_epsilon": [0.0, 0.1, 0.2, 0.3], "cold_epsilon_by_system": {}, "cold_max_loss": 0.05}
    return {**base, **over}


@pytest.mark.parametrize("over, match", [
    ({"cold_epsilon": [0.0, 1.5]}, r"`eval.cold_epsilon` has 1.5; every epsilon must lie in \[0, 1\]"),
    ({"cold_epsilon": [-0.1]}, r"`eval.cold_epsilon` has -0.1"),
    ({"cold_epsilon_by_system": {"sasrec": 0.1}}, r"`eval.cold_epsilon_by_system.sasrec` is 0.1, but sasrec does not "
                                                   r"decode semantic IDs"),
    ({"cold_epsilon_by_system": {"popularity": [0.0, 0.2]}}, r"popularity does not decode semantic IDs"),
    ({"cold_epsilon_by_system": {"plum": [0.0, 2]}}, r"`eval.cold_epsilon_by_system.plum` has 2"),
    ({"cold_epsilon_by_system": {"plumm": 0.1}}, r"unknown key `eval.cold_epsilon_by_system.plumm`.*plum"),
    ({"cold_max_loss": 1.0}, r"`eval.cold_max_loss` must lie in \[0, 1\)"),
])
def test_epsilon_params_errors_are_one_line(over, match):
    with pytest.raises(ParamsError, match=match) as err:
        from_dict(EvalConfig, _eval(**over), "eval")
    assert "\n" not in str(err.value)


def test_epsilon_grid_per_system():
    cfg = from_dict(EvalConfig, _eval(cold_epsilon=[0.2, 0.1], cold_epsilon_by_system={"plum": 0.3, "sasrec": 0}),
                    "eval")
    assert cfg.epsilon_grid("baseline") == (0.0, 0.1, 0.2) and cfg.epsilon_grid("plum") == (0.0, 0.3)
    assert cfg.epsilon_grid("sasrec") == (0.0,) and cfg.epsilon_grid("content-knn") == (0.0,)


def test_sid_system_lists_match_the_registry():
    from sidrec.systems import SYSTEMS, decodes_sids

    assert set(SID_SYSTEMS) | set(NON_SID_SYSTEMS) == set(SYSTEMS)
    assert all(decodes_sids(s) for s in SID_SYSTEMS) and not any(decodes_sids(s) for s in NON_SID_SYSTEMS)


def test_report_cold_section_shows_epsilon_cost_and_yardstick():
    from sidrec.evaluate.metrics import summarize
    from sidrec.evaluate.report_data import SystemResult
    from sidrec.evaluate.report_lenses import cold_start_section

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 10)
    cold = rng.random(400) < 0.1
    rank0 = np.where(rng.random(400) < 0.3, rng.integers(0, 10, 400), -1)
    rank = rank0.copy()
    rank[cold & (rng.random(400) < 0.5)] = 9  # the fill finds half of the cold targets, in the last slot
    rank[~cold & (rank0 == 9)] = -1  # and pushes the warm items of the last slot out
    knn_rank = np.where(cold, np.where(rng.random(400) < 0.2, 3, -1), -1)

    def result(name, ranks, eps, extra):
        m = summarize(ranks, cold, np.zeros((400, 10), dtype=np.int64), 100, n_boot=200, users=users)
        m.update(extra)
        m["cold_epsilon"] = {"chosen": eps, "applies": name != "content-knn"}
        cases = pd.DataFrame({"case_id": np.arange(400), "user_id": users, "target": 0, "cold": cold, "rank": ranks,
                              "rank_eps0": rank0 if name != "content-knn" else ranks})
        return SystemResult(name, m, cases)

    base0 = summarize(rank0, cold, np.zeros((400, 10), dtype=np.int64), 100, n_boot=200, users=users)
    plum = result("plum", rank, 0.1, {"eps0": {"cold_start": base0["cold_start"]}, "cold_share@10": 0.05,
                                      "cold_start_unconstrained": {"recall@10": 0.0, "cold_share_of_valid": 0.0}})
    knn = result("content-knn", knn_rank, 0.0, {"cold_share@10": 0.2})
    md = cold_start_section([plum, knn], 10, ["lamia"], n_boot=200)
    row = next(line for line in md.splitlines() if line.startswith("| plum |")).strip("|").split("|")
    row = [c.strip() for c in row]
    assert row[5] == "0.1" and row[6] == f"{base0['cold_start']['recall@10']:.4f}" and row[7] == "0.0500"
    assert row[9].startswith("0.0000") and float(row[3].split()[0]) > float(row[6])
    diff = row[8].split()[0]
    expected = (np.where((rank >= 0) & (rank < 10), 1 / np.log2(rank + 2), 0)
                            - np.where((rank0 >= 0) & (rank0 < 10), 1 / np.log2(rank0 + 2), 0)).mean()
    assert float(diff) == pytest.approx(expected, abs=1e-4)
    knn_row = next(line for line in md.splitlines() if line.startswith("| content-knn |"))
    assert "n/a" in knn_row and "| lamia | not run |" in md
    assert "The yardstick is `content-knn`" in md
