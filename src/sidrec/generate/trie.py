"""The catalogue as a prefix tree over item token paths (the trie of GENRE, De Cao et al. 2021, as TIGER uses it).

Every catalogue item is a fixed-length path of P token ids; `ItemTrie` stores the set of paths per depth as
sorted edge lists (CSR), so the beam search (`sidrec.generate.beam`) can look up the children of a whole batch
of beams with tensor ops, ban the items a case has already seen, and map a finished path back to its item.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class ItemTrie:
    """Prefix tree over the set of item token paths, stored per depth as sorted edge lists (CSR).

    Node ids: depth 0 has the single root node 0; the nodes at depth d + 1 are the edges leaving depth d,
    numbered in (parent, token) order, so the children of node n at depth d are the edges
    offsets[d][n] : offsets[d][n + 1]. No hierarchy is assumed: parallel codes give a wide, shallow trie.

    Args:
        item_tokens: (N, P) int array, row i = token ids of item i; rows must be unique.
    """

    def __init__(self, item_tokens: np.ndarray) -> None:
        tokens = np.asarray(item_tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"ItemTrie: item_tokens must be a non-empty (N, P) array, got shape {tokens.shape}")
        if (tokens < 0).any():
            raise ValueError("ItemTrie: token ids must be non-negative")
        n, p = tokens.shape
        self.num_items, self.depth = n, p
        self.stride = int(tokens.max()) + 1  # edge key = parent * stride + token
        self.offsets: list[torch.Tensor] = []  # depth d: (nodes_d + 1,)
        self.edge_tokens: list[torch.Tensor] = []  # depth d: (edges_d,)
        self.edge_keys: list[torch.Tensor] = []  # depth d: (edges_d,) sorted
        node = np.zeros(n, dtype=np.int64)  # each item's node at the current depth
        item_nodes = np.zeros((n, p), dtype=np.int64)  # item's node at depth d + 1 (= its edge at depth d)
        self.subtree: list[torch.Tensor] = []  # depth d: (edges_d,) items under each edge
        for d in range(p):
            keys, child = np.unique(node * self.stride + tokens[:, d], return_inverse=True)
            counts = np.bincount(keys // self.stride, minlength=int(node.max()) + 1)
            self.offsets.append(torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])))
            self.edge_tokens.append(torch.from_numpy(keys % self.stride))
            self.edge_keys.append(torch.from_numpy(keys))
            node = child.reshape(-1)
            item_nodes[:, d] = node
            self.subtree.append(torch.from_numpy(np.bincount(node, minlength=len(keys))))
        if len(self.edge_keys[-1]) != n:
            raise ValueError("ItemTrie: two items share the same token path")
        leaf_item = np.empty(n, dtype=np.int64)
        leaf_item[node] = np.arange(n)
        self._leaf_item = torch.from_numpy(leaf_item)  # (N,) leaf node id -> item id
        self._item_nodes = torch.from_numpy(item_nodes)  # (N, P)

    def exhausted(self, case: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        """Per depth d, sorted keys case * edges_d + edge of the edges every item under which is banned.

        Args:
            case: (E,) case index of each banned entry; items: (E,) banned item ids (unique per case).
        Returns:
            P sorted int64 tensors; a beam must not take an edge whose key is listed (it leads only to banned items).
        """
        out = []
        for d in range(self.depth):
            edges = len(self.subtree[d])
            keys, counts = torch.unique(case * edges + self._item_nodes[items, d], return_counts=True)
            out.append(keys[counts == self.subtree[d][keys % edges]])
        return out

    def step(self, depth: int, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Follow one edge per row.

        Args:
            depth: depth of `nodes`, 0 <= depth < P.
            nodes: (R,) node ids at `depth`, -1 for an invalid prefix.
            tokens: (R,) token ids.
        Returns:
            (R,) node ids at depth + 1 (leaf ids when depth = P - 1), -1 where the path leaves the trie.
        """
        keys = self.edge_keys[depth]
        key = nodes * self.stride + tokens  # (R,)
        pos = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        ok = (nodes >= 0) & (tokens >= 0) & (tokens < self.stride) & (keys[pos] == key)
        return torch.where(ok, pos, torch.full_like(pos, -1))

    def children(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed next tokens of a batch of prefixes, padded to the widest node of the batch.

        Args:
            depth: depth of `nodes`, 0 <= depth < P.
            nodes: (R,) node ids, -1 for an invalid prefix (no children).
        Returns:
            tokens (R, A) int64 and valid (R, A) bool; padded slots hold an arbitrary edge token.
        """
        offsets, edge_tokens = self.offsets[depth], self.edge_tokens[depth]
        safe = nodes.clamp(min=0)
        start = offsets[safe]  # (R,)
        count = torch.where(nodes >= 0, offsets[safe + 1] - start, torch.zeros_like(start))  # (R,)
        width = max(int(count.max()), 1) if len(count) else 1
        slot = torch.arange(width)  # (A,)
        valid = slot[None, :] < count[:, None]  # (R, A)
        idx = (start[:, None] + slot[None, :]).clamp(max=len(edge_tokens) - 1)  # (R, A)
        return edge_tokens[idx], valid

    def node_of(self, prefix: Sequence[int]) -> int:
        """Node id of a prefix (its depth is len(prefix)), -1 if no item starts with it."""
        node = torch.zeros(1, dtype=torch.int64)
        for d, tok in enumerate(prefix):
            if d >= self.depth:
                return -1
            node = self.step(d, node, torch.tensor([int(tok)]))
        return int(node)

    def allowed(self, prefix: Sequence[int]) -> torch.Tensor:
        """Token ids that extend `prefix` towards some item (empty for a full or invalid prefix).

        Args:
            prefix: the first d < P token ids of a path.
        Returns:
            (A,) int64 sorted token ids.
        """
        node = self.node_of(prefix)
        if node < 0 or len(prefix) >= self.depth:
            return torch.zeros(0, dtype=torch.int64)
        offsets = self.offsets[len(prefix)]
        return self.edge_tokens[len(prefix)][int(offsets[node]) : int(offsets[node + 1])]

    def item_nodes(self, items: np.ndarray) -> np.ndarray:
        """(len(items), P) int64: the node of each item's path at depths 1..P (its prefix of d + 1 tokens at column
        d; the last column is its leaf)."""
        return self._item_nodes[torch.from_numpy(np.asarray(items, dtype=np.int64))].numpy()

    def leaf_items(self, leaves: torch.Tensor) -> torch.Tensor:
        """Leaf node ids (any shape, -1 = invalid) -> item ids of the same shape (-1 = invalid)."""
        items = self._leaf_item[leaves.clamp(min=0)]
        return torch.where(leaves >= 0, items, torch.full_like(items, -1))

    def item_of(self, path: Sequence[int]) -> int:
        """Item id of a full token path, -1 if the path is not an item."""
        return int(self.leaf_items(torch.tensor([self.node_of(path)]))) if len(path) == self.depth else -1
