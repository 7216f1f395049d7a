"""Sharing data and models through a DVC remote: what one machine pushes, a fresh clone pulls byte for byte.

A local-directory remote stands in for S3, GCS or SSH (the same `dvc remote add` / `dvc push` / `dvc pull`, another
URL). The tiny repo reproduces fetch + prepare (a file out, a directory out, a persisted out), pushes, commits
dvc.lock and the remote's config; a `git clone` with an empty cache pulls and gets identical files, and DVC finds
the clone's workspace up to date with dvc.lock.
"""
import hashlib
import json
from pathlib import Path

from conftest import TinyRepo

OUTS = ["data/raw/ml-1m", "data/prepared"]


def digests(root: Path, rels: list[str]) -> dict[str, str]:
    """sha256 of every file under each of `rels` (files or directories), keyed by repository path."""
    out = {}
    for rel in rels:
        base = root / rel
        for f in sorted([base] if base.is_file() else base.rglob("*")):
            if f.is_file():
                out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_push_then_pull_in_a_fresh_clone_gives_identical_outputs(tiny_repo, tmp_path):
    repo = tiny_repo
    remote = tmp_path / "remote"
    repo.repro("prepare")
    repo.dvc("remote", "add", "--default", "shared", str(remote))
    repo.dvc("push", "--with-deps", "prepare")  # only what has been run (a full run: plain `dvc push`)
    repo.commit("prepared data, remote `shared`")
    before = digests(repo.root, OUTS)
    assert len(before) >= 5 and any(k.startswith("data/prepared/") for k in before)
    assert any(p.is_file() for p in (remote / "files" / "md5").rglob("*"))  # DVC 3's remote layout

    clone = TinyRepo(root=tmp_path / "clone", env=repo.env)
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    assert not (clone.root / "data" / "prepared").exists() and not (clone.root / ".dvc" / "cache").exists()
    clone.dvc("pull", "--with-deps", "prepare")
    assert digests(clone.root, OUTS) == before
    assert clone.status("prepare") == {}  # the pulled outputs are the ones dvc.lock records
    assert json.loads((clone.root / "metrics" / "data.json").read_text()) == repo.read_json("metrics/data.json")


def test_pull_names_what_the_remote_lacks(tiny_repo, tmp_path):
    repo = tiny_repo
    repo.repro("fetch")
    repo.dvc("remote", "add", "--default", "empty", str(tmp_path / "empty"))
    repo.commit("fetched, nothing pushed")
    clone = TinyRepo(root=tmp_path / "clone", env=repo.env)
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    res = clone.dvc("pull", "fetch", check=False)
    assert res.returncode != 0
    assert "data/raw/ml-1m" in res.stdout + res.stderr
