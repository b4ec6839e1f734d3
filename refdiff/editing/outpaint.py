"""Outpainting, MATH.md chapter 17: inpainting on a padded canvas, and growing a long
canvas window by window (sliding windows), with the exact law of the chained result for a
stationary Gaussian field (its KL to the exact field is the seam error, MATH.md (17.11)).
Images are (N, C, H, W); windows slide along the last axis (columns)."""

from __future__ import annotations

import numpy as np

from .._validate import check_array, check_choice, check_finite_scalar, check_int
from ..backend import array_namespace, check_rng

__all__ = ["pad_canvas", "outpaint", "outpaint_strip", "gaussian_window_fill", "stationary_field_cov",
           "chained_field_moments"]


def pad_canvas(x, pad):
    """(canvas, mask): ``x`` (N, C, h, w) zero-padded by ``pad`` = (top, bottom, left, right)
    on the last two axes, and the mask (1, C, h + top + bottom, w + left + right) that is 1
    on the padding (generated, the diffusers meaning) and 0 on x.  NaN and inf in ``x`` are
    copied: not checked.

    Parameters
    ----------
    x : array (N, C, h, w)
        The images.
    pad : sequence of 4 int
        (top, bottom, left, right), non-negative, not all 0.

    Returns
    -------
    canvas : array (N, C, h + top + bottom, w + left + right)
        In x's namespace and dtype.
    mask : numpy.ndarray (1, C, h + top + bottom, w + left + right)
        float64.

    Raises
    ------
    ValueError
        If ``pad`` is invalid or ``x`` is not 4-D.
    """
    check_array("x", x, ndim=4)
    if isinstance(pad, (str, bytes)) or not hasattr(pad, "__len__"):
        raise TypeError(f"pad must be 4 non-negative integers (top, bottom, left, right), got {pad!r}")
    xp = array_namespace(x)
    if len(pad) != 4 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in pad):
        raise ValueError(f"pad must be 4 non-negative integers (top, bottom, left, right), got {pad!r}")
    if sum(pad) == 0:
        raise ValueError("pad = (0, 0, 0, 0) leaves nothing to generate")
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    t, b, l, r = (int(p) for p in pad)
    n, c, h, w = x.shape
    canvas = xp.zeros((n, c, h + t + b, w + l + r), dtype=x.dtype)
    canvas[:, :, t:t + h, l:l + w] = x
    mask = np.ones((1, c, h + t + b, w + l + r))
    mask[:, :, t:t + h, l:l + w] = 0.0
    return canvas, mask


def outpaint(model, x, pad, schedule, timesteps, method="ddpm", *, rng=None, noise=None, **inpaint_options):
    """Generate the border ``pad`` around ``x`` (:func:`pad_canvas`) by :func:`refdiff.inpaint`
    on the padded canvas (the model works on the canvas's shape), MATH.md (17.5).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` on the canvas's shape.
    x : array (N, C, h, w)
        The images.
    pad : sequence of 4 int
        (top, bottom, left, right).
    schedule : Schedule or continuous VP
        The model's schedule.
    timesteps : array_like
        The sampling grid.
    method : str, default "ddpm"
        The sampler.
    rng : numpy.random.Generator, optional
        The source of every draw; give either ``rng`` or ``noise``.
    noise : callable, optional
        ``noise(like)``, instead of ``rng``.
    **inpaint_options
        Passed to :func:`refdiff.inpaint`.

    Returns
    -------
    array (N, C, h + top + bottom, w + left + right)
        The outpainted images.

    Raises
    ------
    ValueError, TypeError
        As :func:`pad_canvas` and :func:`refdiff.inpaint`.
    """
    from .inpaint import inpaint

    check_array("x", x, ndim=4, finite=True)
    canvas, mask = pad_canvas(x, pad)
    return inpaint(model, canvas, mask, schedule, timesteps, method, rng=rng, noise=noise, **inpaint_options)


def outpaint_strip(fill, x_start, width, window, step):
    """Grow ``x_start`` (N, C, H, w0) to ``width`` columns by sliding windows, MATH.md (17.11):
    each window of ``window`` columns keeps the last ``window - step`` columns generated so
    far and generates ``step`` new ones with ``fill(x_window, mask_window)`` (a batched
    inpainting callable, e.g. ``lambda xk, m: refdiff.inpaint(model, xk, m, ...)`` or
    :func:`gaussian_window_fill`; mask 1 = generate).  Returns (N, C, H, width).

    Parameters
    ----------
    fill : callable
        ``fill(x_window, mask_window) -> array`` of x_window's shape.
    x_start : array (N, C, H, w0)
        The start.
    width : int
        The final number of columns; width - w0 must be a multiple of ``step``.
    window : int
        Columns per window (>= 1).
    step : int
        New columns per window, 1 <= step < window, window - step <= w0.

    Returns
    -------
    array (N, C, H, width)
        The grown images.

    Raises
    ------
    ValueError
        If ``width``, ``window`` or ``step`` is invalid.
    """
    if not callable(fill):
        raise TypeError(f"fill must be a callable fill(x_window, mask_window), got {type(fill).__name__}")
    check_array("x_start", x_start, ndim=4, finite=True)
    xp = array_namespace(x_start)
    n, c, h, w0 = x_start.shape
    for name, v in (("window", window), ("step", step), ("width", width)):
        check_int(name, v, min=1)
    if not 1 <= step < window or window - step > w0:
        raise ValueError(f"need 1 <= step < window and window - step <= the start's width: step = {step}, "
                         f"window = {window}, start width = {w0}")
    if (width - w0) % step:
        raise ValueError(f"width - start width = {width - w0} must be a multiple of step = {step}")
    keep = window - step
    mask = np.zeros((1, c, h, window))
    mask[..., keep:] = 1.0
    canvas = x_start
    while canvas.shape[-1] < width:
        win = xp.concat([canvas[..., -keep:], xp.zeros((n, c, h, step), dtype=canvas.dtype)], axis=-1)
        out = fill(win, mask)
        canvas = xp.concat([canvas, out[..., keep:]], axis=-1)
    return canvas


def gaussian_window_fill(mean, cov, rng):
    """A batched exact-conditional ``fill`` for :func:`outpaint_strip` on Gaussian data
    N(mean, cov) of the window's event shape: each row drawn from (17.1) given its own kept
    entries (the mask shared by the batch).  NumPy.

    Parameters
    ----------
    mean : array_like
        The window's mean (its event shape or flattened).
    cov : array_like (D, D)
        The window's covariance (flattened order).
    rng : numpy.random.Generator
        The source of the draws.

    Returns
    -------
    callable
        ``fill(xk, mask) -> array`` of xk's shape (float64), xk of shape (N, *event).
    """
    check_array("mean", mean, ndim=1, finite=True)
    check_array("cov", cov, ndim=2, finite=True)
    if tuple(cov.shape) != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"cov has shape {tuple(cov.shape)} and mean {tuple(mean.shape)}: cov must be (D, D) for a "
                         "mean of shape (D,)")
    rng = check_rng(rng)
    mu = np.asarray(mean, dtype=np.float64).reshape(-1)
    Sig = np.asarray(cov, dtype=np.float64)

    def fill(xk, mask):
        m = np.asarray(mask, dtype=np.float64).reshape(-1)
        K, U = np.flatnonzero(m == 0), np.flatnonzero(m == 1)
        G = np.linalg.solve(Sig[np.ix_(K, K)], Sig[np.ix_(K, U)]).T  # (U, K)
        C = Sig[np.ix_(U, U)] - G @ Sig[np.ix_(K, U)]
        L = np.linalg.cholesky(0.5 * (C + C.T))
        xf = np.asarray(xk, dtype=np.float64).reshape(xk.shape[0], -1).copy()
        z = rng.standard_normal((xf.shape[0], U.size))
        xf[:, U] = mu[U] + (xf[:, K] - mu[K]) @ G.T + z @ L.T
        return xf.reshape(xk.shape)

    return fill


def stationary_field_cov(h, w, kernel="se", length=2.0, nugget=1e-6):
    """Covariance (h w, h w) of a stationary field on an h x w grid (row-major), unit variance:
    ``"se"`` exp(-|d|^2 / (2 length^2)) or ``"exp"`` (separable exponential)
    rho^(|di| + |dj|) with rho = exp(-1 / length), plus ``nugget`` on the diagonal.

    Parameters
    ----------
    h, w : int
        The grid's height and width.
    kernel : {"se", "exp"}, default "se"
        The covariance kernel.
    length : float, default 2.0
        The length scale.
    nugget : float, default 1e-06
        Added to the diagonal.

    Returns
    -------
    numpy.ndarray (h w, h w)
        The covariance (float64).

    Raises
    ------
    ValueError
        If ``kernel`` is unknown.
    """
    h, w = check_int("h", h, min=1), check_int("w", w, min=1)
    check_choice("kernel", kernel, ("se", "exp"))
    length = check_finite_scalar("length", length, low=0.0, low_open=True)
    nugget = check_finite_scalar("nugget", nugget, low=0.0)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    di = np.abs(ii.reshape(-1, 1) - ii.reshape(1, -1))
    dj = np.abs(jj.reshape(-1, 1) - jj.reshape(1, -1))
    if kernel == "se":
        k = np.exp(-0.5 * (di ** 2 + dj ** 2) / length ** 2)
    elif kernel == "exp":
        k = np.exp(-(di + dj) / length)
    else:
        raise ValueError(f"unknown kernel {kernel!r}; valid: 'se', 'exp'")
    return k + nugget * np.eye(h * w)


def chained_field_moments(mean_fn, cov_full, h, width, w0, window, step):
    """The exact law N(m, C) of :func:`outpaint_strip` with the exact conditional fill on a
    Gaussian field with covariance ``cov_full`` ((h width)^2, row-major over an h x width
    grid) and mean ``mean_fn`` (h, width): the first w0 columns exact, then (17.11) window
    by window.  Column-major block bookkeeping; returns m (h, width) and C in the same
    row-major flattening as ``cov_full``.

    Parameters
    ----------
    mean_fn : array_like (h, width)
        The field's mean.
    cov_full : array_like (h width, h width)
        The field's covariance (row-major).
    h : int
        The number of rows.
    width : int
        The final number of columns.
    w0 : int
        The start's number of columns.
    window, step : int
        As in :func:`outpaint_strip`.

    Returns
    -------
    m : numpy.ndarray (h, width)
    C : numpy.ndarray (h width, h width)
    """
    h, width, w0 = check_int("h", h, min=1), check_int("width", width, min=1), check_int("w0", w0, min=1)
    window, step = check_int("window", window, min=1), check_int("step", step, min=1)
    check_array("mean_fn", mean_fn, shape=(h, width), finite=True)
    check_array("cov_full", cov_full, shape=(h * width, h * width), finite=True)
    idx = np.arange(h * width).reshape(h, width)
    mu = np.asarray(mean_fn, dtype=np.float64).reshape(-1)
    S = np.asarray(cov_full, dtype=np.float64)
    first = idx[:, :w0].reshape(-1)
    m = np.zeros(h * width)
    C = np.zeros((h * width, h * width))
    m[first] = mu[first]
    C[np.ix_(first, first)] = S[np.ix_(first, first)]
    done, keep = w0, window - step
    while done < width:
        c = idx[:, done - keep:done].reshape(-1)
        b = idx[:, done:done + step].reshape(-1)
        K = np.linalg.solve(S[np.ix_(c, c)], S[np.ix_(c, b)]).T  # (b, c): window-relative, by stationarity
        cond = S[np.ix_(b, b)] - K @ S[np.ix_(c, b)]
        seen = idx[:, :done].reshape(-1)
        m[b] = mu[b] + K @ (m[c] - mu[c])
        C[np.ix_(b, seen)] = K @ C[np.ix_(c, seen)]
        C[np.ix_(seen, b)] = C[np.ix_(b, seen)].T
        C[np.ix_(b, b)] = K @ C[np.ix_(c, c)] @ K.T + cond
        done += step
    return m.reshape(h, width), C
