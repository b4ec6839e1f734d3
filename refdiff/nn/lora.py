"""Low-rank adapters (LoRA) on linear layers, convolutions and attention projections,
MATH.md (19.1), (19.2), (19.3), (19.4), (19.5), (19.16).

Shapes follow PEFT, so that its checkpoints map one to one: a base linear layer of refdiff
``y = x w + b`` with ``w`` (d_in, d_out) gets ``A`` (r, d_in) and ``B`` (d_out, r); a base
convolution ``w`` (F, C, k, k) gets ``A`` (r, C, k, k), a k x k convolution with the base
layer's stride and padding, and ``B`` (F, r, 1, 1), a 1 x 1 convolution.

Layer level (forward/backward pairs, a loop specification beside the linear one)::

    y = base(x) + s * B(A(dropout(x)))                                  (19.2)

Model level (:mod:`refdiff.nn.lora_model`): an adapter is ``LoRAAdapter`` (its A/B arrays keyed ``"<layer>.lora_A"``,
``"<layer>.lora_B"``, its :class:`LoRAConfig` and its current ``scaling``).  The model runs
on the effective weights ``W + sum_k weight_k s_k dW_k`` (``lora_params``), which is
the adapter path exactly rewritten (19.4); gradients of the factors come from the
gradients of the effective weights by (19.5) (``lora_grads``).  Dropout on A's input
exists only on the layer-level path (:func:`lora_linear_forward`).

Conventions (switches): PEFT's ``scaling = alpha / r`` or rsLoRA's ``alpha / sqrt(r)``
(19.1); A Kaiming-uniform (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's default for
``nn.Linear``/``nn.Conv2d``) or Gaussian ``N(0, 1/r^2)``, B = 0; diffusers' runtime scale
(``scale_layer``, ``unscale_layer``) and ``fuse_lora(lora_scale)``/``unfuse_lora``
(``lora_fuse``, ``lora_unfuse``): a fuse multiplies the adapter's scaling by
``lora_scale`` and that product stays, so the unfuse subtracts exactly what was added.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_bool, check_finite_scalar
from ..backend import array_namespace, to_numpy
from ._check import (MAX_FIELD, check_block, check_cache, check_dout, check_grads, check_lora_dict,
                     check_lora_factors, check_mask, check_rng, check_size)
from .attention import attention_backward, attention_forward, merge_heads, split_heads
from .conv import conv2d_backward, conv2d_forward

__all__ = [
    "lora_scaling", "lora_init_factors", "lora_delta", "lora_delta_backward",
    "lora_linear_forward", "lora_linear_backward", "lora_linear_forward_naive", "lora_conv_forward",
    "lora_conv_backward", "lora_proj_forward", "lora_proj_backward", "lora_mha_forward", "lora_mha_backward",
    "dropout_mask", "lora_rrr_optimum",
]


# ------------------------------------------------------------------ scaling and init
def lora_scaling(alpha, r, *, rslora: bool = False) -> float:
    """PEFT's scaling ``s = alpha / r``, or rsLoRA's ``alpha / sqrt(r)``, MATH.md (19.1).

    Parameters
    ----------
    alpha : float
        The LoRA alpha, finite and > 0.
    r : int
        The rank, >= 1.
    rslora : bool, default False
        Use rsLoRA's ``alpha / sqrt(r)``.

    Returns
    -------
    float
        The scaling s.

    Raises
    ------
    ValueError
        If ``r`` is not an int >= 1 or ``alpha`` is not a finite number > 0.
    """
    check_bool("rslora", rslora)  # issue 19
    if isinstance(alpha, bool):
        raise TypeError(f"LoRA alpha must be a finite number > 0, got {alpha!r}")
    if isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r > MAX_FIELD:
        raise ValueError(f"LoRA rank r must be an int in [1, {MAX_FIELD}], got {r!r}")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"LoRA rank r must be an int >= 1, got {r!r}")
    if not (isinstance(alpha, (int, float, np.number)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a finite number > 0, got {alpha!r}")
    return float(alpha) / (math.sqrt(r) if rslora else float(r))


def _check_shape_arg(name, shape):
    if not isinstance(shape, (tuple, list)) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                        for v in shape):
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
    if not shape or min(shape) < 1 or max(shape) > MAX_FIELD:
        raise ValueError(f"{name} must be a non-empty tuple of ints in [1, {MAX_FIELD}], got {tuple(shape)}")


def _check_lora_linear(x, w, b, A, B, scale, mask):
    check_array("x", x, ndim=2)
    check_array("w", w, ndim=2)
    check_array("b", b)
    if x.shape[1] != w.shape[0] or tuple(b.shape) != (w.shape[1],):
        raise ValueError(f"lora_linear_forward: need x (N, d_in), w (d_in, d_out), b (d_out,); got x {tuple(x.shape)}, "
                         f"w {tuple(w.shape)}, b {tuple(b.shape)}")
    check_lora_factors(A, B, scale, tuple(w.shape), what="lora_linear_forward")
    check_mask(mask, x.shape)


def _check_rank(r, w_shape, what):
    d_in = int(np.prod(w_shape[1:])) if len(w_shape) == 4 else int(w_shape[0])
    d_out = int(w_shape[0]) if len(w_shape) == 4 else int(w_shape[1])
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= min(d_in, d_out):
        raise ValueError(f"{what}: LoRA rank r must be an int in [1, min(fan_in, fan_out)] = [1, {min(d_in, d_out)}] "
                         f"for a layer of weight shape {tuple(w_shape)}, got {r!r}")


def lora_init_factors(w_shape, r: int, rng, *, init: str = "kaiming"):
    """Host float64 factors ``(A, B)`` for a base weight of shape ``w_shape`` (linear
    (d_in, d_out) or conv (F, C, k, k)): A Kaiming-uniform with PyTorch's a = sqrt(5),
    i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with fan_in = d_in or C k^2 (``init=
    "kaiming"``, PEFT's default) or ``N(0, 1/r^2)`` (``"gaussian"``); B = 0 (PEFT).

    Parameters
    ----------
    w_shape : tuple of int
        The base weight's shape: (d_in, d_out) or (F, C, k, k).
    r : int
        The rank, in [1, min(fan_in, fan_out)].
    rng : numpy.random.Generator
        Source of A.
    init : {"kaiming", "gaussian"}, default "kaiming"
        The initialisation of A.

    Returns
    -------
    A : numpy.ndarray, shape (r, d_in) or (r, C, k, k)
        The down factor.
    B : numpy.ndarray, shape (d_out, r) or (F, r, 1, 1)
        The up factor, zero.

    Raises
    ------
    ValueError
        If ``r`` is out of range, ``init`` is unknown, or ``w_shape`` is neither 2-D nor 4-D.
    """
    _check_shape_arg("w_shape", w_shape)  # issue 19
    check_rng(rng)
    _check_rank(r, w_shape, "lora_init_factors")
    if init not in ("kaiming", "gaussian"):
        raise ValueError(f"lora_init_factors: init must be 'kaiming' or 'gaussian', got {init!r}")
    if len(w_shape) == 4:
        F, C, kh, kw = w_shape
        a_shape, b_shape, fan_in = (r, C, kh, kw), (F, r, 1, 1), C * kh * kw
    elif len(w_shape) == 2:
        a_shape, b_shape, fan_in = (r, w_shape[0]), (w_shape[1], r), w_shape[0]
    else:
        raise ValueError(f"lora_init_factors: w_shape must be linear (d_in, d_out) or conv (F, C, k, k), got {w_shape}")
    if init == "kaiming":
        bound = 1.0 / math.sqrt(fan_in)  # gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in)
        A = rng.uniform(-bound, bound, size=a_shape)
    else:
        A = rng.standard_normal(a_shape) / r
    return A, np.zeros(b_shape)


def dropout_mask(shape, p: float, rng):
    """Inverted-dropout mask ``m = [u >= p] / (1 - p)`` (host float64) for A's input.

    Parameters
    ----------
    shape : tuple of int
        Shape of the mask (that of A's input).
    p : float
        Drop probability, in [0, 1).
    rng : numpy.random.Generator
        Source of the uniforms.

    Returns
    -------
    numpy.ndarray
        The mask: 0 or 1 / (1 - p).

    Raises
    ------
    ValueError
        If ``p`` is outside [0, 1).
    """
    _check_shape_arg("shape", shape)  # issue 19
    check_finite_scalar("p", p)
    check_rng(rng)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_mask: p must be in [0, 1), got {p}")
    return (rng.random(shape) >= p) / (1.0 - p)


# ------------------------------------------------------------------ the weight delta
def lora_delta(A, B, scale):
    """The merged-weight increment in the base layer's layout, MATH.md (19.4):
    linear ``dW = s (B A)^T`` (d_in, d_out); conv ``dW[o, i, u, v] = s sum_rho B[o, rho]
    A[rho, i, u, v]`` (F, C, k, k).

    Parameters
    ----------
    A : array, shape (r, d_in) or (r, C, k, k)
        The down factor.
    B : array, shape (d_out, r) or (F, r, 1, 1)
        The up factor.
    scale : float
        The scaling s.

    Returns
    -------
    array, shape (d_in, d_out) or (F, C, k, k)
        The increment dW.
    """
    check_lora_factors(A, B, scale, what="lora_delta")  # issue 19
    xp = array_namespace(A, B)
    if A.ndim == 4:
        r = A.shape[0]
        return scale * xp.reshape(xp.reshape(B, (B.shape[0], r)) @ xp.reshape(A, (r, -1)), (B.shape[0], *A.shape[1:]))
    return scale * (B @ A).T


def lora_delta_backward(d_delta, A, B, scale):
    """``(dA, dB)`` from the gradient of the merged increment, MATH.md (19.5):
    ``dB = s G^T A^T``, ``dA = s B^T G^T`` with G the gradient of the linear dW (d_in,
    d_out); for conv the same on the (F, C k^2) matrix view.

    Parameters
    ----------
    d_delta : array, shape (d_in, d_out) or (F, C, k, k)
        Gradient with respect to the increment dW.
    A : array
        The down factor (as in :func:`lora_delta`).
    B : array
        The up factor.
    scale : float
        The scaling s.

    Returns
    -------
    dA : array
        Gradient with respect to A (A's shape).
    dB : array
        Gradient with respect to B (B's shape).
    """
    check_lora_factors(A, B, scale, what="lora_delta_backward")  # issue 19
    check_dout(d_delta, (A.shape[1], B.shape[0]) if A.ndim == 2 else (B.shape[0],) + tuple(A.shape[1:]), name="d_delta")
    xp = array_namespace(d_delta)
    if A.ndim == 4:
        r, F = A.shape[0], B.shape[0]
        G = xp.reshape(d_delta, (F, -1))  # (F, C k k)
        B2, A2 = xp.reshape(B, (F, r)), xp.reshape(A, (r, -1))
        return xp.reshape(scale * (B2.T @ G), A.shape), xp.reshape(scale * (G @ A2.T), B.shape)
    return scale * (B.T @ d_delta.T), scale * (d_delta.T @ A.T)


# ------------------------------------------------------------------ linear
def lora_linear_forward(x, w, b, A, B, scale, *, mask=None):
    """``y = x w + b + s ((x * m) A^T) B^T``, MATH.md (19.2): x (N, d_in), w (d_in, d_out),
    A (r, d_in), B (d_out, r); ``mask`` (N, d_in): the dropout mask on A's input (None:
    no dropout).  Returns ``(y, cache)``.

    Parameters
    ----------
    x : array, shape (N, d_in)
        Inputs.
    w : array, shape (d_in, d_out)
        Base weight.
    b : array, shape (d_out,)
        Base bias.
    A : array, shape (r, d_in)
        Down factor.
    B : array, shape (d_out, r)
        Up factor.
    scale : float
        The scaling s.
    mask : array, shape (N, d_in), optional
        Dropout mask on A's input; None: no dropout.

    Returns
    -------
    y : array, shape (N, d_out)
        The output.
    cache : tuple
        For :func:`lora_linear_backward`.
    """
    _check_lora_linear(x, w, b, A, B, scale, mask)  # issue 19
    xd = x if mask is None else x * mask
    u = xd @ A.T  # (N, r)
    y = x @ w + b + scale * (u @ B.T)  # (N, d_out)
    return y, (x, xd, u, w, A, B, scale, mask)


def lora_linear_backward(dout, cache):
    """Gradients of :func:`lora_linear_forward`, MATH.md (19.3):
    ``dB = s dY^T u``, ``dA = s (dY B)^T (x m)``, ``dx = dY w^T + s ((dY B) A) * m``,
    ``dw = x^T dY``, ``db = sum dY``.  Returns ``(dx, dw, db, dA, dB)``.

    Parameters
    ----------
    dout : array, shape (N, d_out)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`lora_linear_forward`.

    Returns
    -------
    dx : array, shape (N, d_in)
    dw : array, shape (d_in, d_out)
    db : array, shape (d_out,)
    dA : array, shape (r, d_in)
    dB : array, shape (d_out, r)
        Gradients with respect to x, w, b, A and B.
    """
    x, xd, u, w, A, B, scale, mask = check_cache(cache, "lora_linear_forward", 8)  # issue 19
    check_dout(dout, (x.shape[0], w.shape[1]))
    xp = array_namespace(dout)
    x, xd, u, w, A, B, scale, mask = cache
    du = scale * (dout @ B)  # (N, r)
    dxd = du @ A
    dx = dout @ w.T + (dxd if mask is None else dxd * mask)
    return dx, x.T @ dout, xp.sum(dout, axis=0), du.T @ xd, scale * (dout.T @ u)


def lora_linear_forward_naive(x, w, b, A, B, scale, mask=None):
    """Loop definition of (19.2) on the host in float64: ``y[n, o] = b[o] + sum_i x[n, i]
    w[i, o] + s sum_rho B[o, rho] sum_i A[rho, i] x[n, i] m[n, i]``; the specification.

    Parameters
    ----------
    x, w, b, A, B, scale, mask
        As in :func:`lora_linear_forward`.

    Returns
    -------
    numpy.ndarray, shape (N, d_out)
        The output in float64.
    """
    _check_lora_linear(x, w, b, A, B, scale, mask)  # issue 19
    x, w, b, A, B = (np.asarray(to_numpy(a), dtype=np.float64) for a in (x, w, b, A, B))
    m = np.ones_like(x) if mask is None else np.asarray(to_numpy(mask), dtype=np.float64)
    N, D = x.shape
    r, O = A.shape[0], w.shape[1]
    y = np.zeros((N, O))
    for n in range(N):
        for o in range(O):
            acc = b[o] + sum(x[n, i] * w[i, o] for i in range(D))
            for rho in range(r):
                acc += scale * B[o, rho] * sum(A[rho, i] * x[n, i] * m[n, i] for i in range(D))
            y[n, o] = acc
    return y


# ------------------------------------------------------------------ convolution
def lora_conv_forward(x, w, b, A, B, scale, *, stride: int = 1, pad: int | None = None, mask=None):
    """``y = conv(x; w, b) + s conv1x1(conv(x * m; A); B)``, MATH.md (19.2): A runs with the
    base layer's stride and padding, B is pointwise.  Returns ``(y, cache)``.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Inputs.
    w : array, shape (F, C, k, k)
        Base convolution weight.
    b : array, shape (F,)
        Base bias.
    A : array, shape (r, C, k, k)
        Down factor (a k x k convolution).
    B : array, shape (F, r, 1, 1)
        Up factor (a 1 x 1 convolution).
    scale : float
        The scaling s.
    stride : int, default 1
        Stride of the base convolution and of A.
    pad : int, optional
        Padding of the base convolution and of A; None (default): ``k // 2``.
    mask : array, shape (N, C, H, W), optional
        Dropout mask on A's input; None: no dropout.

    Returns
    -------
    y : array, shape (N, F, H_out, W_out)
        The output.
    cache : tuple
        For :func:`lora_conv_backward`.
    """
    check_array("x", x)  # issue 19
    check_array("w", w, ndim=4)
    check_lora_factors(A, B, scale, tuple(w.shape), what="lora_conv_forward")
    check_mask(mask, x.shape)
    xp = array_namespace(x, w)
    pad = w.shape[2] // 2 if pad is None else pad
    xd = x if mask is None else x * mask
    y, c0 = conv2d_forward(x, w, b, stride=stride, pad=pad)
    u, c1 = conv2d_forward(xd, A, xp.zeros((A.shape[0],), dtype=A.dtype), stride=stride, pad=pad)  # (N, r, Ho, Wo)
    v, c2 = conv2d_forward(u, B, xp.zeros((B.shape[0],), dtype=B.dtype), stride=1, pad=0)
    return y + scale * v, (c0, c1, c2, scale, mask)


def lora_conv_backward(dout, cache):
    """Gradients of :func:`lora_conv_forward`, MATH.md (19.3) with correlations in place of
    products.  Returns ``(dx, dw, db, dA, dB)``.

    Parameters
    ----------
    dout : array, shape (N, F, H_out, W_out)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`lora_conv_forward`.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dw : array, shape (F, C, k, k)
    db : array, shape (F,)
    dA : array, shape (r, C, k, k)
    dB : array, shape (F, r, 1, 1)
        Gradients with respect to x, w, b, A and B.
    """
    check_cache(cache, "lora_conv_forward", 5)  # issue 19
    c0, c1, c2, scale, mask = cache
    dx, dw, db = conv2d_backward(dout, c0)
    du, dB, _ = conv2d_backward(scale * dout, c2)
    dxd, dA, _ = conv2d_backward(du, c1)
    return dx + (dxd if mask is None else dxd * mask), dw, db, dA, dB


# ------------------------------------------------------------------ attention projections
def lora_proj_forward(P, name, x, lora: dict, scale):
    """A token-wise projection ``x (N, L, D) -> (N, L, D_out)`` of ``P[name.w]`` (+ b) with
    the adapter ``lora[name.lora_A], lora[name.lora_B]`` if present, MATH.md (19.2).

    Parameters
    ----------
    P : dict
        Base parameters: ``P[name + ".w"]`` (D, D_out) and optionally ``P[name + ".b"]``.
    name : str
        The projection's key prefix.
    x : array, shape (N, L, D)
        Tokens.
    lora : dict
        Adapter factors; ``lora[name + ".lora_A"]`` and ``lora[name + ".lora_B"]`` are used
        when present.
    scale : float
        The scaling s.

    Returns
    -------
    y : array, shape (N, L, D_out)
        The projected tokens.
    cache : tuple
        For :func:`lora_proj_backward`.
    """
    check_block(P, name, ".w", what="lora_proj_forward", pre_name="name")  # issue 19
    check_array("x", x, ndim=3)
    check_lora_dict(lora)
    check_finite_scalar("scale", scale)
    xp = array_namespace(x)
    N, L, D = x.shape
    w = P[name + ".w"]
    b = P.get(name + ".b", xp.zeros((w.shape[1],), dtype=w.dtype))
    x2 = xp.reshape(x, (N * L, D))
    if name + ".lora_A" in lora:
        y, c = lora_linear_forward(x2, w, b, lora[name + ".lora_A"], lora[name + ".lora_B"], scale)
    else:
        y, c = x2 @ w + b, (x2, w)
    return xp.reshape(y, (N, L, w.shape[1])), c


def lora_proj_backward(G, P, name, dy, cache):
    """Backward of :func:`lora_proj_forward`: base and adapter gradients into ``G``.

    Parameters
    ----------
    G : dict
        Gradient accumulator: gradients of ``name + ".w"``, ``".b"`` (and ``".lora_A"``,
        ``".lora_B"`` with an adapter) are added into it.
    P : dict
        The base parameters.
    name : str
        The projection's key prefix.
    dy : array, shape (N, L, D_out)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`lora_proj_forward`.

    Returns
    -------
    array, shape (N, L, D)
        Gradient with respect to the tokens.
    """
    check_grads(G)  # issue 19
    check_block(P, name, ".w", what="lora_proj_backward", pre_name="name")
    check_cache(cache, "lora_proj_forward", 2 if isinstance(cache, tuple) and len(cache) == 2 else 8)
    check_array("dy", dy, ndim=3)
    xp = array_namespace(dy)
    N, L, Do = dy.shape
    dy2 = xp.reshape(dy, (N * L, Do))
    if len(cache) == 2:
        x2, w = cache
        dx, grads = dy2 @ w.T, {".w": x2.T @ dy2, ".b": xp.sum(dy2, axis=0)}
    else:
        dx, dw, db, dA, dB = lora_linear_backward(dy2, cache)
        grads = {".w": dw, ".b": db, ".lora_A": dA, ".lora_B": dB}
    for k, g in grads.items():
        G[name + k] = G[name + k] + g if name + k in G else g
    return xp.reshape(dx, (N, L, -1))


def lora_mha_forward(P, pre, x, lora: dict, scale, *, heads: int, context=None):
    """Multi-head attention (MATH.md (13.23); projections ``q``, ``kv`` or ``qkv``, and
    ``out``, as :func:`refdiff.nn.attention.mha_forward`) with LoRA on any of its
    projections, MATH.md (19.2).  Returns ``(y, cache)``.

    Parameters
    ----------
    P : dict
        Base parameters under ``pre`` (``qkv`` or ``q`` + ``kv``, and ``out``).
    pre : str
        The key prefix.
    x : array, shape (N, L, D)
        Query tokens.
    lora : dict
        Adapter factors keyed ``"<projection>.lora_A"`` / ``".lora_B"``.
    scale : float
        The scaling s.
    heads : int
        Number of heads.
    context : array, shape (N, L_c, D_c), optional
        Key/value tokens; None (default): self-attention.

    Returns
    -------
    y : array, shape (N, L, D)
        The output tokens.
    cache : tuple
        For :func:`lora_mha_backward`.
    """
    check_block(P, pre, ".out.w", what="lora_mha_forward")  # issue 19
    check_array("x", x, ndim=3)
    check_lora_dict(lora)
    check_finite_scalar("scale", scale)
    check_size("heads", heads)
    if context is not None:
        check_array("context", context, ndim=3)
    c = x if context is None else context
    if pre + ".qkv.w" in P:
        qkv, cq = lora_proj_forward(P, pre + ".qkv", x, lora, scale)
        Di = qkv.shape[2] // 3
        q, k, v, caches = qkv[..., :Di], qkv[..., Di:2 * Di], qkv[..., 2 * Di:], ("qkv", cq)
    else:
        q, cq = lora_proj_forward(P, pre + ".q", x, lora, scale)
        kv, ckv = lora_proj_forward(P, pre + ".kv", c, lora, scale)
        Di = q.shape[2]
        k, v, caches = kv[..., :Di], kv[..., Di:], ("kv", cq, ckv)
    o, c_a = attention_forward(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    y, c_o = lora_proj_forward(P, pre + ".out", merge_heads(o), lora, scale)
    return y, (caches, c_a, c_o, heads, context is None)


def lora_mha_backward(G, P, pre, dout, cache):
    """Backward of :func:`lora_mha_forward`; returns ``(dx, dcontext or None)``.

    Parameters
    ----------
    G : dict
        Gradient accumulator (base and adapter gradients are added into it).
    P : dict
        The base parameters.
    pre : str
        The key prefix.
    dout : array, shape (N, L, D)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`lora_mha_forward`.

    Returns
    -------
    dx : array, shape (N, L, D)
        Gradient with respect to ``x``.
    dcontext : array or None
        Gradient with respect to the context; None for self-attention.
    """
    check_grads(G)  # issue 19
    check_block(P, pre, ".out.w", what="lora_mha_backward")
    check_cache(cache, "lora_mha_forward", 5)
    check_array("dout", dout, ndim=3)
    xp = array_namespace(dout)
    caches, c_a, c_o, heads, is_self = cache
    do = lora_proj_backward(G, P, pre + ".out", dout, c_o)
    dq, dk, dv = (merge_heads(g) for g in attention_backward(split_heads(do, heads), c_a))
    if caches[0] == "qkv":
        return lora_proj_backward(G, P, pre + ".qkv", xp.concat([dq, dk, dv], axis=2), caches[1]), None
    dx = lora_proj_backward(G, P, pre + ".q", dq, caches[1])
    dc = lora_proj_backward(G, P, pre + ".kv", xp.concat([dk, dv], axis=2), caches[2])
    return (dx + dc, None) if is_self else (dx, dc)


# ------------------------------------------------------------------ closed-form best rank-r fine-tune
def lora_rrr_optimum(W0, Sigma1, alpha: float, sigma: float, r: int):
    """Best rank-r update of the linear denoiser ``x0_hat = x_t W`` (row vectors) fine-tuned
    from ``W0`` to data N(0, Sigma1) at one noise level (alpha, sigma), MATH.md (19.16):
    ``C = alpha^2 Sigma1 + sigma^2 I``, ``W* = C^{-1} alpha Sigma1``, ``M = C^{1/2} (W* - W0) =
    U S V^T``; returns ``(dW* = C^{-1/2} (U S V^T)_r, excess* = sum_{i>r} s_i^2, W*)``.
    Host float64.

    Parameters
    ----------
    W0 : array_like, shape (D, D)
        The pretrained denoiser weight.
    Sigma1 : array_like, shape (D, D)
        Covariance of the fine-tuning data.
    alpha : float
        Signal coefficient alpha_t of the noise level.
    sigma : float
        Noise coefficient sigma_t of the noise level.
    r : int
        The rank, in [1, D].

    Returns
    -------
    dW : numpy.ndarray, shape (D, D)
        The best rank-r update.
    excess : float
        Its excess loss, the sum of the discarded squared singular values.
    W_star : numpy.ndarray, shape (D, D)
        The unconstrained optimum.

    Raises
    ------
    ValueError
        If ``r`` is out of range.
    """
    check_array("W0", W0, shape=(W0.shape[0], W0.shape[0]) if hasattr(W0, "shape") and len(W0.shape) == 2 else (None, None),
                finite=True)  # issue 19: square; NaN would stall LAPACK's SVD
    check_array("Sigma1", Sigma1, shape=tuple(W0.shape), finite=True)
    check_finite_scalar("alpha", alpha)
    check_finite_scalar("sigma", sigma, low=0.0, low_open=True)
    W0, Sigma1 = np.asarray(W0, dtype=np.float64), np.asarray(Sigma1, dtype=np.float64)
    D = W0.shape[0]
    _check_rank(r, W0.shape, "lora_rrr_optimum")
    C = alpha ** 2 * Sigma1 + sigma ** 2 * np.eye(D)
    W_star = np.linalg.solve(C, alpha * Sigma1)
    e, V = np.linalg.eigh(C)
    C_half, C_mhalf = (V * np.sqrt(e)) @ V.T, (V / np.sqrt(e)) @ V.T
    U, s, Vt = np.linalg.svd(C_half @ (W_star - W0))
    return C_mhalf @ (U[:, :r] * s[:r]) @ Vt[:r], float(np.sum(s[r:] ** 2)), W_star
