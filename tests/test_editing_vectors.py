"""The editing cases of the reference vectors (refdiff/editing/_vectors.py): a planted
off-by-one in the strength rule fails by name, and the stored numbers re-derive from
first principles."""

import numpy as np
import pytest

import refdiff
import sys

import refdiff.editing  # noqa: F401
from refdiff.editing._vectors import MU2, SIG2, _timestep_cases
from refdiff.vectors import EXACT, Case, check_suite, write_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    write_suite(d)
    return d


def test_planted_off_by_one_in_the_strength_rule_fails_by_name(suite, tmp_path, monkeypatch):
    """MATH.md (17.3): an implementation that runs round(n * strength) steps (the decimal intent) passes most entries but
    fails exactly the img2img_timesteps cases, named; the true rule passes."""
    img2img_mod = sys.modules["refdiff.editing.img2img"]  # the module (the package's name is the function)
    real = img2img_mod.img2img_timesteps

    def planted(timesteps, strength, *, order=1):
        ts = np.asarray(timesteps)
        n = ts.shape[0]
        k = min(int(round(n * strength)), n)
        return ts[n - k:], n - k

    for rule, want in ((real, "PASS"), (planted, "FAIL")):
        monkeypatch.setattr(img2img_mod, "img2img_timesteps", rule)
        out = tmp_path / want
        out.mkdir()
        for case in _timestep_cases(Case, EXACT):
            np.savez(out / f"{case.name}.npz", **case.outputs)
        res = check_suite(suite, out, cases=["img2img_timesteps_*"])
        assert {r.name for r in res} == {"img2img_timesteps_leading", "img2img_timesteps_trailing",
                                         "img2img_timesteps_linspace"}
        assert all(r.status == want for r in res), [(r.name, r.status) for r in res]


def test_editing_vectors_from_first_principles(suite):
    """MATH.md (17.3), (17.6), (17.8): the stored tails are the last int(n s) timesteps (100 * 0.29 -> 28); RePaint (250, 10, 10)
    has 2410 reverse steps; the DDPM img2img mean is mu + G (x_in - mu) at the start; the conditional Gaussian satisfies the
    information form."""
    with np.load(suite / "img2img_timesteps_leading.npz") as f:
        assert f["n100_s0.29_tail"].size == 28 and f["n100_s0.29_t_start"][0] == 72
        assert f["n50_s1_tail"][0] == 981 and f["n10_s0_tail"].size == 0
    with np.load(suite / "repaint_schedule.npz") as f:
        assert int((np.diff(f["n250_j10_r10"]) < 0).sum()) == 2410
    with np.load(suite / "exact_moments.npz") as f:
        s = refdiff.make_schedule("linear", 1000)
        t0 = refdiff.timesteps(1000, 10, "trailing")[4]  # k = int(10 * 0.6) = 6 steps from index 4
        ab = float(s.alpha_bars[t0])
        G = ab * SIG2 @ np.linalg.inv(ab * SIG2 + (1 - ab) * np.eye(2))
        np.testing.assert_allclose(f["img2img_ddpm_s0.6_mean"], MU2 + G @ (np.array([1.5, 0.0]) - MU2), atol=1e-12)
    import json

    spec = json.loads((suite / "manifest.json").read_text())["cases"]["conditional_gaussian"]
    r = spec["parameters"]["noise_var"]
    with np.load(suite / "conditional_gaussian.npz") as f:
        Sig, H, c, mu = f["cov"], f["H"], f["c"], f["mean"]
        C = np.linalg.inv(np.linalg.inv(Sig) + H.T @ H / r)
        np.testing.assert_allclose(f["cov_c"], C, atol=1e-12)
        np.testing.assert_allclose(f["mean_c"], C @ (np.linalg.solve(Sig, mu) + H.T @ c / r), atol=1e-12)
