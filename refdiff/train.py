"""The denoising trainer, MATH.md chapter 14, on the one training loop
:func:`refdiff.training.fit` (which also trains the classifier,
:func:`refdiff.training.train_digit_classifier`, re-exported here, and any other loss over
parameter groups).

``train(model, data, schedule=..., steps=...)`` fits a hand-written denoiser
(:class:`refdiff.nn.MLP` / :class:`refdiff.nn.UNet`) by Adam(W) on the denoising objective
of :mod:`refdiff.losses`, keeps an EMA of the parameters, evaluates the EMA on a fixed
held-out batch, and writes checkpoints that resume bit-identically on NumPy.

Randomness: one ``numpy.random.Generator`` ``rng = default_rng(seed)`` draws, in this
order, the initial parameters and then, at every step, the batch indices
(``rng.integers(0, N, B)``), the timesteps (``rng.integers(0, T, B)`` for a discrete
Schedule; ``rng.uniform(t_min, 1, B)`` for a continuous VP, t = 0 data), the noise
(``rng.standard_normal((B, *shape))``) and, for a conditional model, the condition
dropout masks (``rng.random(B)`` per dropped kind, in the model's kind order).  Its state is checkpointed.  The evaluation batch is
drawn once from a separate generator ``default_rng([seed, 1])``, so evaluating never
changes the training stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int
from .backend import array_namespace, to_numpy
from .losses import canonical_target, check_labels, diffusion_loss
from .nn._checkpoint_checks import check_resumable
from .nn.checkpoint import describe_schedule, load_checkpoint, save_checkpoint
from .nn.conditions import as_cond
from .schedules import Schedule, _ContinuousVP
from .training import BatchProcesses, BatchThreads, FitState, fit, init_state, train_digit_classifier  # noqa: F401  (re-exported)

__all__ = ["TrainResult", "train", "train_digit_classifier", "CHECKPOINT_NAME"]


CHECKPOINT_NAME = "checkpoint.npz"
_NOT_COMPARED_ON_RESUME = ("steps", "eval_every", "eval_size", "checkpoint_every")


@dataclass
class TrainResult:
    """What :func:`train` returns.  ``losses[k]`` is the training loss of update k;
    ``eval_steps``/``eval_losses`` the held-out loss of the EMA parameters after that
    many updates; ``checkpoint`` the path of the last checkpoint (or None).

    Parameters
    ----------
    model : refdiff.nn network
        The trained network (MLP or UNet).
    params, ema_params : dict
        Its final parameters and their exponential moving average.
    opt_state : dict
        The Adam state.
    step : int
        The number of updates done.
    losses : numpy.ndarray
        (steps,) training loss per update.
    eval_steps, eval_losses : numpy.ndarray
        When the EMA was evaluated, and its held-out loss there.
    config : dict
        The training configuration (as stored in the checkpoint).
    checkpoint : pathlib.Path or None
        The last checkpoint written.
    grad_norms : numpy.ndarray
        (steps,) global gradient norm per update (before clipping).
    """

    model: object
    params: dict
    ema_params: dict
    opt_state: dict
    step: int
    losses: np.ndarray
    eval_steps: np.ndarray
    eval_losses: np.ndarray
    config: dict
    checkpoint: Path | None = None
    grad_norms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def ema_model(self, cond=None):
        """The EMA parameters as a plain callable ``model(x, t)`` with ``cond`` bound.

        Parameters
        ----------
        cond : condition mapping, label array or None
            The condition (:meth:`refdiff.nn.base.DenoiserBase.as_model`); None: the null
            condition.

        Returns
        -------
        callable
            ``model(x, t)``.
        """
        return self.model.as_model(self.ema_params, cond)


def _split_data(data):
    """(x, cond) host arrays from a Dataset, an (x, y) or (x, cond mapping) tuple or an array."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, c = data.x, data.y
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"data as a tuple must be (x, y) or (x, cond), got {len(data)} entries")
        x, c = data
    else:
        x, c = data, None
    c = as_cond(None if c is None else c if isinstance(c, Mapping) else np.asarray(c))
    return np.asarray(x), {k: np.asarray(v) for k, v in c.items()}


def _check_data(x, cond, model, name):
    """Check x and its per-sample conditions (host arrays); class labels must be data
    labels (the null class is not one).  Kinds the model lacks are dropped only when the
    model is unconditional and they are class labels (a labelled set, an unconditional fit)."""
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    spec = model.cond_spec
    if not spec.kinds:
        return {}  # an unconditional model ignores labels
    if "class" in spec.kinds:
        if "class" not in cond:
            K = spec.kinds["class"].num_classes
            raise ValueError(f"the model is class-conditional (num_classes = {K}) but {name} has no labels")
        y = cond["class"]
        if y.shape != (x.shape[0],):
            raise ValueError(f"{name} labels must have shape ({x.shape[0]},), got {y.shape}")
        check_labels(y, spec.kinds["class"].num_classes, name=f"{name} labels")
        cond = {**cond, "class": y.astype(np.int64)}
    spec.validate(cond, x.shape[0], np, np.float64, name)
    return cond


def _draw_t(rng, schedule, n):
    if isinstance(schedule, Schedule):
        return rng.integers(0, schedule.T, size=n)
    return rng.uniform(schedule.t_min, 1.0, size=n)


def _lr_at(step, cfg):
    if cfg["lr_decay"] == "cosine":
        return cosine_lr(step, cfg["lr"], cfg["steps"], warmup_steps=cfg["warmup_steps"])
    return warmup_lr(step, cfg["lr"], cfg["warmup_steps"])


def _config(model, schedule, kw) -> dict:
    if not isinstance(schedule, (Schedule, _ContinuousVP)):
        raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")
    for name in ("steps", "batch_size"):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("eval_every", "checkpoint_every", "warmup_steps", "eval_size"):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if not (isinstance(kw["lr"], (int, float)) and kw["lr"] > 0):
        raise ValueError(f"lr must be > 0, got {kw['lr']!r}")
    if not 0.0 <= kw["ema_decay"] <= 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1], got {kw['ema_decay']!r}")
    for k, p in (kw["cond_dropout"].items() if isinstance(kw["cond_dropout"], Mapping) else [("", kw["cond_dropout"])]):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"cond_dropout{'[' + repr(k) + ']' if k else ''} must lie in [0, 1], got {p!r}")
    if kw["lr_decay"] not in ("constant", "cosine"):
        raise ValueError(f"lr_decay must be 'constant' or 'cosine', got {kw['lr_decay']!r}")
    if kw["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {kw['dtype']!r}")
    if kw["grad_clip"] is not None and not kw["grad_clip"] > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {kw['grad_clip']!r}")
    cfg = dict(kw)
    if isinstance(cfg["cond_dropout"], Mapping):
        cfg["cond_dropout"] = dict(cfg["cond_dropout"])
    cfg["target"] = canonical_target(cfg["target"])
    cfg["betas"] = [float(b) for b in cfg["betas"]]
    return cfg


def _config_mismatch(saved: dict, now: dict) -> list[str]:
    free = set(_NOT_COMPARED_ON_RESUME)
    if now.get("lr_decay") == "cosine":
        free.discard("steps")  # the cosine rate of every update depends on the total, (14.17)
    keys = (set(saved) | set(now)) - free
    return [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(keys) if saved.get(k) != now.get(k)]


def _eval_batch(x, cond, schedule, cfg, seed, shape):
    """The fixed held-out evaluation draws (x0, t, noise, cond), from default_rng([seed, 1])."""
    n = cfg["eval_size"]
    erng = np.random.default_rng([seed, 1])
    idx = erng.integers(0, x.shape[0], size=n) if n > 0 else np.zeros(0, dtype=np.int64)
    t = _draw_t(erng, schedule, n)
    noise = erng.standard_normal((n, *shape))
    return x[idx], t, noise, {k: v[idx] for k, v in cond.items()}


def _device_cond(cond, sl, xp, dt):
    """Host condition arrays (a slice of them) in namespace ``xp``; floats in dtype ``dt``."""
    return {k: xp.asarray(v[sl], dtype=dt) if v.dtype.kind == "f" else xp.asarray(v[sl]) for k, v in cond.items()}


def _mean_loss(model, params, batch, schedule, cfg, xp, dt, chunk):
    """The objective on a fixed batch (no gradients), averaged over its samples."""
    x0, t, noise, cond = batch
    total, n = 0.0, x0.shape[0]
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        loss, _, _ = diffusion_loss(
            model.forward, params, xp.asarray(x0[sl], dtype=dt), xp.asarray(t[sl]), xp.asarray(noise[sl], dtype=dt),
            schedule, target=cfg["target"], weighting=cfg["weighting"], gamma=cfg["gamma"],
            cond=_device_cond(cond, sl, xp, dt),
        )
        total += float(loss) * (sl.stop - sl.start)
    return total / n


def _check_train_args(model, data, seed, lr, ema_decay, weight_decay, flags):
    """Issue 19: the arguments of train that its body does not check by type."""
    for attr in ("cond_spec", "init_params", "forward", "backward"):
        if not hasattr(model, attr):
            raise TypeError(f"model must be a refdiff network (with {attr}), got {type(model).__name__}")
    if isinstance(data, (list, str)) or data is None:
        raise TypeError(f"data must be an array, a Dataset or an (x, y) tuple, got {type(data).__name__}")
    raw = data.x if hasattr(data, "x") else data[0] if isinstance(data, tuple) and data else data
    check_array("data", raw, dtype="float", min_ndim=2)
    check_int("seed", seed, min=0)
    for name, v in (("lr", lr), ("ema_decay", ema_decay), ("weight_decay", weight_decay)):
        check_finite_scalar(name, v)
    for name, v in flags.items():
        check_bool(name, v)


def train(
    model,
    data,
    *,
    schedule,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    target: str = "epsilon",
    weighting=None,
    gamma: float = 5.0,
    seed: int = 0,
    out_dir=None,
    ema_decay: float = 0.999,
    ema_warmup: bool = False,
    eval_data=None,
    eval_every: int = 0,
    eval_size: int = 1024,
    checkpoint_every: int = 0,
    cond_dropout=0.0,
    warmup_steps: int = 0,
    lr_decay: str = "constant",
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    decay: str = "matrices",
    trainable=None,
    init_params: dict | None = None,
    betas=(0.9, 0.999),
    resume: bool = False,
    progress: bool = True,
    dtype: str = "float32",
    xp=None,
    threads: int = 1,
    batch_parallel: str = "threads",
) -> TrainResult:
    """Train ``model`` on ``data`` for ``steps`` updates; returns a :class:`TrainResult`.

    Runs :func:`refdiff.training.fit` with the denoising loss: each update draws a batch,
    timesteps and noise (module docstring), evaluates :func:`refdiff.losses.diffusion_loss`
    (``target``, ``weighting``, ``gamma``; MATH.md (14.1)-(14.3), (14.6)), backpropagates
    through ``model.backward``, optionally clips by global norm (14.14), takes an AdamW step
    (14.11)-(14.13) at the warmed-up rate (14.17) and updates the EMA (14.15)-(14.16).
    Conditions present in the data are replaced by their null with probability
    ``cond_dropout`` (a float: every droppable kind; or ``{kind: p}``), (14.10).

    Parameters
    ----------
    model : refdiff.nn network
        A :class:`refdiff.nn.MLP` or :class:`refdiff.nn.UNet` (its config fixes the shapes
        and condition kinds).
    data, eval_data
        A :class:`refdiff.data.Dataset`, an ``(x, y)`` tuple, an ``(x, cond)`` tuple with
        ``cond`` a mapping of per-sample condition arrays (:mod:`refdiff.nn.conditions`),
        or an array ``x`` (N, ...) of host data.  The EMA is evaluated every
        ``eval_every`` updates (and at the end) on ``eval_size`` fixed draws from
        ``eval_data`` (default: from ``data``, which then is not held out).
    schedule : Schedule or continuous VP schedule
        The noise schedule (timesteps drawn as in the module docstring).
    steps : int
        The total number of updates.
    batch_size : int, default 256
        The minibatch size (drawn with replacement).
    lr : float, default 1e-3
        The base learning rate.
    target : str, default "epsilon"
        The regression target, one of refdiff.TARGETS (aliases "eps", "x0", "v").
    weighting : str or None
        The loss weighting, one of refdiff.WEIGHTINGS (None: the plain target MSE).
    gamma : float, default 5.0
        The truncation of the "min_snr" weighting.
    seed : int, default 0
        Seeds the one generator of the run (module docstring).
    ema_decay : float, default 0.999
        The EMA decay.
    ema_warmup : bool, default False
        Warm the EMA decay up, MATH.md (14.16).
    eval_every, eval_size : int
        Evaluate the EMA every ``eval_every`` updates (0: only at the end) on ``eval_size``
        fixed draws (0: never).
    checkpoint_every : int, default 0
        Write a checkpoint every so many updates (with ``out_dir``; and at the end).
    cond_dropout : float or dict, default 0.0
        The probability of replacing a condition by its null, as above, in [0, 1].
    warmup_steps : int, default 0
        Linear learning-rate warm-up, MATH.md (14.17).
    lr_decay : {"constant", "cosine"}
        The learning rate after warm-up.
    grad_clip : float, optional
        Clip the global gradient norm to this value, MATH.md (14.14).
    weight_decay : float, default 0.0
        Decoupled (AdamW) weight decay.
    betas : tuple of float, default (0.9, 0.999)
        Adam's (beta1, beta2).
    trainable, init_params, decay
        Fine-tuning: start from ``init_params`` (default: a fresh init) and update only the
        keys matching ``trainable`` (fnmatch patterns, MATH.md (14.20); default all);
        weight decay on the weight matrices only (``decay="matrices"``, (14.21)) or on
        every trainable key (``"all"``, the behaviour before).
    out_dir
        Checkpoints go to ``out_dir/checkpoint.npz`` (+ ``.json``) every
        ``checkpoint_every`` updates and at the end.  ``resume=True`` continues from it
        (bit-identically on NumPy) when it exists, after checking that the model config,
        schedule and training options (other than ``steps``, ``eval_every``,
        ``eval_size``, ``checkpoint_every``; ``steps`` too under ``lr_decay="cosine"``,
        whose rates depend on it) are the same; without ``resume`` an existing checkpoint is
        an error rather than being overwritten.
    progress : bool, default True
        Show a progress bar.
    dtype, xp
        Parameter and activation dtype ("float32" default) and array namespace (NumPy
        default; CuPy on a GPU).
    threads : int, default 1
        Run the network's forward and backward on this many slices of each batch, one
        Python thread each (:class:`refdiff.training.BatchThreads`): the same updates up
        to the order of float sums over the batch.  Faster on that many free cores with
        BLAS single-threaded (``OPENBLAS_NUM_THREADS=1``); not a checkpointed option.
    batch_parallel : {"threads", "processes"}, default "threads"
        What runs the slices beyond the first when ``threads`` > 1: Python threads
        (:class:`refdiff.training.BatchThreads`) or worker processes
        (:class:`refdiff.training.BatchProcesses`, NumPy only: no shared GIL, the same
        updates to the same float rounding as threads).  Not a checkpointed option.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        If an option is out of range, the data or conditions do not fit the model,
        ``init_params`` does not match the model, or a checkpoint exists in ``out_dir``
        without ``resume`` (or does not match the run with it).
    FloatingPointError
        If a loss or gradient norm is not finite.

    A NaN or inf loss or gradient stops training with FloatingPointError naming the
    step; the last checkpoint written (before the bad step) is left untouched.
    """
    _check_train_args(model, data, seed, lr, ema_decay, weight_decay,
                      dict(ema_warmup=ema_warmup, resume=resume, progress=progress))
    cfg = _config(model, schedule, dict(
        steps=steps, batch_size=batch_size, lr=lr, target=target, weighting=weighting, gamma=gamma, seed=seed,
        ema_decay=ema_decay, ema_warmup=ema_warmup, eval_every=eval_every, eval_size=eval_size,
        checkpoint_every=checkpoint_every, cond_dropout=cond_dropout, warmup_steps=warmup_steps, lr_decay=lr_decay,
        grad_clip=grad_clip, weight_decay=weight_decay, betas=betas, dtype=dtype, decay=decay,
        trainable=None if trainable is None else list([trainable] if isinstance(trainable, str) else trainable),
    ))
    xp = array_namespace() if xp is None else xp
    dt = getattr(xp, dtype)
    x, cond = _split_data(data)
    cond = _check_data(x, cond, model, "data")
    shape = tuple(x.shape[1:])
    if eval_data is None:
        ex, ec = x, cond
    else:
        ex, ec = _split_data(eval_data)
        ec = _check_data(ex, ec, model, "eval_data")
        if tuple(ex.shape[1:]) != shape:
            raise ValueError(f"eval_data has per-sample shape {tuple(ex.shape[1:])}, data has {shape}")
    eval_batch = _eval_batch(ex, ec, schedule, cfg, seed, shape)

    threads = check_int("threads", threads, 1)  # issue 19: a bool is not a count
    check_choice("batch_parallel", batch_parallel, ("threads", "processes"))
    net = model if threads == 1 else (BatchProcesses if batch_parallel == "processes" else BatchThreads)(model, threads)
    next_batch, loss_fn = _denoising_objective(net, x, cond, schedule, cfg, xp, dt)

    ckpt_path = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
    train_spec = {"params": True if trainable is None else trainable}
    if ckpt_path is not None and ckpt_path.exists() and resume:
        state = _resume(ckpt_path, model, schedule, cfg, xp, steps)
    else:
        if ckpt_path is not None and ckpt_path.exists():
            raise ValueError(f"{str(ckpt_path)!r} exists: pass resume=True to continue it, or use another out_dir")
        rng = np.random.default_rng(seed)
        params = model.init_params(rng, xp=xp, dtype=dtype)
        if init_params is not None:
            params = _start_from(params, init_params, xp, dt)
        state = init_state({"params": params, "ema": dict(params)}, train_spec, rng, steps)

    def save(st):
        hist = {"losses": st.losses[:st.step], "grad_norms": st.grad_norms[:st.step],
                "eval_steps": np.asarray(st.eval_steps, dtype=np.int64),
                "eval_losses": np.asarray(st.eval_losses, dtype=np.float64)}
        save_checkpoint(ckpt_path, model=model, params=st.groups["params"], ema_params=st.groups["ema"],
                        opt_state=st.opt, rng=st.rng, step=st.step, train_config=cfg, schedule=schedule,
                        history=hist, prediction_type=cfg["target"])
        return str(ckpt_path)

    start, evaluate = state.step, None
    if cfg["eval_size"] > 0:
        evaluate = lambda g: _mean_loss(model, g["ema"], eval_batch, schedule, cfg, xp, dt, batch_size)  # noqa: E731
    try:
        state = fit(loss_fn, state, next_batch, steps=steps, trainable=train_spec,
                    ema={"ema": ("params", ema_decay, ema_warmup)}, lr=lr, betas=cfg["betas"],
                    weight_decay=weight_decay, decay=decay, warmup_steps=warmup_steps, lr_decay=lr_decay,
                    grad_clip=grad_clip, evaluate=evaluate, eval_every=eval_every,
                    save=None if ckpt_path is None else save, checkpoint_every=checkpoint_every, progress=progress)
    finally:
        if net is not model:
            net.close()  # the worker threads or processes, also when the run fails
    saved_at_end = ckpt_path is not None and checkpoint_every and steps % checkpoint_every == 0 and steps > start
    if evaluate is not None and (not state.eval_steps or state.eval_steps[-1] != steps):
        state.eval_steps.append(steps)  # the final evaluation; not in a checkpoint written at this step already
        state.eval_losses.append(evaluate(state.groups))
    if ckpt_path is not None and not saved_at_end:
        save(state)
    return TrainResult(model, state.groups["params"], state.groups["ema"], state.opt, steps, state.losses,
                       np.asarray(state.eval_steps, dtype=np.int64), np.asarray(state.eval_losses), cfg, ckpt_path,
                       state.grad_norms)


def _denoising_objective(model, x, cond, schedule, cfg, xp, dt):
    """``(next_batch, loss_fn)`` of the denoising objective for :func:`refdiff.training.fit`:
    the batch is B data indices; the loss draws t and the noise, drops conditions per kind
    (14.10) and returns the loss (14.1)-(14.3) with the gradients of ``model.backward``."""
    B, shape, spec = cfg["batch_size"], tuple(x.shape[1:]), model.cond_spec

    def next_batch(rng):
        idx = rng.integers(0, x.shape[0], size=B)
        return x[idx], {k: v[idx] for k, v in cond.items()}

    def loss_fn(groups, batch, rng):
        x0, c = batch
        t = _draw_t(rng, schedule, B)
        noise = rng.standard_normal((B, *shape))
        c = _device_cond(c, slice(None), xp, dt)
        if spec.kinds and c:
            c = spec.drop(c, cfg["cond_dropout"], rng, B, xp, dt)
        loss, dout, cache = diffusion_loss(model.forward, groups["params"], xp.asarray(x0, dtype=dt), xp.asarray(t),
                                           xp.asarray(noise, dtype=dt), schedule, target=cfg["target"],
                                           weighting=cfg["weighting"], gamma=cfg["gamma"], cond=c)
        grads, _ = model.backward(groups["params"], cache, dout)
        return loss, {"params": grads}

    return next_batch, loss_fn


def _start_from(fresh: dict, given: dict, xp, dt) -> dict:
    """``init_params`` checked against the model's keys and shapes, in ``xp``/``dt``."""
    bad = sorted(set(fresh) ^ set(given))
    if bad:
        raise ValueError(f"init_params keys differ from the model's: {bad[:5]}")
    for k, v in fresh.items():
        if tuple(given[k].shape) != tuple(v.shape):
            raise ValueError(f"init_params[{k!r}] has shape {tuple(given[k].shape)}, the model's is {tuple(v.shape)}")
    return {k: xp.asarray(to_numpy(given[k]), dtype=dt) for k in fresh}


def _resume(ckpt_path, model, schedule, cfg, xp, steps) -> FitState:
    ck = load_checkpoint(ckpt_path, xp=xp)
    check_resumable(ck, ckpt_path, config=True)  # history, config, optimizer and RNG state present
    bad = _config_mismatch(ck.meta.get("train_config", {}), cfg)
    if ck.meta["model_config"] != model.to_dict():
        bad.append(f"model config: checkpoint {ck.meta['model_config']}, now {model.to_dict()}")
    if ck.meta.get("schedule") != describe_schedule(schedule):
        bad.append("schedule differs from the checkpoint's")
    if bad:
        raise ValueError(f"cannot resume from {str(ckpt_path)!r}: " + "; ".join(bad))
    if ck.step > steps:
        raise ValueError(f"the checkpoint is at step {ck.step}, beyond steps = {steps}")
    h, start = ck.history, ck.step
    losses, gnorms = np.full(steps, np.nan), np.full(steps, np.nan)
    losses[:start], gnorms[:start] = h["losses"][:start], h["grad_norms"][:start]
    return FitState({"params": ck.params, "ema": ck.ema_params, **ck.groups}, ck.opt_state, start, ck.rng(),
                    losses, gnorms, list(h["eval_steps"]), list(h["eval_losses"]))
