"""Loading and saving the LLMs of the pipeline: the base model (embedded SmolLM2 GGUF, a local directory or a hub
name already cached) and every later stage's output, a `save_pretrained` directory (safetensors) with a
`sidrec.json` sidecar (SID token ids, vocabulary sizes, prompt noun, SFT objective, ...)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase

from sidrec.assets import embedded_llm_gguf
from sidrec.io import atomic_path

META = "sidrec.json"


def load_base(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`llm.base` -> (float32 causal LM, tokenizer): the embedded SmolLM2 GGUF (dequantized), a local directory,
    or a hub name (read from the local HF cache when offline). Never runs remote code.
    """
    gguf = embedded_llm_gguf(name)
    if gguf is not None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, trust_remote_code=False)
        except OSError as e:
            raise FileNotFoundError(f"llm.base: cannot load {name!r} ({e.__class__.__name__}); use "
                                    "SmolLM2-135M-Instruct (embedded), a local model directory, or a hub name "
                                    "already in the local HF cache") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_llm(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """A directory written by `save_llm` -> (model in eval mode, tokenizer, sidrec metadata)."""
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # safetensors
    return model.eval(), AutoTokenizer.from_pretrained(path), meta


def save_llm(path: str | Path, model: PreTrainedModel, tok: PreTrainedTokenizerBase, meta: dict) -> None:
    """Atomically write model (safetensors), tokenizer and sidrec metadata to `path`."""
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2))
