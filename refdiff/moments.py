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

__all__ = ["affine_moments", "sdedit_limits", "gaussian_kl"]


def affine_moments(pipeline, x_in, *, input_cov=None, check=True):
    """Exact (mean, cov) of an affine pipeline's output, MATH.md (17.7).

    pipeline : ``pipeline(x, noise) -> out`` with ``x`` a batch (N, *event) and ``noise``
        a callable ``noise(like)`` returning standard normals of ``like``'s shape (the
        pipeline's only randomness); rows must not interact (true of every refdiff sampler
        and editing method with an oracle model).
    x_in : the input, event shape (one sample, no batch axis; NumPy float64).
    input_cov : optional (D_in, D_in) covariance of a Gaussian input N(x_in, input_cov).
    check : also run the pipeline at a random (input, noise) point and compare with the
        affine prediction (ValueError if the pipeline is not affine, e.g. a mixture oracle).
    Returns host float64 ``mean`` (D_out,) and ``cov`` (D_out, D_out) of the flattened output.
    """
    x_in = np.asarray(x_in, dtype=np.float64)
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
    mu + G (x_in - mu), covariance Sigma (I - G^2).  Host float64 (D,), (D, D)."""
    mu = np.asarray(mean, dtype=np.float64).reshape(-1)
    Sig = np.asarray(cov, dtype=np.float64)
    lam, U = np.linalg.eigh(Sig)
    lam = np.clip(lam, 0.0, None)
    g = alpha ** 2 * lam / (alpha ** 2 * lam + sigma ** 2)
    if kind == "ode":
        gain, var = np.sqrt(g), lam * (1.0 - g)
    elif kind == "sde":
        gain, var = g, lam * (1.0 - g * g)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid: 'ode', 'sde'")
    y = U.T @ (np.asarray(x_in, dtype=np.float64).reshape(-1) - mu)
    return mu + U @ (gain * y), (U * var) @ U.T


def gaussian_kl(m0, C0, m1, C1):
    """KL(N(m0, C0) || N(m1, C1)) in nats for positive-definite C1 (C0 may be singular only
    if the KL is infinite; then inf)."""
    m0, m1 = np.asarray(m0, float).reshape(-1), np.asarray(m1, float).reshape(-1)
    C0, C1 = np.asarray(C0, float), np.asarray(C1, float)
    L = np.linalg.cholesky(C1)
    Li = np.linalg.inv(L)
    S = Li @ C0 @ Li.T
    d = Li @ (m0 - m1)
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return float("inf")
    return 0.5 * float(np.trace(S) + d @ d - m0.size - logdet)
