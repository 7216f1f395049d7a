"""Stage llm_base: load `llm.base` (the embedded SmolLM2 GGUF, dequantized; a local directory; or a hub name) once
and save it with `save_pretrained` (safetensors) to models/llm_base, so later stages load it in well under a second."""
import logging

from sidrec.io import start_stage, write_json
from sidrec.models.llm import load_base, save_llm

log = logging.getLogger("stages.llm_base")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--out": "models/llm_base", "--metrics": None}, params_help="reads llm.base")
    model, tok = load_base(p.llm.base)
    save_llm(args.out, model, tok, {"base": p.llm.base})
    n_params = sum(t.numel() for t in model.parameters())
    write_json(args.metrics, clock.stamp({"base": p.llm.base, "parameters": n_params, "vocab": len(tok),
                                          "hidden_size": model.config.hidden_size,
                                          "tied_embeddings": bool(model.config.tie_word_embeddings)}))
    log.info("saved %s (%s, %d parameters) -> %s", p.llm.base, model.config.model_type, n_params, args.out)


if __name__ == "__main__":
    main()
