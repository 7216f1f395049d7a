"""The whole DAG end to end on a tiny ml-1m-format dataset in a temporary copy of the repository.

The DAG is built by `make repro`'s runner (pipelines/parallel.py, two stages side by side), so these tests also
check that its concurrent `dvc repro --single-item` calls leave DVC's bookkeeping as one `dvc repro` would."""
import re
import subprocess
import sys

import pandas as pd
import pytest

SYSTEM_KEYS = {"cases", "test", "cold_start", "coverage@10", "invalid_rate_unconstrained", "runtime_s", "peak_rss_mb"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from conftest import REPO_ROOT, create_tiny_repo

    r = create_tiny_repo(tmp_path_factory.mktemp("full"))
    subprocess.run([sys.executable, "pipelines/ablations.py", "on", "--params", str(r.params_path)],
                   cwd=REPO_ROOT, check=True, capture_output=True)  # every system: the default ones and the ablations
    r.commit("ablations on")
    out = r.repro_parallel(jobs=2).stdout
    assert "total" in out and "FAILED" not in out, out
    return r


SYSTEMS = ("baseline", "sasrec", "popularity", "content-knn", "plum-gpt", "plum", "rqvae-llm", "lamia-gpt", "lamia")
SID_SYSTEMS = ("baseline", "plum-gpt", "plum", "rqvae-llm", "lamia-gpt", "lamia")


def test_cold_start_fill_is_chosen_on_validation_and_reported(repo):
    for system in SYSTEMS:
        m = repo.read_json(f"metrics/{system}.json")
        cases = pd.read_parquet(repo.root / f"data/eval/{system}.parquet")
        eps = m["cold_epsilon"]
        assert eps["applies"] == (system in SID_SYSTEMS), system
        assert {"test", "cold_start"} <= set(m["eps0"]) and 0.0 <= m["cold_share@10"] <= 1.0
        if system in SID_SYSTEMS:
            assert eps["chosen"] in eps["grid"] and len(eps["valid"]) == len(eps["grid"]) and 0.0 in eps["grid"]
            assert "recall@10" in m["cold_start_unconstrained"] or m["cold_start_unconstrained"]["cases"] == 0
        else:
            assert eps["chosen"] == 0.0 and "cold_start_unconstrained" not in m
        if eps["chosen"] == 0.0:
            assert (cases["rank"] == cases["rank_eps0"]).all(), system
        # the fill only ever replaces the last slots: a hit above them is a hit at the same rank without it
        slots = int(eps["chosen"] * 10 + 1e-9)
        top = cases["rank_eps0"].between(0, 9 - slots)
        assert (cases.loc[top, "rank"] == cases.loc[top, "rank_eps0"]).all(), system


def test_every_system_has_the_shared_schema(repo):
    for system in SYSTEMS:
        m = repo.read_json(f"metrics/{system}.json")
        assert SYSTEM_KEYS <= set(m), system
        assert {"ndcg@10", "ndcg@10_ci_low", "ndcg@10_ci_high", "recall@5"} <= set(m["test"])
        assert m["test"]["ndcg@10_ci_low"] <= m["test"]["ndcg@10"] <= m["test"]["ndcg@10_ci_high"]
    cases = [pd.read_parquet(repo.root / f"data/eval/{s}.parquet") for s in SYSTEMS]
    assert all(c["case_id"].tolist() == cases[0]["case_id"].tolist() for c in cases)
    assert all(c["target"].tolist() == cases[0]["target"].tolist() for c in cases)


def test_sids_are_one_to_one_and_in_range(repo):
    sids = pd.read_parquet(repo.root / "data/sids/rqvae.parquet")
    codes = [tuple(c) for c in sids["codes"]]
    assert len(set(codes)) == len(codes)
    info = repo.read_json("data/sids/rqvae.json")
    assert info["vocab_sizes"][:3] == [8, 8, 8]
    sid = repo.read_json("metrics/sid_rqvae.json")
    assert 0 < sid["utilization_l0"] <= 1 and "collision_rate" in sid


def test_llm_stages_write_their_metrics(repo):
    for tok in ("rqvae", "plum", "lamia"):
        cpt = repo.read_json(f"metrics/cpt_{tok}.json")
        assert cpt["heldout_ppl_after"] < cpt["heldout_ppl_before"]
        assert cpt["identity_sentences"] == 2 * len(pd.read_parquet(repo.root / "data/prepared/items.parquet"))
        sft = repo.read_json(f"metrics/sft_{tok}.json")
        assert 0 <= sft["valid_ndcg@10"] <= 1 and sft["objective"] == "dense" and sft["windows"] == 8
        assert sft["examples"] == sft["windows"] + sft["constrained"] and sft["targets"] > sft["examples"]
        # scored at log-spaced steps on the GPT's validation cases; the kept step is the best one
        assert [r["step"] for r in sft["curve"]] == [max(1, int(round(sft["steps"] / 2))), sft["steps"]]
        assert sft["valid_cases"] == 50 and sft["history_length"] == 4
        best = max(sft["curve"], key=lambda r: r["valid_ndcg@10"])
        assert sft["best_step"] == best["step"] and sft["valid_ndcg@10"] == best["valid_ndcg@10"]
        assert sft["targets_seen"] <= sft["targets"] == sft["curve"][-1]["targets"]
        assert (repo.root / f"models/llm/{tok}/sft/model.safetensors").exists()
    gpt = repo.read_json("metrics/train_rqvae-gpt.json")
    steps = [r["step"] for r in gpt["curve"]]
    assert steps == sorted(steps) and gpt["curve"][-1]["targets"] <= gpt["targets_processed"]
    assert {r["step"] for r in gpt["curve"]} >= {gpt["steps_per_epoch"] * e for e in (1, 2)}  # the epoch checks
    for system in ("plum", "rqvae-llm", "lamia", "baseline", "sasrec", "popularity"):
        steer = repo.read_json(f"metrics/steer_{system}.json")
        assert steer["reads_constraints"] == (system in ("plum", "rqvae-llm", "lamia"))
        assert 0 <= steer["satisfied@10"] <= 1


def test_report_and_status(repo):
    md = (repo.root / "reports/comparison.md").read_text()
    assert all(f"`{s}`" in md for s in SYSTEMS)
    assert repo.status() == {}


def test_cli_recommends_titles(repo):
    items = pd.read_parquet(repo.root / "data/prepared/items.parquet")
    out = subprocess.run([sys.executable, "-m", "sidrec", "recommend", "--system", "baseline", "--history",
                          f"{items.title[0]},1", "-k", "5", "--root", str(repo.root)],
                         capture_output=True, text=True, env=repo.env, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln[:2].strip().isdigit()]
    assert len(lines) == 5 and items.title[0] in out.splitlines()[0]
    bad = subprocess.run([sys.executable, "-m", "sidrec", "recommend", "--system", "baseline", "--history",
                          "No Such Film Title", "--root", str(repo.root)], capture_output=True, text=True, env=repo.env)
    assert bad.returncode != 0 and "--history" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_constraint_only_for_llm_systems(repo):
    run = [sys.executable, "-m", "sidrec", "recommend", "--history", "1,2", "-k", "3", "--root", str(repo.root)]
    out = subprocess.run(run + ["--system", "plum", "--constraint", "Horror"], capture_output=True, text=True,
                         env=repo.env, check=True).stdout
    assert "constraint: Horror" in out and len([ln for ln in out.splitlines() if ln[:2].strip().isdigit()]) == 3
    bad = subprocess.run(run + ["--system", "baseline", "--constraint", "Horror"], capture_output=True, text=True,
                         env=repo.env)
    assert bad.returncode != 0 and "--constraint" in bad.stderr


def test_lambda_reruns_only_plum_and_its_dependents(repo):
    """`-S lambda=...` must rerun tokenize@plum and what depends on it, and nothing upstream or on other branches."""
    plum_branch = {"tokenize@plum", "train_ablation@plum-gpt", "evaluate_ablation_gpt@plum-gpt", "cpt@plum", "sft@plum",
                   "evaluate@plum",
                   "steer@plum", "report", "validate_params"}  # validate_params: any edit of params.yaml
    before = repo.params()["lambda"]
    repo.set_params({"lambda": before + 1.0})
    # the only stage whose own inputs changed, and the check of the whole params.yaml
    assert set(repo.status()) == {"tokenize@plum", "validate_params"}
    ran = set(re.findall(r"Running stage '([^']+)'", repo.repro().stdout))
    assert "tokenize@plum" in ran and ran <= plum_branch
    repo.set_params({"lambda": before})
    repo.repro()
    assert repo.status() == {}
