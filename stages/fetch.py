"""Stage fetch: raw files of `dataset.name` into data/raw/<name>/."""
import argparse

from sidrec.config import load_params
from sidrec.data.fetch import fetch
from sidrec.io import setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="data/raw/<name>")
    args = ap.parse_args()
    setup_logging()
    p = load_params(args.params)
    fetch(p.dataset.name, args.out)


if __name__ == "__main__":
    main()
