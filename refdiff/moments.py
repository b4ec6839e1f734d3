"""Exact output moments of affine pipelines, MATH.md chapter 17.

With the exact denoiser of Gaussian data (:class:`refdiff.GaussianData`), every step of
every refdiff sampler is affine in (state, noise), and so is any pipeline built from them:
img2img, replacement inpainting, RePaint with its undo steps, DDIM inversion.  Its output is
then out = b + A x_in + sum_k B_k z_k, a Gaussian whose mean and covariance are exact
(MATH.md (17.7)).  :func:`affine_moments` finds b, A and every B_k by running the
*production* pipeline itself on one batch: row 0 with all noise 0, then one row per input
coordinate (x_in + e_i) and one row per coordinate of every noise draw (that entry 1, all
else 0); by affinity each column is a difference of two rows.  A pipeline that re-uses a
noise tensor re-uses its columns automatically.

:func:`sdedit_limits` gives the continuous-time limits of img2img from a start point
(alpha, sigma): the exact probability-flow ODE (mean gain G^(1/2), covariance Sigma (I - G))
and the exact reverse SDE (gain G, covariance Sigma (I - G^2)), G = alpha^2 Sigma
(alpha^2 Sigma + sigma^2 I)^-1, MATH.md (17.8).
"""

from __future__ import annotations

import numpy as np

from ._validate import check_bool, check_choice, check_finite_scalar
from .backend import to_numpy

__all__ = ["affine_moments", "sdedit_limits", "gaussian_kl"]


def _host(name, v, ndim=None):
    """A host float64 copy of an array_like input (lists and integer arrays converted; None,
    strings, bools, complex, float16, NaN and inf refused)."""
    if v is None or isinstance(v, (str, bytes, bool, np.bool_, complex)):
        raise TypeError(f"{name} must be a real array, got {v!r}")
    kind = str(getattr(v, "dtype", np.asarray(v).dtype)).rsplit(".", 1)[-1]
    if kind in ("bool", "float16") or kind.startswith("complex") or not kind.startswith(("float", "int", "uint")):
        raise TypeError(f"{name} must be a real array (float32, float64 or integer), got dtype {kind}")
    a = np.asarray(to_numpy(v) if hasattr(v, "dtype") else v, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def affine_moments(pipeline, x_in, *, input_cov=None, check=True):
    """Exact (mean, cov) of an affine pipeline's output, MATH.md (17.7).

    Parameters
    ----------
    pipeline : callable
        ``pipeline(x, noise) -> out`` with ``x`` a batch (N, *event) and ``noise`` a
        callable ``noise(like)`` returning standard normals of ``like``'s shape (the
        pipeline's only randomness); rows must not interact (true of every refdiff sampler
        and editing method with an oracle model).
    x_in : array_like
        The input, event shape (one sample, no batch axis; NumPy float64).
    input_cov : array_like (D_in, D_in), optional
        The covariance of a Gaussian input N(x_in, input_cov); None for a fixed input.
    check : bool, default True
        Also run the pipeline at a random (input, noise) point and compare with the affine
        prediction.

    Returns
    -------
    mean : numpy.ndarray (D_out,)
        Host float64 mean of the flattened output.
    cov : numpy.ndarray (D_out, D_out)
        Its covariance (symmetrised).

    Raises
    ------
    ValueError
        If the pipeline's noise draws change between runs, or (``check``) it is not affine,
        e.g. with a mixture oracle.
    """
    if not callable(pipeline):
        raise TypeError(f"pipeline must be a callable pipeline(x, noise), got {type(pipeline).__name__}")
    check_bool("check", check)
    x_in = _host("x_in", x_in)
    if input_cov is not None:
        input_cov = _host("input_cov", input_cov, ndim=2)
        if input_cov.shape != (x_in.size, x_in.size):
            raise ValueError(f"input_cov has shape {input_cov.shape} but x_in has {x_in.size} entries: "
                             f"input_cov must be ({x_in.size}, {x_in.size})")
    shapes = []

    def counting(like):
        shapes.append(tuple(like.shape[1:]))
        return np.zeros(like.shape)

    base = np.asarray(pipeline(x_in[None], counting), dtype=np.float64).reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    d_in = x_in.size if input_cov is not None else 0
    R = 1 + d_in + sum(sizes)
    X = np.repeat(x_in.reshape(1, -1), R, axis=0)
    X[1:1 + d_in] += np.eye(d_in, x_in.size)
    offsets = np.cumsum([1 + d_in] + sizes)
    calls = []

    def unit(like):
        k = len(calls)
        calls.append(tuple(like.shape[1:]))
        if k >= len(shapes) or calls[k] != shapes[k]:
            raise ValueError(f"the pipeline's noise draws changed between runs (draw {k}): it must draw the "
                             "same shapes in the same order whatever the noise values")
        z = np.zeros((R, sizes[k]))
        z[offsets[k]:offsets[k] + sizes[k]] = np.eye(sizes[k])
        return z.reshape((R,) + shapes[k])

    out = np.asarray(pipeline(X.reshape((R,) + x_in.shape), unit), dtype=np.float64).reshape(R, -1)
    if len(calls) != len(shapes):
        raise ValueError(f"the pipeline drew {len(calls)} noise arrays, then {len(shapes)}: draws must not "
                         "depend on the values")
    cols = out[1:] - out[0]  # (d_in + sum sizes, D_out)
    A, B = cols[:d_in], cols[d_in:]
    mean = out[0]
    cov = B.T @ B
    if input_cov is not None:
        cov = cov + A.T @ np.asarray(input_cov, dtype=np.float64) @ A
    if check:
        _check_affine(pipeline, x_in, out[0], A, B, shapes, sizes, d_in)
    return mean, 0.5 * (cov + cov.T)


def _check_affine(pipeline, x_in, b, A, B, shapes, sizes, d_in):
    rng = np.random.default_rng(0)
    dx = rng.standard_normal(x_in.size) if d_in else np.zeros(x_in.size)
    zs = [rng.standard_normal(s) for s in sizes]
    it = iter(zs)
    got = np.asarray(pipeline((x_in.reshape(-1) + dx).reshape((1,) + x_in.shape),
                              lambda like: next(it).reshape(like.shape)), dtype=np.float64).reshape(-1)
    want = b + (dx @ A if d_in else 0.0) + (np.concatenate(zs) @ B if zs else 0.0)
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = 1.0 + float(np.max(np.abs(want)))
    if err > 1e-8 * scale * max(1, len(sizes)):
        raise ValueError(f"the pipeline is not affine in (input, noise): a random point differs from the affine "
                         f"prediction by {err:.3g} (a mixture oracle or a nonlinear model?)")


def sdedit_limits(mean, cov, x_in, alpha, sigma, kind="ode"):
    """The continuous-time limit of img2img on Gaussian data N(mean, cov) from the start
    (alpha, sigma), MATH.md (17.8): with G = alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1,
    ``"ode"`` (exact probability-flow ODE): mean mu + G^(1/2) (x_in - mu), covariance
    Sigma (I - G); ``"sde"`` (exact reverse SDE, i.e. a draw of q(x_0 | x_t0)): mean
    mu + G (x_in - mu), covariance Sigma (I - G^2).  Host float64 (D,), (D, D).

    Parameters
    ----------
    mean : array_like (D,)
        mu (flattened).
    cov : array_like (D, D)
        Sigma (negative eigenvalues clipped to 0).
    x_in : array_like
        The img2img input (D entries).
    alpha, sigma : float
        The start point's coefficients.
    kind : {"ode", "sde"}, default "ode"
        The limit.

    Returns
    -------
    mean : numpy.ndarray (D,)
    cov : numpy.ndarray (D, D)

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    mu = _host("mean", mean).reshape(-1)
    Sig = _host("cov", cov, ndim=2)
    x_h = _host("x_in", x_in).reshape(-1)
    if Sig.shape != (mu.size, mu.size) or x_h.size != mu.size:
        raise ValueError(f"mean has {mu.size} entries, cov shape {Sig.shape}, x_in {x_h.size} entries: "
                         f"need D, (D, D) and D")
    check_finite_scalar("alpha", alpha, low=0.0, low_open=True)
    check_finite_scalar("sigma", sigma, low=0.0)
    check_choice("kind", kind, ("ode", "sde"))
    lam, U = np.linalg.eigh(Sig)
    lam = np.clip(lam, 0.0, None)
    g = alpha ** 2 * lam / (alpha ** 2 * lam + sigma ** 2)
    if kind == "ode":
        gain, var = np.sqrt(g), lam * (1.0 - g)
    elif kind == "sde":
        gain, var = g, lam * (1.0 - g * g)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid: 'ode', 'sde'")
    y = U.T @ (x_h - mu)
    return mu + U @ (gain * y), (U * var) @ U.T


def gaussian_kl(m0, C0, m1, C1):
    """KL(N(m0, C0) || N(m1, C1)) in nats for positive-definite C1 (C0 may be singular only
    if the KL is infinite; then inf).

    Parameters
    ----------
    m0 : array_like (D,)
        The first mean.
    C0 : array_like (D, D)
        The first covariance.
    m1 : array_like (D,)
        The second mean.
    C1 : array_like (D, D)
        The second covariance (positive definite).

    Returns
    -------
    float
        The KL divergence (inf when C0 is singular).

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``C1`` is not positive definite.
    """
    m0, m1 = _host("m0", m0).reshape(-1), _host("m1", m1).reshape(-1)  # flattened
    C0, C1 = _host("C0", C0, ndim=2), _host("C1", C1, ndim=2)
    d = m0.size
    for name, shape in (("m1", m1.shape), ("C0", C0.shape), ("C1", C1.shape)):
        if shape != ((d,) if name == "m1" else (d, d)):
            raise ValueError(f"{name} has shape {shape} but m0 has shape {m0.shape}: need m0, m1 (D,), C0, C1 (D, D)")
    L = np.linalg.cholesky(C1)
    Li = np.linalg.inv(L)
    S = Li @ C0 @ Li.T
    d = Li @ (m0 - m1)
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return float("inf")
    return 0.5 * float(np.trace(S) + d @ d - m0.size - logdet)
