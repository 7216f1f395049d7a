"""System names -> recommenders (docs/systems.md: baseline = rqvae + gpt, sasrec = atomic + gpt, popularity, ...).

A system is a (tokenizer, recommender kind) pair; each kind has one loader, chosen by name.
"""
from __future__ import annotations

from sidrec.models.content import ContentKNNRecommender
from sidrec.models.gpt import GPTRecommender
from sidrec.models.llm import LLMRecommender
from sidrec.models.popularity import PopularityRecommender
from sidrec.recommend import DecodeSettings, Recommender
from sidrec.tokenizers.sids import SidTable

SYSTEMS = {  # name: (tokenizer, recommender kind)
    "baseline": ("rqvae", "gpt"),
    "sasrec": ("atomic", "gpt"),
    "popularity": (None, "popularity"),
    "content-knn": (None, "content"),
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


def _content(model_dir: str, sids_path: str, decode: DecodeSettings) -> Recommender:
    return ContentKNNRecommender.load(model_dir, decode.exclude_seen)


def _llm(model_dir: str, sids_path: str, decode: DecodeSettings) -> Recommender:
    return LLMRecommender.load(model_dir, SidTable.load(sids_path), decode)


LOADERS = {"gpt": _gpt, "popularity": _popularity, "content": _content, "llm": _llm}


def decodes_sids(system: str) -> bool:
    """Whether `system` decodes multi-token semantic IDs (the cold-start fill applies): a GPT or LLM reading a
    semantic-ID tokenizer; sasrec's atomic IDs (one token per item) have no shared prefixes."""
    tokenizer, kind = SYSTEMS[system]
    return kind in ("gpt", "llm") and tokenizer != "atomic"


def load_recommender(system: str, model_dir: str, sids_path: str, decode: DecodeSettings = DecodeSettings()) -> Recommender:
    """Load a trained system by name."""
    if system not in SYSTEMS:
        raise ValueError(f"system: unknown {system!r}; use one of {', '.join(SYSTEMS)}")
    return LOADERS[SYSTEMS[system][1]](model_dir, sids_path, decode)
