"""One source of defaults: every scalar default of the params dataclasses is the value params.yaml sets.

The stages read params.yaml (every key is required there); the dataclass defaults serve code that builds a config by
hand (tests, the CLI, notebooks). A default that drifts from params.yaml makes such code disagree with the pipeline.
Container-valued fields whose empty default means "none" (a grid, a list of pairs, per-stage overrides) are exempt.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from sidrec.config import _FIELD_TO_KEY, Params, read_yaml
from sidrec.recommend import DecodeSettings

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = {"gpt.search", "steer.pairs", "kubeflow.stages"}


def defaults_against(cls, data: dict, prefix: str = ""):
    """(dotted key, dataclass default, params.yaml value) for every field with a default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _FIELD_TO_KEY.get(f.name, f.name)
        dotted = f"{prefix}{key}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from defaults_against(hints[f.name], data[key], dotted + ".")
        elif f.default is not dataclasses.MISSING:
            yield dotted, f.default, data[key]
        elif f.default_factory is not dataclasses.MISSING:
            yield dotted, f.default_factory(), data[key]


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v


def test_dataclass_defaults_match_params_yaml():
    raw = read_yaml(ROOT / "params.yaml")
    rows = list(defaults_against(Params, raw))
    assert len(rows) > 50, "the walk must reach every section"
    drift = [f"{k}: default {d!r}, params.yaml {v!r}" for k, d, v in rows if k not in EXEMPT and _norm(d) != _norm(v)]
    assert not drift, "dataclass defaults disagree with params.yaml:\n" + "\n".join(drift)


def test_decode_defaults_match_eval_params():
    ev = read_yaml(ROOT / "params.yaml")["eval"]
    d = DecodeSettings()
    assert (d.beam_size, d.batch_size, d.exclude_seen, d.llm_dtype) == (
        ev["beam_size"], ev["batch_size"], ev["exclude_seen"], ev["llm_dtype"])


def test_the_check_can_fail():
    raw = read_yaml(ROOT / "params.yaml")
    raw["gpt"]["epochs"] = raw["gpt"]["epochs"] + 1
    assert any(k == "gpt.epochs" and d != v for k, d, v in defaults_against(Params, raw))


@pytest.mark.parametrize("key", sorted(EXEMPT))
def test_exempt_keys_exist(key):
    assert any(k == key for k, _, _ in defaults_against(Params, read_yaml(ROOT / "params.yaml")))
