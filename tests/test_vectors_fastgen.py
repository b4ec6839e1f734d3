"""The fast-generation reference vectors re-derived from first principles (MATH.md chapter 18)."""

import math

import numpy as np
import pytest

from refdiff.vectors import ORACLE_MEAN, ORACLE_VAR, build_cases


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in build_cases()}


def test_lcm_timesteps_as_measured_in_diffusers(cases):
    """MATH.md (16.18) grids as listed in the research notes from diffusers' LCMScheduler (N = 1, 2,
    4, 8; strength 0.5) and the rule for N = 26: entries floor(k 50/26) of 999, 979, ..., 19."""
    o = cases["lcm_timesteps"].outputs
    assert list(o["n1"]) == [999] and list(o["n2"]) == [999, 499]
    assert list(o["n4"]) == [999, 759, 499, 259] and list(o["n8"]) == [999, 879, 759, 639, 499, 379, 259, 139]
    assert list(o["n4_strength_half"]) == [499, 379, 259, 139]
    origin = [999 - 20 * j for j in range(50)]
    assert list(o["n26"]) == [origin[int(math.floor(k * 50 / 26))] for k in range(26)]


def test_cm_scalings_and_curricula_vectors(cases):
    """MATH.md (18.1): boundary c_skip = 1, c_out = 0 at sigma_min; (18.2) LCM form c_skip + c_out^2 = 1;
    MATH.md (18.3) grid ends; MATH.md (18.4) N_cm(K) = s1 + 1, N_ict doubling; MATH.md (18.5) mu(K) = mu0^(s0/s1);
    MATH.md (18.6) probabilities sum to 1; MATH.md (18.7) weights = 1/gap."""
    o = cases["cm_scalings"].outputs
    assert o["boundary_c_skip"][0] == 1.0 and o["boundary_c_out"][0] == 0.0
    np.testing.assert_allclose(o["lcm1_c_skip"] + o["lcm1_c_out"] ** 2, 1.0, atol=1e-15)
    c = cases["cm_grid_curricula"].outputs
    assert c["sigmas18"][0] == 0.002 and c["sigmas40"][-1] == 80.0
    assert c["N_cm"][-1] == 151 and c["mu_cm"][-1] == pytest.approx(0.9 ** (2 / 150), rel=1e-14)
    # K = 10000: log2 floor(1280/10) + 1 = 8 stages of K' = 1250 updates; N doubles from 11 at each stage
    assert list(c["N_ict"]) == [min(10 * 2 ** (k // 1250), 1280) + 1 for k in (0, 999, 1000, 3000, 7000, 9000, 10000)]
    w = cases["ict_noise_weights"]
    assert w.outputs["probs"].sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(w.outputs["weights"] * np.diff(w.inputs["sigmas"]), 1.0, rtol=1e-14)


def test_trajectory_and_flow_vectors(cases):
    """MATH.md (18.10): each stored f equals the hand-written exact consistency function (18.8) of the
    oracle data applied to x0 + sqrt(tau^2 - smin^2) noise.  MATH.md (18.15) targets, MATH.md (18.18) shift,
    MATH.md (18.20) grids, MATH.md (18.21) irreducible loss by hand formulas; MATH.md (18.26) embedding at w = 0."""
    c = cases["cm_multistep_trajectory"]
    taus, x, z, f = c.inputs["taus"], c.inputs["x_T"], c.inputs["noise"], c.outputs["f_steps"]
    fs = lambda y, s: ORACLE_MEAN + np.sqrt((ORACLE_VAR + 0.002 ** 2) / (ORACLE_VAR + s * s)) * (y - ORACLE_MEAN)
    x0 = fs(x, taus[0])
    np.testing.assert_allclose(f[0], x0, rtol=1e-12, atol=1e-12)
    for j in range(1, len(taus)):
        x0 = fs(x0 + math.sqrt(taus[j] ** 2 - 0.002 ** 2) * z[j - 1], taus[j])
        np.testing.assert_allclose(f[j], x0, rtol=1e-12, atol=1e-12)
    fm = cases["flow_matching"]
    x0, e, t, sg = (fm.inputs[k] for k in ("x0", "eps", "t", "sigma"))
    o = fm.outputs
    np.testing.assert_array_equal(o["target_t0_data"], -o["target_t0_noise"])
    np.testing.assert_allclose(o["x_t0_noise"], t[:, None] * x0 + (1 - t[:, None]) * e, rtol=1e-15)
    np.testing.assert_allclose(o["shift3"], 3 * sg / (1 + 2 * sg), rtol=1e-15)
    np.testing.assert_array_equal(o["shift1"], sg)
    np.testing.assert_allclose(o["euler_grid28_shift3_double"][-2], 9e-3 / 1.008, rtol=1e-13)
    tt = np.array([0.1, 0.5, 0.9])[:, None]
    np.testing.assert_allclose(o["irreducible"], np.sum(ORACLE_VAR / ((1 - tt) ** 2 * ORACLE_VAR + tt ** 2), 1),
                               rtol=1e-14)
    emb = cases["guidance_scale_embedding"].outputs["embedding"]
    np.testing.assert_array_equal(emb[0], np.r_[np.zeros(128), np.ones(128)])
