"""Stage embed: item texts -> frozen, normalized content embeddings (data/embeddings/content.npy + sidecar)."""
import argparse
import logging
from pathlib import Path

import pandas as pd

from sidrec.config import load_params
from sidrec.io import StageClock, setup_logging, write_json, write_npy
from sidrec.text.encoder import encode_texts

log = logging.getLogger("stages.embed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--items", required=True, help="data/prepared/items.parquet")
    ap.add_argument("--out", required=True, help="data/embeddings/content.npy")
    ap.add_argument("--metrics", required=True, help="metrics/embed.json")
    args = ap.parse_args()
    setup_logging()
    clock = StageClock()
    p = load_params(args.params)
    items = pd.read_parquet(args.items, columns=["item_id", "text"])
    emb, info = encode_texts(items["text"].tolist(), p.encoder, seed=p.seed)
    out = Path(args.out)
    write_npy(out, emb)
    write_json(out.with_suffix(".json"), {**info, "order": "item_id 0..N-1"})
    write_json(args.metrics, clock.stamp({"items": info["items"], "dim": info["dim"]}))
    log.info("embedded %d items (dim %d) -> %s", info["items"], info["dim"], out)


if __name__ == "__main__":
    main()
