"""Backend plumbing: host RNG in any namespace, to_numpy, special functions, import hygiene."""

import math
import subprocess
import sys

import numpy as np
import pytest

import refdiff
from refdiff import backend
from _support import asx, assert_close


def test_standard_normal_same_numbers_in_every_namespace(xp):
    """Noise drawn on the host: the same seed gives the same numbers in any namespace."""
    a = backend.standard_normal(np.random.default_rng(7), (3, 4), xp=xp)
    b = np.random.default_rng(7).standard_normal((3, 4))
    assert_close(a, b, xp=xp, rtol=0)
    like = asx(xp, np.zeros((2,)), dtype=xp.float32)
    c = backend.standard_normal(np.random.default_rng(7), (2,), like)
    assert c.dtype == xp.float32
    r = backend.rademacher(np.random.default_rng(1), (1000,), xp=xp)
    assert set(np.unique(backend.to_numpy(r))) == {-1.0, 1.0}


def test_rng_type_checked():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        backend.standard_normal(np.random.RandomState(0), (2,))


def test_ndtr_and_log_ndtr(xp):
    """Phi(x) = erfc(-x/sqrt 2)/2 (math.erfc as the reference); log Phi finite far in the tail."""
    xs = [-5.0, -1.0, 0.0, 0.3, 2.0]
    want = [0.5 * math.erfc(-v / math.sqrt(2)) for v in xs]  # erfc: no cancellation in the left tail
    assert_close(backend.ndtr(asx(xp, xs)), want, xp=xp, rtol=1e-13)
    lt = backend.log_ndtr(asx(xp, [-40.0]))
    # Mills ratio: log Phi(-x) ~ -x^2/2 - log(x sqrt(2 pi)) for large x
    assert float(lt[0]) == pytest.approx(-800 - math.log(40 * math.sqrt(2 * math.pi)), rel=1e-3)


def test_check_finite_names_location(xp):
    with pytest.raises(FloatingPointError, match="model output contains NaN or inf at step 3"):
        backend.check_finite(asx(xp, [1.0, float("nan")]), "model output", "step 3")


def test_import_is_silent_and_gpu_free():
    """`import refdiff` prints nothing and imports no GPU library (nor matplotlib)."""
    code = ("import sys, refdiff; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('cupy', 'cupyx', 'torch', 'matplotlib', 'jax')]; print(bad, end='')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]" and out.stderr == ""
    silent = subprocess.run([sys.executable, "-c", "import refdiff"], capture_output=True, text=True, check=True)
    assert silent.stdout == "" and silent.stderr == ""


def test_version_and_cli_help():
    out = subprocess.run([sys.executable, "-m", "refdiff", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"refdiff {refdiff.__version__}"
    h = subprocess.run([sys.executable, "-m", "refdiff", "--help"], capture_output=True, text=True, check=True)
    assert "usage: refdiff" in h.stdout


def test_namespace_for_device():
    """'cpu' is NumPy; 'gpu' is CuPy or a RuntimeError that says how to install it."""
    from conftest import CUPY

    assert backend.namespace_for_device("cpu").__name__.endswith("numpy")
    if CUPY is None:
        with pytest.raises(RuntimeError, match="device 'gpu'"):
            backend.namespace_for_device("gpu")
    else:
        assert "cupy" in backend.namespace_for_device("gpu").__name__
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.namespace_for_device("tpu")
