"""GroupNorm and the fused GroupNorm + SiLU of the hwnc layout (:mod:`refdiff.nn.fast_hwnc`):
arrays are logically NCHW, in memory (H, W, N, C), so the statistics are sums over the
leading (spatial) axis of the (S, N C) matrix.  MATH.md (13.9), MATH.md (13.10),
MATH.md (13.11), MATH.md (23.7).  The fused layer has two forms (``fast.set_gnsilu``):
the bit-identical one (:func:`groupnorm_silu_forward`) and the one with fewer passes
(:func:`groupnorm_silu_forward_fast`, MATH.md (23.9), MATH.md (23.10), float32 bound
MATH.md (23.11)).  Reached through refdiff.nn.fast (arguments checked there); tested in
tests/test_nn_fast_hwnc.py and tests/test_nn_gnsilu_fast.py.
"""

from __future__ import annotations

import numpy as _np

from .fast_hwnc import _colsum, _ones, _scratch, to_hwnc, to_nchw

__all__: list = []  # internal


# ------------------------------------------------------------------ GroupNorm
def _per_channel(v, G, C):
    """(N, G) -> (N, C): each group's value for its channels."""
    return _np.repeat(v, C // G, axis=1)


def groupnorm_forward(x, gamma, beta, groups, eps):
    """GroupNorm on the (S, N, C) view (sums over the leading spatial axis), MATH.md (13.9)."""
    xm = to_hwnc(x)
    N, C = x.shape[0], x.shape[1]
    x2 = xm.reshape(-1, N, C)  # (S, N, C)
    M = (C // groups) * x2.shape[0]
    mean = _colsum(x2.reshape(-1, N * C)).reshape(N, groups, C // groups).sum(axis=2) / M  # (N, G)
    xc = x2 - _per_channel(mean, groups, C)
    var = _np.einsum("snc,snc->nc", xc, xc).reshape(N, groups, C // groups).sum(axis=2) / M
    rstd = 1.0 / _np.sqrt(var + eps)  # (N, G)
    out = xc * (gamma * _per_channel(rstd, groups, C))  # gamma xhat, xhat = (x - mean) rstd not stored
    out += beta
    return to_nchw(out.reshape(xm.shape)), (xc, rstd, gamma, groups, xm.shape)


def groupnorm_backward(dout, cache):
    """``dx = rstd (g - mean(g) - xhat mean(g xhat))``, g = dout gamma, MATH.md (13.10),
    from per-(sample, channel) spatial sums on the (S, N, C) view; xhat enters through the
    centred input (x - mean) and per-(sample, channel) factors of rstd."""
    xc, rstd, gamma, G, shape = cache  # xc = x - mean: xhat = xc rstd
    S, N, C = xc.shape
    d2 = to_hwnc(dout).reshape(S, N, C)
    sd = _colsum(d2.reshape(S, N * C)).reshape(N, C)
    sdx = _np.einsum("snc,snc->nc", d2, xc) * _per_channel(rstd, G, C)  # (N, C): sums of dout xhat
    dbeta, dgamma = _np.sum(sd, axis=0), _np.sum(sdx, axis=0)
    M = (C // G) * S
    mg = (gamma * sd).reshape(N, G, C // G).sum(axis=2) / M  # (N, G): mean(g)
    mgx = (gamma * sdx).reshape(N, G, C // G).sum(axis=2) / M  # (N, G): mean(g xhat)
    t = xc * _per_channel(rstd * rstd * mgx, G, C)  # xhat (rstd mean(g xhat))
    t += _per_channel(rstd * mg, G, C)
    dx = d2 * (gamma * _per_channel(rstd, G, C))
    dx -= t
    return to_nchw(dx.reshape(shape)), dgamma, dbeta


# ------------------------------------------------------------------ GroupNorm + SiLU
# (Both forms.)  Above this many numbers per array, the fused layer's cache keeps only xc and the backward
# pass forms h, u and the slope v again (the forward's own operations: the same bits).  The
# cached v is ~95 MiB of the default U-Net's step at batch 1024 (16 calls); recomputing costs
# ~7 elementwise passes per call.  The default U-Net at batch 128 (at most 2^19 numbers per
# array) keeps v.
_KEEP_HU_FLOATS = 1 << 19


def _half_y(xc, rstd, gamma, beta, k):
    """``h = y / 2 = xc (gamma rstd / 2) + beta / 2`` and ``u = 1 + tanh(h) = 2 sigmoid(y)``
    on the (S, N C) matrix xc, rstd (N, G), k = C / G channels per group."""
    N = rstd.shape[0]
    h = _np.multiply(xc, ((0.5 * gamma) * rstd.repeat(k, axis=1)).reshape(-1))
    h += _np.tile(0.5 * beta, N)
    u = _np.tanh(h)
    u += 1.0
    return h, u


def _slope(h, u):
    """``v = u (1 + h (2 - u)) = 2 sigmoid(y) (1 + y (1 - sigmoid(y)))``, twice SiLU's
    derivative at y = 2h, MATH.md (23.7), formed as ``((2 - u) h + 1) u`` (the rounding of
    SiLU's backward ``((1 - s) y + 1) s``, doubled exactly)."""
    v = _np.subtract(2.0, u)
    v *= h
    v += 1.0
    v *= u
    return v


def groupnorm_silu_forward(x, gamma, beta, groups, eps):
    """``silu(groupnorm(x))`` fused on the (S, N C) view, MATH.md (13.9), MATH.md (13.11),
    MATH.md (23.7): with ``h = y / 2 = xc (gamma rstd / 2) + beta / 2`` (xc = x - mean)
    and ``u = 1 + tanh(h) = 2 sigmoid(y)``, ``silu(y) = h u``.  Every full-size pass runs
    over the contiguous (S, N C) matrix with an (N C,) row of per-(sample, channel) factors
    (a (C,) row would make numpy's inner loops C long).  The sums are those of
    :func:`groupnorm_forward` and scaling by 1/2 is exact, so h, u and the output are
    bit-identical to GroupNorm then SiLU in this layout (y = 2h, sigmoid(y) = u/2).
    The cache keeps xc and the slope v = u (1 + h (2 - u)) of :func:`_slope` (two arrays:
    the backward pass then needs one product for SiLU's part), or xc alone above
    ``_KEEP_HU_FLOATS`` numbers (the backward pass forms h, u and v again, bit for bit)."""
    xm = to_hwnc(x)
    N, C = x.shape[0], x.shape[1]
    G, k = groups, C // groups
    x2 = xm.reshape(-1, N * C)  # (S, N C)
    S = x2.shape[0]
    M = k * S
    mean = _colsum(x2).reshape(N, G, k).sum(axis=2) / M  # (N, G)
    xc = x2 - mean.repeat(k, axis=1).reshape(-1)
    var = _np.einsum("snc,snc->nc", *(xc.reshape(S, N, C),) * 2).reshape(N, G, k).sum(axis=2) / M
    rstd = 1.0 / _np.sqrt(var + eps)  # (N, G)
    h, u = _half_y(xc, rstd, gamma, beta, k)
    out = _np.multiply(h, u)
    v = _slope(h, u) if xc.size <= _KEEP_HU_FLOATS else None
    return to_nchw(out.reshape(xm.shape)), (xc, v, rstd, gamma, beta, G, xm.shape)


def groupnorm_silu_backward(dout, cache):
    """Gradients of :func:`groupnorm_silu_forward`: the SiLU derivative MATH.md (23.7)
    ``q = dout u (1 + h (2 - u)) = 2 dout sigmoid(y) (1 + y (1 - sigmoid(y)))`` (twice the
    gradient at y, bit-identical to twice SiLU's backward; the 1/2 goes into the
    per-(n, c) factors), then MATH.md (13.10)
    ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` from the spatial sums of q and q xc
    (the sums of :func:`groupnorm_backward`).  q is one array updated in place and becomes
    dx (``q (gamma rstd / 2) - t`` with t = xc (rstd^2 mean(g xhat)) + rstd mean(g), the
    same operations as :func:`groupnorm_backward`'s ``dx -= t``)."""
    xc, v, rstd, gamma, beta, G, shape = cache
    N, C = shape[-2], shape[-1]
    k = C // G
    S = xc.shape[0]
    if v is None:  # not kept (large arrays): the forward's operations again
        v = _slope(*_half_y(xc, rstd, gamma, beta, k))
    q = _np.multiply(v, to_hwnc(dout).reshape(S, N * C))
    sd = 0.5 * _colsum(q).reshape(N, C)  # sums of dL/dy over space
    rc = rstd.repeat(k, axis=1)  # (N, C)
    sdx = (0.5 * _np.einsum("snc,snc->nc", q.reshape(S, N, C), xc.reshape(S, N, C))) * rc
    dbeta, dgamma = _np.sum(sd, axis=0), _np.sum(sdx, axis=0)
    M = k * S
    mg = (gamma * sd).reshape(N, G, k).sum(axis=2) / M  # (N, G): mean(g), g = gamma dL/dy
    mgx = (gamma * sdx).reshape(N, G, k).sum(axis=2) / M  # (N, G): mean(g xhat)
    t = _np.multiply(xc, (rstd * rstd * mgx).repeat(k, axis=1).reshape(-1))
    t += (rstd * mg).repeat(k, axis=1).reshape(-1)
    q *= ((0.5 * gamma) * rc).reshape(-1)  # dx = q (gamma rstd / 2) - t, in q's memory
    q -= t
    return to_nchw(q.reshape(shape)), dgamma, dbeta


# ------------------------------------------------------------------ GroupNorm + SiLU, fewer passes
# The one-pass statistics (sum and sum of squares) are used while every group of the call has
# mean^2 <= _CANCEL_MAX var (float64 group sums of the float32 column sums): the variance's
# relative rounding then grows by at most 1 + _CANCEL_MAX over the two-pass form's, MATH.md
# (23.9).  Otherwise the call centres first (two passes, the exact form's statistics).
_CANCEL_MAX = 8.0


def _fast_stats(x2, N, G, k, eps):
    """``(z, m, rstd)`` of the (S, N C) matrix x2, MATH.md (23.9): column sums of x2 and of
    x2^2 (one product with a ones vector, one einsum read), combined per (n, group) in
    float64 ((N, G) arrays); ``z = x2, m = mean`` when no group's mean^2 exceeds
    ``_CANCEL_MAX`` times its variance, else ``z = x2 - mean`` (centred, the input's
    dtype) and ``m = 0``, with the variance from z (the two-pass form).  m is returned per
    (n, c) ((N, C), float64: each group's value repeated)."""
    S, NC = x2.shape
    M = k * S
    s = _colsums(x2)
    sg = (s.reshape(-1, k) @ _ones(k, x2.dtype)).reshape(2, N, G) / _np.float64(M)  # E x, E x^2
    mean = sg[0]
    var = sg[1] - mean * mean
    if (mean * mean <= _CANCEL_MAX * var).all():
        return x2, mean.repeat(k, axis=1), 1.0 / _np.sqrt(var + eps)
    z = x2 - mean.astype(x2.dtype).repeat(k, axis=1).reshape(-1)
    var = _np.einsum("sj,sj->j", z, z).reshape(N, G, k).sum(axis=2, dtype=_np.float64) / M
    return z, _np.zeros((N, G * k)), 1.0 / _np.sqrt(var + eps)


def _colsums(x2):
    """(2, N C): the column sums of x2 and of x2^2 (the input's dtype)."""
    s = _np.empty((2, x2.shape[1]), dtype=x2.dtype)
    _np.matmul(_ones(x2.shape[0], x2.dtype), x2, out=s[0])
    _np.einsum("sj,sj->j", x2, x2, out=s[1])
    return s


def _shifted_stats(x2, c, N, G, k, eps):
    """``(z, m, rstd, z1)`` of the shifted matrix x2 + c (c per (n, c), (N C,)) without
    forming it, MATH.md (23.12): from the column sums S1, S2 of x2 (float32 reads), per
    group in float64, ``sum (x + c) = sum S1 + S sum c`` and ``sum (x + c)^2 = sum S2 +
    2 sum c S1 + S sum c^2``; the one-pass branch while every group's bound of the summed
    magnitudes ``nu = (sqrt(sum S2) + sqrt(S sum c^2))^2 / M`` (Cauchy-Schwarz: at least
    ``(1/M) sum (|x| + |c|)^2``) is at most ``(1 + _CANCEL_MAX)`` times its variance (for
    c = 0 the guard of MATH.md (23.9)): then ``z = x2`` and ``m = mean - c`` per (n, c), so
    that ``x + c - mean = z - m``.  Otherwise the centred ``z = x2 - (mean - c)`` (one
    pass, the input's dtype), ``m`` the mean of z per group (float64, ~0) and the variance
    ``E z^2 - m^2``.  ``z1`` are the column sums of z (the input's dtype), which the
    backward pass needs for the shift's gradient, MATH.md (23.13)."""
    S, NC = x2.shape
    M = k * S
    s = _colsums(x2)
    t = _np.empty((5, NC))  # per (n, c), float64: S1, S2, c, c S1, c^2
    t[:2] = s
    t[2] = _np.reshape(c, NC)
    _np.multiply(t[2], t[0], out=t[3])
    _np.multiply(t[2], t[2], out=t[4])
    g = (t.reshape(-1, k) @ _ones(k, _np.float64)).reshape(5, N, G)  # group sums
    mean = (g[0] + S * g[2]) / M
    var = (g[1] + 2.0 * g[3] + S * g[4]) / M - mean * mean
    nu = (_np.sqrt(g[1]) + _np.sqrt(S * g[4])) ** 2 / M
    centre = mean.repeat(k, axis=1) - t[2].reshape(N, NC // N)  # (N, C): x + c - mean = x - centre
    if (nu <= (1.0 + _CANCEL_MAX) * var).all():
        return x2, centre, 1.0 / _np.sqrt(var + eps), s[0]
    z = x2 - centre.astype(x2.dtype).reshape(-1)
    sz = _colsums(z)
    e = (sz.reshape(-1, k) @ _ones(k, z.dtype)).reshape(2, N, G).astype(_np.float64) / M  # E z, E z^2
    return z, e[0].repeat(k, axis=1), 1.0 / _np.sqrt(e[1] - e[0] * e[0] + eps), sz[0]


def groupnorm_silu_forward_fast(x, gamma, beta, groups, eps, shift=None):
    """``silu(groupnorm(x))`` in five full-size passes, MATH.md (23.9), MATH.md (23.10):
    statistics by :func:`_fast_stats` (two reads), ``h = y / 2 = z a + b`` (one product,
    one in-place add; per-(n, c) rows ``a = gamma rstd / 2``, ``b = beta / 2 - m a``),
    ``u = 1 + tanh h`` (tanh, in-place add), ``silu(y) = h u`` (one product).  The cache
    holds z (x itself on the one-pass branch, no copy), u, the output o and the per-(n, c)
    rows rstd, m rstd, a and b (the input's dtype): the backward pass forms SiLU's slope
    from u and o, MATH.md (23.10); above ``_KEEP_HU_FLOATS`` numbers per array u and o are
    not kept and the backward pass forms them again (memory at large batches).  Not bit-identical to the two layers; the float32 bound is
    MATH.md (23.11).

    ``shift`` (N, C) or None: ``silu(groupnorm(x + shift[:, :, None, None]))`` without the
    full-size add, MATH.md (23.12): the statistics of x + shift from those of x
    (:func:`_shifted_stats`) and the shift folded into the per-(n, c) row b (m = mean -
    shift on the one-pass branch); :func:`groupnorm_silu_backward_fast` then also returns
    the shift's gradient, MATH.md (23.13)."""
    xm = to_hwnc(x)
    N, C = x.shape[0], x.shape[1]
    G, k = groups, C // groups
    x2 = xm.reshape(-1, N * C)  # (S, N C)
    dt = x2.dtype
    if shift is None:
        (z, m, rstd), z1 = _fast_stats(x2, N, G, k, eps), None
    else:
        z, m, rstd, z1 = _shifted_stats(x2, shift, N, G, k, eps)
    rows = _np.empty((4, N, C), dtype=dt)  # rstd, m rstd, a, b per (n, c)
    rc = rstd.repeat(k, axis=1)
    rows[0], rows[1] = rc, m * rc
    _np.multiply(rows[:2], 0.5 * gamma, out=rows[2:])  # a, m a
    _np.subtract(0.5 * beta, rows[3], out=rows[3])  # b = beta / 2 - m a
    u, o = _u_and_out(z, rows)
    keep = x2.size <= _KEEP_HU_FLOATS  # else the backward pass forms u and o again
    return to_nchw(o.reshape(xm.shape)), (z, (m, rstd, rows, z1), u if keep else None, o if keep else None,
                                          gamma, G, k, xm.shape)


def _u_and_out(z, rows):
    """``h = z a + b`` (in a scratch buffer), ``u = 1 + tanh h`` and ``o = h u`` on the
    (S, N C) matrix z with the per-(n, c) rows a = rows[2], b = rows[3], MATH.md (23.10)."""
    flat = rows.reshape(4, -1)
    h = _np.multiply(z, flat[2], out=_scratch("gn_h", z.shape, z.dtype))
    h += flat[3]
    u = _np.tanh(h)
    u += 1.0
    return u, _np.multiply(h, u)


def groupnorm_silu_backward_fast(dout, cache):
    """Gradients of :func:`groupnorm_silu_forward_fast`, MATH.md (23.10): the slope
    ``q = dout (u + o (2 - u))`` (= 2 dL/dy, four passes in one array), the spatial sums
    Q of q and P of q z (a ones-vector product and an einsum read), ``r (P - m Q)`` (the
    sums of q xhat), then ``dx = A q + B z + C`` with A = gamma rstd / 2 per (n, c) and
    B = -rstd^2 mean(g xhat), C = rstd^2 mean(g xhat) m - rstd mean(g) per (n, group)
    (MATH.md (13.10) with x - mean = z - m): an in-place product, a product, an in-place
    add and an add.  The per-(n, c) arithmetic runs in the input's dtype (its rounding is
    that of the float32 column sums, MATH.md (23.11)).  Returns ``(dx, dgamma, dbeta)``,
    and for a shifted forward ``(dx, dshift, dgamma, dbeta)`` with the shift's gradient
    ``dshift = sum_s dx`` in closed form from the same sums, MATH.md (23.13) (no pass)."""
    z, (m, rstd, rows, z1), u, o, gamma, G, k, shape = cache
    N, C = shape[-2], shape[-1]
    S = z.shape[0]
    dt = z.dtype
    if u is None:  # not kept (large arrays): the forward's operations again, the same bits
        u, o = _u_and_out(z, rows)
    q = _np.subtract(2.0, u)
    q *= o
    q += u
    q *= to_hwnc(dout).reshape(S, N * C)
    s = _np.empty((2, N * C), dtype=dt)
    _np.matmul(_ones(S, dt), q, out=s[0])  # Q: sums of q = 2 dL/dy
    _np.einsum("sj,sj->j", q, z, out=s[1])  # P: sums of q z
    s = s.reshape(2, N, C)
    Q = None if z1 is None else s[0].astype(_np.float64)
    s[1] *= rows[0]
    s[1] -= rows[1] * s[0]  # r (P - m Q): sums of q xhat
    dbeta, dgamma = 0.5 * s.sum(axis=1)  # (C,) each
    s *= gamma  # gamma Q, gamma r (P - m Q)
    mg, mgx = (s.reshape(-1, k) @ _ones(k, dt)).reshape(2, N, G).astype(_np.float64) / (2 * k * S)
    B = -(rstd * rstd * mgx)
    Bc, rmg = B.repeat(k, axis=1), (rstd * mg).repeat(k, axis=1)
    bc = _np.stack([Bc, -Bc * m - rmg]).astype(dt).reshape(2, N * C)  # B, C per (n, c)
    q *= rows[2].reshape(-1)  # A = a = gamma rstd / 2
    t = _np.multiply(z, bc[0], out=_scratch("gn_t", z.shape, dt))
    t += bc[1]
    q += t
    dx = to_nchw(q.reshape(shape))
    if z1 is None:
        return dx, dgamma, dbeta
    # MATH.md (23.13): sum_s dx = r (gamma Q / 2 - S mean(g)) - r^2 mean(g xhat) (Z1 - S m), Z1 = sum_s z
    dshift = _np.multiply(0.5 * gamma, rstd.repeat(k, axis=1))
    dshift *= Q
    dshift -= S * rmg
    dshift += Bc * (_np.reshape(z1, (N, C)) - S * m)
    return dx, dshift.astype(dt), dgamma, dbeta
