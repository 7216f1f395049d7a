"""Stage fetch: raw files of `dataset.name` into data/raw/<name>/."""

from sidrec.data.fetch import fetch
from sidrec.io import start_stage


def main() -> None:
    args, p, _ = start_stage(__doc__, {"--out": "data/raw/<name>"})
    fetch(p.dataset.name, args.out)


if __name__ == "__main__":
    main()
