"""Stage palette: LAMIA item palettes (LAMIA, Liu et al. 2024, sec. 4.2.1-4.2.2). Palette tokens are added to models/llm_base, LoRA
(rank `lora_rank`) + the LaP rows are trained on L_gen + gamma (L_intra + L_inter) with the hierarchical block mask
and the dual forward pass, the adapters are merged, and every item's palette is encoded.

Outputs: <out>/vectors.npy (float32, (items, L, D), item_id order) + <out>/vectors.json; the merged LLM in
<model-dir> (save_pretrained + sidrec.json with the LaP/LdP token ids); metrics JSON; per-step curves (dvclive)."""
import logging

import numpy as np
import pandas as pd
from dvclive import Live

from sidrec.config import to_dict
from sidrec.io import atomic_path, start_stage, write_json
from sidrec.models.llm import load_llm, save_llm
from sidrec.models.palette import learn_palette

log = logging.getLogger("stages.palette")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--base": "models/llm_base", "--items": "data/prepared/items.parquet",
                                           "--out": "data/palette (vectors.npy + vectors.json)",
                                           "--model-dir": "models/palette", "--metrics": None,
                                           "--plots": "dvclive directory for curves"})
    model, tok, base_meta = load_llm(args.base)
    items = pd.read_parquet(args.items)
    with Live(dir=args.plots, dvcyaml=None, save_dvc_exp=False) as live:
        res = learn_palette(model, tok, items, p.palette, p.palette_length, p.lora_rank, p.seed, live=live)
    n, length, dim = res.vectors.shape
    info = {"model": args.model_dir, "base": base_meta.get("base", args.base), "L": length, "D": dim, "items": n,
            "tasks": list(p.palette.tasks), "lap_token_ids": res.lap_ids.tolist(),
            "ldp_token_ids": res.ldp_ids.tolist()}
    with atomic_path(args.out, is_dir=True) as tmp:
        np.save(tmp / "vectors.npy", res.vectors.astype(np.float32))
        write_json(tmp / "vectors.json", info)
    save_llm(args.model_dir, res.model, tok, {**info, "palette": to_dict(p.palette), "lora_rank": p.lora_rank,
                                              "seed": p.seed})
    write_json(args.metrics, clock.stamp({"palette_length": length, "hidden_size": dim, **res.metrics}))
    log.info("palette: %d items x %d x %d -> %s/vectors.npy; merged LLM -> %s; metrics -> %s", n, length, dim,
             args.out, args.model_dir, args.metrics)


if __name__ == "__main__":
    main()
