"""The comparison report on three fake systems: per-user tables, paired p-values, seed-spread verdicts, not-run
systems, cold start, figures, and bad input."""
import logging
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from sidrec.evaluate.metrics import bootstrap_ci, ndcg_at_k, summarize, target_ranks
from sidrec.evaluate.report import ReportError, build_report
from sidrec.io import read_json, write_json

REPO = Path(__file__).resolve().parents[1]
N_CASES, N_ITEMS, K, N_USERS = 300, 60, 10, 37
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Hit probability on warm / cold targets: sasrec clearly beats baseline, popularity never reaches cold items.
SYSTEMS = {"sasrec": (0.7, 0.3), "baseline": (0.4, 0.2), "popularity": (0.15, 0.0)}


def _fake_system(rng: np.random.Generator, targets: np.ndarray, cold: np.ndarray, p_warm: float, p_cold: float):
    """Top-10 lists that contain the target at a random position with the given hit probabilities."""
    topk = np.empty((N_CASES, K), dtype=np.int64)
    for i, t in enumerate(targets):
        others = rng.permutation(np.setdiff1d(np.arange(N_ITEMS), [t]))[:K]
        if rng.random() < (p_cold if cold[i] else p_warm):
            others[rng.integers(0, K)] = t
        topk[i] = others
    topk[0, -1] = -1  # an empty slot, as constrained decoding may leave
    return topk


@pytest.fixture
def fake_run(tmp_path):
    """metrics/<system>.json and data/eval/<system>.parquet for three systems on the same 300 cases."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, N_ITEMS, size=N_CASES)
    cold = targets < 8  # items 0..7 had no train events
    metrics_dir, eval_dir = tmp_path / "metrics", tmp_path / "data" / "eval"
    eval_dir.mkdir(parents=True)
    for name, (p_warm, p_cold) in SYSTEMS.items():
        topk = _fake_system(rng, targets, cold, p_warm, p_cold)
        ranks = target_ranks(topk, targets)
        m = summarize(ranks, cold, topk, N_ITEMS, n_boot=200, seed=0)
        if name == "baseline":
            m["invalid_rate_unconstrained"] = 0.0123
        write_json(metrics_dir / f"{name}.json", m)
        pd.DataFrame({"case_id": np.arange(N_CASES), "user_id": np.arange(N_CASES) % N_USERS, "target": targets,
                      "cold": cold, "topk": list(topk), "rank": ranks}).to_parquet(eval_dir / f"{name}.parquet")
    return tmp_path, metrics_dir, eval_dir


def _run(tmp_path, metrics_dir, eval_dir, systems=("baseline", "sasrec", "popularity"), seed_spread=None):
    return build_report(metrics_dir, eval_dir, list(systems), tmp_path / "reports" / "comparison.md",
                        tmp_path / "reports" / "figures", n_boot=500, seed=0, seed_spread=seed_spread)


def _row(md: str, section: str, system: str) -> list[str]:
    """Cells of `system`'s row in the table under heading `section`."""
    body = md.split(section, 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in body.splitlines() if ln.startswith(f"| {system} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_report_tables_pvalues_cold_start_and_figures(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    md = _run(tmp_path, metrics_dir, eval_dir)
    assert (tmp_path / "reports" / "comparison.md").read_text(encoding="utf-8") == md
    assert "same test cases in the same order" in md and "k = 5, 10" in md
    assert f"{N_CASES} cases from {N_USERS} users" in md and "bootstraps over users" in md
    for section in ("## Accuracy", "## Per-user vs case-level", "## Paired comparison", "## Cold start"):
        body = md.split(section, 1)[1].split("\n## ", 1)[0]
        assert re.search(r"\d+ cases from \d+ users", body), section

    acc = md.split("## Accuracy", 1)[1].split("\n## ", 1)[0]
    order = [ln.split("|")[1].strip() for ln in acc.splitlines() if ln.startswith("| ") and "system" not in ln]
    assert order == ["sasrec", "baseline", "popularity"]  # sorted by ndcg@10, descending
    base = _row(md, "## Accuracy", "baseline")
    cases = pd.read_parquet(eval_dir / "baseline.parquet")
    v = ndcg_at_k(cases["rank"].to_numpy(), 10)
    low, high = bootstrap_ci(v, cases["user_id"].to_numpy(), n_boot=500, seed=0)  # per user, recomputed
    assert base[4] == f"{v.mean():.4f} [{low:.3f}, {high:.3f}]"
    assert all(re.fullmatch(r"\d\.\d{4} \[\d\.\d{3}, \d\.\d{3}\]", c) for c in base[1:5])
    assert base[-1] == "0.0123" and _row(md, "## Accuracy", "sasrec")[-1] == "—"

    paired = "## Paired comparison against `baseline`"
    assert paired in md and "p-value" in md
    sas, pop = _row(md, paired, "sasrec"), _row(md, paired, "popularity")
    assert float(sas[1]) > 0.1 and float(sas[3]) < 0.01
    assert float(pop[1]) < 0 and float(pop[3]) < 0.01
    assert "| baseline |" not in md.split(paired, 1)[1].split("\n## ", 1)[0]

    cold = _row(md, "## Cold start", "popularity")
    assert cold[1] == str(int(read_json(metrics_dir / "popularity.json")["cold_start"]["cases"])) and int(cold[1]) > 0
    assert cold[2] == str(cases.loc[cases["cold"], "user_id"].nunique())
    assert cold[3].startswith("0.0000") and cold[4].startswith("0.0000")
    assert "`popularity` never placed a cold-start target" in md

    figures = tmp_path / "reports" / "figures"
    for name in ("ndcg_at_10.png", "recall_at_10.png"):
        _assert_png(figures / name)
        assert f"](figures/{name})" in md


def test_misaligned_cases_raise(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    df = pd.read_parquet(eval_dir / "sasrec.parquet")
    df.loc[[3, 4], "case_id"] = df.loc[[4, 3], "case_id"].to_numpy()
    df.to_parquet(eval_dir / "sasrec.parquet")
    with pytest.raises(ReportError, match="misaligned.*case_id.*row 3"):
        _run(tmp_path, metrics_dir, eval_dir)
    assert not (tmp_path / "reports" / "comparison.md").exists()


def test_case_count_mismatch_raises(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    pd.read_parquet(eval_dir / "popularity.parquet").iloc[:-1].to_parquet(eval_dir / "popularity.parquet")
    with pytest.raises(ReportError, match="popularity"):
        _run(tmp_path, metrics_dir, eval_dir)


def test_systems_that_were_not_run_get_not_run_rows_and_none_is_an_error(fake_run, caplog):
    tmp_path, metrics_dir, eval_dir = fake_run
    with caplog.at_level(logging.WARNING, logger="sidrec"):
        md = _run(tmp_path, metrics_dir, eval_dir, systems=("baseline", "plum", "sasrec"))
    assert "system 'plum' not run" in caplog.text
    assert "| sasrec |" in md and "popularity" not in md and "not run: `plum`" in md
    assert _row(md, "## Accuracy", "plum")[1] == "not run"
    assert _row(md, "## Paired comparison", "plum")[1] == "not run"
    assert _row(md, "## Cold start", "plum")[1] == "not run"
    with pytest.raises(ReportError, match="none of the systems"):
        _run(tmp_path, metrics_dir, eval_dir, systems=("plum", "lamia"))


def test_without_baseline_there_is_no_paired_table(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    md = _run(tmp_path, metrics_dir, eval_dir, systems=("sasrec", "popularity"))
    assert "`baseline` is not among the evaluated systems" in md


def test_per_user_intervals_are_wider_than_case_level_when_users_are_correlated(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    df = pd.read_parquet(eval_dir / "sasrec.parquet")
    df["rank"] = np.where(df["user_id"] < 15, 0, -1)  # a user's cases all hit or all miss
    df.to_parquet(eval_dir / "sasrec.parquet")
    md = _run(tmp_path, metrics_dir, eval_dir)
    sas, base = _row(md, "## Per-user vs case-level", "sasrec"), _row(md, "## Per-user vs case-level", "baseline")
    assert float(sas[3]) > 2.0 and float(sas[6]) > 2.0  # ~sqrt(300 / 37) = 2.8 times wider
    assert 0.6 < float(base[3]) < 1.6  # hits independent of the user: about the same width


def _spread(tmp_path, systems: dict) -> Path:
    path = tmp_path / "metrics" / "seed_spread.json"
    write_json(path, {"systems": {s: {"seeds": [42, 1, 2], "ndcg@10": [m - sd, m, m + sd], "ndcg@10_mean": m,
                                      "ndcg@10_sd": sd, "recall@10": [m] * 3, "recall@10_mean": m,
                                      "recall@10_sd": 0.0} for s, (m, sd) in systems.items()},
                      "command": "make seed-spread"})
    return path


def test_seed_spread_verdicts_real_within_and_noise(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    for name in ("twin", "unseeded"):  # twin = baseline exactly; unseeded = sasrec without a seed spread
        src = "baseline" if name == "twin" else "sasrec"
        write_json(metrics_dir / f"{name}.json", read_json(metrics_dir / f"{src}.json"))
        pd.read_parquet(eval_dir / f"{src}.parquet").to_parquet(eval_dir / f"{name}.parquet")
    path = _spread(tmp_path, {"baseline": (0.2, 0.01), "sasrec": (0.4, 0.02), "popularity": (0.05, 0.5),
                              "twin": (0.2, 0.01)})
    md = _run(tmp_path, metrics_dir, eval_dir, systems=("baseline", "sasrec", "popularity", "twin", "unseeded"),
              seed_spread=path)
    paired = "## Paired comparison"
    assert _row(md, paired, "sasrec")[-1] == "real" and _row(md, paired, "sasrec")[-2] == "0.0200"
    pop = _row(md, paired, "popularity")
    assert float(pop[2].strip("[]").split(",")[1]) < 0 and pop[-1] == "within the seed spread"
    twin = _row(md, paired, "twin")
    assert float(twin[1]) == 0.0 and float(twin[3]) == 1.0 and twin[-1] == "noise"
    unseeded = _row(md, paired, "unseeded")
    assert unseeded[-2] == "0.0100 (not measured: unseeded)"
    assert unseeded[-1] == "interval excludes 0; seed spread not measured for `unseeded`"
    spread = md.split("## Seed spread", 1)[1].split("\n## ", 1)[0]
    assert "make seed-spread" in spread and f"{N_CASES} cases from {N_USERS} users" in spread
    assert _row(md, "## Seed spread", "sasrec") == ["sasrec", "42, 1, 2", "0.4000 ± 0.0200", "0.4000 ± 0.0000"]
    assert _row(md, "## Seed spread", "unseeded")[1] == "not measured"


def test_absent_seed_spread_file_says_not_measured(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    md = _run(tmp_path, metrics_dir, eval_dir, seed_spread=tmp_path / "metrics" / "seed_spread.json")
    assert "seed spread: not measured" in md
    sas = _row(md, "## Paired comparison", "sasrec")
    assert sas[-2] == "not measured" and "seed spread not measured for" in sas[-1] and "real" not in sas[-1]


def test_optional_steer_and_sid_tables(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    write_json(metrics_dir / "steer_sasrec.json", {"constraint_rate": 0.25, "history": {"jaccard": 0.5}})
    write_json(metrics_dir / "sid_rqvae.json", {"collision_rate": 0.031, "usage": {"level0": 0.9}, "hist": [1, 2]})
    write_json(metrics_dir / "sid_plum.json", {"collision_rate": 0.012, "extra": True})
    md = _run(tmp_path, metrics_dir, eval_dir)
    assert "## Steerability" in md and "history.jaccard" in md
    assert _row(md, "## Steerability", "sasrec") == ["sasrec", "0.25", "0.5"]
    # Tokenizers in file-name order; columns are the union of flattened keys in first-seen order.
    assert _row(md, "## Semantic ID quality", "plum") == ["plum", "0.012", "True", "—"]
    assert _row(md, "## Semantic ID quality", "rqvae") == ["rqvae", "0.031", "—", "0.9"]
    assert "hist" not in md.split("## Semantic ID quality", 1)[1]


def test_matplotlib_fallback_when_vl_convert_fails(fake_run, monkeypatch, caplog):
    tmp_path, metrics_dir, eval_dir = fake_run

    def broken(spec, scale=1):
        raise RuntimeError("renderer unavailable")

    monkeypatch.setitem(sys.modules, "vl_convert", types.SimpleNamespace(vegalite_to_png=broken))
    with caplog.at_level(logging.WARNING, logger="sidrec"):
        _run(tmp_path, metrics_dir, eval_dir)
    assert "vl-convert failed" in caplog.text
    _assert_png(tmp_path / "reports" / "figures" / "ndcg_at_10.png")


def test_stage_script_end_to_end(fake_run):
    tmp_path, metrics_dir, eval_dir = fake_run
    out, figs = tmp_path / "reports" / "comparison.md", tmp_path / "reports" / "figures"
    cmd = [sys.executable, str(REPO / "stages" / "report.py"), "--params", str(REPO / "params.yaml"),
           "--metrics-dir", str(metrics_dir), "--eval-dir", str(eval_dir), "--systems", "baseline,sasrec,popularity,plum",
           "--out", str(out), "--plots-dir", str(figs)]
    proc = subprocess.run(cmd + ["--seed-spread", str(_spread(tmp_path, {"baseline": (0.2, 0.001)}))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "system 'plum' not run" in proc.stderr
    md = out.read_text(encoding="utf-8")
    assert "| sasrec |" in md and "## Cold start" in md and _row(md, "## Accuracy", "plum")[1] == "not run"
    assert _row(md, "## Seed spread", "baseline")[3].endswith("± 0.0000")
    _assert_png(figs / "recall_at_10.png")
    i = cmd.index("--systems") + 1
    bad = subprocess.run(cmd[:i] + ["plum"] + cmd[i + 1:], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "none of the systems" in bad.stderr


def test_systems_without_a_training_seed_have_seed_sd_zero():
    from sidrec.evaluate.report_data import seed_sd

    assert seed_sd(None, "popularity", "ndcg@10") == 0.0 and seed_sd(None, "content-knn", "ndcg@10") == 0.0
    assert seed_sd(None, "baseline", "ndcg@10") is None
    measured = {"systems": {"popularity": {"ndcg@10_sd": 0.5}}}
    assert seed_sd(measured, "popularity", "ndcg@10") == 0.5  # a measured spread wins
