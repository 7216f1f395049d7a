"""Every `sidrec` module a stage runs is one of its dvc.yaml deps.

A stage whose script imports `sidrec.data.sequences` (directly or through another sidrec module) but whose deps do
not list src/sidrec/data/sequences.py keeps its old results when that file changes, while `dvc status` says the
pipeline is up to date. The imports are read statically (ast, every `import` statement in the file, including
those inside functions), followed transitively through the package, and compared with the stage's deps (a dep may
be a file or a directory around it). The stage script itself must be a dep too.

Parent packages run when a submodule is imported, so their `__init__.py` is followed as well; an `__init__.py`
that is inert (only a docstring and constant assignments, e.g. `__version__`) cannot change a result and need not
be listed.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path, PurePosixPath

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sidrec"
SCRIPT_RE = re.compile(r"(?:^|[\s=])((?:\./)?stages/[\w./-]+\.py)\b")


def module_file(root: Path, module: str) -> Path | None:
    """The file of `module` (dotted, `sidrec...`) under root/src, or None when it is not a module of the package."""
    base = root / "src" / Path(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root / "src").with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_parents(module: str) -> list[str]:
    """`sidrec.a.b` -> [sidrec, sidrec.a, sidrec.a.b]: importing a submodule runs every parent package."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(root: Path, path: Path, module: str | None) -> set[str]:
    """The `sidrec` modules one file imports (names, parents included). `module`: the file's own dotted name, for
    relative imports (None for a stage script)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
            names: list[tuple[str, list[str]]] = [(t, []) for t in targets]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module.split(".") if is_pkg else module.split(".")[:-1]
                if node.level > 1:
                    package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [(base, [a.name for a in node.names])]
        else:
            continue
        for base, members in names:
            if base != PACKAGE and not base.startswith(f"{PACKAGE}."):
                continue
            found.update(_with_parents(base))
            for m in members:  # `from sidrec.a import b`: b may be a submodule or a name defined in sidrec.a
                if m != "*" and module_file(root, f"{base}.{m}") is not None:
                    found.add(f"{base}.{m}")
    return found


def transitive_modules(root: Path, script: Path) -> dict[str, Path]:
    """Every `sidrec` module (name -> file) that running `script` imports, transitively."""
    seen: dict[str, Path] = {}
    todo = sorted(imported_modules(root, script, None))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(root, name)
        if path is None:  # `import sidrec.nope`: an ImportError at run time, not a missing dep
            continue
        seen[name] = path
        todo += sorted(imported_modules(root, path, name) - set(seen))
    return seen


def is_inert(path: Path) -> bool:
    """A file with only a docstring and assignments of constants: importing it cannot change a result."""
    if path.name != "__init__.py":
        return False
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return False
    return True


def _covered(rel: str, deps: list[str]) -> bool:
    p = PurePosixPath(rel)
    return any(p == PurePosixPath(d) or PurePosixPath(d) in p.parents for d in deps)


def stage_scripts(cmd: str) -> list[str]:
    return [m.removeprefix("./") for m in SCRIPT_RE.findall(cmd)]


def missing_deps(root: Path, cmd: str, deps: list[str]) -> list[str]:
    """Repository paths (posix) a stage with command `cmd` runs but does not list in `deps`: its script(s) and every
    non-inert `sidrec` module they import transitively."""
    deps = [PurePosixPath(d).as_posix() for d in deps]
    missing: list[str] = []
    for script in stage_scripts(cmd):
        if not _covered(script, deps):
            missing.append(script)
        path = root / script
        if not path.is_file():
            continue
        for _, file in sorted(transitive_modules(root, path).items()):
            rel = file.relative_to(root).as_posix()
            if not is_inert(file) and not _covered(rel, deps):
                missing.append(rel)
    return list(dict.fromkeys(missing))


def dvc_stages(root: Path) -> list[tuple[str, str, list[str]]]:
    """(name, cmd, non-params deps relative to root) of every stage, foreach/matrix resolved, through DVC's API (as
    pipelines/dag.py's read_dag reads them)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = []
    with Repo(str(root)) as repo:
        for s in repo.index.stages:
            cmds = s.cmd if isinstance(s.cmd, list) else [s.cmd or ""]
            deps = [Path(os.path.relpath(d.fs_path, root)).as_posix() for d in s.deps
                    if not isinstance(d, ParamsDependency)]
            out.append((s.addressing, " && ".join(cmds), deps))
    return out


# --- the checker itself, on a synthetic package -------------------------------------------------------------------

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    src = tmp_path / "src" / PACKAGE
    _write(src / "__init__.py", '"""tiny."""\n__version__ = "0"\n')
    _write(src / "util.py", "X = 1\n")
    _write(src / "config.py", "from sidrec import util\n")
    _write(src / "data" / "__init__.py", '"""data."""\n')
    _write(src / "data" / "seq.py", "from . import helpers\nfrom ..config import X\n")
    _write(src / "data" / "helpers.py", "def f():\n    import sidrec.deep.leaf\n")
    _write(src / "deep" / "__init__.py", "from .leaf import Y\n")  # not inert: it imports
    _write(src / "deep" / "leaf.py", "Y = 2\n")
    _write(src / "unused.py", "Z = 3\n")
    _write(tmp_path / "stages" / "run.py", "import json\nfrom sidrec.data.seq import helpers\nfrom sidrec.util import X\n")
    return tmp_path


def test_transitive_imports_of_a_synthetic_stage(tiny):
    mods = transitive_modules(tiny, tiny / "stages" / "run.py")
    assert set(mods) == {"sidrec", "sidrec.util", "sidrec.config", "sidrec.data", "sidrec.data.seq",
                         "sidrec.data.helpers", "sidrec.deep", "sidrec.deep.leaf"}


def test_checker_lists_every_uncovered_module_and_the_script(tiny):
    cmd = "python stages/run.py --out x"
    missing = missing_deps(tiny, cmd, ["src/sidrec/data/seq.py", "src/sidrec/util.py"])
    assert missing == ["stages/run.py", "src/sidrec/config.py", "src/sidrec/data/helpers.py",
                       "src/sidrec/deep/__init__.py", "src/sidrec/deep/leaf.py"]


def test_checker_accepts_files_and_directories(tiny):
    deps = ["stages/run.py", "src/sidrec/data", "src/sidrec/deep", "src/sidrec/util.py", "src/sidrec/config.py",
            "data/whatever.parquet"]
    assert missing_deps(tiny, "python stages/run.py", deps) == []
    assert missing_deps(tiny, "python stages/run.py", [d for d in deps if d != "src/sidrec/deep"]) == [
        "src/sidrec/deep/__init__.py", "src/sidrec/deep/leaf.py"]


def test_a_sibling_directory_with_a_common_prefix_does_not_cover(tiny):
    assert _covered("src/sidrec/data/seq.py", ["src/sidrec/dat"]) is False
    assert _covered("src/sidrec/data/seq.py", ["src/sidrec/data"]) is True


# --- the real pipeline --------------------------------------------------------------------------------------------

def test_every_stage_lists_the_sidrec_modules_it_imports():
    stages = dvc_stages(REPO_ROOT)
    assert stages, "no stages read from dvc.yaml"
    problems = []
    for name, cmd, deps in stages:
        scripts = stage_scripts(cmd)
        if not scripts:
            problems.append(f"{name}: no `stages/*.py` script in its cmd {cmd!r}")
            continue
        for script in scripts:
            if not (REPO_ROOT / script).is_file():
                problems.append(f"{name}: script {script} does not exist")
        missing = missing_deps(REPO_ROOT, cmd, deps)
        if missing:
            problems.append(f"{name}: add to deps: {', '.join(missing)}")
    assert not problems, "dvc.yaml deps miss code the stages run:\n" + "\n".join(problems)


if __name__ == "__main__":  # print the missing deps per stage
    for name, cmd, deps in dvc_stages(REPO_ROOT):
        print(name, missing_deps(REPO_ROOT, cmd, deps))
    sys.exit(0)
