"""Training the space-time denoiser of :mod:`refdiff.nn.video` / :mod:`refdiff.nn.video_unet`
on clips: :func:`train_clip_denoiser` (the objective of MATH.md (14.1) with the first-frame
condition dropout of (22.11), an EMA copy, checkpoints that resume bit for bit) and
:class:`ClipNet`, the network object it runs (and that :class:`refdiff.training.BatchProcesses`
slices over worker processes).  Both are also importable from :mod:`refdiff.video`.
"""

from __future__ import annotations

import dataclasses
import json
import time

from ._validate import check_bool, check_choice, check_finite_scalar, check_int

__all__ = ["ClipNet", "train_clip_denoiser"]


def train_clip_denoiser(next_clips, cfg, schedule, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
                        seed: int = 0, ema_decay: float = 0.999, dtype: str = "float32", progress: bool = False,
                        target: str = "epsilon", first_drop: float = 0.2, init=None, weighting=None,
                        checkpoint=None, checkpoint_every: int = 0, resume: bool = False, parallel: int = 1):
    """Train the space-time denoiser (:mod:`refdiff.nn.video`, or the video U-Net of
    :mod:`refdiff.nn.video_unet` for a VideoUNetConfig) with the ``target`` objective
    (epsilon, sample or v_prediction; MATH.md (14.1)) by :func:`refdiff.training.fit` (AdamW, cosine decay, an EMA copy).
    ``next_clips(rng, n)`` returns n host clips (n, T, H, W).  Draws from
    ``default_rng(seed)``: the initial parameters, then per step the clips, the integer
    timesteps (uniform on [0, T_schedule)) and the noise (and, for a ``cfg.first_frame``
    model, the condition dropout: each clip's first frame is dropped with probability
    ``first_drop``, MATH.md (22.11)).  Returns ``(ema params, state)``.

    Parameters
    ----------
    next_clips : callable
        ``next_clips(rng, n) -> (n, T, H, W)`` host clips.
    cfg : refdiff.nn.video.VideoConfig or refdiff.nn.video_unet.VideoUNetConfig
    schedule : refdiff.Schedule
    steps, batch_size, lr, seed, ema_decay : training settings.
    dtype : str
        Parameter dtype ("float32" or "float64").
    progress : bool
        tqdm progress bar.
    target : str
        What the network predicts (give the same to ``video_as_model``).
    first_drop : float
        Condition-dropout probability of a ``first_frame`` model, in [0, 1].
    init : dict, optional
        Parameters to start from (e.g. a previous run's EMA, to continue training; the
        random initial parameters are still drawn first, so the rng order is unchanged).
    weighting : str or None
        The loss weighting of :func:`refdiff.losses.objective_loss` (default None: the
        unweighted ``target`` MSE).  ``target="v_prediction", weighting="snr"`` is the
        epsilon MSE of the v-parameterised network, MATH.md (22.13).
    checkpoint : str or path-like, optional
        A ``.npz`` the run's whole state (parameters, EMA, Adam moments, generator state,
        step, loss logs and the settings above) is written to every ``checkpoint_every``
        updates and at the end (atomically: a run killed mid-write leaves the previous one).
    checkpoint_every : int, default 0
        Updates between checkpoints (0: only at the end).
    resume : bool, default False
        Continue from ``checkpoint`` if it exists: the resumed run draws exactly what the
        uninterrupted one would have from that update on (same generator state), so its
        result is the same bit for bit on NumPy.  Every setting above and the config must
        equal the checkpoint's (``steps`` included: the cosine rates depend on it), else a
        ValueError; ``init`` is ignored when a checkpoint is resumed.  Without ``resume``
        an existing ``checkpoint`` is a ValueError (never overwritten silently).
    parallel : int, default 1
        Batch slices run at once: with ``parallel`` > 1 each update's forward and backward
        run on that many slices of the batch, the first here and the others in worker
        processes (:class:`refdiff.training.BatchProcesses` over :class:`ClipNet`; NumPy
        only).  The same update up to the order of the float sums of the gradient (the
        slices' gradients summed, MATH.md (14.1)); so a run resumes bit for bit only with the
        ``parallel`` it was written with (not compared on resume).  Pin BLAS to one thread
        (``OPENBLAS_NUM_THREADS=1``) when the slices use every core.
    """
    import numpy as np

    from .losses import _check_weighting, objective_loss
    from .nn.checkpoint import describe_schedule
    from .nn.video import _network
    from .schedules import alpha_sigma
    from .training import fit, init_state

    from .nn._check import check_video_args
    from .parameterization import PREDICTION_TYPES

    if not callable(next_clips):  # issue 19: every argument checked before the first draw
        raise TypeError(f"next_clips must be a callable next_clips(rng, n), got {type(next_clips).__name__}")
    check_video_args(cfg=cfg)
    from .video import _check_schedule

    _check_schedule(schedule)
    steps, batch_size, seed = check_int("steps", steps, 1), check_int("batch_size", batch_size, 1), check_int("seed", seed, 0)
    check_finite_scalar("lr", lr, low=0.0, low_open=True)
    check_finite_scalar("ema_decay", ema_decay, low=0.0, high=1.0)
    check_choice("dtype", dtype, ("float32", "float64"))
    check_bool("progress", progress)
    check_choice("target", target, PREDICTION_TYPES)
    check_finite_scalar("first_drop", first_drop)
    if not 0.0 <= first_drop <= 1.0:
        raise ValueError(f"first_drop = {first_drop!r} must lie in [0, 1]")
    _check_weighting(weighting)
    if init is not None and not isinstance(init, dict):
        raise TypeError(f"init must be a dict of parameters or None, got {type(init).__name__}")
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 0)
    check_bool("resume", resume)
    parallel = check_int("parallel", parallel, 1)
    if checkpoint is None and (checkpoint_every or resume):
        raise ValueError("checkpoint_every and resume need a checkpoint path")
    if checkpoint is not None:
        checkpoint = _check_ckpt_path(checkpoint)
    settings = {"config": {"type": type(cfg).__name__, **dataclasses.asdict(cfg)}, "steps": steps,
                "batch_size": batch_size, "lr": float(lr), "seed": seed, "ema_decay": float(ema_decay), "dtype": dtype,
                "target": target, "first_drop": float(first_drop), "weighting": weighting, "init": init is not None,
                "schedule": describe_schedule(schedule)}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they come back from the file
    rng = np.random.default_rng(seed)
    dt = getattr(np, dtype)
    video_init = _network(cfg)[0]  # transformer or video U-Net, by the config's type
    P = {k: v.astype(dt) for k, v in video_init(rng, cfg).items()}
    if init is not None:
        if set(init) != set(P) or any(tuple(init[k].shape) != P[k].shape for k in P):
            raise ValueError("init must hold the parameters of this VideoConfig (same keys and shapes)")
        P = {k: np.asarray(init[k]).astype(dt) for k in P}
    n_t = len(schedule.betas)

    def next_batch(r):
        x0 = next_clips(r, batch_size)
        t = r.integers(0, n_t, size=batch_size)
        eps = r.standard_normal(x0.shape)
        keep = (r.random(batch_size) >= first_drop).astype(dt) if cfg.first_frame else None
        return x0, t, eps, keep

    net = ClipNet(cfg)
    if parallel > 1:
        from .batch_procs import BatchProcesses

        net = BatchProcesses(net, parallel)

    def loss_fn(groups, batch, r):
        x0, t, eps, keep = batch
        a, s = alpha_sigma(schedule, t, x0)
        cond = None if keep is None else {"first": x0[:, 0].astype(dt), "keep": keep}
        out, cache = net.forward(groups["params"], (a * x0 + s * eps).astype(dt), t.astype(dt), cond)
        loss, dout = objective_loss(out, x0, eps, a, s, target=target, weighting=weighting)
        return float(loss), {"params": net.backward(groups["params"], cache, dout.astype(dt))[0]}

    if checkpoint is not None and checkpoint.exists():
        if not resume:
            raise ValueError(f"{str(checkpoint)!r} exists: pass resume=True to continue it, or another path")
        state, before = _load_clip_checkpoint(checkpoint, settings, steps, dt)
    else:
        before = 0.0
        groups = {"params": P, "ema": dict(P)}
        state = init_state(groups, {"params": True}, rng, int(steps))
    start = state.step
    t0 = time.perf_counter()
    save = None if checkpoint is None else (
        lambda st: _save_clip_checkpoint(checkpoint, st, settings, before + time.perf_counter() - t0))
    try:
        state = fit(loss_fn, state, next_batch, steps=int(steps), trainable={"params": True},
                    ema={"ema": ("params", ema_decay, True)}, lr=lr, lr_decay="cosine",
                    warmup_steps=min(100, steps // 10), grad_clip=1.0, progress=progress, desc="video", save=save,
                    checkpoint_every=checkpoint_every)
    finally:
        if parallel > 1:
            net.close()  # the worker processes of parallel > 1
    if checkpoint is not None and not (checkpoint_every and steps % checkpoint_every == 0 and steps > start):
        save(state)  # the final state, unless fit has just written it
    return state.groups["ema"], state


class ClipNet:
    """The space-time denoiser of ``cfg`` (the transformer of :mod:`refdiff.nn.video` or
    the video U-Net of :mod:`refdiff.nn.video_unet`) as a network object with the interface
    :class:`refdiff.training.BatchThreads` and :class:`refdiff.training.BatchProcesses`
    slice: ``forward(params, x, t, cond)`` and ``backward(params, cache, dout) -> (grads,
    dx)``.  What :func:`train_clip_denoiser` runs (``parallel`` > 1: over BatchProcesses).
    Picklable (the config is a frozen dataclass).

    Parameters
    ----------
    cfg : refdiff.nn.video.VideoConfig or refdiff.nn.video_unet.VideoUNetConfig
        The architecture.
    """

    def __init__(self, cfg):
        from .nn._check import check_video_args

        check_video_args(cfg=cfg)
        self.cfg = cfg

    def __repr__(self):
        return f"ClipNet({self.cfg!r})"

    def forward(self, params, x, t, cond=None):
        """``(out, cache)`` of the network on clips ``x`` at times ``t`` (MATH.md (22.9),
        (22.16); the checks and messages of the wrapped forward; NaN and inf in ``x`` and
        ``t`` propagate, as there).

        Parameters
        ----------
        params : dict
            The network's parameters.
        x : array, shape (N, T, H, W)
            Noisy clips.
        t : array, shape (N,)
            Times (integer-valued floats, as the wrapped forward takes them).
        cond : dict or None, optional
            None, or a ``first_frame`` model's condition ``{"first": (N, H, W), "keep":
            (N,)}`` (MATH.md (22.11); ``keep`` may be left out: every condition kept).

        Returns
        -------
        out : array, shape (N, T, H, W)
            The network's output.
        cache : object
            For :meth:`backward`.
        """
        from .nn._check import check_array_dict
        from .nn.video import _network

        check_array_dict("params", params)
        if cond is not None:
            if not isinstance(cond, dict):
                raise TypeError(f"cond must be None or a dict with 'first' (and 'keep'), got {type(cond).__name__}")
            extra = sorted(set(cond) - {"first", "keep"})
            if extra or "first" not in cond:
                raise ValueError(f"cond must hold 'first' (and optionally 'keep') only, got keys {sorted(cond)}")
        return _network(self.cfg)[1](params, x, t, self.cfg, **(cond or {}))

    def backward(self, params, cache, dout):
        """``(grads, dx)``: the parameter gradients and the input gradient of the forward
        pass that made ``cache``, given ``dout`` (MATH.md (22.10); NaN and inf in ``dout``
        propagate: not checked, per step).

        Parameters
        ----------
        params : dict
            The parameters of the forward pass (the cache holds what the gradients need).
        cache : object
            From :meth:`forward`.
        dout : array, shape (N, T, H, W)
            Gradient with respect to the output.

        Returns
        -------
        grads : dict
            Gradient of every parameter.
        dx : array, shape (N, T, H, W)
            Gradient with respect to ``x``.
        """
        from .nn._check import check_array_dict
        from .nn.video import _network

        check_array_dict("params", params)
        grads, dx = _network(self.cfg)[2](dout, cache)[:2]
        return grads, dx


_CKPT_FORMAT = "refdiff.video.train_clip_denoiser/1"  # the name it was published under; files written since keep it


def _check_ckpt_path(path):
    from os import PathLike
    from pathlib import Path

    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"checkpoint must be a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint path must end in .npz, got {str(path)!r}")
    return path


def _save_clip_checkpoint(path, state, settings, seconds):
    """Write the FitState of :func:`train_clip_denoiser`, its settings and the training wall
    time so far (``seconds``, summed over resumed runs; ``meta["train_seconds"]``) to
    ``path`` (.npz), through a temporary file renamed into place.  Returns the path."""
    import os

    import numpy as np

    arrays = {f"{g}/{k}": np.asarray(v) for g in ("params", "ema") for k, v in state.groups[g].items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in state.opt.items()})
    arrays["losses"], arrays["grad_norms"] = state.losses[:state.step], state.grad_norms[:state.step]
    meta = {"format": _CKPT_FORMAT, "step": int(state.step), "settings": settings,
            "rng_state": state.rng.bit_generator.state, "train_seconds": float(seconds)}
    arrays["meta"] = np.asarray(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return str(path)


def _load_clip_checkpoint(path, settings, steps, dt):
    """``(FitState, train_seconds)`` stored by :func:`_save_clip_checkpoint`, checked against
    ``settings`` (ValueError naming every difference), its logs sized for ``steps``."""
    import numpy as np

    from .training import FitState

    with np.load(path) as d:
        meta = json.loads(str(d["meta"])) if "meta" in d.files else {}
        if meta.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{str(path)!r} is not a train_clip_denoiser checkpoint")
        old = meta["settings"]
        bad = [f"{k}: checkpoint {old.get(k)!r}, now {v!r}" for k, v in settings.items()
               if k != "init" and old.get(k) != v]
        if bad:
            raise ValueError(f"cannot resume from {str(path)!r}: " + "; ".join(bad))
        groups = {g: {k.split("/", 1)[1]: d[k].astype(dt) for k in d.files if k.startswith(g + "/")}
                  for g in ("params", "ema")}
        opt = {k.split("/", 1)[1]: (int(d[k]) if k == "opt/step" else d[k]) for k in d.files if k.startswith("opt/")}
        k = meta["step"]
        losses, gnorms = np.full(steps, np.nan), np.full(steps, np.nan)
        losses[:k], gnorms[:k] = d["losses"][:k], d["grad_norms"][:k]
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]
    return FitState(groups, opt, k, rng, losses, gnorms), float(meta.get("train_seconds", 0.0))
