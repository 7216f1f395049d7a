"""Switch the ablation systems on or off in params.yaml (the `ablations` section, which dvc.yaml's *_ablation
foreach groups and the report read): `make repro ABLATIONS=1` runs `python pipelines/ablations.py on` first.

    python pipelines/ablations.py on     # ablations: {gpt: {plum-gpt: plum, lamia-gpt: lamia}, llm: {rqvae-llm: rqvae}}
    python pipelines/ablations.py off    # both {} again (the default)

Only the lines of `ablations.gpt` and `ablations.llm` change, comments kept (`dvc exp run -S` rewrites the whole
file in block style); the result is read back and checked. Outputs of an ablation stay in the workspace when it is
switched off (DVC deletes no output of a stage that left dvc.yaml); the report no longer lists it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from sidrec.config import AblationsConfig, load_params, read_yaml  # noqa: E402

COMMENT_COLUMN = 24
KEY_RE = re.compile(r"^(?P<indent> +)(?P<key>[\w-]+):(?P<value>[^#]*?)(?P<comment>\s*#.*)?$")


def flow(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


def switch(text: str, wanted: dict[str, dict]) -> str:
    """params.yaml `text` with `ablations.<kind>` set to `wanted[kind]` (flow style, each on its key's line).

    Raises:
        ValueError when params.yaml has no top-level `ablations:` section with those keys.
    """
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, ln in enumerate(lines) if re.match(r"^ablations:\s*(#.*)?$", ln))
    except StopIteration:
        raise ValueError("params.yaml has no top-level `ablations:` section; add it (see README)") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()
                and not lines[i].startswith("#")), len(lines))
    out, done, i = lines[:start + 1], set(), start + 1
    while i < end:
        line = lines[i].rstrip("\n")
        m = KEY_RE.match(line)
        i += 1
        if not (m and m["key"] in wanted):
            out.append(lines[i - 1])
            continue
        head = f"{m['indent']}{m['key']}: {flow(wanted[m['key']])}"
        comment = (m["comment"] or "").strip()
        if comment:  # at params.yaml's comment column when the value leaves room
            head += " " * max(1, COMMENT_COLUMN - len(head)) + comment
        out.append(head + "\n")
        done.add(m["key"])
        while i < end and lines[i].strip() and not lines[i].lstrip().startswith("#") \
                and len(lines[i]) - len(lines[i].lstrip(" ")) > len(m["indent"]):
            i += 1  # the entries of a block-style old value
    missing = set(wanted) - done
    if missing:
        raise ValueError(f"params.yaml `ablations` has no {', '.join(sorted(missing))} key")
    return "".join(out + lines[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", choices=["on", "off", "1", "0"], help="on (1): every ablation; off (0): none")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = ap.parse_args()
    on = args.state in ("on", "1")
    wanted = {kind: dict(systems) if on else {} for kind, systems in AblationsConfig.ALLOWED.items()}
    path = Path(args.params)
    text = switch(path.read_text(encoding="utf-8"), wanted)
    path.write_text(text, encoding="utf-8")
    got = (read_yaml(path) or {}).get("ablations")
    if got != wanted:
        raise SystemExit(f"error: {path}: ablations is {got!r} after the edit, expected {wanted!r}; fix params.yaml")
    load_params(path)  # the whole file still validates
    print(f"{path}: ablations {'on' if on else 'off'}: {', '.join(load_params(path).ablations.systems) or 'none'}")


if __name__ == "__main__":
    main()
