"""Hyper-parameter grid search on validation (the same care for every model: TIGER-style, SASRec-style, ...)."""
from __future__ import annotations

import dataclasses
import itertools


def grid(base, search: dict) -> list:
    """Every combination of `search` values applied to the frozen dataclass `base` (just `base` if empty)."""
    if not search:
        return [base]
    keys = sorted(search)
    return [dataclasses.replace(base, **dict(zip(keys, vals))) for vals in itertools.product(*(search[k] for k in keys))]
