"""Stage tokenize@<method>: item vectors -> semantic IDs (data/sids/<method>.parquet + sidecar), the tokenizer
model directory, metrics/sid_<method>.json and a dvclive curve directory.
(Named tokenize_items.py because a script called tokenize.py would shadow the standard library module.)"""
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live

from sidrec.io import atomic_path, start_stage, write_json
from sidrec.data.cooccur import pair_quality
from sidrec.tokenizers.atomic import atomic_table
from sidrec.tokenizers.lamia import lamia_sids
from sidrec.tokenizers.plum import plum_sids
from sidrec.tokenizers.rqvae import rqvae_sids
from sidrec.tokenizers.sids import code_stats

log = logging.getLogger("stages.tokenize")


def rqvae(args, p, live, pairs):
    x = np.load(args.input)
    table, model, metrics = rqvae_sids(x, p.rqvae, p.codebook_size, p.seed, live=live)
    return table, lambda d: model.save(d), metrics


def plum(args, p, live, pairs):
    x = np.load(args.input)
    table, model, metrics = plum_sids(x, pairs, p.rqvae, p.plum, p.lambda_, p.codebook_size, p.seed, live=live)
    return table, lambda d: model.save(d), {**metrics, "lambda": p.lambda_, "mask_prob": p.plum.mask_prob}


def atomic(args, p, live, pairs):
    n = len(pd.read_parquet(args.input, columns=["item_id"]))
    table = atomic_table(n)
    metrics = {"items": n, "levels": 1, "codebook_size": n, **code_stats(table.codes, n), "suffix_size": 0}

    def save(d):
        with atomic_path(d, is_dir=True) as tmp:
            (tmp / "config.json").write_text(json.dumps({"tokenizer": "atomic", "items": n}))
    return table, save, metrics


def lamia(args, p, live, pairs):
    x = np.load(args.input)  # data/palette/vectors.npy, (N, L, D)
    c = p.lamia
    table, quant, metrics = lamia_sids(x, p.codebook_size, c.pca_dim, c.n_init, p.seed, c.pca_per_position)
    config = {"tokenizer": "lamia", "codebook_size": p.codebook_size, "pca_dim": c.pca_dim, "n_init": c.n_init,
              "pca_per_position": c.pca_per_position, "seed": p.seed, "palette_length": int(x.shape[1])}
    return table, lambda d: quant.save(d, config), metrics


METHODS = {"rqvae": rqvae, "plum": plum, "atomic": atomic, "lamia": lamia}


def main() -> None:
    args, p, clock = start_stage(__doc__, {
        "--method": {"choices": sorted(METHODS)},
        "--input": "content embeddings (.npy), palette vectors (.npy) or items.parquet",
        "--pairs": "data/pairs.parquet (PLUM's training pairs; held-out pairs for ID quality)",
        "--out": "data/sids/<method>.parquet", "--model-dir": None, "--metrics": None,
        "--plots": "dvclive directory for curves"})
    pairs = pd.read_parquet(args.pairs)
    with Live(dir=args.plots, dvcyaml=None, save_dvc_exp=False) as live:
        table, save_model, metrics = METHODS[args.method](args, p, live, pairs)
    levels = table.info.get("levels", 1)
    metrics.update(pair_quality(table.codes[:, :levels], pairs, p.seed))
    table.info["tokenizer"] = args.method
    table.save(args.out)
    save_model(Path(args.model_dir))
    write_json(args.metrics, clock.stamp({"tokenizer": args.method, **metrics}))
    log.info("%s: %d items -> %s (collision rate %.4f)", args.method, table.num_items, args.out,
             metrics["collision_rate"])


if __name__ == "__main__":
    main()
