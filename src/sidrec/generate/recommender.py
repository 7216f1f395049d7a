"""`TrieRecommender`: what every semantic-ID recommender (the GPT and the LLM) shares: prompts in, the shared
beam search over the catalogue trie, TIGER's cold-start fill, and the unconstrained decode for the invalid-ID rate."""
from __future__ import annotations

import contextlib

import numpy as np

from sidrec.generate.beam import NEG_INF, Beams, beam_search_with_prefixes, unconstrained_beam_search
from sidrec.generate.fill import cold_fill, cold_slots
from sidrec.generate.trie import ItemTrie


class TrieRecommender:
    """`recommend` / `invalid_rate` of every recommender that decodes semantic IDs (the GPT and the LLM): the
    shared beam search over `self.trie` from `self._prompts(cases)`, with the cold-start fill of `self.decode`.

    A subclass sets `trie`, `decode` (a `sidrec.recommend.DecodeSettings`) and `pad_id`, and defines
    `_prompts(cases) -> token lists`; `_decoding()` is the context decoding runs in (the LLM's autocast).
    """

    trie: ItemTrie
    pad_id: int
    progress: bool = False
    """Show a progress bar while recommending."""

    def _prompts(self, cases) -> list[list[int]]:
        raise NotImplementedError

    def _decoding(self):
        return contextlib.nullcontext()

    def _banned(self, cases) -> list[list[int]] | None:
        return [list(s) for s in cases["seen"]] if self.decode.exclude_seen else None

    def beams(self, cases, k: int, progress: bool = False) -> Beams:
        """Trie-constrained beam search of every case, with the beams kept per depth (no cold-start fill)."""
        with self._decoding():
            return beam_search_with_prefixes(self.model, self._prompts(cases), self.trie,
                                             beam_size=self.decode.beam_size, k=k, batch_size=self.decode.batch_size,
                                             banned=self._banned(cases), pad_token_id=self.pad_id, progress=progress)

    def fill(self, beams: Beams, cases, epsilon: float) -> np.ndarray:
        """`beams.items` with floor(epsilon * k) slots open to `decode.cold_items` (`cold_fill`)."""
        return cold_fill(self.trie, beams, self.decode.cold_items, cold_slots(epsilon, beams.items.shape[1]),
                         self._banned(cases))

    def recommend(self, cases, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items (B, k) and their summed log-probs (B, k); filled cold items score -inf (no full-path score)."""
        found = self.beams(cases, k, progress=self.progress)
        if cold_slots(self.decode.cold_epsilon, k) == 0 or not self.decode.cold_items:
            return found.items, found.scores
        items = self.fill(found, cases, self.decode.cold_epsilon)
        same = items == found.items
        return items, np.where(same, found.scores, NEG_INF).astype(np.float32)

    def invalid_rate(self, cases, k: int) -> float:
        """Share of unconstrained top-k beams that decode to no catalogue item."""
        items, _ = self.unconstrained(cases, k)
        return float((items < 0).mean())

    def unconstrained(self, cases, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Beam search over the full vocabulary (no trie, no exclusions); -1 where a path is not an item."""
        with self._decoding():
            return unconstrained_beam_search(self.model, self._prompts(cases), self.trie,
                                             beam_size=self.decode.beam_size, k=k, batch_size=self.decode.batch_size,
                                             pad_token_id=self.pad_id)
