"""An MLP classifier written with refdiff's own layers (for scoring 8x8 samples, MATH.md
(15.8), and for classifier guidance, MATH.md (12.6)): ``x (N, ...) -> silu(linear) x
len(hidden) -> logits (N, K)``, softmax cross-entropy with its gradient, class
predictions and the last hidden activation as a feature space.  Trained by
:func:`refdiff.train.train_digit_classifier`.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_int
from ..backend import array_namespace, check_rng
from ._check import check_cache, check_float_dtype, check_params, check_size, check_xp
from .layers import linear_backward, linear_forward, silu_backward, silu_forward

__all__ = ["classifier_init", "classifier_forward", "classifier_backward", "softmax_cross_entropy", "classify",
           "features"]


def classifier_init(rng: np.random.Generator, *, n_in: int = 64, hidden=(256, 128), n_classes: int = 10,
                    xp=None, dtype: str = "float64") -> dict:
    """Parameters of the MLP classifier ``x (N, n_in) -> silu(linear) x len(hidden) ->
    logits (N, n_classes)``: keys ``"l{i}.w"`` (d_in, d_out) ~ N(0, 1/d_in) and ``"l{i}.b"``
    = 0, drawn on the host from ``rng``, moved to ``xp`` (NumPy default).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the initial weights.
    n_in : int, optional
        Input size (default 64, an 8x8 image).
    hidden : sequence of int, optional
        Hidden layer widths (default (256, 128)).
    n_classes : int, optional
        Number of classes K (default 10).
    xp : namespace or None, optional
        Array namespace of the parameters; None (default) for NumPy.
    dtype : str, optional
        Name of the floating dtype in ``xp`` (default ``"float64"``).

    Returns
    -------
    dict
        Parameter name -> array.

    Raises
    ------
    ValueError
        If a layer size is below 1.
    """
    rng = check_rng(rng)
    n_in, n_classes = check_size("n_in", n_in, 1, 1 << 20), check_size("n_classes", n_classes, 1, 1 << 20)
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(f"hidden must be a tuple of ints (the hidden widths), got {hidden!r}")
    sizes = (n_in, *(check_size("hidden", h, 1, 1 << 20) for h in hidden), n_classes)
    xp = array_namespace() if xp is None else check_xp(xp)
    check_float_dtype(dtype)
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    P = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        P[f"l{i}.w"] = xp.asarray(rng.standard_normal((a, b)) / math.sqrt(a), dtype=getattr(xp, dtype))
        P[f"l{i}.b"] = xp.zeros(b, dtype=getattr(xp, dtype))
    return P


def _n_layers(params):
    return sum(1 for k in params if k.endswith(".w"))


def _check_classifier(params, x):
    """The number of layers of ``params`` (a classifier_init dict); x a float (N, ...) array
    of n_in entries per sample (cheap: NaN propagates)."""
    check_params(params, "params")
    if "l0.w" not in params:
        raise ValueError("params is not a classifier's parameter dict (no 'l0.w'; see classifier_init)")
    check_array("x", x, min_ndim=2)
    n_in = params["l0.w"].shape[0]
    if math.prod(x.shape[1:]) != n_in:
        raise ValueError(f"x must have {n_in} entries per sample (the classifier's n_in), got shape {tuple(x.shape)}")
    return _n_layers(params)


def classifier_forward(params: dict, x, *, upto: int | None = None):
    """Logits (N, K) and cache of the MLP classifier; x (N, ...) is flattened.  With
    ``upto = k`` stops after the k-th hidden activation (the features).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    params : dict
        Parameters from :func:`classifier_init`.
    x : array, shape (N, ...)
        Inputs, flattened to (N, n_in) and cast to the parameters' dtype.
    upto : int or None, optional
        Number of layers to run; None (default) for all (the logits).

    Returns
    -------
    out : array
        Logits (N, K), or with ``upto = k`` the k-th hidden activation.
    cache : tuple
        Saved values for :func:`classifier_backward`.
    """
    L = _check_classifier(params, x)
    if upto is not None and not 0 <= check_int("upto", upto) <= L:
        raise ValueError(f"upto must lie in [0, {L}] (the number of layers), got {upto}")
    xp = array_namespace(x)
    h = xp.astype(xp.reshape(x, (x.shape[0], -1)), params["l0.w"].dtype)  # (N, ...) -> (N, D)
    caches = []
    for i in range(L if upto is None else upto):
        h, c_lin = linear_forward(h, params[f"l{i}.w"], params[f"l{i}.b"])
        c_act = None
        if i < L - 1:
            h, c_act = silu_forward(h)
        caches.append((c_lin, c_act))
    return h, (caches, tuple(x.shape))


def classifier_backward(params: dict, cache, dlogits):
    """Gradients of ``sum(logits * dlogits)``: ``(grads, dx)`` (dx in x's shape).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    params : dict
        Parameters of the forward pass.
    cache : tuple
        The cache returned by :func:`classifier_forward` (run to the logits).
    dlogits : array, shape (N, K)
        Gradient with respect to the logits.

    Returns
    -------
    grads : dict
        Gradient of every parameter, keyed as ``params``.
    dx : array
        Gradient with respect to ``x``, in its shape.
    """
    check_params(params, "params")
    caches, shape = check_cache(cache, "classifier_forward", 2)
    check_array("dlogits", dlogits, ndim=2)
    if not caches or tuple(dlogits.shape) != (shape[0], caches[-1][0][1].shape[1]):
        want = (shape[0], caches[-1][0][1].shape[1]) if caches else "(no layer ran)"
        raise ValueError(f"dlogits must have the forward output's shape {want}, got shape {tuple(dlogits.shape)}")
    xp = array_namespace(dlogits)
    G, d = {}, dlogits
    for i in reversed(range(len(caches))):
        c_lin, c_act = caches[i]
        if c_act is not None:
            d = silu_backward(d, c_act)
        d, G[f"l{i}.w"], G[f"l{i}.b"] = linear_backward(d, c_lin)
    return G, xp.reshape(d, shape)


def softmax_cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient, MATH.md (15.8):
    ``loss = (1/N) sum_n [logsumexp(z_n) - z_n[y_n]]``, ``dloss/dz = (softmax(z) - onehot(y)) / N``.
    logits (N, K), y (N,) integer labels in [0, K).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    logits : array, shape (N, K)
        Unnormalised log-probabilities.
    y : array of int, shape (N,)
        Labels in [0, K).

    Returns
    -------
    loss : float
        The mean cross-entropy.
    dlogits : array, shape (N, K)
        Its gradient with respect to ``logits``.

    Raises
    ------
    ValueError
        If ``y`` is not of shape (N,) or a label lies outside [0, K).
    """
    check_array("logits", logits, ndim=2)
    check_array("y", y, dtype="int")
    xp = array_namespace(logits)
    N, K = logits.shape
    if getattr(y, "shape", None) != (N,):
        raise ValueError(f"y must have shape ({N},) (one label per row of logits, shape {tuple(logits.shape)}), "
                         f"got {getattr(y, 'shape', None)}")
    lo, hi = int(xp.min(y)), int(xp.max(y))
    if lo < 0 or hi >= K:
        raise ValueError(f"labels y must lie in [0, {K - 1}], got values in [{lo}, {hi}]")
    m = xp.max(logits, axis=1, keepdims=True)
    z = logits - m
    lse = xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))  # (N, 1)
    onehot = xp.astype(xp.reshape(y, (-1, 1)) == xp.reshape(xp.arange(K, dtype=y.dtype), (1, K)), logits.dtype)
    loss = float(xp.mean(lse[:, 0] - xp.sum(z * onehot, axis=1)))
    dlogits = (xp.exp(z - lse) - onehot) / N
    return loss, dlogits


def classify(params: dict, x, *, batch_size: int = 2048):
    """Predicted labels (N,) int64 of the classifier (argmax of the logits).

    Parameters
    ----------
    params : dict
        Parameters of the classifier.
    x : array, shape (N, ...)
        Inputs.
    batch_size : int, optional
        Rows per forward pass (default 2048).

    Returns
    -------
    array of int64, shape (N,)
        Predicted labels.
    """
    _check_classifier(params, x)
    check_array("x", x, finite=True)  # a NaN would silently become a label
    batch_size = check_size("batch_size", batch_size)
    xp = array_namespace(x)
    out = [xp.argmax(classifier_forward(params, x[s:min(s + batch_size, x.shape[0])])[0], axis=1) for s in range(0, x.shape[0], batch_size)]
    return xp.astype(xp.concat(out), xp.int64)


def features(params: dict, x, *, batch_size: int = 2048):
    """The last hidden activation (N, hidden[-1]) of the classifier: the feature space of
    :func:`frechet_distance` for 8x8 digits.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    params : dict
        Parameters of the classifier.
    x : array, shape (N, ...)
        Inputs.
    batch_size : int, optional
        Rows per forward pass (default 2048).

    Returns
    -------
    array, shape (N, hidden[-1])
        The last hidden activation.
    """
    k = _check_classifier(params, x) - 1
    batch_size = check_size("batch_size", batch_size)
    xp = array_namespace(x)
    return xp.concat([classifier_forward(params, x[s:min(s + batch_size, x.shape[0])], upto=k)[0] for s in range(0, x.shape[0], batch_size)])
