"""The tuned layers in (H, W, N, C) memory order (channels fastest): the "hwnc" layout of
:func:`refdiff.nn.fast.set_layout`.

Arrays stay logically NCHW (the blocks and the U-Net call the same functions of
:mod:`refdiff.nn.fast`, which hand over to this module when the layout is "hwnc"); in
memory they are (H, W, N, C) arrays seen through a transposed view, so an image is a
stack of (N, C) slabs.  Every 3x3 stride-1 pad-1 convolution with C >= 2 runs Winograd
F(4x4, 3x3) (MATH.md (23.2), in the batched form MATH.md (23.6)):

* the tile transforms ``B^T D B`` and ``A^T M A`` (and their adjoints) are small matrix
  products, ``(6 x 6) @ (6, L)`` with L = W N C or N C, taken on ``as_strided`` views of
  the padded image (a tile row r of every tile is the row ``r + m t``), so each transform
  is two BLAS calls per tile row instead of dozens of scaled slice sums;
* the 36 channel contractions are one batched product ``(tiles N, C) @ (C, F)``;
* temporaries live in a per-thread scratch arena (:func:`_scratch`): allocating fresh
  multi-MiB arrays every call costs thousands of page faults per training step on Linux
  (glibc returns freed large blocks to the system), and per-thread buffers keep
  :class:`refdiff.training.BatchThreads` correct.

* the bias is folded into the products (MATH.md chapter 23.5: column 1 of A^T is all ones);
* the zero padding is never formed: each tile reads (and its adjoint writes) only its
  image rows and columns, with the matching columns (rows) of the transform matrices
  (:func:`_tile_groups`, :func:`_overlap_groups`; a 4 x 4 image is one tile);
* glibc is asked once to keep freed blocks (:func:`keep_freed_memory`).

Other kernels: 3x3 stride-1 convolutions with one output channel contract the channels
first (:func:`taps_forward`, MATH.md (23.8)); 1x1 convolutions are one product; the rest
(stride 2, C = 1, other sizes) use the column-matrix method with the columns as
(Ho Wo N, kh kw C).  GroupNorm (refdiff/nn/fast_hwnc_norm.py) reduces
over the leading (spatial) axis of the (S, N, C) view; the other layers (concatenation,
resampling, channel shift) build their outputs in this order.
NumPy only for the strided products (``numpy.lib.stride_tricks.as_strided`` and
``matmul(out=)``); tested equal to the reference layers in tests/test_nn_fast_hwnc.py.
"""

from __future__ import annotations

import functools
import math as _math
import threading

import numpy as _np

__all__: list = []  # internal: reached through refdiff.nn.fast (set_layout("hwnc")), arguments checked there

_LOCAL = threading.local()


def _scratch(key: str, shape, dtype):
    """A per-thread buffer for temporaries (content undefined), reused across calls: one
    flat buffer per role ``key``, grown to the largest request and viewed in ``shape``.
    The Winograd passes share four roles between temporaries whose lifetimes do not
    overlap (forward: A = padded input, then M; B = row transform, then A^T M;
    backward: B = A dY, then the column overlap-add; A = dM, then the padded dX;
    C = dU; D = the overlap rows), ~110 MiB at batch 1024 for the default U-Net.
    The view of each (key, shape, dtype) is remembered (per thread) until the role's
    buffer grows: a training step asks for the same ~190 views every step, and one dict
    lookup replaces three array calls per request (the fixed per-step cost)."""
    try:
        views = _LOCAL.views
    except AttributeError:
        _LOCAL.bufs, views = {}, {}
        _LOCAL.views = views
    k = (key, shape, dtype)
    v = views.get(k)
    if v is not None:
        return v
    bufs = _LOCAL.bufs
    dt = dtype if isinstance(dtype, _np.dtype) else _np.dtype(dtype)
    n = _math.prod(shape)
    b = bufs.get(key)
    if b is None or b.size < n * dt.itemsize:
        b = bufs[key] = _np.empty(n * dt.itemsize, dtype=_np.uint8)
        for old in [o for o in views if o[0] == key]:  # views of the replaced buffer
            del views[old]
    if len(views) >= _MAX_VIEWS:  # many shapes (tests, changing batches): start afresh
        views.clear()
    v = views[k] = b[:n * dt.itemsize].view(dt).reshape(shape)
    return v


_MAX_VIEWS = 4096  # remembered scratch views per thread


_MALLOC = {"done": False}


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks of up to 64 MiB for reuse (``mallopt``
    M_MMAP_THRESHOLD = 64 MiB, M_TRIM_THRESHOLD = 1 GiB; the same as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``).  By default glibc
    serves each multi-MiB array by a fresh ``mmap`` or returns the top of its heap to the
    system, so a training step that allocates its activations anew page-faults on every
    one of them (measured on the default U-Net at batch 128: ~7,000-9,000 faults and
    ~15 ms of a ~80 ms step); with this setting ~4 per step.  Process-wide and permanent:
    freed memory stays with the process (the allocated peak is unchanged, the resident
    peak grows by fragmentation: ~50 MiB at batch 1024 for the default U-Net).  Done once,
    by ``refdiff.nn.fast.set_layout("hwnc")`` or the first hwnc convolution, unless the
    environment variable ``REFDIFF_KEEP_FREED_MEMORY`` is ``0`` (then nothing is changed:
    the same results, with the page faults).  Returns whether it was applied (False off
    glibc or when switched off)."""
    import os

    if _MALLOC["done"]:
        return True
    if os.environ.get("REFDIFF_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(-3, 64 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        ok = False
    _MALLOC["done"] = ok
    return ok


def _strided(a, shape, strides_el):
    """``as_strided`` with strides in elements."""
    it = a.itemsize
    return _np.lib.stride_tricks.as_strided(a, shape, tuple(s * it for s in strides_el))


def _row_tiles(x2, lo: int, nt: int, k: int):
    """Rows ``lo + 4 t + (0 .. k-1)`` of the 2-D C-contiguous x2 for tiles t < nt, as an
    (nt, k, L) view (overlapping windows: ``as_strided``; a single tile, the common case of
    small images, is a plain slice, ~10x cheaper to build; the same strides, the same bits)."""
    if nt == 1:
        return x2[lo:lo + k][None]
    L = x2.shape[1]
    return _strided(x2[lo:], (nt, k, L), (4 * L, L, 1))


def _col_tiles(R, lo: int, ns: int, k: int, NC: int):
    """Columns ``lo + 4 s + (0 .. k-1)`` (blocks of NC numbers) of the C-contiguous
    (tH, 6, W NC) array R for tiles s < ns, as a (tH, 6, ns, k, NC) view (a plain slice for
    a single tile, like :func:`_row_tiles`)."""
    tH, six, WNC = R.shape
    if ns == 1:
        return R.reshape(tH, six, WNC // NC, NC)[:, :, None, lo:lo + k]
    return _strided(R[:, :, lo * NC:], (tH, six, ns, k, NC), (six * WNC, WNC, 4 * NC, NC, 1))


_ONES: dict = {}


def _ones(n: int, dtype):
    """A read-only vector of n ones of ``dtype``, kept per (n, dtype): the operand of the
    ones-vector products (column sums), built once instead of on every call."""
    key = (n, dtype)
    v = _ONES.get(key)
    if v is None:
        v = _np.ones(n, dtype=dtype)
        v.flags.writeable = False
        if len(_ONES) < 1024:
            _ONES[key] = v
    return v


def _colsum(a):
    """Column sums of a C-contiguous 2-D array as one product with a ones vector (BLAS;
    ``sum(axis=0)`` walks the rows in a slower strided reduction)."""
    return _ones(a.shape[0], a.dtype) @ a


_PERM_HWNC = {k: tuple(range(2, k)) + (0, 1) for k in range(2, 8)}  # (N, C, *S) -> (*S, N, C)
_PERM_NCHW = {k: (k - 2, k - 1) + tuple(range(k - 2)) for k in range(2, 8)}  # the inverse


def to_hwnc(x):
    """x (N, C, *S) as an (*S, N, C) array in that memory order (free when x is a view of
    such an array, one copy otherwise)."""
    return _np.ascontiguousarray(x.transpose(_PERM_HWNC[x.ndim]))


def to_nchw(m):
    """(*S, N, C) -> the (N, C, *S) view."""
    return m.transpose(_PERM_NCHW[m.ndim])


# The bias enters as b added to M at transform position (xi, nu) = (1, 1): column 1 of
# A^T is all ones, so A^T (b e_1 e_1^T) A = b on every output of the tile.
_BIAS_SLOT = 6 * 1 + 1


@functools.lru_cache(maxsize=8)
def _mats(dtype_str: str):
    """(BT, G, AT) of F(4, 3) as arrays of ``dtype`` (MATH.md (23.1)) and B, A."""
    from .winograd import winograd_matrices

    BT, G, AT = (_np.array([[float(v) for v in r] for r in M], dtype=dtype_str) for M in winograd_matrices(4))
    return BT, G, AT, _np.ascontiguousarray(BT.T), _np.ascontiguousarray(AT.T)


def _kernel_transform(w, G):
    """Wt[(xi, nu), c, f] = (G w_fc G^T)_{xi nu} as (36, C, F): two products."""
    F, C = w.shape[:2]
    w4 = _np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # (3_p, 3_q, C, F)
    t = (G @ w4.reshape(3, 3 * C * F)).reshape(6, 3, C * F)  # (6_xi, 3_q, C F)
    return _np.matmul(G, t).reshape(36, C, F)  # (6_xi, 6_nu, C F)


# The transformed input U (2.25x the input for 4x4 tiles of an 8x8 image) is kept for the
# backward pass up to this many numbers; above (large batches), the backward pass
# recomputes it from the input, which the cache then holds instead (peak memory against
# one more input transform per layer, ~10% of the layer's time).
_KEEP_U_FLOATS = 1 << 22


@functools.lru_cache(maxsize=256)
def _tile_groups(n: int, tiles: int):
    """How the 6-row tiles of an axis of size n (zero-padded by one, then to 4 tiles + 2)
    read the image: tile t covers padded rows 4t .. 4t+5 = image rows 4t-1 .. 4t+4, of which
    rows lo .. hi lie in the image (the others are padding zeros).  Returns groups
    (t0, t1, a, b, lo): tiles t0 .. t1-1 use rows a .. b-1 of their tile, the image rows
    lo + 4 (t - t0) + (0 .. b-a-1); consecutive tiles with the same (a, b) (the interior
    ones, a = 0, b = 6) form one group."""
    groups = []
    for t in range(tiles):
        lo, hi = max(0, 4 * t - 1), min(n - 1, 4 * t + 4)
        a = lo - (4 * t - 1)
        b = a + hi - lo + 1
        if groups and tuple(groups[-1][2:4]) == (a, b):
            groups[-1][1] = t + 1
        else:
            groups.append([t, t + 1, a, b, lo])
    return tuple(tuple(g) for g in groups)


@functools.lru_cache(maxsize=256)
def _overlap_groups(n: int, tiles: int):
    """The overlap-add of the adjoint of :func:`_tile_groups` on an axis of size n: tile t's
    rows sigma = 0..5 land on image rows 4t + sigma - 1.  Returns (own, spill, z0): ``own``
    groups (t0, t1, a, b, j) of rows a .. b-1 of sigma < 4 (each image row below z0 is the
    own row of exactly one tile: written), ``spill`` groups of rows sigma = 4, 5 (added onto
    the next tile's rows, or onto rows z0 .. n-1, which no tile owns and which are zeroed
    first); tiles t0 .. t1-1 of a group write rows j + 4 (t - t0) + (0 .. b-a-1); rows on the
    padding (row -1, rows >= n) are skipped."""
    own, spill = [], []
    for t in range(tiles):
        for lst, a, b in ((own, max(0, 1 - 4 * t), min(4, n + 1 - 4 * t)), (spill, 4, min(6, n + 1 - 4 * t))):
            if b <= a:
                continue
            if lst and lst[-1][1] == t and tuple(lst[-1][2:4]) == (a, b):
                lst[-1][1] = t + 1
            else:
                lst.append([t, t + 1, a, b, 4 * t + a - 1])
    return tuple(tuple(g) for g in own), tuple(tuple(g) for g in spill), min(n, 4 * tiles - 1)


def _input_transform(xm, out):
    """U[(xi, nu), (t, s, n), c] = (B^T D B)_{xi nu} of every 6 x 6 tile D of the zero-padded
    xm (H, W, N, C), written into ``out`` (6, 6, tH, tW, N, C).  MATH.md (23.6).  The
    padding is never formed: a tile's rows (columns) that fall on the zero border or beyond
    the image contribute exact zeros, so each tile reads only its image rows with the
    matching columns of B^T (:func:`_tile_groups`; tiles with the same rows, the interior
    ones, in one strided product): products on xm itself, no padded copy."""
    H, W, N, C = xm.shape
    dt = xm.dtype
    BT = _mats(dt.str)[0]
    tH, tW = -(-H // 4), -(-W // 4)
    NC, WNC = N * C, W * N * C
    x2 = xm.reshape(H, WNC)
    if tH == 1 and tW == 1:  # one tile (H, W <= 4): the same products without the views (faster)
        R = _np.matmul(BT[:, 1:H + 1], x2, out=_scratch("B", (6, WNC), dt))
        _np.matmul(BT[:, 1:W + 1], R.reshape(6, W, NC), out=out.reshape(6, 6, NC))
        return out
    # rows: R[t, xi] = sum_r BT[xi, r] D_t[r]  (one (6, b-a) @ (b-a, W N C) per tile row)
    R = _scratch("B", (tH, 6, WNC), dt)
    for t0, t1, a, b, lo in _tile_groups(H, tH):
        _np.matmul(BT[:, a:b], _row_tiles(x2, lo, t1 - t0, b - a), out=R[t0:t1])
    # columns, written as U[(xi, nu), (t, s, n), c]
    Uv = out.reshape(6, 6, tH, tW, NC)
    for s0, s1, a, b, lo in _tile_groups(W, tW):
        _np.matmul(BT[:, a:b], _col_tiles(R, lo, s1 - s0, b - a, NC), out=Uv[:, :, :, s0:s1].transpose(2, 0, 3, 1, 4))
    return out


def winograd_forward(xm, w, b):
    """F(4x4, 3x3) of xm (H, W, N, C) with w (F, C, 3, 3), b (F,): out (H, W, N, F) and the
    cache.  MATH.md (23.2), MATH.md (23.6)."""
    H, W, N, C = xm.shape
    F, dt = w.shape[0], xm.dtype
    _, G, AT, _, _ = _mats(dt.str)
    tH, tW = -(-H // 4), -(-W // 4)
    NF, T = N * F, tH * tW
    keep = 36 * T * N * C <= _KEEP_U_FLOATS
    shape_u = (6, 6, tH, tW, N, C)
    U = _input_transform(xm, _np.empty(shape_u, dtype=dt) if keep else _scratch("C", shape_u, dt))
    Wt = _kernel_transform(w, G)  # (36, C, F)
    M = _np.matmul(U.reshape(36, T * N, C), Wt, out=_scratch("A", (36, T * N, F), dt))
    M[_BIAS_SLOT] += b  # A^T e_1 = (1, 1, 1, 1): b at position (1, 1) adds b to all 16 outputs
    Y1 = _np.matmul(AT, M.reshape(6, 6 * T * NF), out=_scratch("B", (4, 6 * T * NF), dt))
    Y = _np.empty((4 * tH, 4 * tW, N, F), dtype=dt)
    _np.matmul(AT, Y1.reshape(4, 6, tH, tW, NF).transpose(0, 2, 3, 1, 4),
               out=Y.reshape(tH, 4, tW, 4, NF).transpose(1, 0, 2, 3, 4))
    if (4 * tH, 4 * tW) != (H, W):
        Y = _np.ascontiguousarray(Y[:H, :W])
    return Y, (U if keep else xm, Wt, tuple(w.shape), (C, H, W, N), 4)


def winograd_backward(dY, cache):
    """Gradients of :func:`winograd_forward` for dY (H, W, N, F): (dx (H, W, N, C), dw, db)
    through the adjoint transforms, MATH.md (23.3), MATH.md (23.4), MATH.md (23.6)."""
    U, Wt, w_shape, (C, H, W, N), _ = cache
    F, dt = w_shape[0], dY.dtype
    _, G, _, B, A = _mats(dt.str)
    tH, tW = -(-H // 4), -(-W // 4)
    Hp, Wp, NC, NF, T = 4 * tH + 2, 4 * tW + 2, N * C, N * F, tH * tW
    if U.ndim == 4:  # the input was kept (large U): transform it again (scratch C, free until dU)
        U = _input_transform(U, _scratch("C", (6, 6, tH, tW, N, C), dt))
    if (4 * tH, 4 * tW) != (H, W):
        d = _np.zeros((4 * tH, 4 * tW, N, F), dtype=dt)
        d[:H, :W] = dY
        dY = d
    # dM = A dY A^T per tile: columns, then rows
    D1 = _scratch("B", (4, 6, tH, tW, NF), dt)
    _np.matmul(A, dY.reshape(tH, 4, tW, 4, NF).transpose(1, 0, 2, 3, 4), out=D1.transpose(0, 2, 3, 1, 4))
    dM = _np.matmul(A, D1.reshape(4, 6 * T * NF), out=_scratch("A", (6, 6 * T * NF), dt))
    dM = dM.reshape(36, T * N, F)
    db = _colsum(dM[_BIAS_SLOT])  # the sum of dY over each tile (adjoint of the bias fold)
    Ur = U.reshape(36, T * N, C)
    dWt = _np.matmul(Ur.transpose(0, 2, 1), dM)  # (36, C, F)
    dU = _np.matmul(dM, Wt.transpose(0, 2, 1), out=_scratch("C", (36, T * N, C), dt))
    # dw = G^T dWt G
    t = (G.T @ dWt.reshape(6, 6 * C * F)).reshape(3, 6, C * F)
    dw = _np.ascontiguousarray(_np.matmul(G.T, t).reshape(3, 3, C, F).transpose(3, 2, 0, 1))
    if tH == 1 and tW == 1:  # one tile: dx = rows 1..H, columns 1..W of B dU B^T, no overlap
        T1 = _np.matmul(B[1:W + 1], dU.reshape(6, 6, NC), out=_scratch("B", (6, W, NC), dt))
        dx = _np.empty((H, W, N, C), dtype=dt)
        _np.matmul(B[1:H + 1], T1.reshape(6, W * NC), out=dx.reshape(H, W * NC))
        return dx, dw, db
    # dX: B dU B^T per tile (columns, then rows), each followed by the overlap-add of tiles
    # on the image itself (the padding's gradient is never formed): rows 0-3 of each tile's
    # result written into place, rows 4-5 added onto the next tile (:func:`_overlap_groups`)
    dUv = dU.reshape(6, 6, tH, tW, NC)
    dRW = _scratch("B", (tH, 6, W, NC), dt)
    own, spill, z0 = _overlap_groups(W, tW)
    dRW3 = dRW.reshape(tH, 6, W * NC)
    at = lambda j, ns, k: _col_tiles(dRW3, j, ns, k, NC)  # noqa: E731
    for s0, s1, a, b, j in own:
        _np.matmul(B[a:b], dUv[:, :, :, s0:s1].transpose(2, 0, 3, 1, 4), out=at(j, s1 - s0, b - a))
    dRW[:, :, z0:] = 0
    for s0, s1, a, b, j in spill:
        at(j, s1 - s0, b - a)[...] += _np.matmul(B[a:b], dUv[:, :, :, s0:s1].transpose(2, 0, 3, 1, 4),
                                                 out=_scratch("D", (tH, 6, s1 - s0, b - a, NC), dt))
    dx = _np.empty((H, W, N, C), dtype=dt)
    dx2, dRv, WNC = dx.reshape(H, W * NC), dRW.reshape(tH, 6, W * NC), W * NC
    own, spill, z0 = _overlap_groups(H, tH)
    for t0, t1, a, b, j in own:
        _np.matmul(B[a:b], dRv[t0:t1], out=_row_tiles(dx2, j, t1 - t0, b - a))
    dx2[z0:] = 0
    for t0, t1, a, b, j in spill:
        _row_tiles(dx2, j, t1 - t0, b - a)[...] += \
            _np.matmul(B[a:b], dRv[t0:t1], out=_scratch("D", (t1 - t0, b - a, WNC), dt))
    return dx, dw, db


# ------------------------------------------------------------------ 3x3, one output channel
# A 3x3 stride-1 "same" convolution with at most this many output channels contracts the
# channels first (taps_forward, MATH.md (23.8)) instead of running Winograd: Winograd's
# input transform costs as much for F = 1 as for F = C, while the channel contraction's
# product and tap sums scale with F.  Measured (fwd + bwd, batch 128, C = 32, one thread,
# CPU time, against the padding-free Winograd): F = 1 at 8x8 500 against 1270 us, at 4x4
# 189 against 278 us; F = 2 and 3 slower or equal (the tap sums run over inner loops F
# long; benchmarks/results/cpu-2026-11-30-r6-step-memory/taps_vs_winograd_by_F.txt).  The
# default U-Net's output convolution (C -> in_channels = 1) takes this path.
_TAPS_MAX_F = 1


def _padded_copy(xm):
    """xm (H, W, N, C) with a one-pixel zero border, (H + 2, W + 2, N, C), in the scratch
    buffer "A" (border written as zeros, interior copied)."""
    H, W, N, C = xm.shape
    xpad = _scratch("A", (H + 2, W + 2, N, C), xm.dtype)
    xpad[0] = 0
    xpad[H + 1] = 0
    xpad[1:H + 1, 0] = 0
    xpad[1:H + 1, W + 1] = 0
    xpad[1:H + 1, 1:W + 1] = xm
    return xpad


def taps_forward(xm, w, b):
    """3x3 stride-1 pad-1 convolution of xm (H, W, N, C) by contracting the channels first,
    MATH.md (23.8): Z = pad(xm) as a (Hp Wp N, C) matrix times w as (C, 9 F), then
    ``y[i, j] = b + sum_{p, q} Z[i + p, j + q, (p, q)]`` (nine shifted slices added; a
    direct-method sum, float32 rounding as the direct method).  Returns y (H, W, N, F) and
    the cache (xm, w as (C, 9 F), ...)."""
    H, W, N, C = xm.shape
    F, dt = w.shape[0], xm.dtype
    Hp, Wp = H + 2, W + 2
    xpad = _padded_copy(xm)
    Wk = _np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(C, 9 * F)  # [c, (p, q, f)]
    Z = _np.matmul(xpad.reshape(Hp * Wp * N, C), Wk, out=_scratch("B", (Hp * Wp * N, 9 * F), dt))
    Z = Z.reshape(Hp, Wp, N, 9, F)
    y = _np.add(Z[0:H, 0:W, :, 0], Z[0:H, 1:W + 1, :, 1])
    for k in range(2, 9):
        p, q = divmod(k, 3)
        y += Z[p:p + H, q:q + W, :, k]
    y += b
    return y, (xm, Wk, tuple(w.shape), (C, H, W, N), None)


def taps_backward(dY, cache):
    """Gradients of :func:`taps_forward`, MATH.md (23.8): dZ[i + p, j + q, (p, q)] = dY[i, j]
    (each entry of Z enters one output), ``dW = pad(xm)^T dZ``, ``d pad(xm) = dZ W^T``
    cropped to dx, ``db = sum dY``."""
    xm, Wk, w_shape, (C, H, W, N), _ = cache
    F, dt = w_shape[0], dY.dtype
    Hp, Wp = H + 2, W + 2
    dZ = _np.zeros((Hp, Wp, N, 9, F), dtype=dt)
    for k in range(9):
        p, q = divmod(k, 3)
        dZ[p:p + H, q:q + W, :, k] = dY
    dZ = dZ.reshape(Hp * Wp * N, 9 * F)
    xpad = _padded_copy(xm)
    dWk = xpad.reshape(Hp * Wp * N, C).T @ dZ  # (C, 9 F)
    dw = _np.ascontiguousarray(dWk.reshape(C, 3, 3, F).transpose(3, 0, 1, 2))
    dxp = _np.matmul(dZ, Wk.T, out=_scratch("B", (Hp * Wp * N, C), dt)).reshape(Hp, Wp, N, C)
    dx = _np.empty((H, W, N, C), dtype=dt)
    dx[...] = dxp[1:H + 1, 1:W + 1]
    return dx, dw, _colsum(dY.reshape(H * W * N, F))


# ------------------------------------------------------------------ convolution
def conv_forward(x, w, b, stride, pad):
    """conv2d in the hwnc layout: for 3x3/1/1 with C >= 2 Winograd F(4,3), or with at most
    ``_TAPS_MAX_F`` output channels the channel contraction of :func:`taps_forward`; a
    product for 1x1, else the column-matrix method."""
    F, C, kh, kw = w.shape
    if not _MALLOC["done"]:
        keep_freed_memory()
    if kh == 3 and kw == 3 and stride == 1 and pad == 1 and F <= _TAPS_MAX_F and C >= 2:
        out, cache = taps_forward(to_hwnc(x), w, b)
        return to_nchw(out), ("hwnc-taps", cache)
    if kh == 3 and kw == 3 and stride == 1 and pad == 1 and C >= 2:
        out, cache = winograd_forward(to_hwnc(x), w, b)
        return to_nchw(out), ("hwnc-winograd", cache)
    if kh == 1 and kw == 1 and stride == 1 and pad == 0:
        xm = to_hwnc(x)
        H, W, N, _ = xm.shape
        out = _np.matmul(xm.reshape(H * W * N, C), w.reshape(F, C).T)
        out += b
        return to_nchw(out.reshape(H, W, N, F)), ("hwnc-1x1", (xm, w, tuple(w.shape), (C, H, W, N), None))
    return _direct_forward(to_hwnc(x), w, b, stride, pad)


def _direct_forward(xm, w, b, stride, pad):
    """The column-matrix method, MATH.md (13.4), in this order: cols (Ho, Wo, N, kh kw C)
    gathered tap by tap (runs of C numbers), one product with w as (kh kw C, F)."""
    from .fast_chwn import _taps

    H, W, N, C = xm.shape
    F, _, kh, kw = w.shape
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    cols = _np.zeros((Ho, Wo, N, kh * kw, C), dtype=xm.dtype)
    for k, ro, co, ri, ci in _taps(kh, kw, H, W, Ho, Wo, stride, pad, 0, Ho):
        cols[ro, co, :, k, :] = xm[ri, ci]
    cols = cols.reshape(Ho * Wo * N, kh * kw * C)
    w2 = _np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * C, F)
    out = cols @ w2
    out += b
    return to_nchw(out.reshape(Ho, Wo, N, F)), ("hwnc-direct", (cols, w, tuple(w.shape), (C, Ho, Wo, N), (stride, pad, H, W)))


def _direct_backward(d2, c):
    """Gradients of :func:`_direct_forward`, MATH.md (13.5), MATH.md (13.6): dw = cols^T d,
    the column gradient d w2^T scattered back tap by tap (col2im)."""
    from .fast_chwn import _taps

    cols, w, _, (C, Ho, Wo, N), (stride, pad, H, W) = c  # (C, Ho, Wo, N): for fast's output-shape check
    F, _, kh, kw = w.shape
    d2 = d2.reshape(Ho * Wo * N, F)
    dw = (cols.T @ d2).reshape(kh, kw, C, F).transpose(3, 2, 0, 1)
    w2 = _np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * C, F)
    dcols = (d2 @ w2.T).reshape(Ho, Wo, N, kh * kw, C)
    dx = _np.zeros((H, W, N, C), dtype=d2.dtype)
    for k, ro, co, ri, ci in _taps(kh, kw, H, W, Ho, Wo, stride, pad, 0, Ho):
        dx[ri, ci] += dcols[ro, co, :, k, :]
    return to_nchw(dx), _np.ascontiguousarray(dw), _colsum(d2)


def conv_backward(dout, cache):
    """Gradients of :func:`conv_forward` (dx as an NCHW view of an hwnc array, dw, db)."""
    kind, c = cache
    if kind == "hwnc-winograd":
        dx, dw, db = winograd_backward(to_hwnc(dout), c)
        return to_nchw(dx), dw, db
    if kind == "hwnc-taps":
        dx, dw, db = taps_backward(to_hwnc(dout), c)
        return to_nchw(dx), dw, db
    if kind == "hwnc-1x1":
        xm, w = c[0], c[1]
        H, W, N, C = xm.shape
        F = w.shape[0]
        d2 = to_hwnc(dout).reshape(H * W * N, F)
        dw = (xm.reshape(H * W * N, C).T @ d2).T.reshape(w.shape)
        dx = (d2 @ w.reshape(F, C)).reshape(H, W, N, C)
        return to_nchw(dx), _np.ascontiguousarray(dw), _colsum(d2)
    return _direct_backward(to_hwnc(dout), c)


# ------------------------------------------------------------------ the rest
def add_channel_shift(h, eo):
    return to_nchw(to_hwnc(h) + eo)


def concat_forward(a, b):
    return to_nchw(_np.concatenate([to_hwnc(a), to_hwnc(b)], axis=-1)), a.shape[1]


def upsample2x_forward(x):
    m = to_hwnc(x)
    H, W, N, C = m.shape
    out = _np.broadcast_to(m[:, None, :, None], (H, 2, W, 2, N, C)).reshape(2 * H, 2 * W, N, C)
    return to_nchw(out), None


def upsample2x_backward(dout):
    d = to_hwnc(dout)
    H2, W2, N, C = d.shape
    return to_nchw(d.reshape(H2 // 2, 2, W2 // 2, 2, N, C).sum(axis=(1, 3)))


def avgpool2x_forward(x):
    m = to_hwnc(x)
    H, W, N, C = m.shape
    return to_nchw(m.reshape(H // 2, 2, W // 2, 2, N, C).mean(axis=(1, 3))), None


def avgpool2x_backward(dout):
    d = to_hwnc(dout)
    H, W, N, C = d.shape
    dx = _np.broadcast_to(0.25 * d[:, None, :, None], (H, 2, W, 2, N, C)).reshape(2 * H, 2 * W, N, C)
    return to_nchw(dx)


def tokens(h):
    """(N, C, H, W) -> the (H W N, C) token matrix (pixel-major), free in this layout."""
    N, C = h.shape[0], h.shape[1]
    return to_hwnc(h).reshape(-1, C)


def from_tokens(o, shape):
    """(H W N, C) tokens -> the (N, C, H, W) view."""
    N, C, H, W = shape
    return to_nchw(o.reshape(H, W, N, C))
