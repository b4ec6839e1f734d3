"""Latent diffusion: scaling the latents (the LDM rule and the SD3 shift), decoding with
the inverse scaling, and the exact latent oracle of a linear encoder, MATH.md (21.7),
(21.9).

Any refdiff denoiser trains on the scaled latents ``f (z - delta)`` as on images; sampling
returns scaled latents, which :func:`unscale_latents` maps back before the decoder.  When
the encoder is linear, z = A (x - c), Gaussian (or mixture) data stays Gaussian (or a
mixture) in latent space, so every sampler can be scored against an exact oracle there.
"""

from __future__ import annotations


import numpy as np

from ._validate import check_array, check_choice, check_finite_scalar
from .backend import array_namespace, to_numpy
from .oracles import GaussianData, GaussianMixture

__all__ = ["latent_scaling", "scale_latents", "unscale_latents", "latent_oracle", "decode_latents"]


def _check_factor(scaling_factor, what):
    f = check_finite_scalar("scaling_factor", scaling_factor)
    if f == 0.0:
        raise ValueError(f"{what}: scaling_factor must be finite and nonzero (latents are multiplied by it and "
                         f"divided by it to decode), got {scaling_factor!r}")
    return f


def latent_scaling(z, rule: str = "ldm"):
    """``(scaling_factor, shift)`` from encoded training latents ``z``, MATH.md (21.9):
    ``"ldm"``: f = 1 / std(z) over all entries, shift 0 (how SD's 0.18215 was chosen);
    ``"sd3"``: the same f and shift = mean(z).  Computed in float64.

    Parameters
    ----------
    z : array
        encoded training latents (any shape)
    rule : {'ldm', 'sd3'}
        the scaling rule
    """
    check_array("z", z, finite=True)
    check_choice("rule", rule, ("ldm", "sd3"))
    zh = np.asarray(to_numpy(z), dtype=np.float64).ravel()
    sd = float(np.std(zh))
    shift = float(zh.mean()) if rule == "sd3" else 0.0
    if not sd > 0:
        raise ValueError("latent_scaling: the latents z have zero spread, so no scaling factor exists (a scaling "
                         "factor of 0 or inf); is the encoder collapsed?")
    return 1.0 / sd, shift


def scale_latents(z, scaling_factor, shift: float = 0.0):
    """``f (z - shift)``: what the diffusion model sees, MATH.md (21.9).  NaN and inf in
    ``z`` propagate: not checked.

    Parameters
    ----------
    z : array
        latents from the encoder
    scaling_factor : float
        f, finite and nonzero
    shift : float
        delta (0 for the LDM rule)
    """
    check_array("z", z)
    f = _check_factor(scaling_factor, "scale_latents")
    return (z - check_finite_scalar("shift", shift)) * f


def unscale_latents(z_scaled, scaling_factor, shift: float = 0.0):
    """``z_scaled / f + shift``: what the decoder takes, MATH.md (21.9).  NaN and inf in
    ``z_scaled`` propagate: not checked.

    Parameters
    ----------
    z_scaled : array
        latents in the diffusion model's scale
    scaling_factor : float
        f, finite and nonzero
    shift : float
        delta
    """
    check_array("z_scaled", z_scaled)
    f = _check_factor(scaling_factor, "unscale_latents")
    return z_scaled / f + check_finite_scalar("shift", shift)


def decode_latents(decode, z_scaled, scaling_factor, shift: float = 0.0, *, latent_shape=None):
    """Decode sampled (scaled) latents: ``decode(unscale_latents(z_scaled, f, shift))``,
    MATH.md (21.9).  ``latent_shape`` (per sample) is checked first when given.  NaN and
    inf in ``z_scaled`` propagate: not checked.

    Parameters
    ----------
    decode : callable
        the decoder, z -> images
    z_scaled : array
        sampled latents (N, ...)
    scaling_factor, shift : float
        f and delta of (21.9)
    latent_shape : tuple, optional
        the per-sample latent shape the decoder takes
    """
    if not callable(decode):
        raise TypeError(f"decode must be a callable z -> images, got {type(decode).__name__}")
    check_array("z_scaled", z_scaled)
    if latent_shape is not None and tuple(z_scaled.shape[1:]) != tuple(latent_shape):
        raise ValueError(f"decode_latents: latents must have shape (N, {', '.join(map(str, latent_shape))}), got "
                         f"{tuple(z_scaled.shape)}")
    return decode(unscale_latents(z_scaled, scaling_factor, shift))


def latent_oracle(oracle, A, c=None, *, scaling_factor: float = 1.0, shift: float = 0.0):
    """The exact distribution of the scaled latent ``f (A (x - c) - shift)`` for data
    ``x ~ oracle`` (a GaussianData or GaussianMixture over flattened x), MATH.md (21.7),
    (21.9): each component N(mu, Sigma) becomes N(f (A (mu - c) - shift), f^2 A Sigma A^T),
    weights and labels unchanged.  ``A`` (k, D) host array, ``c`` (D,) (default 0).

    Parameters
    ----------
    oracle : GaussianData or GaussianMixture
        the data distribution
    A : array (k, D)
        the linear encoder
    c : array (D,), optional
        the encoder's centre
    scaling_factor, shift : float
        f and delta of (21.9)
    """
    f = _check_factor(scaling_factor, "latent_oracle")
    shift = check_finite_scalar("shift", shift)
    if not isinstance(oracle, (GaussianData, GaussianMixture)):
        raise TypeError(f"oracle must be a GaussianData or GaussianMixture, got {type(oracle).__name__}")
    check_array("A", A, ndim=2, finite=True)
    if c is not None:
        check_array("c", c, ndim=1, finite=True)
    A = np.asarray(to_numpy(A), dtype=np.float64)
    D = oracle.D
    if A.ndim != 2 or A.shape[1] != D:
        raise ValueError(f"latent_oracle: A must have shape (k, {D}) for data of dimension {D}, got {A.shape}")
    c = np.zeros(D) if c is None else np.asarray(to_numpy(c), dtype=np.float64).reshape(-1)
    mus = np.asarray(oracle.means, dtype=np.float64).reshape(oracle.K, D)
    covs = oracle.covs
    m = f * ((mus - c) @ A.T - shift)  # (K, k)
    S = f * f * np.einsum("ij,kjl,ml->kim", A, covs, A)  # (K, k, k)
    S = 0.5 * (S + np.swapaxes(S, 1, 2))
    if isinstance(oracle, GaussianData):
        return GaussianData(m[0], S[0])
    return GaussianMixture(oracle.weights, m, S, labels=getattr(oracle, "labels", None))
