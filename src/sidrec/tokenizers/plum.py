"""PLUM's collaborative indexer (seeds/000 Step 2.1): RQ-VAE + co-occurrence contrastive loss + progressive masking.

L = L_recon + L_rq + lambda * L_contrastive, where L_contrastive is a symmetric InfoNCE between the quantized
(straight-through) representations of co-occurring items x and x+ against in-batch negatives, so that x's code
sits closer to x+ than to a random x-. Progressive masking: with probability `mask_prob` a sample keeps only its
first 1..L-1 levels (the deepest level(s) are dropped from z_q and from the RQ loss), so prefixes alone must carry
broad clusters. With lambda = 0 and mask_prob = 0 the objective is exactly the RQ-VAE's. Items without pairs
(cold-start items) still get IDs: they are encoded from content like every item.
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


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with similarity = -squared Euclidean distance (the metric the quantizer assigns codes
    by, so "closer" means "more likely to share a code"); row i of `a` matches row i of `b`. a, b: (M, d)."""
    logits = -torch.cdist(a, b).pow(2) / temperature  # (M, M)
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class PlumObjective(nn.Module):
    """The PLUM loss around an RQVAE, for the shared training loop (`loss(batch)` over item batches)."""

    def __init__(self, rqvae: RQVAE, x: torch.Tensor, pairs: np.ndarray, counts: np.ndarray, lam: float,
                 temperature: float, mask_prob: float, pair_batch: int, seed: int) -> None:
        super().__init__()
        self.rqvae = rqvae
        self.register_buffer("x", x, persistent=False)  # (N, D) every item's content embedding
        self.register_buffer("pairs", torch.tensor(np.asarray(pairs), dtype=torch.long).reshape(-1, 2), persistent=False)
        self.register_buffer("weights", torch.tensor(np.asarray(counts), dtype=torch.float), persistent=False)
        self.lam, self.temperature, self.mask_prob, self.pair_batch = lam, temperature, mask_prob, pair_batch
        self.gen = torch.Generator().manual_seed(seed)
        self.rep = "z_st"

    def contrastive(self) -> torch.Tensor:
        """InfoNCE on a batch of training pairs drawn in proportion to their counts; both sides share a mask."""
        idx = torch.multinomial(self.weights.cpu(), min(self.pair_batch, len(self.weights)), replacement=True,
                                generator=self.gen).to(self.pairs.device)
        a, b = self.pairs[idx, 0], self.pairs[idx, 1]
        keep = keep_levels(len(idx), self.rqvae.arch.num_levels, self.mask_prob, self.gen).to(self.x.device)
        za = self.rqvae(self.x[a], keep=keep)[self.rep]
        zb = self.rqvae(self.x[b], keep=keep)[self.rep]
        return info_nce(za, zb, self.temperature)

    def loss(self, batch: dict) -> dict:
        keep = None
        if self.mask_prob > 0:
            keep = keep_levels(len(batch["x"]), self.rqvae.arch.num_levels, self.mask_prob, self.gen)
            keep = keep.to(batch["x"].device)
        out = self.rqvae(batch["x"], keep=keep)
        total = out["recon_loss"] + out["rq_loss"]
        parts = {"recon": out["recon_loss"], "rq": out["rq_loss"]}
        if self.lam > 0 and len(self.pairs):
            con = self.contrastive()
            total = total + self.lam * con
            parts["contrastive"] = con
        return {"loss": total, **parts}


def plum_sids(x: np.ndarray, pairs: pd.DataFrame, rq_cfg, plum_cfg, lam: float, codebook_size: int, seed: int,
              live=None):
    """Train the PLUM RQ-VAE on content embeddings `x` with training pairs; returns rqvae_sids' outputs."""
    train = pairs[pairs["split"] == "train"]
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))

    def wrap(model: RQVAE) -> PlumObjective:
        return PlumObjective(model, xt, train[["a", "b"]].to_numpy(), train["count"].to_numpy(), lam,
                             plum_cfg.temperature, plum_cfg.mask_prob, plum_cfg.pair_batch, seed)

    return rqvae_sids(x, rq_cfg, codebook_size, seed, live=live, wrap=wrap)
