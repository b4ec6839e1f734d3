"""Test helpers shared across the suite: namespace-aware comparison and hypothesis
strategies for schedules, timesteps and shapes."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import refdiff
from refdiff.backend import array_namespace, to_numpy


def asx(xp, a, dtype=None):
    """Host data as an array of namespace ``xp`` (float64 unless ``dtype``)."""
    a = np.asarray(a)
    if dtype is None:
        dtype = xp.float64 if a.dtype.kind == "f" else (xp.int64 if a.dtype.kind in "iu" else None)
    return xp.asarray(a, dtype=dtype)


def same_namespace(xp, arr) -> bool:
    """True when ``arr`` belongs to namespace ``xp`` (NumPy compat wrapper counts as numpy)."""
    ns = array_namespace(arr).__name__
    return ns.split(".")[-1] == xp.__name__.split(".")[-1]


def assert_close(actual, expected, *, xp=None, rtol=1e-12, atol=0.0, err_msg=""):
    """Assert ``actual`` equals ``expected`` within tolerance and, when ``xp`` is given,
    that ``actual`` is an array of namespace ``xp`` (no silent trip through NumPy)."""
    if xp is not None:
        assert same_namespace(xp, actual), (
            f"result is in namespace {array_namespace(actual).__name__}, expected {xp.__name__}"
        )
    a = to_numpy(actual) if not isinstance(actual, (float, int)) else np.asarray(actual)
    e = to_numpy(expected) if not isinstance(expected, (float, int, np.ndarray)) else np.asarray(expected)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=err_msg)


# ---------------------------------------------------------------- hypothesis strategies
@st.composite
def schedules(draw, min_T=2, max_T=200, kinds=("linear", "scaled_linear", "cosine", "sigmoid"), zero_terminal=False):
    """A Schedule of a random kind and length; linear kinds get random valid endpoints."""
    kind = draw(st.sampled_from(kinds))
    T = draw(st.integers(min_T, max_T))
    params = {}
    if kind in ("linear", "scaled_linear", "sigmoid"):
        b0 = draw(st.floats(1e-5, 1e-2))
        b1 = draw(st.floats(b0 * 1.01, 0.05))
        params = {"beta_start": b0, "beta_end": b1}
    zt = draw(st.booleans()) if zero_terminal else False
    return refdiff.make_schedule(kind, T, zero_terminal_snr=zt, **params)


@st.composite
def schedule_and_t(draw, **kw):
    s = draw(schedules(**kw))
    return s, draw(st.integers(0, s.T - 1))


def shapes(min_batch=1, max_batch=4, max_extra_dims=3, max_side=5):
    """Array shapes (N, ...) with 0..max_extra_dims trailing dims."""
    return st.tuples(
        st.integers(min_batch, max_batch),
        st.lists(st.integers(1, max_side), min_size=0, max_size=max_extra_dims),
    ).map(lambda p: (p[0], *p[1]))


# ---------------------------------------------------------------- convergence orders
def fitted_order(ns, errs):
    """Least-squares slope of log(error) against log(steps), negated: the measured order."""
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def exact_ode(oracle, vp, x, t_from, t_to):
    """The exact probability-flow ODE map of a Gaussian ``oracle`` between two times of the
    continuous schedule ``vp`` (MATH.md (6.13)): the reference trajectory for order tests."""
    a0, s0 = float(vp.alpha(np.array(t_from))), float(vp.sigma(np.array(t_from)))
    a1, s1 = float(vp.alpha(np.array(t_to))), float(vp.sigma(np.array(t_to)))
    return oracle.ode_transport(x, a0, s0, a1, s1)
