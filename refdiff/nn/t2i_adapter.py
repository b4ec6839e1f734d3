"""T2I-Adapter on refdiff's U-Net (diffusers' ``FullAdapter`` at toy scale), MATH.md
(19.13), (19.14).

The control image (N, C_c, r S, r S) is pixel-unshuffled by ``r`` to (N, C_c r^2, S, S),
a 3x3 conv lifts it to the first width, and one small residual stage per U-Net level
(2x average pooling first for levels l > 0, a 1x1 conv when the width changes, then
``x + conv1x1(relu(conv3x3(x)))``) gives one feature ``F_l`` (N, C_l, S/2^l, S/2^l) per
encoder level.  The features are computed once per generation (they depend on neither
x_t nor t) and added to the encoder's hidden state at the end of level l (the U-Net's
``feature<l>`` points, diffusers' ``down_intrablock_additional_residuals``), scaled by
``adapter_conditioning_scale`` and only while step ``i < int(N * adapter_conditioning_factor)``:

    r_l(i) = c * [i < floor(N * tau)] * F_l                                  (19.13)

Unlike ControlNet nothing is zero-initialised, so at init the adapted model is *not*
the base model (a documented difference); ``c = 0`` gives the base exactly.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_namespace
from .._validate import check_finite_scalar
from ._check import MAX_FIELD, check_adapter_args, check_cache, check_float_dtype, check_rng, check_size, check_xp
from .blocks import conv_b, conv_f, init_conv
from .controlnet import _step_index, check_control
from .fast import avgpool2x_backward, avgpool2x_forward
from .resample import pixel_unshuffle_backward, pixel_unshuffle_forward
from .unet import UNet

__all__ = ["T2IAdapter", "adapter_keep", "t2i_model"]


def adapter_keep(num_steps: int, factor: float = 1.0):
    """``keep_i = [i < floor(N * factor)]`` for i = 0..N-1, MATH.md (19.14) (diffusers'
    ``adapter_conditioning_factor``).  Host float64 (N,).

    Parameters
    ----------
    num_steps : int
        Number of sampling steps N.
    factor : float, optional
        Fraction tau of the steps (from the first) that get the features, in [0, 1]
        (default 1).

    Returns
    -------
    numpy.ndarray of float64, shape (N,)
        1.0 for the kept steps, 0.0 for the others.

    Raises
    ------
    ValueError
        If ``factor`` is outside [0, 1].
    """
    check_adapter_args(num_steps=num_steps, factor=factor)  # issue 19
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"adapter_keep: adapter_conditioning_factor must be in [0, 1], got {factor}")
    return (np.arange(int(num_steps)) < int(num_steps * factor)).astype(np.float64)


class T2IAdapter:
    """Feature extractor for ``unet`` (module docstring): ``control_channels`` C_c and the
    pixel-unshuffle factor ``downscale`` r (the control image is r times the U-Net size).

    Parameters
    ----------
    unet : UNet
        The U-Net whose ``feature<l>`` injection points the adapter feeds.
    control_channels : int, optional
        Channels C_c of the control image, at least 1 (default 1).
    downscale : int, optional
        Pixel-unshuffle factor r, at least 1 (default 1).

    Raises
    ------
    TypeError
        If ``unet`` is not a refdiff :class:`~refdiff.nn.UNet`.
    ValueError
        If ``control_channels`` or ``downscale`` is below 1.
    """

    def __init__(self, unet: UNet, *, control_channels: int = 1, downscale: int = 1):
        check_adapter_args(unet=unet)  # issue 19
        if not isinstance(unet, UNet):
            raise TypeError(f"T2IAdapter needs a refdiff UNet, got {type(unet).__name__}")
        check_size("control_channels", control_channels, 1, MAX_FIELD), check_size("downscale", downscale, 1, 64)  # issue 19
        if control_channels < 1 or downscale < 1:
            raise ValueError(f"T2IAdapter: need control_channels >= 1 and downscale >= 1, got {control_channels}, "
                             f"{downscale}")
        self.unet, self.channels, self.r = unet, int(control_channels), int(downscale)
        self.points = {k: v for k, v in unet.injection_points().items() if k.startswith("feature")}

    def init_params(self, rng, *, xp=None, dtype="float32") -> dict:
        """Host-drawn parameters (N(0, 1/fan_in) kernels, zero biases), cast and moved.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the initial kernels.
        xp : namespace or None, optional
            Array namespace of the parameters; None (default) for NumPy.
        dtype : str, optional
            Name of the floating dtype (default ``"float32"``).

        Returns
        -------
        dict
            Parameter name (prefix ``t2i.``) -> array.
        """
        check_rng(rng)  # issue 19
        check_float_dtype(dtype)
        if xp is not None:
            check_xp(xp)
        xp = array_namespace() if xp is None else xp
        W, H = self.unet.config.widths, {}
        init_conv(H, "t2i.conv_in", self.channels * self.r ** 2, W[0], 3, rng)
        for l, w in enumerate(W):
            if l > 0 and W[l - 1] != w:
                init_conv(H, f"t2i.l{l}.in", W[l - 1], w, 1, rng)
            init_conv(H, f"t2i.l{l}.conv1", w, w, 3, rng)
            init_conv(H, f"t2i.l{l}.conv2", w, w, 1, rng)
        return {k: xp.asarray(v, dtype=getattr(xp, dtype)) for k, v in H.items()}

    def forward(self, params, control):
        """Features ``{feature<l>: F_l}`` and the cache.  MATH.md (19.13).

        Parameters
        ----------
        params : dict
            Adapter parameters (:meth:`init_params`).
        control : array, shape (N, C_c, r S, r S)
            Control image, floating, values in [0, 1].

        Returns
        -------
        feats : dict
            ``{"feature<l>": F_l}`` with F_l of shape (N, C_l, S/2^l, S/2^l).
        cache : tuple
            Saved values for :meth:`backward`.

        Raises
        ------
        TypeError
            If ``control`` is not a floating array.
        ValueError
            If ``control`` has the wrong shape or values outside [0, 1].
        """
        check_adapter_args(params=params, control=control)  # issue 19
        xp = array_namespace(control)
        S = self.unet.config.image_size
        check_control(control, control.shape[0], self.channels, S * self.r, "T2IAdapter.forward")
        h, c_u = pixel_unshuffle_forward(xp.astype(control, params["t2i.conv_in.w"].dtype), self.r)
        h, c_in = conv_f(params, "t2i.conv_in", h)  # (N, C_0, S, S)
        feats, caches = {}, []
        for l in range(len(self.unet.config.widths)):
            pooled, c_i = l > 0, None
            if pooled:
                h, _ = avgpool2x_forward(h)
            if f"t2i.l{l}.in.w" in params:
                h, c_i = conv_f(params, f"t2i.l{l}.in", h)
            a, c_1 = conv_f(params, f"t2i.l{l}.conv1", h)
            relu = a > 0
            b, c_2 = conv_f(params, f"t2i.l{l}.conv2", xp.where(relu, a, xp.zeros_like(a)))
            h = h + b
            feats[f"feature{l}"] = h
            caches.append((pooled, c_i, c_1, relu, c_2))
        return feats, (c_u, c_in, caches)

    def backward(self, params, cache, dfeats: dict) -> dict:
        """Gradients of ``sum_l <F_l, dfeats[feature<l>]>`` for every parameter.

        Parameters
        ----------
        params : dict
            The adapter parameters of the forward pass.
        cache : tuple
            The cache returned by :meth:`forward`.
        dfeats : dict
            Gradients with respect to (some of) the features, keyed ``feature<l>``.

        Returns
        -------
        dict
            Gradient of every adapter parameter, keyed as ``params``.
        """
        check_adapter_args(params=params, dfeats=dfeats)  # issue 19
        check_cache(cache, "T2IAdapter.forward", 3)
        xp = array_namespace(next(iter(dfeats.values())))
        c_u, c_in, caches = cache
        G, dh = {}, None
        for l in reversed(range(len(caches))):
            pooled, c_i, c_1, relu, c_2 = caches[l]
            g = dfeats.get(f"feature{l}")
            dh = g if dh is None else (dh if g is None else dh + g)
            da = conv_b(G, f"t2i.l{l}.conv2", dh, c_2)
            dh = dh + conv_b(G, f"t2i.l{l}.conv1", xp.where(relu, da, xp.zeros_like(da)), c_1)
            if c_i is not None:
                dh = conv_b(G, f"t2i.l{l}.in", dh, c_i)
            if pooled:
                dh = avgpool2x_backward(dh, None)
        pixel_unshuffle_backward(conv_b(G, "t2i.conv_in", dh, c_in), c_u)
        return {k: G[k] for k in params}


def t2i_model(unet: UNet, base_params, adapter: T2IAdapter, adapter_params, control, cond=None, *,
              adapter_conditioning_scale=1.0, adapter_conditioning_factor=1.0, timesteps=None):
    """``model(x, t)`` of the U-Net with T2I-Adapter features, MATH.md (19.13): the features
    are computed here, once, and every call adds ``scale * keep_i * F_l`` (``keep``: :func:`
    adapter_keep` on ``timesteps``, needed when the factor is below 1).

    Parameters
    ----------
    unet : UNet
        The base U-Net.
    base_params : dict
        Its parameters.
    adapter : T2IAdapter
        The adapter.
    adapter_params : dict
        Its parameters.
    control : array, shape (N or 1, C_c, r S, r S)
        Control image (a batch of 1 is broadcast), values in [0, 1].
    cond : mapping, array or None, optional
        Condition of the U-Net (default None).
    adapter_conditioning_scale : float, optional
        Scale c of the features (default 1).
    adapter_conditioning_factor : float, optional
        Fraction tau of the steps that get the features (default 1).
    timesteps : sequence of float or None, optional
        The sampler's time grid, needed when the factor is below 1 (default None).

    Returns
    -------
    callable
        ``model(x, t)``; its attribute ``features`` holds the features it adds.

    Raises
    ------
    ValueError
        If the factor is below 1 without ``timesteps``, or the control image is invalid; the
        returned model raises ValueError for a ``t`` not on ``timesteps``.
    """
    check_adapter_args(unet=unet, base_params=base_params, adapter_params=adapter_params, control=control,  # issue 19
                       cond=cond, timesteps=timesteps)
    check_finite_scalar("adapter_conditioning_scale", adapter_conditioning_scale)
    check_finite_scalar("adapter_conditioning_factor", adapter_conditioning_factor, low=0.0, high=1.0)
    if not isinstance(adapter, T2IAdapter):
        raise TypeError(f"adapter must be a T2IAdapter, got {type(adapter).__name__}")
    feats, _ = adapter.forward(adapter_params, control)
    keep = None
    if timesteps is not None:
        keep = adapter_keep(len(timesteps), adapter_conditioning_factor)
    elif adapter_conditioning_factor != 1.0:
        raise ValueError("t2i_model: adapter_conditioning_factor < 1 needs the sampler's timesteps")

    def model(x, t):
        xp, n = array_namespace(x), x.shape[0]
        k = 1.0 if keep is None else float(keep[_step_index(t, timesteps)])
        if k == 0.0:
            return unet.apply(base_params, x, t, cond)
        res = {name: adapter_conditioning_scale * k * (xp.broadcast_to(f, (n, *f.shape[1:])) if f.shape[0] == 1 else f)
               for name, f in feats.items()}
        return unet.forward(base_params, x, t, cond, res)[0]

    model.features = feats  # the arrays every call uses (computed once)
    return model
