"""Inpainting by replacement and by RePaint, and the exact target ("oracle inpainting"),
MATH.md chapter 17.

**Mask meanings.**  refdiff's ``mask`` is the diffusers one: 1 where x is generated
(repainted), 0 where ``x_known`` is kept.  RePaint's release (``gt_keep_mask``) and
diffusers' ``RePaintScheduler`` use the opposite, 1 = known: their mask is ``1 - mask``.

* ``scheme="replace"`` (MATH.md (17.5)): after every step of any refdiff sampler the kept
  region is replaced by the known image noised to the step's new point,
  alpha' x_known + sigma' eps, with fresh eps each step (``noise_mode="fresh"``), or with the
  initial noise tensor re-used (``"reuse"``: diffusers' 4-channel inpainting pipeline);
  after the last step the kept region is x_known exactly.
* ``scheme="repaint"`` (Lugmayr et al. 2022, MATH.md (17.6)): DDPM steps on the grid's
  respaced chain, with the known region replaced (fresh noise) before each model call
  except the first, and RePaint's "undo" jumps x_j = sqrt(1 - beta'_j) x_{j-1} +
  sqrt(beta'_j) z back up ``jump_length`` points, ``jump_n_sample - 1`` times at every
  multiple of ``jump_length`` (:func:`repaint_schedule`).  refdiff pastes x_known into the
  output's kept region (as diffusers' RePaintScheduler does at the data end); the paper's
  release returns the model's own values there.  diffusers' RePaintScheduler replaces the
  DDPM step by DDIM with eta = 0 by default; refdiff follows the paper (DDPM).
"""

from __future__ import annotations

import numpy as np

from ..backend import array_namespace, asarray_like, check_finite, to_numpy
from ..samplers.common import call_model, make_grid
from ..samplers.ddpm import ddpm_step, respace
from ..schedules import Schedule
from .img2img import _noise_fn, img2img_grid

__all__ = ["check_mask", "inpaint", "repaint_schedule", "repaint_undo_step", "oracle_inpaint", "oracle_inpaint_model",
           "inpaint_condition", "SCHEMES"]

SCHEMES = ("replace", "repaint")


def check_mask(mask, x, xp=None):
    """``mask`` as a float64 array of x's namespace, broadcastable to x: shape x.shape, or
    x.shape[1:] (one mask for the batch), or with a leading 1.  It must hold only 0 and 1
    and generate something (a 1 somewhere)."""
    xp = array_namespace(x) if xp is None else xp
    m = np.asarray(to_numpy(mask) if hasattr(mask, "shape") else mask, dtype=np.float64)
    shape = tuple(x.shape)
    if m.shape not in (shape, shape[1:], (1,) + shape[1:]):
        raise ValueError(f"mask has shape {m.shape}; expected x's shape {shape}, {shape[1:]} or {(1,) + shape[1:]}")
    if not np.all((m == 0) | (m == 1)):
        bad = m[(m != 0) & (m != 1)].ravel()[0]
        raise ValueError(f"mask must hold only 0 (keep) and 1 (generate; the diffusers meaning), found {bad!r}")
    if not np.any(m == 1):
        raise ValueError("mask has nothing to generate: no entry is 1 (1 = generate, the diffusers meaning)")
    return asarray_like(m, x, dtype=xp.float64)


def inpaint(model, x_known, mask, schedule, timesteps, method="ddpm", *, rng=None, noise=None, scheme="replace",
            prediction_type="epsilon", noise_mode="fresh", strength=1.0, jump_length=10, jump_n_sample=10,
            progress=False, **sample_options):
    """Inpaint ``x_known`` where ``mask`` is 1 (diffusers meaning), MATH.md (17.5)-(17.6).

    replace : any ``method``; ``noise_mode`` "fresh" | "reuse"; ``strength`` < 1 starts from
        x_known noised to the library tail's start (:func:`refdiff.editing.img2img_grid`),
        strength = 1 from pure noise (the inpainting pipeline's ``is_strength_max``).
        Noise draws: the start, then per step the sampler's draws followed by (fresh mode)
        one draw for the kept region.  Extra keywords go to :func:`refdiff.sample`.
    repaint : a discrete Schedule and its decreasing ``timesteps`` (RePaint's respaced
        chain; ``method`` is ignored: DDPM with fixed_small variance), ``jump_length``,
        ``jump_n_sample``.  Noise draws: the start, then per reverse step the known
        region's draw (not before the first) and the DDPM step's (not at the last), one
        per undo step.
    """
    xp = array_namespace(x_known)
    check_finite(x_known, "x_known")
    m = check_mask(mask, x_known, xp)
    noise = _noise_fn(rng, noise)
    if scheme == "repaint":
        if sample_options:
            raise TypeError(f"scheme='repaint' got unknown option(s) {sorted(sample_options)}")
        return _repaint(model, x_known, m, schedule, timesteps, noise, prediction_type, jump_length, jump_n_sample)
    if scheme != "replace":
        raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if noise_mode not in ("fresh", "reuse"):
        raise ValueError(f"unknown noise_mode {noise_mode!r}; valid: 'fresh', 'reuse' (diffusers' 4-channel pipeline)")
    grid, _ = img2img_grid(schedule, timesteps, strength, sigmas=sample_options.pop("sigmas", None))
    z0 = noise(x_known)
    p = grid[0]
    x_T = z0 if strength == 1.0 else p.alpha * x_known + p.sigma * z0

    def project(i, t, x):
        q = grid[i + 1]
        if q.sigma == 0.0:
            return m * x + (1.0 - m) * x_known
        z = z0 if noise_mode == "reuse" else noise(x)
        return m * x + (1.0 - m) * (q.alpha * x_known + q.sigma * z)

    from ..samplers.loop import sample

    x = sample(model, x_T, schedule, grid, method, prediction_type=prediction_type, noise=noise, project=project,
               progress=progress, **sample_options)
    return m * x + (1.0 - m) * x_known


def repaint_schedule(n, jump_length=10, jump_n_sample=10):
    """RePaint's jump schedule over respaced indices n-1 ... 0, -1 (-1: the data end),
    MATH.md (17.6): walking down from n - 1, at every multiple j of ``jump_length`` with
    j < n - jump_length the walk goes back up ``jump_length`` indices, ``jump_n_sample - 1``
    times in all.  Returns a list of ints, starting at n - 1 and ending at -1; a step to a
    smaller index is a reverse (model) step, to a larger one an undo step.  For (250, 10,
    10): 4571 entries, 2410 reverse and 2160 undo steps."""
    for name, v, lo in (("n", n, 1), ("jump_length", jump_length, 1), ("jump_n_sample", jump_n_sample, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    jumps = {j: jump_n_sample - 1 for j in range(0, n - jump_length, jump_length)}
    t, ts = n, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


def repaint_undo_step(schedule, x, j, noise):
    """RePaint's undo step from index j - 1 to j of a (respaced) Schedule, MATH.md (17.6):
    x_j = sqrt(1 - beta_j) x_{j-1} + sqrt(beta_j) z (j = 0: from the data end)."""
    beta = float(schedule.betas[j])
    return (1.0 - beta) ** 0.5 * x + beta ** 0.5 * noise


def _repaint(model, x_known, m, schedule, timesteps, noise, prediction_type, jump_length, jump_n_sample):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"scheme='repaint' needs a discrete Schedule, got {type(schedule).__name__}")
    make_grid(schedule, timesteps)  # validates the grid
    ts = np.asarray(timesteps)
    n = ts.shape[0]
    chain = respace(schedule, ts)  # index j <-> original timestep ts[n - 1 - j]
    walk = repaint_schedule(n, jump_length, jump_n_sample)
    x = noise(x_known)
    first = True
    for j, j_next in zip(walk[:-1], walk[1:]):
        if j_next > j:  # undo: j -> j + 1
            x = repaint_undo_step(chain, x, j_next, noise(x))
            continue
        if not first:
            a, s = float(chain.sqrt_alpha_bars[j]), float(chain.sqrt_one_minus_alpha_bars[j])
            x = m * x + (1.0 - m) * (a * x_known + s * noise(x))
        first = False
        out = call_model(model, x, int(ts[n - 1 - j]))
        z = noise(x) if j > 0 else None
        x = ddpm_step(chain, out, j, x, z, prediction_type=prediction_type)
    return m * x + (1.0 - m) * x_known


def oracle_inpaint(data, x_known, mask, n, rng):
    """``n`` exact draws of the data given the kept entries (the target every inpainting
    scheme approximates), MATH.md (17.1): ``data.condition(H, c)`` with (H, c) from
    :func:`refdiff.conditioning.mask_measurement`.  ``x_known`` and ``mask`` of the data's
    event shape; host NumPy (n, *event_shape), the kept entries equal to x_known exactly."""
    from ..conditioning import mask_measurement

    H, c = mask_measurement(mask, x_known)
    x = data.condition(H, c).sample(n, rng)
    m = np.asarray(mask, dtype=np.float64)
    return m * x + (1.0 - m) * np.asarray(x_known, dtype=np.float64)  # the kept entries exactly (not to rounding)


def oracle_inpaint_model(data, x_known, mask, schedule, prediction_type="epsilon"):
    """The ideal inpainting model (what a 9-channel network trained on (x_t, mask, masked
    image) approximates): the oracle of the data conditioned on the kept entries,
    ``data.condition(H, c).as_model(schedule, prediction_type)``, MATH.md (17.1).  Any sampler
    run with it samples the exact conditional (up to its own discretisation error)."""
    from ..conditioning import mask_measurement

    H, c = mask_measurement(mask, x_known)
    return data.condition(H, c).as_model(schedule, prediction_type)


def inpaint_condition(x_known, mask):
    """The ``cond`` entries of the "inpaint" condition kind for a network trained on masks:
    {"mask": mask (N, 1, H, W), "masked_image": x_known * (1 - mask)} (1 = generate; the
    masked pixels become 0, as diffusers' inpainting pipeline makes them)."""
    xp = array_namespace(x_known)
    m = check_mask(mask, x_known, xp)
    m = xp.broadcast_to(m, x_known.shape)
    return {"mask": m[:, :1], "masked_image": x_known * (1.0 - m)}
