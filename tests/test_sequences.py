"""User sequences (sidrec.data.sequences): training windows cover every target, train windows see train events
only (the leakage rule), and evaluation cases follow the protocol of docs/evaluation.md on a hand-made log."""
import numpy as np
import pandas as pd
import pytest

from sidrec.data.sequences import make_cases, sliding_windows, train_sequences


def events_frame(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    """(user_id, item_id, split) rows in (user, time) order -> the canonical events schema."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "split"])
    df["timestamp"] = np.arange(len(df), dtype=np.int64) * 60
    return df[["user_id", "item_id", "timestamp", "split"]]


# user 0: three train events, then valid, then test; user 1: a single (valid) event, so it has no case;
# user 2: train then two valid; user 3: train then two test; user 4: valid only, no train events.
LOG = events_frame([
    (0, 10, "train"), (0, 11, "train"), (0, 12, "train"), (0, 13, "valid"), (0, 14, "test"),
    (1, 20, "valid"),
    (2, 30, "train"), (2, 31, "valid"), (2, 32, "valid"),
    (3, 40, "train"), (3, 41, "test"), (3, 42, "test"),
    (4, 50, "valid"), (4, 51, "valid"),
])


def test_sliding_windows_hand_example():
    s = np.arange(10)
    got = sliding_windows([s], window=4, stride=3)
    assert [w.tolist() for w in got] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    # the last window is added to end at the sequence end when the stride does not land there
    got = sliding_windows([s], window=4, stride=2)
    assert [w.tolist() for w in got] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    got = sliding_windows([np.arange(9)], window=4, stride=3)
    assert [w.tolist() for w in got] == [[0, 1, 2, 3], [3, 4, 5, 6], [5, 6, 7, 8]]
    # a short sequence is one window; a single item has no target and gives none
    got = sliding_windows([np.array([7, 8, 9]), np.array([5])], window=4, stride=3)
    assert [w.tolist() for w in got] == [[7, 8, 9]]


@pytest.mark.parametrize("window,stride", [(2, 1), (4, 1), (4, 3), (6, 2), (6, 5), (21, 20)])
def test_sliding_windows_cover_every_target(window, stride):
    rng = np.random.default_rng(window * 100 + stride)
    lengths = rng.integers(1, 60, size=30)
    seqs = [u * 1000 + np.arange(n) for u, n in enumerate(lengths)]  # values name (user, position)
    windows = sliding_windows(seqs, window, stride)
    targets: dict[int, set[int]] = {}
    by_user: dict[int, list[np.ndarray]] = {}
    for w in windows:
        assert 2 <= len(w) <= window
        u = int(w[0]) // 1000
        np.testing.assert_array_equal(w, w[0] + np.arange(len(w)))  # a contiguous piece of one user's sequence
        by_user.setdefault(u, []).append(w)
        targets.setdefault(u, set()).update((w[1:] % 1000).tolist())  # every item after the first is predicted
    for u, n in enumerate(lengths):
        if n < 2:
            assert u not in by_user
            continue
        assert targets[u] == set(range(1, n)), f"user {u}: targets missing"
        starts = [int(w[0]) % 1000 for w in by_user[u]]
        assert by_user[u][-1][-1] % 1000 == n - 1  # the last window ends at the sequence end
        assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))  # stride respected
        assert starts[0] == 0
        if len(starts) > 1:
            assert 0 < starts[-1] - starts[-2] <= stride


def test_train_sequences_use_train_events_only():
    seqs = train_sequences(LOG)
    assert [s.tolist() for s in seqs] == [[10, 11, 12], [30], [40]]  # users 0, 2, 3; valid/test items never appear
    leaked = set(LOG.loc[LOG["split"] != "train", "item_id"])
    assert not leaked & set(np.concatenate(seqs).tolist())


def test_make_cases_valid_hand_computed():
    cases = make_cases(LOG, "valid", max_history=2, cold_items={31, 51})
    assert list(cases.columns) == ["case_id", "user_id", "target", "history", "seen", "cold"]
    assert cases["case_id"].tolist() == [0, 1, 2, 3]
    assert cases["user_id"].tolist() == [0, 2, 2, 4]  # user 1's only event has nothing before it
    assert cases["target"].tolist() == [13, 31, 32, 51]
    assert cases["history"].tolist() == [[11, 12], [30], [30, 31], [50]]  # last 2 earlier items, any split
    assert cases["seen"].tolist() == [[10, 11, 12], [30], [30, 31], [50]]  # every earlier item
    assert cases["cold"].tolist() == [False, True, False, True]


def test_make_cases_test_split_history_crosses_splits():
    cases = make_cases(LOG, "test", max_history=3, cold_items=set())
    assert cases["target"].tolist() == [14, 41, 42]
    assert cases["history"].tolist() == [[11, 12, 13], [40], [40, 41]]  # valid item 13 and test item 41 count
    assert cases["seen"].tolist() == [[10, 11, 12, 13], [40], [40, 41]]
    assert not cases["cold"].any()


def test_make_cases_sampling_is_seeded_and_capped():
    rng = np.random.default_rng(0)
    rows = [(u, int(i), "valid") for u in range(20) for i in rng.permutation(50)[:6]]
    log = events_frame(rows)
    full = make_cases(log, "valid", max_history=3, cold_items=set())
    assert len(full) == 20 * 5
    a = make_cases(log, "valid", 3, set(), max_cases=17, seed=3)
    b = make_cases(log, "valid", 3, set(), max_cases=17, seed=3)
    c = make_cases(log, "valid", 3, set(), max_cases=17, seed=4)
    assert len(a) == 17 and a["case_id"].tolist() == list(range(17))
    pd.testing.assert_frame_equal(a, b)
    assert a["target"].tolist() != c["target"].tolist() or a["user_id"].tolist() != c["user_id"].tolist()
    # a subset of the full cases, still in (user, time) order
    position = {(u, t): i for i, (u, t) in enumerate(zip(full["user_id"], full["target"]))}
    picked = [position[(u, t)] for u, t in zip(a["user_id"], a["target"])]
    assert picked == sorted(picked) and len(set(picked)) == 17
    for col in ("history", "seen"):
        assert a[col].tolist() == full[col].iloc[picked].tolist()
    assert len(make_cases(log, "valid", 3, set(), max_cases=500, seed=3)) == len(full)  # cap above size: all


def test_sliding_windows_stride_not_below_window_still_covers_targets():
    # window 6, stride 20 is what the tiny test repos run with (eval.max_history 5, gpt.window_stride 20)
    windows = sliding_windows([np.arange(30)], window=6, stride=20)
    targets = set(np.concatenate([w[1:] for w in windows]).tolist())
    assert targets == set(range(1, 30))
