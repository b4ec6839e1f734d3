"""The checker's report for a verifier who implements part of a case or gets it slightly
wrong: per-output selection and the PARTIAL status, the first diverging step of a
trajectory, near-miss output names, a float32 hint, coordinates stated per output, and the
n = 48 "trailing" grid in the suite."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from refdiff.cli import main
from refdiff.vectors import ORACLE_MEAN, ORACLE_VAR, check_suite, format_report, write_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    write_suite(d)
    return d


def _spec(suite, case):
    return json.loads((suite / "manifest.json").read_text())["cases"][case]


def _dpmpp_2m_from_formula(x, m0, m1, a_s, s_s, a_t, s_t, lam_prev):
    """DPM-Solver++(2M) written from Lu et al. (2022), alg. 2, independently of refdiff:
    h = lambda_t - lambda_s, r = (lambda_s - lambda_prev) / h, D = (1 + 1/(2r)) m0 - m1/(2r),
    x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) D."""
    lam_s, lam_t = math.log(a_s / s_s), math.log(a_t / s_t)
    h = lam_t - lam_s
    r = (lam_s - lam_prev) / h
    D = (1 + 1 / (2 * r)) * m0 - m1 / (2 * r)
    return (s_t / s_s) * x - a_t * math.expm1(-h) * D


def test_one_solver_implemented_is_partial_and_its_output_passes(suite, tmp_path, capsys):
    """A verifier who wrote only DPM-Solver++(2M) (from the paper's formula, not refdiff)
    gets PARTIAL for ode_steps, PASS for its output, MISSING for the others; selecting
    ``ode_steps:dpmpp_2m`` checks just that output and passes."""
    p = _spec(suite, "ode_steps")["parameters"]
    with np.load(suite / "ode_steps.npz") as f:
        x, m0, m1 = f["x"], f["m0"], f["m1"]
    out = _dpmpp_2m_from_formula(x, m0, m1, p["alpha_s"], p["sigma_s"], p["alpha_t"], p["sigma_t"], p["lambda_prev"])
    np.savez(tmp_path / "ode_steps.npz", dpmpp_2m=out)
    (r,) = check_suite(suite, tmp_path, cases=["ode_steps"])
    assert r.status == "PARTIAL"
    assert r.outputs["dpmpp_2m"].status == "PASS"
    assert {o.status for k, o in r.outputs.items() if k != "dpmpp_2m"} == {"MISSING"}
    table = format_report([r])
    assert "ode_steps:dpmpp_2m" in table and "PARTIAL" in table
    (r,) = check_suite(suite, tmp_path, cases=["ode_steps:dpmpp_2m"])
    assert r.status == "PASS" and list(r.outputs) == ["dpmpp_2m"]
    assert main(["check", str(suite), str(tmp_path), "--cases", "ode_steps:dpmpp_2m"]) == 0
    assert main(["check", str(suite), str(tmp_path), "--cases", "ode_steps"]) == 1  # partial is not a pass
    with pytest.raises(ValueError, match="match no output"):
        check_suite(suite, tmp_path, cases=["ode_steps:nosuch"])


def _ddim_on_oracle(x, ts, late_from=None):
    """Deterministic DDIM (eta = 0) on the suite's oracle model, written from the formulas:
    eps_hat = sigma (x - alpha mu) / (alpha^2 var + sigma^2); x0_hat = (x - sigma eps_hat) / alpha;
    x_prev = alpha_prev x0_hat + sigma_prev eps_hat.  ``late_from``: from that step on, the
    model is called with the previous step's timestep (a one-step-late bug)."""
    ab = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    steps = []
    for i, t in enumerate(ts):
        t_model = ts[i - 1] if late_from is not None and i >= late_from else t
        a, s = math.sqrt(ab[t_model]), math.sqrt(1 - ab[t_model])
        eps = s * (x - a * ORACLE_MEAN) / (a * a * ORACLE_VAR + s * s)
        a_t, s_t = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        x0 = (x - s_t * eps) / a_t
        ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
        steps.append(x)
    return np.stack(steps), x


def test_one_step_late_error_names_the_step(suite, tmp_path):
    """The independent DDIM above passes trajectory_ddim; the same code with the model
    called one step late from step 4 fails it, and the report names step 4 as the first
    diverging step of x_steps."""
    with np.load(suite / "trajectory_ddim.npz") as f:
        x_T, ts = f["x_T"], f["timesteps"]
    good, x0 = _ddim_on_oracle(x_T, ts)
    np.savez(tmp_path / "trajectory_ddim.npz", x_steps=good, x0=x0)
    (r,) = check_suite(suite, tmp_path, cases=["trajectory_ddim"])
    assert r.status == "PASS", r.notes
    bad, x0 = _ddim_on_oracle(x_T, ts, late_from=4)
    np.savez(tmp_path / "trajectory_ddim.npz", x_steps=bad, x0=x0)
    (r,) = check_suite(suite, tmp_path, cases=["trajectory_ddim"])
    assert r.status == "FAIL"
    assert r.outputs["x_steps"].first_bad == 4
    assert "first diverging step 4" in format_report([r])


def test_near_miss_names_are_suggested(suite, tmp_path):
    """``eta0.0`` for ``eta0`` (and ``ddim_stp`` for the case ``ddim_step``) are named as near misses."""
    with np.load(suite / "ddim_step.npz") as f:
        outs = {k: f[k] for k in _spec(suite, "ddim_step")["outputs"]}
    outs["eta0.0"] = outs.pop("eta0")
    np.savez(tmp_path / "ddim_step.npz", **outs)
    (r,) = check_suite(suite, tmp_path, cases=["ddim_step"])
    assert r.status == "PARTIAL" and "'eta0.0': a near miss" in r.notes[0]
    (tmp_path / "ddim_step.npz").rename(tmp_path / "ddim_stp.npz")
    (r,) = check_suite(suite, tmp_path, cases=["ddim_step"])
    assert r.status == "MISSING" and "'ddim_stp': a near miss" in r.notes[0]


def test_float32_results_get_a_dtype_hint(suite, tmp_path):
    """float32 results fail the float64 tolerances with a hint; at tol_factor 1e5 they pass."""
    with np.load(suite / "q_sample.npz") as f:
        outs = {k: f[k].astype(np.float32) for k in _spec(suite, "q_sample")["outputs"]}
    np.savez(tmp_path / "q_sample.npz", **outs)
    (r,) = check_suite(suite, tmp_path, cases=["q_sample"])
    assert r.status == "FAIL" and any("float32" in n and "--tol-factor 1e5" in n for n in r.notes)
    (r,) = check_suite(suite, tmp_path, cases=["q_sample"], tol_factor=1e5)
    assert r.status == "PASS"


def test_coordinates_are_stated_per_output(suite):
    """ode_steps says, per output, which space its shared input x is in: sigma space for
    the Euler steps, VP for the DPM-Solver ones; trajectories say axis 0 of x_steps is the step."""
    spec = _spec(suite, "ode_steps")
    assert set(spec["output_notes"]) == set(spec["outputs"])
    assert "sigma-space" in spec["output_notes"]["euler"] and "VP state" in spec["output_notes"]["dpmpp_2m"]
    assert _spec(suite, "trajectory_ddpm")["output_axis0"] == {"x_steps": "step"}


def test_suite_holds_the_n48_trailing_grid(suite):
    """timesteps_trailing holds T = 1000, n = 48, where the library's float arange and
    exact rounding part (MATH.md (2.9)): at k = 3, T (n - k) / n = 937.5 exactly, which half
    to even rounds to 938, giving timestep 937; the float arange holds 937.4999999999999,
    which rounds to 937, giving 936.  The suite follows the library."""
    with np.load(suite / "timesteps_trailing.npz") as f:
        ts = f["T1000_n48"]
    assert len(ts) == 48 and ts[0] == 999
    exact = [round(Fraction(1000 * (48 - k), 48)) - 1 for k in range(48)]
    assert ts[3] == 936 and exact[3] == 937
