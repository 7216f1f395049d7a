"""Shared fixtures: a throw-away DVC repository with a tiny ml-1m data set (`tiny_repo`, `make_tiny_repo`).

The tiny repo is a copy of what `dvc repro` needs (dvc.yaml, params.yaml, stages/, src/, .dvc/config,
.dvcignore, .gitignore) in `tmp_path`, a fresh git repository with one commit (so `dvc exp run` works too),
no DVC remote, analytics and update checks off, and every DVC/HF location pointed inside `tmp_path`.
Stages import `sidrec` from the copied src/ (PYTHONPATH), so the code that runs is the code DVC hashed.

Later stages get tiny settings by extending TINY_PARAMS (merged for every tiny repo) or by passing
`params={...}` to `make_tiny_repo` / calling `repo.set_params({...})`; both deep-merge into the copied
params.yaml and reject keys that params.yaml does not have, so a typo fails loudly.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fixtures import _WORDS, ML_GENRES, write_ml1m
from llm_fixtures import write_tiny_llm

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ["dvc.yaml", "params.yaml", "stages", "src", ".dvcignore", ".gitignore"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")

# Params every tiny repo runs with: the tiny ml-1m written by `write_ml1m`, small batches.
TINY_PARAMS: dict = {
    "dataset": {"name": "ml-1m", "min_user_events": 5, "min_item_events": 1},
    "encoder": {"batch_size": 32},
    "codebook_size": 8,
    "rqvae": {"epochs": 20, "hidden_dims": [32], "latent_dim": 8, "batch_size": 32, "dead_code_every": 5},
    "gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "epochs": 2, "eval_every": 1, "batch_size": 16,
            "mixed_precision": "no"},
    "eval": {"max_history": 5, "valid_cases": 50, "bootstrap": 100, "batch_size": 16, "invalid_cases": 100},
    "llm": {"max_history": 4, "mixed_precision": "no"},  # base: a tiny random Llama written per repo
    "lora_rank": 4,
    "cpt": {"batch_size": 8, "max_sequences": 20},
    "sft": {"batch_size": 8, "max_examples": 8, "checkpoints": 2},
    "steer": {"pairs": [["Drama", "Comedy"], ["Children's", "Horror"]], "dominance": 0.2, "max_users": 5},
    "palette": {"max_content_tokens": 16, "batch_size": 8, "mixed_precision": "no", "row_tokens": 64,
                "encode_batch_size": 16, "eval_items": 8},
    "lamia": {"pca_dim": 8, "n_init": 1},
}


def deep_merge(base: dict, overrides: dict, where: str = "") -> dict:
    """`base` with `overrides` merged in recursively; a key missing from `base` is a KeyError (typo guard)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in out:
            raise KeyError(f"override `{dotted}` is not in params.yaml; known here: {', '.join(map(str, out))}")
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = deep_merge(out[key], value, dotted)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class TinyRepo:
    root: Path
    env: dict

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def params(self) -> dict:
        return yaml.safe_load(self.params_path.read_text(encoding="utf-8"))

    def set_params(self, overrides: dict) -> dict:
        """Deep-merge `overrides` into params.yaml; returns the new params."""
        new = deep_merge(self.params(), overrides)
        self.params_path.write_text(yaml.safe_dump(new, sort_keys=False), encoding="utf-8")
        return new

    def run(self, *cmd: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run a command in the repo with the hermetic environment; on failure show its output."""
        res = subprocess.run(list(cmd), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            tail = "\n".join((res.stdout + "\n" + res.stderr).splitlines()[-60:])
            raise AssertionError(f"`{' '.join(cmd)}` exited {res.returncode} in {self.root}:\n{tail}")
        return res

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", "-c", "user.name=sidrec-tests", "-c", "user.email=tests@sidrec.invalid",
                        "-c", "commit.gpgsign=false", *args, check=check)

    def commit(self, message: str = "tiny") -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def repro(self, *targets: str) -> subprocess.CompletedProcess:
        return self.dvc("repro", *targets)

    def repro_parallel(self, *targets: str, jobs: int = 2) -> subprocess.CompletedProcess:
        """`make repro`'s runner (pipelines/parallel.py of this checkout) on this repo, `jobs` stages side by side."""
        return self.run(sys.executable, str(REPO_ROOT / "pipelines" / "parallel.py"), "--root", str(self.root),
                        "--jobs", str(jobs), *targets, timeout=1800)

    def status(self, *targets: str) -> dict:
        """`dvc status --json [--with-deps targets]`: {} when those stages (and their upstream) are up to date."""
        args = ["--with-deps", *targets] if targets else []
        return json.loads(self.dvc("status", "--json", *args).stdout or "{}")

    def read_json(self, rel: str):
        return json.loads((self.root / rel).read_text(encoding="utf-8"))


def _write_dvc_config(src: Path, dst: Path) -> None:
    """The repo's .dvc/config without remotes, with analytics and update checks off."""
    from configobj import ConfigObj

    cfg = ConfigObj(str(src)) if src.exists() else ConfigObj()
    for section in [s for s in cfg if s.startswith("remote") or s.startswith("machine")]:
        del cfg[section]
    core = cfg.setdefault("core", {})
    core.pop("remote", None)
    core["analytics"] = "false"
    core["check_update"] = "false"
    cfg.filename = str(dst)
    cfg.write()


def create_tiny_repo(root: Path, params: dict | None = None, n_users: int = 40, n_items: int = 60,
                     seed: int = 0) -> TinyRepo:
    """Build a tiny, hermetic DVC repository at `root` (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=IGNORED, symlinks=True)
        elif src.exists():
            shutil.copy2(src, root / name)
    # the report reads the seed spread, measured outside the DAG by dvc experiments (pipelines/seed_spread.py)
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "seed_spread.json").write_text('{"systems": {}}\n', encoding="utf-8")
    (root / ".dvc").mkdir()
    _write_dvc_config(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    (root / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n", encoding="utf-8")

    home = root.parent / f"{root.name}-home"
    dirs = {k: home / k for k in ("dvc-global", "dvc-system", "dvc-site-cache", "hf", "xdg-cache")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "HF_", "PYTHONPATH"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root / "src"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(dirs["hf"]),
        "TOKENIZERS_PARALLELISM": "false",
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(dirs["dvc-global"]),
        "DVC_SYSTEM_CONFIG_DIR": str(dirs["dvc-system"]),
        "DVC_SITE_CACHE_DIR": str(dirs["dvc-site-cache"]),
        "XDG_CACHE_HOME": str(dirs["xdg-cache"]),
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    })
    repo = TinyRepo(root=root, env=env)
    repo.set_params(TINY_PARAMS)
    llm_dir = write_tiny_llm(root.parent / f"{root.name}-llm", _WORDS + ML_GENRES)
    repo.set_params({"llm": {"base": str(llm_dir)}})
    if params:
        repo.set_params(params)
    write_ml1m(root / "data" / "raw" / "ml-1m", n_users=n_users, n_items=n_items, seed=seed)
    repo.git("init", "-q")
    repo.commit("tiny sidrec repo")
    return repo


@pytest.fixture
def make_tiny_repo(tmp_path):
    """Factory: make_tiny_repo(params={...}, n_users=.., n_items=.., seed=..) -> TinyRepo in tmp_path."""
    count = 0

    def make(**kwargs) -> TinyRepo:
        nonlocal count
        count += 1
        return create_tiny_repo(tmp_path / f"repo{count}", **kwargs)

    return make


@pytest.fixture
def tiny_repo(make_tiny_repo) -> TinyRepo:
    """A tiny DVC repository with the default TINY_PARAMS, nothing run yet."""
    return make_tiny_repo()
