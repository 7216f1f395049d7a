"""Prompt formats of the LLM recommender, built as token-id lists (docs/systems.md, PLUM).

Text pieces go through the LLM's tokenizer; SID tokens are inserted by id (they were added by vocabulary surgery),
so an item is always exactly its P tokens. Formats (text in quotes, {SID} = the item's P tokens):
- identity, both directions: "The item {title} is represented by ID" {SID} "." and "ID" {SID} " is {title}."
- sequence: "User history:" {SID} {SID} ...
- recommendation: "User history:" {SID} ... ["Constraint: Suggest a {value} {noun}."] "Recommendation:" {target SID}
- recommendation of a model trained with the dense SFT objective (`objective="dense"`): without a constraint, the
  history sentence itself, "User history:" {SID} ... {target SID}, as it was trained (sidrec.corpus.build);
  with one, the constrained prompt above.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from transformers import PreTrainedTokenizerBase

from sidrec.tokenizers.sids import SidTable, TokenLayout

NOUNS = {"ml": "movie", "amazon": "product"}


def item_noun(dataset: str) -> str:
    """What an item is called in prompts: `movie` for MovieLens, `product` for Amazon, else `item`."""
    return NOUNS.get(dataset.split("-")[0], "item")


class PromptCodec:
    """Builds every LLM token stream of one tokenizer's SID table.

    Args:
        tok: the LLM tokenizer (after surgery).
        sid_token_ids: (sum(vocab_sizes),) LLM id of each SID token in TokenLayout order (`add_sid_vocabulary`).
        sids: the SID table.
        titles: (N,) item titles.
        noun: what items are called in constraints ("movie").
        objective: the SFT objective the prompts are for: `last` or `dense` (see `prompt`).
    """

    def __init__(self, tok: PreTrainedTokenizerBase, sid_token_ids: np.ndarray, sids: SidTable,
                 titles: list[str], noun: str = "item", objective: str = "last") -> None:
        if objective not in ("dense", "last"):
            raise ValueError(f"sft.objective: unknown {objective!r}; use dense or last")
        self.objective = objective
        self.tok = tok
        self.titles = [str(t) for t in titles]
        self.noun = noun
        self.item_tokens = np.asarray(sid_token_ids)[TokenLayout(sids.vocab_sizes).item_tokens(sids.codes)]  # (N, P)
        self.positions = self.item_tokens.shape[1]
        self.text = lru_cache(maxsize=None)(self._encode)

    def _encode(self, s: str) -> tuple[int, ...]:
        return tuple(self.tok(s, add_special_tokens=False).input_ids)

    def sid(self, items) -> list[int]:
        """The SID tokens of a list of item ids, concatenated."""
        return self.item_tokens[np.asarray(items, dtype=np.int64)].reshape(-1).tolist()

    def identity(self, item: int) -> tuple[list[int], list[int]]:
        """The two identity sentences of an item (title -> ID, ID -> title)."""
        title = self.titles[item]
        return ([*self.text(f"The item {title} is represented by ID"), *self.sid([item]), *self.text(".")],
                [*self.text("ID"), *self.sid([item]), *self.text(f" is {title}.")])

    def sequence(self, items) -> list[int]:
        """A user-history sentence for continued pre-training."""
        return [*self.text("User history:"), *self.sid(items)]

    def constraint_text(self, value: str) -> str:
        return f" Constraint: Suggest a {value} {self.noun}."

    def prompt(self, history, constraint: str | None = None) -> list[int]:
        """The recommendation prompt; the target's P tokens follow it. A dense-objective model reads an
        unconstrained history as the history sentence it was trained on."""
        if self.objective == "dense" and not constraint:
            return self.sequence(history)
        out = [*self.text("User history:"), *self.sid(history)]
        if constraint:
            out += self.text(self.constraint_text(constraint))
        return out + list(self.text(" Recommendation:"))
