"""The CPT corpus and the SFT examples (docs/systems.md, PLUM), as token-id lists from a `PromptCodec`.

- CPT ("bilingual": item language <-> ID language): both identity sentences of every catalogue item, cold-start
  items included (their titles are known at launch), repeated `identity_repeats` times, plus user-history
  sentences cut from train histories only (windows of `window` items; a seeded sample of `max_sequences`), of
  which a seeded `heldout` share is kept out for the before/after perplexity.
- SFT, objective `last` (one target per example): (history, next item) pairs from train histories only; a
  `constraint_share` of the prompts carry a constraint drawn from the target's own attributes (`genres`:
  MovieLens genres, Amazon category path), so the constraint is always satisfiable and true.
- SFT, objective `dense` (a target at every position, as LC-Rec's per-position prompts and GRID's all-position
  loss): windows of up to `max_history` + 1 train items, spelled as the history sentence "User history:" {SID}
  ..., the loss on the SID tokens of every item after the first. The unconstrained recommendation prompt of a
  dense model is that sentence up to the last history item (`PromptCodec(objective="dense")`), so training and
  decoding see the same format. The constrained one-target examples of `last` stay beside them, a
  `constraint_share` of all examples, so steering is still trained.

Every SFT example is a token stream whose last `tail` tokens are the loss targets (`sft_examples`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sidrec.corpus.prompts import PromptCodec
from sidrec.data.sequences import sliding_windows, train_sequences

OBJECTIVES = ("dense", "last")


def history_windows(events: pd.DataFrame, window: int) -> list[np.ndarray]:
    """Non-overlapping windows of `window` items over each user's train history (time order)."""
    return [s[a:a + window] for s in train_sequences(events) for a in range(0, len(s), window) if len(s[a:a + window])]


def cpt_corpus(codec: PromptCodec, events: pd.DataFrame, window: int, max_sequences: int, identity_repeats: int,
               heldout: float, seed: int) -> tuple[list[list[int]], list[list[int]], dict]:
    """Returns (shuffled training sequences, held-out history sentences, counts)."""
    rng = np.random.default_rng(seed)
    windows = _sample(history_windows(events, window), max_sequences, rng)
    order = rng.permutation(len(windows))
    n_held = max(1, int(round(heldout * len(windows))))
    held = [codec.sequence(windows[i]) for i in order[:n_held]]
    history = [codec.sequence(windows[i]) for i in order[n_held:]]
    identity = [s for item in range(len(codec.titles)) for s in codec.identity(item)] * identity_repeats
    train = identity + history
    train = [train[i] for i in rng.permutation(len(train))]
    counts = {"identity_sentences": len(identity), "history_sentences": len(history), "heldout_sentences": len(held),
              "history_targets": int(sum(len(windows[i]) - 1 for i in order[n_held:])),
              "train_tokens": int(sum(map(len, train)))}
    return train, held, counts


def sft_examples(codec: PromptCodec, events: pd.DataFrame, attributes: list[list[str]], max_history: int,
                 max_examples: int, constraint_share: float, seed: int,
                 objective: str = "last") -> tuple[list[list[int]], list[int], dict]:
    """SFT token streams, the number of loss tokens at the end of each, and counts.

    Args:
        attributes: per item, the values a constraint may name (its genres / categories).
        max_examples: a seeded sample of this many examples (0 = all). `last`: (history, target) pairs; `dense`:
            windows, plus constrained one-target examples making up `constraint_share` of the total.
        objective: `last` (one target per example, the target's P tokens last) or `dense` (see the module doc).
    Returns:
        (streams, tails, counts): counts has examples, constrained, targets (supervised next items) and tokens.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"sft.objective: unknown {objective!r}; use one of {', '.join(OBJECTIVES)}")
    rng = np.random.default_rng(seed)
    seqs = train_sequences(events)
    pairs = [(s, t) for s in seqs for t in range(1, len(s))]
    out, tails, constrained, windows = [], [], 0, []
    if objective == "dense":
        windows = _sample(sliding_windows(seqs, max_history + 1, max_history), max_examples, rng)
        share = min(constraint_share, 0.99)
        pairs = [p for p in pairs if len(attributes[int(p[0][p[1]])])]
        n_constrained = int(round(len(windows) * share / (1 - share)))
        pairs = _sample(pairs, n_constrained, rng) if n_constrained else []
        for w in windows:
            out.append(codec.sequence(w.tolist()))
            tails.append((len(w) - 1) * codec.positions)
    else:
        pairs = _sample(pairs, max_examples, rng)
    for seq, t in pairs:
        target = int(seq[t])
        values = list(attributes[target])
        constraint = None
        if values and (objective == "dense" or rng.random() < constraint_share):
            constraint = str(values[rng.integers(len(values))])
            constrained += 1
        out.append(codec.prompt(seq[max(0, t - max_history):t].tolist(), constraint) + codec.sid([target]))
        tails.append(codec.positions)
    order = rng.permutation(len(out))
    targets = sum(tail // codec.positions for tail in tails)
    return [out[i] for i in order], [tails[i] for i in order], {
        "objective": objective, "examples": len(out), "windows": len(windows), "constrained": constrained,
        "targets": int(targets), "tokens": int(sum(map(len, out)))}


def _sample(rows: list, n: int, rng: np.random.Generator) -> list:
    """A seeded sample of `n` rows in their original order (all when n is 0 or >= len(rows))."""
    if n and len(rows) > n:
        return [rows[i] for i in np.sort(rng.choice(len(rows), n, replace=False))]
    return rows
