"""The orders of the new samplers as ``refdiff orders`` prints them (refdiff/samplers/orders.py
rows of MATH.md chapter 16), on the setup started where x0_hat moves (t = 0.35)."""

import pytest

from refdiff.samplers import orders as O

STEPS = (16, 32, 64, 128)
NEW = [k for k in O.SPECS if k.split("@")[0] in (
    "unip_1", "unip_2", "unip_3", "unip_3_warm_corrector", "unipc_1", "unipc_2", "unipc_3", "deis_1", "deis_2", "deis_3",
    "deis_3_singlestep", "plms", "pndm")]


@pytest.mark.parametrize("label", [k for k in NEW if not k.endswith("_rho")])
def test_new_global_orders(label):
    """MATH.md (16.3), (16.4), (16.6), (16.8), (10.17): fitted order within 0.3 of the row's
    expectation (UniP-p ~ p with UniP-3 ~ 2 from its first-order start, UniPC-1, -2 ~ p + 1,
    UniPC-3 ~ 3, DEIS-3 ~ 2 (~ 3 with warmup="singlestep"), PLMS/PNDM ~ 2 on a lambda-uniform grid)."""
    r = O.measure_orders([label], STEPS, n_samples=8)[label]
    assert abs(r["order"] - r["expected"]) < 0.3, r


@pytest.mark.parametrize("label", ["plms@start_rho", "pndm@start_rho"])
def test_plms_on_rho_uniform_grid_beats_second_order(label):
    """MATH.md (16.8): on a grid uniform in rho the Adams-Bashforth weights are exact: the fit
    is well above 2 (3.7 over 16..128 steps; asymptotically the O(h^3) warm-up caps it at 3)."""
    r = O.measure_orders([label], STEPS, n_samples=8)[label]
    assert r["order"] > 3.0, r
