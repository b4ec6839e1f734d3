"""Optimisers as pure functions of (params, grads, state), MATH.md chapter 14.

Parameters, gradients and optimiser moments are flat dicts ``{name: array}`` with the
same keys.  Nothing is updated in place and nothing is kept on objects: every function
returns new dicts, so a training step is ``params, state = adam_update(params, grads,
state, lr=...)`` and a checkpoint of ``(params, state)`` is the whole optimiser.

The optimiser state is a flat dict: ``"step"`` (the number of updates already taken,
a Python int) and, for every parameter ``k``, ``"m/" + k`` and ``"v/" + k`` (the first
and second moment estimates, arrays of the parameter's shape and dtype).
"""

from __future__ import annotations

import math

from ..backend import array_namespace

__all__ = [
    "adam_init",
    "adam_update",
    "clip_grad_norm",
    "global_norm",
    "ema_update",
    "ema_decay_warmup",
    "warmup_lr",
    "cosine_lr",
]


def _check_same_keys(params: dict, grads: dict) -> None:
    if set(params) != set(grads):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"grads keys differ from params keys: missing {missing}, unexpected {extra}")
    for k in params:
        if tuple(params[k].shape) != tuple(grads[k].shape):
            raise ValueError(
                f"grads[{k!r}] has shape {tuple(grads[k].shape)}, params[{k!r}] has shape {tuple(params[k].shape)}"
            )


def adam_init(params: dict) -> dict:
    """The Adam state before the first step: zero moments of each parameter's shape and
    dtype, and ``"step": 0`` (MATH.md (14.11))."""
    state = {"step": 0}
    for k, p in params.items():
        xp = array_namespace(p)
        state["m/" + k] = xp.zeros_like(p)
        state["v/" + k] = xp.zeros_like(p)
    return state


def adam_update(
    params: dict,
    grads: dict,
    state: dict,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = True,
):
    """One Adam / AdamW step; returns ``(new_params, new_state)``, MATH.md (14.11)-(14.13).

    With ``k = state["step"] + 1`` (the number of this update, 1-based)::

        g   <- g + weight_decay * p                   (only if not decoupled: L2, (14.13))
        m   <- beta1 m + (1 - beta1) g
        v   <- beta2 v + (1 - beta2) g^2
        p   <- p - lr * weight_decay * p               (only if decoupled: AdamW, (14.12))
        p   <- p - lr * (m / (1 - beta1^k)) / (sqrt(v / (1 - beta2^k)) + eps)

    ``decoupled=True`` with ``weight_decay > 0`` is AdamW as implemented by
    ``torch.optim.AdamW`` (decay multiplied by ``lr``); ``decoupled=False`` is
    ``torch.optim.Adam(weight_decay=...)`` (L2 penalty folded into the gradient).  With
    ``weight_decay = 0`` both are Adam (Kingma & Ba 2015, Algorithm 1).  ``eps`` is added
    to the bias-corrected root, as in PyTorch and the paper's Algorithm 1.
    """
    b1, b2 = (float(b) for b in betas)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas must each lie in [0, 1), got {betas!r}")
    if not lr >= 0.0:
        raise ValueError(f"lr must be >= 0, got {lr!r}")
    if not eps > 0.0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    _check_same_keys(params, grads)
    missing = [k for k in params if "m/" + k not in state or "v/" + k not in state]
    if "step" not in state or missing:
        raise ValueError(f"state is not an Adam state for these params (missing moments for {missing[:5]}); use adam_init(params)")
    k = int(state["step"]) + 1
    bc1 = 1.0 - b1**k  # bias corrections of (14.11)
    bc2 = 1.0 - b2**k
    lr, wd = float(lr), float(weight_decay)
    new_params, new_state = {}, {"step": k}
    for name, p in params.items():
        xp = array_namespace(p)
        g = grads[name]
        if wd and not decoupled:
            g = g + wd * p
        m = b1 * state["m/" + name] + (1.0 - b1) * g
        v = b2 * state["v/" + name] + (1.0 - b2) * (g * g)
        if wd and decoupled:
            p = p * (1.0 - lr * wd)
        new_params[name] = p - (lr / bc1) * m / (xp.sqrt(v / bc2) + eps)
        new_state["m/" + name] = m
        new_state["v/" + name] = v
    return new_params, new_state


def global_norm(grads: dict) -> float:
    """The global Euclidean norm sqrt(sum_k ||g_k||^2) over all arrays (a Python float,
    accumulated in float64), MATH.md (14.14)."""
    total = 0.0
    for g in grads.values():
        xp = array_namespace(g)
        g64 = xp.astype(g, xp.float64)
        total += float(xp.sum(g64 * g64))
    return math.sqrt(total)


def clip_grad_norm(grads: dict, max_norm: float, *, eps: float = 0.0):
    """Clip by global norm, MATH.md (14.14): returns ``(clipped_grads, norm)`` with
    ``norm`` the global norm *before* clipping and every gradient scaled by
    ``min(1, max_norm / (norm + eps))``.

    ``eps = 0`` (default) gives a clipped norm of exactly ``max_norm`` (to rounding);
    ``eps = 1e-6`` reproduces ``torch.nn.utils.clip_grad_norm_``.  A non-finite norm is
    returned as is and the gradients are left unscaled, so the caller can detect it.
    """
    if not max_norm > 0.0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    norm = global_norm(grads)
    if not math.isfinite(norm):
        return dict(grads), norm
    scale = float(max_norm) / (norm + eps)
    if scale >= 1.0:
        return dict(grads), norm
    return {k: g * scale for k, g in grads.items()}, norm


def ema_update(ema_params: dict, params: dict, decay: float) -> dict:
    """Exponential moving average of parameters, MATH.md (14.15):
    ``ema <- decay * ema + (1 - decay) * params``; returns a new dict."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
    _check_same_keys(params, ema_params)
    d = float(decay)
    return {k: d * ema_params[k] + (1.0 - d) * params[k] for k in params}


def ema_decay_warmup(step: int, decay: float) -> float:
    """The EMA decay actually used after ``step`` updates when warming it up,
    ``min(decay, (1 + step) / (10 + step))`` (the TensorFlow ExponentialMovingAverage
    ``num_updates`` rule), MATH.md (14.16).  Early averages then forget the random
    initialisation quickly."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(float(decay), (1.0 + step) / (10.0 + step))


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear learning-rate warm-up, MATH.md (14.17): the rate for the update that
    follows ``step`` completed updates (0-based) is ``base_lr * min(1, (step + 1) /
    warmup_steps)``; ``warmup_steps = 0`` means no warm-up.

    The DDPM release uses ``min(1, step / warmup)``, whose first update has rate 0;
    pass ``step - 1`` to reproduce it."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps == 0:
        return float(base_lr)
    return float(base_lr) * min(1.0, (step + 1) / warmup_steps)


def cosine_lr(step: int, base_lr: float, total_steps: int, *, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Linear warm-up then cosine decay to ``min_lr`` at ``total_steps``, MATH.md (14.17):
    after warm-up, with ``u = (step - warmup) / (total - warmup)`` clipped to [0, 1]
    (``step`` = updates already taken, 0-based),
    ``lr = min_lr + (base_lr - min_lr) (1 + cos(pi u)) / 2``."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps must exceed warmup_steps, got {total_steps} <= {warmup_steps}")
    if step < warmup_steps:
        return warmup_lr(step, base_lr, warmup_steps)
    u = min(1.0, max(0.0, (step - warmup_steps) / (total_steps - warmup_steps)))
    return float(min_lr) + (float(base_lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * u))
