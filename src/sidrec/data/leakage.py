"""A leakage check that can fail: what was built from interactions, tested against the raw timestamps.

The split code marks events `train` and every learner filters on that mark, so re-testing the mark proves nothing.
This check starts again from the raw files (`sidrec.data.loaders.load_raw`): an *event* is a distinct raw
(source user, source item, timestamp) triple. Raw items map to prepared ids through items.parquet `source_id`.
Raw users map to prepared users by their events: prepared user u is the raw user whose raw events contain every
(source item, timestamp) of u's prepared events (prepare numbers users densely in sorted source-user order, so among
several such raw users the one that keeps the numbering increasing is taken). The prepared `split` column is never
used to decide what is train, except to break a timestamp tie at a leave-one-out boundary (below).

Train period (from data/prepared/split.json):
- `temporal`: a raw event is train-period iff its timestamp <= `train_end` (the last train second, inclusive; the
  cutoff is crossed by any event with timestamp > train_end); valid-period iff <= `valid_end`; test otherwise.
- `leave_one_out`: per user, over the user's raw events of catalogue items in time order, the last event is test
  and the one before valid (n >= 3; n == 2: only a test event; n == 1: none); the rest are train, so the user's last
  train position is n - 1 - (held-out events). Simultaneous events may be split in any order, so within a
  timestamp the events the prepared split marks train take the earliest positions: too many train marks among
  tied events, or a train mark on a strictly later event than a held-out one, still leaves a train mark on a
  held-out position.

What "saw an event after the train cutoff" means, per artifact (each is counted in the report; any violation
raises `DataError` naming the artifact and one example):
- `prepared` (data/prepared/events.parquet): every row is a raw event of its user (same item, same timestamp),
  and no row is marked for an earlier period than its raw timestamp gives it (a test-period event marked train or
  valid, a valid-period event marked train).
- `windows` (the GPT's training windows, rebuilt as stages/train_gpt.py builds them:
  `sliding_windows(train_sequences(events), eval.max_history + 1, gpt.window_stride)`): every window belongs to
  one user, and each item occurs in it at most as often as that user has train-period raw events of it. Every
  position of a window is a training target (or its context), so all are checked.
- `cpt` (stages/cpt.py, `cpt_corpus`): the history sentences, training and held-out ones, as for windows.
  Identity sentences (title <-> ID of every catalogue item) hold no interaction and are only counted.
- `sft` (stages/sft.py, `sft_examples`): each example's prompt history plus its target, as for windows.
- `pairs` (data/pairs.parquet, stage cooccur): a `train` pair (a, b) with count c needs c <= sum over users of
  n_u(a) * n_u(b), n_u(x) = the user's train-period raw events of x (at least one user had both items before the
  cutoff; a pair is counted at most once per such event pair). `heldout` pairs only measure ID quality and are
  mined from validation events; they get the same bound from train- and valid-period events (no test event).
- `popularity` (models/popularity: scores.npy, config.json `window_days`): each item's count <= its train-period
  raw events, only those within `window_days` days of the last train-period event when window_days > 0.

The corpora and windows exist only inside their stages, so they are rebuilt here by the stages' own library
functions with the stages' parameters. The corpus functions take a `PromptCodec`; the item sequences they pick do
not depend on the LLM tokenizer (it only spells the items as tokens), so a codec that spells every item as its id
stands in for it. Windows and sentences do not say whose history they are: each builder is run twice, on the
events and on a copy whose item ids also encode the user (user * num_items + item), and the two runs must give the
same items in the same order, which attributes every sequence to one user.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from sidrec.config import Params
from sidrec.corpus import build as corpus_build
from sidrec.data import sequences
from sidrec.data.loaders import DataError

PERIODS = ("train", "valid", "test")
RANK = {p: r for r, p in enumerate(PERIODS)}
DAY = 86400  # seconds; popularity windows are in days


@dataclass
class Truth:
    """Raw events of mapped users and catalogue items, in prepared ids, with the period the raw data gives them."""
    events: pd.DataFrame
    """user_id, item_id, timestamp, period (train | valid | test)."""
    protocol: str
    train_end: int | None
    valid_end: int | None
    num_items: int
    source_users: np.ndarray
    """(U,) source user id of each prepared user ("" when none matched)."""
    source_items: np.ndarray
    """(N,) source id of each prepared item."""
    _allowed: dict = field(default_factory=dict, repr=False)

    def allowed(self, periods=("train",)) -> pd.Series:
        """(user_id, item_id) -> number of raw events of the user and item in `periods`."""
        periods = tuple(periods)
        if periods not in self._allowed:
            ev = self.events[self.events["period"].isin(periods)]
            self._allowed[periods] = ev.groupby(["user_id", "item_id"]).size().rename("allowed")
        return self._allowed[periods]

    def cutoff(self) -> str:
        return f"train_end {self.train_end}" if self.protocol == "temporal" else "the user's held-out events"

    def describe(self, user: int, item: int) -> str:
        su = self.source_users[user] if 0 <= user < len(self.source_users) else "?"
        si = self.source_items[item] if 0 <= item < len(self.source_items) else "?"
        raw = self.events[(self.events["user_id"] == user) & (self.events["item_id"] == item)]
        when = ", ".join(f"{t} ({p})" for t, p in zip(raw["timestamp"].head(3), raw["period"].head(3))) or "none"
        return f"user {user} (source {su!r}) item {item} (source {si!r}); its raw event(s): {when}"


# --- the truth: raw events in prepared ids --------------------------------------------------------------------

def _sort_key(ids: pd.Series) -> pd.Series:
    num = pd.to_numeric(ids, errors="coerce")
    return num if num.notna().all() else ids


def _raw_triples(raw_events: pd.DataFrame) -> pd.DataFrame:
    raw = raw_events.dropna(subset=["source_user", "source_item", "timestamp"])
    raw = pd.DataFrame({"source_user": raw["source_user"].astype(str), "source_item": raw["source_item"].astype(str),
                        "timestamp": raw["timestamp"].astype("int64")})
    raw = raw[(raw["source_user"] != "") & (raw["source_item"] != "")]
    return raw.drop_duplicates().reset_index(drop=True)


def _map_users(prep: pd.DataFrame, raw: pd.DataFrame, n_users: int) -> np.ndarray:
    """Source user of each prepared user: the raw user holding all its events (else the most), numbering increasing."""
    m = prep[["user_id", "source_item", "timestamp"]].merge(raw, on=["source_item", "timestamp"])
    hits = m.groupby(["user_id", "source_user"]).size().rename("hits").reset_index()
    need = prep.groupby("user_id").size()
    hits["need"] = need.reindex(hits["user_id"]).to_numpy()
    users = pd.Series(raw["source_user"].unique())
    rank = pd.Series(np.argsort(np.argsort(_sort_key(users).to_numpy(), kind="stable")), index=users.to_numpy())
    hits["rank"] = rank.reindex(hits["source_user"]).to_numpy()
    hits = hits.sort_values(["user_id", "rank"], kind="stable")
    u, su = hits["user_id"].to_numpy(), hits["source_user"].to_numpy()
    full, rk, nh = (hits["hits"] == hits["need"]).to_numpy(), hits["rank"].to_numpy(), hits["hits"].to_numpy()
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.array([], dtype=np.int64)
    out = np.full(n_users, "", dtype=object)
    prev = -1
    for a, b in zip(starts, np.r_[starts[1:], len(u)]):
        idx = np.arange(a, b)
        cand = idx[full[a:b]]
        if len(cand):  # the first full match that keeps the numbering increasing, else the first full match
            later = cand[rk[cand] > prev]
            j = later[0] if len(later) else cand[0]
        else:  # no raw user holds all its events: the one holding most (the check then reports the rest)
            j = idx[np.lexsort((rk[a:b], -nh[a:b]))[0]]
        out[u[a]], prev = su[j], max(prev, int(rk[j]))
    return out


def _loo_periods(ev: pd.DataFrame) -> np.ndarray:
    """Leave-one-out period of each row of `ev` (user_id, timestamp, marked), see the module docstring.

    A user's events are ranked by time; simultaneous events are ranked by their mark (train first, unmarked
    last), which is the only freedom a split has; the last rank is test, the one before valid (n >= 3), the rest
    train. An event marked for an earlier period than its rank gives it is then a leak.
    """
    mark = ev["marked"].map(RANK).fillna(len(PERIODS)).to_numpy()
    order = np.lexsort((mark, ev["timestamp"].to_numpy(), ev["user_id"].to_numpy()))
    users = ev["user_id"].to_numpy()[order]
    start = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=np.int64)
    sizes = np.diff(np.r_[start, len(users)])
    n = np.repeat(sizes, sizes)
    from_end = n - 1 - (np.arange(len(users)) - np.repeat(start, sizes))
    period = np.where((from_end == 0) & (n >= 2), "test", np.where((from_end == 1) & (n >= 3), "valid", "train"))
    out = np.empty(len(ev), dtype=object)
    out[order] = period
    return out


def load_truth(raw_events: pd.DataFrame, items: pd.DataFrame, events: pd.DataFrame,
               split: dict) -> tuple[Truth, dict]:
    """The raw truth and the `prepared` check: (Truth, {"events", "violations", "example"})."""
    protocol = split["protocol"]
    n_items = len(items)
    source_items = items.sort_values("item_id")["source_id"].astype(str).to_numpy()
    raw = _raw_triples(raw_events)
    item_of = pd.Series(np.arange(n_items), index=source_items)
    raw = raw[raw["source_item"].isin(item_of.index)]
    bad_item = ~events["item_id"].between(0, n_items - 1)
    prep = events[~bad_item].copy()
    prep["source_item"] = source_items[prep["item_id"].to_numpy()]
    n_users = int(events["user_id"].max()) + 1 if len(events) else 0
    source_users = _map_users(prep, raw, n_users)
    problems: list[str] = []
    if bad_item.any():
        problems.append(f"item id {int(events.loc[bad_item, 'item_id'].iloc[0])} is not in items.parquet")

    user_of = pd.Series(np.arange(n_users), index=source_users)
    user_of = user_of[user_of.index != ""]
    tr = raw[raw["source_user"].isin(user_of.index)]
    truth = pd.DataFrame({"user_id": user_of.reindex(tr["source_user"]).to_numpy().astype("int64"),
                          "item_id": item_of.reindex(tr["source_item"]).to_numpy().astype("int64"),
                          "timestamp": tr["timestamp"].to_numpy()})
    key = ["user_id", "item_id", "timestamp"]
    marked = events[key + ["split"]].drop_duplicates(key).rename(columns={"split": "marked"})
    truth = truth.merge(marked, on=key, how="left")
    if protocol == "temporal":
        te, ve = int(split["train_end"]), int(split["valid_end"])
        ts = truth["timestamp"].to_numpy()
        truth["period"] = np.where(ts <= te, "train", np.where(ts <= ve, "valid", "test"))
    else:
        te = ve = None
        truth["period"] = _loo_periods(truth)

    # every prepared row is a raw event of its user, marked no earlier than its raw period
    chk = events[~bad_item].merge(truth[key + ["period"]], on=key, how="left")
    not_raw = chk["period"].isna()
    for r in chk[not_raw].head(1).itertuples():
        problems.append(f"user {r.user_id} (matched to source user {source_users[r.user_id]!r}) item {r.item_id} "
                        f"(source {source_items[r.item_id]!r}) at {r.timestamp} is not a raw event of the user")
    early = chk[~not_raw & (chk["split"].map(RANK).fillna(len(PERIODS)) < chk["period"].map(RANK))]
    for r in early.head(1).itertuples():
        rule = f"train_end {te}, valid_end {ve}" if te is not None else "leave-one-out per user"
        problems.append(f"user {r.user_id} (source {source_users[r.user_id]!r}) item {r.item_id} "
                        f"(source {source_items[r.item_id]!r}) at {r.timestamp} is marked {r.split}, but its raw "
                        f"timestamp puts it in {r.period} ({rule})")
    n_bad = int(bad_item.sum()) + int(not_raw.sum()) + len(early)
    report = {"events": int(len(events)), "raw_events": int(len(raw)),
              "users_matched": int((source_users != "").sum()), "violations": n_bad}
    if problems:
        report["example"] = problems[0]
    t = Truth(truth[["user_id", "item_id", "timestamp", "period"]], protocol, te, ve, n_items, source_users,
              source_items)
    return t, report


# --- checks ------------------------------------------------------------------------------------------------------

def check_sequences(truth: Truth, users, seqs, what: str = "sequence") -> dict:
    """Each sequence's items (with multiplicity) must be train-period raw events of its user."""
    users = np.asarray(users, dtype=np.int64)
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    df = pd.DataFrame({"seq": np.repeat(np.arange(len(seqs)), lens), "user_id": np.repeat(users, lens),
                       "item_id": np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
                       if len(seqs) else np.array([], dtype=np.int64)})
    used = df.groupby(["seq", "user_id", "item_id"]).size().rename("used").reset_index()
    used = used.merge(truth.allowed().reset_index(), on=["user_id", "item_id"], how="left")
    used["allowed"] = used["allowed"].fillna(0).astype("int64")
    bad = used[used["used"] > used["allowed"]]
    out = {"sequences": int(len(seqs)), "items": int(lens.sum()), "violations": int(len(bad))}
    if len(bad):
        r = bad.iloc[0]
        out["example"] = (f"{what} {int(r['seq'])} uses {truth.describe(int(r['user_id']), int(r['item_id']))} "
                          f"{int(r['used'])}x, but the user has {int(r['allowed'])} train-period raw event(s) of it "
                          f"(cutoff: {truth.cutoff()})")
    return out


def _cooccurrence_bound(truth: Truth, periods, a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(len(a),) sum over users of n_u(a) * n_u(b) over raw events in `periods`."""
    allowed = truth.allowed(periods).reset_index()
    n_users = len(truth.source_users)
    c = sparse.csr_matrix((allowed["allowed"].to_numpy().astype(np.float64),
                           (allowed["item_id"].to_numpy(), allowed["user_id"].to_numpy())),
                          shape=(truth.num_items, max(n_users, 1)))  # items x users
    ct = c.T.tocsr()
    out = np.zeros(len(a), dtype=np.float64)
    uniq = np.unique(a)
    for s in range(0, len(uniq), chunk):
        rows = uniq[s:s + chunk]
        block = (c[rows] @ ct).toarray()  # (chunk, items)
        sel = np.isin(a, rows)
        out[sel] = block[np.searchsorted(rows, a[sel]), b[sel]]
    return out


def check_pairs(truth: Truth, pairs: pd.DataFrame) -> dict:
    """Co-occurrence pairs (a, b, count, split) against the raw events that could have produced them."""
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    count = pairs["count"].to_numpy(np.float64)
    held = (pairs["split"] == "heldout").to_numpy() if "split" in pairs else np.zeros(len(pairs), bool)
    ok_ids = (a >= 0) & (a < truth.num_items) & (b >= 0) & (b < truth.num_items)
    bound = np.zeros(len(pairs))
    for mask, periods in ((~held & ok_ids, ("train",)), (held & ok_ids, ("train", "valid"))):
        if mask.any():
            bound[mask] = _cooccurrence_bound(truth, periods, a[mask], b[mask])
    bad = np.flatnonzero(count > bound)
    out = {"pairs": int((~held).sum()), "occurrences": int(count[~held].sum()), "heldout_pairs": int(held.sum()),
           "violations": int(len(bad))}
    if len(bad):
        i = bad[0]
        kind = "heldout pair (no test-period event)" if held[i] else "train pair"
        if not ok_ids[i]:
            out["example"] = f"{kind} ({a[i]}, {b[i]}) names an item outside items.parquet"
        else:
            out["example"] = (f"{kind} ({a[i]}, {b[i]}) (sources {truth.source_items[a[i]]!r}, "
                              f"{truth.source_items[b[i]]!r}) has count {int(count[i])}, but the raw events allow "
                              f"{int(bound[i])} (users with both items before the cutoff: {truth.cutoff()})")
    return out


def check_popularity(truth: Truth, scores: np.ndarray, window_days: int = 0) -> dict:
    """Per-item popularity counts <= the item's train-period raw events (within the recency window, if any)."""
    scores = np.asarray(scores, dtype=np.float64)
    tr = truth.events[truth.events["period"] == "train"]
    if window_days > 0 and len(tr):
        tr = tr[tr["timestamp"] > tr["timestamp"].max() - window_days * DAY]
    bound = np.bincount(tr["item_id"].to_numpy(), minlength=truth.num_items).astype(np.float64)
    out = {"items": int(len(scores)), "counts": float(scores.sum()), "window_days": int(window_days), "violations": 0}
    if len(scores) != truth.num_items:
        out["violations"] = 1
        out["example"] = f"{len(scores)} scores for {truth.num_items} catalogue items"
        return out
    bad = np.flatnonzero(scores > bound + 1e-9)
    out["violations"] = int(len(bad))
    if len(bad):
        i = bad[0]
        within = f" within {window_days} days of the last train-period event" if window_days > 0 else ""
        out["example"] = (f"item {i} (source {truth.source_items[i]!r}) has count {scores[i]:g}, but only "
                          f"{int(bound[i])} train-period raw event(s){within} (cutoff: {truth.cutoff()})")
    return out


# --- rebuilding what the stages build -----------------------------------------------------------------------------

class ItemCodec:
    """Stands in for `sidrec.corpus.prompts.PromptCodec`: spells every item as its id, after a marker."""
    HISTORY, PROMPT, RECOMMEND, IDENTITY = -1, -2, -3, -4
    positions = 1

    def __init__(self, num_items: int) -> None:
        self.titles = [""] * num_items

    def sid(self, items) -> list[int]:
        return [int(i) for i in np.asarray(items, dtype=np.int64).reshape(-1)]

    def identity(self, item: int) -> tuple[list[int], list[int]]:
        return [self.IDENTITY, int(item)], [self.IDENTITY, int(item)]

    def sequence(self, items) -> list[int]:
        return [self.HISTORY, *self.sid(items)]

    def prompt(self, history, constraint: str | None = None) -> list[int]:
        return [self.PROMPT, *self.sid(history), self.RECOMMEND]


class _PerItem:
    """attributes[user * n + item] -> attributes[item], for the user-encoding run of `sft_examples`."""

    def __init__(self, attributes, n: int) -> None:
        self.attributes, self.n = attributes, n

    def __getitem__(self, k):
        return self.attributes[int(k) % self.n]

    def __len__(self) -> int:
        return len(self.attributes)


def _user_encoded(events: pd.DataFrame, n: int) -> pd.DataFrame:
    return events.assign(item_id=events["user_id"].astype("int64") * n + events["item_id"].astype("int64"))


def _attribute(artifact: str, real: list, shadow: list, n: int) -> tuple[list[int], list[np.ndarray]]:
    """Users and items of sequences built twice (plain ids, user-encoded ids); see the module docstring."""
    if len(real) != len(shadow):
        raise DataError(f"leakage: {artifact}: the user-encoded rebuild gave {len(shadow)} sequences, not {len(real)}; "
                        "the builder depends on item id values, so its sequences cannot be attributed to users")
    users, seqs = [], []
    for i, (r, s) in enumerate(zip(real, shadow)):
        r, s = np.asarray(r, dtype=np.int64), np.asarray(s, dtype=np.int64)
        u = np.unique(s // n) if len(s) else np.array([-1])
        if len(r) != len(s) or not np.array_equal(s % n, r) or len(u) != 1:
            raise DataError(f"leakage: {artifact}: sequence {i} is not one user's items (users {u.tolist()[:5]}); "
                            "each sequence must come from a single user's history")
        users.append(int(u[0]))
        seqs.append(r)
    return users, seqs


def gpt_windows(events: pd.DataFrame, p: Params, n: int) -> tuple[list[int], list[np.ndarray]]:
    """The GPT's training windows exactly as stages/train_gpt.py builds them, with their users."""
    w, stride = p.eval.max_history + 1, p.gpt.window_stride
    real = sequences.sliding_windows(sequences.train_sequences(events), w, stride)
    shadow = sequences.sliding_windows(sequences.train_sequences(_user_encoded(events, n)), w, stride)
    return _attribute("windows", real, shadow, n)


def _split_streams(streams: list[list[int]], artifact: str) -> tuple[list[list[int]], int]:
    """Item sequences of CPT/SFT token streams from `ItemCodec` (identity sentences dropped, counted)."""
    out, identity = [], 0
    for s in streams:
        if s[0] == ItemCodec.IDENTITY:
            identity += 1
        elif s[0] == ItemCodec.HISTORY:
            out.append(s[1:])
        elif s[0] == ItemCodec.PROMPT and ItemCodec.RECOMMEND in s:
            cut = s.index(ItemCodec.RECOMMEND)
            out.append(s[1:cut] + s[cut + 1:])
        else:
            raise DataError(f"leakage: {artifact}: a token stream of unknown shape (starts {s[:3]})")
    return out, identity


def cpt_sentences(events: pd.DataFrame, p: Params, n: int) -> tuple[list[int], list[np.ndarray], int]:
    """History sentences (training and held-out) of stages/cpt.py's corpus, with their users; identity count."""
    c = p.cpt
    args = (c.window, c.max_sequences, c.identity_repeats, c.heldout, p.seed)
    train, held, _ = corpus_build.cpt_corpus(ItemCodec(n), events, *args)
    s_train, s_held, _ = corpus_build.cpt_corpus(ItemCodec(n), _user_encoded(events, n), *args)
    real, identity = _split_streams(train + held, "cpt")
    shadow, _ = _split_streams(s_train + s_held, "cpt")
    users, seqs = _attribute("cpt", real, shadow, n)
    return users, seqs, identity


def sft_sequences(events: pd.DataFrame, items: pd.DataFrame, p: Params, n: int) -> tuple[list[int], list[np.ndarray]]:
    """History + target of every stages/sft.py example, with their users."""
    s = p.sft
    attributes = items["genres"].tolist()
    real = corpus_build.sft_examples(ItemCodec(n), events, attributes, p.llm.max_history, s.max_examples,
                                     s.constraint_share, p.seed, s.objective)[0]
    shadow = corpus_build.sft_examples(ItemCodec(n), _user_encoded(events, n), _PerItem(attributes, n),
                                       p.llm.max_history, s.max_examples, s.constraint_share, p.seed, s.objective)[0]
    return _attribute("sft", _split_streams(real, "sft")[0], _split_streams(shadow, "sft")[0], n)


# --- everything ------------------------------------------------------------------------------------------------

def check_leakage(raw_events: pd.DataFrame, items: pd.DataFrame, events: pd.DataFrame, split: dict, params: Params,
                  *, pairs: pd.DataFrame | None = None, popularity: tuple[np.ndarray, int] | None = None,
                  windows: tuple[list[int], list] | None = None, cpt: tuple[list[int], list] | None = None,
                  sft: tuple[list[int], list] | None = None) -> dict:
    """Check every interaction-derived artifact against the raw timestamps; returns the report, raises on a leak.

    Args:
        raw_events: interactions from `load_raw` (source_user, source_item, timestamp).
        items, events, split: data/prepared/items.parquet, events.parquet, split.json.
        params: the pipeline's params (the stages' window, corpus and seed settings).
        pairs: data/pairs.parquet (skipped when None).
        popularity: (scores, window_days) of models/popularity (skipped when None).
        windows, cpt, sft: (users, item sequences) to check instead of rebuilding them from `events`.
    Raises:
        DataError: one line, `leakage: <artifact>: <n> violation(s), e.g. <example>`.
    """
    items = items.sort_values("item_id").reset_index(drop=True)
    n = len(items)
    truth, prepared = load_truth(raw_events, items, events, split)
    report: dict = {"protocol": truth.protocol, "train_end": truth.train_end, "valid_end": truth.valid_end,
                    "prepared": prepared}
    if windows is None:
        windows = gpt_windows(events, params, n)
    report["windows"] = check_sequences(truth, *windows, what="window")
    identity = None
    if cpt is None:
        *cpt, identity = cpt_sentences(events, params, n)
    report["cpt"] = check_sequences(truth, *cpt, what="history sentence")
    if identity is not None:
        report["cpt"]["identity_sentences"] = identity
    if sft is None:
        sft = sft_sequences(events, items, params, n)
    report["sft"] = check_sequences(truth, *sft, what="example")
    if pairs is not None:
        report["pairs"] = check_pairs(truth, pairs)
    if popularity is not None:
        report["popularity"] = check_popularity(truth, *popularity)
    leaks = [(k, v) for k, v in report.items() if isinstance(v, dict) and v.get("violations")]
    if leaks:
        (name, first), rest = leaks[0], leaks[1:]
        others = ", ".join(f"{k} ({v['violations']})" for k, v in rest)
        also = f"; also leaking: {others}" if rest else ""
        raise DataError(f"leakage: {name}: {first['violations']} violation(s), e.g. {first.get('example', '?')}{also}")
    return report
