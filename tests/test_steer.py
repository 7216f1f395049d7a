"""The steerability lens: which users become counterfactual cases, hand-computed scores, and the report section."""
import numpy as np
import pandas as pd
import pytest

from sidrec.evaluate.report_lenses import llm_section, load_steer, steer_section
from sidrec.evaluate.steer import steer_cases, steer_metrics
from sidrec.io import write_json, write_parquet

# 6 items: 0-2 Children's, 3-4 Horror, 5 Drama.
GENRES = [["Children's"], ["Children's", "Comedy"], ["Children's"], ["Horror"], ["Horror", "Drama"], ["Drama"]]
ITEMS = pd.DataFrame({"item_id": range(6), "title": [f"film {i}" for i in range(6)], "genres": GENRES})


def _events(histories: dict[int, list[int]], split: str = "train") -> pd.DataFrame:
    rows = [(u, i, t, split) for u, h in histories.items() for t, i in enumerate(h)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


def test_cases_pick_users_leaning_on_the_history_genre_and_not_on_the_request():
    events = pd.concat([
        _events({0: [0, 1, 2], 1: [0, 3, 4], 2: [5, 5, 0], 3: [1, 2, 5]}),
        _events({2: [1, 2, 0, 1]}, split="test"),  # test events never make anyone qualify
    ])
    cases = steer_cases(events, ITEMS, [("Children's", "Horror")], dominance=0.6, max_users=10, max_history=2, seed=0)
    # user 0: 3/3 Children's, 0 Horror -> in; user 1: 1/3 Children's -> out; user 2 (train only): 1/3 -> out;
    # user 3: 2/3 Children's, 0 Horror -> in.
    assert cases["user_id"].tolist() == [0, 3]
    assert cases["history"].tolist() == [[1, 2], [2, 5]] and cases["seen"].tolist() == [[0, 1, 2], [1, 2, 5]]
    assert set(cases["constraint"]) == {"Horror"} and (cases["target"] == -1).all()


def test_cases_are_sampled_reproducibly_and_bad_genres_fail_with_the_key():
    events = _events({u: [0, 1, 2] for u in range(30)})
    a = steer_cases(events, ITEMS, [("Children's", "Horror")], 0.5, max_users=7, max_history=3, seed=1)
    b = steer_cases(events, ITEMS, [("Children's", "Horror")], 0.5, max_users=7, max_history=3, seed=1)
    assert len(a) == 7 and a["user_id"].tolist() == b["user_id"].tolist()
    with pytest.raises(ValueError, match=r"steer.pairs.*'Western'"):
        steer_cases(events, ITEMS, [("Children's", "Western")], 0.5, 7, 3, 0)
    with pytest.raises(ValueError, match="steer.pairs"):
        steer_cases(events, ITEMS, [("Horror", "Horror")], 0.5, 7, 3, 0)


def test_metrics_match_hand_computed_values():
    cases = pd.DataFrame({"case_id": [0, 1], "user_id": [0, 1], "source": ["Children's"] * 2,
                          "constraint": ["Horror"] * 2, "history": [[0], [1]], "seen": [[0, 1], [1]],
                          "target": [-1, -1], "cold": [False, False]})
    emb = np.eye(6, dtype=np.float32)
    emb[3] = emb[0]  # item 3 sits exactly on item 0
    topk = np.array([[3, 4, 5, -1], [4, 0, 2, 5]])
    counts = np.array([9, 9, 9, 1, 5, 0])
    per_case, m = steer_metrics(topk, cases, GENRES, emb, counts, k=4, n_boot=200, seed=0)
    # case 0: 2 of 4 slots Horror (the empty slot counts as unsatisfied); case 1: 1 of 4.
    assert per_case["satisfied"].tolist() == [0.5, 0.25] and m["satisfied@4"] == pytest.approx(0.375)
    # unseen: case 0 items 2-5 (2 Horror of 4); case 1 items 0,2,3,4,5 (2 of 5).
    assert per_case["base_rate"].tolist() == pytest.approx([0.5, 0.4])
    # closeness of case 0 to history [0]: cos(3,0)=1, cos(4,0)=0, cos(5,0)=0 -> 1/3.
    assert per_case["closeness"][0] == pytest.approx(1 / 3)
    # reference = popular unseen Horror items [4, 3] for case 0: cos 0 and 1 -> 0.5.
    assert per_case["reference_closeness"][0] == pytest.approx(0.5)
    assert m["satisfied@4_ci_low"] <= 0.375 <= m["satisfied@4_ci_high"]
    assert m["pairs"]["Children's->Horror"]["cases"] == 2 and m["pairs"]["Children's->Horror"]["users"] == 2
    assert m["steer_users"] == 2 and m["bootstrap_unit"] == "user"


def test_satisfied_interval_resamples_users_across_pairs():
    # 10 users, each a case of 2 pairs with the same satisfied share: the per-user interval is the one over 10 users.
    users = np.tile(np.arange(10), 2)
    cases = pd.DataFrame({"case_id": range(20), "user_id": users,
                          "source": ["Children's"] * 10 + ["Drama"] * 10, "constraint": ["Horror"] * 20,
                          "history": [[0]] * 20, "seen": [[0]] * 20, "target": [-1] * 20, "cold": [False] * 20})
    hit = np.arange(10) < 4
    topk = np.where(hit[users][:, None], [[3, 4]], [[1, 2]])
    _, m = steer_metrics(topk, cases, GENRES, np.eye(6), np.ones(6), k=2, n_boot=500, seed=0)
    assert m["cases"] == 20 and m["steer_users"] == 10
    assert m["pairs"]["Drama->Horror"]["users"] == 10
    assert m["satisfied@2"] == pytest.approx(0.4)
    width_user = m["satisfied@2_ci_high"] - m["satisfied@2_ci_low"]
    width_case = m["satisfied@2_ci_high_case"] - m["satisfied@2_ci_low_case"]
    assert width_user > 1.2 * width_case


def _write_steer(tmp_path, system, reads, topk):
    cases = pd.DataFrame({"case_id": [0, 1], "user_id": [0, 1], "source": ["Children's"] * 2,
                          "constraint": ["Horror"] * 2, "history": [[0, 1], [1, 2]], "seen": [[0, 1], [1, 2]],
                          "target": [-1, -1], "cold": [False, False]})
    per_case, m = steer_metrics(np.array(topk), cases, GENRES, np.eye(6), np.ones(6), k=2, n_boot=100, seed=0)
    write_parquet(tmp_path / "steer" / f"{system}.parquet", per_case)
    write_json(tmp_path / "metrics" / f"steer_{system}.json", {"system": system, "reads_constraints": reads, **m})


def test_report_section_compares_readers_with_blind_systems_and_shows_examples(tmp_path):
    _write_steer(tmp_path, "plum", True, [[3, 4], [4, 3]])
    _write_steer(tmp_path, "baseline", False, [[2, 5], [0, 3]])
    steer = load_steer(tmp_path / "metrics", tmp_path / "steer", ["plum", "baseline", "lamia"])
    assert list(steer) == ["plum", "baseline"]
    md = steer_section(steer, ITEMS["title"].tolist(), GENRES, k=2, n_boot=100, seed=0, not_run=["lamia"])
    summary = md.split("per pair")[0]
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in summary.splitlines() if ln.startswith("| ")}
    assert rows["plum"].startswith("| plum | yes | 1.000") and rows["baseline"].startswith("| baseline | no | 0.250")
    assert "against `baseline`" in md and "+0.750" in md
    assert "2 cases from 2 users" in md and "per-user" in md
    assert rows["lamia"].startswith("| lamia | not run")
    assert "a Children's history asked for Horror" in md and "film 3 ✓" in md and "film 2;" in md


def test_llm_section_reads_cpt_and_sft_metrics(tmp_path):
    write_json(tmp_path / "cpt_plum.json", {"heldout_ppl_before": 900.0, "heldout_ppl_after": 40.0,
                                            "heldout_ppl_sid_before": 5000.0, "heldout_ppl_sid_after": 80.0,
                                            "new_tokens": 770, "runtime_s": 600})
    write_json(tmp_path / "sft_plum.json", {"valid_ndcg@10": 0.05, "valid_recall@10": 0.1, "runtime_s": 300})
    md = llm_section(tmp_path, ["plum", "rqvae"])
    assert "| plum | 900.0 -> 40.0 | 5000.0 -> 80.0 | 770 | 0.0500 | 0.1000 | 10.0 + 5.0 |" in md
    assert "rqvae" not in md.split("|---", 1)[1]
