"""The pretrained-LLM recommender (PLUM, LAMIA, rqvae-llm): a merged LLM after surgery + CPT + SFT, decoded by
the shared trie-constrained beam search over the items' SID-token paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.corpus.prompts import PromptCodec
from sidrec.generate import ItemTrie, TrieRecommender
from sidrec.models.llm.load import load_llm
from sidrec.tokenizers.sids import SidTable


class LLMRecommender(TrieRecommender):
    """An LLM after surgery (+ CPT + SFT) as a `Recommender`: the recommendation prompt of each case, decoded by
    the shared trie-constrained beam search over the items' SID-token paths.

    Cases may carry a `constraint` column (str or None): the steerability lens asks for e.g. a Horror movie.
    """

    reads_constraints = True
    progress = True

    def __init__(self, model, codec: PromptCodec, max_history: int, decode, mixed_precision: str = "no") -> None:
        self.model = model.eval()
        self.codec = codec
        self.max_history = max_history
        self.decode = decode
        self.mixed_precision = mixed_precision
        self.trie = ItemTrie(codec.item_tokens)
        self.pad_id = codec.tok.pad_token_id if codec.tok.pad_token_id is not None else codec.tok.eos_token_id

    def _prompts(self, cases) -> list[list[int]]:
        constraints = cases["constraint"] if "constraint" in cases else [None] * len(cases)
        # a str column with missing values holds NaN (pandas 3), which is truthy: only a str is a constraint
        return [self.codec.prompt(list(h)[-self.max_history:], c if isinstance(c, str) and c else None)
                for h, c in zip(cases["history"], constraints)]

    def _decoding(self):
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.mixed_precision == "bf16")

    @classmethod
    def load(cls, path: str | Path, sids: SidTable, decode) -> "LLMRecommender":
        model, tok, meta = load_llm(path)
        if list(meta.get("vocab_sizes", [])) != list(sids.vocab_sizes):
            raise ValueError(f"{path}: trained on SID vocab sizes {meta.get('vocab_sizes')}, the sids have "
                             f"{sids.vocab_sizes}; pass the SID table the LLM was trained with")
        codec = PromptCodec(tok, np.asarray(meta["sid_token_ids"]), sids, [""] * sids.num_items, meta["noun"],
                            meta.get("objective", "last"))
        if decode.llm_dtype == "bfloat16":  # one cast at load; autocast then has nothing left to cast per op
            model.to(torch.bfloat16)
        elif decode.llm_dtype != "float32":
            raise ValueError(f"eval.llm_dtype: unknown {decode.llm_dtype!r}; use bfloat16 or float32")
        return cls(model, codec, meta["max_history"], decode, meta.get("mixed_precision", "no"))
