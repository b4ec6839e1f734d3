"""Argument checks shared by every module: one wording for each kind of bad input (the
argument's name, the bad value and the valid range)."""

from __future__ import annotations

import math

import numpy as np


def check_int(name: str, value, min: int | None = None, hint: str = "") -> int:
    """``value`` as a Python int.  TypeError if it is not an integer (bools are refused),
    ValueError if it is below ``min``; both name ``name``, the value and the range."""
    bound = f" >= {min}" if min is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{bound}{hint}, got {name} = {value!r}")
    if min is not None and value < min:
        raise ValueError(f"{name} must be an integer{bound}{hint}, got {name} = {value!r}")
    return int(value)


def check_finite_scalar(name: str, value, *, low: float | None = None, high: float | None = None,
                        low_open: bool = False) -> float:
    """``value`` as a finite Python float in [low, high] (``low_open``: (low, high]);
    TypeError for a non-number or a bool, ValueError outside the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    lo_ok = low is None or (v > low if low_open else v >= low)
    if not math.isfinite(v) or not lo_ok or (high is not None and v > high):
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        raise ValueError(f"{name} = {value!r} is outside {'(' if low_open else '['}{lo}, {hi}]")
    return v


def check_choice(name: str, value, valid) -> str:
    """``value`` if it is one of ``valid``, else ValueError listing them."""
    if value not in valid:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(map(repr, valid))}")
    return value
