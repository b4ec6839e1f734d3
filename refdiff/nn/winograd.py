"""Winograd minimal filtering for 3x3 stride-1 "same" convolutions, MATH.md chapter 23.

The tuned convolution of :mod:`refdiff.nn.fast` computes a 3x3 stride-1 pad-1
convolution with C >= 2 input channels by Winograd's F(m x m, 3 x 3) algorithm
(m = 4 by default, m = 2 as a switch): each m x m output tile is

    Y = A^T [ sum_c (G w_fc G^T) (.) (B^T d_c B) ] A                  MATH.md (23.2)

with d_c the (m + 2) x (m + 2) input tile of channel c; the channel sum of the
elementwise products is one batched matrix product over the alpha^2 = (m + 2)^2
transform positions.  The backward pass is the adjoint of each linear map, MATH.md
(23.3) and (23.4): the output-tile gradient goes back through A, then through the
products, then ``dW = G^T dWt G`` and the input gradient is the overlap-add of
``B dU B^T`` over the tiles.

Activations are in the (C, H, W, N) memory order of :mod:`refdiff.nn.fast` (batch
fastest): every transform is a short sum of scaled strided slices (views) of whole
arrays, so each operation moves runs of W N or N contiguous numbers.  Sizes that are not
multiples of m are handled by zero padding the input (and the output gradient) up to
whole tiles and cropping the output (and the input gradient).

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import functools
from fractions import Fraction as _Fr

from array_api_compat import device as _device

__all__ = ["winograd_matrices", "conv3x3_forward", "conv3x3_backward", "TILES"]

TILES = (2, 4)

# Exact rational transforms, MATH.md (23.1): F(2, 3) on the points 0, 1, -1, inf and
# F(4, 3) on 0, 1, -1, 2, -2, inf (rows of B^T, G, A^T).
_F = _Fr
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [_F(1, 2), _F(1, 2), _F(1, 2)], [_F(1, 2), _F(-1, 2), _F(1, 2)], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[_F(1, 4), 0, 0], [_F(-1, 6), _F(-1, 6), _F(-1, 6)], [_F(-1, 6), _F(1, 6), _F(-1, 6)],
         [_F(1, 24), _F(1, 12), _F(1, 6)], [_F(1, 24), _F(-1, 12), _F(1, 6)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def winograd_matrices(m: int):
    """``(BT, G, AT)`` of F(m, 3) as lists of exact Fractions, MATH.md (23.1): for a
    length-(m + 2) signal d and a 3-tap filter g, ``AT ((G g) * (BT d))`` is the
    correlation ``y_i = sum_k d_{i+k} g_k``, i = 0 .. m - 1.

    Parameters
    ----------
    m : int
        Output tile length, one of ``TILES`` = (2, 4).

    Returns
    -------
    BT : list of list of Fraction
        Input transform, (m + 2) x (m + 2).
    G : list of list of Fraction
        Filter transform, (m + 2) x 3.
    AT : list of list of Fraction
        Output transform, m x (m + 2).

    Raises
    ------
    ValueError
        If ``m`` is not in ``TILES``.
    """
    _check_tile(m)  # issue 19
    return tuple([[_Fr(v) for v in row] for row in M] for M in _MATRICES[m])


@functools.lru_cache(maxsize=16)
def _check_tile(m):
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"winograd tile m must be an int, one of {TILES}, got {m!r}")
    if m not in _MATRICES:
        raise ValueError(f"winograd tile m must be one of {TILES}, got {m!r}")


def _check_forward_args(xp, xT, w, b, m):
    """Cheap checks (issue 19): a namespace, float arrays xT (C, H, W, N), w (F, C, 3, 3),
    b (F,), a supported tile."""
    from .._validate import check_array
    from ._check import check_xp

    check_xp(xp)
    check_array("xT", xT, ndim=4)
    check_array("w", w, shape=(None, xT.shape[0], 3, 3))
    check_array("b", b)
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"b must have shape (F,) = ({w.shape[0]},) for w of shape {tuple(w.shape)}, got {tuple(b.shape)}")
    _check_tile(m)


def _check_backward_args(xp, dT, cache):
    from ._check import check_cache, check_dout, check_xp

    check_xp(xp)
    U, Wt, w_shape, (C, H, W, N), m = check_cache(cache, "conv3x3_forward", 5)
    check_dout(dT, (w_shape[0], H, W, N), name="dT")


def _float_matrices(m: int):
    """(BT, G, AT, B, A) of F(m, 3) as tuples of float rows (B = BT^T, A = AT^T)."""
    BT, G, AT = winograd_matrices(m)
    fl = lambda M: tuple(tuple(float(v) for v in row) for row in M)  # noqa: E731
    return fl(BT), fl(G), fl(AT), fl(_transpose(BT)), fl(_transpose(AT))


def _mix(T, get, n_in):
    """``[sum_a T[i][a] get(a) for i]`` skipping zeros and +-1 multiplications, each sum
    accumulated in place in one new array."""
    out = []
    for row in T:
        acc = None
        for a in range(n_in):
            c = row[a]
            if c == 0.0:
                continue
            s = get(a)
            if acc is None:
                acc = s * c  # a new array (times 1.0 or -1.0 is exact), then updated in place
            elif c == 1.0:
                acc += s
            elif c == -1.0:
                acc -= s
            else:
                acc += c * s
        out.append(acc)
    return out


def _transpose(T):
    return [list(col) for col in zip(*T)]


def _geometry(H, W, m):
    tH, tW = -(-H // m), -(-W // m)
    return tH, tW, m * tH + 2, m * tW + 2


def _kernel_transform(xp, w, G):
    """Wt = G w G^T per (f, c), as (alpha^2, F, C), MATH.md (23.2)."""
    Gm = xp.asarray([list(row) for row in G], dtype=w.dtype, device=_device(w))
    a = Gm.shape[0]
    Wt = Gm @ w @ Gm.T  # (F, C, alpha, alpha)
    return xp.reshape(xp.permute_dims(Wt, (2, 3, 0, 1)), (a * a, w.shape[0], w.shape[1]))


def conv3x3_forward(xp, xT, w, b, m: int = 4):
    """3x3 stride-1 pad-1 convolution of ``xT`` (C, H, W, N) with ``w`` (F, C, 3, 3) and
    bias ``b`` (F,) by Winograd F(m x m, 3 x 3), MATH.md (23.2); returns the output
    (F, H, W, N) and the cache for :func:`conv3x3_backward`.

    Parameters
    ----------
    xp : namespace
        Array namespace of the inputs.
    xT : array, shape (C, H, W, N)
        Input, batch axis last.
    w : array, shape (F, C, 3, 3)
        Kernels.
    b : array, shape (F,)
        Bias.
    m : int, optional
        Output tile size, one of ``TILES`` (default 4).

    Returns
    -------
    out : array, shape (F, H, W, N)
        The convolution plus bias.
    cache : tuple
        Saved values for :func:`conv3x3_backward`.

    Raises
    ------
    ValueError
        If ``m`` is not in ``TILES``.
    """
    _check_forward_args(xp, xT, w, b, m)  # issue 19
    BT, G, AT, _, _ = _float_matrices(m)
    C, H, W, N = xT.shape
    F = w.shape[0]
    a = m + 2
    tH, tW, Hp, Wp = _geometry(H, W, m)
    xpad = xp.zeros((C, Hp, Wp, N), dtype=xT.dtype, device=_device(xT))
    xpad[:, 1:H + 1, 1:W + 1, :] = xT
    # input transform U = B^T d B on all tiles at once: rows, then columns (strided views)
    R = _mix(BT, lambda r: xpad[:, r:r + m * (tH - 1) + 1:m, :, :], a)  # alpha x (C, tH, Wp, N)
    U = xp.stack([xp.stack(_mix(BT, lambda s: Ri[:, :, s:s + m * (tW - 1) + 1:m, :], a)) for Ri in R])
    U = xp.reshape(U, (a * a, C, tH * tW * N))  # (alpha^2, C, tiles N)
    Wt = _kernel_transform(xp, w, G)  # (alpha^2, F, C)
    M = xp.reshape(Wt @ U, (a, a, F, tH, tW, N))
    # output transform Y = A^T M A, tiles laid side by side, cropped to H x W
    Y1 = _mix(AT, lambda k: M[k, ...], a)  # m x (alpha, F, tH, tW, N)
    Y = xp.stack([xp.stack(_mix(AT, lambda k: Yi[k, ...], a), axis=3) for Yi in Y1], axis=2)  # (F, tH, m, tW, m, N)
    out = xp.reshape(Y, (F, m * tH, m * tW, N))[:, :H, :W, :] + b[:, None, None, None]
    return out, (U, Wt, w.shape, (C, H, W, N), m)


def conv3x3_backward(xp, dT, cache):
    """Gradients of :func:`conv3x3_forward` for the output gradient ``dT`` (F, H, W, N):
    ``(dxT (C, H, W, N), dw (F, C, 3, 3), db (F,))`` through the adjoint transforms,
    MATH.md (23.3) and MATH.md (23.4).

    Parameters
    ----------
    xp : namespace
        Array namespace of the arrays.
    dT : array, shape (F, H, W, N)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`conv3x3_forward`.

    Returns
    -------
    dxT : array, shape (C, H, W, N)
        Gradient with respect to ``xT``.
    dw : array, shape (F, C, 3, 3)
        Gradient with respect to ``w``.
    db : array, shape (F,)
        Gradient with respect to ``b``.
    """
    _check_backward_args(xp, dT, cache)  # issue 19
    U, Wt, w_shape, (C, H, W, N), m = cache
    BT, G, AT, B, A = _float_matrices(m)
    F = w_shape[0]
    a = m + 2
    tH, tW, Hp, Wp = _geometry(H, W, m)
    db = xp.sum(xp.reshape(dT, (F, H * W * N)), axis=1)
    dpad = xp.zeros((F, m * tH, m * tW, N), dtype=dT.dtype, device=_device(dT))
    dpad[:, :H, :W, :] = dT
    dpad = xp.reshape(dpad, (F, tH, m, tW, m, N))
    # adjoint of the output transform: dM = A dY A^T per tile, MATH.md (23.3)
    D1 = _mix(A, lambda i: dpad[:, :, i, :, :, :], m)  # alpha x (F, tH, tW, m, N)
    dM = xp.stack([xp.stack(_mix(A, lambda j: Di[:, :, :, j, :], m)) for Di in D1])  # (a, a, F, tH, tW, N)
    dM = xp.reshape(dM, (a * a, F, tH * tW * N))
    dWt = dM @ xp.permute_dims(U, (0, 2, 1))  # (alpha^2, F, C)
    dU = xp.reshape(xp.permute_dims(Wt, (0, 2, 1)) @ dM, (a, a, C, tH, tW, N))
    # dW = G^T dWt G, MATH.md (23.4)
    Gm = xp.asarray([list(row) for row in G], dtype=dT.dtype, device=_device(dT))
    dWt4 = xp.permute_dims(xp.reshape(dWt, (a, a, F, C)), (2, 3, 0, 1))
    dw = Gm.T @ dWt4 @ Gm
    # dX: overlap-add of B dU B^T over the tiles (adjoint of the strided-view transform)
    dR = xp.zeros((a, C, tH, Wp, N), dtype=dT.dtype, device=_device(dT))
    for s, v in enumerate(_mix(B, lambda nu: dU[:, nu, ...], a)):  # v: (alpha, C, tH, tW, N)
        dR[:, :, :, s:s + m * (tW - 1) + 1:m, :] += v
    dxpad = xp.zeros((C, Hp, Wp, N), dtype=dT.dtype, device=_device(dT))
    for r, v in enumerate(_mix(B, lambda xi: dR[xi, ...], a)):  # v: (C, tH, Wp, N)
        dxpad[:, r:r + m * (tH - 1) + 1:m, :, :] += v
    return dxpad[:, 1:H + 1, 1:W + 1, :], dw, db
