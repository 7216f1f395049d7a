"""PLUM's collaborative indexer (docs/systems.md, PLUM IDs): RQ-VAE + co-occurrence contrastive loss + progressive masking.

L = L_recon + L_rq + lambda * L_contrastive. Items used together should get similar IDs even when their
descriptions differ: L_contrastive is an InfoNCE that pulls each item x towards its co-occurring items x+ and
away from in-batch negatives x-. Progressive masking: with probability `mask_prob` a sample keeps only its first
1..L-1 levels (the deepest level(s) are dropped from z_q, so from the reconstruction, and from the RQ loss), so
prefixes alone must carry broad clusters. With lambda = 0 and mask_prob = 0 the objective is exactly the
RQ-VAE's. Items without pairs (cold-start items) still get IDs: every item is encoded from its content.

How the contrastive term is built, and why (measured on ml-100k, 1682 items, 256 codes x 3 levels; a first
version with a straight-through z_st, pairs drawn in proportion to their counts, one positive per anchor and
similarity -||.||^2 / 0.1 left level-0 sharing of co-occurring pairs at the RQ-VAE's level):
- Representation: the encoder output z, i.e. the vector the quantizer assigns codes from (nearest codeword per
  level), so "close in z" is what "shares a code prefix" means. On z_st (= z_q in value, gradient to z) the loss
  fell as far but the codes did not move: z_q's quantization error is large against the distances between
  co-occurring items, and z_q is blind to where z sits inside its cell, which decides the next assignment.
  Soft (differentiable) assignments that also feed the codebooks collapsed level 0 to a handful of codes.
- Similarity: -||z_i - z_j||^2 / (temperature * mean squared distance in the batch), the quantizer's metric made
  scale-free. With a fixed temperature the encoder shrinks the latent until the logits are soft (the loss falls,
  the geometry does not change); with a detached normaliser the latent shrinks without bound and every item
  falls into one code. The normaliser keeps its gradient, so rescaling z changes nothing.
- Positives and negatives: the RQ-VAE's own item batch (uniform over the catalogue). Every co-occurring pair
  inside the batch is a positive, each anchor's positives weighted equally (multi-positive InfoNCE, as in
  supervised contrastive learning, Khosla et al. 2020); the other batch items are the negatives, so no
  co-occurring item is ever used as a negative. Pairs drawn by count are dominated by popular items (31% of draws
  touch the 50 most popular), their in-batch negatives are popular items that often co-occur with the anchor,
  and one positive per anchor gave the content encoder too little signal within the RQ-VAE's training budget.
- Pairs are unweighted (seen together at least `min_count` times, or not): count or PMI weighting shared fewer
  held-out pairs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.tokenizers.rqvae import RQVAE, rqvae_sids


def keep_levels(batch: int, levels: int, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """(B,) number of leading levels each sample keeps: all `levels`, or with prob. `mask_prob` 1..levels-1."""
    keep = torch.full((batch,), levels, dtype=torch.long)
    if mask_prob <= 0 or levels < 2:
        return keep
    masked = torch.rand(batch, generator=generator) < mask_prob
    shallow = torch.randint(1, levels, (batch,), generator=generator)
    return torch.where(masked, shallow, keep)


class PairIndex:
    """Unordered co-occurrence pairs of `num_items` items, looked up by batch (sorted keys a * N + b, both orders)."""

    def __init__(self, pairs: np.ndarray, num_items: int) -> None:
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(p) and (p.min() < 0 or p.max() >= num_items):
            raise ValueError(f"plum: pair item ids must lie in [0, {num_items})")
        p = p[p[:, 0] != p[:, 1]]
        keys = np.unique(np.concatenate([p[:, 0] * num_items + p[:, 1], p[:, 1] * num_items + p[:, 0]]))
        self.keys = torch.from_numpy(keys)
        self.num_items = num_items

    def __len__(self) -> int:
        return len(self.keys) // 2

    def adjacency(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, B) bool: items idx[i] and idx[j] co-occur (the diagonal is False)."""
        idx = idx.cpu().long()
        query = idx[:, None] * self.num_items + idx[None, :]  # (B, B)
        return torch.isin(query, self.keys)


def multi_positive_info_nce(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch where each anchor may have several positives; all other batch items are negatives.

    logits_ij = -||z_i - z_j||^2 / (temperature * mean_{i != j} ||z_i - z_j||^2), self excluded. Anchor i's loss
    is the mean over its positives j of -log softmax_j(logits_i); anchors without a positive in the batch add
    nothing. The loss is invariant to rescaling z (the normaliser is not detached).

    Args:
        z: (B, d) representations.
        positives: (B, B) bool, symmetric, False on the diagonal.
        temperature: relative to the batch's mean squared distance.
    Returns:
        scalar loss (0 when no anchor has a positive).
    """
    n = len(z)
    has = positives.any(1)
    if n < 2 or not bool(has.any()):
        return z.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    d2 = torch.cdist(z, z).pow(2)  # (B, B)
    scale = d2[off].mean().clamp_min(1e-12)
    logits = (-d2 / (temperature * scale)).masked_fill(~off, float("-inf"))
    logp = F.log_softmax(logits[has], dim=1).masked_fill(~off[has], 0.0)  # (A, B), self term zeroed
    pos = positives[has].to(z.dtype)
    return -((pos * logp).sum(1) / pos.sum(1)).mean()


class PlumObjective(nn.Module):
    """The PLUM loss around an RQVAE, for the shared training loop (`loss(batch)` over item batches).

    Args:
        rqvae: the model being trained (held as `.rqvae`, as `train_rqvae` expects).
        pairs: (P, 2) training co-occurrence pairs (item ids).
        num_items: catalogue size N.
        lam: contrastive weight; 0 turns the term off.
        temperature: InfoNCE temperature, relative to the batch's mean squared latent distance.
        mask_prob: progressive-masking probability.
        seed: seeds the masking generator.
    """

    def __init__(self, rqvae: RQVAE, pairs: np.ndarray, num_items: int, lam: float, temperature: float,
                 mask_prob: float, seed: int) -> None:
        super().__init__()
        self.rqvae = rqvae
        self.index = PairIndex(pairs, num_items)
        self.lam, self.temperature, self.mask_prob = lam, temperature, mask_prob
        self.gen = torch.Generator().manual_seed(seed)

    def contrastive(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Multi-positive InfoNCE on encoder outputs z (B, d) of the batch items `idx` (B,)."""
        return multi_positive_info_nce(z, self.index.adjacency(idx).to(z.device), self.temperature)

    def loss(self, batch: dict) -> dict:
        keep = None
        if self.mask_prob > 0:
            keep = keep_levels(len(batch["x"]), self.rqvae.arch.num_levels, self.mask_prob, self.gen)
            keep = keep.to(batch["x"].device)
        out = self.rqvae(batch["x"], keep=keep)
        total = out["recon_loss"] + out["rq_loss"]
        parts = {"recon": out["recon_loss"], "rq": out["rq_loss"]}
        if self.lam > 0 and len(self.index):
            con = self.contrastive(out["z"], batch["idx"])
            total = total + self.lam * con
            parts["contrastive"] = con
        return {"loss": total, **parts}


def plum_sids(x: np.ndarray, pairs: pd.DataFrame, rq_cfg, plum_cfg, lam: float, codebook_size: int, seed: int,
              live=None):
    """Train the PLUM RQ-VAE on content embeddings `x` (N, D) with the `train` rows of `pairs`.

    Args:
        pairs: frame from `sidrec.data.cooccur.mine_pairs` (a, b, count, split); only `split == "train"` is used.
        rq_cfg: `RQVAEConfig`; plum_cfg: `PlumConfig`; lam: top-level `lambda`.
    Returns:
        rqvae_sids' outputs: (SidTable, trained RQVAE, ID-quality metrics).
    """
    train = pairs[pairs["split"] == "train"]

    def wrap(model: RQVAE) -> PlumObjective:
        return PlumObjective(model, train[["a", "b"]].to_numpy(), len(x), lam, plum_cfg.temperature,
                             plum_cfg.mask_prob, seed)

    return rqvae_sids(x, rq_cfg, codebook_size, seed, live=live, wrap=wrap)
