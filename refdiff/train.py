"""The training loop, MATH.md chapter 14.

``train(model, data, schedule=..., steps=...)`` fits a hand-written denoiser
(:class:`refdiff.nn.MLP` / :class:`refdiff.nn.UNet`) by Adam(W) on the denoising objective
of :mod:`refdiff.losses`, keeps an EMA of the parameters, evaluates the EMA on a fixed
held-out batch, and writes checkpoints that resume bit-identically on NumPy.

Randomness: one ``numpy.random.Generator`` ``rng = default_rng(seed)`` draws, in this
order, the initial parameters and then, at every step, the batch indices
(``rng.integers(0, N, B)``), the timesteps (``rng.integers(0, T, B)`` for a discrete
Schedule; ``rng.uniform(t_min, 1, B)`` for a continuous VP, t = 0 data), the noise
(``rng.standard_normal((B, *shape))``) and, for a conditional model, the condition
dropout mask (``rng.random(B)``).  Its state is checkpointed.  The evaluation batch is
drawn once from a separate generator ``default_rng([seed, 1])``, so evaluating never
changes the training stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import array_namespace
from .losses import canonical_target, check_labels, diffusion_loss, drop_labels
from .nn.checkpoint import describe_schedule, load_checkpoint, save_checkpoint
from .nn.optim import adam_init, adam_update, clip_grad_norm, cosine_lr, ema_decay_warmup, ema_update, global_norm, warmup_lr
from .schedules import Schedule, _ContinuousVP

__all__ = ["TrainResult", "train", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.npz"
_NOT_COMPARED_ON_RESUME = ("steps", "eval_every", "eval_size", "checkpoint_every")


@dataclass
class TrainResult:
    """What :func:`train` returns.  ``losses[k]`` is the training loss of update k;
    ``eval_steps``/``eval_losses`` the held-out loss of the EMA parameters after that
    many updates; ``checkpoint`` the path of the last checkpoint (or None)."""

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

    def ema_model(self, y=None):
        """The EMA parameters as a plain callable ``model(x, t)``."""
        return self.model.as_model(self.ema_params, y)


def _split_data(data):
    """(x, y) host arrays from a Dataset, an (x, y) tuple or an array."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return np.asarray(data.x), None if data.y is None else np.asarray(data.y)
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"data as a tuple must be (x, y), got {len(data)} entries")
        return np.asarray(data[0]), None if data[1] is None else np.asarray(data[1])
    return np.asarray(data), None


def _check_data(x, y, model, name):
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    K = int(getattr(model.config, "num_classes", 0))
    if K == 0:
        return None  # an unconditional model ignores labels
    if y is None:
        raise ValueError(f"the model is class-conditional (num_classes = {K}) but {name} has no labels")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} labels must have shape ({x.shape[0]},), got {y.shape}")
    check_labels(y, K, name=f"{name} labels")
    return y.astype(np.int64)


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
    if not 0.0 <= kw["cond_dropout"] <= 1.0:
        raise ValueError(f"cond_dropout must lie in [0, 1], got {kw['cond_dropout']!r}")
    if kw["lr_decay"] not in ("constant", "cosine"):
        raise ValueError(f"lr_decay must be 'constant' or 'cosine', got {kw['lr_decay']!r}")
    if kw["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {kw['dtype']!r}")
    if kw["grad_clip"] is not None and not kw["grad_clip"] > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {kw['grad_clip']!r}")
    cfg = dict(kw)
    cfg["target"] = canonical_target(cfg["target"])
    cfg["betas"] = [float(b) for b in cfg["betas"]]
    return cfg


def _config_mismatch(saved: dict, now: dict) -> list[str]:
    free = set(_NOT_COMPARED_ON_RESUME)
    if now.get("lr_decay") == "cosine":
        free.discard("steps")  # the cosine rate of every update depends on the total, (14.17)
    keys = (set(saved) | set(now)) - free
    return [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(keys) if saved.get(k) != now.get(k)]


def _eval_batch(x, y, schedule, cfg, seed, shape):
    """The fixed held-out evaluation draws (x0, t, noise, y), from default_rng([seed, 1])."""
    n = cfg["eval_size"]
    erng = np.random.default_rng([seed, 1])
    idx = erng.integers(0, x.shape[0], size=n) if n > 0 else np.zeros(0, dtype=np.int64)
    t = _draw_t(erng, schedule, n)
    noise = erng.standard_normal((n, *shape))
    return x[idx], t, noise, None if y is None else y[idx]


def _mean_loss(model, params, batch, schedule, cfg, xp, dt, chunk):
    """The objective on a fixed batch (no gradients), averaged over its samples."""
    x0, t, noise, y = batch
    total, n = 0.0, x0.shape[0]
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        yy = None if y is None else xp.asarray(y[sl])
        loss, _, _ = diffusion_loss(
            model.forward, params, xp.asarray(x0[sl], dtype=dt), xp.asarray(t[sl]), xp.asarray(noise[sl], dtype=dt),
            schedule, target=cfg["target"], weighting=cfg["weighting"], gamma=cfg["gamma"], y=yy,
        )
        total += float(loss) * (sl.stop - sl.start)
    return total / n


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
    cond_dropout: float = 0.0,
    warmup_steps: int = 0,
    lr_decay: str = "constant",
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    betas=(0.9, 0.999),
    resume: bool = False,
    progress: bool = True,
    dtype: str = "float32",
    xp=None,
) -> TrainResult:
    """Train ``model`` on ``data`` for ``steps`` updates; returns a :class:`TrainResult`.

    Each update: draw a batch, timesteps and noise (module docstring), evaluate
    :func:`refdiff.losses.diffusion_loss` (``target``, ``weighting``, ``gamma``;
    MATH.md (14.1)-(14.3), (14.6)), backpropagate through ``model.backward``, optionally
    clip by global norm (14.14), take an AdamW step (14.11)-(14.13) at the warmed-up rate
    (14.17), and update the EMA (14.15)-(14.16).  For a class-conditional model the labels
    are replaced by the null class with probability ``cond_dropout`` (14.10).

    data, eval_data
        A :class:`refdiff.data.Dataset`, an ``(x, y)`` tuple or an array ``x`` (N, ...)
        of host data.  The EMA is evaluated every ``eval_every`` updates (and at the end)
        on ``eval_size`` fixed draws from ``eval_data`` (default: from ``data``, which
        then is not held out).
    out_dir
        Checkpoints go to ``out_dir/checkpoint.npz`` (+ ``.json``) every
        ``checkpoint_every`` updates and at the end.  ``resume=True`` continues from it
        (bit-identically on NumPy) when it exists, after checking that the model config,
        schedule and training options (other than ``steps``, ``eval_every``,
        ``eval_size``, ``checkpoint_every``; ``steps`` too under ``lr_decay="cosine"``,
        whose rates depend on it) are the same; without ``resume`` an existing checkpoint is an
        error rather than being overwritten.
    dtype, xp
        Parameter and activation dtype ("float32" default) and array namespace (NumPy
        default; CuPy on a GPU).

    A NaN or inf loss or gradient stops training with FloatingPointError naming the
    step; the last checkpoint written (before the bad step) is left untouched.
    """
    from tqdm.auto import tqdm

    cfg = _config(model, schedule, dict(
        steps=steps, batch_size=batch_size, lr=lr, target=target, weighting=weighting, gamma=gamma, seed=seed,
        ema_decay=ema_decay, ema_warmup=ema_warmup, eval_every=eval_every, eval_size=eval_size,
        checkpoint_every=checkpoint_every, cond_dropout=cond_dropout, warmup_steps=warmup_steps, lr_decay=lr_decay,
        grad_clip=grad_clip, weight_decay=weight_decay, betas=betas, dtype=dtype,
    ))
    xp = array_namespace() if xp is None else xp
    dt = getattr(xp, dtype)
    x, y = _split_data(data)
    y = _check_data(x, y, model, "data")
    shape = tuple(x.shape[1:])
    if eval_data is None:
        ex, ey = x, y
    else:
        ex, ey = _split_data(eval_data)
        ey = _check_data(ex, ey, model, "eval_data")
        if tuple(ex.shape[1:]) != shape:
            raise ValueError(f"eval_data has per-sample shape {tuple(ex.shape[1:])}, data has {shape}")
    eval_batch = _eval_batch(ex, ey, schedule, cfg, seed, shape)
    K = int(getattr(model.config, "num_classes", 0))

    ckpt_path = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
    losses, gnorms = np.full(steps, np.nan), np.full(steps, np.nan)
    eval_steps, eval_losses = [], []
    if ckpt_path is not None and ckpt_path.exists() and resume:
        ck = load_checkpoint(ckpt_path, xp=xp)
        bad = _config_mismatch(ck.meta.get("train_config", {}), cfg)
        if ck.meta["model_config"] != model.to_dict():
            bad.append(f"model config: checkpoint {ck.meta['model_config']}, now {model.to_dict()}")
        if ck.meta.get("schedule") != describe_schedule(schedule):
            bad.append("schedule differs from the checkpoint's")
        if bad:
            raise ValueError(f"cannot resume from {str(ckpt_path)!r}: " + "; ".join(bad))
        if ck.step > steps:
            raise ValueError(f"the checkpoint is at step {ck.step}, beyond steps = {steps}")
        params, ema, opt, start, rng = ck.params, ck.ema_params, ck.opt_state, ck.step, ck.rng()
        h = ck.history
        losses[:start], gnorms[:start] = h["losses"][:start], h["grad_norms"][:start]
        eval_steps, eval_losses = list(h["eval_steps"]), list(h["eval_losses"])
    else:
        if ckpt_path is not None and ckpt_path.exists():
            raise ValueError(f"{str(ckpt_path)!r} exists: pass resume=True to continue it, or use another out_dir")
        rng = np.random.default_rng(seed)
        params = model.init_params(rng, xp=xp, dtype=dtype)
        ema, opt, start = dict(params), adam_init(params), 0

    last_saved = None

    def save(step_done):
        nonlocal last_saved
        hist = {"losses": losses[:step_done], "grad_norms": gnorms[:step_done],
                "eval_steps": np.asarray(eval_steps, dtype=np.int64), "eval_losses": np.asarray(eval_losses, dtype=np.float64)}
        save_checkpoint(ckpt_path, model=model, params=params, ema_params=ema, opt_state=opt, rng=rng,
                        step=step_done, train_config=cfg, schedule=schedule, history=hist)
        last_saved = step_done

    def evaluate(step_done):
        if cfg["eval_size"] > 0 and (not eval_steps or eval_steps[-1] != step_done):
            eval_steps.append(step_done)
            eval_losses.append(_mean_loss(model, ema, eval_batch, schedule, cfg, xp, dt, batch_size))

    bar = tqdm(total=steps, initial=start, disable=not progress, desc="train", dynamic_ncols=True)
    try:
        for step in range(start, steps):
            idx = rng.integers(0, x.shape[0], size=batch_size)
            t = _draw_t(rng, schedule, batch_size)
            noise = rng.standard_normal((batch_size, *shape))
            yb = None
            if K:
                yb = drop_labels(xp.asarray(y[idx]), cfg["cond_dropout"], rng, K)
            loss, dout, cache = diffusion_loss(
                model.forward, params, xp.asarray(x[idx], dtype=dt), xp.asarray(t), xp.asarray(noise, dtype=dt),
                schedule, target=cfg["target"], weighting=weighting, gamma=gamma, y=yb,
            )
            losses[step] = float(loss)
            grads, _ = model.backward(params, cache, dout)
            if grad_clip is not None:
                grads, gnorms[step] = clip_grad_norm(grads, grad_clip)
            else:
                gnorms[step] = global_norm(grads)
            if not (math.isfinite(losses[step]) and math.isfinite(gnorms[step])):
                what = "loss" if not math.isfinite(losses[step]) else "gradient norm"
                kept = (f"the last good checkpoint {str(ckpt_path)!r} (after step {last_saved}) is kept"
                        if last_saved is not None else "no checkpoint was written in this run")
                raise FloatingPointError(
                    f"training {what} is {losses[step] if what == 'loss' else gnorms[step]} at step {step} "
                    f"(0-based update index); training stopped; {kept}"
                )
            params, opt = adam_update(params, grads, opt, lr=_lr_at(step, cfg), betas=cfg["betas"],
                                      weight_decay=weight_decay, decoupled=True)
            decay = ema_decay_warmup(step, ema_decay) if ema_warmup else ema_decay
            ema = ema_update(ema, params, decay)
            done = step + 1
            if eval_every and done % eval_every == 0:
                evaluate(done)
            if ckpt_path is not None and checkpoint_every and done % checkpoint_every == 0:
                save(done)
            if progress and (done % 10 == 0 or done == steps):
                lo = max(start, done - 50)
                bar.set_postfix(loss=f"{np.mean(losses[lo:done]):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    evaluate(steps)
    if ckpt_path is not None and last_saved != steps:
        save(steps)
    return TrainResult(model, params, ema, opt, steps, losses, np.asarray(eval_steps, dtype=np.int64),
                       np.asarray(eval_losses), cfg, ckpt_path, gnorms)
