"""Reference vectors: export a versioned suite of inputs and outputs, and check another
implementation's outputs against it.  The file layout is documented in docs/verifying.md.

``write_suite(out)`` writes one ``<case>.npz`` per case (inputs and outputs as named
float64 / int64 arrays) and ``manifest.json``: the suite version, refdiff's version, the
conventions (0-based timesteps, which end of continuous time is data, the oracle model
used by the sampler trajectories), and per case the function, its parameters, the input
and output names, their dtypes and shapes, and the tolerance (rtol, atol) with its
justification.  ``check_suite(suite, results)`` reads ``results/<case>.npz`` holding the
output names and compares elementwise: an element passes when
``|actual - expected| <= atol + rtol * |expected|`` (non-finite expected values, such as
the log-SNR -inf at zero terminal SNR, must be matched exactly).

Sampler trajectories use a fixed analytic model that any verifier can write in a few
lines: the exact epsilon-prediction of Gaussian data N(mu, diag(var)) on the path
x_t = alpha_t x_0 + sigma_t eps,

    eps_hat(x_t) = sigma_t (x_t - alpha_t mu) / (alpha_t^2 var + sigma_t^2),

with (alpha_t, sigma_t) from the time the sampler passes to the model (integer index t:
sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t); fractional index tau: DPM-Solver's
interpolation, log alpha linear in (tau + 1)/T between the knots k = 0..T-1 at (k+1)/T,
MATH.md (2.15); continuous VP time t in (0, 1]: the VP's alpha(t), sigma(t)).  The noise
a stochastic sampler draws is stored in the case: ``noise[k]`` is its k-th draw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__

__all__ = ["SUITE_VERSION", "Case", "CaseResult", "OutputResult", "build_cases", "write_suite", "check_suite", "format_report",
           "oracle_eps_model", "ORACLE_MEAN", "ORACLE_VAR"]

SUITE_VERSION = 1
ORACLE_MEAN = np.array([0.5, -1.0, 0.0])
ORACLE_VAR = np.array([0.25, 2.0, 1.0])

# Tolerances, each with the reason it is what it is.
EXACT = (0.0, 0.0, "integer output: must match exactly")
ALGEBRA = (1e-10, 1e-12, "float64 closed-form algebra of O(1) values: correct implementations with another "
           "operation order agree to ~1e-15 relative; 1e-10 leaves room for 1 - alpha_bar computed as "
           "1 - cumprod (relative error ~1e-16 / (1 - alpha_bar), ~1e-12 at t = 0) and for library "
           "differences in expm1/log1p/cos")
SPECIAL = (1e-9, 1e-12, "float64 with special functions (log Phi, exp, log): library implementations "
           "of log_ndtr/erfc agree to ~1e-14 relative; margin for log-space vs direct differences")
TRAJECTORY = (1e-8, 1e-10, "float64 round-off accumulated over <= 40 model calls; x0 = (x - sigma eps) / alpha "
              "amplifies errors by up to 1/alpha_{T-1} ~ 160 (linear schedule) at the first step")


@dataclass
class Case:
    """One reference case: ``inputs`` and ``outputs`` are {name: host array}.

    Parameters
    ----------
    name, function, description : str
        The case's name, the refdiff function(s) it exercises, and what its outputs are.
    parameters : dict
        Scalar parameters (written to the manifest).
    inputs, outputs : dict of numpy arrays
        Named arrays.
    tolerance : tuple
        (rtol, atol, justification).
    output_notes : dict
        Per output, how it reads the shared inputs (coordinates).
    output_axis0 : dict
        Per output, what its axis 0 counts (e.g. "step").
    """

    name: str
    function: str
    description: str
    parameters: dict
    inputs: dict
    outputs: dict
    tolerance: tuple = ALGEBRA
    output_notes: dict = field(default_factory=dict)  # {output: how it reads the inputs (coordinates)}
    output_axis0: dict = field(default_factory=dict)  # {output: what its axis 0 counts, e.g. "step"}

    def manifest_entry(self) -> dict:
        """
        The case's entry of ``manifest.json``.

        Returns
        -------
        dict
        """
        rtol, atol, why = self.tolerance
        arrays = {**self.inputs, **self.outputs}
        entry = {
            "function": self.function, "description": self.description, "parameters": self.parameters,
            "inputs": list(self.inputs), "outputs": list(self.outputs),
            "dtype": {k: str(v.dtype) for k, v in arrays.items()},
            "shape": {k: list(v.shape) for k, v in arrays.items()},
            "rtol": rtol, "atol": atol, "tolerance_justification": why,
        }
        if self.output_notes:
            entry["output_notes"] = dict(self.output_notes)
        if self.output_axis0:
            entry["output_axis0"] = dict(self.output_axis0)
        return entry


def _f64(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def _np(a):
    from .backend import to_numpy

    return np.ascontiguousarray(to_numpy(a))


# ---------------------------------------------------------------------------- schedules and grids
def _schedule_cases():
    from .schedules import karras_sigmas, make_schedule, time_grid, timesteps, LinearVP, InterpolatedVP

    cases = []
    attrs = ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars",
             "sigmas", "log_snr", "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
             "posterior_mean_coef2")
    for kind in ("linear", "scaled_linear", "cosine", "sigmoid"):
        for zt in (False, True):
            s = make_schedule(kind, 1000, zero_terminal_snr=zt)
            name = f"schedule_{kind}" + ("_zero_terminal_snr" if zt else "")
            cases.append(Case(name, "refdiff.make_schedule", f"{kind} schedule, T = 1000, default parameters"
                              + (", rescaled to zero terminal SNR (Lin et al. 2023)" if zt else "")
                              + "; 0-based arrays, alpha_bars_prev[0] = 1",
                              {"kind": kind, "T": 1000, "zero_terminal_snr": zt}, {},
                              {a: _f64(getattr(s, a)) for a in attrs}))
    # (1000, 48): the "trailing" grid where the library's float arange and exact rounding differ (MATH.md (2.9))
    grids = [(1000, 10), (1000, 50), (1000, 7), (1000, 1000), (20, 3), (10, 4), (13, 5), (1000, 48)]
    for spacing in ("linspace", "leading", "trailing"):
        outs = {f"T{T}_n{n}": timesteps(T, n, spacing) for T, n in grids}
        if spacing == "leading":
            outs["T1000_n10_offset1"] = timesteps(1000, 10, spacing, steps_offset=1)
        cases.append(Case(f"timesteps_{spacing}", "refdiff.timesteps", f"decreasing integer grids, spacing "
                          f"{spacing!r}, rounding half to even; output 'T<T>_n<n>' is timesteps(T, n)",
                          {"spacing": spacing, "grids": grids}, {}, {k: v.astype(np.int64) for k, v in outs.items()},
                          EXACT))
    vp = LinearVP()
    ivp = InterpolatedVP(make_schedule("linear", 1000))
    for kind in ("logSNR", "time_uniform", "time_quadratic"):
        cases.append(Case(f"time_grid_{kind}", "refdiff.time_grid", f"11 decreasing continuous times (n = 10) "
                          f"of kind {kind!r} from t = 1 (noise) to t_min (t = 0 is data); 'linear_vp': LinearVP("
                          f"beta_0=0.1, beta_1=20, t_min=1e-3); 'interpolated_vp': DPM-Solver's view of the linear "
                          f"T = 1000 schedule (t_min = 1/T)", {"kind": kind, "n": 10}, {},
                          {"linear_vp": _f64(time_grid(vp, 10, kind)), "interpolated_vp": _f64(time_grid(ivp, 10, kind))}))
    cases.append(Case("karras_sigmas", "refdiff.karras_sigmas", "Karras et al. (2022) noise levels, decreasing",
                      {"rho7": {"n": 10, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0},
                       "rho1": {"n": 5, "sigma_min": 0.1, "sigma_max": 10.0, "rho": 1.0}}, {},
                      {"rho7": _f64(karras_sigmas(10, 0.002, 80.0, 7.0)), "rho1": _f64(karras_sigmas(5, 0.1, 10.0, 1.0))}))
    return cases


# ---------------------------------------------------------------------------- forward, conversions, ELBO
def _forward_cases(rng):
    from .forward import q_posterior_mean_variance, q_sample
    from .parameterization import convert, edm_preconditioning, v_from_eps_x0
    from .schedules import make_schedule

    s = make_schedule("linear", 1000)
    sched = {"kind": "linear", "T": 1000}
    x0, noise = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    t = np.array([0, 1, 10, 500, 998, 999], dtype=np.int64)
    x_t = _np(q_sample(s, x0, t, noise))
    cases = [Case("q_sample", "refdiff.q_sample", "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, "
                  "per-sample 0-based t", {"schedule": sched}, {"x0": x0, "t": t, "noise": noise}, {"x_t": x_t})]
    mean, var, logvar = (_np(a) for a in q_posterior_mean_variance(s, x0, x_t, t))
    cases.append(Case("q_posterior", "refdiff.q_posterior_mean_variance", "posterior q(x_{t-1} | x_t, x_0); variance "
                      "and log variance broadcast to (N, 1); at t = 0 the variance is 0 and its log is clipped to "
                      "log(posterior_variance[1])", {"schedule": sched}, {"x0": x0, "x_t": x_t, "t": t},
                      {"mean": mean, "variance": _f64(np.broadcast_to(var, (6, 1))),
                       "log_variance_clipped": _f64(np.broadcast_to(logvar, (6, 1)))}))
    alpha, sigma = s.sqrt_alpha_bars[t], s.sqrt_one_minus_alpha_bars[t]
    eps = noise
    v = _np(v_from_eps_x0(eps, x0, alpha, sigma))
    outs = {"v": v}
    for src, val in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
        for dst in ("epsilon", "sample", "v_prediction", "score"):
            if src != dst:
                outs[f"{src}_to_{dst}"] = _np(convert(val, x_t, alpha, sigma, src, dst))
    cases.append(Case("parameterization", "refdiff.convert", "v = alpha eps - sigma x0; output '<a>_to_<b>' converts the "
                      "true value of prediction a at (x_t, alpha, sigma) to prediction b (score = -eps / sigma)",
                      {}, {"x_t": x_t, "x0": x0, "eps": eps, "alpha": _f64(alpha), "sigma": _f64(sigma)}, outs))
    sig = np.array([0.002, 0.1, 0.5, 1.0, 80.0])
    c = [_np(a) for a in edm_preconditioning(sig, 0.5)]
    cases.append(Case("edm_preconditioning", "refdiff.edm_preconditioning", "EDM c_skip, c_out, c_in, c_noise",
                      {"sigma_data": 0.5}, {"sigma": sig}, dict(zip(("c_skip", "c_out", "c_in", "c_noise"), c))))
    return cases


def _elbo_cases(rng):
    from . import elbo
    from .forward import q_sample
    from .schedules import make_schedule

    cases = []
    m1, m2 = rng.standard_normal(8), rng.standard_normal(8)
    lv1, lv2 = rng.uniform(-3, 1, 8), rng.uniform(-3, 1, 8)
    cases.append(Case("normal_kl", "refdiff.normal_kl", "KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, nats",
                      {}, {"mean1": m1, "logvar1": lv1, "mean2": m2, "logvar2": lv2},
                      {"kl": _np(elbo.normal_kl(m1, lv1, m2, lv2))}, SPECIAL))
    k = np.array([0, 1, 7, 100, 127, 128, 200, 254, 255, 255])
    x = k / 127.5 - 1.0
    mean = np.clip(x + rng.normal(0, 0.05, x.shape), -1.2, 1.2)
    log_scale = rng.uniform(-4.0, -1.5, x.shape)
    for cdf in ("exact", "tanh"):
        why = SPECIAL if cdf == "exact" else (1e-9, 1e-12, "float64 tanh approximation of Phi, clamped at 1e-12 "
                                              "before the log as in the DDPM code release")
        cases.append(Case(f"discretized_gaussian_ll_{cdf}", "refdiff.discretized_gaussian_log_likelihood",
                          f"log P(x) of N(mean, exp(log_scale)^2) discretized to 256 levels in [-1, 1] (edge bins to "
                          f"+-inf), cdf={cdf!r}", {"bins": 256, "cdf": cdf}, {"x": x, "mean": mean, "log_scale": log_scale},
                          {"log_likelihood": _np(elbo.discretized_gaussian_log_likelihood(x, mean, log_scale, 256, cdf))},
                          why))
    s = make_schedule("linear", 1000)
    x0 = rng.integers(0, 256, (4, 3)) / 127.5 - 1.0
    t = np.array([0, 1, 500, 999], dtype=np.int64)
    noise = rng.standard_normal((4, 3))
    x_t = _np(q_sample(s, x0, t, noise))
    eps_model = noise + 0.1 * rng.standard_normal((4, 3))
    cases.append(Case("elbo_terms", "refdiff.prior_term, refdiff.vlb_term",
                      "L_T = KL(q(x_T|x0) || N(0, I)) per sample; vlb: per sample t >= 1 the KL L_{t-1} between "
                      "q(x_{t-1}|x_t,x0) and the fixed_small reverse Gaussian from eps_model, t = 0 the discretized "
                      "decoder -log p(x0|x_1) (256 bins, exact cdf); nats summed over dimensions",
                      {"schedule": {"kind": "linear", "T": 1000}, "prediction_type": "epsilon",
                       "variance_type": "fixed_small", "bins": 256, "cdf": "exact"},
                      {"x0": x0, "x_t": x_t, "t": t, "eps_model": eps_model},
                      {"prior": _np(elbo.prior_term(s, x0)), "vlb": _np(elbo.vlb_term(s, x0, x_t, t, eps_model))},
                      SPECIAL))
    return cases


def _guidance_cases(rng):
    from .guidance import cfg_combine, rescale_guidance

    u, c = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 2, 4, 4))
    g = _np(cfg_combine(u, c, 3.0, "w"))
    outs = {"cfg_w3": g, "cfg_1pw2": _np(cfg_combine(u, c, 2.0, "1+w")), "cfg_w0": _np(cfg_combine(u, c, 0.0, "w")),
            "rescaled_phi0.7": _np(rescale_guidance(g, c, 0.7))}
    return [Case("guidance", "refdiff.cfg_combine, refdiff.rescale_guidance",
                 "classifier-free guidance: 'cfg_w3' = u + 3 (c - u); 'cfg_1pw2' = 3 c - 2 u (the '1+w' convention, "
                 "w' = 2: the same number); 'cfg_w0' = u; 'rescaled_phi0.7' = 0.7 g std(c)/std(g) + 0.3 g with "
                 "g = cfg_w3 and per-sample std over all non-batch entries",
                 {}, {"out_uncond": u, "out_cond": c}, outs)]


# ---------------------------------------------------------------------------- sampler steps
_SIGMA_SPACE = ("input x is the sigma-space state (x_vp / alpha_s) at sigma = sigma_s / alpha_s; the output is the "
                "sigma-space state at sigma_t / alpha_t; m0 is x0_hat")
_VP_SPACE = "input x is the VP state at (alpha_s, sigma_s); the output is the VP state at (alpha_t, sigma_t)"
_ODE_STEP_COORDINATES = {
    "euler": _SIGMA_SPACE, "euler_ancestral": _SIGMA_SPACE + "; noise is the ancestral draw (eta = 1)",
    "dpm_solver_1": _VP_SPACE + "; m0 is eps_hat",
    "dpmpp_1": _VP_SPACE + "; m0 is x0_hat",
    "dpmpp_2m": _VP_SPACE + "; m0 is x0_hat at lambda_s, m1 at lambda_prev",
    "dpmpp_3m": _VP_SPACE + "; m0, m1, m2 are x0_hat at lambda_s, lambda_prev, lambda_prev2; exact D2",
    "dpmpp_3m_published": _VP_SPACE + "; as dpmpp_3m with the published D2 (MATH.md (10.13))",
    "dpmpp_2m_sde": _VP_SPACE + "; m0 at lambda_s, m1 at lambda_prev are x0_hat; noise is the step's draw",
}


def _step_cases(rng):
    from .samplers import ddim_step, ddpm_step, dpm_solver as D, karras as K
    from .schedules import make_schedule

    s = make_schedule("linear", 1000)
    sched = {"kind": "linear", "T": 1000}
    N = 4
    x_t, out, z = (rng.standard_normal((N, 3)) for _ in range(3))
    t = np.array([0, 1, 500, 999], dtype=np.int64)
    cases = []
    outs = {vt: _np(ddpm_step(s, out, t, x_t, z, variance_type=vt)) for vt in ("fixed_small", "fixed_large")}
    cases.append(Case("ddpm_step", "refdiff.ddpm_step", "one ancestral step per sample at 0-based t (no noise added "
                      "at t = 0), epsilon prediction; outputs per variance_type", {"schedule": sched},
                      {"x_t": x_t, "model_output": out, "t": t, "noise": z}, outs))
    tp = np.array([-1, 0, 400, 899], dtype=np.int64)
    outs = {"eta0": _np(ddim_step(s, out, t, tp, x_t)), "eta0.5": _np(ddim_step(s, out, t, tp, x_t, eta=0.5, noise=z)),
            "eta1": _np(ddim_step(s, out, t, tp, x_t, eta=1.0, noise=z))}
    cases.append(Case("ddim_step", "refdiff.ddim_step", "one DDIM step t -> t_prev per sample (t_prev = -1: "
                      "alpha_bar_prev = 1), epsilon prediction; outputs per eta", {"schedule": sched},
                      {"x_t": x_t, "model_output": out, "t": t, "t_prev": tp, "noise": z}, outs))
    a_s, s_s, a_t, s_t, lam_p = 0.3, math.sqrt(1 - 0.09), 0.6, 0.8, math.log(0.2 / math.sqrt(1 - 0.04))
    lam_pp = math.log(0.1 / math.sqrt(1 - 0.01))
    m0, m1, m2 = out, rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    sig, sig_next = s_s / a_s, s_t / a_t
    outs = {
        "euler": K.euler_step(x_t, sig, sig_next, m0),
        "euler_ancestral": K.euler_ancestral_step(x_t, sig, sig_next, m0, z),
        "dpm_solver_1": D.dpm_solver_1_step(x_t, m0, a_s, s_s, a_t, s_t),
        "dpmpp_1": D.dpmpp_1_step(x_t, m0, a_s, s_s, a_t, s_t),
        "dpmpp_2m": D.dpmpp_2m_update(x_t, m0, m1, lam_p, a_s, s_s, a_t, s_t),
        "dpmpp_3m": D.dpmpp_3m_update(x_t, m0, m1, m2, lam_p, lam_pp, a_s, s_s, a_t, s_t),
        "dpmpp_3m_published": D.dpmpp_3m_update(x_t, m0, m1, m2, lam_p, lam_pp, a_s, s_s, a_t, s_t, variant="published"),
        "dpmpp_2m_sde": D.dpmpp_2m_sde_update(x_t, m0, m1, lam_p, a_s, s_s, a_t, s_t, z),
    }
    cases.append(Case("ode_steps", "refdiff.samplers step functions", "one step from (alpha_s, sigma_s) to (alpha_t, "
                      "sigma_t) of each solver with given predictions: euler/euler_ancestral in sigma space "
                      "(x = x_vp / alpha, sigma = sigma_t / alpha_t; m0 is x0_hat; ancestral eta = 1); dpm_solver_1 "
                      "with m0 as eps_hat; dpmpp_* with m0 (and the earlier m1 at lambda_prev, m2 at lambda_prev2) as "
                      "x0_hat, lambda = log(alpha / sigma); dpmpp_3m 'exact' and 'published' D2",
                      {"alpha_s": a_s, "sigma_s": s_s, "alpha_t": a_t, "sigma_t": s_t, "lambda_prev": lam_p,
                       "lambda_prev2": lam_pp}, {"x": x_t, "m0": m0, "m1": m1, "m2": m2, "noise": z},
                      {k: _np(v) for k, v in outs.items()}, output_notes=_ODE_STEP_COORDINATES))
    return cases


# ---------------------------------------------------------------------------- trajectories
CONTINUOUS_METHODS = ("euler_maruyama", "pc", "pf_ode_rk4", "flow_euler", "flow_midpoint", "flow_rk4")
TRAJECTORY_VARIANTS = {"ddim_eta1": ("ddim", {"eta": 1.0}), "ddpm_fixed_large": ("ddpm", {"variance_type": "fixed_large"})}


def oracle_eps_model(schedule, mean=ORACLE_MEAN, var=ORACLE_VAR):
    """The trajectories' model: exact eps of data N(mean, diag(var)) (module docstring).

    Parameters
    ----------
    schedule : Schedule or continuous VP
        Gives alpha_t and sigma_t at the model's time argument.
    mean, var : arrays (D,)
        The Gaussian data's mean and diagonal variance.

    Returns
    -------
    callable
        ``model(x, t) -> eps_hat``.
    """
    from ._validate import check_array
    from .backend import array_namespace, asarray_like
    from .schedules import Schedule, _ContinuousVP, alpha_sigma

    if not isinstance(schedule, (Schedule, _ContinuousVP)):
        raise TypeError(f"schedule must be a Schedule or a continuous VP, got {type(schedule).__name__}")
    check_array("mean", mean, ndim=1, finite=True)
    check_array("var", var, shape=tuple(mean.shape), finite=True)
    if not bool(np.all(np.asarray(var) > 0)):
        raise ValueError("var must be positive (a diagonal variance)")

    def model(x, t):
        alpha, sigma = alpha_sigma(schedule, t, x)
        mu, v = asarray_like(mean, x, dtype=x.dtype), asarray_like(var, x, dtype=x.dtype)
        array_namespace(x)
        return sigma * (x - alpha * mu) / (alpha * alpha * v + sigma * sigma)

    return model


class _Tape:
    """A noise callable drawing from a seeded host rng and recording every draw."""

    def __init__(self, seed):
        self.rng, self.draws = np.random.default_rng(seed), []

    def __call__(self, like):
        from .backend import standard_normal

        z = standard_normal(self.rng, like.shape, like)
        self.draws.append(_np(z))
        return z


def _trajectory_cases(rng):
    from .samplers.loop import sampler_methods
    from .schedules import LinearVP, make_schedule, time_grid, timesteps

    methods = sampler_methods()
    runs = {m: (m, {}) for m in methods}
    runs.update({k: v for k, v in TRAJECTORY_VARIANTS.items() if v[0] in methods})
    s, vp = make_schedule("linear", 1000), LinearVP()
    x_T = rng.standard_normal((4, 3))
    cases = []
    for i, (name, (method, opts)) in enumerate(sorted(runs.items())):
        continuous = method in CONTINUOUS_METHODS
        sch = vp if continuous else s
        ts = time_grid(vp, 10, "time_uniform") if continuous else timesteps(1000, 10, "trailing")
        tape, steps = _Tape(1000 + i), []
        x0 = methods[method](oracle_eps_model(sch), x_T.copy(), sch, ts, prediction_type="epsilon", noise=tape,
                             callback=lambda i, t, x, x0_hat: steps.append(_np(x)), **opts)
        inputs = {"x_T": x_T, "timesteps": _f64(ts) if continuous else ts.astype(np.int64),
                  "data_mean": ORACLE_MEAN, "data_var": ORACLE_VAR}
        if tape.draws:
            inputs["noise"] = _f64(np.stack(tape.draws))  # (draws, N, D), in draw order
        sched = {"kind": "LinearVP", "beta_0": 0.1, "beta_1": 20.0, "t_min": 1e-3} if continuous else \
            {"kind": "linear", "T": 1000}
        cases.append(Case(f"trajectory_{name}", f"refdiff.sample(method={method!r})",
                          f"a whole {method} run with options {opts} from x_T at timesteps[0] on the oracle model "
                          f"(manifest 'model'), epsilon prediction; 'x_steps'[i] is the state after step i in VP "
                          f"coordinates (callback), 'x0' the result" + ("; noise[k] is the k-th draw" if tape.draws else ""),
                          {"method": method, "options": opts, "schedule": sched,
                           "grid": "time_grid(LinearVP(), 10, 'time_uniform')" if continuous
                           else "timesteps(1000, 10, 'trailing')"},
                          inputs, {"x_steps": _f64(np.stack(steps)), "x0": _np(x0)}, TRAJECTORY,
                          output_notes={"x_steps": "VP coordinates, one row per step", "x0": "VP coordinates"},
                          output_axis0={"x_steps": "step"}))
    return cases


# ---------------------------------------------------------------------------- fast generation (MATH.md ch. 18)
def _fastgen_cases(rng):
    from . import consistency as C, distill as Dl, flow_matching as F
    from .oracles import GaussianData
    from .samplers.lcm import lcm_boundary, lcm_timesteps

    cases = []
    sig = _f64([0.002, 0.01, 0.1, 0.5, 1.0, 5.0, 80.0])
    b, e, l1 = C.cm_scalings(sig), C.cm_scalings(sig, form="edm"), C.cm_scalings(sig, form="lcm")
    cases.append(Case("cm_scalings", "refdiff.consistency.cm_scalings, cm_noise_input",
                      "consistency-function scalings, sigma_data 0.5: 'boundary' (the consistency-models release, "
                      "sigma_min 0.002: c_skip = 1, c_out = 0 at sigma_min), 'edm', and the LCM form with "
                      "timestep_scaling 1 (boundary at sigma = 0, no sigma_data in c_out); c_noise = 250 log(sigma + 1e-44)",
                      {"sigma_data": 0.5, "sigma_min": 0.002}, {"sigma": sig},
                      {"boundary_c_skip": _f64(b[0]), "boundary_c_out": _f64(b[1]), "c_in": _f64(b[2]),
                       "edm_c_skip": _f64(e[0]), "edm_c_out": _f64(e[1]), "lcm1_c_skip": _f64(l1[0]),
                       "lcm1_c_out": _f64(l1[1]), "c_noise": _f64(C.cm_noise_input(sig))}, SPECIAL))
    t = np.array([0, 1, 19, 259, 999], dtype=np.int64)
    cs, co = zip(*[lcm_boundary(int(k)) for k in t])
    cases.append(Case("lcm_scalings", "refdiff.lcm_boundary", "diffusers LCMScheduler boundary scalings at discrete "
                      "timesteps (sigma_data 0.5, timestep_scaling 10)", {}, {"t": t},
                      {"c_skip": _f64(cs), "c_out": _f64(co)}))
    outs = {f"n{n}": lcm_timesteps(1000, n).astype(np.int64) for n in (1, 2, 4, 8, 26)}
    outs["n4_strength_half"] = lcm_timesteps(1000, 4, strength=0.5).astype(np.int64)
    cases.append(Case("lcm_timesteps", "refdiff.lcm_timesteps", "LCMScheduler.set_timesteps(n) grids, T = 1000, "
                      "original_inference_steps 50 (n = 26 shows the lopsided gaps of diffusers #5815)",
                      {"T": 1000, "original_inference_steps": 50}, {}, outs, EXACT))
    K, ks = 1000, np.arange(0, 1001, 100, dtype=np.int64)
    ki = np.array([0, 999, 1000, 3000, 7000, 9000, 10000], dtype=np.int64)
    cases.append(Case("cm_grid_curricula", "refdiff.consistency.cm_karras_sigmas, cm_curriculum, cm_adaptive_ema",
                      "the CM noise grid (increasing, rho 7, 0.002..80) for N = 18 and 40; the progressive N(k) "
                      "(s0 2, s1 150, K 1000) with its adaptive EMA mu(k) (mu0 0.9); iCT's doubling N(k) "
                      "(s0 10, s1 1280, K 10000)", {"K_cm": K, "K_ict": 10000}, {"k_cm": ks, "k_ict": ki},
                      {"sigmas18": C.cm_karras_sigmas(18), "sigmas40": C.cm_karras_sigmas(40),
                       "N_cm": np.array([C.cm_curriculum(int(k), K, 2, 150) for k in ks], dtype=np.int64),
                       "mu_cm": _f64([C.cm_adaptive_ema(int(k), K, 0.9, 2, 150) for k in ks]),
                       "N_ict": np.array([C.cm_curriculum(int(k), 10000, 10, 1280, "ict") for k in ki], dtype=np.int64)},
                      SPECIAL))
    s11 = C.cm_karras_sigmas(11)
    cases.append(Case("ict_noise_weights", "refdiff.consistency.ict_noise_probs, ict_loss_weights",
                      "iCT pair-index probabilities (discretised log-normal, P_mean -1.1, P_std 2) and weights "
                      "1/(sigma_{i+1} - sigma_i) on the 11-level grid", {}, {"sigmas": s11},
                      {"probs": C.ict_noise_probs(s11), "weights": C.ict_loss_weights(s11)}, SPECIAL))
    g = GaussianData(ORACLE_MEAN, ORACLE_VAR)
    taus = _f64([80.0, 5.0, 0.8, 0.1])
    x_T = ORACLE_MEAN + 80.0 * rng.standard_normal((4, 3))
    z = rng.standard_normal((3, 4, 3))
    _, traj = C.consistency_sample(lambda x, s: g.ode_transport(x, 1.0, s, 1.0, 0.002), x_T, taus, list(z))
    cases.append(Case("cm_multistep_trajectory", "refdiff.consistency.consistency_sample",
                      "multistep consistency sampling with the exact consistency function of the oracle data "
                      "(f(x, s) = mean + sqrt((var + 0.002^2)/(var + s^2)) (x - mean)), sigma_min 0.002; "
                      "x = x0 + sqrt(tau^2 - sigma_min^2) noise[j]; outputs every f", {"sigma_min": 0.002},
                      {"taus": taus, "x_T": x_T, "noise": z}, {"f_steps": _f64(np.stack(traj))}, TRAJECTORY))
    d, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    from .consistency_training import pseudo_huber, pseudo_huber_grad
    cases.append(Case("pseudo_huber", "refdiff.consistency_training.pseudo_huber, pseudo_huber_grad",
                      "sqrt(|x - y|^2 + c^2) - c per sample (c = 0.03) and its gradient in x", {"c": 0.03},
                      {"x": d, "y": y}, {"value": _f64(pseudo_huber(d, y, 0.03)),
                                         "grad": _f64(pseudo_huber_grad(d, y, 0.03))}))
    x0, eps, tt = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), _f64([0.0, 0.25, 0.7, 1.0])
    sg = np.linspace(1.0, 0.001, 8)
    cases.append(Case("flow_matching", "refdiff.flow_matching",
                      "flow-matching target and path in both conventions (t0_data: (1-t) x0 + t eps, target eps - x0; "
                      "t0_noise: t x0 + (1-t) eps, target x0 - eps), the shift s sigma/(1 + (s-1) sigma) for s = 1, 3, "
                      "Flux's exponential shift at mu(seq_len 1024), FlowMatchEuler default 28-step grids for "
                      "shift 3 with and without the diffusers #13243 double shift, the irreducible loss of the "
                      "oracle data at t", {}, {"x0": x0, "eps": eps, "t": tt, "sigma": sg},
                      {"target_t0_data": F.fm_target(x0, eps), "target_t0_noise": F.fm_target(x0, eps, "t0_noise"),
                       "x_t0_data": F.fm_interpolate(x0, eps, tt), "x_t0_noise": F.fm_interpolate(x0, eps, tt, "t0_noise"),
                       "shift1": F.flow_shift(sg, 1.0), "shift3": F.flow_shift(sg, 3.0),
                       "dynamic_shift_1024": _f64(F.flow_time_shift(sg, F.flow_dynamic_mu(1024))),
                       "euler_grid28_shift3": F.flow_match_euler_sigmas(28, 3.0),
                       "euler_grid28_shift3_double": F.flow_match_euler_sigmas(28, 3.0, double_shift=True),
                       "irreducible": _f64(F.fm_irreducible_loss(ORACLE_VAR, _f64([0.1, 0.5, 0.9])))}, SPECIAL))
    w = _f64([0.0, 1.0, 3.0, 7.5])
    cases.append(Case("guidance_scale_embedding", "refdiff.distill.guidance_scale_embedding",
                      "LCM's guidance-scale embedding, dim 256, w scaled by 1000", {"dim": 256}, {"w": w},
                      {"embedding": Dl.guidance_scale_embedding(w, 256)}, SPECIAL))
    return cases


# ---------------------------------------------------------------------------- library grids
# name -> (library configuration, loop, grid options, loop options); diffusers 0.42.1, MATH.md (2.17)
LIBRARY_RUNS = {
    **{f"euler_{sp}": ({"scheduler": "EulerDiscreteScheduler", "timestep_spacing": sp}, "euler",
                       {"scheduler": "euler", "timestep_spacing": sp}, {}) for sp in ("linspace", "leading", "trailing")},
    "euler_karras": ({"scheduler": "EulerDiscreteScheduler", "use_karras_sigmas": True}, "euler",
                     {"scheduler": "euler", "use_karras_sigmas": True}, {}),
    "dpmpp_2m_karras": ({"scheduler": "DPMSolverMultistepScheduler", "solver_order": 2, "use_karras_sigmas": True},
                        "dpmpp_2m", {"scheduler": "dpmsolver_multistep", "use_karras_sigmas": True},
                        {"lower_order_final": False}),
    "dpmpp_3m_karras": ({"scheduler": "DPMSolverMultistepScheduler", "solver_order": 3, "use_karras_sigmas": True},
                        "dpmpp_3m", {"scheduler": "dpmsolver_multistep", "use_karras_sigmas": True},
                        {"lower_order_final": False, "variant": "published"}),
    "sde_dpmpp_2m_karras": ({"scheduler": "DPMSolverMultistepScheduler", "solver_order": 2,
                             "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, "dpmpp_2m_sde",
                            {"scheduler": "dpmsolver_multistep", "use_karras_sigmas": True},
                            {"lower_order_final": False}),
    "sde_dpmpp_3m_karras": ({"scheduler": "DPMSolverMultistepScheduler", "solver_order": 3,
                             "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, "dpmpp_2m_sde",
                            {"scheduler": "dpmsolver_multistep", "use_karras_sigmas": True},
                            {"lower_order_final": False, "order": 3, "variant": "diffusers"}),
    **{f"dpmpp_singlestep_{k}": ({"scheduler": "DPMSolverSinglestepScheduler", "solver_order": k}, "dpmpp_2s",
                                 {"scheduler": "dpmsolver_singlestep"}, {"order": k, "stages": "grid"})
       for k in (2, 3)},
}


def _library_cases(rng):
    from .samplers import diffusers_init_scale, library_grid
    from .samplers.loop import sampler_methods
    from .schedules import make_schedule

    methods, s, n = sampler_methods(), make_schedule("linear", 1000), 24
    x_T = rng.standard_normal((4, 3))
    cases = []
    for i, (name, (config, method, gopts, opts)) in enumerate(LIBRARY_RUNS.items()):
        grid = library_grid(s, n, **gopts)
        if method == "euler":
            opts = {"init_scale": diffusers_init_scale(gopts.get("timestep_spacing", "linspace"))}
        tape, steps = _Tape(2000 + i), []
        x0 = methods[method](oracle_eps_model(s), x_T.copy(), s, grid, prediction_type="epsilon", noise=tape,
                             callback=lambda i, t, x, x0_hat: steps.append(_np(x)), **opts)
        inputs = {"x_T": x_T, "model_times": _f64([p.t for p in grid[:-1]]),
                  "sigmas": _f64([0.0 if p.sigma == 0 else p.sigma / p.alpha for p in grid]),
                  "data_mean": ORACLE_MEAN, "data_var": ORACLE_VAR}
        if tape.draws:
            inputs["noise"] = _f64(np.stack(tape.draws))
        cases.append(Case(f"library_{name}", f"refdiff.{method} on refdiff.library_grid",
                          f"a whole {n}-step run of diffusers 0.42.1's {config['scheduler']} ({config}) in float64 on "
                          "the linear T = 1000 schedule with the oracle model (manifest 'model'), epsilon prediction: "
                          "'model_times' are the model's timesteps, 'sigmas' the VE levels (last 0); the sigma-space "
                          "start x_T * init_noise_sigma (sqrt(s0^2 + 1) for 'leading', s0 otherwise); 'x_steps'[i] the "
                          "VP state after step i, 'x0' the result" + ("; noise[k] the k-th draw (variance_noise of "
                          "step k; the final step to sigma = 0 draws none)" if tape.draws else ""),
                          {"library": "diffusers 0.42.1", "config": config, "steps": n, "refdiff_method": method,
                           "refdiff_options": opts, "grid": f"library_grid(schedule, {n}, **{gopts})",
                           "schedule": {"kind": "linear", "T": 1000}},
                          inputs, {"x_steps": _f64(np.stack(steps)), "x0": _np(x0)}, TRAJECTORY))
    return cases


# ---------------------------------------------------------------------------- adapters (MATH.md chapter 19)
def _adapter_cases(rng):
    from .nn.controlnet import control_keep, controlnet_scales
    from .nn.lora import lora_conv_forward, lora_delta, lora_linear_forward, lora_rrr_optimum, lora_scaling
    from .nn.t2i_adapter import adapter_keep

    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    A, B = rng.standard_normal((2, 6)), rng.standard_normal((5, 2))
    s, s_rs = lora_scaling(4.0, 2), lora_scaling(4.0, 2, rslora=True)
    lin = Case("lora_linear", "refdiff.nn.lora.lora_linear_forward, lora_delta",
               "LoRA on y = x w + b (w: (d_in, d_out)), PEFT layouts A (r, d_in), B (d_out, r), alpha 4, r 2: "
               "y = x w + b + s (x A^T) B^T with s = alpha/r = 2 ('y'), rsLoRA s = alpha/sqrt(r) ('y_rslora'); "
               "'delta_w' = s (B A)^T (refdiff layout; PEFT's delta is its transpose), 'merged_w' = w + delta_w",
               {"alpha": 4.0, "r": 2}, {"x": x, "w": w, "b": b, "A": A, "B": B},
               {"y": _np(lora_linear_forward(x, w, b, A, B, s)[0]), "y_rslora": _np(lora_linear_forward(x, w, b, A, B, s_rs)[0]),
                "delta_w": _np(lora_delta(A, B, s)), "merged_w": _np(w + lora_delta(A, B, s))})
    xc, wc, bc = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    Ac, Bc = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal((4, 2, 1, 1))
    conv = Case("lora_conv", "refdiff.nn.lora.lora_conv_forward, lora_delta",
                "LoRA on a 3x3 conv (padding 1), A a 3x3 conv to r = 2 channels with the base stride and padding, "
                "B a 1x1 conv, s = 0.5: 'y_stride1', 'y_stride2'; 'delta_w'[o,i,u,v] = s sum_r B[o,r,0,0] A[r,i,u,v]",
                {"scale": 0.5, "pad": 1}, {"x": xc, "w": wc, "b": bc, "A": Ac, "B": Bc},
                {"y_stride1": _np(lora_conv_forward(xc, wc, bc, Ac, Bc, 0.5, stride=1)[0]),
                 "y_stride2": _np(lora_conv_forward(xc, wc, bc, Ac, Bc, 0.5, stride=2)[0]),
                 "delta_w": _np(lora_delta(Ac, Bc, 0.5))})
    fuse = Case("lora_fuse", "refdiff.nn.lora_model.lora_fuse, lora_unfuse",
                "diffusers fuse_lora(lora_scale=0.5) on the 'lora_linear' adapter (alpha 4, r 2): scaling becomes "
                "0.5 alpha/r = 1 and stays ('scaling_after_fuse'); 'fused_w' = w + 1 * (B A)^T; 'unfused_w' = "
                "fused_w - scaling_after_fuse (B A)^T (= w up to round-off); 'two_adapters_w' = w + 0.7 s (B A)^T "
                "+ 0.3 s2 (B2 A2)^T with s = 2, s2 = alpha2/r = 1 (set_adapters weights 0.7, 0.3)",
                {"lora_scale": 0.5, "alpha": 4.0, "r": 2, "adapter_weights": [0.7, 0.3]},
                {"w": w, "A": A, "B": B, "A2": A[::-1].copy(), "B2": B[:, ::-1].copy()},
                {"scaling_after_fuse": np.array([0.5 * s]), "fused_w": _np(w + lora_delta(A, B, 0.5 * s)),
                 "unfused_w": _np(w + lora_delta(A, B, 0.5 * s) - lora_delta(A, B, 0.5 * s)),
                 "two_adapters_w": _np(w + lora_delta(A, B, 0.7 * s) + lora_delta(A[::-1], B[:, ::-1], 0.3 * 1.0))})
    skips = rng.standard_normal((13, 2, 3))
    res = rng.standard_normal((13, 2, 3))
    d, o = controlnet_scales(13, 0.8, guess_mode=True), controlnet_scales(13, 0.8, guess_mode=True, convention="original")
    cn = Case("controlnet_scales", "refdiff.nn.controlnet.controlnet_scales, control_keep",
              "ControlNet residual scaling with K = 13 residuals (12 skips shallow to deep, then mid), "
              "conditioning_scale 0.8: guess mode diffusers 0.8 logspace(-1, 0, 13) ('guess_diffusers'), original "
              "release 0.8 * 0.825^(12 - i) ('guess_original'); 'skips_plus_res_*' = skips + s_i residual_i; keep masks "
              "keep_i = 1 - [i/N < start or (i+1)/N > end] for (N, start, end) = (10, 0.2, 0.8) and (7, 0.0, 0.5)",
              {"conditioning_scale": 0.8, "K": 13}, {"skips": skips, "residuals": res},
              {"guess_diffusers": d, "guess_original": o, "skips_plus_res_plain": skips + 0.8 * res,
               "skips_plus_res_diffusers": skips + d[:, None, None] * res,
               "skips_plus_res_original": skips + o[:, None, None] * res,
               "keep_10_0.2_0.8": control_keep(10, 0.2, 0.8), "keep_7_0_0.5": control_keep(7, 0.0, 0.5)})
    feats = rng.standard_normal((2, 3, 4, 4))
    t2i = Case("t2i_adapter_scaling", "refdiff.nn.t2i_adapter.adapter_keep, t2i_model",
               "T2I-Adapter feature scaling: residual at step i = c * [i < int(N factor)] * F with "
               "adapter_conditioning_scale c = 0.6 and factor 0.35, N = 10 ('keep', 'residual_step2', 'residual_step3')",
               {"adapter_conditioning_scale": 0.6, "adapter_conditioning_factor": 0.35, "N": 10}, {"features": feats},
               {"keep": adapter_keep(10, 0.35), "residual_step2": 0.6 * adapter_keep(10, 0.35)[2] * feats,
                "residual_step3": 0.6 * adapter_keep(10, 0.35)[3] * feats})
    Q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    Sigma1, W0 = (Q * np.array([2.0, 1.0, 0.5, 0.2])) @ Q.T, 0.3 * rng.standard_normal((4, 4))
    dW, excess, _ = lora_rrr_optimum(W0, Sigma1, 0.8, 0.6, 2)
    rrr = Case("lora_rrr_optimum", "refdiff.nn.lora.lora_rrr_optimum",
               "best rank-2 update of the linear denoiser x0_hat = x_t W (row vectors) from W0 to data N(0, Sigma1) at "
               "alpha 0.8, sigma 0.6: C = alpha^2 Sigma1 + sigma^2 I, W* = C^-1 alpha Sigma1, dW* = C^-1/2 "
               "(C^1/2 (W* - W0))_2, excess = sum of squared singular values beyond the 2nd",
               {"alpha": 0.8, "sigma": 0.6, "r": 2}, {"W0": W0, "Sigma1": Sigma1},
               {"delta_w": dW, "excess": np.array([excess])})
    return [lin, conv, fuse, cn, t2i, rrr]

# ---------------------------------------------------------------------------- library configurations (ch. 16)
def _diffusers_multistep_linspace(T, n):
    """UniPC/DEIS/DPMSolverMultistep "linspace" timesteps of diffusers 0.42.1:
    round(linspace(0, T - 1, n + 1)) reversed, without its last entry (int64)."""
    return np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)


# name -> (method, options, schedule, grid kind, n, the diffusers 0.42.1 configuration it reproduces)
NEW_LIBRARY_RUNS = {
    "unipc_bh1_order2": ("unipc", {"order": 2, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, "linear",
                         "ms", 25,
                         "UniPCMultistepScheduler(solver_type='bh1', solver_order=2, final_sigmas_type='sigma_min')"),
    "unipc_bh1_order3": ("unipc", {"order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, "linear",
                         "ms", 25,
                         "UniPCMultistepScheduler(solver_type='bh1', solver_order=3, final_sigmas_type='sigma_min')"),
    "unipc_bh2_order2": ("unipc", {"order": 2, "solver_type": "bh2"}, "linear", "ms", 25,
                         "UniPCMultistepScheduler(solver_type='bh2', solver_order=2)"),
    "unipc_bh2_order3": ("unipc", {"order": 3, "solver_type": "bh2"}, "linear", "ms", 25,
                         "UniPCMultistepScheduler(solver_type='bh2', solver_order=3)"),
    "deis_order2": ("deis", {"order": 2, "final_sigmas_type": "sigma_min"}, "linear", "ms", 25,
                    "DEISMultistepScheduler(solver_order=2)"),
    "deis_order3": ("deis", {"order": 3, "final_sigmas_type": "sigma_min"}, "linear", "ms", 25,
                    "DEISMultistepScheduler(solver_order=3)"),
    "pndm_prk": ("pndm", {"final_sigmas_type": "sigma_min"}, "linear", "leading", 25, "PNDMScheduler()"),
    "pndm_plms": ("pndm", {"skip_prk_steps": True, "final_sigmas_type": "sigma_min"}, "linear", "leading", 25,
                  "PNDMScheduler(skip_prk_steps=True)"),
    "kdpm2_ancestral": ("dpm_2_ancestral", {"interpolation": "log_sigma", "init_scale": "sigma_max"}, "linear",
                        "trailing", 25, "KDPM2AncestralDiscreteScheduler(timestep_spacing='trailing')"),
    "lcm": ("lcm", {}, "scaled_linear", "lcm", 20, "LCMScheduler(original_inference_steps=50)"),
}


def _new_library_cases(rng):
    """Whole runs in the configurations that tests/test_compare_diffusers_new.py checks against
    diffusers 0.42.1 (MATH.md chapter 16): a verifier runs the named scheduler on the same grid,
    oracle model, x_T and noise draws (in float64) and compares with 'x0'."""
    from .samplers.lcm import lcm_timesteps
    from .samplers.loop import sampler_methods
    from .schedules import make_schedule, timesteps

    methods = sampler_methods()
    x_T = rng.standard_normal((4, 3))
    cases = []
    for i, (name, (method, opts, kind, gkind, n, lib)) in enumerate(sorted(NEW_LIBRARY_RUNS.items())):
        sch = make_schedule(kind, 1000)
        ts = {"ms": lambda: _diffusers_multistep_linspace(1000, n), "lcm": lambda: lcm_timesteps(1000, n, 50)}.get(
            gkind, lambda: timesteps(1000, n, gkind))()
        tape, steps = _Tape(3000 + i), []
        x0 = methods[method](oracle_eps_model(sch), x_T.copy(), sch, ts, prediction_type="epsilon", noise=tape,
                             callback=lambda i, t, x, x0_hat: steps.append(_np(x)), **opts)
        inputs = {"x_T": x_T, "timesteps": ts.astype(np.int64), "data_mean": ORACLE_MEAN, "data_var": ORACLE_VAR}
        if tape.draws:
            inputs["noise"] = _f64(np.stack(tape.draws))
        cases.append(Case(f"library_{name}", f"refdiff.sample(method={method!r})",
                          f"the diffusers 0.42.1 configuration {lib} (float64 alphas_cumprod and sigmas, the same "
                          f"timesteps, oracle model of the manifest, epsilon prediction): a whole {method} run with "
                          f"options {opts}; 'x_steps'[i] is the state after step i in VP coordinates, 'x0' the result"
                          + ("; noise[k] is the k-th draw (diffusers: its k-th randn_tensor)" if tape.draws else ""),
                          {"method": method, "options": opts, "schedule": {"kind": kind, "T": 1000}, "library": lib},
                          inputs, {"x_steps": _f64(np.stack(steps)), "x0": _np(x0)}, TRAJECTORY))
    return cases


# ---------------------------------------------------------------------------- latent and text (MATH.md ch. 21)
def _latent_text_cases(rng):
    from .latent import scale_latents, unscale_latents
    from .nn.attention import mha_backward, mha_forward, mha_init
    from .nn.text import contrastive_loss
    from .nn.vae import diag_gaussian_nll, posterior_backward, posterior_forward

    m = rng.standard_normal((2, 3, 2, 2))
    raw = rng.uniform(-3, 3, (2, 3, 2, 2))
    raw[0, 0, 0, 0], raw[1, 2, 1, 1] = -31.5, 20.5  # clamped entries
    moments, eps = np.concatenate([m, raw], axis=1), rng.standard_normal(m.shape)
    dz, dkl = rng.standard_normal(m.shape), rng.standard_normal(2)
    z, kl, cache = posterior_forward(moments, eps)
    lv = np.clip(raw, -30.0, 20.0)
    cases = [Case("diagonal_gaussian", "refdiff.nn.vae.posterior_forward, posterior_backward, diag_gaussian_nll",
                  "encoder moments (N, 2c, H, W) = [mean, raw logvar]; 'logvar' = clamp(raw, -30, 20) (diffusers); "
                  "'sample' = mean + exp(logvar / 2) eps; 'mode' = mean; 'kl' (N,) = 0.5 sum(mean^2 + e^logvar - 1 - "
                  "logvar); 'nll' (N,) = 0.5 sum(log 2 pi + logvar + (sample - mean)^2 / e^logvar); 'dmoments' = "
                  "gradient of <sample, dz> + <kl, dkl> (zero where the clamp is active)",
                  {}, {"moments": _f64(moments), "eps": _f64(eps), "dz": _f64(dz), "dkl": _f64(dkl)},
                  {"logvar": _f64(lv), "sample": _f64(z), "mode": _f64(m), "kl": _f64(kl),
                   "nll": _f64(diag_gaussian_nll(z, m, lv)), "dmoments": _f64(posterior_backward(dz, dkl, cache))})]
    lat = 2.0 + 3.0 * rng.standard_normal((2, 4, 2, 2))
    cases.append(Case("latent_scaling", "refdiff.latent.scale_latents, unscale_latents",
                      "'ldm' = 0.18215 z (SD 1.x: shift 0); 'sd3' = 1.5305 (z - 0.0609) (SD3's scaling and shift); "
                      "'decoded_sd3' = sd3 / 1.5305 + 0.0609 (= z)",
                      {"ldm_scaling_factor": 0.18215, "sd3_scaling_factor": 1.5305, "sd3_shift": 0.0609},
                      {"z": _f64(lat)}, {"ldm": _f64(scale_latents(lat, 0.18215)),
                                         "sd3": _f64(scale_latents(lat, 1.5305, 0.0609)),
                                         "decoded_sd3": _f64(unscale_latents(scale_latents(lat, 1.5305, 0.0609),
                                                                             1.5305, 0.0609))}))
    P = {}
    mha_init(P, "attn", 4, 2, rng, context_dim=3, fused=False)
    P = {k: _f64(v + 0.1 * rng.standard_normal(v.shape)) for k, v in P.items()}
    x, ctx = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 3))
    mask = np.array([[True, True, False], [True, False, True]])
    y, c = mha_forward(P, "attn", x, ctx, heads=2, key_mask=mask)
    dy = rng.standard_normal(y.shape)
    G = {}
    dx, dctx = mha_backward(G, P, "attn", dy, c)
    cases.append(Case("cross_attention_masked", "refdiff.nn.attention.mha_forward, mha_backward",
                      "multi-head cross-attention, 2 heads (contiguous channel blocks), queries from x (N, L, 4), "
                      "keys/values from context (N, L_c, 3), key_mask (int64) 1 = attend, 0 = masked (excluded exactly); "
                      "y = softmax(Q K^T / sqrt(d)) V per head, concatenated, times out.w plus out.b; weights act "
                      "as x @ w (shape (D_in, D_out)); 'd*' are gradients of <y, dy>",
                      {"heads": 2}, {"x": _f64(x), "context": _f64(ctx), "key_mask": mask.astype(np.int64), "dy": _f64(dy), **P},
                      {"y": _f64(y), "dx": _f64(dx), "dcontext": _f64(dctx),
                       **{"d" + k: _f64(v) for k, v in G.items()}}))
    u, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, (du, dv, dlt) = contrastive_loss(u, v, 0.5)
    cases.append(Case("contrastive_loss", "refdiff.nn.text.contrastive_loss",
                      "symmetric InfoNCE (CLIP): u, v normalised to unit rows, logits = exp(log_temp) u v^T, loss = "
                      "mean of the row and column cross entropies with the diagonal as labels; gradients with "
                      "respect to the unnormalised embeddings and log_temp",
                      {"log_temp": 0.5}, {"img_emb": _f64(u), "txt_emb": _f64(v)},
                      {"loss": _f64([loss]), "dimg_emb": _f64(du), "dtxt_emb": _f64(dv), "dlog_temp": _f64([dlt])}))
    return cases


def _dit_cases(rng):
    """DiT conventions, MATH.md (20.1), (20.2), (20.4), (20.8)."""
    from .nn import dit as Dm
    from .nn.layers import patchify_forward

    cases = []
    pos = {f"D{D}_grid{g}": Dm.sincos_pos_embed_2d(D, g) for D, g in ((16, 4), (8, 2), (32, 3))}
    cases.append(Case("dit_pos_embed", "refdiff.nn.dit.sincos_pos_embed_2d",
                      "the release's fixed 2-D sin-cos table (T = grid^2, D): token k = i grid + j; channels [0, D/4) "
                      "sin(j w), [D/4, D/2) cos(j w), [D/2, 3D/4) sin(i w), [3D/4, D) cos(i w), w_m = 10000^(-m/(D/4)): "
                      "the COLUMN index j in the first half (meshgrid(grid_w, grid_h))", {}, {}, pos, SPECIAL))
    img = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    wconv = np.arange(5 * 3 * 2 * 2, dtype=np.float64).reshape(5, 3, 2, 2)
    cases.append(Case("dit_patchify", "refdiff.nn.layers.patchify_forward, refdiff.nn.dit.patch_embed_weight_from_conv",
                      "index maps: the flat NCHW index of every image entry at its (n, token, feature) place, patch 2 "
                      "(tokens raster order, features (u, v, c) with c fastest: DiT's unpatchify order), and the flat "
                      "(D, C, p, p) index of the conv patch-embedding kernel at its (p p C, D) place of the linear form",
                      {"patch": 2}, {"image_index": img, "conv_weight_index": wconv},
                      {"tokens": _np(patchify_forward(img, 2)[0]), "linear_weight": _np(Dm.patch_embed_weight_from_conv(wconv))},
                      EXACT))
    D, heads = 8, 2
    P = {}
    Dm.dit_block_init(P, "blk", D, heads, 2.0, np.random.default_rng(0))
    P = {k: 0.5 * rng.standard_normal(v.shape) for k, v in P.items()}
    x, s = rng.standard_normal((2, 4, D)), rng.standard_normal((2, D))
    out = _np(Dm.dit_block_forward(P, "blk", x, s, heads=heads)[0])
    Z = {**P, "blk.ada.w": np.zeros_like(P["blk.ada.w"]), "blk.ada.b": np.zeros_like(P["blk.ada.b"])}
    cases.append(Case("dit_block", "refdiff.nn.dit.dit_block_forward",
                      "one adaLN-Zero block, width 8, 2 heads, MLP width 16 (tanh GELU), LayerNorm without affine eps "
                      "1e-6; ada (D, 6D) chunks shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp of s W + b; "
                      "weights are (in, out) (x @ W); qkv fused (D, 3D) with q, k, v column blocks, heads contiguous. "
                      "'out_zero_ada' = the block with ada = 0 (adaLN-Zero init): the identity",
                      {"heads": heads, "ln_eps": Dm.LN_EPS}, {"x": x, "s": s, **{k.replace("blk.", ""): v for k, v in P.items()}},
                      {"out": out, "out_zero_ada": _np(Dm.dit_block_forward(Z, "blk", x, s, heads=heads)[0])}))
    u, c = rng.standard_normal((2, 8, 4, 4)), rng.standard_normal((2, 8, 4, 4))
    cases.append(Case("dit_cfg", "refdiff.nn.dit.dit_cfg",
                      "CFG of a learned-sigma DiT output (4 latent channels + 4 variance channels), scale 4: "
                      "'all' guides all 8 channels; 'latent' the 4 prediction channels (diffusers' DiTPipeline); "
                      "'release_3ch' channels 0..2 only (the release's forward_with_cfg); unguided channels = out_cond",
                      {"guidance_scale": 4.0}, {"out_uncond": u, "out_cond": c},
                      {"all": _np(Dm.dit_cfg(u, c, 4.0)), "latent": _np(Dm.dit_cfg(u, c, 4.0, 4)),
                       "release_3ch": _np(Dm.dit_cfg(u, c, 4.0, 3))}))
    return cases


def _video_cases(rng):
    from ._vectors_video import video_cases  # first-frame condition, overlap embedding, Kronecker oracle, 3-D conv

    return video_cases(rng)


# ---------------------------------------------------------------------------- suite I/O
def build_cases(seed: int = 20240601) -> list:
    """Every case of the suite, computed now (deterministic for a given ``seed``).

    Parameters
    ----------
    seed : int
        Seed of the random inputs.

    Returns
    -------
    list of Case
    """
    rng = np.random.default_rng(seed)
    return (_schedule_cases() + _forward_cases(rng) + _elbo_cases(rng) + _guidance_cases(rng) + _step_cases(rng)
            + _trajectory_cases(rng) + _library_cases(rng) + _new_library_cases(rng)
            + _fastgen_cases(np.random.default_rng([seed, 16])) + _editing_cases(rng) + _adapter_cases(rng)
            + _latent_text_cases(np.random.default_rng(seed + 21))
            + _dit_cases(np.random.default_rng([seed, 17])) + _video_cases(np.random.default_rng([seed, 22])))


def _editing_cases(rng):
    from .editing._vectors import editing_cases  # img2img, inpainting, RePaint, conditioning, moments, DDIB

    return editing_cases(rng)


CONVENTIONS = {
    "time": "discrete timesteps are 0-based: array index t is paper step t+1; alpha_bars[t] = prod_{s<=t}(1 - betas[s]); "
            "alpha_bars_prev[0] = 1",
    "continuous_time": "t in [0, 1], t = 0 is data, t = 1 noise (VP)",
    "path": "x_t = alpha_t x_0 + sigma_t eps; discrete VP: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t)",
    "fractional_index": "a float index tau of a discrete schedule means continuous time (tau + 1) / T with log alpha "
                        "piecewise linear between knots (k + 1) / T (DPM-Solver), MATH.md (2.15)",
    "schedule": "{'kind': 'linear', 'T': 1000} in a case's parameters is the DDPM schedule betas = linspace(1e-4, "
                "0.02, 1000) in float64, exported in full (with every derived array) as case 'schedule_linear'; "
                "the other kinds' default parameters: scaled_linear sqrt(beta) linear from sqrt(0.00085) to "
                "sqrt(0.012); cosine s = 0.008, max_beta = 0.999; sigmoid beta 1e-4..0.02 over sigmoid(linspace(-6, "
                "6, T)); use the exported betas when in doubt",
    "shapes": "toys (N, D), images NCHW; per-sample scalars (N,)",
    "dtype": "float64 for all real arrays, int64 for timesteps",
    "noise": "stochastic steps take noise arrays; in trajectories noise[k] is the k-th standard normal draw",
    "pass_rule": "|actual - expected| <= atol + rtol * |expected| elementwise; non-finite expected values must match exactly",
}


def write_suite(out, seed: int = 20240601) -> Path:
    """Write the suite to directory ``out`` (created); returns the manifest path.

    Parameters
    ----------
    out : path-like
        Output folder (created).
    seed : int
        Seed of the random inputs.

    Returns
    -------
    Path
        The manifest's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = build_cases(seed)
    manifest = {
        "suite_version": SUITE_VERSION, "refdiff_version": __version__, "numpy_version": np.__version__,
        "conventions": CONVENTIONS,
        "model": {"description": "exact epsilon-prediction of Gaussian data N(mean, diag(var)): eps_hat = sigma (x - "
                                 "alpha mean) / (alpha^2 var + sigma^2), alpha/sigma from the model time (conventions)",
                  "mean": ORACLE_MEAN.tolist(), "var": ORACLE_VAR.tolist()},
        "cases": {c.name: c.manifest_entry() for c in cases},
    }
    for c in cases:
        np.savez(out / f"{c.name}.npz", **c.inputs, **c.outputs)
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


# ---------------------------------------------------------------------------- checking (refdiff/checking.py)
from .checking import CaseResult, OutputResult, check_suite, format_report  # noqa: E402
