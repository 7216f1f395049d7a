"""A tiny random Llama and a word-level tokenizer, built in the test (no downloads), for the LLM-path tests."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PROMPT_WORDS = "The item is represented by ID User history Constraint Suggest a movie product Recommendation".split()
PUNCT = [".", ":", ",", "'", "(", ")"]


def tiny_tokenizer(extra_words: list[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the prompt words, punctuation and `extra_words` (e.g. title words)."""
    words = sorted(set(PROMPT_WORDS) | set(PUNCT) | {w for t in extra_words for w in t.split()})
    vocab = {"[UNK]": 0, "[PAD]": 1, "</s>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0, tied: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab_size, tie_word_embeddings=tied,
                      max_position_embeddings=512, bos_token_id=None, eos_token_id=2, pad_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def write_tiny_llm(path: Path, titles: list[str] = (), seed: int = 0) -> Path:
    """A `save_pretrained` directory (tiny random Llama + tokenizer) usable as `llm.base`."""
    tok = tiny_tokenizer([t.replace(".", " . ") for t in titles])
    model = tiny_llama(len(tok), seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
