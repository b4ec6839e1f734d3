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


def test_check_array_refuses_non_arrays_and_wrong_kinds():
    """Lists, scalars, None and strings are not arrays; integer, boolean, complex and
    float16 arrays are not float arrays: TypeError naming the argument and the dtype."""
    from refdiff._validate import check_array

    x = np.zeros((2, 3))
    assert check_array("x", x) is x
    assert check_array("x", x.astype(np.float32), ndim=2, shape=(None, 3)) is not None
    for bad in (None, [1.0, 2.0], (1.0,), 1.0, "abc", np.float64(1.0)):
        with pytest.raises(TypeError, match=r"^x must be a real floating array"):
            check_array("x", bad)
    for dt in (np.int64, np.bool_, np.complex128, np.float16, np.uint8):
        with pytest.raises(TypeError, match=rf"x must be .* got dtype {np.dtype(dt).name}"):
            check_array("x", np.zeros(3, dt))
    assert check_array("t", np.arange(3), dtype="int") is not None
    with pytest.raises(TypeError, match="t must be an integer array, got dtype float64"):
        check_array("t", np.zeros(3), dtype="int")


def test_check_array_shapes_empty_and_finite():
    from refdiff._validate import check_array, check_same_batch, check_same_shape

    with pytest.raises(ValueError, match=r"x must have 2 or 4 dimensions, got shape \(3,\)"):
        check_array("x", np.zeros(3), ndim=(2, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 2\), got shape \(3, 3\)"):
        check_array("x", np.zeros((3, 3)), shape=(None, 2))
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 2\)\)"):
        check_array("x", np.zeros((0, 2)))
    assert check_array("x", np.zeros((0, 2)), allow_empty=True).shape == (0, 2)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        check_array("x", np.array([0.0, np.inf]), finite=True)
    check_array("x", np.array([0.0, np.nan]))  # finite=False: not read
    assert check_same_shape(a=np.zeros(2), b=np.ones(2)) == (2,)
    with pytest.raises(ValueError, match=r"shape mismatch: a \(2,\), b \(3,\)"):
        check_same_shape(a=np.zeros(2), b=np.ones(3))
    assert check_same_batch(x=np.zeros((4, 2)), t=np.zeros(4)) == 4
    with pytest.raises(ValueError, match=r"batch size mismatch: x \(4, 2\), t \(3,\)"):
        check_same_batch(x=np.zeros((4, 2)), t=np.zeros(3))


def test_check_array_in_the_strict_namespace():
    """array-api-strict arrays are arrays; their dtype names are read the same way."""
    xps = pytest.importorskip("array_api_strict")
    from refdiff._validate import check_array

    assert check_array("a", xps.zeros(3)).shape == (3,)
    with pytest.raises(TypeError, match="a must be a real floating array .* got dtype int64"):
        check_array("a", xps.asarray([1, 2]))
    with pytest.raises(ValueError, match="a contains NaN or inf"):
        check_array("a", xps.asarray([1.0, float("nan")]), finite=True)


def test_check_coef():
    """check_coef (issue 19, path coefficients alpha_t, sigma_t, ...): numbers and float arrays
    that fit the data per sample pass unchanged; bools, lists, complex and integer arrays
    are TypeError, shapes that do not fit the data ValueError, each naming the argument."""
    from refdiff._validate import check_coef

    x = np.zeros((4, 3, 2))
    for ok in (0.5, 1, np.float32(0.5), np.array(0.5), np.ones(4), np.ones(1), np.ones((4, 1, 1)), np.ones((1, 3, 1))):
        assert check_coef("alpha", ok, x) is ok
    for bad in (True, None, "0.5", [0.5], 1 + 1j, np.ones(4, dtype=int), np.ones(4, dtype=np.float16)):
        with pytest.raises(TypeError, match="alpha"):
            check_coef("alpha", bad, x)
    for bad in (np.ones(3), np.ones((4, 2, 1)), np.ones((4, 3, 2, 1))):
        with pytest.raises(ValueError, match=r"sigma has shape .* does not fit the data of shape \(4, 3, 2\)"):
            check_coef("sigma", bad, x)
    check_coef("sigma", np.array([np.nan, 1.0, 1.0, 1.0]), x)  # values are not read
