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
import numbers

import numpy as _np

from array_api_compat import device as _device

from .._validate import check_bool, check_finite_scalar
from ..backend import array_namespace
from ._check import MAX_STEP, check_array_dict, check_optim_scalars, check_size

__all__ = [
    "adam_init",
    "adam_update",
    "FlatAdam",
    "adam_update_flat",
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
    dtype, and ``"step": 0`` (MATH.md (14.11)).

    Parameters
    ----------
    params : dict of str to array
        The parameters ``{name: array}``.

    Returns
    -------
    dict
        ``{"step": 0}`` with ``"m/" + k`` and ``"v/" + k`` zero arrays of each parameter's
        shape and dtype.
    """
    check_array_dict("params", params)  # issue 19
    state = {"step": 0}
    for k, p in params.items():
        xp = array_namespace(p)
        state["m/" + k] = xp.zeros_like(p)
        state["v/" + k] = xp.zeros_like(p)
    return state


def _check_adam(params, grads, state, lr, betas, eps, weight_decay):
    check_array_dict("params", params)  # issue 19: types, dtypes and hyper-parameters by name
    check_array_dict("grads", grads)
    if not isinstance(state, dict) or isinstance(state.get("step"), bool) \
            or not isinstance(state.get("step"), numbers.Integral) or state["step"] < 0:
        raise TypeError("state must be an Adam state dict with an int 'step' >= 0; use adam_init(params)")
    check_optim_scalars(lr, betas, eps, weight_decay)
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
    return b1, b2, float(lr), float(weight_decay)


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

    Parameters
    ----------
    params : dict of str to array
        The parameters ``{name: array}``.
    grads : dict of str to array
        Their gradients: the same keys and shapes.
    state : dict
        The Adam state (from :func:`adam_init` or a previous update).
    lr : float
        Learning rate, >= 0.
    betas : tuple of float, default (0.9, 0.999)
        The moment decay rates (beta1, beta2), each in [0, 1).
    eps : float, default 1e-8
        Added to the bias-corrected root of the second moment, > 0.
    weight_decay : float, default 0.0
        Weight-decay coefficient, >= 0.
    decoupled : bool, default True
        True: AdamW decay (14.12); False: L2 penalty folded into the gradient (14.13).

    Returns
    -------
    new_params : dict of str to array
        The updated parameters (new arrays).
    new_state : dict
        ``"step"`` incremented by one and the updated moments.

    Raises
    ------
    ValueError
        If a beta is outside [0, 1), ``lr < 0``, ``eps <= 0``, ``weight_decay < 0``, the keys
        or shapes of ``grads`` differ from ``params``, or ``state`` lacks the moments of a
        parameter.
    """
    check_bool("decoupled", decoupled)  # issue 19
    b1, b2, lr, wd = _check_adam(params, grads, state, lr, betas, eps, weight_decay)
    k = int(state["step"]) + 1
    bc1 = 1.0 - b1**k  # bias corrections of (14.11)
    bc2 = 1.0 - b2**k
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


class _Bucket:
    """One flat layout: the parameter names of one dtype, their shapes and offsets, the
    decay mask, and (after an update) the flat p, m, v and the views handed out."""

    def __init__(self, xp, names, arrays, decayed):
        self.names = tuple(names)
        self.shapes = tuple(tuple(a.shape) for a in arrays)
        self.offsets = [0]
        for a in arrays:
            self.offsets.append(self.offsets[-1] + math.prod(a.shape))
        dev = _device(arrays[0])
        self.dtype = arrays[0].dtype
        self.all_decayed = all(n in decayed for n in names)
        self.none_decayed = not any(n in decayed for n in names)
        self.mask = None
        if not (self.all_decayed or self.none_decayed):
            self.mask = xp.concat([xp.full((math.prod(s),), n in decayed, dtype=xp.bool, device=dev)
                                   for n, s in zip(self.names, self.shapes)])
        self.mkeys = tuple("m/" + n for n in self.names)  # the state's keys of the moments
        self.vkeys = tuple("v/" + n for n in self.names)
        self.flat = None  # (P, M, V) after an update
        self.views = None  # the (p, m, v) view tuples of those flats

    def split(self, xp, F):
        """Views of the flat array F, one per name: reshaped slices."""
        o = self.offsets
        return tuple(xp.reshape(F[o[i]:o[i + 1]], s) for i, s in enumerate(self.shapes))

    def gather(self, xp, arrays, slot):
        """The flat array of ``arrays``: the cached flat one when every array is still the
        view handed out last time (no copy), their concatenation otherwise."""
        if self.views is not None and all(a is b for a, b in zip(arrays, self.views[slot])):
            return self.flat[slot], False
        return xp.concat([xp.reshape(a, (-1,)) for a in arrays]), True


class FlatAdam:
    """Adam / AdamW (MATH.md (14.11), (14.12), (14.13)) as one fused update over one flat
    array per dtype, with the parameters, moments and gradients as views into it.

    Same arguments and results as :func:`adam_update` (which stays the reference), plus
    ``decayed``: the names weight decay applies to (None: all), which lets one call do what
    :func:`adam_update` needs one call per decay subset for.  The update is elementwise
    and applies exactly the same floating-point operations in the same order to every
    element as :func:`adam_update` (a per-element choice by ``where`` replaces the per-key
    choice of decay, and a multiplication by 1.0 is never performed), so the results are
    bit-identical; ``tests/test_optim_flat.py`` checks it.

    The object only caches: the flat arrays of the last update and the views it returned.
    When the next call receives exactly those views (``is``), their flat arrays are used
    without copying; anything else (a resumed checkpoint, a caller's own arrays) is
    concatenated first, with the same values.  Nothing is updated in place: every update
    returns new flat arrays (so earlier results stay valid), which works in any array-API
    namespace (NumPy, array_api_strict, CuPy): a handful of whole-array operations
    instead of a chain of them per parameter tensor (on a GPU, kernel launches).

    ``inplace=True`` (what :func:`refdiff.training.fit` uses; NumPy and CuPy only, other
    namespaces fall back to new arrays): when the next call receives the views of the last
    result, the flat buffers are updated IN PLACE with ``out=`` ufuncs and two scratch
    buffers, so the arrays returned by the previous call change too (copy them to keep a
    snapshot).  Arrays the object did not hand out are never written: they are gathered
    into new buffers first.

    Parameters
    ----------
    inplace : bool, default False
        Update the flat buffers of the previous result in place when it is passed back
        (NumPy and CuPy only).
    """

    def __init__(self, inplace: bool = False):
        self.inplace = check_bool("inplace", inplace)  # issue 19
        self._buckets = {}

    def _bucket(self, xp, names, arrays, decayed):
        last = self._buckets.get(names)  # the last layout of these names: reused while it fits
        if last is not None and last.decayed == decayed & set(names) and (
                (last.views is not None and all(a is v for a, v in zip(arrays, last.views[0])))
                or last.shapes == tuple(tuple(a.shape) for a in arrays)) and last.dtype == arrays[0].dtype:
            return last
        b = self._buckets[names] = _Bucket(xp, names, arrays, decayed)
        b.decayed = frozenset(decayed & set(names))
        return b

    def update(self, params: dict, grads: dict, state: dict, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled: bool = True, decayed=None):
        """One step; returns ``(new_params, new_state)`` like :func:`adam_update`
        (``new_state``: ``"step"`` and the moments of ``params``' keys).

        Parameters
        ----------
        params, grads, state, lr, betas, eps, weight_decay, decoupled
            As in :func:`adam_update`.
        decayed : iterable of str or None, default None
            The parameter names weight decay applies to; None: all of them.

        Returns
        -------
        new_params : dict of str to array
            The updated parameters (views into one flat array per dtype).
        new_state : dict
            ``"step"`` incremented by one and the updated moments (views likewise).

        Raises
        ------
        ValueError
            For the invalid arguments listed in :func:`adam_update`.
        """
        check_bool("decoupled", decoupled)  # issue 19
        fast = self._fast_update(params, grads, state, lr, betas, eps, weight_decay, decoupled, decayed)
        if fast is not None:
            return fast
        b1, b2, lr, wd = _check_adam(params, grads, state, lr, betas, eps, weight_decay)
        k = int(state["step"]) + 1
        bc1, bc2 = 1.0 - b1**k, 1.0 - b2**k
        decayed = frozenset(params) if decayed is None else frozenset(decayed)
        by_dtype = {}
        for n, p in params.items():
            by_dtype.setdefault(p.dtype, []).append(n)
        new_params, new_state = {}, {"step": k}
        for names in by_dtype.values():
            names = tuple(names)
            xp = array_namespace(params[names[0]])
            b = self._bucket(xp, names, [params[n] for n in names], decayed)
            (P, fp), (M, fm), (V, fv) = (b.gather(xp, [src[n] for n in names], i) for i, src in enumerate(
                (params, {n: state["m/" + n] for n in names}, {n: state["v/" + n] for n in names})))
            G = xp.concat([xp.reshape(grads[n], (-1,)) for n in names])
            w = wd if not b.none_decayed else 0.0
            if _has_out(P) and (decoupled or not w):
                if not self.inplace:  # never write the arrays of an earlier result
                    P, M, V = (F if f else xp.asarray(F, copy=True) for F, f in ((P, fp), (M, fm), (V, fv)))
                P, M, V = _flat_step_out(b, P, G, M, V, b1, b2, bc1, bc2, lr, eps, w)
            else:
                P, M, V = _flat_step(xp, b, P, G, M, V, b1, b2, bc1, bc2, lr, eps, w, decoupled)
            if not (self.inplace and b.flat is not None and P is b.flat[0] and M is b.flat[1] and V is b.flat[2]):
                b.flat = (P, M, V)  # (updated in place, the buffers and their views are unchanged)
                b.views = (b.split(xp, P), b.split(xp, M), b.split(xp, V))
            for i, n in enumerate(names):
                new_params[n] = b.views[0][i]
                new_state["m/" + n], new_state["v/" + n] = b.views[1][i], b.views[2][i]
        one = len(by_dtype) == 1 and type(b.flat[0]) is _np.ndarray and _has_out(b.flat[0])
        self._last = (tuple(params), b) if one and self.inplace and b.flat[0].ndim == 1 else None
        return new_params, new_state

    def _fast_update(self, params, grads, state, lr, betas, eps, weight_decay, decoupled, decayed):
        """The in-place update of the training loop without the per-parameter checks of
        arrays this object built itself: when ``params`` and ``state``'s moments are exactly
        the views the last in-place update returned (one NumPy dtype, the same keys in the
        same order, ``is``) and every gradient is an array of that type, dtype and its
        parameter's shape, the gradients are copied into one persistent flat buffer (one
        ``concatenate(out=)``) and :func:`_flat_step_out` runs on the kept buffers: the same
        operations as the general path, so the same bits (tests/test_optim_flat.py).
        Returns None (then the general, fully checked path runs) in any other case."""
        last = getattr(self, "_last", None)
        if last is None or type(params) is not dict or type(grads) is not dict or type(state) is not dict:
            return None
        order, b = last
        step = state.get("step")
        if tuple(params) != order or len(grads) != len(order) or type(step) is not int or step < 0 \
                or (weight_decay and not decoupled):
            return None
        vp, vm, vv = b.views
        for n, mk, vk, p, m, v in zip(order, b.mkeys, b.vkeys, vp, vm, vv):
            if params[n] is not p or state.get(mk) is not m or state.get(vk) is not v:
                return None
        dt = b.dtype
        gs = []
        for n, shape in zip(order, b.shapes):
            g = grads.get(n)
            if type(g) is not _np.ndarray or g.dtype != dt or g.shape != shape:
                return None
            gs.append(g.reshape(-1))
        check_optim_scalars(lr, betas, eps, weight_decay)  # the hyper-parameters, by name (cheap)
        wanted = frozenset(order) if decayed is None else frozenset(decayed) & frozenset(order)
        if wanted != b.decayed:
            return None
        P, M, V = b.flat
        if getattr(b, "gbuf", None) is None or b.gbuf.shape != P.shape:
            b.gbuf = _np.empty_like(P)
        G = _np.concatenate(gs, out=b.gbuf)
        b1, b2 = (float(x) for x in betas)
        lr, wd, k = float(lr), float(weight_decay), step + 1
        _flat_step_out(b, P, G, M, V, b1, b2, 1.0 - b1**k, 1.0 - b2**k, lr, eps, wd if not b.none_decayed else 0.0)
        new_state = {"step": k}
        new_state.update(zip(b.mkeys, vm))
        new_state.update(zip(b.vkeys, vv))
        return dict(zip(order, vp)), new_state


def _has_out(P) -> bool:
    """NumPy and CuPy arrays take ``out=`` ufuncs; other namespaces get the plain chain."""
    return type(P).__module__.split(".")[0] in ("numpy", "cupy")


def _flat_step_out(b, P, G, M, V, b1, b2, bc1, bc2, lr, eps, wd):
    """:func:`_flat_step` (decoupled decay or none) IN PLACE on P, M, V with ``out=``
    ufuncs and two scratch buffers kept on the bucket (no fresh temporaries: page faults
    on the host, allocations on a GPU).  The same operations in the same order, so the
    same bits (an IEEE sum is commutative; masked-out elements are not written)."""
    ns = __import__(type(P).__module__.split(".")[0])
    if getattr(b, "scratch", None) is None or b.scratch[0].shape != P.shape:
        b.scratch = (ns.empty_like(P), ns.empty_like(P))
    t1, t2 = b.scratch
    M *= b1
    ns.multiply(G, 1.0 - b1, out=t1)
    M += t1
    V *= b2
    ns.multiply(G, G, out=t1)
    t1 *= 1.0 - b2
    V += t1
    if wd:
        if b.mask is None:
            P *= 1.0 - lr * wd
        else:
            ns.multiply(P, 1.0 - lr * wd, out=t1)
            ns.copyto(P, t1, where=b.mask)  # (CuPy ufuncs take no where=; copyto does)
    ns.divide(V, bc2, out=t1)
    ns.sqrt(t1, out=t1)
    t1 += eps
    ns.multiply(M, lr / bc1, out=t2)
    t2 /= t1
    P -= t2
    return P, M, V


def _flat_step(xp, b, P, G, M, V, b1, b2, bc1, bc2, lr, eps, wd, decoupled):
    """The elementwise update of :func:`adam_update` on flat arrays, MATH.md (14.11);
    decay (14.12) / (14.13) on the elements of decayed keys only (``b.mask``)."""
    if wd and not decoupled:
        G = G + wd * P if b.mask is None else xp.where(b.mask, G + wd * P, G)
    M = b1 * M + (1.0 - b1) * G
    V = b2 * V + (1.0 - b2) * (G * G)
    if wd and decoupled:
        P = P * (1.0 - lr * wd) if b.mask is None else xp.where(b.mask, P * (1.0 - lr * wd), P)
    return P - (lr / bc1) * M / (xp.sqrt(V / bc2) + eps), M, V


def adam_update_flat(params: dict, grads: dict, state: dict, **kw):
    """:func:`adam_update` through :class:`FlatAdam` (no cache kept): bit-identical
    results, MATH.md (14.11).

    Parameters
    ----------
    params : dict of str to array
        The parameters.
    grads : dict of str to array
        Their gradients: the same keys and shapes.
    state : dict
        The Adam state.
    **kw
        The keyword arguments of :meth:`FlatAdam.update` (``lr``, ``betas``, ``eps``,
        ``weight_decay``, ``decoupled``, ``decayed``).

    Returns
    -------
    new_params : dict of str to array
        The updated parameters.
    new_state : dict
        The updated Adam state.

    Raises
    ------
    ValueError
        For the invalid arguments listed in :func:`adam_update`.
    """
    return FlatAdam().update(params, grads, state, **kw)


def global_norm(grads: dict) -> float:
    """The global Euclidean norm sqrt(sum_k ||g_k||^2) over all arrays (a Python float,
    accumulated in float64), MATH.md (14.14).

    Parameters
    ----------
    grads : dict of str to array
        The arrays whose joint norm is taken.

    Returns
    -------
    float
        The global Euclidean norm.
    """
    check_array_dict("grads", grads)  # issue 19
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

    Parameters
    ----------
    grads : dict of str to array
        The gradients.
    max_norm : float
        The largest global norm kept, > 0.
    eps : float, default 0.0
        Added to the norm in the scale's denominator.

    Returns
    -------
    clipped_grads : dict of str to array
        The gradients, scaled when the norm exceeds ``max_norm`` (a new dict).
    norm : float
        The global norm before clipping.

    Raises
    ------
    ValueError
        If ``max_norm <= 0``.
    """
    check_finite_scalar("max_norm", max_norm, low=0.0, low_open=True)  # issue 19
    check_finite_scalar("eps", eps, low=0.0)
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
    ``ema <- decay * ema + (1 - decay) * params``; returns a new dict.

    Parameters
    ----------
    ema_params : dict of str to array
        The current averages.
    params : dict of str to array
        The current parameters: the same keys and shapes.
    decay : float
        The decay, in [0, 1].

    Returns
    -------
    dict of str to array
        The new averages.

    Raises
    ------
    ValueError
        If ``decay`` is outside [0, 1] or the keys or shapes differ.
    """
    check_array_dict("ema_params", ema_params)  # issue 19
    check_array_dict("params", params)
    check_finite_scalar("decay", decay, low=0.0, high=1.0)
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
    _check_same_keys(params, ema_params)
    d = float(decay)
    return {k: d * ema_params[k] + (1.0 - d) * params[k] for k in params}


def ema_decay_warmup(step: int, decay: float) -> float:
    """The EMA decay actually used after ``step`` updates when warming it up,
    ``min(decay, (1 + step) / (10 + step))`` (the TensorFlow ExponentialMovingAverage
    ``num_updates`` rule), MATH.md (14.16).  Early averages then forget the random
    initialisation quickly.

    Parameters
    ----------
    step : int
        Updates already taken, >= 0.
    decay : float
        The target decay.

    Returns
    -------
    float
        The warmed-up decay.

    Raises
    ------
    ValueError
        If ``step < 0``.
    """
    step = check_size("step", step, 0, MAX_STEP)  # issue 19
    check_finite_scalar("decay", decay, low=0.0, high=1.0)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(float(decay), (1.0 + step) / (10.0 + step))


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear learning-rate warm-up, MATH.md (14.17): the rate for the update that
    follows ``step`` completed updates (0-based) is ``base_lr * min(1, (step + 1) /
    warmup_steps)``; ``warmup_steps = 0`` means no warm-up.

    The DDPM release uses ``min(1, step / warmup)``, whose first update has rate 0;
    pass ``step - 1`` to reproduce it.

    Parameters
    ----------
    step : int
        Updates already completed, >= 0.
    base_lr : float
        The rate after warm-up.
    warmup_steps : int
        Length of the warm-up, >= 0 (0: none).

    Returns
    -------
    float
        The learning rate.

    Raises
    ------
    ValueError
        If ``step < 0`` or ``warmup_steps < 0``.
    """
    step, warmup_steps = check_size("step", step, 0, MAX_STEP), check_size("warmup_steps", warmup_steps, 0, MAX_STEP)  # issue 19
    check_finite_scalar("base_lr", base_lr, low=0.0)
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
    ``lr = min_lr + (base_lr - min_lr) (1 + cos(pi u)) / 2``.

    Parameters
    ----------
    step : int
        Updates already taken (0-based).
    base_lr : float
        The peak rate (reached at the end of warm-up).
    total_steps : int
        The step at which the rate reaches ``min_lr``; must exceed ``warmup_steps``.
    warmup_steps : int, default 0
        Length of the linear warm-up (:func:`warmup_lr`).
    min_lr : float, default 0.0
        The final rate.

    Returns
    -------
    float
        The learning rate.

    Raises
    ------
    ValueError
        If ``total_steps <= warmup_steps`` (or, during warm-up, as in :func:`warmup_lr`).
    """
    step, total_steps = check_size("step", step, 0, MAX_STEP), check_size("total_steps", total_steps, 1, MAX_STEP)  # issue 19
    warmup_steps = check_size("warmup_steps", warmup_steps, 0, MAX_STEP)
    check_finite_scalar("base_lr", base_lr, low=0.0)
    check_finite_scalar("min_lr", min_lr, low=0.0)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps must exceed warmup_steps, got {total_steps} <= {warmup_steps}")
    if step < warmup_steps:
        return warmup_lr(step, base_lr, warmup_steps)
    u = min(1.0, max(0.0, (step - warmup_steps) / (total_steps - warmup_steps)))
    return float(min_lr) + (float(base_lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * u))
