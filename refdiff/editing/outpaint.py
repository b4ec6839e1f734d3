"""Outpainting, MATH.md chapter 17: inpainting on a padded canvas, and growing a long
canvas window by window (sliding windows), with the exact law of the chained result for a
stationary Gaussian field (its KL to the exact field is the seam error, MATH.md (17.11)).
Images are (N, C, H, W); windows slide along the last axis (columns)."""

from __future__ import annotations

import numpy as np

from ..backend import array_namespace

__all__ = ["pad_canvas", "outpaint", "outpaint_strip", "gaussian_window_fill", "stationary_field_cov",
           "chained_field_moments"]


def pad_canvas(x, pad):
    """(canvas, mask): ``x`` (N, C, h, w) zero-padded by ``pad`` = (top, bottom, left, right)
    on the last two axes, and the mask (1, C, h + top + bottom, w + left + right) that is 1
    on the padding (generated, the diffusers meaning) and 0 on x."""
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
    on the padded canvas (the model works on the canvas's shape), MATH.md (17.5)."""
    from .inpaint import inpaint

    canvas, mask = pad_canvas(x, pad)
    return inpaint(model, canvas, mask, schedule, timesteps, method, rng=rng, noise=noise, **inpaint_options)


def outpaint_strip(fill, x_start, width, window, step):
    """Grow ``x_start`` (N, C, H, w0) to ``width`` columns by sliding windows, MATH.md (17.11):
    each window of ``window`` columns keeps the last ``window - step`` columns generated so
    far and generates ``step`` new ones with ``fill(x_window, mask_window)`` (a batched
    inpainting callable, e.g. ``lambda xk, m: refdiff.inpaint(model, xk, m, ...)`` or
    :func:`gaussian_window_fill`; mask 1 = generate).  Returns (N, C, H, width)."""
    xp = array_namespace(x_start)
    n, c, h, w0 = x_start.shape
    for name, v in (("window", window), ("step", step), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
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
    entries (the mask shared by the batch).  NumPy."""
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
    rho^(|di| + |dj|) with rho = exp(-1 / length), plus ``nugget`` on the diagonal."""
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
    row-major flattening as ``cov_full``."""
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
