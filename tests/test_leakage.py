"""The leakage check (sidrec.data.leakage, stages/leakage.py): a clean tiny build passes, leaky builds fail.

Tiny raw data sets from fixtures.py are prepared in-process; pairs and popularity come from their library
functions, windows and corpora are rebuilt by the check itself. Each leak is planted the way a bug would plant it
(a builder that reads test events, a pairs file mined without the split, a late event marked train) and must
raise a one-line `DataError` naming the artifact.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, TINY_PARAMS, deep_merge
from fixtures import run_stage_script, write_amazon, write_ml1m
from sidrec import config as C
from sidrec.config import Params, from_dict, read_yaml
from sidrec.corpus import build as corpus_build
from sidrec.data import leakage, sequences
from sidrec.data.cooccur import mine_pairs
from sidrec.data.loaders import DataError, load_raw
from sidrec.data.prepare import prepare
from sidrec.io import write_json, write_parquet
from sidrec.models.popularity import PopularityRecommender, popularity_scores


def tiny_params_dict(protocol: str = "temporal", dataset: str = "ml-1m") -> dict:
    """The repo's params.yaml with TINY_PARAMS, `split.protocol` and `dataset.name` set; keys a newer config
    knows but params.yaml lacks yet are filled with the config defaults."""
    d = deep_merge(read_yaml(REPO_ROOT / "params.yaml"), TINY_PARAMS)
    d["split"]["protocol"] = protocol
    d["dataset"]["name"] = dataset
    hints = typing.get_type_hints(Params)
    for f in dataclasses.fields(Params):
        if dataclasses.is_dataclass(hints[f.name]):
            key = C._FIELD_TO_KEY.get(f.name, f.name)
            for k, v in C.to_dict(hints[f.name]()).items():
                d.setdefault(key, {}).setdefault(k, v)
    return d


@dataclasses.dataclass
class Build:
    raw: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame
    split: dict
    params: Params
    pairs: pd.DataFrame
    popularity: tuple

    def check(self, **overrides):
        kw = dict(raw_events=self.raw, items=self.items, events=self.events, split=self.split, params=self.params,
                  pairs=self.pairs, popularity=self.popularity)
        kw.update(overrides)
        return leakage.check_leakage(**kw)


def make_build(tmp: Path, protocol: str = "temporal", dataset: str = "ml-1m", window_days: int = 0) -> Build:
    d = tiny_params_dict(protocol, dataset)
    p = from_dict(Params, d)
    raw_dir = tmp / "raw"
    if dataset == "ml-1m":
        write_ml1m(raw_dir, n_users=40, n_items=60, seed=0)
    else:
        write_amazon(raw_dir, category=dataset.split("-")[1].capitalize(), n_users=40, n_items=60, seed=1)
    raw, meta = load_raw(dataset, raw_dir)
    prep = prepare(raw, meta, p.dataset, p.split)
    pairs, _ = mine_pairs(prep.events, p.plum.session_gap, p.plum.window, p.plum.min_count)
    pop = (popularity_scores(prep.events, len(prep.items), window_days), window_days)
    return Build(raw, prep.items, prep.events, prep.split, p, pairs, pop)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    return make_build(tmp_path_factory.mktemp("leak"))


def leak_message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def late_rows(b: Build, split: str = "test") -> pd.DataFrame:
    """Events of users that also have train events, in `split`."""
    train_users = set(b.events.loc[b.events["split"] == "train", "user_id"])
    return b.events[(b.events["split"] == split) & b.events["user_id"].isin(train_users)]


# --- clean builds pass ----------------------------------------------------------------------------------------

def test_clean_build_passes(build):
    rep = build.check()
    for name in ("prepared", "windows", "cpt", "sft", "pairs", "popularity"):
        assert rep[name]["violations"] == 0, (name, rep[name])
    assert rep["prepared"]["users_matched"] == build.events["user_id"].nunique()
    assert rep["windows"]["sequences"] == len(sequences.sliding_windows(
        sequences.train_sequences(build.events), build.params.eval.max_history + 1, build.params.gpt.window_stride))
    assert rep["cpt"]["sequences"] > 0 and rep["cpt"]["identity_sentences"] == 2 * len(build.items)
    assert rep["sft"]["sequences"] > 0 and rep["pairs"]["pairs"] > 0 and rep["pairs"]["heldout_pairs"] > 0
    assert rep["popularity"]["items"] == len(build.items)


@pytest.mark.parametrize("protocol, dataset, window_days", [
    ("leave_one_out", "ml-1m", 0), ("temporal", "amazon-beauty", 30), ("leave_one_out", "amazon-beauty", 7)])
def test_clean_builds_of_other_protocols_and_formats_pass(tmp_path, protocol, dataset, window_days):
    b = make_build(tmp_path, protocol, dataset, window_days)
    rep = b.check()
    assert all(v["violations"] == 0 for v in rep.values() if isinstance(v, dict))
    assert rep["prepared"]["users_matched"] == b.events["user_id"].nunique()


def test_windows_are_attributed_to_their_users(build):
    users, seqs = leakage.gpt_windows(build.events, build.params, len(build.items))
    train = build.events[build.events["split"] == "train"]
    for u, s in zip(users, seqs):
        assert set(s.tolist()) <= set(train.loc[train["user_id"] == u, "item_id"])


# --- leaky builds fail ----------------------------------------------------------------------------------------

def test_window_with_a_test_event_fails(build):
    users, seqs = leakage.gpt_windows(build.events, build.params, len(build.items))
    row = late_rows(build).iloc[0]
    at = users.index(int(row["user_id"]))
    seqs = [*seqs[:at], np.r_[seqs[at], row["item_id"]], *seqs[at + 1:]]
    with pytest.raises(DataError) as e:
        build.check(windows=(users, seqs))
    msg = leak_message(e)
    assert msg.startswith("leakage: windows: 1 violation(s)") and f"item {int(row['item_id'])} " in msg
    assert "(test)" in msg, msg  # the example shows the raw event's period


def all_events(events):
    """A sequence builder that forgot the split: every event of each user, in time order."""
    return [g.to_numpy() for _, g in events.groupby("user_id", sort=True)["item_id"]]


def test_window_builder_reading_all_events_fails(build, monkeypatch):
    """A train stage whose sequence builder forgot the split: the rebuilt windows leak."""
    monkeypatch.setattr(sequences, "train_sequences", all_events)
    with pytest.raises(DataError) as e:
        build.check()
    assert leak_message(e).startswith("leakage: windows: ")


def test_corpus_builder_reading_test_events_fails(build, monkeypatch):
    """CPT and SFT built from histories that include held-out events: both corpora leak."""
    monkeypatch.setattr(corpus_build, "train_sequences", all_events)
    with pytest.raises(DataError) as e:
        build.check()
    msg = leak_message(e)
    assert msg.startswith("leakage: cpt: ") and "also leaking: sft" in msg, msg


def test_sft_example_with_a_test_target_fails(build):
    users, seqs = leakage.sft_sequences(build.events, build.items, build.params, len(build.items))
    row = late_rows(build).iloc[0]
    users, seqs = [*users, int(row["user_id"])], [*seqs, np.array([row["item_id"]])]
    with pytest.raises(DataError) as e:
        build.check(sft=(users, seqs))
    assert leak_message(e).startswith("leakage: sft: 1 violation(s)")


def test_pairs_mined_without_the_split_fail(build):
    everything = build.events.assign(split="train")
    p = build.params.plum
    pairs, _ = mine_pairs(everything, p.session_gap, p.window, p.min_count)
    with pytest.raises(DataError) as e:
        build.check(pairs=pairs)
    msg = leak_message(e)
    assert msg.startswith("leakage: pairs: ") and "train pair (" in msg, msg


def test_pair_supported_only_after_the_cutoff_fails(build):
    """One extra train pair: two items one user had only after train_end, never together before it."""
    train = build.events[build.events["split"] == "train"]
    both = train.groupby("item_id")["user_id"].apply(set)
    late = late_rows(build)
    for u, g in late.groupby("user_id"):
        items = sorted(set(g["item_id"]))
        cand = [(a, b) for i, a in enumerate(items) for b in items[i + 1:]
                if not (both.get(a, set()) & both.get(b, set()))]
        if cand:
            break
    a, b = cand[0]
    pairs = pd.concat([build.pairs, pd.DataFrame({"a": [a], "b": [b], "count": [1], "split": ["train"]})],
                      ignore_index=True)
    with pytest.raises(DataError) as e:
        build.check(pairs=pairs)
    msg = leak_message(e)
    assert msg.startswith("leakage: pairs: 1 violation(s)") and f"({a}, {b})" in msg and "allow 0" in msg, msg


def test_pair_count_above_what_train_events_allow_fails(build):
    pairs = build.pairs.copy()
    i = int(np.flatnonzero(pairs["split"] == "train")[0])
    pairs.loc[i, "count"] = 10_000
    with pytest.raises(DataError) as e:
        build.check(pairs=pairs)
    assert leak_message(e).startswith("leakage: pairs: 1 violation(s)")


def test_popularity_counting_a_test_event_fails(build):
    row = late_rows(build).iloc[0]
    leaky = build.events.copy()
    leaky.loc[row.name, "split"] = "train"
    scores = popularity_scores(leaky, len(build.items), 0)
    with pytest.raises(DataError) as e:
        build.check(popularity=(scores, 0))
    msg = leak_message(e)
    assert msg.startswith("leakage: popularity: 1 violation(s)") and f"item {int(row['item_id'])} " in msg, msg


def test_popularity_window_counts_are_bounded_by_the_window(tmp_path):
    b = make_build(tmp_path, window_days=7)
    scores, w = b.popularity
    all_train = popularity_scores(b.events, len(b.items), 0)
    assert (all_train > scores).any(), "the fixture should have train events outside the 7-day window"
    with pytest.raises(DataError) as e:
        b.check(popularity=(all_train, w))  # all-period counts saved under a 7-day window
    assert leak_message(e).startswith("leakage: popularity: ")


def test_prepared_split_marking_a_late_event_train_fails(build):
    row = late_rows(build).iloc[0]
    leaky = build.events.copy()
    leaky.loc[row.name, "split"] = "train"
    with pytest.raises(DataError) as e:
        build.check(events=leaky, pairs=None, popularity=None)
    msg = leak_message(e)
    assert msg.startswith("leakage: prepared: 1 violation(s)") and "is marked train" in msg, msg
    assert "also leaking: windows" in msg, msg  # the windows rebuilt from that split carry it too


def test_prepared_event_moved_before_the_cutoff_fails(build):
    """A test event whose timestamp was rewritten into the train period is not a raw event."""
    row = late_rows(build).iloc[0]
    leaky = build.events.copy()
    leaky.loc[row.name, ["timestamp", "split"]] = [build.split["train_end"] - 1, "train"]
    with pytest.raises(DataError) as e:
        build.check(events=leaky, pairs=None, popularity=None)
    msg = leak_message(e)
    assert msg.startswith("leakage: prepared: ") and "is not a raw event" in msg, msg


def test_leave_one_out_last_event_marked_train_fails(tmp_path):
    b = make_build(tmp_path, "leave_one_out")
    ev = b.events
    test_rows = ev[ev["split"] == "test"]
    row = test_rows[test_rows["timestamp"] > ev.loc[ev["split"] != "test"].groupby("user_id")["timestamp"].max()
                    .reindex(test_rows["user_id"]).to_numpy()].iloc[0]
    leaky = ev.copy()
    leaky.loc[row.name, "split"] = "train"
    with pytest.raises(DataError) as e:
        b.check(events=leaky, pairs=None, popularity=None)
    msg = leak_message(e)
    assert msg.startswith("leakage: prepared: 1 violation(s)") and "puts it in test" in msg, msg


# --- the stage script -------------------------------------------------------------------------------------------

def write_build(b: Build, root: Path, dataset: str = "ml-1m", raw_dir: Path | None = None) -> list[str]:
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(dataset=dataset), sort_keys=False))
    write_parquet(root / "data/prepared/items.parquet", b.items)
    write_parquet(root / "data/prepared/events.parquet", b.events)
    write_json(root / "data/prepared/split.json", b.split)
    write_parquet(root / "data/pairs.parquet", b.pairs)
    PopularityRecommender(b.popularity[0], b.popularity[1]).save(root / "models/popularity")
    return ["--raw", str(raw_dir), "--prepared", "data/prepared", "--pairs", "data/pairs.parquet",
            "--popularity", "models/popularity", "--metrics", "metrics/leakage.json"]


def test_stage_writes_the_report_and_fails_on_leakage(tmp_path):
    b = make_build(tmp_path)
    args = write_build(b, tmp_path, raw_dir=tmp_path / "raw")
    res = run_stage_script("leakage.py", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rep = yaml.safe_load((tmp_path / "metrics/leakage.json").read_text())
    assert rep["windows"]["violations"] == 0 and rep["pairs"]["violations"] == 0 and "runtime_s" in rep

    (tmp_path / "metrics/leakage.json").unlink()
    everything = b.events.assign(split="train")
    write_parquet(tmp_path / "data/pairs.parquet", mine_pairs(everything, 3600, 5, 1)[0])
    res = run_stage_script("leakage.py", *args, cwd=tmp_path)
    assert res.returncode == 1
    err = res.stderr.strip()
    assert err.startswith("error: leakage: pairs: ") and "\n" not in err, res.stderr
    assert not (tmp_path / "metrics/leakage.json").exists(), "no report is written for a leaking build"
