"""Score-SDE samplers (Song et al. 2021) on VP schedules, MATH.md chapter 11.

Continuous time t in (0, 1], t = 0 data, t = 1 noise.  The forward VP SDE is
dx = f(t) x dt + g(t) dw with f = d log alpha / dt and g^2 = beta(t) = -2 f (MATH.md (2.14));
the model gives the score through s = -eps_hat / sigma_t, MATH.md (4.5).

* ``euler_maruyama``: Euler-Maruyama on the reverse SDE, MATH.md (11.1)-(11.2);
* ``pc``: predictor-corrector, the Euler-Maruyama predictor and the Langevin corrector
  with its signal-to-noise step size, MATH.md (11.3)-(11.4);
* ``pf_ode_rk4``: the probability-flow ODE, MATH.md (11.5), with classical fixed-step
  Runge-Kutta 4, MATH.md (11.6).

A discrete :class:`~refdiff.Schedule` is handled through :class:`~refdiff.InterpolatedVP`
(index k at t = (k + 1) / T); after its last grid index a final Tweedie step returns the
model's x0_hat (sigma = 0), as DDIM's t_prev = -1.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import array_namespace, bcast, check_finite
from ..schedules import InterpolatedVP
from .common import predict_eps_x0
from .dpm_solver import _Axis, _grid_values

__all__ = [
    "euler_maruyama_step",
    "langevin_step_size",
    "langevin_corrector_step",
    "pf_ode_drift",
    "rk4_step",
    "euler_maruyama",
    "pc",
    "pf_ode_rk4",
]


# ----------------------------------------------------------------------------- steps
def euler_maruyama_step(x, score, f, g2, dt, noise=None):
    """One Euler-Maruyama step of the reverse VP SDE from t to t - dt (dt > 0), MATH.md (11.2):
    x_{t-dt} = x_t - (f x_t - g^2 score) dt + sqrt(g^2 dt) z.

    ``f``, ``g2`` are f(t), g(t)^2 at the start of the step (floats); ``noise`` is z (shape of
    x) or None for the mean of the step only."""
    f, g2, dt = float(f), float(g2), float(dt)
    if not dt > 0:
        raise ValueError(f"dt = {dt!r} must be > 0 (a reverse-time step)")
    mean = x - (f * x - g2 * score) * dt
    return mean if noise is None else mean + math.sqrt(g2 * dt) * noise


def _norms(a):
    xp = array_namespace(a)
    return xp.sqrt(xp.sum(xp.reshape(a * a, (a.shape[0], -1)), axis=1))  # (N, ...) -> (N,)


def langevin_step_size(score, noise, snr, alpha_i=1.0, norm="sample"):
    """The Langevin corrector's step size of Song et al. (2021, Alg. 5), MATH.md (11.4):
    epsilon = 2 alpha_i (snr ||z|| / ||score||)^2.

    ``norm="sample"`` (the paper): norms per sample, a (N,) array; ``norm="batch"`` (the code
    release): the batch means of the per-sample norms, one scalar for the whole batch.
    ``alpha_i`` is the release's 1 - beta_i factor (default 1)."""
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr = {snr!r} must be finite and > 0")
    gn, zn = _norms(score), _norms(noise)
    if norm == "batch":
        xp = array_namespace(score)
        gn, zn = xp.mean(gn), xp.mean(zn)
    elif norm != "sample":
        raise ValueError(f"unknown norm {norm!r}; valid: 'sample' (the paper), 'batch' (the code release)")
    return 2.0 * float(alpha_i) * (snr * zn / gn) ** 2


def langevin_corrector_step(x, score, step_size, noise):
    """One Langevin MCMC step targeting p_t, MATH.md (11.3): x + eps s(x) + sqrt(2 eps) z;
    ``step_size`` a float, 0-d or per-sample (N,) array."""
    if isinstance(step_size, (int, float)):
        return x + float(step_size) * score + math.sqrt(2.0 * step_size) * noise
    eps = bcast(step_size, x)  # (N,) -> (N, 1, ..., 1)
    return x + eps * score + array_namespace(x).sqrt(2.0 * eps) * noise


def pf_ode_drift(x, eps_hat, f, g2, sigma):
    """The probability-flow ODE of a VP SDE, MATH.md (11.5):
    dx/dt = f x - g^2 score / 2 = f x + g^2 eps_hat / (2 sigma)."""
    return float(f) * x + (0.5 * float(g2) / float(sigma)) * eps_hat


def rk4_step(drift, x, t, dt):
    """One classical Runge-Kutta-4 step of dx/dt = drift(x, t) from t to t + dt (dt may be
    negative), MATH.md (11.6): k1 = F(x, t), k2 = F(x + dt k1/2, t + dt/2),
    k3 = F(x + dt k2/2, t + dt/2), k4 = F(x + dt k3, t + dt); x + dt (k1 + 2 k2 + 2 k3 + k4)/6."""
    k1 = drift(x, t)
    k2 = drift(x + (0.5 * dt) * k1, t + 0.5 * dt)
    k3 = drift(x + (0.5 * dt) * k2, t + 0.5 * dt)
    k4 = drift(x + dt * k3, t + dt)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


# ----------------------------------------------------------------------------- loop helpers
class _SDETime:
    """Continuous times of a grid and the model time / coefficients at any t."""

    def __init__(self, schedule, timesteps, who):
        vals = _grid_values(schedule, timesteps, who)
        self.axis = _Axis(schedule)
        self.schedule = schedule
        T = self.axis.T
        self.times = [(v + 1.0) / T for v in vals] if T is not None else vals
        self.model_times = vals  # integers on a Schedule's grid
        self.discrete = T is not None

    def model_time(self, tc, i=None):
        if i is not None:
            return self.model_times[i]
        return tc * self.axis.T - 1.0 if self.discrete else tc

    def coefs(self, tc):
        """(f, g^2, sigma) at continuous time tc.  On InterpolatedVP (and a Schedule) log alpha is piecewise linear
        with knots at the grid indices; f is the slope of the segment just below tc (the one a
        reverse-time step integrates over), not the one above a knot."""
        vp = self.axis.vp
        kinked = isinstance(vp, InterpolatedVP)
        tf = np.asarray(tc - 1e-9 / vp.schedule.T if kinked else tc, dtype=np.float64)
        return float(vp.dlog_alpha_dt(tf)), float(vp.beta(tf)), float(vp.sigma(np.asarray(tc, dtype=np.float64)))

    def predict(self, model, x, tc, prediction_type, step, i=None):
        return predict_eps_x0(model, x, self.model_time(tc, i), self.schedule, prediction_type, step=step)


def _need_noise(noise, who):
    if noise is None:
        raise TypeError(f"method {who!r} is stochastic and needs noise (pass rng= to refdiff.sample)")


def _final(G, model, x, prediction_type, callback):
    """Schedule grids: the final Tweedie step x0_hat at the last grid index (no noise)."""
    i = len(G.times) - 1
    _, x0 = G.predict(model, x, G.times[-1], prediction_type, i, i=i)
    if callback is not None:
        callback(i, G.model_times[-1], x0, x0)
    return x0


def euler_maruyama(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None,
                   denoise=True):
    """Euler-Maruyama on the reverse VP SDE, MATH.md (11.1)-(11.2).

    Continuous VP: n + 1 times, n steps; step i draws one noise(x) after its model call, except
    the last step when ``denoise=True`` (Song et al.: return the last step's mean), so n - 1
    draws.  Schedule: n indices, n - 1 steps (one draw each), then a final Tweedie step x0_hat
    (no draw).  ``callback(i, t_i, x_{i+1}, x0_hat(t_i))``."""
    who = "euler_maruyama"
    _need_noise(noise, who)
    G = _SDETime(schedule, timesteps, who)
    n = len(G.times) - 1
    for i in range(n):
        t, t_next = G.times[i], G.times[i + 1]
        eps, x0 = G.predict(model, x, t, prediction_type, i, i=i)
        f, g2, sigma = G.coefs(t)
        last = i == n - 1 and denoise and not G.discrete
        z = None if last else noise(x)
        x = euler_maruyama_step(x, -eps / sigma, f, g2, t - t_next, z)
        check_finite(x, "sampler state", f"step {i} (t = {t})")
        if callback is not None:
            callback(i, G.model_times[i], x, x0)
    return _final(G, model, x, prediction_type, callback) if G.discrete else x


def pc(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, snr=0.16,
       n_corrector=1, langevin_norm="batch", denoise=True):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 3 with the VP Langevin corrector),
    MATH.md (11.2)-(11.4).

    At each grid time t_i (but the last): ``n_corrector`` Langevin steps at t_i, each drawing one
    noise(x) (used for both the step size (11.4) and the move (11.3)), then one Euler-Maruyama
    predictor step to t_{i+1} drawing one noise(x) (none on the last step of a continuous grid
    when ``denoise=True``).  Schedule grids end with the Tweedie step x0_hat, as
    :func:`euler_maruyama`.  ``langevin_norm``: 'batch' (default, the code release: batch-mean
    norms) or 'sample' (the paper's per-sample norms; in low dimension ||score|| near a mode is
    often tiny, the step size heavy-tailed and the corrector unstable, MATH.md (11.4))."""
    who = "pc"
    _need_noise(noise, who)
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"pc: n_corrector = {n_corrector!r} must be an integer >= 0")
    if not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"pc: snr = {snr!r} must be finite and > 0")
    if langevin_norm not in ("sample", "batch"):
        raise ValueError(f"pc: unknown langevin_norm {langevin_norm!r}; valid: 'sample', 'batch'")
    G = _SDETime(schedule, timesteps, who)
    n = len(G.times) - 1
    for i in range(n):
        t, t_next = G.times[i], G.times[i + 1]
        f, g2, sigma = G.coefs(t)
        for _ in range(n_corrector):
            eps, _x0 = G.predict(model, x, t, prediction_type, i, i=i)
            z = noise(x)
            score = -eps / sigma
            x = langevin_corrector_step(x, score, langevin_step_size(score, z, snr, norm=langevin_norm), z)
        eps, x0 = G.predict(model, x, t, prediction_type, i, i=i)
        last = i == n - 1 and denoise and not G.discrete
        x = euler_maruyama_step(x, -eps / sigma, f, g2, t - t_next, None if last else noise(x))
        check_finite(x, "sampler state", f"step {i} (t = {t})")
        if callback is not None:
            callback(i, G.model_times[i], x, x0)
    return _final(G, model, x, prediction_type, callback) if G.discrete else x


def pf_ode_rk4(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None):
    """The probability-flow ODE (11.5) integrated with classical RK4 (11.6) on the given grid
    (fixed steps in t; four model calls per step, at t_i, twice at the midpoint, at t_{i+1}).
    Deterministic: draws no noise.  Continuous VP: returns x at the last grid time.  Schedule:
    RK4 between the grid indices (midpoints as float continuous indices), then the Tweedie
    step x0_hat at the last index."""
    who = "pf_ode_rk4"
    G = _SDETime(schedule, timesteps, who)
    n = len(G.times) - 1
    step = [0]

    def drift(y, tc):
        eps, _ = G.predict(model, y, tc, prediction_type, step[0])
        f, g2, sigma = G.coefs(tc)
        return pf_ode_drift(y, eps, f, g2, sigma)

    for i in range(n):
        step[0] = i
        t, t_next = G.times[i], G.times[i + 1]
        x = rk4_step(drift, x, t, t_next - t)
        check_finite(x, "sampler state", f"step {i} (t = {t})")
        if callback is not None:
            callback(i, G.model_times[i], x, None)
    return _final(G, model, x, prediction_type, callback) if G.discrete else x


METHODS = {"euler_maruyama": euler_maruyama, "pc": pc, "pf_ode_rk4": pf_ode_rk4}
