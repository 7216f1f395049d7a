"""LAMIA semantic IDs from item palettes (LAMIA, Liu et al. 2024, sec. 4.2.3): PCA + K-Means, independently per palette position.

The palette stage (models/palette.py) writes E (N, L, D): L parallel aspect embeddings per item. For each position
j, PCA reduces E[:, j] from D to `pca_dim` dimensions and K-Means clusters the reduced vectors into
`codebook_size` clusters: c_{j,i} = argmin_k ||PCA_j(E_{i,j}) - mu_{j,k}||. Item i's code is (c_{1,i}, ..., c_{L,i})
plus the collision suffix (TIGER; LAMIA sec. 5.4), so the mapping is 1-to-1. There is no hierarchy: every
position has the same role, and the trie decoder (generate.ItemTrie) handles parallel codes unchanged.

Choices where the paper leaves room: PCA is fitted per position by default (each aspect keeps its own principal
directions and positions share nothing; `pca_per_position: false` fits one PCA on all N x L vectors); `pca_dim` is
capped at min(N, D); when a position has fewer distinct vectors than `codebook_size`, K-Means runs with that many
clusters (a warning is logged) and the vocabulary keeps `codebook_size` codes per position, some unused.

Independence diagnostics: the mean cosine between an item's palette positions (what L_intra pushes down) and the
normalized mutual information between the positions' codes (0 = independent partitions, 1 = the same one).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score

from sidrec.io import atomic_path
from sidrec.tokenizers.sids import SidTable, add_collision_suffix, code_stats

log = logging.getLogger(__name__)


@dataclass
class PaletteQuantizer:
    """Fitted per-position projections and centroids; `codes(E)` assigns codes to new palettes (cold items).

    means: (L, D) PCA centers; components: (L, d, D) PCA bases (identical rows when shared); centroids: (L, K, d),
    unused clusters (K-Means with fewer clusters than `codebook_size`) are NaN and never assigned.
    """

    means: np.ndarray
    components: np.ndarray
    centroids: np.ndarray
    explained_variance: list[float]

    def reduce(self, palette: np.ndarray) -> np.ndarray:
        """(N, L, D) -> (N, L, d) PCA coordinates per position."""
        return np.einsum("nld,lkd->nlk", palette - self.means[None], self.components)

    def codes(self, palette: np.ndarray) -> np.ndarray:
        """(N, L, D) palettes -> (N, L) int64 nearest-centroid codes per position (before the suffix)."""
        z = self.reduce(np.asarray(palette, dtype=np.float64))
        out = np.empty(z.shape[:2], dtype=np.int64)
        for j in range(z.shape[1]):
            d2 = ((z[:, j, None, :] - self.centroids[j][None]) ** 2).sum(-1)  # (N, K)
            out[:, j] = np.nan_to_num(d2, nan=np.inf).argmin(1)
        return out

    def save(self, path: str | Path, config: dict) -> None:
        """Model directory: quantizer.safetensors + config.json (no pickles)."""
        with atomic_path(path, is_dir=True) as tmp:
            tensors = {"means": self.means, "components": self.components, "centroids": self.centroids}
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()},
                      str(tmp / "quantizer.safetensors"))  # safetensors writes the raw buffer: C order
            (tmp / "config.json").write_text(json.dumps(
                {**config, "explained_variance": self.explained_variance}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "PaletteQuantizer":
        path = Path(path)
        t = load_file(str(path / "quantizer.safetensors"))
        cfg = json.loads((path / "config.json").read_text())
        return cls(t["means"], t["components"], t["centroids"], list(cfg["explained_variance"]))


def _pca(x: np.ndarray, dim: int, seed: int) -> PCA:
    return PCA(n_components=dim, svd_solver="full", random_state=seed).fit(x)


def fit_quantizer(palette: np.ndarray, codebook_size: int, pca_dim: int, n_init: int, seed: int,
                  per_position: bool = True) -> tuple[PaletteQuantizer, np.ndarray]:
    """PCA + K-Means per palette position.

    Args:
        palette: (N, L, D) item palettes, item_id order.
        codebook_size: clusters per position.
        pca_dim: PCA components (capped at min(N, D)).
        n_init: K-Means restarts (the best inertia wins).
        seed: K-Means / PCA seed (position j uses seed + j).
        per_position: one PCA per position (default) or one shared PCA over all N x L vectors.
    Returns:
        (quantizer, (N, L) int64 codes before the suffix).
    """
    x = np.asarray(palette, dtype=np.float64)
    if x.ndim != 3 or len(x) < 2:
        raise ValueError(f"lamia: palette vectors must be (N >= 2, L, D), got shape {x.shape}")
    n, length, dim = x.shape
    d = min(pca_dim, n, dim)
    if d < pca_dim:
        log.warning("lamia: pca_dim %d capped at %d (N=%d items, D=%d)", pca_dim, d, n, dim)
    shared = None if per_position else _pca(x.reshape(n * length, dim), d, seed)
    means, comps, cents, var = [], [], [], []
    codes = np.empty((n, length), dtype=np.int64)
    for j in range(length):
        pca = shared if shared is not None else _pca(x[:, j], d, seed + j)
        z = pca.transform(x[:, j])  # (N, d)
        distinct = len(np.unique(z.round(8), axis=0))
        k = min(codebook_size, distinct)
        if k < codebook_size:
            log.warning("lamia: position %d has %d distinct vectors < codebook_size %d; K-Means with %d clusters",
                        j, distinct, codebook_size, k)
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed + j).fit(z)
        centroids = np.full((codebook_size, d), np.nan)
        centroids[:k] = km.cluster_centers_
        codes[:, j] = km.labels_
        means.append(pca.mean_)
        comps.append(pca.components_)
        cents.append(centroids)
        var.append(float(pca.explained_variance_ratio_.sum()))
    return PaletteQuantizer(np.stack(means), np.stack(comps), np.stack(cents), var), codes


def independence(palette: np.ndarray, codes: np.ndarray) -> dict:
    """Mean cosine between positions (per pair and averaged), NMI between the positions' codes, and the mean cosine
    between different items at the same position.

    Args:
        palette: (N, L, D); codes: (N, L) before the suffix.
    """
    z = np.asarray(palette, dtype=np.float64)
    z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    n, length, _ = z.shape
    out: dict = {}
    cos, nmi = [], []
    for j, k in combinations(range(length), 2):
        c = float((z[:, j] * z[:, k]).sum(-1).mean())
        m = float(normalized_mutual_info_score(codes[:, j], codes[:, k]))
        out[f"cosine_p{j}_p{k}"], out[f"nmi_p{j}_p{k}"] = c, m
        cos.append(c)
        nmi.append(m)
    between_items = []
    for j in range(length):
        s = z[:, j].sum(0)
        between_items.append(float((s @ s - n) / max(n * (n - 1), 1)))  # mean off-diagonal cosine, O(N D)
    head = {"mean_cosine_between_positions": float(np.mean(cos)) if cos else 0.0,
            "nmi_between_positions": float(np.mean(nmi)) if nmi else 0.0,
            "mean_cosine_between_items": float(np.mean(between_items))}
    return {**head, **out}


def lamia_sids(palette: np.ndarray, codebook_size: int, pca_dim: int, n_init: int, seed: int,
               per_position: bool = True) -> tuple[SidTable, PaletteQuantizer, dict]:
    """Palette vectors -> 1-to-1 SidTable (L parallel codes + collision suffix), the quantizer, ID metrics.

    Returns:
        (SidTable with vocab_sizes [codebook_size] * L + [suffix_size], quantizer, metrics in the sid_rqvae.json
        schema plus the independence diagnostics).
    """
    quant, codes = fit_quantizer(palette, codebook_size, pca_dim, n_init, seed, per_position)
    n, length = codes.shape
    full = add_collision_suffix(codes)
    suffix_size = int(full[:, -1].max()) + 1
    stats = code_stats(codes, codebook_size)
    table = SidTable(full, [codebook_size] * length + [suffix_size],
                     {"levels": length, "codebook_size": codebook_size, "suffix_size": suffix_size,
                      "collision_rate": stats["collision_rate"], "parallel": True})
    metrics = {"items": n, "levels": length, "codebook_size": codebook_size, **stats, "suffix_size": suffix_size,
               "pca_dim": int(quant.components.shape[1]),
               "pca_explained_variance": float(np.mean(quant.explained_variance)),
               **independence(palette, codes)}
    log.info("lamia: %d items x %d positions -> %d unique codes, collision rate %.4f, NMI between positions %.3f",
             n, length, stats["unique_codes"], stats["collision_rate"], metrics["nmi_between_positions"])
    return table, quant, metrics
