"""Shared fixtures: the ``xp`` namespace fixture and the hypothesis profiles.

``xp`` runs each test under NumPy and array_api_strict always, and under CuPy only when
it imports and sees a CUDA device.  Hypothesis: the "default" profile is deterministic
(derandomize, no deadline) so CI is stable; ``REFDIFF_HYPOTHESIS_PROFILE=thorough`` runs
many more random examples.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile(os.environ.get("REFDIFF_HYPOTHESIS_PROFILE", "default"))


def _cupy_or_reason():
    try:
        import cupy  # noqa: F401

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError, or CUDA runtime errors without a driver
        return None, f"CuPy unavailable: {type(e).__name__}: {e}"
    if n < 1:
        return None, "CuPy imported but no CUDA device is visible"
    return cupy, ""


CUPY, CUPY_REASON = _cupy_or_reason()


def _namespaces():
    import array_api_strict

    params = [pytest.param(np, id="numpy"), pytest.param(array_api_strict, id="strict")]
    if CUPY is not None:
        params.append(pytest.param(CUPY, id="cupy", marks=pytest.mark.gpu))
    return params


@pytest.fixture(params=_namespaces())
def xp(request):
    """The array namespace a test runs under (numpy, array_api_strict, or cupy)."""
    return request.param


@pytest.fixture
def gpu_xp():
    """CuPy, or a skip that names why there is none."""
    if CUPY is None:
        pytest.skip(CUPY_REASON)
    return CUPY


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and CUPY is None:
            item.add_marker(pytest.mark.skip(reason=CUPY_REASON))
