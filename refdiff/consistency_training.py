"""Consistency training (CT) and consistency distillation (CD) as ``loss_fn``s for
:func:`refdiff.training.fit`, MATH.md chapter 18 (section 18.2).

A student network ``net`` (any refdiff network: ``forward(params, x, t, cond) -> (out,
cache)``, ``backward(params, cache, dout) -> (grads, dx)``) is made a consistency function
f = c_skip x + c_out F(c_in x, c_noise(sigma)) by :func:`cm_forward`.  One loss evaluation:

    i ~ p(i) over the pairs (sigma_i, sigma_{i+1}) of an increasing grid, z ~ N(0, I)
    x_hi = x0 + sigma_{i+1} z
    x_lo = x0 + sigma_i z                           (CT: the data-only estimate)
         = one teacher ODE step from x_hi to sigma_i (CD: Euler = DDIM on this path, or Heun)
    loss = mean  w_i d(f_theta(x_hi, sigma_{i+1}), stopgrad f_target(x_lo, sigma_i))

with d the squared L2 distance or the pseudo-Huber distance, the target the group ``target``
(an EMA of the student) or the student itself (iCT: no EMA, mu = 0).

NaN and inf in the arrays (data, noise, network outputs) propagate: not checked.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_choice, check_finite_scalar, check_int
from .backend import array_namespace
from .consistency import CM_FORMS, _grid, cm_noise_input, cm_scalings
from .samplers.common import check_args
from .parameterization import PREDICTION_TYPES, to_eps_x0

__all__ = ["pseudo_huber", "pseudo_huber_grad", "cm_forward", "cm_backward", "ct_pair", "cd_pair", "LevelLinear",
           "consistency_loss_fn", "CD_SOLVERS"]

CD_SOLVERS = ("euler", "ddim", "heun")


def _check_c(c):
    if not (isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 and math.isfinite(c)):
        raise ValueError(f"pseudo-Huber c = {c!r} must be a finite number > 0 (use metric='l2' for c = 0)")


def _rows(a):
    xp = array_namespace(a)
    return xp.reshape(a, (a.shape[0], -1))


@check_args(arrays=("x", "y"), same_shape=("x", "y"))
def pseudo_huber(x, y, c):
    """Per-sample pseudo-Huber distance, MATH.md (18.11): d(x, y) = sqrt(||x - y||^2 + c^2) - c
    (norm over all non-batch axes).  Shape (N,).

    Parameters
    ----------
    x, y : array (N, ...)
        The two batches, of one shape.
    c : float
        The pseudo-Huber constant (finite, > 0).

    Returns
    -------
    array (N,)
        The per-sample distances.

    Raises
    ------
    ValueError
        If ``c`` is not a finite number > 0.
    """
    _check_c(c)
    xp = array_namespace(x, y)
    r = _rows(x - y)
    return xp.sqrt(xp.sum(r * r, axis=1) + c * c) - c


@check_args(arrays=("x", "y"), same_shape=("x", "y"))
def pseudo_huber_grad(x, y, c):
    """Gradient of :func:`pseudo_huber` with respect to x, MATH.md (18.11):
    (x - y) / sqrt(||x - y||^2 + c^2) per sample.

    Parameters
    ----------
    x, y : array (N, ...)
        The two batches, of one shape.
    c : float
        The pseudo-Huber constant (finite, > 0).

    Returns
    -------
    array (N, ...)
        d pseudo_huber(x, y, c)_n / d x_n, the shape of ``x``.

    Raises
    ------
    ValueError
        If ``c`` is not a finite number > 0.
    """
    _check_c(c)
    xp = array_namespace(x, y)
    r = _rows(x - y)
    den = xp.sqrt(xp.sum(r * r, axis=1) + c * c)
    return (x - y) / xp.reshape(den, (x.shape[0],) + (1,) * (x.ndim - 1))


def _check_net(net, name="net"):
    if not (callable(getattr(net, "forward", None)) and callable(getattr(net, "backward", None))):
        raise TypeError(f"{name} must have forward(params, x, t, cond) and backward(params, cache, dout), "
                        f"got {type(net).__name__}")


def _level(name, v, x):
    """A noise level: a finite number or a float array of shape (N,) with N = x's batch."""
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.generic):
        check_array(name, v, ndim=1, finite=True)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"{name} has shape {tuple(v.shape)}; expected (N,) = ({x.shape[0]},) "
                             f"(x has shape {tuple(x.shape)})")
        return v
    return check_finite_scalar(name, v, low=0.0)


def _col(v, x):
    xp = array_namespace(x)
    v = xp.asarray(v, dtype=x.dtype) if hasattr(v, "shape") else v
    return xp.reshape(v, (x.shape[0],) + (1,) * (x.ndim - 1)) if hasattr(v, "shape") else v


def cm_forward(net, params, x, sigma, cond=None, *, sigma_data=0.5, sigma_min=0.002, form="boundary",
               timestep_scaling=1.0):
    """The consistency function of a network, MATH.md (18.1):
    f = c_skip x + c_out F(c_in x, cm_noise_input(sigma)); ``sigma`` of shape (N,) (float64).
    Returns (f, cache) for :func:`cm_backward`.

    Parameters
    ----------
    net : network
        ``net.forward(params, x, t, cond) -> (F, cache)``.
    params : dict
        The network's parameters.
    x : array (N, ...)
        Inputs at noise levels ``sigma``.
    sigma : array (N,)
        Noise levels (float64).
    cond : optional
        The condition passed through to ``net.forward``.
    sigma_data : float, default 0.5
        As in :func:`refdiff.consistency.cm_scalings`.
    sigma_min : float, default 0.002
        The boundary level.
    form : {"boundary", "edm", "lcm"}, default "boundary"
        The scalings (:func:`refdiff.consistency.cm_scalings`).
    timestep_scaling : float, default 1.0
        The ``"lcm"`` form's factor.

    Returns
    -------
    f : array (N, ...)
        The consistency function's output.
    cache : tuple
        The network cache and c_out, for :func:`cm_backward`.

    Raises
    ------
    ValueError
        As :func:`refdiff.consistency.cm_scalings`.
    """
    _check_net(net)
    check_array("x", x, min_ndim=1)
    sigma = _level("sigma", sigma, x)
    xp = array_namespace(x)
    if not hasattr(sigma, "shape"):  # one level for the batch
        sigma = xp.full((x.shape[0],), sigma, dtype=x.dtype)
    c_skip, c_out, c_in = cm_scalings(sigma, sigma_data, sigma_min, form=form, timestep_scaling=timestep_scaling)
    F, cache = net.forward(params, _col(c_in, x) * x, xp.asarray(cm_noise_input(sigma), dtype=x.dtype), cond)
    return _col(c_skip, x) * x + _col(c_out, x) * F, (cache, c_out)


def cm_backward(net, params, cache, df):
    """Parameter gradients of ``sum(f * df)`` for :func:`cm_forward`'s f, MATH.md (18.1).

    Parameters
    ----------
    net : network
        The network of :func:`cm_forward`, with
        ``backward(params, cache, dout) -> (grads, dx)``.
    params : dict
        Its parameters.
    cache : tuple
        The cache returned by :func:`cm_forward`.
    df : array (N, ...)
        The gradient of the loss with respect to f.

    Returns
    -------
    dict
        The parameter gradients (the path through c_skip x does not depend on the parameters).
    """
    _check_net(net)
    check_array("df", df, min_ndim=1)
    inner, c_out = cache
    if hasattr(c_out, "shape") and c_out.shape[0] != df.shape[0]:
        raise ValueError(f"df has shape {tuple(df.shape)}; expected the batch of cm_forward's output "
                         f"({c_out.shape[0]})")
    grads, _ = net.backward(params, inner, _col(c_out, df) * df)
    return grads


def ct_pair(x0, z, sigma_lo, sigma_hi):
    """Consistency training's pair (x_hi, x_lo) = (x0 + sigma_hi z, x0 + sigma_lo z), MATH.md (18.12):
    the Euler step of the PF ODE with the single-sample denoiser x0 is exact.

    Parameters
    ----------
    x0 : array (N, ...)
        Data samples.
    z : array (N, ...)
        Standard normal noise.
    sigma_lo, sigma_hi : float or array (N,)
        The lower and higher noise levels of each pair.

    Returns
    -------
    x_hi, x_lo : arrays (N, ...)
    """
    check_array("x0", x0, min_ndim=1)
    check_array("z", z)
    if tuple(z.shape) != tuple(x0.shape):
        raise ValueError(f"z has shape {tuple(z.shape)}; expected x0's shape {tuple(x0.shape)}")
    sigma_lo, sigma_hi = _level("sigma_lo", sigma_lo, x0), _level("sigma_hi", sigma_hi, x0)
    return x0 + _col(sigma_hi, x0) * z, x0 + _col(sigma_lo, x0) * z


def cd_pair(teacher, x0, z, sigma_lo, sigma_hi, solver="heun", prediction_type="sample"):
    """Consistency distillation's pair, MATH.md (18.13): x_hi = x0 + sigma_hi z and x_lo one
    teacher step of dx/dsigma = (x - D(x, sigma))/sigma from sigma_hi to sigma_lo.
    ``solver``: "euler" (= "ddim" on this path: D + (sigma_lo/sigma_hi)(x - D)) or "heun"
    (EDM's second-order step).  ``teacher(x, sigma) -> output`` of ``prediction_type``
    ("sample", "epsilon", "v_prediction", "score"; converted with alpha = 1); sigma (N,).

    Parameters
    ----------
    teacher : callable
        ``teacher(x, sigma) -> output`` with sigma of shape (N,).
    x0 : array (N, ...)
        Data samples.
    z : array (N, ...)
        Standard normal noise.
    sigma_lo, sigma_hi : array (N,)
        The lower and higher noise levels of each pair.
    solver : {"euler", "ddim", "heun"}, default "heun"
        The teacher's ODE step.
    prediction_type : str, default "sample"
        What the teacher predicts (one of refdiff.parameterization's prediction types).

    Returns
    -------
    x_hi, x_lo : arrays (N, ...)

    Raises
    ------
    ValueError
        If ``solver`` or ``prediction_type`` is unknown.
    """
    if not callable(teacher):
        raise TypeError(f"teacher must be callable (teacher(x, sigma) -> output), got {type(teacher).__name__}")
    check_array("x0", x0, min_ndim=1)
    check_array("z", z)
    if tuple(z.shape) != tuple(x0.shape):
        raise ValueError(f"z has shape {tuple(z.shape)}; expected x0's shape {tuple(x0.shape)}")
    sigma_lo, sigma_hi = _level("sigma_lo", sigma_lo, x0), _level("sigma_hi", sigma_hi, x0)
    if solver not in CD_SOLVERS:
        raise ValueError(f"cd_pair: unknown solver {solver!r}; valid: {', '.join(CD_SOLVERS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"cd_pair: unknown teacher prediction_type {prediction_type!r}; valid: "
                         f"{', '.join(PREDICTION_TYPES)}")
    x_hi = x0 + _col(sigma_hi, x0) * z

    def slope(x, s):
        _, D = to_eps_x0(teacher(x, s), x, 1.0, _col(s, x), prediction_type)
        return (x - D) / _col(s, x)

    h = _col(sigma_lo - sigma_hi, x0)
    d = slope(x_hi, sigma_hi)
    x_e = x_hi + h * d
    if solver in ("euler", "ddim"):
        return x_hi, x_e
    return x_hi, x_hi + h * (d + slope(x_e, sigma_lo)) / 2.0


class LevelLinear:
    """A per-level linear network on an explicit noise grid (for the fixed-point checks of
    MATH.md (18.9)): F(x, c_noise) = a[i] * x elementwise, i the grid level whose
    cm_noise_input is nearest to c_noise.  Parameters {"a": (N, D)}; same forward/backward
    contract as refdiff's networks.

    Parameters
    ----------
    sigmas : array_like (N,)
        The noise grid; level i is matched by its c_noise = cm_noise_input(sigmas[i]).
    dim : int
        D, the data dimension (inputs of shape (B, D)).
    """

    def __init__(self, sigmas, dim):
        check_int("dim", dim, min=1)
        self.levels = cm_noise_input(_grid(sigmas, "LevelLinear"))
        self.dim = int(dim)

    def init_params(self, rng=None, *, xp=None, dtype="float64"):
        """Zero parameters {"a": (N, D)}.

        Parameters
        ----------
        rng : optional
            Unused (the initial multipliers are zero).
        xp : array namespace, optional
            The namespace of the parameters (the default backend when None).
        dtype : str, default "float64"
            Their dtype name.

        Returns
        -------
        dict
            ``{"a": zeros (N, D)}``.
        """
        xp = array_namespace() if xp is None else xp
        check_choice("dtype", dtype, ("float32", "float64"))
        return {"a": xp.zeros((len(self.levels), self.dim), dtype=getattr(xp, dtype))}

    def _index(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.argmin(np.abs(t[:, None] - self.levels[None, :]), axis=1)

    def forward(self, params, x, t, cond=None):
        """F = a[i] * x with i the level nearest to each t.

        Parameters
        ----------
        params : dict
            ``{"a": (N, D)}``.
        x : array (B, D)
            Inputs.
        t : array_like (B,)
            Noise inputs c_noise (compared with the levels' cm_noise_input in float64).
        cond : optional
            Ignored.

        Returns
        -------
        out : array (B, D)
            The output.
        cache : tuple
            (level indices, x) for :meth:`backward`.
        """
        check_array("x", x, ndim=2, shape=(None, self.dim))
        i = self._index(t)
        if i.shape[0] != x.shape[0]:
            raise ValueError(f"x has shape {tuple(x.shape)} and t {i.shape[0]} entries: one time per row")
        return params["a"][i] * x, (i, x)

    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)`` with respect to the parameters and the input.

        Parameters
        ----------
        params : dict
            ``{"a": (N, D)}`` (NumPy arrays: the gradient is accumulated with ``numpy.add.at``).
        cache : tuple
            The cache of :meth:`forward`.
        dout : array (B, D)
            The gradient with respect to the output.

        Returns
        -------
        grads : dict
            ``{"a": (N, D)}``.
        dx : array (B, D)
            The gradient with respect to ``x``.
        """
        i, x = cache
        check_array("dout", dout, shape=tuple(x.shape))
        g = np.zeros_like(params["a"])
        np.add.at(g, i, dout * x)
        return {"a": g}, params["a"][i] * dout


def _loss_and_grad(f, target, w, metric, huber_c):
    """mean_n w_n d(f_n, target_n) and its gradient with respect to f."""
    xp = array_namespace(f)
    n = f.shape[0]
    if metric == "l2":
        r = _rows(f - target)
        per, g = xp.sum(r * r, axis=1), 2.0 * (f - target)
    else:
        per, g = pseudo_huber(f, target, huber_c), pseudo_huber_grad(f, target, huber_c)
    return float(xp.sum(w * per)) / n, _col(w, f) * g / n


def consistency_loss_fn(net, sigmas, *, mode="ct", teacher=None, solver="heun", prediction_type="sample",
                        metric="l2", huber_c=None, weighting="uniform", index_probs=None, target="target",
                        cond_key=None, sigma_data=0.5, form="boundary", timestep_scaling=1.0):
    """A ``loss_fn(groups, batch, rng) -> (loss, grads)`` for :func:`refdiff.training.fit`:
    CT (``mode="ct"``, data only, MATH.md (18.12)) or CD (``mode="cd"``, MATH.md (18.13), the
    ``teacher(x, sigma)`` of ``prediction_type`` stepped by ``solver``) on the increasing grid
    ``sigmas`` (sigma_0 = sigma_min), loss MATH.md (18.14).  ``metric``: "l2" (squared L2) or
    "pseudo_huber" (``huber_c`` > 0, MATH.md (18.11)); ``weighting``: "uniform" or "ict"
    (1/(sigma_{i+1} - sigma_i), MATH.md (18.7)); ``index_probs``: p(i) over the N - 1 pairs
    (default uniform; iCT: :func:`ict_noise_probs`).  ``target``: the group of the target
    network (an EMA group kept by fit), or None for the stop-gradient student (iCT).
    ``batch``: x0, or (x0, cond) when ``cond_key`` names the batch's condition.

    Parameters
    ----------
    net : network
        The student (``forward``/``backward`` as in :func:`cm_forward`; group ``"params"``).
    sigmas : array_like (N,)
        A strictly increasing grid of N >= 2 levels; sigmas[0] is used as sigma_min.
    mode : {"ct", "cd"}, default "ct"
        Consistency training or distillation.
    teacher : callable, optional
        ``teacher(x, sigma) -> output`` (required for ``mode="cd"``).
    solver : {"euler", "ddim", "heun"}, default "heun"
        The teacher's step (:func:`cd_pair`).
    prediction_type : str, default "sample"
        What the teacher predicts.
    metric : {"l2", "pseudo_huber"}, default "l2"
        The distance d.
    huber_c : float, optional
        The pseudo-Huber constant (required, > 0, for ``metric="pseudo_huber"``).
    weighting : {"uniform", "ict"}, default "uniform"
        The per-pair weights w_i.
    index_probs : array_like (N - 1,), optional
        p(i), nonnegative and summing to 1; uniform when None.
    target : str or None, default "target"
        The group holding the target network's parameters; None for the student itself.
    cond_key : optional
        When truthy, each batch is a pair (x0, cond).
    sigma_data : float, default 0.5
        As in :func:`refdiff.consistency.cm_scalings`.
    form : {"boundary", "edm", "lcm"}, default "boundary"
        The scalings.
    timestep_scaling : float, default 1.0
        The ``"lcm"`` form's factor.

    Returns
    -------
    callable
        ``loss_fn(groups, batch, rng) -> (loss, {"params": grads})``.

    Raises
    ------
    ValueError
        If any argument is invalid (checked at once, before training).
    """
    _check_net(net)
    if teacher is not None and not callable(teacher):
        raise TypeError(f"teacher must be callable (teacher(x, sigma)) or None, got {type(teacher).__name__}")
    check_choice("solver", solver, CD_SOLVERS)
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    if target is not None and not isinstance(target, str):
        raise TypeError(f"target must be a group name (str) or None, got {type(target).__name__}")
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    check_finite_scalar("timestep_scaling", timestep_scaling, low=0.0, low_open=True)
    s = _grid(sigmas, "consistency_loss_fn")
    if s.ndim != 1 or s.size < 2 or not np.all(np.diff(s) > 0):
        raise ValueError(f"consistency_loss_fn: sigmas must be strictly increasing with >= 2 levels, got {s!r}")
    if mode not in ("ct", "cd"):
        raise ValueError(f"consistency_loss_fn: unknown mode {mode!r}; valid: 'ct', 'cd'")
    if mode == "cd":
        if teacher is None:
            raise ValueError("consistency_loss_fn: mode='cd' needs a teacher(x, sigma)")
        cd_pair(lambda x, t: x, np.zeros((1, 1)), np.zeros((1, 1)), s[:1], s[1:2], solver, prediction_type)
    if metric not in ("l2", "pseudo_huber"):
        raise ValueError(f"consistency_loss_fn: unknown metric {metric!r}; valid: 'l2', 'pseudo_huber'")
    if metric == "pseudo_huber":
        _check_c(huber_c)
    if weighting not in ("uniform", "ict"):
        raise ValueError(f"consistency_loss_fn: unknown weighting {weighting!r}; valid: 'uniform', 'ict'")
    if form not in CM_FORMS:
        raise ValueError(f"consistency_loss_fn: unknown form {form!r}; valid: {', '.join(CM_FORMS)}")
    p = np.full(s.size - 1, 1.0 / (s.size - 1)) if index_probs is None else np.asarray(index_probs, np.float64)
    if p.shape != (s.size - 1,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"consistency_loss_fn: index_probs must be {s.size - 1} probabilities summing to 1")
    lam = 1.0 / np.diff(s) if weighting == "ict" else np.ones(s.size - 1)
    kw = dict(sigma_data=sigma_data, sigma_min=float(s[0]), form=form, timestep_scaling=timestep_scaling)

    def loss_fn(groups, batch, rng):
        x0, cond = (batch if cond_key else (batch, None))
        xp = array_namespace(x0)
        params = groups["params"]
        n = x0.shape[0]
        i = rng.choice(s.size - 1, size=n, p=p)
        lo, hi = xp.asarray(s[i]), xp.asarray(s[i + 1])
        z = xp.asarray(rng.standard_normal(x0.shape), dtype=x0.dtype)
        if mode == "ct":
            x_hi, x_lo = ct_pair(x0, z, lo, hi)
        else:
            x_hi, x_lo = cd_pair(teacher, x0, z, lo, hi, solver, prediction_type)
        f, cache = cm_forward(net, params, x_hi, hi, cond, **kw)
        f_tgt, _ = cm_forward(net, params if target is None else groups[target], x_lo, lo, cond, **kw)
        loss, df = _loss_and_grad(f, f_tgt, xp.asarray(lam[i], dtype=x0.dtype), metric, huber_c)
        return loss, {"params": cm_backward(net, params, cache, df)}

    return loss_fn
