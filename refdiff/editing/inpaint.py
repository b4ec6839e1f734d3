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
  DDPM step by DDIM with eta = 0 by default; ``scheme="repaint"`` follows the paper (DDPM),
  :func:`repaint_library` reproduces the scheduler (tested equal to diffusers 0.42.1).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int, check_same_shape
from ..backend import array_namespace, asarray_like, to_numpy
from ..samplers.common import call_model, make_grid
from ..samplers.ddpm import ddpm_step, respace
from ..schedules import Schedule
from .img2img import _noise_fn, img2img_grid

__all__ = ["check_mask", "inpaint", "repaint_schedule", "repaint_undo_step", "repaint_library", "oracle_inpaint",
           "oracle_inpaint_model", "inpaint_condition", "SCHEMES"]

SCHEMES = ("replace", "repaint")


def check_mask(mask, x, xp=None):
    """``mask`` as a float64 array of x's namespace, broadcastable to x: shape x.shape, or
    x.shape[1:] (one mask for the batch), or with a leading 1.  It must hold only 0 and 1
    and generate something (a 1 somewhere).

    Parameters
    ----------
    mask : array_like
        0/1 values of shape x.shape, x.shape[1:] or (1,) + x.shape[1:].
    x : array (N, ...)
        The images the mask applies to.
    xp : array namespace, optional
        x's namespace (found when None).

    Returns
    -------
    array
        The mask as float64 in x's namespace.

    Raises
    ------
    ValueError
        If the shape is wrong, the mask is not 0/1, or it has no 1.
    """
    return _check_mask(mask, x, xp, "x")


def _check_mask_dtype(mask):
    check_array("mask", mask, dtype="any")
    if str(mask.dtype).rsplit(".", 1)[-1] not in ("bool", "float32", "float64") and mask.dtype.kind not in "iu":
        raise TypeError(f"mask must be a 0/1 array of bool, integer, float32 or float64 dtype, got dtype {mask.dtype}")


def _check_mask(mask, x, xp, x_name):
    check_array(x_name, x)
    _check_mask_dtype(mask)
    xp = array_namespace(x) if xp is None else xp
    m = np.asarray(to_numpy(mask), dtype=np.float64)
    shape = tuple(x.shape)
    if m.shape not in (shape, shape[1:], (1,) + shape[1:]):
        raise ValueError(f"mask has shape {m.shape}; expected {x_name}'s shape {shape}, {shape[1:]} or "
                         f"{(1,) + shape[1:]} ({x_name} has shape {shape})")
    if not np.all((m == 0) | (m == 1)):
        bad = m[(m != 0) & (m != 1)].ravel()[0]
        raise ValueError(f"mask must hold only 0 (keep) and 1 (generate; the diffusers meaning), found {bad!r}")
    if not np.any(m == 1):
        raise ValueError("mask has nothing to generate: no entry is 1 (1 = generate, the diffusers meaning)")
    return asarray_like(m, x, dtype=xp.float64)


def inpaint(model, x_known, mask, schedule, timesteps, method="ddpm", *, rng=None, noise=None, scheme="replace",
            prediction_type="epsilon", noise_mode="fresh", strength=1.0, jump_length=10, jump_n_sample=10,
            progress=False, **sample_options):
    """Inpaint ``x_known`` where ``mask`` is 1 (diffusers meaning), MATH.md (17.5), (17.6).

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

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x_known : array (N, ...)
        The known images (finite).
    mask : array_like
        1 = generate, 0 = keep (:func:`check_mask`).
    schedule : Schedule or continuous VP
        The model's schedule (a Schedule for ``"repaint"``).
    timesteps : array_like
        The decreasing sampling grid.
    method : str, default "ddpm"
        The sampler (``"replace"`` only).
    rng : numpy.random.Generator, optional
        The source of every draw; give either ``rng`` or ``noise``.
    noise : callable, optional
        ``noise(like)``, standard normals of ``like``'s shape, instead of ``rng``.
    scheme : {"replace", "repaint"}, default "replace"
        The inpainting scheme.
    prediction_type : str, default "epsilon"
        What the model predicts.
    noise_mode : {"fresh", "reuse"}, default "fresh"
        The kept region's noise (``"replace"``).
    strength : float, default 1.0
        In [0, 1] (``"replace"``).
    jump_length : int, default 10
        RePaint's jump length (``"repaint"``).
    jump_n_sample : int, default 10
        RePaint's number of resamplings (``"repaint"``).
    progress : bool, default False
        Show a progress bar (``"replace"``).
    **sample_options
        Passed to :func:`refdiff.sample` (``"replace"``; none are accepted for ``"repaint"``).

    Returns
    -------
    array (N, ...)
        The inpainted images, equal to ``x_known`` where ``mask`` is 0.

    Raises
    ------
    TypeError
        If both or neither of ``rng`` and ``noise`` are given, options are passed to
        ``"repaint"``, or ``"repaint"`` gets a continuous schedule.
    ValueError
        If ``mask``, ``scheme``, ``noise_mode``, ``strength`` or the grid is invalid.
    """
    check_array("x_known", x_known, finite=True)
    xp = array_namespace(x_known)
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    m = _check_mask(mask, x_known, xp, "x_known")
    noise = _noise_fn(rng, noise)
    check_choice("scheme", scheme, SCHEMES)
    check_choice("noise_mode", noise_mode, ("fresh", "reuse"))
    jump_length = check_int("jump_length", jump_length, min=1)
    jump_n_sample = check_int("jump_n_sample", jump_n_sample, min=1)
    check_bool("progress", progress)
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
    10): 4571 entries, 2410 reverse and 2160 undo steps.

    Parameters
    ----------
    n : int
        The number of respaced indices (>= 1).
    jump_length : int, default 10
        The jump length (>= 1).
    jump_n_sample : int, default 10
        The number of resamplings (>= 1).

    Returns
    -------
    list of int
        The walk.

    Raises
    ------
    ValueError
        If an argument is not an integer >= 1.
    """
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
    x_j = sqrt(1 - beta_j) x_{j-1} + sqrt(beta_j) z (j = 0: from the data end).  NaN and inf
    in ``x`` and ``noise`` propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The (respaced) schedule.
    x : array (N, ...)
        The state at index j - 1.
    j : int
        The target index.
    noise : array (N, ...)
        Standard normal z.

    Returns
    -------
    array (N, ...)
        x_j.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    check_array("x", x)
    check_array("noise", noise)
    check_same_shape(x=x, noise=noise)
    j = check_int("j", j, min=0)
    if j >= schedule.T:
        raise ValueError(f"j = {j} is outside [0, {schedule.T - 1}] (the schedule's indices)")
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


def _check_oracle_args(data, x_known, mask):
    from ..oracles import GaussianData, GaussianMixture

    if not isinstance(data, (GaussianData, GaussianMixture)):
        raise TypeError(f"data must be a GaussianData or GaussianMixture, got {type(data).__name__}")
    check_array("x_known", x_known, finite=True)
    _check_mask_dtype(mask)
    check_same_shape(x_known=x_known, mask=mask)


def oracle_inpaint(data, x_known, mask, n, rng):
    """``n`` exact draws of the data given the kept entries (the target every inpainting
    scheme approximates), MATH.md (17.1): ``data.condition(H, c)`` with (H, c) from
    :func:`refdiff.conditioning.mask_measurement`.  ``x_known`` and ``mask`` of the data's
    event shape; host NumPy (n, *event_shape), the kept entries equal to x_known exactly.

    Parameters
    ----------
    data : GaussianData or GaussianMixture
        The data oracle (with ``condition``).
    x_known : array_like
        The known values, the data's event shape.
    mask : array_like
        1 = generate, 0 = keep, the data's event shape.
    n : int
        The number of draws.
    rng : numpy.random.Generator
        The source of the draws.

    Returns
    -------
    numpy.ndarray (n, *event_shape)
        The draws.

    Raises
    ------
    ValueError
        If ``mask`` is invalid (:func:`refdiff.conditioning.mask_measurement`).
    """
    from ..conditioning import mask_measurement

    _check_oracle_args(data, x_known, mask)
    H, c = mask_measurement(mask, x_known)
    x = data.condition(H, c).sample(n, rng)
    m = np.asarray(mask, dtype=np.float64)
    return m * x + (1.0 - m) * np.asarray(x_known, dtype=np.float64)  # the kept entries exactly (not to rounding)


def oracle_inpaint_model(data, x_known, mask, schedule, prediction_type="epsilon"):
    """The ideal inpainting model (what a 9-channel network trained on (x_t, mask, masked
    image) approximates): the oracle of the data conditioned on the kept entries,
    ``data.condition(H, c).as_model(schedule, prediction_type)``, MATH.md (17.1).  Any sampler
    run with it samples the exact conditional (up to its own discretisation error).

    Parameters
    ----------
    data : GaussianData or GaussianMixture
        The data oracle.
    x_known : array_like
        The known values, the data's event shape.
    mask : array_like
        1 = generate, 0 = keep.
    schedule : Schedule or continuous VP
        The schedule of the returned model.
    prediction_type : str, default "epsilon"
        What the returned model predicts.

    Returns
    -------
    callable
        ``model(x, t) -> output``.

    Raises
    ------
    ValueError
        If ``mask`` is invalid.
    """
    from ..conditioning import mask_measurement

    _check_oracle_args(data, x_known, mask)
    H, c = mask_measurement(mask, x_known)
    return data.condition(H, c).as_model(schedule, prediction_type)


def inpaint_condition(x_known, mask):
    """The ``cond`` entries of the "inpaint" condition kind for a network trained on masks:
    {"mask": mask (N, 1, H, W), "masked_image": x_known * (1 - mask)} (1 = generate; the
    masked pixels become 0, as diffusers' inpainting pipeline makes them).  NaN and inf in
    ``x_known`` propagate: not checked (under the mask too: NaN * 0 is NaN).

    Parameters
    ----------
    x_known : array (N, C, H, W)
        The known images.
    mask : array_like
        1 = generate (:func:`check_mask`).

    Returns
    -------
    dict
        ``{"mask": (N, 1, H, W), "masked_image": (N, C, H, W)}``.

    Raises
    ------
    ValueError
        If ``mask`` is invalid.
    """
    check_array("x_known", x_known)
    xp = array_namespace(x_known)
    m = _check_mask(mask, x_known, xp, "x_known")
    m = xp.broadcast_to(m, x_known.shape)
    return {"mask": m[:, :1], "masked_image": x_known * (1.0 - m)}


def repaint_library(model, x_known, mask, schedule, n, *, noise, jump_length=10, jump_n_sample=10, eta=0.0,
                    clip_sample=False, prediction_type="epsilon"):
    """RePaint as diffusers' ``RePaintScheduler`` with its pipeline runs it, MATH.md (17.6):
    times = the jump walk of :func:`repaint_schedule` (without -1) times T // n, every step
    to t - T // n by the DDIM formula (8.7)-(8.8) with ``eta`` (default 0: deterministic,
    unlike the paper's DDPM step), the known part alpha' x_known + sigma' z pasted *after*
    the step with the step's draw z (drawn at every step, also when eta = 0), and each undo
    from t_last as T // n single forward steps with the schedule's betas (one draw each).
    ``mask`` 1 = generate (diffusers' RePaint mask is its complement, 1 = known);
    ``clip_sample``: x0_hat clipped to [-1, 1] (the scheduler's default is True; eps_hat is
    kept); ``noise(like)`` draws: the start, then in the order just stated.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x_known : array (N, ...)
        The known images.
    mask : array_like
        1 = generate (:func:`check_mask`).
    schedule : Schedule
        The discrete schedule (T steps).
    n : int
        The number of inference steps.
    noise : callable
        ``noise(like)``, standard normals of ``like``'s shape.
    jump_length : int, default 10
        The jump length.
    jump_n_sample : int, default 10
        The number of resamplings.
    eta : float, default 0.0
        The DDIM stochasticity.
    clip_sample : bool, default False
        Clip x0_hat to [-1, 1].
    prediction_type : str, default "epsilon"
        What the model predicts.

    Returns
    -------
    array (N, ...)
        The final state.

    Raises
    ------
    ValueError
        If ``mask`` is invalid or the jump parameters are (:func:`repaint_schedule`).
    """
    import math

    from ..parameterization import to_eps_x0

    check_array("x_known", x_known, finite=True)
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if not callable(noise):
        raise TypeError(f"noise must be a callable noise(like), got {type(noise).__name__}")
    n = check_int("n", n, min=1)
    if n > schedule.T:
        raise ValueError(f"n = {n} exceeds the schedule's T = {schedule.T}")
    eta = check_finite_scalar("eta", eta, low=0.0)
    check_bool("clip_sample", clip_sample)
    xp = array_namespace(x_known)
    m = _check_mask(mask, x_known, xp, "x_known")
    k = schedule.T // n
    times = [t * k for t in repaint_schedule(n, jump_length, jump_n_sample)[:-1]]
    ab = [float(a) for a in schedule.alpha_bars]
    x = noise(x_known)
    t_last = times[0] + 1
    for t in times:
        if t < t_last:
            a_t, a_p = ab[t], (ab[t - k] if t - k >= 0 else 1.0)
            eps_hat, x0_hat = to_eps_x0(call_model(model, x, int(t)), x, math.sqrt(a_t), math.sqrt(1 - a_t),
                                        prediction_type)
            if clip_sample:
                x0_hat = xp.clip(x0_hat, -1.0, 1.0)
            z = noise(x)
            std = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
            unknown = math.sqrt(a_p) * x0_hat + math.sqrt(1 - a_p - std * std) * eps_hat
            if t > 0 and eta > 0:
                unknown = unknown + std * z
            known = math.sqrt(a_p) * x_known + math.sqrt(1 - a_p) * z
            x = m * unknown + (1.0 - m) * known
        else:
            for i in range(k):
                beta = float(schedule.betas[t_last + i])
                x = math.sqrt(1 - beta) * x + math.sqrt(beta) * noise(x)
        t_last = t
    return x
