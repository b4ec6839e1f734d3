"""The training loop over named parameter groups, MATH.md (14.20), (14.21), (14.22).

``fit(loss_fn, groups, next_batch, steps=..., rng=...)`` is the one loop every trainer in
refdiff runs (the diffusion ``refdiff.train.train``, the classifier, a distillation):

    for k = start .. steps - 1:
        batch        = next_batch(rng)                     the data draw
        loss, grads  = loss_fn(groups, batch, rng)         any objective, any networks
        g            = clip(grads over the trainable keys)  (14.14)
        stop with the step if loss or |g| is not finite
        trainable keys <- AdamW step (14.11)-(14.13), decay on the decayed keys only (14.21)
        EMA targets    <- EMA of their source group        (14.15)-(14.16)
        evaluate / checkpoint every so many updates

``groups`` is ``{group name: {parameter name: array}}``: e.g. ``"params"`` (the network
being trained), ``"ema"`` (its moving average), ``"teacher"`` (a frozen network the loss
calls).  ``trainable`` chooses the keys that are updated (patterns per group, (14.20)); all
others are frozen: never updated, never decayed, their optimizer moments never touched.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .backend import check_rng
from .batch_procs import BatchProcesses, _Delegating  # issue 21: the batch slices on worker processes (re-exported)
from ._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int, check_same_batch
from .nn.optim import FlatAdam, adam_init, adam_update, clip_grad_norm, cosine_lr, ema_decay_warmup, ema_update, global_norm, warmup_lr

__all__ = ["FitState", "fit", "init_state", "train_digit_classifier", "trainable_keys", "decayed_keys", "adam_step", "save_fit", "load_fit",
           "BatchThreads", "BatchProcesses"]


@dataclass
class FitState:
    """Everything a run carries from one update to the next (and what a checkpoint holds):
    the parameter groups, the optimizer state over ``"group/key"`` names, the number of
    updates done, the host generator and the logs.

    Built by :func:`init_state` (a fresh run) or :func:`load_fit` (a resumed one); :func:`fit`
    updates it in place and returns it.

    Parameters
    ----------
    groups : dict
        ``{group name: {parameter name: array}}``.
    opt : dict
        The Adam state over ``"group/key"`` names: ``"step"`` and the moments ``"m/group/key"``,
        ``"v/group/key"`` (:func:`refdiff.nn.optim.adam_init`).
    step : int
        The number of updates done (the next update's 0-based index).
    rng : numpy.random.Generator
        The host generator every batch and loss draws from.
    losses, grad_norms : numpy.ndarray
        (steps,) float64 logs of the loss and of the global gradient norm (before clipping)
        per update, NaN where not yet run.
    eval_steps, eval_losses : list
        The update counts at which ``evaluate`` ran, and its values.
    """

    groups: dict
    opt: dict
    step: int
    rng: np.random.Generator
    losses: np.ndarray
    grad_norms: np.ndarray
    eval_steps: list = field(default_factory=list)
    eval_losses: list = field(default_factory=list)


def _check_groups(groups):
    if not isinstance(groups, Mapping) or not all(isinstance(v, Mapping) for v in groups.values()):
        raise TypeError(f"groups must be a mapping group name -> parameter dict, got {type(groups).__name__}")


def trainable_keys(groups: dict, trainable) -> list[str]:
    """The updated parameters as ``"group/key"`` names, MATH.md (14.20).  ``trainable``:
    ``{group: patterns}`` with ``patterns`` True (every key), a pattern or a list of
    fnmatch patterns over the group's keys (``"*.lora_*"``, ``"down0.*"``).  A group or a
    pattern that matches nothing is a ValueError naming it.

    Parameters
    ----------
    groups : dict
        ``{group name: {parameter name: array}}``.
    trainable : dict
        ``{group name: True | pattern | list of patterns}``.

    Returns
    -------
    list of str
        The selected ``"group/key"`` names, in the groups' key order.

    Raises
    ------
    ValueError
        If ``trainable`` names a group not in ``groups``, a pattern matches no key, or
        nothing is selected.
    """
    _check_groups(groups)
    if not isinstance(trainable, Mapping):
        raise TypeError(f"trainable must be a mapping group -> True / pattern(s), got {type(trainable).__name__}")
    out = []
    for g, pats in trainable.items():
        if g not in groups:
            raise ValueError(f"trainable names group {g!r}; the groups are {sorted(groups)}")
        pats = ["*"] if pats is True else [pats] if isinstance(pats, str) else list(pats)
        chosen = set()
        for p in pats:
            hit = fnmatch.filter(groups[g], p)
            if not hit:
                raise ValueError(f"trainable pattern {p!r} of group {g!r} matches no parameter (keys such as "
                                 f"{sorted(groups[g])[:4]})")
            chosen.update(hit)
        out += [f"{g}/{k}" for k in groups[g] if k in chosen]
    if not out:
        raise ValueError("trainable selects no parameter")
    return out


def decayed_keys(groups: dict, keys, rule="matrices") -> set:
    """Which trainable keys weight decay applies to, MATH.md (14.21): ``"matrices"`` (the
    default): the weight matrices and convolution kernels, keys ending in ``.w`` with 2 or
    more axes (biases, norm gains and shifts, embedding tables excluded); ``"all"``: every
    trainable key (refdiff's behaviour before); or a callable ``(group, key, array) -> bool``.

    Parameters
    ----------
    groups : dict
        ``{group name: {parameter name: array}}``.
    keys : iterable of str
        The trainable ``"group/key"`` names (:func:`trainable_keys`).
    rule : "matrices", "all" or callable
        The rule above.

    Returns
    -------
    set of str
        The decayed ``"group/key"`` names, a subset of ``keys``.

    Raises
    ------
    ValueError
        If ``rule`` is none of the above.
    """
    _check_groups(groups)
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__") or not all(isinstance(n, str) and n.partition("/")[0] in groups
                                                 and n.partition("/")[2] in groups[n.partition("/")[0]]
                                                 for n in keys):
        raise ValueError(f"keys must be a sequence of '<group>/<key>' names of groups, got {keys!r:.80}")

    def split(name):
        g, _, k = name.partition("/")
        return g, k, groups[g][k]

    if rule == "all":
        return set(keys)
    if rule == "matrices":
        return {n for n in keys if split(n)[1].endswith(".w") and split(n)[2].ndim >= 2}
    if callable(rule):
        return {n for n in keys if rule(*split(n))}
    raise ValueError(f"rule (the decay option) must be 'matrices', 'all' or a callable (group, key, array) -> bool, "
                     f"got {rule!r}")


def _check_adam_args(groups, grads, opt, keys, decayed, lr, weight_decay):
    for name, v in (("groups", groups), ("grads", grads), ("opt", opt)):
        if not isinstance(v, Mapping):
            raise TypeError(f"{name} must be a mapping, got {type(v).__name__}")
    for name, v in (("keys", keys), ("decayed", decayed)):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(f"{name} must be a collection of '<group>/<key>' names, got {type(v).__name__}")
    check_finite_scalar("lr", lr, low=0.0)
    check_finite_scalar("weight_decay", weight_decay, low=0.0)


def adam_step(groups, grads, opt, keys, decayed, *, lr, betas, weight_decay, flat=None):
    """One AdamW step (14.11)-(14.12) on the ``keys`` (``"group/key"``) only, MATH.md
    (14.20), with decay on ``decayed`` only, MATH.md (14.21); every other parameter and its moments are
    returned as they were.  Returns ``(groups, opt)`` (new dicts).

    Parameters
    ----------
    groups : dict
        ``{group name: {parameter name: array}}``; not modified.
    grads : dict
        ``{"group/key": gradient}`` for at least every name in ``keys``.
    opt : dict
        The Adam state (:class:`FitState`'s ``opt``); not modified.
    keys : iterable of str
        The ``"group/key"`` names updated.
    decayed : set of str
        The names that get weight decay (:func:`decayed_keys`).
    lr : float
        The learning rate of this step.
    betas : tuple of float
        Adam's (beta1, beta2).
    weight_decay : float
        The decoupled (AdamW) weight-decay coefficient for the names in ``decayed``.
    flat : FlatAdam, None or False
        A :class:`refdiff.nn.optim.FlatAdam` kept between steps (its buffers are reused), None
        for a fresh one, or False for the per-key reference update.

    Returns
    -------
    groups, opt : dict, dict
        New dicts with the updated parameters and moments and ``opt["step"]`` increased by 1.

    The update is :class:`refdiff.nn.optim.FlatAdam` (one fused update over flat buffers,
    bit-identical to :func:`refdiff.nn.optim.adam_update` per key); ``flat``: a
    ``FlatAdam`` kept between steps (as :func:`fit` does) so that its flat buffers are
    reused instead of gathered again; ``flat=False`` runs the per-key reference.
    """
    _check_adam_args(groups, grads, opt, keys, decayed, lr, weight_decay)  # cheap: types and scalars
    new_groups = {g: dict(p) for g, p in groups.items()}
    new_opt = dict(opt)
    keys = list(keys)
    p = {n: groups[n.partition("/")[0]][n.partition("/")[2]] for n in keys}
    sub = {"step": opt["step"], **{f"{m}/{n}": opt[f"{m}/{n}"] for n in keys for m in "mv"}}
    g = {n: grads[n] for n in keys}
    if flat is False:
        parts = ((sorted(set(keys) & decayed), weight_decay), (sorted(set(keys) - decayed), 0.0))
        new_p = {}
        for subset, wd in parts:
            if subset:
                q, s = adam_update({n: p[n] for n in subset}, {n: g[n] for n in subset},
                                   {"step": opt["step"], **{f"{m}/{n}": sub[f"{m}/{n}"] for n in subset for m in "mv"}},
                                   lr=lr, betas=betas, weight_decay=wd, decoupled=True)
                new_p.update(q)
                new_opt.update(s)
    else:
        new_p, s = (flat or FlatAdam()).update(p, g, sub, lr=lr, betas=betas, weight_decay=weight_decay,
                                                decoupled=True, decayed=decayed)
        new_opt.update(s)
    for n, v in new_p.items():
        gr, _, k = n.partition("/")
        new_groups[gr][k] = v
    new_opt["step"] = opt["step"] + 1
    return new_groups, new_opt


class BatchThreads(_Delegating):
    """A network's ``forward`` / ``backward`` over ``parts`` slices of the batch, one slice
    per thread (the calling thread takes the first, persistent worker threads the others).

    The denoising loss is a mean over samples and the network maps each sample on its own
    (GroupNorm normalises within a sample; nothing mixes samples), so the output of the
    whole batch is the slices' outputs stacked, and the parameter gradient of the batch loss
    is the SUM of the slices' parameter gradients for the slices of ``dout`` (MATH.md
    (14.1): the loss and ``dout`` are formed on the whole batch, only the network runs in
    parts).  The same function, the same random draws; only the order of the
    floating-point sums over the batch changes (``tests/test_batch_threads.py``: float64 to
    1e-12, float32 to a few rounding units of the gradients' size).

    Faster only where NumPy releases the GIL (BLAS products, ufuncs on large arrays) and
    each thread has a core: run with BLAS single-threaded (``OPENBLAS_NUM_THREADS=1`` or
    threadpoolctl), otherwise the slices' BLAS threads compete for the same cores.  Other
    attributes are the wrapped network's, so the object passes for it in
    :func:`refdiff.train.train`.  On NumPy, :class:`refdiff.batch_procs.BatchProcesses`
    (the same interface) runs the slices in worker processes instead, with no GIL shared.

    Parameters
    ----------
    model : network
        Any refdiff network with ``forward(params, x, t, cond)`` and
        ``backward(params, cache, dout) -> (grads, dx)``.
    parts : int, default 2
        Number of batch slices (threads), >= 1; a batch smaller than ``parts`` runs in
        fewer slices.
    """

    def __init__(self, model, parts: int = 2):
        parts = check_int("parts", parts, 1)  # issue 19
        if not all(callable(getattr(model, m, None)) for m in ("forward", "backward")):  # issue 19
            raise TypeError(f"model must be a refdiff network with forward and backward methods, got "
                            f"{type(model).__name__}")
        self.model, self.parts, self._pool = model, parts, None

    def _run(self, fns):
        """Call every function in ``fns``: the first here, the others on the worker threads."""
        if len(fns) == 1:
            return [fns[0]()]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.parts - 1, thread_name_prefix="refdiff-batch")
        futs = [self._pool.submit(f) for f in fns[1:]]
        first = fns[0]()
        return [first] + [f.result() for f in futs]

    def _slices(self, n):
        k = max(1, min(self.parts, n))
        b = [(i * n) // k for i in range(k + 1)]
        return [slice(b[i], b[i + 1]) for i in range(k)]

    def forward(self, params, x, t, cond=None, **kw):
        """The wrapped ``forward`` on each slice, outputs concatenated; the cache holds the
        slices' caches.  NaN and inf in ``x`` or ``t`` propagate as in the wrapped network:
        not checked (per step).

        Parameters
        ----------
        params : dict
            The network's parameters (shared by the slices, read only).
        x : array, shape (N, ...)
            The batch.
        t : array of shape (N,) or scalar
            Times, sliced with the batch when an array.
        cond : mapping, array or None, optional
            The condition; arrays (and a mapping's array values with a batch axis) are sliced.
        **kw
            Passed to the wrapped ``forward``.

        Returns
        -------
        out : array, shape of the wrapped output for the whole batch
            The slices' outputs, concatenated along the batch axis.
        cache : tuple
            The slices and their caches, for :meth:`backward`.
        """
        from .backend import array_namespace

        check_array("x", x, min_ndim=1)  # issue 19: a batch to slice (the network checks the rest)
        if getattr(t, "ndim", 0) and (t.ndim != 1 or t.shape[0] != x.shape[0]):  # issue 19: sliced with x
            raise ValueError(f"t must be a scalar or of shape (N,) = ({x.shape[0]},) (x's batch), x has shape "
                             f"{tuple(x.shape)}, t has shape {tuple(t.shape)}")
        xp = array_namespace(x)
        sls = self._slices(x.shape[0])

        def part(sl):
            ts = t[sl] if getattr(t, "ndim", 0) else t
            cs = cond
            if isinstance(cond, dict):
                cs = {k: (v[sl] if getattr(v, "ndim", 0) else v) for k, v in cond.items()}
            elif cond is not None:
                cs = cond[sl]
            return lambda: self.model.forward(params, x[sl], ts, cs, **kw)

        res = self._run([part(sl) for sl in sls])
        out = res[0][0] if len(res) == 1 else xp.concat([r[0] for r in res], axis=0)
        return out, (sls, [r[1] for r in res])

    def backward(self, params, cache, dout):
        """``(grads, dx)``: the slices' parameter gradients summed, their input gradients
        concatenated.  NaN and inf in ``dout`` propagate: not checked (per step).

        Parameters
        ----------
        params : dict
            The parameters of the forward pass.
        cache : tuple
            The cache returned by :meth:`forward`.
        dout : array
            Gradient with respect to the whole batch's output.

        Returns
        -------
        grads : dict
            Gradient of every parameter (the sum over slices).
        dx : array
            Gradient with respect to the input, the whole batch.
        """
        from .backend import array_namespace

        if not (isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[0], list)):  # issue 19
            raise TypeError(f"cache must be the cache returned by BatchThreads.forward, got {type(cache).__name__}")
        sls, caches = cache
        check_array("dout", dout, min_ndim=1)  # issue 19
        if dout.shape[0] != sls[-1].stop:
            raise ValueError(f"dout must have the forward output's batch {sls[-1].stop}, got shape {tuple(dout.shape)}")
        xp = array_namespace(dout)
        res = self._run([(lambda sl=sl, c=c: self.model.backward(params, c, dout[sl])) for sl, c in zip(sls, caches)])
        grads = dict(res[0][0])
        for g, _ in res[1:]:
            for k, v in g.items():
                grads[k] = grads[k] + v
        dx = res[0][1] if len(res) == 1 else xp.concat([r[1] for r in res], axis=0)
        return grads, dx

    def close(self):
        """Stop the worker threads (they are also stopped when the object is collected)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _flat_grads(grads: dict, keys) -> dict:
    out = {}
    for n in keys:
        g, _, k = n.partition("/")
        if g not in grads or k not in grads[g]:
            raise ValueError(f"loss_fn returned no gradient for the trainable parameter {n!r}")
        out[n] = grads[g][k]
    return out


def init_state(groups, trainable, rng, steps) -> FitState:
    """The state before the first update: Adam moments (zero) for every key of every group
    that has a trainable key (frozen keys' moments stay zero).

    Parameters
    ----------
    groups : dict
        ``{group name: {parameter name: array}}`` (the dict is copied, the arrays are not).
    trainable : dict
        The trainable selection (:func:`trainable_keys`).
    rng : numpy.random.Generator
        The host generator of the run.
    steps : int
        The total number of updates (sizes the loss and gradient-norm logs).

    Returns
    -------
    FitState
        At step 0, with NaN logs.

    Raises
    ------
    ValueError
        If ``trainable`` selects nothing or names an unknown group or pattern.
    """
    steps = check_int("steps", steps, min=1)
    rng = check_rng(rng)
    keys = trainable_keys(groups, trainable)
    owners = {n.partition("/")[0] for n in keys}
    flat = {f"{g}/{k}": v for g in owners for k, v in groups[g].items()}
    return FitState(dict(groups), adam_init(flat), 0, rng, np.full(steps, np.nan), np.full(steps, np.nan))


def _lr(step, lr, steps, warmup_steps, lr_decay):
    if lr_decay == "cosine":
        return cosine_lr(step, lr, steps, warmup_steps=warmup_steps)
    return warmup_lr(step, lr, warmup_steps)


def _stop(what, value, step, last_saved, where):
    kept = (f"the last good checkpoint {where!r} (after step {last_saved}) is kept" if last_saved is not None
            else "no checkpoint was written in this run")
    raise FloatingPointError(f"training {what} is {value} at step {step} (0-based update index); training stopped; "
                             f"{kept}")


def _check_fit_args(loss_fn, state, next_batch, steps, lr, weight_decay, warmup_steps, lr_decay, grad_clip,
                    eval_every, checkpoint_every, progress, desc, evaluate, save):
    """fit's arguments, each named in its error (TypeError/ValueError)."""
    for name, f in (("loss_fn", loss_fn), ("next_batch", next_batch)):
        if not callable(f):
            raise TypeError(f"{name} must be a callable, got {type(f).__name__}")
    for name, f in (("evaluate", evaluate), ("save", save)):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be None or a callable, got {type(f).__name__}")
    if not isinstance(state, FitState):
        raise TypeError(f"state must be a FitState (init_state, load_fit), got {type(state).__name__}")
    check_int("steps", steps, min=1)
    if steps > state.losses.shape[0]:
        raise ValueError(f"steps = {steps} exceeds the {state.losses.shape[0]} steps state was sized for")
    check_finite_scalar("lr", lr, low=0.0, low_open=True)
    check_finite_scalar("weight_decay", weight_decay, low=0.0)
    for name, v in (("warmup_steps", warmup_steps), ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        check_int(name, v, min=0)
    check_choice("lr_decay", lr_decay, ("constant", "cosine"))
    if grad_clip is not None:
        check_finite_scalar("grad_clip", grad_clip, low=0.0, low_open=True)
    check_bool("progress", progress)
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a str, got {type(desc).__name__}")


def fit(loss_fn, state: FitState, next_batch, *, steps, trainable, ema=None, lr=1e-3, betas=(0.9, 0.999),
        weight_decay=0.0, decay="matrices", warmup_steps=0, lr_decay="constant", grad_clip=None,
        evaluate=None, eval_every=0, save=None, checkpoint_every=0, progress=True, desc="train") -> FitState:
    """Run updates ``state.step .. steps - 1`` (module docstring) and return the state:
    the loop of MATH.md (14.22) with the updates of MATH.md (14.20) and MATH.md (14.21).

    ``loss_fn(groups, batch, rng) -> (loss, grads)`` with ``grads = {group: {key: array}}``
    holding at least every trainable key (others are ignored); ``next_batch(rng)`` the batch.
    ``ema = {target: (source, decay, warmup)}``: group ``target`` is the EMA of ``source``
    (decay warmed up by (14.16) when ``warmup``).  ``evaluate(groups) -> float`` is logged
    every ``eval_every`` updates; ``save(state)`` writes a checkpoint every
    ``checkpoint_every`` updates and returns where.  A NaN or inf loss or gradient norm
    stops with FloatingPointError naming the update (its step is not taken).

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(groups, batch, rng) -> (loss, grads)``.
    state : FitState
        The state to continue from (:func:`init_state` or :func:`load_fit`); updated in place.
    next_batch : callable
        ``next_batch(rng) -> batch``.
    steps : int
        The total number of updates; the run ends when ``state.step`` reaches it.
    trainable : dict
        The updated keys, ``{group: True | pattern | patterns}`` (:func:`trainable_keys`).
    ema : dict, optional
        ``{target: (source, decay, warmup)}`` as above; an EMA target cannot be trainable.
    lr : float, default 1e-3
        The base learning rate.
    betas : tuple of float, default (0.9, 0.999)
        Adam's (beta1, beta2).
    weight_decay : float, default 0.0
        Decoupled weight decay on the keys chosen by ``decay``.
    decay : "matrices", "all" or callable
        Which trainable keys are decayed (:func:`decayed_keys`).
    warmup_steps : int, default 0
        Linear learning-rate warm-up, MATH.md (14.17).
    lr_decay : {"constant", "cosine"}
        After warm-up: constant, or cosine decay to 0 at ``steps``.
    grad_clip : float, optional
        Clip the global gradient norm (over the trainable keys) to this value.
    evaluate : callable, optional
        ``evaluate(groups) -> float``, logged every ``eval_every`` updates (0: never).
    eval_every : int, default 0
    save : callable, optional
        ``save(state) -> location``, called every ``checkpoint_every`` updates (0: never).
    checkpoint_every : int, default 0
    progress : bool, default True
        Show a tqdm progress bar with the recent mean loss.
    desc : str, default "train"
        The progress bar's label.

    Returns
    -------
    FitState
        ``state``, after ``steps`` updates.

    Raises
    ------
    ValueError
        If ``trainable`` or ``decay`` is invalid, an EMA target is trainable, or ``loss_fn``
        returns no gradient for a trainable key.
    FloatingPointError
        If a loss or gradient norm is not finite (the message names the update and the last
        checkpoint written).
    """
    from tqdm.auto import tqdm

    _check_fit_args(loss_fn, state, next_batch, steps, lr, weight_decay, warmup_steps, lr_decay, grad_clip,
                    eval_every, checkpoint_every, progress, desc, evaluate, save)
    keys = trainable_keys(state.groups, trainable)
    decayed = decayed_keys(state.groups, keys, decay)
    for target, (source, _, _) in (ema or {}).items():
        if any(n.startswith(target + "/") for n in keys):
            raise ValueError(f"group {target!r} is an EMA target and cannot also be trainable")
    last_saved, where = None, None
    flat = FlatAdam(inplace=True)  # its flat buffers, updated in place from one update to the next
    bar = tqdm(total=steps, initial=state.step, disable=not progress, desc=desc, dynamic_ncols=True)
    try:
        for step in range(state.step, steps):
            batch = next_batch(state.rng)
            loss, grads = loss_fn(state.groups, batch, state.rng)
            g = _flat_grads(grads, keys)
            g, norm = clip_grad_norm(g, grad_clip) if grad_clip is not None else (g, global_norm(g))
            state.losses[step], state.grad_norms[step] = float(loss), norm
            if not math.isfinite(state.losses[step]):
                _stop("loss", state.losses[step], step, last_saved, where)
            if not math.isfinite(norm):
                _stop("gradient norm", norm, step, last_saved, where)
            state.groups, state.opt = adam_step(state.groups, g, state.opt, keys, decayed, betas=betas,
                                                lr=_lr(step, lr, steps, warmup_steps, lr_decay),
                                                weight_decay=weight_decay, flat=flat)
            for target, (source, d, warm) in (ema or {}).items():
                d = ema_decay_warmup(step, d) if warm else d
                moving = [k for k in state.groups[source] if f"{source}/{k}" in keys]  # frozen keys stay equal
                state.groups[target] = {**state.groups[source], **ema_update(
                    {k: state.groups[target][k] for k in moving}, {k: state.groups[source][k] for k in moving}, d)}
            state.step = done = step + 1
            if evaluate is not None and eval_every and done % eval_every == 0:
                state.eval_steps.append(done)
                state.eval_losses.append(evaluate(state.groups))
            if save is not None and checkpoint_every and done % checkpoint_every == 0:
                where, last_saved = save(state), done
            if progress and (done % 10 == 0 or done == steps):
                lo = max(0, done - 50)
                bar.set_postfix(loss=f"{np.nanmean(state.losses[lo:done]):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return state


def save_fit(path, state: FitState, nets: dict, *, main: str, config: dict | None = None, schedule=None):
    """Checkpoint every group of ``state`` (:func:`refdiff.nn.checkpoint.save_checkpoint`):
    ``nets[g]`` the network of group ``g`` (None: no architecture), ``main`` the group stored
    as the checkpoint's model (what :func:`refdiff.load` returns); a group named ``"ema"``
    is stored as the main network's EMA.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file to write (a ``.json`` is written beside it).
    state : FitState
        The state to store (groups, optimizer state, step, generator, logs up to ``state.step``).
    nets : dict
        ``{group name: network or None}``; must hold ``main``.
    main : str
        The group stored as the checkpoint's model.
    config : dict, optional
        The training configuration, stored as ``train_config``.
    schedule : Schedule, optional
        The noise schedule, stored with the checkpoint.

    Returns
    -------
    pathlib.Path
        The path of the ``.npz`` written.
    """
    from .nn.checkpoint import save_checkpoint

    if not isinstance(state, FitState):
        raise TypeError(f"state must be a FitState, got {type(state).__name__}")
    if not isinstance(nets, Mapping):
        raise TypeError(f"nets must be a mapping group -> network or None, got {type(nets).__name__}")
    if not isinstance(main, str) or main not in nets or main not in state.groups:
        raise ValueError(f"main = {main!r} must name a group of both nets ({sorted(nets)}) and state "
                         f"({sorted(state.groups)})")
    hist = {"losses": state.losses[:state.step], "grad_norms": state.grad_norms[:state.step],
            "eval_steps": np.asarray(state.eval_steps, dtype=np.int64),
            "eval_losses": np.asarray(state.eval_losses, dtype=np.float64)}
    others = {g: (nets.get(g), p) for g, p in state.groups.items() if g not in (main, "ema")}
    return save_checkpoint(path, model=nets[main], params=state.groups[main], ema_params=state.groups.get("ema"),
                           groups=others, opt_state=state.opt,
                           rng=state.rng, step=state.step, train_config=config, schedule=schedule, history=hist,
                           main_group=main)


def load_fit(path, steps: int, *, xp=None) -> FitState:
    """The :class:`FitState` saved by :func:`save_fit`, its logs sized for ``steps``.

    Parameters
    ----------
    path : str or path-like
        The checkpoint written by :func:`save_fit`.
    steps : int
        The total number of updates of the resumed run (>= the checkpoint's step).
    xp : array namespace, optional
        Namespace of the arrays (default NumPy).

    Returns
    -------
    FitState
        With the stored groups (the main group, the others, and ``"ema"`` when stored), the
        optimizer state, the step, the generator in its saved state and the logs.

    Raises
    ------
    ValueError
        If the checkpoint's step exceeds ``steps``, or the checkpoint is invalid
        (:func:`refdiff.nn.checkpoint.load_checkpoint`; FileNotFoundError if missing).
    """
    from .nn._checkpoint_checks import check_resumable
    from .nn.checkpoint import load_checkpoint

    steps = check_int("steps", steps, min=1)
    ck = load_checkpoint(path, xp=xp)
    check_resumable(ck, path)  # history, optimizer and RNG state present
    if ck.step > steps:
        raise ValueError(f"the checkpoint is at step {ck.step}, beyond steps = {steps}")
    main = ck.meta.get("main_group", "params")
    groups = {main: ck.params, **ck.groups}
    if ck.ema_params is not None:
        groups["ema"] = ck.ema_params
    h, k = ck.history, ck.step
    losses, gnorms = np.full(steps, np.nan), np.full(steps, np.nan)
    losses[:k], gnorms[:k] = h["losses"][:k], h["grad_norms"][:k]
    return FitState(groups, ck.opt_state, k, ck.rng(), losses, gnorms, list(h["eval_steps"]), list(h["eval_losses"]))


def train_digit_classifier(data: str = "digits8x8", *, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
                           hidden=(256, 128), weight_decay: float = 1e-4, noise_std: float = 0.1, seed: int = 0,
                           x_train=None, y_train=None, x_test=None, y_test=None):
    """Train the MLP classifier; returns ``(params, test_accuracy)``.

    Data: ``data`` = "digits8x8" (scikit-learn's digits, its fixed train/test split of
    :func:`refdiff.data.digits8x8`) or "shapes8x8" (procedural; 4000 train / 1000 test
    images drawn from ``default_rng([seed, 2])``), or explicit ``x_train, y_train,
    x_test, y_test`` host arrays.  Training: :func:`refdiff.training.fit`, AdamW with
    decay on every key (``decay="all"``) on
    :func:`~refdiff.nn.classifier.softmax_cross_entropy`, float64, minibatches drawn with replacement from
    ``default_rng(seed)`` (order: init, then per step the batch indices and the
    augmentation noise: Gaussian pixel noise of std ``noise_std``, which makes the
    classifier less brittle on slightly imperfect generated images).  The test accuracy
    is measured on the held-out test split, never trained on.

    Parameters
    ----------
    data : {"digits8x8", "shapes8x8"}
        The data set, ignored when ``x_train`` is given.
    steps : int, default 1500
        The number of updates.
    batch_size : int, default 128
        The minibatch size.
    lr : float, default 1e-3
        The (constant) learning rate.
    hidden : tuple of int, default (256, 128)
        The hidden-layer widths of the MLP.
    weight_decay : float, default 1e-4
        Decoupled weight decay, on every parameter.
    noise_std : float, default 0.1
        The std of the Gaussian pixel noise added to each training batch.
    seed : int, default 0
        Seeds the initialisation and batches (and the shapes8x8 data).
    x_train, y_train, x_test, y_test : arrays, optional
        Explicit data: images (N, ...) flattened per sample, integer labels (N,).  The
        number of classes is 1 + the largest label.

    Returns
    -------
    params : dict
        The classifier's parameters (:func:`refdiff.nn.classifier.classifier_init`).
    test_accuracy : float
        The fraction of test images classified correctly.

    Raises
    ------
    ValueError
        If ``data`` is unknown (and no explicit data are given).
    """
    from .nn.classifier import classifier_backward, classifier_forward, classifier_init, classify, softmax_cross_entropy

    steps, batch_size = check_int("steps", steps, min=1), check_int("batch_size", batch_size, min=1)
    seed = check_int("seed", seed, min=0)
    lr = check_finite_scalar("lr", lr, low=0.0, low_open=True)
    weight_decay = check_finite_scalar("weight_decay", weight_decay, low=0.0)
    noise_std = check_finite_scalar("noise_std", noise_std, low=0.0)
    given = [a is not None for a in (x_train, y_train, x_test, y_test)]
    if any(given) and not all(given):
        raise ValueError("x_train, y_train, x_test and y_test must be given together (or none of them)")
    if all(given):
        for name, a in (("x_train", x_train), ("x_test", x_test)):
            check_array(name, a, min_ndim=2, finite=True)
        for name, a in (("y_train", y_train), ("y_test", y_test)):
            check_array(name, a, dtype="int", ndim=1)
        check_same_batch(x_train=x_train, y_train=y_train)
        check_same_batch(x_test=x_test, y_test=y_test)
    if x_train is None:
        from .data import digits8x8, shapes8x8

        if data == "digits8x8":
            x_train, y_train = digits8x8("train")
            x_test, y_test = digits8x8("test")
        elif data == "shapes8x8":
            g = np.random.default_rng([seed, 2])
            x_train, y_train = shapes8x8(4000, g)
            x_test, y_test = shapes8x8(1000, g)
        else:
            raise ValueError(f"data must be 'digits8x8' or 'shapes8x8' (or pass x_train, ...), got {data!r}")
    x_train, x_test = (np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1) for a in (x_train, x_test))
    y_train, y_test = np.asarray(y_train, dtype=np.int64), np.asarray(y_test, dtype=np.int64)
    rng = np.random.default_rng(seed)
    K = int(max(y_train.max(), y_test.max())) + 1
    params = classifier_init(rng, n_in=x_train.shape[1], hidden=hidden, n_classes=K)

    def next_batch(rng):
        idx = rng.integers(0, x_train.shape[0], size=batch_size)
        return x_train[idx] + noise_std * rng.standard_normal((batch_size, x_train.shape[1])), y_train[idx]

    def loss_fn(groups, batch, rng):
        logits, cache = classifier_forward(groups["params"], batch[0])
        loss, dlogits = softmax_cross_entropy(logits, batch[1])
        return loss, {"params": classifier_backward(groups["params"], cache, dlogits)[0]}

    state = init_state({"params": params}, {"params": True}, rng, steps)
    state = fit(loss_fn, state, next_batch, steps=int(steps), trainable={"params": True}, lr=lr,
                weight_decay=weight_decay, decay="all", progress=False, desc="classifier")
    params = state.groups["params"]
    acc = float(np.mean(classify(params, x_test) == y_test))
    return params, acc
