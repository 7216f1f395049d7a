"""Stage validate_params: the whole params.yaml through `load_params`, on every change to it.

Each other stage validates params.yaml when it runs, but a stage runs only when a key it declares changed: a
misspelt key in a section no rerunning stage reads (`plum.temprature`) would otherwise pass as "up to date". This
stage has params.yaml itself as a dep (a file, not `params:` keys), so DVC reruns it on any change to the file, and
it fails with the one-line `error: params: ...` naming the key and the fix. metrics/params_check.json records what
was checked.
"""
import logging

from sidrec.config import read_yaml
from sidrec.io import start_stage, write_json

log = logging.getLogger("stages.validate_params")


def count_keys(node) -> tuple[int, int]:
    """(leaf keys, mappings) of a parsed YAML tree; a list counts as one leaf value."""
    if not isinstance(node, dict):
        return 1, 0
    leaves, maps = 0, 1
    for value in node.values():
        l_, m = count_keys(value) if isinstance(value, dict) else (1, 0)
        leaves, maps = leaves + l_, maps + m
    return leaves, maps


def main() -> None:
    args, _, _ = start_stage(__doc__, {"--out": "metrics/params_check.json"})  # raises the one-line ParamsError
    raw = read_yaml(args.params)
    leaves, maps = count_keys(raw)
    metrics = {"valid": True, "top_level_keys": len(raw), "sections": maps - 1, "keys_checked": leaves}
    write_json(args.out, metrics)
    log.info("params.yaml valid: %d keys in %d sections", leaves, maps - 1)


if __name__ == "__main__":
    main()
