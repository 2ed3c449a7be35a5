"""Validation of the options analyze(), compare(), encode() and the CLI share: one parser per kind of option, each
raising one ValueError that names the option, what it expected, what it got, and the fix - before any work starts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

LayerSpec = str | tuple[int, ...]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def parse_layers(value: Any, option: str = "layers") -> LayerSpec:
    """``'all'``, an integer, a comma-separated string of integers, or a sequence of integers -> ``'all'`` or a
    tuple of ints (hidden-state indices: 0 = embeddings, -1 = last layer; range-checked against the model later)."""
    fix = "e.g. -1 (last layer), 0,3,-1, or all"
    if isinstance(value, str):
        text = value.strip()
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
        try:
            out = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{option}: expected 'all' or comma-separated integers ({fix}), got {value!r}.") from None
    elif _is_int(value):
        out = (int(value),)
    elif isinstance(value, Sequence) and value and all(_is_int(v) for v in value):
        out = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{option}: expected 'all', an integer or a list of integers ({fix}), got {value!r}.")
    if not out:
        raise ValueError(f"{option}: expected at least one layer ({fix}), got none.")
    return tuple(dict.fromkeys(out))


def check_int(value: Any, option: str, *, minimum: int, fix: str, optional: bool = False) -> int | None:
    """An integer >= ``minimum`` (``None`` allowed when ``optional``); bools and floats are refused."""
    if value is None and optional:
        return None
    if not _is_int(value) or value < minimum:
        unset = " or unset" if optional else ""
        raise ValueError(f"{option}: expected an integer >= {minimum}{unset}, got {value!r}. {fix}")
    return int(value)


def check_seed(value: Any, option: str = "seed") -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{option}: expected a non-negative integer, got {value!r}. Pass e.g. seed=0.")
    return int(value)


def check_confidence(value: Any, option: str = "confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{option}: expected a level strictly between 0 and 1, got {value!r}. Pass e.g. 0.95 for "
                         "95% intervals.")
    return float(value)


def check_groups(value: Any, option: str = "groups") -> int:
    out = check_int(value, option, minimum=2, fix="The jackknife needs at least 2 groups; the default is 20.")
    assert out is not None
    return out


def check_choice(value: Any, option: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{option}: expected one of {', '.join(choices)}, got {value!r}.")
    return value


def check_bool(value: Any, option: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{option}: expected True or False, got {value!r}.")
    return value
