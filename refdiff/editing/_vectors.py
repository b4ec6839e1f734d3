"""Reference-vector cases of the editing chapter (MATH.md chapter 17), added to the suite
by :func:`refdiff.vectors.build_cases`: img2img timesteps (with the int() truncation
cases), start noising, img2img / inpainting / RePaint trajectories with stored noise, the
RePaint jump schedule, conditional Gaussians and mixtures, exact output moments and DDIB."""

from __future__ import annotations

import numpy as np

MU2 = np.array([0.5, -0.3])
SIG2 = np.array([[1.0, 0.9], [0.9, 1.0]])
CORR_MODEL = ("exact eps of the correlated Gaussian N(mu, Sigma), mu = (0.5, -0.3), Sigma = [[1, 0.9], [0.9, 1]]: "
              "eps_hat = sigma (alpha^2 Sigma + sigma^2 I)^-1 (x - alpha mu)")


def _timestep_cases(Case, EXACT):
    from ..schedules import timesteps
    from .img2img import img2img_timesteps

    cases = []
    strengths = (0.0, 0.15, 0.29, 0.3, 0.57, 0.75, 0.999, 1.0)
    for spacing, offset in (("leading", 1), ("trailing", 0), ("linspace", 0)):
        outs = {}
        for n in (1, 7, 10, 50, 100) + (() if offset else (1000,)):
            ts = timesteps(1000, n, spacing, offset)
            for s in strengths:
                tail, t_start = img2img_timesteps(ts, s)
                key = f"n{n}_s{s:g}"
                outs[key + "_tail"] = tail.astype(np.int64)
                outs[key + "_t_start"] = np.array([t_start], dtype=np.int64)
        cases.append(Case(f"img2img_timesteps_{spacing}", "refdiff.img2img_timesteps",
                          f"the library strength rule on timesteps(1000, n, {spacing!r}"
                          + (", steps_offset=1)" if offset else ")") + ": k = min(int(n * strength), n) with int() of "
                          "the float64 product (100 * 0.29 -> 28 steps, 1000 * 0.57 -> 570; n = 1000 not with the offset), t_start = n - k, tail = "
                          "timesteps[t_start:] (may be empty); outputs 'n<n>_s<strength>_tail' and '_t_start'",
                          {"T": 1000, "spacing": spacing, "steps_offset": offset, "strengths": list(strengths)},
                          {}, outs, EXACT))
    return cases


class _Tape:
    def __init__(self, seed):
        self.rng, self.draws = np.random.default_rng(seed), []

    def __call__(self, like):
        z = self.rng.standard_normal(like.shape)
        self.draws.append(z)
        return z


def _run_cases(Case, TRAJECTORY, ALGEBRA, rng):
    from ..oracles import GaussianData
    from ..schedules import make_schedule, timesteps
    from .img2img import img2img, img2img_start
    from .inpaint import inpaint, repaint_schedule

    s = make_schedule("linear", 1000)
    sched = {"kind": "linear", "T": 1000}
    cases = []
    x0, eps = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    a, sg = float(s.sqrt_alpha_bars[600]), float(s.sqrt_one_minus_alpha_bars[600])
    cases.append(Case("img2img_start", "refdiff.img2img_start", "the noised start at timestep 600 of the linear "
                      "schedule in three coordinate systems: vp alpha x0 + sigma eps; ve x0 + (sigma / alpha) eps; "
                      "flow (1 - u) x0 + u eps with u = sigma / (alpha + sigma)", {"schedule": sched, "t": 600},
                      {"x0": x0, "noise": eps, "alpha": np.array([a]), "sigma": np.array([sg])},
                      {sp: img2img_start(x0, a, sg, eps, sp) for sp in ("vp", "ve", "flow")}))
    model = GaussianData(MU2, SIG2).as_model(s)
    ts = timesteps(1000, 10, "trailing")
    x_in = np.tile(np.array([1.5, 0.0]), (4, 1))
    runs = {
        "sdedit_trajectory_ddim": (lambda nz: img2img(model, x_in, s, ts, 0.6, "ddim", noise=nz), "img2img, DDIM, strength 0.6"),
        "sdedit_trajectory_ddpm": (lambda nz: img2img(model, x_in, s, ts, 0.6, "ddpm", noise=nz), "img2img, DDPM, strength 0.6"),
        "sdedit_trajectory_euler": (lambda nz: img2img(model, x_in, s, ts, 0.6, "euler", noise=nz), "img2img, Euler, strength 0.6"),
        "inpaint_replace_fresh": (lambda nz: inpaint(model, x_in, np.array([0.0, 1.0]), s, ts, "ddpm", noise=nz),
                                  "replacement inpainting of x_1 (mask (0, 1), 1 = generate), DDPM, fresh noise"),
        "inpaint_replace_reuse": (lambda nz: inpaint(model, x_in, np.array([0.0, 1.0]), s, ts, "ddpm", noise=nz,
                                                     noise_mode="reuse"),
                                  "replacement inpainting, DDPM, the initial noise re-used for the known region"),
        "inpaint_repaint": (lambda nz: inpaint(model, x_in, np.array([0.0, 1.0]), s, ts, noise=nz, scheme="repaint",
                                               jump_length=3, jump_n_sample=2),
                            "RePaint on the respaced 10-step chain, jump_length 3, jump_n_sample 2"),
    }
    for i, (name, (run, what)) in enumerate(runs.items()):
        tape = _Tape(2000 + i)
        out = run(tape)
        cases.append(Case(name, "refdiff.img2img" if name.startswith("sdedit") else "refdiff.inpaint",
                          f"{what} on timesteps(1000, 10, 'trailing') with the model: {CORR_MODEL}; noise[k] is the k-th "
                          "standard normal draw (the start noise first, then in the order the docstring states)",
                          {"schedule": sched, "grid": "timesteps(1000, 10, 'trailing')"},
                          {"x_in": x_in, "noise": np.stack(tape.draws), "data_mean": MU2, "data_cov": SIG2},
                          {"x": np.asarray(out, dtype=np.float64)}, TRAJECTORY))
    outs = {f"n{n}_j{j}_r{r}": np.array(repaint_schedule(n, j, r), dtype=np.int64)
            for n, j, r in ((250, 10, 10), (50, 5, 3), (20, 1, 2))}
    cases.append(Case("repaint_schedule", "refdiff.repaint_schedule", "RePaint's jump schedule over respaced indices "
                      "n-1 ... -1 (-1 the data end); output 'n<n>_j<jump_length>_r<jump_n_sample>'", {}, {}, outs,
                      (0.0, 0.0, "integer output: must match exactly")))
    return cases


def _exact_cases(Case, ALGEBRA, rng):
    from ..conditioning import condition_gaussian, condition_mixture
    from ..moments import affine_moments, sdedit_limits
    from ..oracles import GaussianData
    from ..schedules import make_schedule, timesteps
    from .img2img import img2img
    from .inpaint import inpaint
    from .inversion import whitening_colouring

    cases = []
    D = 4
    A = rng.standard_normal((D, D))
    Sig = A @ A.T / D + 0.5 * np.eye(D)
    mu, H, c = rng.standard_normal(D), rng.standard_normal((2, D)), rng.standard_normal(2)
    m_c, S_c = condition_gaussian(mu, Sig, H, c, 0.1)
    cases.append(Case("conditional_gaussian", "refdiff.GaussianData.condition", "N(mean, cov) given c = H x0 + "
                      "N(0, noise_var I), MATH.md (17.1)", {"noise_var": 0.1}, {"mean": mu, "cov": Sig, "H": H, "c": c},
                      {"mean_c": m_c, "cov_c": S_c}))
    covs = np.stack([Sig, 0.5 * Sig + 0.2 * np.eye(D), np.eye(D)])
    means = np.stack([mu, -mu, np.zeros(D)])
    w = np.array([0.5, 0.3, 0.2])
    wc, mc, cc = condition_mixture(w, means, covs, H, c, 0.1)
    cases.append(Case("conditional_mixture", "refdiff.GaussianMixture.condition", "a 3-component mixture given c, "
                      "MATH.md (17.2): weights w_k N(c; H mu_k, H Sigma_k H^T + R) normalised, components by (17.1)",
                      {"noise_var": 0.1}, {"weights": w, "means": means, "covs": covs, "H": H, "c": c},
                      {"weights_c": wc, "means_c": mc, "covs_c": cc}))
    s = make_schedule("linear", 1000)
    model = GaussianData(MU2, SIG2).as_model(s)
    ts = timesteps(1000, 10, "trailing")
    xk = np.array([1.5, 0.0])
    pipes = {
        "img2img_ddim_s0.6": lambda x, nz: img2img(model, x, s, ts, 0.6, "ddim", noise=nz),
        "img2img_ddpm_s0.6": lambda x, nz: img2img(model, x, s, ts, 0.6, "ddpm", noise=nz),
        "replace_fresh": lambda x, nz: inpaint(model, x, np.array([0.0, 1.0]), s, ts, "ddpm", noise=nz),
        "replace_reuse": lambda x, nz: inpaint(model, x, np.array([0.0, 1.0]), s, ts, "ddpm", noise=nz, noise_mode="reuse"),
        "repaint_j3_r2": lambda x, nz: inpaint(model, x, np.array([0.0, 1.0]), s, ts, noise=nz, scheme="repaint",
                                               jump_length=3, jump_n_sample=2),
    }
    outs = {}
    for k, p in pipes.items():
        outs[k + "_mean"], outs[k + "_cov"] = affine_moments(p, xk)
    p0 = ts[ts.size - int(10 * 0.6)]
    a, sg = float(s.sqrt_alpha_bars[p0]), float(s.sqrt_one_minus_alpha_bars[p0])
    for kind in ("ode", "sde"):
        outs[f"limit_{kind}_mean"], outs[f"limit_{kind}_cov"] = sdedit_limits(MU2, SIG2, xk, a, sg, kind)
    cases.append(Case("exact_moments", "refdiff.affine_moments", f"exact output mean and covariance for the input "
                      f"x_in = (1.5, 0) under the model: {CORR_MODEL}, grid timesteps(1000, 10, 'trailing'): img2img "
                      "(strength 0.6, start at timestep " + str(int(p0)) + ") with DDIM / DDPM, replacement inpainting of "
                      "x_1 fresh / re-used noise, RePaint (3, 2); and the ODE / SDE limits (17.8) from that start",
                      {"schedule": {"kind": "linear", "T": 1000}}, {"x_in": xk, "data_mean": MU2, "data_cov": SIG2},
                      outs, (1e-9, 1e-12, "float64, affine maps composed over <= 40 steps")))
    cb = covs[1]
    xa = rng.standard_normal((3, D))
    cases.append(Case("ddib_gaussian", "refdiff.whitening_colouring", "the exact DDIB map between Gaussian domains, "
                      "mu_B + Sigma_B^1/2 Sigma_A^-1/2 (x - mu_A), symmetric square roots, MATH.md (17.10)", {},
                      {"x": xa, "mean_a": mu, "cov_a": Sig, "mean_b": -mu, "cov_b": cb},
                      {"x_b": whitening_colouring(xa, mu, Sig, -mu, cb)}))
    return cases


def editing_cases(rng):
    """Every editing case (the tolerances and Case class of :mod:`refdiff.vectors`)."""
    from ..vectors import ALGEBRA, EXACT, TRAJECTORY, Case

    return _timestep_cases(Case, EXACT) + _run_cases(Case, TRAJECTORY, ALGEBRA, rng) + _exact_cases(Case, ALGEBRA, rng)
