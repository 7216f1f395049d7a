"""Stage embed: item texts -> frozen, normalized content embeddings (data/embeddings/content.npy + sidecar)."""
import logging
from pathlib import Path

import pandas as pd

from sidrec.io import start_stage, write_json, write_npy
from sidrec.text.encoder import encode_texts

log = logging.getLogger("stages.embed")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--items": "data/prepared/items.parquet",
                                           "--out": "data/embeddings/content.npy", "--metrics": "metrics/embed.json"})
    items = pd.read_parquet(args.items, columns=["item_id", "text"])
    emb, info = encode_texts(items["text"].tolist(), p.encoder, seed=p.seed)
    out = Path(args.out)
    write_npy(out, emb)
    write_json(out.with_suffix(".json"), {**info, "order": "item_id 0..N-1"})
    write_json(args.metrics, clock.stamp({"items": info["items"], "dim": info["dim"]}))
    log.info("embedded %d items (dim %d) -> %s", info["items"], info["dim"], out)


if __name__ == "__main__":
    main()
