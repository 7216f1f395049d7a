"""TIGER's cold-start fill: cold items (never a training target) take the last slots of a top-k list when their
ID starts with a prefix the beam search kept (Rajput et al. 2023, sec. 4.3)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sidrec.generate.beam import Beams
from sidrec.generate.trie import ItemTrie


def cold_slots(epsilon: float, k: int) -> int:
    """Slots of a top-k list that cold-start items may fill: floor(epsilon * k) (a float guard keeps 0.3 * 10 = 3)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"cold_epsilon: {epsilon} is outside [0, 1]")
    return int(np.floor(epsilon * k + 1e-9))


def cold_fill(trie: ItemTrie, beams: Beams, cold_items: Sequence[int], slots: int,
              banned: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """TIGER's cold-start fill (Rajput et al. 2023, sec. 4.3): up to `slots` of each top-k list go to cold items
    (zero train events, so the model never saw their full ID as a target) whose ID starts with a prefix the beam
    search kept.

    Matching: the longest prefix first. Cold items under a beam kept after P - 1 tokens come first (they share
    every code but the last with an item the model rated highly: for RQ-VAE IDs, the same residual codes), then
    prefixes of P - 2 tokens, and so on down to the first token (back-off: with 256 codes per level most items
    are alone below depth 2, so the deeper prefixes rarely match). Within one prefix length, cold items are ordered
    by the model's log-probability of the prefix they match; several cold items under one prefix by item id.

    Placement: the found items take the LAST slots of the list, replacing its lowest-ranked warm items; the first
    k - slots results are the beam search's own, untouched. A prefix score is an upper bound of a full path's, not
    comparable with the warm items' full-path scores, so the cold items are not interleaved by score; the cost in
    warm accuracy is bounded by the lowest ranks' share of NDCG@k. slots = 0 returns `beams.items` unchanged.

    Args:
        trie: the catalogue trie the beams were searched in.
        beams: from `beam_search_with_prefixes`.
        cold_items: item ids eligible for the fill.
        slots: most cold items added per list (`cold_slots(epsilon, k)`).
        banned: per case, item ids never to add (the history, as the beam search excluded them).
    Returns:
        (B, k) int64 item ids.
    """
    items = beams.items
    if slots <= 0 or len(cold_items) == 0:
        return items
    b, k = items.shape
    slots = min(slots, k)
    cold = np.unique(np.asarray(list(cold_items), dtype=np.int64))
    # per prefix depth d + 1: trie node -> the cold items below it (item id order)
    nodes = trie.item_nodes(cold)  # (C, P): node of each cold item at depths 1..P
    below: list[dict[int, list[int]]] = []
    for d in range(trie.depth - 1):
        table: dict[int, list[int]] = {}
        for item, node in zip(cold.tolist(), nodes[:, d].tolist()):
            table.setdefault(node, []).append(item)
        below.append(table)
    out = items.copy()
    for i in range(b):
        listed = set(items[i][items[i] >= 0].tolist())
        skip = listed | (set(int(x) for x in banned[i]) if banned is not None else set())
        found: list[int] = []
        for d in range(trie.depth - 2, -1, -1):  # deepest prefix first
            order = np.argsort(-beams.prefix_scores[i, d], kind="stable")
            for node in beams.prefix_nodes[i, d][order].tolist():
                for item in below[d].get(node, ()) if node >= 0 else ():
                    if item not in skip:
                        found.append(item)
                        skip.add(item)
                if len(found) >= slots:
                    break
            if len(found) >= slots:
                break
        if found:
            found = found[:slots]
            warm = [x for x in items[i].tolist() if x >= 0][: k - len(found)]
            row = warm + found
            out[i] = row + [-1] * (k - len(row))
    return out
