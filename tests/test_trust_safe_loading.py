"""Safe loading: weights come only through safetensors or `torch.load(weights_only=True)`, nothing runs remote code,
and nothing unpickles a file a user supplies.

Two kinds of proof: a scan of every Python file the pipeline runs (src/, stages/, bench/, pipelines/) for the
unsafe calls, with the scanner itself tested on bad and good snippets; and the real loaders fed booby-trapped model
directories (a pickle that creates a file when unpickled, custom modelling code that creates a file when imported)
to show that none of them executes the trap.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import REPO_ROOT
from llm_fixtures import tiny_llama, tiny_tokenizer

SCANNED = [d for d in ("src", "stages", "bench", "pipelines") if (REPO_ROOT / d).is_dir()]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
YAML_UNSAFE = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all", "Loader",
               "UnsafeLoader", "FullLoader"}


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """`file:line what` for every call, import or option that can run code hidden in a loaded file."""
    tree = ast.parse(source, filename)
    alias: dict[str, str] = {}  # local name -> dotted origin, from the imports
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno} {what}")

    def origin(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return alias.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            return f"{origin(node.value)}.{node.attr}"
        return ""

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in PICKLE_MODULES:
                flag(node, f"from {node.module} import")
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and not _is_false(v):
                    flag(node, "trust_remote_code in a kwargs dict")
        if isinstance(node, ast.Attribute) and origin(node.value) == "yaml" and node.attr in YAML_UNSAFE:
            flag(node, f"yaml.{node.attr} (use yaml.safe_load)")
        if not isinstance(node, ast.Call):
            continue
        name = origin(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            flag(node, f"{name}()")
        if name in ("torch.load", "torch.serialization.load") and not _is_true(kw.get("weights_only", ast.Constant(None))):
            flag(node, "torch.load without weights_only=True")
        if name in ("torch.jit.load", "torch.package.PackageImporter"):
            flag(node, f"{name} (runs serialized code)")
        if name.endswith(("read_pickle", "to_pickle")):
            flag(node, name)
        if name.endswith(("numpy.load", "np.load")) and "allow_pickle" in kw and not _is_false(kw["allow_pickle"]):
            flag(node, "np.load with allow_pickle")
        if "trust_remote_code" in kw and not _is_false(kw["trust_remote_code"]):
            flag(node, "trust_remote_code")
        if "use_safetensors" in kw and not _is_true(kw["use_safetensors"]):
            flag(node, "use_safetensors other than True")
    return found


def scanned_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO_ROOT / d).rglob("*.py"))


def test_the_code_makes_no_unsafe_call():
    files = scanned_files()
    assert len(files) > 40, "the scan found too few files; did the layout change?"
    found = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(REPO_ROOT)))]
    assert found == [], "unsafe loading:\n" + "\n".join(found)


BAD = {
    "import pickle\npickle.loads(b)": "import pickle",
    "from joblib import load": "from joblib import",
    "import dill as d": "import dill",
    "import torch\ntorch.load(p)": "weights_only",
    "import torch\ntorch.load(p, weights_only=False)": "weights_only",
    "import torch as T\nT.load(p, map_location='cpu')": "weights_only",
    "from torch import load\nload(p)": "weights_only",
    "import torch\ntorch.jit.load(p)": "torch.jit.load",
    "import pandas as pd\npd.read_pickle(p)": "read_pickle",
    "df.to_pickle(p)": "to_pickle",
    "import numpy as np\nnp.load(p, allow_pickle=True)": "allow_pickle",
    "import numpy\nnumpy.load(p, allow_pickle=flag)": "allow_pickle",
    "AutoModel.from_pretrained(n, trust_remote_code=True)": "trust_remote_code",
    "SentenceTransformer(n, trust_remote_code=opt)": "trust_remote_code",
    "AutoModel.from_pretrained(n, **{'trust_remote_code': True})": "trust_remote_code",
    "AutoModel.from_pretrained(n, use_safetensors=False)": "use_safetensors",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)": "yaml.load",
    "import yaml\nyaml.unsafe_load(s)": "yaml.unsafe_load",
    "eval(text)": "eval()",
    "exec(code)": "exec()",
}
GOOD = [
    "import torch\ntorch.load(p, weights_only=True)",
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=False)",
    "import yaml\nyaml.safe_load(s)\nyaml.safe_dump(d)",
    "import ast\nast.literal_eval(line)",
    "from safetensors.torch import load_file\nload_file(p)",
    "AutoModel.from_pretrained(n)\nAutoModel.from_pretrained(n, trust_remote_code=False, use_safetensors=True)",
    "model.eval()\nself.model.eval()",
    "import json\njson.loads(s)",
]


@pytest.mark.parametrize("snippet", list(BAD), ids=[s.splitlines()[-1] for s in BAD])
def test_scanner_flags(snippet):
    found = unsafe_calls(snippet)
    assert len(found) >= 1 and BAD[snippet] in " ".join(found), found


@pytest.mark.parametrize("snippet", GOOD, ids=[s.splitlines()[-1] for s in GOOD])
def test_scanner_passes(snippet):
    assert unsafe_calls(snippet) == []


# --- the real loaders against booby-trapped files ---------------------------------------------------------------

class Trap:
    """Unpickling this calls open(marker, "w"): the marker file exists iff the pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _trap_pickle(path: Path, marker: Path) -> None:
    """A torch checkpoint whose state dict carries the trap."""
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "trap": Trap(marker)}, path)


def test_the_trap_is_real(tmp_path):
    """Control: the same file *does* run its payload when loaded unsafely, so the tests below can fail."""
    marker = tmp_path / "pwned"
    _trap_pickle(tmp_path / "x.bin", marker)
    with pytest.raises(Exception):
        torch.load(tmp_path / "x.bin", weights_only=True)
    assert not marker.exists()
    torch.load(tmp_path / "x.bin", weights_only=False)
    assert marker.exists()


def _trapped_llm_dir(path: Path, marker: Path) -> Path:
    """A `save_pretrained` tiny Llama whose weights are a booby-trapped pickle instead of safetensors."""
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "model.safetensors").unlink()
    _trap_pickle(path / "pytorch_model.bin", marker)
    return path


@pytest.mark.parametrize("loader", ["load_base", "load_llm"])
def test_llm_loaders_never_unpickle_user_weights(tmp_path, loader):
    """`llm.base` may be any local directory the user names; models/llm_base and later are read back by load_llm."""
    from sidrec.models import llm

    marker = tmp_path / "pwned"
    model_dir = _trapped_llm_dir(tmp_path / "model", marker)
    with pytest.raises(Exception):
        getattr(llm, loader)(str(model_dir))
    assert not marker.exists(), f"{loader} executed a pickle from the model directory"


def test_gpt_loader_never_unpickles(tmp_path):
    from sidrec.models.gpt import GPTArch, GPTRecommender, SequenceCodec, build_gpt
    from sidrec.tokenizers.sids import SidTable, TokenLayout

    sids = SidTable(np.arange(6).reshape(6, 1), [6], {"tokenizer": "atomic"})
    arch = GPTArch(n_layer=1, n_head=2, n_embd=16, dropout=0.0, max_history=3)
    codec = SequenceCodec(sids)
    rec = GPTRecommender(build_gpt(arch, TokenLayout(sids.vocab_sizes), codec.max_positions(3)), codec, arch)
    rec.save(tmp_path / "gpt")
    assert GPTRecommender.load(tmp_path / "gpt", sids) is not None  # the untouched directory loads
    marker = tmp_path / "pwned"
    (tmp_path / "gpt" / "model.safetensors").unlink()
    _trap_pickle(tmp_path / "gpt" / "pytorch_model.bin", marker)
    with pytest.raises(Exception):
        GPTRecommender.load(tmp_path / "gpt", sids)
    assert not marker.exists()


def test_popularity_loader_never_unpickles(tmp_path):
    from sidrec.models.popularity import PopularityRecommender

    marker = tmp_path / "pwned"
    (tmp_path / "pop").mkdir()
    np.save(tmp_path / "pop" / "scores.npy", np.array([Trap(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "pop" / "config.json").write_text(json.dumps({"window_days": 0}))
    with pytest.raises(ValueError, match="allow_pickle"):
        PopularityRecommender.load(tmp_path / "pop")
    assert not marker.exists()


def _custom_code_dir(path: Path, marker: Path, model_type: str) -> Path:
    """A tiny Llama directory (safetensors) whose config asks for modelling code shipped next to it: importing that
    code creates `marker`."""
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig",
                                                    "AutoModelForCausalLM": "evil.EvilModel"})
    (path / "config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    return path


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Where transformers copies remote code before importing it: inside tmp_path, not the user's HF cache."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    return tmp_path / "hf_modules"


def test_known_architecture_ignores_custom_code(tmp_path, modules_cache):
    from sidrec.models.llm import load_base

    marker = tmp_path / "pwned"
    model, _ = load_base(str(_custom_code_dir(tmp_path / "model", marker, "llama")))
    assert type(model).__name__ == "LlamaForCausalLM" and not marker.exists()


def test_custom_code_is_refused(tmp_path, modules_cache, monkeypatch):
    """An architecture transformers does not know, with code in the directory: refused when nobody answers (DVC, CI)."""
    from sidrec.models.llm import load_base

    def no_terminal(*args):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_base(str(_custom_code_dir(tmp_path / "model", marker, "evil-model")))
    assert not marker.exists()


def test_custom_code_is_refused_even_if_the_user_says_yes(tmp_path, modules_cache, monkeypatch):
    from sidrec.models.llm import load_base

    monkeypatch.setattr("builtins.input", lambda *args: "y")
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_base(str(_custom_code_dir(tmp_path / "model", marker, "evil-model")))
    assert not marker.exists(), "custom modelling code from the model directory was imported"
