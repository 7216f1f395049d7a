"""Interrupted runs: a SIGKILL (no cleanup handler runs) never leaves a partial output where DVC or the next stage
would take it for a real one, and the next `dvc repro` restarts the stage cleanly.

The training stages keep no checkpoints: a killed stage restarts from scratch, at the cost of that one stage.
What makes that safe: DVC deletes a stage's outputs before running its command and records (and caches) them only
after the command exits 0, and every output file or directory is written to a temporary sibling and renamed into
place (`sidrec.io.atomic_path`), whose leftovers from a killed writer the next write removes.
"""
from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from fixtures import REPO_ROOT, stage_env, temp_leftovers
from sidrec.io import atomic_path, write_json

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sidrec.io import atomic_path
    target, is_dir = Path(sys.argv[1]), sys.argv[2] == "dir"
    with atomic_path(target, is_dir=is_dir) as tmp:
        (tmp / "part.bin" if is_dir else tmp).write_bytes(b"half of the new ")
        print("writing", flush=True)
        time.sleep(60)
        (tmp / "part.bin" if is_dir else tmp).write_bytes(b"all of the new version")
""")


def start_writer(target: Path, kind: str) -> subprocess.Popen:
    """A process caught inside `atomic_path` halfway through writing `target`."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], env=stage_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkill_inside_atomic_path(tmp_path, kind):
    target = tmp_path / ("out.json" if kind == "file" else "model")
    write_json(target / "v.json" if kind == "dir" else target, {"version": 1})  # the previous, complete output
    before = sorted(p.name for p in target.rglob("*")) if kind == "dir" else target.read_text()

    proc = start_writer(target, kind)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    after = sorted(p.name for p in target.rglob("*")) if kind == "dir" else target.read_text()
    assert after == before, "the killed writer touched the real output"
    stale = temp_leftovers(tmp_path)
    assert len(stale) == 1 and f".{proc.pid}." in stale[0].name  # SIGKILL skips atomic_path's cleanup

    live = start_writer(target, kind)  # another writer of the same path, still running
    try:
        with atomic_path(target, is_dir=kind == "dir") as tmp:
            (tmp / "v.json" if kind == "dir" else tmp).write_text('{"version": 2}')
        left = temp_leftovers(tmp_path)
        assert stale[0] not in left, "the dead writer's temporary output was not removed"
        assert len(left) == 1 and f".{live.pid}." in left[0].name, "a live writer's temporary output was removed"
    finally:
        live.kill()
        live.wait()


EPOCH_DONE = re.compile(r"epoch \d+: train_loss=")  # sidrec.train.fit logs this line after every epoch


def _cache_files(root: Path) -> set[Path]:
    return {p for p in (root / ".dvc" / "cache").rglob("*") if p.is_file()}


def _lock_stages(root: Path) -> dict:
    lock = root / "dvc.lock"
    return yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}


def test_sigkill_mid_training_then_repro(make_tiny_repo):
    stage = "train@atomic-gpt"  # the cheapest training stage: its upstream needs no encoder
    repo = make_tiny_repo(params={"gpt": {"epochs": 3, "eval_every": 1, "patience": 0, "batch_size": 32,
                                          "search": {"lr": [0.001]}}})
    repo.repro("tokenize@atomic")
    cache_before, lock_before = _cache_files(repo.root), _lock_stages(repo.root)
    outs = [repo.root / "models/gpt/atomic", repo.root / "metrics/train_atomic-gpt.json",
            repo.root / "plots/train_atomic-gpt"]

    log_path = repo.root.parent / "killed-repro.log"
    with open(log_path, "w") as log:  # its own session: the kill takes dvc, the shell and the stage together
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", stage], cwd=repo.root, env=repo.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not EPOCH_DONE.search(log_path.read_text()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed:\n" + log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert EPOCH_DONE.search(log) and "saved models/gpt/atomic" not in log, "not killed mid-training:\n" + log[-3000:]

    assert [p for p in outs if p.exists()] == [], "a partial output is in the workspace"
    assert temp_leftovers(repo.root / "models") == temp_leftovers(repo.root / "metrics") == []
    assert _cache_files(repo.root) == cache_before, "the killed stage put something in the DVC cache"
    assert _lock_stages(repo.root) == lock_before and stage not in lock_before

    rerun = repo.repro(stage)
    assert re.findall(r"Running stage '([^']+)'", rerun.stdout) == [stage]  # upstream is intact: only it reruns
    assert repo.status(stage) == {}
    assert (repo.root / "models/gpt/atomic/model.safetensors").is_file()
    assert repo.read_json("metrics/train_atomic-gpt.json")["epochs_run"] == 3
    assert len(_cache_files(repo.root)) > len(cache_before)
    assert temp_leftovers(repo.root / "models") == []


# --- every write of the pipeline code goes through atomic_path --------------------------------------------------

WRITE_METHODS = {"write_text", "write_bytes", "to_parquet", "to_csv", "to_json", "save_pretrained", "savefig",
                 "tofile", "dump"}
WRITE_FUNCTIONS = {"np.save", "numpy.save", "np.savez", "torch.save", "save_file", "json.dump", "shutil.copy",
                   "shutil.copyfile", "shutil.copytree", "shutil.move"}
IN_MEMORY = {"BytesIO", "StringIO"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def direct_writes(source: str, filename: str = "<snippet>") -> list[str]:
    """`file:line call` for every file write that is not lexically inside `with atomic_path(...)` (writes into an
    in-memory buffer, and `open` in a read mode, are not file writes)."""
    tree = ast.parse(source, filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    buffers = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
               and _dotted(node.value.func).split(".")[-1] in IN_MEMORY for t in node.targets if isinstance(t, ast.Name)}

    def inside_atomic(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.With) and any(isinstance(i.context_expr, ast.Call)
                                                  and _dotted(i.context_expr.func).endswith("atomic_path")
                                                  for i in node.items):
                return True
            if isinstance(node, ast.FunctionDef) and node.name == "atomic_path":
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Name) and first.id in buffers:
            continue
        if name == "open" or name.endswith(".open"):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            writes = isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+")
        else:
            writes = name in WRITE_FUNCTIONS or (isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_METHODS
                                                 and name not in ("yaml.dump", "json.dumps"))
        if writes and not inside_atomic(node):
            found.append(f"{filename}:{node.lineno} {name}")
    return found


def test_every_output_is_written_through_atomic_path():
    """The stage scripts and the library write files only inside `atomic_path` (dvclive's plots are the exception
    by design: `cache: false` curves appended step by step, which DVC deletes before the stage runs)."""
    files = sorted([*(REPO_ROOT / "stages").glob("*.py"), *(REPO_ROOT / "src" / "sidrec").rglob("*.py")])
    found = [hit for f in files for hit in direct_writes(f.read_text(encoding="utf-8"), str(f.relative_to(REPO_ROOT)))]
    assert found == [], "written in place (a crash leaves half a file):\n" + "\n".join(found)


@pytest.mark.parametrize("snippet, bad", [
    ("df.to_parquet(path)", True),
    ("path.write_text(s)", True),
    ("np.save(path, a)", True),
    ("model.save_pretrained(out)", True),
    ("with open(path, 'w') as fh:\n    fh.write(s)", True),
    ("with atomic_path(path) as tmp:\n    df.to_parquet(tmp)\n    np.save(tmp, a)", False),
    ("with io.atomic_path(d, is_dir=True) as tmp:\n    model.save_pretrained(tmp)", False),
    ("with open(path) as fh:\n    fh.read()\nwith open(path, 'rb') as fh:\n    pass", False),
    ("buf = io.BytesIO()\nfig.savefig(buf, format='png')", False),
    ("text = json.dumps(obj)\ny = yaml.dump(d)", False),
])
def test_direct_write_scanner(snippet, bad):
    assert bool(direct_writes(snippet)) == bad
