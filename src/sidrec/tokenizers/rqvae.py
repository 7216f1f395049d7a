"""RQ-VAE semantic IDs (TIGER, Rajput et al. 2023, section 3.1; Lee et al. 2022 for residual quantization).

z = E(x); r_0 = z; at level d: c_d = argmin_k ||r_d - e^d_k||, r_{d+1} = r_d - e^d_{c_d}; z_q = sum_d e^d_{c_d};
x_hat = D(z_q) with straight-through gradients from z_q to z.
Loss = ||x - x_hat||^2 + sum_d (||sg[r_d] - e_{c_d}||^2 + beta ||r_d - sg[e_{c_d}]||^2).
Codebook-collapse defences: k-means initialization of each level from real residuals, and dead-code reset
(codes no item uses are re-seeded from current residuals). `quantize(..., levels=n)` uses only the first n
levels, which PLUM's progressive masking builds on (tokenizers/plum.py).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.cluster import KMeans
from torch import nn

from sidrec.io import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RQVAEArch:
    input_dim: int
    hidden_dims: tuple[int, ...]
    latent_dim: int
    num_levels: int
    codebook_size: int
    beta: float = 0.25


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """MLP encoder -> `num_levels` residual codebooks of `codebook_size` -> MLP decoder."""

    def __init__(self, arch: RQVAEArch) -> None:
        super().__init__()
        self.arch = arch
        dims = [arch.input_dim, *arch.hidden_dims, arch.latent_dim]
        self.encoder = _mlp(dims)
        self.decoder = _mlp(dims[::-1])
        self.codebooks = nn.Parameter(torch.randn(arch.num_levels, arch.codebook_size, arch.latent_dim) * 0.01)

    def quantize(self, z: torch.Tensor, levels: int | None = None, keep: torch.Tensor | None = None) -> dict:
        """Residual quantization of z (B, d) with the first `levels` codebooks.

        Args:
            keep: optional (B,) number of levels each sample keeps (PLUM's progressive masking): deeper levels
                add nothing to z_q and nothing to the RQ loss of that sample. None keeps every level.
        Returns:
            dict with codes (B, levels), z_q (B, d) summed (kept) codewords, residuals (levels, B, d) before each
            level, and rq_loss (scalar).
        """
        levels = self.arch.num_levels if levels is None else levels
        r = z
        z_q = torch.zeros_like(z)
        codes, residuals = [], []
        rq_loss = z.new_zeros(())
        for lv in range(levels):
            book = self.codebooks[lv]  # (K, d)
            residuals.append(r)
            c = torch.cdist(r.detach(), book.detach()).argmin(dim=1)  # (B,)
            e = book[c]  # (B, d)
            per = ((r.detach() - e) ** 2).sum(-1) + self.arch.beta * ((r - e.detach()) ** 2).sum(-1)  # (B,)
            if keep is None:
                rq_loss = rq_loss + per.mean()
                z_q = z_q + e
            else:
                w = (keep > lv).to(z.dtype)  # (B,) 1 where this level is kept
                rq_loss = rq_loss + (per * w).mean()
                z_q = z_q + e * w[:, None]
            r = r - e.detach()
            codes.append(c)
        return {"codes": torch.stack(codes, 1), "z_q": z_q, "residuals": torch.stack(residuals), "rq_loss": rq_loss}

    def forward(self, x: torch.Tensor, levels: int | None = None, keep: torch.Tensor | None = None) -> dict:
        z = self.encoder(x)  # (B, d)
        q = self.quantize(z, levels, keep)
        z_st = z + (q["z_q"] - z).detach()  # straight-through: decoder gradient reaches the encoder
        x_hat = self.decoder(z_st)
        recon = ((x - x_hat) ** 2).sum(-1).mean()
        return {**q, "z": z, "z_st": z_st, "x_hat": x_hat, "recon_loss": recon}

    def loss(self, batch: dict) -> dict:
        out = self(batch["x"])
        return {"loss": out["recon_loss"] + out["rq_loss"], "recon": out["recon_loss"], "rq": out["rq_loss"]}

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """(N, input_dim) -> (N, num_levels) int64 codes."""
        self.eval()
        return torch.cat([self.quantize(self.encoder(x[i:i + batch_size]))["codes"]
                          for i in range(0, len(x), batch_size)]).numpy().astype(np.int64)

    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor, seed: int) -> None:
        """Initialize each level's codebook with k-means centroids of that level's residuals."""
        r = self.encoder(x)
        for lv in range(self.arch.num_levels):
            k = min(self.arch.codebook_size, len(r))
            km = KMeans(n_clusters=k, n_init=1, random_state=seed + lv).fit(r.numpy())
            cent = torch.from_numpy(km.cluster_centers_).float()
            if k < self.arch.codebook_size:  # fewer points than codes: fill the rest with jittered points
                extra = r[torch.randint(len(r), (self.arch.codebook_size - k,))]
                cent = torch.cat([cent, extra + 1e-3 * torch.randn_like(extra)])
            self.codebooks.data[lv] = cent
            r = r - cent[torch.cdist(r, cent).argmin(1)]

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor, generator: torch.Generator) -> list[int]:
        """Re-seed codes that no item uses with randomly chosen current residuals of that level.

        Returns:
            number of codes reset per level.
        """
        self.eval()
        q = self.quantize(self.encoder(x))
        counts = []
        for lv in range(self.arch.num_levels):
            used = torch.bincount(q["codes"][:, lv], minlength=self.arch.codebook_size) > 0
            dead = (~used).nonzero().flatten()
            if len(dead):
                pick = torch.randint(len(x), (len(dead),), generator=generator)
                self.codebooks.data[lv, dead] = q["residuals"][lv, pick]
            counts.append(int(len(dead)))
        return counts

    def save(self, path: str | Path) -> None:
        """Model directory: model.safetensors + config.json (the checkpoint carries its own architecture)."""
        with atomic_path(path, is_dir=True) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(asdict(self.arch), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "RQVAE":
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        cfg["hidden_dims"] = tuple(cfg["hidden_dims"])
        model = cls(RQVAEArch(**cfg))
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model


@dataclass(frozen=True)
class RQVAETrainResult:
    model: RQVAE
    codes: np.ndarray  # (N, num_levels) before the suffix
    recon_mse: float
    history: list[dict]


def train_rqvae(x: np.ndarray, cfg, codebook_size: int, seed: int, live=None, wrap=None) -> RQVAETrainResult:
    """Train an RQ-VAE on item vectors `x` (N, D) with the shared loop; k-means init and dead-code reset.

    Args:
        x: content embeddings, one row per catalogue item.
        cfg: `RQVAEConfig` (params.yaml `rqvae`).
        codebook_size: codes per level (top-level `codebook_size`).
        seed: global seed.
        live: optional dvclive.Live for the loss curve.
        wrap: optional factory RQVAE -> module with a different `loss(batch)` over the same item batches (PLUM);
            the module holds the RQ-VAE as `.rqvae`. Called after the k-means initialization.
    """
    from sidrec.train import LoopConfig, fit

    torch.manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    arch = RQVAEArch(input_dim=xt.shape[1], hidden_dims=tuple(cfg.hidden_dims), latent_dim=cfg.latent_dim,
                     num_levels=cfg.num_levels, codebook_size=codebook_size, beta=cfg.beta)
    model = RQVAE(arch)
    if cfg.kmeans_init:
        model.kmeans_init(xt, seed)
    gen = torch.Generator().manual_seed(seed)
    reset_until = int(cfg.epochs * cfg.reset_until)

    def on_epoch_end(m, epoch: int) -> dict:
        rq = getattr(m, "rqvae", m)
        if cfg.dead_code_every and (epoch + 1) % cfg.dead_code_every == 0 and epoch + 1 <= reset_until:
            return {f"dead_codes_l{i}": c for i, c in enumerate(rq.reset_dead_codes(xt, gen))}
        return {}

    trainee = wrap(model) if wrap is not None else model
    loop = LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      warmup_ratio=0.0, grad_clip=0.0, seed=seed)
    res = fit(trainee, list(range(len(xt))), loop, collate_fn=lambda idx: {"x": xt[idx], "idx": torch.tensor(idx)},
              on_epoch_end=on_epoch_end, live=live)
    model.eval()
    with torch.no_grad():
        out = model(xt)
    codes = out["codes"].numpy().astype(np.int64)
    recon_mse = float(((xt - out["x_hat"]) ** 2).mean())
    log.info("rqvae trained: recon mse %.3g, %d unique codes / %d items", recon_mse,
             len(np.unique(codes, axis=0)), len(codes))
    return RQVAETrainResult(model, codes, recon_mse, res.history)


def rqvae_sids(x: np.ndarray, cfg, codebook_size: int, seed: int, live=None,
               wrap=None) -> tuple["SidTable", RQVAE, dict]:
    """Train the RQ-VAE and turn its codes into a 1-to-1 SidTable with the collision suffix.

    Returns:
        (SidTable with levels + suffix positions, the trained RQVAE, ID-quality metrics).
    """
    from sidrec.tokenizers.sids import SidTable, add_collision_suffix, code_stats

    res = train_rqvae(x, cfg, codebook_size, seed, live=live, wrap=wrap)
    full = add_collision_suffix(res.codes)
    suffix_size = int(full[:, -1].max()) + 1
    stats = code_stats(res.codes, codebook_size)
    table = SidTable(full, [codebook_size] * cfg.num_levels + [suffix_size],
                     {"levels": cfg.num_levels, "codebook_size": codebook_size, "suffix_size": suffix_size,
                      "collision_rate": stats["collision_rate"]})
    metrics = {"items": len(full), "levels": cfg.num_levels, "codebook_size": codebook_size,
               "recon_mse": res.recon_mse, **stats, "suffix_size": suffix_size,
               "final_loss": res.history[-1]["train_loss"]}
    return table, res.model, metrics
