"""Autoencoders for latent diffusion, MATH.md chapter 21: the diagonal-Gaussian posterior
(clamp, sample, KL, NLL, mode) with its backward pass, a convolutional KL autoencoder
(factor-4 compression: 16x16 images to 4x4xc latents), and the two exact linear cases,
the PCA autoencoder and the linear VAE.

Layout as in :mod:`refdiff.nn.unet`: a model object holds only its config; parameters are
a flat dict; ``*_forward`` returns a cache that ``*_backward`` consumes.  Latents are NCHW
(N, c, 4, 4) for the conv autoencoder and (N, k) for the linear ones.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validate import check_array
from ..backend import array_namespace, check_rng
from ._check import check_cache, check_config, check_vae_args
from .activations import silu_backward, silu_forward
from .blocks import conv_b, conv_f, init_conv
from .resample import upsample2x_backward, upsample2x_forward

__all__ = [
    "LOGVAR_MIN", "LOGVAR_MAX", "posterior_forward", "posterior_backward", "diag_gaussian_kl",
    "diag_gaussian_nll", "KLAutoencoderConfig", "KLAutoencoder", "vae_loss_forward", "vae_loss_backward",
    "PCAAutoencoder", "LinearVAE",
]

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # the clamp of diffusers' DiagonalGaussianDistribution


# ------------------------------------------------------------------ diagonal Gaussian posterior
def _sum_rest(xp, a):
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


def posterior_forward(moments, eps=None):
    """Split encoder output ``moments`` (N, 2c, ...) into mean and raw log-variance, clamp
    the log-variance to [-30, 20] and draw ``z = mean + exp(logvar / 2) eps``, MATH.md
    (21.1); ``eps=None`` returns the mode (the mean).  The KL to N(0, I) per sample is
    (21.2).  Returns ``(z, kl (N,), cache)``; ``cache`` holds mean and clamped logvar.

    Parameters
    ----------
    moments : array, shape (N, 2c, ...)
        Encoder output: the mean in the first c channels, the raw log-variance in the rest.
    eps : array, shape (N, c, ...), optional
        Standard normal noise; None (default): return the mode.

    Returns
    -------
    z : array, shape (N, c, ...)
        The sample (or the mean).
    kl : array, shape (N,)
        KL of the posterior to N(0, I) per sample.
    cache : tuple
        For :func:`posterior_backward`.

    Raises
    ------
    ValueError
        If ``moments`` has fewer than 2 axes or an odd channel count, or ``eps`` does not
        have the latent shape.
    """
    check_vae_args(moments=moments, eps=eps)  # issue 19
    xp = array_namespace(moments)
    if moments.ndim < 2 or moments.shape[1] % 2:
        raise ValueError(f"posterior_forward: moments must be (N, 2c, ...) with an even channel count, got "
                         f"{tuple(moments.shape)}")
    c = moments.shape[1] // 2
    mean, raw = moments[:, :c], moments[:, c:]
    logvar = xp.clip(raw, LOGVAR_MIN, LOGVAR_MAX)
    inside = (raw > LOGVAR_MIN) & (raw < LOGVAR_MAX)  # where the clamp passes gradients
    if eps is None:
        z = mean
    else:
        if tuple(eps.shape) != tuple(mean.shape):
            raise ValueError(f"posterior_forward: eps must have the latent shape {tuple(mean.shape)}, got "
                             f"{tuple(eps.shape)}")
        z = mean + xp.exp(0.5 * logvar) * eps
    return z, diag_gaussian_kl(mean, logvar), (mean, logvar, inside, eps)


def posterior_backward(dz, dkl, cache):
    """Gradient of ``<z, dz> + <kl, dkl>`` with respect to the moments, MATH.md (21.1),
    (21.2): dmean = dz + dkl m, dlogvar = (dz ½ e^{ℓ/2} ε + dkl ½ (e^ℓ - 1)) 1[inside the
    clamp].  ``dz`` or ``dkl`` may be None (zero).

    Parameters
    ----------
    dz : array, shape (N, c, ...) or None
        Gradient with respect to z; None: zero.
    dkl : array, shape (N,) or None
        Gradient with respect to kl; None: zero.
    cache : tuple
        The cache of :func:`posterior_forward`.

    Returns
    -------
    array, shape (N, 2c, ...)
        Gradient with respect to the moments.
    """
    check_vae_args(dz=dz, dkl=dkl)  # issue 19
    mean_, logvar_, inside_, eps_ = check_cache(cache, "posterior_forward", 4)
    if dz is not None and tuple(dz.shape) != tuple(mean_.shape):
        raise ValueError(f"dz must have the latent shape {tuple(mean_.shape)}, got shape {tuple(dz.shape)}")
    if dkl is not None and tuple(dkl.shape) != (mean_.shape[0],):
        raise ValueError(f"dkl must have shape ({mean_.shape[0]},), got shape {tuple(dkl.shape)}")
    mean, logvar, inside, eps = cache
    xp = array_namespace(mean)
    dmean = xp.zeros_like(mean)
    dlv = xp.zeros_like(logvar)
    if dz is not None:
        dmean = dmean + dz
        if eps is not None:
            dlv = dlv + dz * 0.5 * xp.exp(0.5 * logvar) * eps
    if dkl is not None:
        w = xp.reshape(dkl, (-1,) + (1,) * (mean.ndim - 1))
        dmean = dmean + w * mean
        dlv = dlv + w * 0.5 * (xp.exp(logvar) - 1.0)
    dlv = xp.where(inside, dlv, xp.zeros_like(dlv))
    return xp.concat([dmean, dlv], axis=1)


def diag_gaussian_kl(mean, logvar):
    """KL(N(mean, diag e^logvar) || N(0, I)) per sample, summed over all but the batch
    axis, MATH.md (21.2).

    Parameters
    ----------
    mean : array, shape (N, ...)
        Posterior means.
    logvar : array, shape (N, ...)
        Posterior log-variances.

    Returns
    -------
    array, shape (N,)
        The KL per sample.
    """
    check_vae_args(mean=mean, logvar=logvar)  # issue 19
    xp = array_namespace(mean)
    return 0.5 * _sum_rest(xp, mean * mean + xp.exp(logvar) - 1.0 - logvar)


def diag_gaussian_nll(z, mean, logvar):
    """-log N(z; mean, diag e^logvar) per sample, summed over all but the batch axis,
    MATH.md (21.3).

    Parameters
    ----------
    z : array, shape (N, ...)
        The points.
    mean : array, shape (N, ...)
        Means.
    logvar : array, shape (N, ...)
        Log-variances.

    Returns
    -------
    array, shape (N,)
        The negative log-density per sample.
    """
    check_vae_args(z=z, mean=mean, logvar=logvar)  # issue 19
    xp = array_namespace(z, mean)
    return 0.5 * _sum_rest(xp, math.log(2.0 * math.pi) + logvar + (z - mean) ** 2 / xp.exp(logvar))


# ------------------------------------------------------------------ the beta-VAE loss
def vae_loss_forward(x, x_hat, kl, *, beta: float, sigma_x2: float = 1.0):
    """Batch mean of (21.4) for one draw of z: ``||x - x_hat||^2 / (2 sigma_x2) + beta kl``,
    MATH.md (21.4).  Returns ``(loss, cache)``.

    Parameters
    ----------
    x : array, shape (N, ...)
        Data.
    x_hat : array, shape (N, ...)
        Reconstructions.
    kl : array, shape (N,)
        Per-sample KL (from :func:`posterior_forward`).
    beta : float
        Weight of the KL, >= 0.
    sigma_x2 : float, default 1.0
        Decoder variance, > 0.

    Returns
    -------
    loss : float
        The batch mean.
    cache : tuple
        For :func:`vae_loss_backward`.

    Raises
    ------
    ValueError
        If ``sigma_x2 <= 0`` or ``beta < 0``.
    """
    check_vae_args(x=x, x_hat=x_hat, kl=kl, beta=beta, sigma_x2=sigma_x2)  # issue 19
    if not sigma_x2 > 0 or not beta >= 0:
        raise ValueError(f"vae_loss_forward: need sigma_x2 > 0 and beta >= 0, got {sigma_x2}, {beta}")
    xp = array_namespace(x, x_hat)
    r = x - x_hat
    per = _sum_rest(xp, r * r) / (2.0 * sigma_x2) + beta * kl
    return float(xp.mean(per)), (r, x.shape[0], beta, sigma_x2)


def vae_loss_backward(cache):
    """``(dx_hat, dkl)`` of :func:`vae_loss_forward`, MATH.md (21.4).

    Parameters
    ----------
    cache : tuple
        The cache of :func:`vae_loss_forward`.

    Returns
    -------
    dx_hat : array, shape (N, ...)
        Gradient with respect to the reconstructions.
    dkl : array, shape (N,)
        Gradient with respect to the per-sample KL (beta / N each).
    """
    check_cache(cache, "vae_loss_forward", 4)  # issue 19
    r, n, beta, sigma_x2 = cache
    xp = array_namespace(r)
    return -r / (sigma_x2 * n), xp.full((n,), beta / n, dtype=r.dtype)


# ------------------------------------------------------------------ the conv KL autoencoder
@dataclasses.dataclass(frozen=True)
class KLAutoencoderConfig:
    """in_channels, image_size (divisible by 4), latent_channels c, width of the hidden
    convolutions.  Latents are (c, image_size / 4, image_size / 4).

    Parameters
    ----------
    in_channels : int, default 1
        Image channels, >= 1.
    image_size : int, default 16
        Image side S, a positive multiple of 4.
    latent_channels : int, default 4
        Latent channels c, >= 1.
    width : int, default 32
        Channels of the hidden convolutions, >= 1.

    Raises
    ------
    ValueError
        If a size is out of range.
    """

    in_channels: int = 1
    image_size: int = 16
    latent_channels: int = 4
    width: int = 32

    def __post_init__(self):
        check_config("KLAutoencoderConfig", self, ints={"in_channels": 1, "image_size": 4, "latent_channels": 1,  # issue 19
                                                        "width": 1})
        for name in ("in_channels", "latent_channels", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"KLAutoencoderConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 4 or self.image_size % 4:
            raise ValueError(f"KLAutoencoderConfig: image_size must be a positive multiple of 4, got {self.image_size}")

    @property
    def latent_shape(self):
        return (self.latent_channels, self.image_size // 4, self.image_size // 4)

    def to_dict(self):
        """The configuration as a plain dict, with ``"arch": "kl_autoencoder"``."""
        return {"arch": "kl_autoencoder", **dataclasses.asdict(self)}


class KLAutoencoder:
    """Encoder: conv3x3 -> silu -> [conv3x3 stride 2 -> silu] x2 -> conv3x3 to 2c moments;
    decoder: conv3x3 -> silu -> [upsample x2 -> conv3x3 -> silu] x2 -> conv3x3 to the image.
    The posterior is (21.1) and the loss (21.4).

    Parameters
    ----------
    config : KLAutoencoderConfig, optional
        The sizes; None (default): ``KLAutoencoderConfig()``.
    """

    ENC = (("enc0", 1), ("enc1", 2), ("enc2", 2))
    DEC = (("dec0", False), ("dec1", True), ("dec2", True))

    def __init__(self, config: KLAutoencoderConfig | None = None):
        if config is not None and not isinstance(config, KLAutoencoderConfig):  # issue 19
            raise TypeError(f"config must be a KLAutoencoderConfig or None, got {type(config).__name__}")
        self.config = KLAutoencoderConfig() if config is None else config

    def init_params(self, rng, *, xp=None, dtype="float32") -> dict:
        """Initial parameters of the encoder and decoder convolutions (the moments' convolution
        scaled by 0.1, to start near the prior's scale).

        Parameters
        ----------
        rng : numpy.random.Generator or int
            Source of the initial weights (checked by ``check_rng``).
        xp : namespace, optional
            Array namespace of the result; None (default): NumPy.
        dtype : str, default "float32"
            Name of the dtype in ``xp``.

        Returns
        -------
        dict of str to array
            The parameters.
        """
        check_vae_args(dtype=dtype, xp=xp)  # issue 19
        rng = check_rng(rng)
        c, P = self.config, {}
        w = c.width
        init_conv(P, "enc0", c.in_channels, w, 3, rng)
        init_conv(P, "enc1", w, w, 3, rng)
        init_conv(P, "enc2", w, w, 3, rng)
        init_conv(P, "enc_out", w, 2 * c.latent_channels, 3, rng)
        P["enc_out.w"] *= 0.1  # start near the prior's scale
        init_conv(P, "dec0", c.latent_channels, w, 3, rng)
        init_conv(P, "dec1", w, w, 3, rng)
        init_conv(P, "dec2", w, w, 3, rng)
        init_conv(P, "dec_out", w, c.in_channels, 3, rng)
        xp = np if xp is None else xp
        return {k: xp.asarray(v, dtype=getattr(xp, dtype)) for k, v in P.items()}

    def _check(self, a, shape, what, arg):
        check_array(arg.split(" ")[0], a)  # issue 19
        if a.ndim != 4 or tuple(a.shape[1:]) != tuple(shape):
            raise ValueError(f"KLAutoencoder.{what}: {arg} must have shape (N, {', '.join(map(str, shape))}), got "
                             f"{tuple(a.shape)}")

    def encode_forward(self, params, x):
        """Moments (N, 2c, S/4, S/4) of the posterior and the cache.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        x : array, shape (N, C, S, S)
            Images.

        Returns
        -------
        moments : array, shape (N, 2c, S/4, S/4)
            Posterior mean and raw log-variance.
        cache : tuple
            For :meth:`encode_backward`.

        Raises
        ------
        ValueError
            If ``x`` does not have the configured shape.
        """
        check_vae_args(params=params)  # issue 19
        c = self.config
        self._check(x, (c.in_channels, c.image_size, c.image_size), "encode", "x")
        h, caches = x, []
        for name, stride in self.ENC:
            h, cc = conv_f(params, name, h, stride)  # stride 2 halves S
            h, cs = silu_forward(h)
            caches.append((cc, cs))
        m, co = conv_f(params, "enc_out", h)
        return m, (caches, co)

    def encode_backward(self, G, dm, cache):
        """Backward of :meth:`encode_forward`: parameter gradients are added into ``G``.

        Parameters
        ----------
        G : dict
            Gradient accumulator.
        dm : array, shape (N, 2c, S/4, S/4)
            Gradient with respect to the moments.
        cache : tuple
            The cache of :meth:`encode_forward`.

        Returns
        -------
        array, shape (N, C, S, S)
            Gradient with respect to the images.
        """
        check_vae_args(G=G, dm=dm)  # issue 19
        check_cache(cache, "encode_forward", 2)
        caches, co = cache
        dh = conv_b(G, "enc_out", dm, co)
        for (name, _), (cc, cs) in zip(reversed(self.ENC), reversed(caches)):
            dh = conv_b(G, name, silu_backward(dh, cs), cc)
        return dh

    def decode_forward(self, params, z):
        """Image (N, C, S, S) from latents (N, c, S/4, S/4), and the cache.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        z : array, shape (N, c, S/4, S/4)
            Latents.

        Returns
        -------
        out : array, shape (N, C, S, S)
            The decoded images.
        cache : tuple
            For :meth:`decode_backward`.

        Raises
        ------
        ValueError
            If ``z`` does not have the latent shape.
        """
        check_vae_args(params=params)  # issue 19
        self._check(z, self.config.latent_shape, "decode", "z (the latent)")
        h, caches = z, []
        for name, up in self.DEC:
            cu = None
            if up:
                h, cu = upsample2x_forward(h)  # (N, w, 2H, 2W)
            h, cc = conv_f(params, name, h)
            h, cs = silu_forward(h)
            caches.append((cu, cc, cs))
        out, co = conv_f(params, "dec_out", h)
        return out, (caches, co)

    def decode_backward(self, G, dout, cache):
        """Backward of :meth:`decode_forward`: parameter gradients are added into ``G``.

        Parameters
        ----------
        G : dict
            Gradient accumulator.
        dout : array, shape (N, C, S, S)
            Gradient with respect to the images.
        cache : tuple
            The cache of :meth:`decode_forward`.

        Returns
        -------
        array, shape (N, c, S/4, S/4)
            Gradient with respect to the latents.
        """
        check_vae_args(G=G, dout=dout)  # issue 19
        check_cache(cache, "decode_forward", 2)
        caches, co = cache
        dh = conv_b(G, "dec_out", dout, co)
        for (name, up), (cu, cc, cs) in zip(reversed(self.DEC), reversed(caches)):
            dh = conv_b(G, name, silu_backward(dh, cs), cc)
            if up:
                dh = upsample2x_backward(dh, cu)
        return dh

    def encode(self, params, x, *, sample=False, rng=None):
        """Latents: the posterior mode (default) or a sample (``sample=True`` with ``rng``).

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        x : array, shape (N, C, S, S)
            Images.
        sample : bool, default False
            Draw from the posterior instead of returning its mode.
        rng : numpy.random.Generator or int, optional
            Source of the noise when ``sample``.

        Returns
        -------
        array, shape (N, c, S/4, S/4)
            The latents.
        """
        check_vae_args(params=params, sample=sample)  # issue 19
        if rng is not None:
            check_rng(rng)
        m, _ = self.encode_forward(params, x)
        eps = None
        if sample:
            rng = check_rng(rng)
            xp = array_namespace(m)
            eps = xp.asarray(rng.standard_normal((m.shape[0], m.shape[1] // 2) + tuple(m.shape[2:])), dtype=m.dtype)
        return posterior_forward(m, eps)[0]

    def decode(self, params, z):
        """Images decoded from latents (:meth:`decode_forward` without the cache).

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        z : array, shape (N, c, S/4, S/4)
            Latents.

        Returns
        -------
        array, shape (N, C, S, S)
            The images.
        """
        check_vae_args(params=params)  # issue 19
        return self.decode_forward(params, z)[0]

    def loss(self, params, x, eps, *, beta, sigma_x2=1.0):
        """(21.4) on the batch with the given noise: ``(loss, grads, parts)``.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        x : array, shape (N, C, S, S)
            Images.
        eps : array, shape (N, c, S/4, S/4) or None
            Posterior noise; None: use the mode.
        beta : float
            Weight of the KL, >= 0.
        sigma_x2 : float, default 1.0
            Decoder variance, > 0.

        Returns
        -------
        loss : float
            The batch mean of (21.4).
        grads : dict of str to array
            Its gradients, keyed like ``params``.
        parts : dict
            ``{"kl": batch mean of the KL}``.
        """
        check_vae_args(params=params, x=x, eps=eps, beta=beta, sigma_x2=sigma_x2)  # issue 19
        if eps is not None and eps.ndim and x.ndim and eps.shape[0] != x.shape[0]:
            raise ValueError(f"eps must have x's batch {x.shape[0]}, got shapes eps {tuple(eps.shape)}, x {tuple(x.shape)}")
        m, ce = self.encode_forward(params, x)
        z, kl, cp = posterior_forward(m, eps)
        x_hat, cd = self.decode_forward(params, z)
        loss, cl = vae_loss_forward(x, x_hat, kl, beta=beta, sigma_x2=sigma_x2)
        dx_hat, dkl = vae_loss_backward(cl)
        G = {}
        dz = self.decode_backward(G, dx_hat, cd)
        self.encode_backward(G, posterior_backward(dz, dkl, cp), ce)
        return loss, {k: G[k] for k in params}, {"kl": float(array_namespace(kl).mean(kl))}


# ------------------------------------------------------------------ exact linear cases
@dataclasses.dataclass(frozen=True)
class PCAAutoencoder:
    """z = U_k^T (x - mean), x_hat = U_k z + mean (MATH.md (21.7)); ``eigenvalues`` are the
    kept variances s_1 >= .. >= s_k, ``discarded`` the others (host float64 arrays).

    Parameters
    ----------
    mean : numpy.ndarray, shape (D,)
        Data mean.
    components : numpy.ndarray, shape (D, k)
        Orthonormal principal directions U_k.
    eigenvalues : numpy.ndarray, shape (k,)
        The kept variances.
    discarded : numpy.ndarray, shape (D - k,)
        The other variances.
    """

    mean: np.ndarray
    components: np.ndarray  # (D, k)
    eigenvalues: np.ndarray
    discarded: np.ndarray

    def __post_init__(self):
        check_array("components", self.components, ndim=2, finite=True)  # issue 19 (once, at construction)
        D, k = self.components.shape
        for name, want in (("mean", (D,)), ("eigenvalues", (k,)), ("discarded", (D - k,))):
            a = getattr(self, name)
            check_array(name, a, allow_empty=name == "discarded", finite=True)
            if tuple(a.shape) != want:
                raise ValueError(f"{name} must have shape {want} for components of shape {(D, k)}, got {tuple(a.shape)}")

    @classmethod
    def fit(cls, x, k: int):
        """The PCA autoencoder of the samples ``x`` (biased covariance).

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Samples, flattened to (N, D).
        k : int
            Latent dimension, in [1, D].

        Returns
        -------
        PCAAutoencoder

        Raises
        ------
        ValueError
            If ``k`` is out of range.
        """
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if not 1 <= k <= x.shape[1]:
            raise ValueError(f"PCAAutoencoder.fit: k must be in [1, {x.shape[1]}], got {k}")
        mu = x.mean(axis=0)
        s, U = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
        s, U = s[::-1], U[:, ::-1]
        return cls(mu, U[:, :k], s[:k], s[k:])

    @classmethod
    def from_moments(cls, mean, cov, k: int):
        """The PCA autoencoder of the population N(mean, cov) (exact eigenvectors).

        Parameters
        ----------
        mean : array_like, shape (D,)
            Population mean.
        cov : array_like, shape (D, D)
            Population covariance.
        k : int
            Latent dimension.

        Returns
        -------
        PCAAutoencoder
        """
        s, U = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
        s, U = s[::-1], U[:, ::-1]
        return cls(np.asarray(mean, dtype=np.float64).reshape(-1), U[:, :k], s[:k], s[k:])

    def w2_squared_to_data(self) -> float:
        """Squared 2-Wasserstein distance between Gaussian data and the decoded exact latent
        oracle: the discarded variance sum_{i>k} s_i, MATH.md (21.8)."""
        return float(np.sum(self.discarded))

    @property
    def encoder_matrix(self):
        return self.components.T

    def encode(self, x):
        """Latents ``z = (x - mean) U_k`` (host float64).

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Data, flattened to (N, D).

        Returns
        -------
        numpy.ndarray, shape (N, k)
            The latents.
        """
        check_vae_args(x=x)  # issue 19
        if x.ndim != 2 or x.shape[1] != self.components.shape[0]:
            raise ValueError(f"x must have shape (N, {self.components.shape[0]}), got shape {tuple(x.shape)}")
        x = np.asarray(x, dtype=np.float64)
        return (x.reshape(len(x), -1) - self.mean) @ self.components

    def decode(self, z):
        """Reconstructions ``z U_k^T + mean`` (host float64).

        Parameters
        ----------
        z : array_like, shape (N, k)
            Latents.

        Returns
        -------
        numpy.ndarray, shape (N, D)
            The reconstructions.

        Raises
        ------
        ValueError
            If ``z`` is not (N, k).
        """
        check_array("z", z, ndim=2)  # issue 19
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.components.shape[1]:
            raise ValueError(f"PCAAutoencoder.decode: z must have shape (N, {self.components.shape[1]}), got "
                             f"{tuple(z.shape)}")
        return z @ self.components.T + self.mean


class LinearVAE:
    """Linear VAE: encoder mean m = x V^T + a, constant log-variance ``logvar`` (k,),
    decoder x_hat = z W^T + b.  Parameters ``W`` (D, k), ``b`` (D,), ``V`` (k, D), ``a``
    (k,), ``logvar`` (k,).  Its loss is the exact expectation over z, MATH.md (21.5); its
    optimum is probabilistic PCA, MATH.md (21.6).

    Parameters
    ----------
    dim : int
        Data dimension D.
    latent_dim : int
        Latent dimension k, in [1, D].

    Raises
    ------
    ValueError
        If ``latent_dim`` is out of range.
    """

    def __init__(self, dim: int, latent_dim: int):
        check_vae_args(dim=dim, latent_dim=latent_dim)  # issue 19
        if not 1 <= latent_dim <= dim:
            raise ValueError(f"LinearVAE: need 1 <= latent_dim <= dim, got {latent_dim}, {dim}")
        self.dim, self.k = int(dim), int(latent_dim)

    def init_params(self, rng, *, dtype="float64"):
        """Initial parameters: W and V with N(0, 1/4) entries, b, a and logvar zero.

        Parameters
        ----------
        rng : numpy.random.Generator or int
            Source of W and V (checked by ``check_rng``).
        dtype : str, default "float64"
            Unused: the arrays are NumPy float64.

        Returns
        -------
        dict of str to numpy.ndarray
            ``W``, ``b``, ``V``, ``a``, ``logvar``.
        """
        check_vae_args(dtype=dtype)  # issue 19
        rng = check_rng(rng)
        D, k = self.dim, self.k
        return {"W": 0.5 * rng.standard_normal((D, k)), "b": np.zeros(D), "V": 0.5 * rng.standard_normal((k, D)),
                "a": np.zeros(k), "logvar": np.zeros(k)}

    def loss(self, params, x, *, beta: float, sigma_x2: float):
        """Batch mean of MATH.md (21.5) and its gradients: ``(loss, grads)``.

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            ``W``, ``b``, ``V``, ``a``, ``logvar``.
        x : numpy.ndarray, shape (N, D)
            Data.
        beta : float
            Weight of the KL.
        sigma_x2 : float
            Decoder variance.

        Returns
        -------
        loss : float
            The batch mean.
        grads : dict of str to numpy.ndarray
            Its gradients, keyed like ``params``.
        """
        check_vae_args(params=params, x=x, beta=beta, sigma_x2=sigma_x2)  # issue 19
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got shape {tuple(x.shape)}")
        W, b, V, a, lv = (params[n] for n in ("W", "b", "V", "a", "logvar"))
        n = x.shape[0]
        m = x @ V.T + a  # (N, k)
        r = x - m @ W.T - b  # (N, D)
        v = np.exp(lv)
        wn = np.sum(W * W, axis=0)  # (k,) column norms
        per = (np.sum(r * r, axis=1) + wn @ v) / (2 * sigma_x2) + 0.5 * beta * np.sum(m * m + v - 1 - lv, axis=1)
        dm = (-(r @ W) / sigma_x2 + beta * m) / n  # (N, k)
        G = {"W": -(r.T @ m) / (sigma_x2 * n) + W * v / sigma_x2, "b": -np.sum(r, axis=0) / (sigma_x2 * n),
             "V": dm.T @ x, "a": np.sum(dm, axis=0), "logvar": wn * v / (2 * sigma_x2) + 0.5 * beta * (v - 1)}
        return float(np.mean(per)), G

    @staticmethod
    def optimum(x, k: int, *, beta: float, sigma_x2: float):
        """``(min mean loss, eigenvalues of W W^T)`` of MATH.md (21.6) for data ``x``.

        Parameters
        ----------
        x : array_like, shape (N, D)
            Data.
        k : int
            Latent dimension.
        beta : float
            Weight of the KL.
        sigma_x2 : float
            Decoder variance.

        Returns
        -------
        loss : float
            The minimum mean loss.
        eigenvalues : numpy.ndarray, shape (k,)
            The nonzero eigenvalues s_i - beta sigma_x2 of W W^T.

        Raises
        ------
        ValueError
            If s_k <= beta sigma_x2.
        """
        x = np.asarray(x, dtype=np.float64)
        s = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)))[::-1]
        s2 = beta * sigma_x2
        if s[k - 1] <= s2:
            raise ValueError(f"LinearVAE.optimum: needs s_k = {s[k - 1]} > beta sigma_x2 = {s2}")
        val = 0.5 * beta * (np.sum(np.log(s[:k] / s2)) + k + np.sum(s[k:]) / s2)
        return float(val), s[:k] - s2
