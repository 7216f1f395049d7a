"""The CPT corpus and the SFT examples (docs/systems.md, PLUM), as token-id lists from a `PromptCodec`.

- CPT ("bilingual": item language <-> ID language): both identity sentences of every catalogue item, cold-start
  items included (their titles are known at launch), repeated `identity_repeats` times, plus user-history
  sentences cut from train histories only (windows of `window` items; a seeded sample of `max_sequences`), of
  which a seeded `heldout` share is kept out for the before/after perplexity.
- SFT: (history, next item) pairs from train histories only; a `constraint_share` of the prompts carry a
  constraint drawn from the target's own attributes (`genres`: MovieLens genres, Amazon category path), so the
  constraint is always satisfiable and true.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sidrec.corpus.prompts import PromptCodec
from sidrec.data.sequences import train_sequences


def history_windows(events: pd.DataFrame, window: int) -> list[np.ndarray]:
    """Non-overlapping windows of `window` items over each user's train history (time order)."""
    return [s[a:a + window] for s in train_sequences(events) for a in range(0, len(s), window) if len(s[a:a + window])]


def cpt_corpus(codec: PromptCodec, events: pd.DataFrame, window: int, max_sequences: int, identity_repeats: int,
               heldout: float, seed: int) -> tuple[list[list[int]], list[list[int]], dict]:
    """Returns (shuffled training sequences, held-out history sentences, counts)."""
    rng = np.random.default_rng(seed)
    windows = history_windows(events, window)
    if max_sequences and len(windows) > max_sequences:
        windows = [windows[i] for i in np.sort(rng.choice(len(windows), max_sequences, replace=False))]
    order = rng.permutation(len(windows))
    n_held = max(1, int(round(heldout * len(windows))))
    held = [codec.sequence(windows[i]) for i in order[:n_held]]
    history = [codec.sequence(windows[i]) for i in order[n_held:]]
    identity = [s for item in range(len(codec.titles)) for s in codec.identity(item)] * identity_repeats
    train = identity + history
    train = [train[i] for i in rng.permutation(len(train))]
    counts = {"identity_sentences": len(identity), "history_sentences": len(history), "heldout_sentences": len(held),
              "train_tokens": int(sum(map(len, train)))}
    return train, held, counts


def sft_examples(codec: PromptCodec, events: pd.DataFrame, attributes: list[list[str]], max_history: int,
                 max_examples: int, constraint_share: float, seed: int) -> tuple[list[list[int]], dict]:
    """Prompt + target SID token lists (the target's P tokens last) and counts.

    Args:
        attributes: per item, the values a constraint may name (its genres / categories).
    """
    rng = np.random.default_rng(seed)
    pairs = [(s, t) for s in train_sequences(events) for t in range(1, len(s))]
    if max_examples and len(pairs) > max_examples:
        pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), max_examples, replace=False))]
    out, constrained = [], 0
    for seq, t in pairs:
        target = int(seq[t])
        values = list(attributes[target])
        constraint = None
        if values and rng.random() < constraint_share:
            constraint = str(values[rng.integers(len(values))])
            constrained += 1
        out.append(codec.prompt(seq[max(0, t - max_history):t].tolist(), constraint) + codec.sid([target]))
    order = rng.permutation(len(out))
    return [out[i] for i in order], {"examples": len(out), "constrained": constrained,
                                     "tokens": int(sum(map(len, out)))}
