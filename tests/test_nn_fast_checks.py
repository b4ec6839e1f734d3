"""The argument checks of the tuned path after their speed-ups (issue 21, round 5): the
dtype-name cache of refdiff/_validate.py gives the verdicts of the uncached spelling, and
still refuses what it refused (the fused GroupNorm + SiLU: tests/test_nn_fast_hwnc.py)."""

import warnings

import array_api_strict as xps
import numpy as np
import pytest

from refdiff import _validate as V


@pytest.mark.parametrize("kind", ["float", "int", "bool", "index", "real", "any"])
def test_dtype_cache_gives_the_uncached_verdicts(kind):
    """For NumPy and array_api_strict arrays of every common dtype, asked twice (the second
    time from the cache), _dtype_ok equals the verdict computed from str(dtype); and mixing
    the two libraries' dtypes in the cache raises no cross-library comparison warning."""
    def uncached(x):
        n = str(x.dtype).rsplit(".", 1)[-1]
        fl, it, bo = n in ("float32", "float64"), n.startswith(("int", "uint")), n == "bool"
        return {"float": fl, "int": it, "bool": bo, "index": it or bo, "real": fl or it, "any": True}[kind]

    arrays = [np.zeros(2, dtype=d) for d in ("float16", "float32", "float64", "int8", "int64", "uint16", "bool",
                                             "complex64", ">f8")]
    arrays += [xps.zeros(2, dtype=getattr(xps, d)) for d in ("float32", "float64", "int32", "bool", "complex128")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            for x in arrays:
                assert V._dtype_ok(x, kind) == uncached(x), (kind, x.dtype)


def test_check_array_still_refuses_after_caching():
    """A float32 array accepted (its dtype name now cached) does not make an int32 or a
    float16 array of the same shape acceptable, nor an empty one."""
    V.check_array("x", np.zeros((2, 2), np.float32))
    for bad in (np.zeros((2, 2), np.int32), np.zeros((2, 2), np.float16)):
        with pytest.raises(TypeError, match="x must be a real floating array"):
            V.check_array("x", bad)
    with pytest.raises(ValueError, match="x is empty"):
        V.check_array("x", np.zeros((0, 2), np.float32))
