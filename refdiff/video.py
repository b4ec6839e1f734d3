"""Image-to-video and frame interpolation as inpainting in time, through the samplers'
state hook ``project(i, t, x)``, MATH.md (22.7).

After every step the known frames of the state are replaced by the given frames
re-noised to the step's new noise level: x_A <- alpha x_A^known + sigma z (fresh z; at the
data end alpha = 1, sigma = 0, so the result holds the given frames exactly).  This is the
replacement scheme of inpainting with a mask over whole frames; it is not the exact
conditional (which the Kronecker oracle gives, :meth:`KroneckerGaussian.condition_frames`).
"""

from __future__ import annotations

from ._validate import check_array, check_choice, check_finite_scalar, check_int
from .backend import array_namespace, asarray_like, check_rng, standard_normal

__all__ = ["ClipNet", "frame_replacement_hook", "image_to_video", "train_clip_denoiser", "clip_loss", "clip_losses", "loss_ratio",
           "first_frame_coupling", "excess_decomposition"]  # ClipNet, train_clip_denoiser: from refdiff.video_train


def _check_known(known, frames):
    """``known`` as a list of distinct frame indices in [0, frames) (issue 19)."""
    if isinstance(known, (str, bytes)) or not hasattr(known, "__iter__"):
        raise TypeError(f"known must be a sequence of frame indices, got {known!r}")
    A = [check_int("known", f, 0) for f in known]
    if not A or max(A) >= frames or len(set(A)) != len(A):
        raise ValueError(f"known = {known!r} must be distinct frame indices in [0, {frames - 1}]")
    return A


def _check_schedule(schedule):
    from .schedules import Schedule

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a discrete refdiff Schedule, got {type(schedule).__name__}")
    return schedule


def frame_replacement_hook(known, x_known, grid, rng, *, frames: int, noise=None):
    """The state hook of :func:`refdiff.sample` that keeps frames ``known`` (a list of frame
    indices) equal to ``x_known`` (N, |A|, H, W) re-noised to the level of ``grid[i + 1]``
    after step i (``grid`` = :func:`refdiff.make_grid` of the run's schedule and
    timesteps), MATH.md (22.7).  Noise: ``standard_normal(rng, (N, |A|, H, W))`` per
    step on the host (none at the data end, sigma = 0); or ``noise(like)`` instead of ``rng``.

    Parameters
    ----------
    known : sequence of int
        Indices of the given frames.
    x_known : array (N, |A|, H, W)
        The given frames.
    grid : refdiff.Grid
        The run's grid (``refdiff.make_grid(schedule, timesteps)``).
    rng : numpy.random.Generator
        The hook's noise (or None with ``noise``).
    frames : int
        T, the clip length.
    noise : callable, optional
        ``noise(like)`` instead of ``rng``.
    """
    from .samplers.common import Grid

    A = _check_known(known, check_int("frames", frames, 1))  # issue 19
    if not isinstance(grid, Grid):  # issue 19
        raise TypeError(f"grid must be a refdiff Grid (refdiff.make_grid(schedule, timesteps)), got "
                        f"{type(grid).__name__}")
    if noise is None:
        rng = check_rng(rng)
        noise = lambda like: standard_normal(rng, tuple(like.shape), like)  # noqa: E731
    elif not callable(noise):
        raise TypeError(f"noise must be a callable noise(like) or None, got {type(noise).__name__}")
    check_array("x_known", x_known, finite=True)  # issue 19: once per run
    if x_known.ndim != 4 or x_known.shape[1] != len(A):
        raise ValueError(f"x_known must have shape (N, {len(A)}, H, W) for the known frames {A}, got "
                         f"{getattr(x_known, 'shape', type(x_known).__name__)}")

    def project(i, t, x):
        xp = array_namespace(x)
        if tuple(x.shape[2:]) != tuple(x_known.shape[2:]) or x.shape[0] != x_known.shape[0] or x.shape[1] != frames:
            raise ValueError(f"the given frames have shape {tuple(x_known.shape)}, which does not fit the clips "
                             f"{tuple(x.shape)} (N, T = {frames}, H, W)")
        a, s = float(grid[i + 1].alpha), float(grid[i + 1].sigma)
        y = a * asarray_like(x_known, x, dtype=x.dtype)  # (N, |A|, H, W)
        if s > 0:
            y = y + s * noise(y)
        parts = [y[:, A.index(f):A.index(f) + 1] if f in A else x[:, f:f + 1] for f in range(frames)]
        return xp.concat(parts, axis=1)

    return project


def image_to_video(model, x_first, schedule, timesteps, method, *, frames: int, rng, **options):
    """Clips (N, frames, H, W) whose first frame is ``x_first`` (N, H, W): :func:`refdiff.sample`
    from N(0, I) with :func:`frame_replacement_hook` on frame 0, MATH.md (22.7).  Draws from
    ``rng``: the start noise, then the sampler's and the hook's noise in step order.

    Parameters
    ----------
    model : callable
        ``model(x, t)`` on clips (N, T, H, W).
    x_first : array (N, H, W)
        The given first frames.
    schedule, timesteps, method : as for :func:`refdiff.sample`.
    frames : int
        T, the clip length.
    rng : numpy.random.Generator
    options : passed to :func:`refdiff.sample`.
    """
    from .samplers.common import make_grid
    from .samplers.loop import sample

    check_int("frames", frames, 1)  # issue 19
    check_array("x_first", x_first, finite=True)  # issue 19
    if x_first.ndim != 3:
        raise ValueError(f"x_first must be first frames (N, H, W), got shape "
                         f"{getattr(x_first, 'shape', type(x_first).__name__)}")
    cfg = getattr(model, "config", None)
    if cfg is not None and (frames != cfg.frames or tuple(x_first.shape[1:]) != (cfg.size, cfg.size)):
        raise ValueError(f"x_first has shape {tuple(x_first.shape)} and frames = {frames}, but the model takes clips "
                         f"of {cfg.frames} frames of {cfg.size}x{cfg.size}: x_first must be (N, {cfg.size}, "
                         f"{cfg.size}) and frames = {cfg.frames}")
    rng = check_rng(rng)
    n, H, W = x_first.shape
    grid_opts = {k: options[k] for k in ("sigmas", "final_sigmas_type", "interpolation") if k in options}
    x_T = standard_normal(rng, (n, frames, H, W), x_first)
    hook = frame_replacement_hook([0], x_first[:, None], make_grid(schedule, timesteps, **grid_opts), rng,
                                  frames=frames)
    return sample(model, x_T, schedule, timesteps, method, rng=rng, project=hook, progress=False, **options)


def clip_losses(P, cfg, oracle_or_none, x0, schedule, rng, *, chunk: int = 500, prediction_type: str = "epsilon"):
    """Per-clip epsilon losses ``(model (N,), irreducible (N,) or None)`` on fresh draws
    of timesteps and noise for clips x0 (N, T, H, W): the mean over the clip's numbers of
    (eps_hat - eps)^2 for the network and for the oracle's exact E[eps | x_t], both on the
    same (x0, t, eps), MATH.md (14.18).  Draws from ``rng``: the timesteps (N,), then the
    noise (N, T, H, W).  Host NumPy, float64 losses; the network runs in chunks.  A network
    of another ``prediction_type`` is converted to eps_hat first
    (:func:`refdiff.parameterization.to_eps_x0`), so the ratio is always the epsilon one.

    Parameters
    ----------
    P : dict
        Network parameters (an unconditioned model, or a ``first_frame`` one with the
        condition dropped).
    cfg : refdiff.nn.video.VideoConfig
    oracle_or_none : exact oracle or None
    x0 : array (N, T, H, W)
        Clean clips.
    schedule : refdiff.Schedule
    rng : numpy.random.Generator
    chunk : int
        Clips per network call.
    prediction_type : str
        What the network predicts ("epsilon", "sample" or "v_prediction").
    """
    import numpy as np

    from .nn.video import _network
    from .schedules import alpha_sigma

    from .nn._check import check_video_args
    from .parameterization import PREDICTION_TYPES, to_eps_x0

    check_video_args(P=P, cfg=cfg)  # issue 19
    if oracle_or_none is not None and not callable(getattr(oracle_or_none, "eps", None)):
        raise TypeError(f"oracle_or_none must be an exact oracle (with eps) or None, got {type(oracle_or_none).__name__}")
    x0 = np.asarray(check_array("x0", x0, ndim=4, finite=True), dtype=np.float64)
    _check_schedule(schedule)
    rng = check_rng(rng)
    chunk = check_int("chunk", chunk, 1)
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    t = rng.integers(0, len(schedule.betas), size=x0.shape[0])
    eps = rng.standard_normal(x0.shape)
    a, s = alpha_sigma(schedule, t, x0)
    xt = a * x0 + s * eps
    dt = P["in.w"].dtype
    video_forward = _network(cfg)[1]
    out = np.concatenate([np.asarray(video_forward(P, xt[i:i + chunk].astype(dt), t[i:i + chunk].astype(dt), cfg)[0],
                                     dtype=np.float64) for i in range(0, x0.shape[0], chunk)])
    if prediction_type != "epsilon":
        out = np.asarray(to_eps_x0(out, xt, a, s, prediction_type)[0], dtype=np.float64)
    model = np.mean((out - eps) ** 2, axis=(1, 2, 3))
    if oracle_or_none is None:
        return model, None
    ex = np.asarray(oracle_or_none.eps(xt, a, s), dtype=np.float64)
    return model, np.mean((ex - eps) ** 2, axis=(1, 2, 3))


def loss_ratio(model, floor):
    """``(ratio, standard error)`` of mean(model) / mean(floor) over paired per-clip
    losses (N,) (the same draws): the delta method, se^2 = var(m_i - R f_i) / (N f_bar^2).

    Parameters
    ----------
    model, floor : arrays (N,)
        Paired per-clip losses (:func:`clip_losses`).
    """
    import numpy as np

    m = np.asarray(check_array("model", model, finite=True), dtype=np.float64)  # issue 19
    f = np.asarray(check_array("floor", floor, finite=True), dtype=np.float64)
    if m.shape != f.shape or m.ndim != 1 or m.size < 2:
        raise ValueError(f"model and floor must be paired losses (N,), N >= 2, got {m.shape} and {f.shape}")
    if not f.mean() > 0:
        raise ValueError(f"floor must have a positive mean (losses), got mean {f.mean()!r}")
    r = m.mean() / f.mean()
    return float(r), float(np.std(m - r * f, ddof=1) / (np.sqrt(m.size) * f.mean()))


def first_frame_coupling(clips, first, oracle):
    """How strongly frames 1..T-1 of clips follow the given first frames, against the
    exact conditional of the Kronecker oracle, MATH.md (22.12): per frame f the coupling
    beta_f = sum_n <x_f - M_f, c_n - M_0> / sum_n |c_n - M_0|^2 (exactly K_f0 / K_00 in
    expectation under x ~ p(x | x_0 = c), rho^f for the AR(1)), its standard error (delta
    method over clips), and the residual variance ratio mean_n |x_B - E[x_B | c_n]|^2 /
    tr(Cov[x_B | c]) (1 under the exact conditional) with its standard error.

    Parameters
    ----------
    clips : array (N, T, H, W)
        Clips generated given the first frames.
    first : array (N, H, W)
        The given first frames.
    oracle : refdiff.oracles.KroneckerGaussian
        The clip law (its ``time_cov``, ``space_cov``, ``mean``).

    Returns
    -------
    dict
        ``coupling`` (T-1,), ``coupling_se`` (T-1,), ``coupling_exact`` (T-1,),
        ``residual_ratio``, ``residual_ratio_se``.
    """
    import numpy as np

    from .oracles.kronecker import KroneckerGaussian

    x = np.asarray(check_array("clips", clips, ndim=4, finite=True), dtype=np.float64)  # issue 19
    c = np.asarray(check_array("first", first, finite=True), dtype=np.float64)
    N, T = x.shape[:2]
    if N < 2 or T < 2:
        raise ValueError(f"clips must hold N >= 2 clips of T >= 2 frames (standard errors, a coupling), got {x.shape}")
    if c.shape != (N,) + x.shape[2:]:
        raise ValueError(f"first has shape {c.shape}; clips {x.shape} need first frames {(N,) + x.shape[2:]}")
    if not isinstance(oracle, KroneckerGaussian):
        raise TypeError(f"oracle must be a KroneckerGaussian, got {type(oracle).__name__}")
    if oracle.frames != T or oracle.P != int(np.prod(x.shape[2:])):
        raise ValueError(f"oracle has {oracle.frames} frames of {oracle.P} pixels; clips {x.shape} do not fit it")
    K, S = oracle.time_cov, oracle.space_cov
    M = np.asarray(oracle.mean, dtype=np.float64).reshape((T,) + x.shape[2:])
    g = K[1:, 0] / K[0, 0]  # K_BA K_AA^-1 for A = {0}, (T-1,)
    a = (c - M[0]).reshape(N, -1)  # (N, P)
    d = (x[:, 1:] - M[1:]).reshape(N, T - 1, -1)  # (N, T-1, P)
    num, den = np.einsum("nfp,np->nf", d, a), np.sum(a * a, axis=1)  # (N, T-1), (N,)
    beta = num.sum(0) / den.sum()
    se = np.std(num - beta * den[:, None], axis=0, ddof=1) * np.sqrt(N) / den.sum()
    r = d - g[None, :, None] * a[:, None, :]
    k_cond = K[1:, 1:] - np.outer(K[1:, 0], K[0, 1:]) / K[0, 0]
    res = np.sum(r * r, axis=(1, 2)) / (np.trace(k_cond) * np.trace(S))
    return {"coupling": beta, "coupling_se": se, "coupling_exact": g, "residual_ratio": float(res.mean()),
            "residual_ratio_se": float(res.std(ddof=1) / np.sqrt(N))}


def clip_loss(P, cfg, oracle_or_none, x0, schedule, rng, *, prediction_type: str = "epsilon"):
    """``(model loss, irreducible loss)``: the means of :func:`clip_losses` (the second
    None without an oracle), MATH.md (14.18); the model loss is the epsilon loss of a
    network of any ``prediction_type`` (converted as in :func:`clip_losses`).

    Parameters
    ----------
    P : dict
        Network parameters.
    cfg : refdiff.nn.video.VideoConfig
    oracle_or_none : exact oracle or None
    x0 : array (N, T, H, W)
        Clean clips.
    schedule : refdiff.Schedule
    rng : numpy.random.Generator
        Draws the timesteps, then the noise.
    prediction_type : str
        What the network predicts ("epsilon", "sample" or "v_prediction").
    """
    m, f = clip_losses(P, cfg, oracle_or_none, x0, schedule, rng, prediction_type=prediction_type)
    return float(m.mean()), None if f is None else float(f.mean())


def excess_decomposition(eps_fn, oracle, alpha, sigma, n, rng):
    """Where a denoiser's excess over the floor lies at one noise level, MATH.md (22.15):
    on n draws x_t = alpha x0 + sigma eps (x0 from the Gaussian ``oracle``), the affine
    least-squares fit L of ``eps_fn(x_t)`` on x_t is made on the first half of the draws,
    and on the second half the excess E|f - E[eps|x_t]|^2 is split into the part no affine
    map explains, E|f - L x_t|^2, and the error of the affine part, E|L x_t - E[eps|x_t]|^2
    (the exact E[eps | x_t] is affine for Gaussian data; the two add up to the excess up to
    the fit's estimation error, of relative order D / (n/2)).  Per number, and divided by
    the floor E|eps - E[eps|x_t]|^2 on the same draws.  Draws from ``rng``: x0, then eps.

    Parameters
    ----------
    eps_fn : callable
        ``eps_fn(x_t) -> eps_hat`` on host arrays (n/2 clips at a time, shape of x0).
    oracle : refdiff.GaussianData
        A Gaussian (one component) law of x0, e.g. a KroneckerGaussian.
    alpha, sigma : float
        The noise level (alpha > 0, sigma > 0).
    n : int
        Draws, at least 4 and more than twice the dimension plus 2.
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``floor``, ``excess``, ``nonlinear``, ``linear`` (per number), the last three also
        over the floor (``*_over_floor``), and ``linear_share_per_position`` (the affine
        part's error per position of the event shape after the first axis, summed over the
        first (the frames), as fractions summing to 1).
    """
    import numpy as np

    from .oracles.gaussian import GaussianData

    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be a callable eps_fn(x_t), got {type(eps_fn).__name__}")
    if not isinstance(oracle, GaussianData) or oracle.K != 1:
        raise TypeError(f"oracle must be a one-component GaussianData (e.g. KroneckerGaussian), got {oracle!r}")
    a = check_finite_scalar("alpha", alpha, low=0.0, low_open=True)
    s = check_finite_scalar("sigma", sigma, low=0.0, low_open=True)
    D = int(oracle.D)
    n = check_int("n", n, 2 * D + 4)
    rng = check_rng(rng)
    x0 = np.asarray(oracle.sample(n, rng), dtype=np.float64)
    eps = rng.standard_normal(x0.shape)
    xt = a * x0 + s * eps
    h = n // 2
    f = np.concatenate([np.asarray(eps_fn(xt[:h]), dtype=np.float64), np.asarray(eps_fn(xt[h:]), dtype=np.float64)])
    if f.shape != xt.shape:
        raise ValueError(f"eps_fn returned shape {f.shape}; expected the shape of x_t {xt.shape}")
    ex = np.asarray(oracle.eps(xt, a, s), dtype=np.float64).reshape(n, D)
    X = np.concatenate([xt.reshape(n, D), np.ones((n, 1))], axis=1)  # affine fit
    F = f.reshape(n, D)
    W = np.linalg.lstsq(X[:h], F[:h], rcond=None)[0]
    lin = X[h:] @ W
    floor = float(np.mean((ex[h:] - eps.reshape(n, D)[h:]) ** 2))
    out = {"floor": floor, "excess": float(np.mean((F[h:] - ex[h:]) ** 2)),
           "nonlinear": float(np.mean((F[h:] - lin) ** 2)), "linear": float(np.mean((lin - ex[h:]) ** 2))}
    for k in ("excess", "nonlinear", "linear"):
        out[k + "_over_floor"] = out[k] / floor
    per = np.mean((lin - ex[h:]) ** 2, axis=0).reshape(x0.shape[1:])
    per = per.sum(axis=0) if per.ndim > 1 else per
    out["linear_share_per_position"] = per / per.sum()
    return out


# Training lives in refdiff/video_train.py; re-exported here, where it was first published.
from .video_train import ClipNet, train_clip_denoiser  # noqa: E402  (it imports this module's checks)
