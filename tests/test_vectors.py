"""Reference vectors: the suite checks itself, re-derives from first principles where the
mathematics allows, and fails (naming the case) on deliberately perturbed outputs."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest

import refdiff
from refdiff.cli import main
from refdiff.samplers.loop import sampler_methods
from refdiff.vectors import (ORACLE_MEAN, ORACLE_VAR, SUITE_VERSION, check_suite, format_report, oracle_eps_model,
                             write_suite)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    write_suite(d)
    return d


def _manifest(suite):
    return json.loads((suite / "manifest.json").read_text())


def _copy_outputs(suite, dest, edit=None):
    """refdiff's own outputs in the RESULTS layout; ``edit(case, outputs)`` may perturb them."""
    dest.mkdir(exist_ok=True)
    for name, spec in _manifest(suite)["cases"].items():
        with np.load(suite / f"{name}.npz") as f:
            outs = {k: f[k].copy() for k in spec["outputs"]}
        if edit is not None:
            edit(name, outs)
        if outs is not None:
            np.savez(dest / f"{name}.npz", **outs)
    return dest


def _status(results):
    return {r.name: r.status for r in results}


# ---------------------------------------------------------------------------- the suite itself
def test_manifest_describes_every_case(suite):
    m = _manifest(suite)
    assert m["suite_version"] == SUITE_VERSION and m["refdiff_version"] == refdiff.__version__
    assert "0-based" in m["conventions"]["time"] and "t = 0 is data" in m["conventions"]["continuous_time"]
    for name, spec in m["cases"].items():
        with np.load(suite / f"{name}.npz") as f:
            assert sorted(f.files) == sorted(spec["inputs"] + spec["outputs"]), name
            for k in f.files:
                assert str(f[k].dtype) == spec["dtype"][k] in ("float64", "int64"), (name, k)
        assert spec["outputs"] and spec["tolerance_justification"], name
        assert spec["rtol"] >= 0 and spec["atol"] >= 0


def test_every_sampler_has_a_trajectory_case(suite):
    cases = _manifest(suite)["cases"]
    for method in sampler_methods():
        assert f"trajectory_{method}" in cases, method
    stochastic = [n for n, c in cases.items() if n.startswith("trajectory_") and "noise" in c["inputs"]]
    assert {"trajectory_ddpm", "trajectory_euler_ancestral", "trajectory_ddim_eta1"} <= set(stochastic)


def test_self_check_passes(suite, tmp_path, capsys):
    res = check_suite(suite, _copy_outputs(suite, tmp_path / "r"))
    assert all(r.status == "PASS" and r.max_abs == 0.0 for r in res)
    assert main(["check", str(suite), str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"{len(res)} of {len(res)} cases passed" in out


def test_suite_is_deterministic(suite, tmp_path):
    """A second export (same seed) passes the check against the first bit for bit."""
    write_suite(tmp_path / "again")
    res = check_suite(suite, tmp_path / "again")
    assert all(r.status == "PASS" and r.max_abs == 0.0 for r in res)


# ---------------------------------------------------------------------------- re-derivations
def test_oracle_model_is_the_gaussian_oracle():
    """The trajectories' model (module docstring formula) against refdiff.GaussianData's
    posterior-mean eps, MATH.md (6.4), at integer, fractional and continuous times: two
    independent derivations of E[eps | x_t], float64 round-off (1e-12)."""
    sched = refdiff.make_schedule("linear", 1000)
    g = refdiff.GaussianData(ORACLE_MEAN, ORACLE_VAR)
    x = np.random.default_rng(0).standard_normal((5, 3)) * 2
    for t in (np.array([0, 3, 500, 998, 999]), np.array([0.5, 10.25, 400.75, 998.5, 998.9])):
        np.testing.assert_allclose(oracle_eps_model(sched)(x, t), g.as_model(sched)(x, t), rtol=1e-12, atol=1e-14)
    vp = refdiff.LinearVP()
    t = np.array([0.01, 0.2, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(oracle_eps_model(vp)(x, t), g.as_model(vp)(x, t), rtol=1e-12, atol=1e-14)


def test_vectors_match_first_principles(suite):
    """Outputs re-derived without refdiff: alpha_bar as a cumulative product of the stored
    betas (MATH.md (2.3)); q_sample's closed form (2.4); the trailing grid by hand
    (T = 10, n = 4: round(10 - 2.5 k) - 1 with halves to even = 9, 7, 4, 1); the two CFG
    conventions giving the same number (12.3); the ODE identities DDIM(eta=0) = Euler in sigma
    space = DPM-Solver-1 (MATH.md (9.3), (10.4)) on whole trajectories.  Tolerances:
    float64 round-off, 1e-12 (trajectories: 1e-10 over 10 steps)."""
    ld = lambda n: np.load(suite / f"{n}.npz")  # noqa: E731
    s = ld("schedule_linear")
    ab = np.cumprod(1.0 - s["betas"])
    np.testing.assert_allclose(s["alpha_bars"], ab, rtol=1e-12)
    np.testing.assert_allclose(s["betas"], np.linspace(1e-4, 0.02, 1000), rtol=1e-14)
    q = ld("q_sample")
    a = ab[q["t"]][:, None]
    np.testing.assert_allclose(q["x_t"], np.sqrt(a) * q["x0"] + np.sqrt(1 - a) * q["noise"], rtol=1e-12, atol=1e-14)
    hand = [round(Fraction(10) - Fraction(5, 2) * k) - 1 for k in range(4)]
    assert hand == [9, 7, 4, 1]
    np.testing.assert_array_equal(ld("timesteps_trailing")["T10_n4"], hand)
    g = ld("guidance")
    np.testing.assert_allclose(g["cfg_w3"], g["cfg_1pw2"], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(g["cfg_w0"], g["out_uncond"])
    ddim = ld("trajectory_ddim")["x0"]
    for other in ("trajectory_euler", "trajectory_dpm_solver_1"):
        np.testing.assert_allclose(ld(other)["x0"], ddim, rtol=1e-10, atol=1e-12)
    z = ld("schedule_linear_zero_terminal_snr")
    assert z["alpha_bars"][-1] == 0.0 and z["log_snr"][-1] == -np.inf


# ---------------------------------------------------------------------------- perturbations
def test_flipped_sign_fails_and_names_the_case(suite, tmp_path, capsys):
    def edit(name, outs):
        if name == "parameterization":
            outs["v"][2, 1] = -outs["v"][2, 1]

    res = check_suite(suite, _copy_outputs(suite, tmp_path / "r", edit))
    st = _status(res)
    assert st["parameterization"] == "FAIL" and sum(v != "PASS" for v in st.values()) == 1
    assert main(["check", str(suite), str(tmp_path / "r")]) == 1
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("parameterization "))
    assert "FAIL" in line and "v:" in line


def test_timestep_shifted_by_one_fails(suite, tmp_path):
    def edit(name, outs):
        if name == "timesteps_leading":
            outs["T1000_n10"] = outs["T1000_n10"] + 1  # the steps_offset=1 grid instead

    st = _status(check_suite(suite, _copy_outputs(suite, tmp_path / "r", edit)))
    assert st["timesteps_leading"] == "FAIL" and sum(v != "PASS" for v in st.values()) == 1


def test_noise_on_the_final_step_fails(suite, tmp_path, capsys):
    """Noise of 1e-6 on the last step of a trajectory: far below what a plot shows, far above
    the 1e-8 relative tolerance; a tolerance factor of 1e5 (float32 mode) accepts it."""
    rng = np.random.default_rng(0)

    def edit(name, outs):
        if name == "trajectory_dpmpp_2m":
            z = 1e-6 * rng.standard_normal(outs["x0"].shape)
            outs["x0"] += z
            outs["x_steps"][-1] += z

    r = _copy_outputs(suite, tmp_path / "r", edit)
    st = _status(check_suite(suite, r))
    assert st["trajectory_dpmpp_2m"] == "FAIL" and sum(v != "PASS" for v in st.values()) == 1
    assert main(["check", str(suite), str(r)]) == 1
    assert "trajectory_dpmpp_2m" in capsys.readouterr().out
    assert all(v == "PASS" for v in _status(check_suite(suite, r, tol_factor=1e5)).values())


def test_missing_case_missing_output_wrong_shape_and_nonfinite(suite, tmp_path, capsys):
    def edit(name, outs):
        if name == "q_posterior":
            del outs["variance"]
        if name == "karras_sigmas":
            outs["rho7"] = outs["rho7"][:-1]
        if name == "schedule_cosine_zero_terminal_snr":
            outs["log_snr"][-1] = -1e300  # finite where -inf is expected

    r = _copy_outputs(suite, tmp_path / "r", edit)
    (r / "normal_kl.npz").unlink()
    res = {x.name: x for x in check_suite(suite, r)}
    assert res["normal_kl"].status == "MISSING"
    assert res["q_posterior"].status == "PARTIAL" and "MISSING" in res["q_posterior"].notes[0]
    assert res["karras_sigmas"].status == "FAIL" and "shape" in res["karras_sigmas"].notes[0]
    assert res["schedule_cosine_zero_terminal_snr"].status == "FAIL"
    assert sum(x.status != "PASS" for x in res.values()) == 4
    table = format_report(list(res.values()))
    assert "normal_kl" in table and "MISSING" in table and "1 missing" in table and "1 partial" in table
    assert main(["check", str(suite), str(r)]) == 1


def test_check_errors(suite, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        check_suite(tmp_path, tmp_path)
    with pytest.raises(FileNotFoundError, match="results directory"):
        check_suite(suite, tmp_path / "nope")
    with pytest.raises(ValueError, match="tol_factor"):
        check_suite(suite, tmp_path, tol_factor=0)
    bad = tmp_path / "bad"
    shutil.copytree(suite, bad)
    m = _manifest(bad)
    m["suite_version"] = 999
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="suite_version 999"):
        check_suite(bad, tmp_path)
    assert main(["check", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "suite_version 999" in err


def test_case_selection(suite, tmp_path, capsys):
    r = _copy_outputs(suite, tmp_path / "r")
    (r / "normal_kl.npz").unlink()
    assert [x.name for x in check_suite(suite, r, cases=["schedule_linear", "q_*"])] == [
        "schedule_linear", "q_sample", "q_posterior"]
    assert main(["check", str(suite), str(r), "--cases", "schedule_*"]) == 0
    with pytest.raises(ValueError, match="matches no case"):
        check_suite(suite, r, cases=["nosuch*"])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_worked_example_passes(suite, tmp_path, backend):
    """examples/verify_other_framework.py re-implements six cases from the formulas alone
    (no refdiff import) and passes `refdiff check` on them."""
    if backend == "torch":
        pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "verify_other_framework.py"
    spec = importlib.util.spec_from_file_location("verify_other_framework", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--suite", str(suite), "--out", str(tmp_path), "--backend", backend]) == 0
    assert sorted(p.stem for p in (tmp_path / "results").glob("*.npz")) == sorted(mod.CASES)


def test_manifest_states_the_schedule_it_names(suite):
    """The manifest's 'schedule' convention says {'kind': 'linear', 'T': 1000} is
    linspace(1e-4, 0.02, 1000): true of the exported schedule_linear betas (float64
    linspace, exact up to one rounding, rtol 1e-15)."""
    assert "linspace(1e-4" in _manifest(suite)["conventions"]["schedule"]
    with np.load(suite / "schedule_linear.npz") as z:
        np.testing.assert_allclose(z["betas"], np.linspace(1e-4, 0.02, 1000), rtol=1e-15, atol=0)


def test_unreadable_result_is_a_one_line_failure(suite, tmp_path):
    """A results file that is not a .npz fails its case with a plain reason (no advice to
    unpickle it)."""
    (tmp_path / "q_sample.npz").write_text("garbage")
    (r,) = check_suite(suite, tmp_path, cases=["q_sample"])
    assert r.status == "FAIL" and "not a .npz of numeric arrays" in r.notes[0] and "pickle" not in r.notes[0]


def test_video_first_frame_case_drops_the_condition_exactly(suite):
    """MATH.md (22.11): the first-frame condition enters only through the channels m c and m,
    so a clip with keep m = 0 gives exactly the output of no first frame at all, while a kept
    first frame changes the output (the case's 'y' against 'y_dropped')."""
    v = np.load(suite / "video_first_frame.npz")
    np.testing.assert_array_equal(v["y"][1], v["y_dropped"][1])
    assert np.max(np.abs(v["y"][0] - v["y_dropped"][0])) > 1e-3
    assert v["y"].shape == v["x"].shape


def test_video_overlap_embedding_case_is_the_window_sum(suite):
    """MATH.md (22.14): the reference tokens of the overlapping patch embedding equal the
    window sum over each patch's (p + 2m)^2 neighbourhood written out pixel by pixel here
    (zero outside the frame), to 1e-12; the manifest states patch and margin."""
    v = np.load(suite / "video_overlap_embedding.npz")
    case = _manifest(suite)["cases"]["video_overlap_embedding"]
    p, m = case["parameters"]["patch"], case["parameters"]["overlap"]
    x, w, b = v["frames"], v["in_w"], v["in_b"]
    N, C, H, _ = x.shape
    k, g = p + 2 * m, H // p
    want = np.zeros(v["tokens"].shape)
    for n in range(N):
        for i in range(g):
            for j in range(g):
                acc = b.copy()
                for c in range(C):
                    for u in range(k):
                        for q in range(k):
                            r, s_ = p * i - m + u, p * j - m + q
                            if 0 <= r < H and 0 <= s_ < H:
                                acc = acc + w[(c * k + u) * k + q] * x[n, c, r, s_]
                want[n, i * g + j] = acc
    np.testing.assert_allclose(v["tokens"], want, rtol=0, atol=1e-12)


def test_video_kronecker_oracle_case_against_dense_gaussian(suite):
    """MATH.md (22.1), MATH.md (22.5), MATH.md (22.6): the Kronecker oracle's reference
    outputs against the dense 24-dimensional Gaussian built here from the manifest's
    parameters alone: Sigma = kron(K_T, S) with K_T = rho^|f-g| and the squared-exponential
    S written out pixel by pixel; by the direct solve
    E[eps | x_t] = sigma (alpha^2 Sigma + sigma^2 I)^-1 x_t and
    E[x0 | x_t] = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 x_t (zero mean); the frame
    conditionals by the dense Schur complement Sigma_BB - Sigma_BA Sigma_AA^-1 Sigma_AB, which
    must factor as K_cond (x) S, and mean Sigma_BA Sigma_AA^-1 x_A; each to 1e-10."""
    v = np.load(suite / "video_kronecker_oracle.npz")
    prm = _manifest(suite)["cases"]["video_kronecker_oracle"]["parameters"]
    T, (H, W), rho = prm["frames"], prm["frame_shape"], prm["rho"]
    ell, var, nug = prm["length_scale"], prm["variance"], prm["nugget"]
    P = H * W
    K = np.array([[rho ** abs(f - g) for g in range(T)] for f in range(T)])
    r = [(i, j) for i in range(H) for j in range(W)]
    S = np.array([[var * np.exp(-((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / (2 * ell ** 2)) + nug * (a == b)
                   for b in r] for a in r])
    Sig = np.kron(K, S)
    ab = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[v["t"]]
    for n in range(len(v["t"])):
        al, sg = np.sqrt(ab[n]), np.sqrt(1.0 - ab[n])
        x = v["x_t"][n].reshape(-1)
        y = np.linalg.solve(al ** 2 * Sig + sg ** 2 * np.eye(T * P), x)
        np.testing.assert_allclose(v["eps"][n].reshape(-1), sg * y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v["x0_mean"][n].reshape(-1), al * Sig @ y, rtol=1e-10, atol=1e-12)
    for key, A, xa in (("first", [0], v["x_first"]), ("first_last", [0, T - 1], v["x_ends"])):
        ia = np.concatenate([np.arange(f * P, (f + 1) * P) for f in A])
        B = [f for f in range(T) if f not in A]
        ib = np.concatenate([np.arange(f * P, (f + 1) * P) for f in B])
        G = Sig[np.ix_(ib, ia)] @ np.linalg.inv(Sig[np.ix_(ia, ia)])
        cov = Sig[np.ix_(ib, ib)] - G @ Sig[np.ix_(ia, ib)]
        np.testing.assert_allclose(v[f"{key}_mean"].reshape(-1), G @ xa.reshape(-1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.kron(v[f"{key}_time_cov"], S), cov, rtol=1e-10, atol=1e-12)


def test_video_conv3d_case_is_the_space_time_sum(suite):
    """MATH.md (22.16): the reference output of the video U-Net's 3-D convolution equals the
    3x3x3 sum over (frame offset, row offset, column offset) written out here with zero
    frames outside each clip and zero pixels outside each frame, to 1e-12."""
    v = np.load(suite / "video_conv3d.npz")
    T = _manifest(suite)["cases"]["video_conv3d"]["parameters"]["frames"]
    x, w, b = v["x"], v["w"], v["b"]
    NT, C, H, W = x.shape
    F = w.shape[0]
    want = np.zeros((NT, F, H, W))
    for r in range(NT):
        n, f = divmod(r, T)
        for o in range(F):
            acc = np.full((H, W), b[o])
            for d in (-1, 0, 1):
                if not 0 <= f + d < T:
                    continue
                src = x[n * T + f + d]
                pad = np.pad(src, ((0, 0), (1, 1), (1, 1)))
                for c in range(C):
                    for u in range(3):
                        for q in range(3):
                            acc = acc + w[o, (d + 1) * C + c, u, q] * pad[c, u:u + H, q:q + W]
            want[r, o] = acc
    np.testing.assert_allclose(v["y"], want, rtol=0, atol=1e-12)
