"""The grid of the new multistep VP samplers (UniPC, DEIS, PNDM/PLMS): a list of points
(model_time, alpha, sigma), from integer timesteps, continuous times or an explicit sigma
grid.  A thin layer over :func:`refdiff.samplers.dpm_solver.grid_points` (the same final
point rules, MATH.md (10.6)) and :func:`refdiff.samplers.karras.sigma_grid` (the same sigma
validation and model times, MATH.md (9.9)); to be replaced by the shared contract of
``samplers/common.py`` when it lands.
"""

from __future__ import annotations

import math

from .dpm_solver import grid_points
from .karras import sigma_grid

__all__ = ["vp_points", "lam"]


def lam(alpha, sigma):
    """The half log-SNR lambda = log(alpha / sigma), MATH.md (10.1); +inf at sigma = 0."""
    return math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma)


def vp_points(schedule, timesteps, sigmas=None, final_sigmas_type=None, who="sampler"):
    """The points (model_time, alpha, sigma) a loop visits (validated).

    Without ``sigmas``: :func:`~refdiff.samplers.dpm_solver.grid_points` (a Schedule's
    integer timesteps then sigma = 0 (``"zero"``, default) or index 0 (``"sigma_min"``); a
    continuous VP's times).  With ``sigmas`` (VE noise levels s = sigma_t / alpha_t,
    strictly decreasing, e.g. ``refdiff.karras_sigmas(..., append_zero=True)``): alpha =
    1 / sqrt(1 + s^2), sigma = s alpha, model times from
    :func:`~refdiff.samplers.karras.sigma_to_time`; ``timesteps`` is then ignored."""
    if sigmas is None:
        return grid_points(schedule, timesteps, final_sigmas_type, who)[1]
    if final_sigmas_type is not None:
        raise TypeError(f"{who}: final_sigmas_type applies to a timestep grid; with sigmas= end the grid where "
                        "you want it (append 0 for a final step to sigma = 0)")
    sig, times = sigma_grid(schedule, timesteps, sigmas)
    return [(t, 1.0 / math.sqrt(1.0 + s * s), s / math.sqrt(1.0 + s * s)) for s, t in zip(sig, times)]
