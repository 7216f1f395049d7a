"""Atomic outputs and stage bookkeeping.

Every output is written to a temporary sibling and renamed into place, so a crash never leaves a half-written
file or directory for DVC to cache. A temporary sibling left by a killed process (SIGKILL skips every cleanup) carries
the dead writer's pid in its name and is removed by the next write to the same path.

Stage scripts start with `start_stage` (their command line, `setup_logging`, a `StageClock` and the validated
params.yaml). `setup_logging` also reports the user's own mistakes (`ParamsError`, `DataError`: a bad params.yaml value
or raw file) as the one-line message that names the field and the fix, without a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sidrec.config import Params

log = logging.getLogger("sidrec")


def setup_logging() -> None:
    """Log format for stage scripts; user errors (bad params or raw data) exit with their one-line message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.excepthook = _user_error_hook


def start_stage(doc: str | None, flags: dict[str, str | dict | None], params_help: str | None = None,
                argv: list[str] | None = None) -> tuple[argparse.Namespace, Params, StageClock]:
    """The start of a stage script's `main()`: parse its command line, set up logging, start the clock, load params.

    The command line is `--params` (default params.yaml; `params_help` documents which keys the stage reads) and
    the required `flags`, in order: each maps to its help text (None for none) or to a dict of further
    `add_argument` keywords (e.g. `{"choices": [...], "help": "..."}`). `doc` (the script's `__doc__`) is the
    `--help` description. A missing flag exits 2 with argparse's usage error naming it; a bad params.yaml exits 1
    with the one-line `error: params: ...`. `argv`: the arguments to parse (default: the command line's).
    Returns (args, params, clock)."""
    from sidrec.config import load_params

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help=params_help)
    for flag, spec in flags.items():
        ap.add_argument(flag, required=True, **(spec if isinstance(spec, dict) else {"help": spec}))
    args = ap.parse_args(argv)
    setup_logging()
    clock = StageClock()
    return args, load_params(args.params), clock


def _user_error_hook(exc_type, exc, tb) -> None:
    """`sys.excepthook`: a ParamsError or DataError prints `error: <message>` (one line; the exit status stays 1),
    anything else keeps its full traceback."""
    from sidrec.config import ParamsError
    from sidrec.data.loaders import DataError

    if issubclass(exc_type, (ParamsError, DataError)):
        print(f"error: {exc}", file=sys.stderr)
    else:
        sys.__excepthook__(exc_type, exc, tb)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete `.{name}.{pid}.*.tmp` siblings of `path` whose writer process no longer exists."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp$")  # tempfile's random part
    for sib in path.parent.iterdir():
        m = pattern.match(sib.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(sib, ignore_errors=True) if sib.is_dir() else sib.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False):
    """Yield a temporary path next to `path`; on success rename it to `path` (replacing it), else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    prefix = f".{path.name}.{os.getpid()}."
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)


def peak_rss_mb() -> float:
    """Peak resident set size of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


class StageClock:
    """Measure a stage: `runtime_s` and `peak_rss_mb`, added to every metrics JSON the stage writes."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def stamp(self, metrics: dict) -> dict:
        return {**metrics, "runtime_s": round(time.perf_counter() - self.start, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1)}
