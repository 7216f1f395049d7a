"""Decoding semantic IDs: from a causal LM's next-token logits to catalogue items.

Four modules, one job each:

- `trie`: `ItemTrie`, the catalogue as a prefix tree over item token paths (CSR per depth).
- `beam`: the trie-constrained beam search with one shared prefill and tree attention (`beam_search`,
  `beam_search_with_prefixes`, `Beams`), the unconstrained search behind the invalid-ID rate, and the
  helpers other modules reuse (`left_pad`, `additive_mask`).
- `fill`: TIGER's cold-start fill (`cold_slots`, `cold_fill`).
- `recommender`: `TrieRecommender`, the `recommend` / `invalid_rate` shared by the GPT and the LLM recommenders.

Everything a caller needs is re-exported here (`from sidrec.generate import beam_search, ItemTrie`).
"""
from sidrec.generate.beam import (
    NEG_INF,
    Beams,
    additive_mask,
    beam_search,
    beam_search_with_prefixes,
    left_pad,
    unconstrained_beam_search,
)
from sidrec.generate.fill import cold_fill, cold_slots
from sidrec.generate.recommender import TrieRecommender
from sidrec.generate.trie import ItemTrie

__all__ = ["NEG_INF", "Beams", "ItemTrie", "TrieRecommender", "additive_mask", "beam_search",
           "beam_search_with_prefixes", "cold_fill", "cold_slots", "left_pad", "unconstrained_beam_search"]
