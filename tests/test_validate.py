"""The shared argument checks of refdiff/_validate.py: bools are not integers, every
message names the argument, the bad value and the valid range."""

import numpy as np
import pytest

from refdiff._validate import check_choice, check_finite_scalar, check_int


def test_check_int():
    assert check_int("n", np.int64(3), min=1) == 3 and type(check_int("n", np.int64(3))) is int
    for bad, exc in ((True, TypeError), (2.0, TypeError), ("3", TypeError), (0, ValueError)):
        with pytest.raises(exc, match=r"n must be an integer >= 1, got n = "):
            check_int("n", bad, min=1)


def test_check_finite_scalar_and_choice():
    assert check_finite_scalar("p", 1, low=0.0, high=1.0) == 1.0
    with pytest.raises(TypeError, match="p must be a real number"):
        check_finite_scalar("p", False)
    for bad in (float("nan"), float("inf"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"p = .* is outside \[0.0, 1.0\]"):
            check_finite_scalar("p", bad, low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"is outside \(0.0, inf\]"):
        check_finite_scalar("r", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match="kind = 'x' is not one of 'a', 'b'"):
        check_choice("kind", "x", ("a", "b"))
