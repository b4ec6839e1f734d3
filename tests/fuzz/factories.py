"""Valid values for the fuzz harness: small shared sizes (``Ctx``) and the factory that
builds a valid value for a parameter from its NAME (``_factory``).  Add a name here when
many callables share it; otherwise write a recipe."""

from __future__ import annotations

import math
import zlib

import numpy as np

class Ctx:
    """Small shared sizes and valid values: batch B=2, dimension D=3, T=10 steps."""

    B, D, T = 2, 3, 10

    def rng(self, seed=0):
        return np.random.default_rng(seed)

    def array(self, shape=None, seed=0, scale=1.0):
        return scale * self.rng(seed).standard_normal(shape or (self.B, self.D))

    def schedule(self):
        from refdiff.schedules import make_schedule

        return make_schedule("linear", T=self.T)

    def t(self):
        return np.array([3, 7])

    def spd(self, d=None, seed=1):
        d = d or self.D
        a = self.rng(seed).standard_normal((d, d))
        return a @ a.T / d + 0.5 * np.eye(d)

    def model(self):
        return lambda x, t: 0.1 * x


def ctx() -> Ctx:
    return Ctx()


class NoFactory(Exception):
    pass


_ARRAY_NAMES = ("x", "x0", "x_t", "x_s", "x_prev", "x_T", "x_in", "x_next", "eps", "noise", "z",
                "score", "v", "u", "model_output", "out", "target_value", "x0_hat", "F_out",
                "eps_hat", "out_cond", "out_uncond", "out_cfg", "m0", "m1", "m2", "m_prev",
                "samples", "feat", "feat_a", "feat_b", "x_known", "velocity", "x0_prev", "d",
                "noise1", "noise2", "z1", "z2", "grad_log_p_y", "nats", "log_likelihood")
_VEC_NAMES = ("mean", "mean1", "mean2", "logvar", "logvar1", "logvar2", "m", "data_eigenvalues")
_COV_NAMES = ("cov", "cov1", "cov2", "C0", "C1", "covariance")
_COEF = {"alpha": 0.8, "sigma": 0.6, "alpha_t": 0.8, "sigma_t": 0.6, "alpha_s": 0.9,
         "sigma_s": math.sqrt(1 - 0.81), "alpha_prev": 0.9, "sigma_prev": math.sqrt(1 - 0.81),
         "sigma_next": 0.3, "alpha_from": 0.8, "sigma_from": 0.6, "alpha_to": 0.9,
         "sigma_to": math.sqrt(1 - 0.81), "d_alpha": -0.5, "d_sigma": 0.5}
_INTS = {"n": 4, "n_steps": 3, "steps": 3, "T": 10, "dims": 3, "dim": 3, "num_classes": 3,
         "n_projections": 8, "batch_size": 4, "n_probes": 2, "N": 5, "K": 10, "k": 1, "heads": 1, "groups": 1,
         "order": 2, "step": 0, "size": 4}
_OBJECTS = ("schedule", "model", "denoiser", "vp")


def _factory(name: str, names: set, c: Ctx):
    """A valid value for parameter ``name`` of a callable whose parameters are ``names``."""
    if name in _ARRAY_NAMES:
        return c.array(seed=zlib.crc32(name.encode()) % 97)
    if name in _VEC_NAMES:
        v = c.rng(zlib.crc32(name.encode()) % 89).standard_normal(c.D)
        return np.abs(v) + 0.1 if name == "data_eigenvalues" else v
    if name in _COV_NAMES:
        return c.spd()
    if name in _COEF:
        return _COEF[name]
    if name in _INTS:
        return _INTS[name]
    if name == "schedule":
        return c.schedule()
    if name in ("t", "t_prev", "t_next") and "schedule" in names:
        return {"t": c.t(), "t_prev": np.array([1, 5]), "t_next": np.array([5, 9])}[name]
    if name == "timesteps" and "schedule" in names:
        return [9, 5, 1]
    if name == "rng":
        return c.rng()
    if name == "model":
        return c.model()
    if name == "denoiser":
        return lambda x, sigma: x / (1.0 + sigma ** 2)
    if name == "vp":
        from refdiff.schedules import LinearVP

        return LinearVP()
    if name == "sigmas":
        return [5.0, 1.0, 0.1]
    if name == "xp":
        return np
    if name == "shape":
        return (c.B, c.D)
    if name == "like":
        return np.zeros((c.B, c.D))
    if name in ("prediction_type", "target"):
        return "epsilon"
    if name == "variance_type":
        return "fixed_small"
    if name in ("guidance_scale", "scale"):
        return 2.0
    raise NoFactory(name)


