"""params.yaml -> frozen dataclasses: the real file loads; every bad edit gets a one-line ParamsError naming the key."""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from sidrec.config import (DATASETS, SPLIT_PROTOCOLS, DatasetConfig, EncoderConfig, Params, ParamsError,
                           SplitConfig, Validated, from_dict, load_params, to_dict)

REAL = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def raw() -> dict:
    """The real params.yaml as a plain dict (each test edits its own copy)."""
    return yaml.safe_load(REAL.read_text(encoding="utf-8"))


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def edit(data: dict, dotted: str, value=None, delete: bool = False) -> dict:
    """A copy of `data` with the dotted key set to `value` (or removed)."""
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for k in parents:
        node = node[k]
    if delete:
        del node[last]
    else:
        node[last] = value
    return out


def test_real_params_load(raw):
    p = load_params(REAL)
    assert isinstance(p, Params)
    assert isinstance(p.dataset, DatasetConfig) and isinstance(p.split, SplitConfig)
    assert isinstance(p.encoder, EncoderConfig)
    assert p.seed == raw["seed"] and p.codebook_size == raw["codebook_size"]
    assert p.lambda_ == raw["lambda"] and p.palette_length == raw["palette_length"]
    assert p.lora_rank == raw["lora_rank"]
    assert p.dataset.name in DATASETS and p.dataset.name == raw["dataset"]["name"]
    assert p.split.protocol in SPLIT_PROTOCOLS and p.split.valid_frac == raw["split"]["valid_frac"]
    assert p.encoder.model == raw["encoder"]["model"]


def test_to_dict_round_trips(raw):
    p = load_params(REAL)
    d = to_dict(p)
    assert "lambda" in d and "lambda_" not in d
    assert d == raw, "to_dict should give back params.yaml exactly"
    assert from_dict(Params, d) == p


def test_lambda_maps_to_lambda_(tmp_path, raw):
    p = load_params(write(tmp_path, edit(raw, "lambda", 1.25)))
    assert p.lambda_ == 1.25
    assert load_params(write(tmp_path, edit(raw, "lambda", 2))).lambda_ == 2  # an int is a valid float


def test_params_are_frozen():
    p = load_params(REAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.dataset.name = "ml-1m"


def _raises(path: Path, key: str) -> str:
    with pytest.raises(ParamsError) as ei:
        load_params(path)
    msg = str(ei.value)
    assert "\n" not in msg, f"multi-line message: {msg!r}"
    assert f"`{key}`" in msg, f"message does not name `{key}`: {msg}"
    return msg


@pytest.mark.parametrize("key, value", [("foo", 1), ("dataset.nme", "ml-1m"), ("split.shuffle", True),
                                        ("lambda_", 0.5)])
def test_unknown_key(tmp_path, raw, key, value):
    msg = _raises(write(tmp_path, edit(raw, key, value)), key)
    assert "unknown" in msg


@pytest.mark.parametrize("key", ["seed", "codebook_size", "lambda", "dataset", "dataset.name", "split.protocol",
                                 "encoder.batch_size"])
def test_missing_key(tmp_path, raw, key):
    msg = _raises(write(tmp_path, edit(raw, key, delete=True)), key)
    assert "missing" in msg


@pytest.mark.parametrize("key, value", [
    ("codebook_size", "256"),
    ("codebook_size", 256.0),
    ("seed", True),
    ("lambda", "0.5"),
    ("dataset", "ml-1m"),
    ("dataset.name", 5),
    ("dataset.min_user_events", 5.5),
    ("split.valid_frac", "0.1"),
    ("encoder.batch_size", None),
])
def test_wrong_type(tmp_path, raw, key, value):
    _raises(write(tmp_path, edit(raw, key, value)), key)


@pytest.mark.parametrize("key, value", [
    ("codebook_size", 1),
    ("codebook_size", 0),
    ("lambda", -0.1),
    ("palette_length", 0),
    ("lora_rank", 0),
    ("seed", -1),
    ("dataset.name", "netflix"),
    ("dataset.min_user_events", 0),
    ("split.protocol", "random"),
    ("split.valid_frac", 0.0),
    ("split.test_frac", 1.5),
    ("eval.llm_dtype", "float16"),
    ("encoder.max_seq_length", 4),
])
def test_invalid_value(tmp_path, raw, key, value):
    _raises(write(tmp_path, edit(raw, key, value)), key)


def test_fractions_must_leave_train_data(tmp_path, raw):
    bad = edit(edit(raw, "split.valid_frac", 0.5), "split.test_frac", 0.45)
    _raises(write(tmp_path, bad), "split.valid_frac")
    ok = edit(edit(raw, "split.valid_frac", 0.2), "split.test_frac", 0.2)
    assert load_params(write(tmp_path, ok)).split.test_frac == 0.2


def test_invalid_value_names_the_choices(tmp_path, raw):
    msg = _raises(write(tmp_path, edit(raw, "dataset.name", "netflix")), "dataset.name")
    assert all(name in msg for name in DATASETS)
    msg = _raises(write(tmp_path, edit(raw, "split.protocol", "random")), "split.protocol")
    assert all(name in msg for name in SPLIT_PROTOCOLS)


def test_bad_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    _raises(empty, "seed")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(listy)


def test_dvc_exp_set_param_rewrite_loads_the_same(tmp_path: Path) -> None:
    """`dvc exp run -S lambda=0.5` rewrites params.yaml through DVC's YAML 1.2 dumper, which drops the quotes of
    `"no"` (a YAML 1.1 boolean); the rewritten file must load to the same params but for the one knob."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text(REAL.read_text(encoding="utf-8"), encoding="utf-8")
    apply_overrides(str(path), ["lambda=0.5"])
    assert '"no"' not in path.read_text(encoding="utf-8")  # the rewrite this test is about happened
    before, after = to_dict(load_params(REAL)), to_dict(load_params(path))
    assert after.pop("lambda") == 0.5 and before.pop("lambda") != 0.5
    assert after == before


@pytest.mark.parametrize("text, value", [("no", "no"), ("yes", "yes"), ("off", "off"), ("true", True),
                                         ("False", False), ("1e-3", 1e-3), (".5", 0.5), ("42", 42), ("0.25", 0.25)])
def test_read_yaml_uses_yaml_1_2_scalars(tmp_path: Path, text: str, value) -> None:
    from sidrec.config import read_yaml

    path = tmp_path / "x.yaml"
    path.write_text(f"k: {text}\n", encoding="utf-8")
    got = read_yaml(path)["k"]
    assert got == value and type(got) is type(value)


def _validated_classes(cls=Params) -> list[type]:
    """`cls` and every dataclass section below it."""
    hints = typing.get_type_hints(cls)
    subs = [hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]
    return [cls, *(c for sub in subs for c in _validated_classes(sub))]


def test_every_rule_names_a_field_of_its_dataclass():
    """A misspelt key in a RULES table would check nothing (or fail on getattr); every key must be a field."""
    classes = _validated_classes()
    assert len(classes) > 15, "the walk must reach every section"
    for cls in classes:
        assert issubclass(cls, Validated), f"{cls.__name__} does not share the table-driven validate"
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(cls.RULES) <= fields, f"{cls.__name__}.RULES names no field: {sorted(set(cls.RULES) - fields)}"
        assert "RULES" not in fields
    assert sum(len(c.RULES) for c in classes) > 80, "the tables hold the per-field checks"


@pytest.mark.parametrize("key, value, expected", [
    ("gpt.dropout", 1.0, "must be in [0, 1)"),  # a rule-table rule (within)
    ("eval.k", 4, "must be >= 5 (metrics are reported at 5 and k)"),  # a rule-table rule with a note
    ("split.ties", "abc", "is 'abc'; use one of random, source, item_id"),  # one_of
    ("palette.batch_size", 1, "must be >= 2 (L_inter needs in-batch negatives)"),  # the second of two rules
    ("eval.cold_epsilon", [0.0, 1.5], "has 1.5; every epsilon must lie in [0, 1]"),  # each
    ("lambda", -0.5, "must be >= 0"),  # top level, field `lambda_` shown as its params.yaml key
    ("gpt.n_head", 3, "must be divisible by n_head (3)"),  # cross-field hook; names n_embd
    ("eval.beam_size", 5, "must be >= k (10)"),  # cross-field hook
])
def test_rule_table_and_cross_field_messages(tmp_path, raw, key, value, expected):
    named = "gpt.n_embd" if key == "gpt.n_head" else key
    msg = _raises(write(tmp_path, edit(raw, key, value)), named)
    assert msg == f"params: `{named}` {expected}"
