"""Co-occurrence pairs for PLUM's collaborative indexer (docs/systems.md: items used together).

A session is a run of one user's consecutive events whose gaps are at most `session_gap` seconds; inside a
session each event pairs with its next `window` neighbours. Pairs are unordered (a < b) with counts.
Training pairs come from train events only (the leakage rule). Held-out pairs, mined the same way from
validation events and not seen among the training pairs, measure whether the IDs generalize.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def session_pairs(events: pd.DataFrame, session_gap: int, window: int) -> pd.DataFrame:
    """Unordered item pairs (a < b) with counts from sessions of `events` (sorted by user, time).

    Returns:
        DataFrame with columns a, b, count, sorted by (a, b).
    """
    users = events["user_id"].to_numpy()
    items = events["item_id"].to_numpy()
    ts = events["timestamp"].to_numpy()
    # session id increases at every user change or time gap > session_gap
    brk = np.ones(len(events), dtype=bool)
    brk[1:] = (users[1:] != users[:-1]) | (ts[1:] - ts[:-1] > session_gap)
    session = np.cumsum(brk)
    a_parts, b_parts = [], []
    for lag in range(1, window + 1):
        same = session[lag:] == session[:-lag]
        x, y = items[:-lag][same], items[lag:][same]
        keep = x != y
        a_parts.append(np.minimum(x, y)[keep])
        b_parts.append(np.maximum(x, y)[keep])
    if not a_parts or not sum(len(p) for p in a_parts):
        return pd.DataFrame({"a": np.array([], dtype=np.int64), "b": np.array([], dtype=np.int64),
                             "count": np.array([], dtype=np.int64)})
    pairs = pd.DataFrame({"a": np.concatenate(a_parts), "b": np.concatenate(b_parts)})
    out = pairs.groupby(["a", "b"]).size().rename("count").reset_index()
    return out.astype("int64").sort_values(["a", "b"]).reset_index(drop=True)


def mine_pairs(events: pd.DataFrame, session_gap: int, window: int, min_count: int) -> tuple[pd.DataFrame, dict]:
    """Training pairs (train events, count >= min_count) and held-out pairs (validation events, unseen in train).

    Returns:
        (pairs frame with a, b, count, split in {train, heldout}; summary metrics)
    """
    train = session_pairs(events[events["split"] == "train"], session_gap, window)
    train = train[train["count"] >= min_count]
    valid = session_pairs(events[events["split"] == "valid"], session_gap, window)
    seen = pd.MultiIndex.from_frame(train[["a", "b"]])
    heldout = valid[~pd.MultiIndex.from_frame(valid[["a", "b"]]).isin(seen)]
    pairs = pd.concat([train.assign(split="train"), heldout.assign(split="heldout")], ignore_index=True)
    metrics = {
        "pairs_train": int(len(train)), "pair_occurrences_train": int(train["count"].sum()),
        "pairs_heldout": int(len(heldout)),
        "items_covered_train": int(len(np.union1d(train["a"], train["b"]))),
        "items_covered_heldout": int(len(np.union1d(heldout["a"], heldout["b"]))),
    }
    return pairs, metrics


def prefix_sharing(codes: np.ndarray, pairs: pd.DataFrame, depth: int) -> float:
    """Share of pairs (a, b) whose codes agree on the first `depth` positions."""
    if len(pairs) == 0:
        return 0.0
    a, b = codes[pairs["a"].to_numpy(), :depth], codes[pairs["b"].to_numpy(), :depth]
    return float((a == b).all(axis=1).mean())


def pair_quality(codes: np.ndarray, pairs: pd.DataFrame, seed: int, depths=(1, 2)) -> dict:
    """Prefix sharing of held-out co-occurring pairs vs as many random item pairs (ID-quality metric), plus the
    same for training pairs (what PLUM optimizes; the gap to held-out pairs shows memorization vs generalization).

    Args:
        codes: (N, P) item codes before the suffix.
        pairs: frame from `mine_pairs` (`heldout` rows; `train` rows for the training-pair share).
    """
    held = pairs[pairs["split"] == "heldout"]
    train = pairs[pairs["split"] == "train"]
    rng = np.random.default_rng(seed)
    n = max(len(held), 1000)
    rand = pd.DataFrame({"a": rng.integers(0, len(codes), n), "b": rng.integers(0, len(codes), n)})
    rand = rand[rand["a"] != rand["b"]]
    out = {}
    for d in depths:
        if d > codes.shape[1]:
            continue
        name = "l0" if d == 1 else f"l0-{d - 1}"
        out[f"heldout_pairs_share_{name}"] = prefix_sharing(codes, held, d)
        out[f"random_pairs_share_{name}"] = prefix_sharing(codes, rand, d)
        out[f"train_pairs_share_{name}"] = prefix_sharing(codes, train, d)
    return out
