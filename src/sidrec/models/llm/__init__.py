"""The pretrained-LLM side of PLUM, LAMIA and rqvae-llm (docs/systems.md), one module per job:

- `load`: the base model (embedded GGUF, local directory or cached hub name) and the save/load format of every
  LLM stage (safetensors + `sidrec.json`).
- `surgery`: new tokens in the vocabulary (SID tokens at their title-embedding centroids; the palette's tokens
  use the same `grow_vocabulary`) and the LoRA setup with trainable new-token rows.
- `train`: CPT and SFT collators, the HF `Trainer` wrapper, SFT checkpoint selection on validation, perplexity.
- `recommender`: `LLMRecommender`, the merged LLM decoded by the shared trie-constrained beam search.

The names below are the package's interface; import them from here.
"""
from sidrec.models.llm.load import META, load_base, load_llm, save_llm
from sidrec.models.llm.recommender import LLMRecommender
from sidrec.models.llm.surgery import (LoraSettings, add_sid_vocabulary, code_centroids, grow_vocabulary,
                                       sid_token_names, title_embeddings, with_lora)
from sidrec.models.llm.train import (IGNORE, TrainSettings, ValidationCheckpoints, checkpoint_steps, packed_batch,
                                     pad_left, pad_right, perplexity, sft_batch, sft_dense_batch, train_lm)

__all__ = ["IGNORE", "META", "LLMRecommender", "LoraSettings", "TrainSettings", "ValidationCheckpoints",
           "add_sid_vocabulary", "checkpoint_steps", "code_centroids", "grow_vocabulary", "load_base", "load_llm",
           "packed_batch", "pad_left", "pad_right", "perplexity", "save_llm", "sft_batch", "sft_dense_batch",
           "sid_token_names", "title_embeddings", "train_lm", "with_lora"]
