"""System names -> recommenders (DESIGN.md: baseline = rqvae + gpt, sasrec = atomic + gpt, popularity, ...).

A system is a (tokenizer, recommender kind) pair; each kind has one loader, chosen by name.
"""
from __future__ import annotations

import torch

from sidrec.models.gpt import GPTRecommender
from sidrec.models.llm import LLMRecommender
from sidrec.models.popularity import PopularityRecommender
from sidrec.recommend import DecodeSettings, Recommender
from sidrec.tokenizers.sids import SidTable

SYSTEMS = {  # name: (tokenizer, recommender kind)
    "baseline": ("rqvae", "gpt"),
    "sasrec": ("atomic", "gpt"),
    "popularity": (None, "popularity"),
    "plum-gpt": ("plum", "gpt"),
    "lamia-gpt": ("lamia", "gpt"),
    "plum": ("plum", "llm"),
    "rqvae-llm": ("rqvae", "llm"),
    "lamia": ("lamia", "llm"),
}


def _gpt(model_dir: str, sids_path: str, decode: DecodeSettings) -> Recommender:
    return GPTRecommender.load(model_dir, SidTable.load(sids_path), decode)


def _popularity(model_dir: str, sids_path: str, decode: DecodeSettings) -> Recommender:
    return PopularityRecommender.load(model_dir, decode.exclude_seen)


def _llm(model_dir: str, sids_path: str, decode: DecodeSettings) -> Recommender:
    rec = LLMRecommender.load(model_dir, SidTable.load(sids_path), decode)
    if decode.llm_dtype == "bfloat16":  # one cast at load; autocast then has nothing left to cast per op
        rec.model.to(torch.bfloat16)
    elif decode.llm_dtype != "float32":
        raise ValueError(f"eval.llm_dtype: unknown {decode.llm_dtype!r}; use bfloat16 or float32")
    return rec


LOADERS = {"gpt": _gpt, "popularity": _popularity, "llm": _llm}


def load_recommender(system: str, model_dir: str, sids_path: str, decode: DecodeSettings = DecodeSettings()) -> Recommender:
    """Load a trained system by name."""
    if system not in SYSTEMS:
        raise ValueError(f"system: unknown {system!r}; use one of {', '.join(SYSTEMS)}")
    return LOADERS[SYSTEMS[system][1]](model_dir, sids_path, decode)
