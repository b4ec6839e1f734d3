"""ControlNet on refdiff's U-Net (diffusers' contract), MATH.md (19.8), (19.9), (19.10),
(19.11), (19.12).

A trainable copy of the base U-Net's encoder (time/class/token embeddings, conv_in, the
down path, the middle block), initialised from the base weights, reads ``x_t`` plus an
encoded control image; each of its skip tensors and its middle output goes through its
own zero-initialised 1x1 convolution, and the results are the residuals that the frozen
base U-Net adds at its injection points ``skip<i>`` and ``mid``::

    g      = hint.out(silu(hint.conv1(silu(hint.conv0(control)))))      zero conv at init
    h_0    = conv_in(x_t) + g ;  h_i = copy of down block i ;  m = copy of mid
    r_i    = s_i * zc.skip<i>(h_i),   r_mid = s_K * zc.mid(m)                       (19.8)
    out    = base U-Net(x_t, t, cond; skip_i += r_i, mid += r_mid)

At initialisation every zero conv has W = 0, b = 0, so every residual is an exact 0.0 and
the controlled output equals the base output bit for bit (19.9); the only nonzero
gradients are those of the output zero convs (19.10).  The control image is in [0, 1]
(diffusers' ``do_normalize=False``), of the U-Net's size, with ``hint_channels`` channels.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_namespace, to_numpy
from .._validate import check_array
from ._check import MAX_FIELD, check_adapter_args, check_cache, check_size
from .blocks import conv_b, conv_f, init_conv
from .fast import silu_backward, silu_forward
from .unet import UNet
from .unet_blocks import BLOCKS

__all__ = ["ControlNet", "check_control", "controlnet_scales", "control_keep", "controlled_forward", "controlled_backward",
           "controlled_model"]


def check_control(control, n: int, channels: int, size: int, what: str = "control"):
    """A control image must be float (n, channels, size, size) with values in [0, 1].

    Parameters
    ----------
    control : array
        The control image.
    n : int
        Expected batch size.
    channels : int
        Expected number of channels.
    size : int
        Expected image side.
    what : str, default "control"
        Name used in error messages.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``control`` is not a real floating array.
    ValueError
        If its shape is not (n, channels, size, size) or a value lies outside [0, 1].
    """
    check_array("control", control, dtype="any")  # issue 19
    check_size("n", n, 1, MAX_FIELD), check_size("channels", channels, 1, MAX_FIELD), check_size("size", size, 1, MAX_FIELD)
    if not isinstance(what, str):
        raise TypeError(f"what must be a str (the argument's name in messages), got {type(what).__name__}")
    xp = array_namespace(control)
    if not xp.isdtype(control.dtype, "real floating") or str(control.dtype).endswith("float16"):  # issue 19
        raise TypeError(f"{what}: the control image must be a float array, got dtype {control.dtype}")
    if tuple(control.shape) != (n, channels, size, size):
        raise ValueError(f"{what}: the control image must have shape {(n, channels, size, size)}, "
                         f"got {tuple(control.shape)}")
    lo, hi = float(xp.min(control)), float(xp.max(control))
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(f"{what}: control values must lie in [0, 1] (diffusers' control range, not [-1, 1]); "
                         f"got min {lo:.4g}, max {hi:.4g}")


def controlnet_scales(K: int, conditioning_scale: float = 1.0, *, guess_mode: bool = False,
                      convention: str = "diffusers"):
    """Per-residual scales (K residuals: the skips, shallow to deep, then mid), MATH.md
    (19.11): ``s_i = c`` normally; in guess mode diffusers' ``c * logspace(-1, 0, K)_i``
    (``convention="diffusers"``) or the original release's ``c * 0.825^(K-1-i)``
    (``"original"``).  Host float64 (K,).

    Parameters
    ----------
    K : int
        Number of residuals (skips then mid).
    conditioning_scale : float, default 1.0
        The conditioning scale c.
    guess_mode : bool, default False
        Use the guess-mode ramp instead of a constant.
    convention : {"diffusers", "original"}, default "diffusers"
        The guess-mode ramp.

    Returns
    -------
    numpy.ndarray, shape (K,)
        The scales s_i in float64.

    Raises
    ------
    ValueError
        If ``convention`` is unknown.
    """
    check_adapter_args(K=K, conditioning_scale=conditioning_scale, guess_mode=guess_mode)  # issue 19
    if convention not in ("diffusers", "original"):
        raise ValueError(f"controlnet_scales: convention must be 'diffusers' or 'original', got {convention!r}")
    if not guess_mode:
        return np.full(K, float(conditioning_scale))
    if convention == "diffusers":
        return float(conditioning_scale) * np.logspace(-1.0, 0.0, K)
    return float(conditioning_scale) * 0.825 ** (K - 1 - np.arange(K, dtype=np.float64))


def control_keep(num_steps: int, start: float = 0.0, end: float = 1.0):
    """diffusers' ``controlnet_keep``: ``keep_i = 1 - [i/N < start or (i+1)/N > end]`` for
    steps i = 0..N-1, MATH.md (19.12).  Host float64 (N,).

    Parameters
    ----------
    num_steps : int
        Number of sampler steps N.
    start : float, default 0.0
        ``control_guidance_start``, the fraction of steps before which control is off.
    end : float, default 1.0
        ``control_guidance_end``, the fraction after which control is off; need
        0 <= start < end <= 1.

    Returns
    -------
    numpy.ndarray, shape (N,)
        1.0 where the control acts, 0.0 elsewhere (float64).

    Raises
    ------
    ValueError
        If not 0 <= start < end <= 1.
    """
    check_adapter_args(num_steps=num_steps, start=start, end=end)  # issue 19
    if not (0.0 <= start < end <= 1.0):
        raise ValueError(f"control_keep: need 0 <= control_guidance_start < control_guidance_end <= 1, got "
                         f"start={start}, end={end}")
    i = np.arange(int(num_steps), dtype=np.float64)
    return 1.0 - ((i / num_steps < start) | ((i + 1) / num_steps > end)).astype(np.float64)


class ControlNet:
    """A control branch for ``unet`` (module docstring).  ``hint_channels``: channels of the
    control image; ``hint_widths``: the hint encoder's two inner widths.

    Parameters
    ----------
    unet : UNet
        The base U-Net (not an inpainting one).
    hint_channels : int, default 1
        Channels of the control image, >= 1.
    hint_widths : tuple of int, default (8, 16)
        The hint encoder's two inner widths, each >= 1.

    Raises
    ------
    TypeError
        If ``unet`` is not a refdiff :class:`~refdiff.nn.unet.UNet`.
    ValueError
        If the U-Net is an inpainting one or the hint sizes are invalid.
    """

    def __init__(self, unet: UNet, *, hint_channels: int = 1, hint_widths=(8, 16)):
        check_adapter_args(unet=unet)  # issue 19
        check_size("hint_channels", hint_channels, 1, MAX_FIELD)
        if not isinstance(hint_widths, (tuple, list)) or len(hint_widths) != 2:
            raise TypeError(f"hint_widths must be a pair of ints, got {hint_widths!r}")
        for w in hint_widths:
            check_size("hint_widths", w, 1, MAX_FIELD)
        if not isinstance(unet, UNet):
            raise TypeError(f"ControlNet needs a refdiff UNet, got {type(unet).__name__}")
        if unet.config.inpaint:
            raise ValueError("ControlNet: inpainting U-Nets (9-channel input) are not supported")
        if hint_channels < 1 or len(hint_widths) != 2 or min(hint_widths) < 1:
            raise ValueError(f"ControlNet: need hint_channels >= 1 and two hint_widths >= 1, got {hint_channels}, "
                             f"{hint_widths}")
        self.unet, self.hint_channels, self.hint_widths = unet, int(hint_channels), tuple(hint_widths)
        self.points = unet.injection_points()
        self.skip_names = [k for k in self.points if k.startswith("skip")]

    @property
    def num_residuals(self) -> int:
        return len(self.skip_names) + 1

    def copied_keys(self, base_params) -> list:
        """Base keys the copy holds: embeddings, conv_in, the down path and the middle.

        Parameters
        ----------
        base_params : dict of str to array
            The base U-Net's parameters.

        Returns
        -------
        list of str
            The copied keys, sorted.
        """
        check_adapter_args(base_params=base_params)  # issue 19
        down, mid, _ = self.unet._plan()
        pre = tuple(name + "." for _, name, *_ in down + mid) + ("temb.",)
        return sorted(k for k in base_params if k.startswith(pre) or k in ("class_emb", "token_emb", "pos_emb"))

    def init_params(self, base_params: dict, rng) -> dict:
        """The copy (exact copies of the base arrays) plus the hint encoder (its last conv
        zero) and the zero 1x1 convs ``zc.skip<i>``, ``zc.mid``.

        Parameters
        ----------
        base_params : dict of str to array
            The base U-Net's parameters.
        rng : numpy.random.Generator
            Source of the hint encoder's initial weights.

        Returns
        -------
        dict of str to array
            The branch's parameters, in the namespace and dtype of the base ones.
        """
        check_adapter_args(base_params=base_params, rng=rng)  # issue 19
        xp = array_namespace(next(iter(base_params.values())))
        dtype = base_params["conv_in.w"].dtype
        P = {k: xp.asarray(base_params[k], copy=True) for k in self.copied_keys(base_params)}
        H, (w0, w1), C0 = {}, self.hint_widths, self.unet.config.widths[0]
        init_conv(H, "hint.conv0", self.hint_channels, w0, 3, rng)
        init_conv(H, "hint.conv1", w0, w1, 3, rng)
        init_conv(H, "hint.out", w1, C0, 3, rng, zero=True)
        for name in self.skip_names + ["mid"]:
            c = self.points[name][0]
            init_conv(H, f"zc.{name}", c, c, 1, rng, zero=True)
        P.update({k: xp.asarray(v, dtype=dtype) for k, v in H.items()})
        return P

    def forward(self, params, x, t, control, cond=None, scales=None):
        """Residuals ``{skip<i>: (N, C_i, S_i, S_i), mid: ...}`` times ``scales`` (K,), MATH.md
        (19.8), and the cache.

        Parameters
        ----------
        params : dict of str to array
            The branch's parameters (:meth:`init_params`).
        x : array, shape (N, C, S, S)
            The noisy inputs x_t.
        t : array or float
            The times, as for the base U-Net.
        control : array, shape (N, hint_channels, S, S)
            The control images, float in [0, 1].
        cond : dict, optional
            The U-Net's conditioning.
        scales : array_like, shape (K,), optional
            Per-residual scales; None (default): all 1.

        Returns
        -------
        residuals : dict of str to array
            ``{"skip<i>": ..., "mid": ...}``, each of its injection point's shape.
        cache : tuple
            For :meth:`backward`.

        Raises
        ------
        ValueError
            If the inputs, the control image or ``scales`` have the wrong shape, or a control
            value lies outside [0, 1].
        TypeError
            If the control image is not a float array.
        """
        check_adapter_args(params=params)  # issue 19
        u, c = self.unet, self.unet.config
        xp, t, cond = u._check_inputs(params, x, t, cond, (c.in_channels, c.image_size, c.image_size),
                                      "ControlNet.forward")
        check_control(control, x.shape[0], self.hint_channels, c.image_size, "ControlNet.forward")
        scales = np.ones(self.num_residuals) if scales is None else np.asarray(to_numpy(scales), dtype=np.float64)
        if scales.shape != (self.num_residuals,):
            raise ValueError(f"ControlNet.forward: scales must have shape ({self.num_residuals},), got {scales.shape}")
        e, ctx, c_emb = u._embed(params, t, cond)
        env = {"e": e, "context": ctx, "key_mask": u._key_mask(cond), "groups": c.groups, "heads": c.heads}
        g, c_h0 = conv_f(params, "hint.conv0", xp.astype(control, e.dtype))  # (N, w0, S, S)
        g, c_s0 = silu_forward(g)
        g, c_h1 = conv_f(params, "hint.conv1", g)
        g, c_s1 = silu_forward(g)
        g, c_ho = conv_f(params, "hint.out", g)  # (N, C_0, S, S), zero at init
        down, mid, _ = u._plan()
        h, res, caches, zcs = x, {}, [], []
        for j, (kind, name, _, _, push, _) in enumerate(down):
            h, cc = BLOCKS[kind].forward(params, name, h, env)
            caches.append(cc)
            h = h + g if j == 0 else h  # the encoded control enters after conv_in
            if push:
                k = f"skip{len(zcs)}"
                r, cz = conv_f(params, "zc." + k, h)
                res[k] = float(scales[len(zcs)]) * r
                zcs.append(cz)
        for kind, name, _, _, _, _ in mid:
            h, cc = BLOCKS[kind].forward(params, name, h, env)
            caches.append(cc)
        r, cz = conv_f(params, "zc.mid", h)
        res["mid"] = float(scales[-1]) * r
        zcs.append(cz)
        return res, (c_emb, caches, zcs, (c_h0, c_s0, c_h1, c_s1, c_ho), scales)

    def backward(self, params, cache, dres: dict) -> dict:
        """Gradients of ``sum_k <residual_k, dres_k>`` with respect to every parameter of
        the branch, MATH.md (19.10).  ``dres``: the base U-Net's gradients at its
        injection points (``UNet.backward_full``).

        Parameters
        ----------
        params : dict of str to array
            The branch's parameters.
        cache : tuple
            The cache of :meth:`forward`.
        dres : dict of str to array
            Gradients at the injection points, keyed like the residuals.

        Returns
        -------
        dict of str to array
            Gradients of every branch parameter (zeros for those not reached).
        """
        check_adapter_args(params=params, dres=dres)  # issue 19
        check_cache(cache, "ControlNet.forward", 5)
        c_emb, caches, zcs, (c_h0, c_s0, c_h1, c_s1, c_ho), scales = cache
        down, mid, _ = self.unet._plan()
        G, denv = {}, {}
        dh = conv_b(G, "zc.mid", float(scales[-1]) * dres["mid"], zcs[-1])
        for (kind, name, *_), cc in zip(reversed(mid), reversed(caches[len(down):])):
            dh = BLOCKS[kind].backward(G, params, name, dh, cc, denv)
        i = len(zcs) - 1
        for j in reversed(range(len(down))):
            kind, name, _, _, push, _ = down[j]
            if push:
                i -= 1
                dh = dh + conv_b(G, f"zc.skip{i}", float(scales[i]) * dres[f"skip{i}"], zcs[i])
            if j == 0:
                dg = dh
            dh = BLOCKS[kind].backward(G, params, name, dh, caches[j], denv)
        dg = conv_b(G, "hint.out", dg, c_ho)
        dg = conv_b(G, "hint.conv1", silu_backward(dg, c_s1), c_h1)
        conv_b(G, "hint.conv0", silu_backward(dg, c_s0), c_h0)
        self.unet._embed_backward(G, params, c_emb, denv)
        xp = array_namespace(dh)
        return {k: G[k] if k in G else xp.zeros_like(v) for k, v in params.items()}


# ------------------------------------------------------------------ the controlled U-Net
def controlled_forward(unet: UNet, base_params, branches, x, t, cond=None, extra=None):
    """The base U-Net with the residuals of every branch summed (multi-ControlNet),
    MATH.md (19.8).  ``branches``: list of ``(cnet, cparams, control, scales)``; ``extra``:
    further residuals (e.g. a T2I-Adapter's).  Returns ``(out, cache)``.

    Parameters
    ----------
    unet : UNet
        The base U-Net.
    base_params : dict of str to array
        Its (frozen) parameters.
    branches : list of tuple
        ``(cnet, cparams, control, scales)`` per ControlNet.
    x : array, shape (N, C, S, S)
        The noisy inputs.
    t : array or float
        The times.
    cond : dict, optional
        The conditioning.
    extra : dict of str to array, optional
        Further residuals added at the injection points.

    Returns
    -------
    out : array
        The base U-Net's output.
    cache : tuple
        For :func:`controlled_backward`.
    """
    check_adapter_args(unet=unet, base_params=base_params, branches=branches, extra=extra)  # issue 19
    residuals, caches = dict(extra or {}), []
    for cnet, P, control, scales in branches:
        r, c = cnet.forward(P, x, t, control, cond, scales)
        for k, v in r.items():
            residuals[k] = residuals[k] + v if k in residuals else v
        caches.append(c)
    out, cache = unet.forward(base_params, x, t, cond, residuals)
    return out, (cache, caches)


def controlled_backward(unet: UNet, base_params, branches, cache, dout):
    """``(branch grads (list), base grads, dx through the base)`` of ``sum(out * dout)``;
    the base grads are for inspection only (the base is frozen in training).

    Parameters
    ----------
    unet : UNet
        The base U-Net.
    base_params : dict of str to array
        Its parameters.
    branches : list of tuple
        The branches passed to :func:`controlled_forward`.
    cache : tuple
        The cache of :func:`controlled_forward`.
    dout : array
        Gradient with respect to the output.

    Returns
    -------
    branch_grads : list of dict
        Gradients of each branch's parameters.
    base_grads : dict
        Gradients of the base parameters.
    dx : array
        Gradient with respect to x through the base U-Net.
    """
    check_adapter_args(unet=unet, base_params=base_params, branches=branches)  # issue 19
    check_cache(cache, "controlled_forward", 2)
    base_cache, caches = cache
    base_grads, dx, dres = unet.backward_full(base_params, base_cache, dout)
    return [cnet.backward(P, c, dres) for (cnet, P, *_), c in zip(branches, caches)], base_grads, dx


def _step_index(t, timesteps):
    t0 = float(to_numpy(t).reshape(-1)[0]) if hasattr(t, "shape") else float(t)
    d = np.abs(np.asarray(timesteps, dtype=np.float64) - t0)
    i = int(np.argmin(d))
    if d[i] > 1e-9 * max(1.0, abs(t0)):
        raise ValueError(f"controlled model: t = {t0} is not on the timesteps grid it was built with")
    return i


def controlled_model(unet: UNet, base_params, controls, cond=None, *, conditioning_scale=1.0, guess_mode=False,
                     convention="diffusers", timesteps=None, start=0.0, end=1.0, guidance_scale=None):
    """``model(x, t)`` of the controlled U-Net (the library's model contract).

    ``controls``: list of ``(cnet, cparams, control image)`` (batch N or 1); their residuals
    are summed.  ``conditioning_scale``: one float or one per control; ``guess_mode`` and
    ``convention``: :func:`controlnet_scales`; ``timesteps`` (the sampler's grid, needed
    for ``start``/``end``): the scale at step i is multiplied by :func:`control_keep`.
    ``guidance_scale``: classifier-free guidance ``u + w (c - u)`` with the null ``cond`` on
    the unconditional half; the control acts on both halves, except in guess mode
    (diffusers), where the unconditional half gets no residuals.

    Parameters
    ----------
    unet : UNet
        The base U-Net.
    base_params : dict of str to array
        Its parameters.
    controls : list of tuple
        ``(cnet, cparams, control image)`` per ControlNet.
    cond : dict, optional
        The conditioning.
    conditioning_scale : float or sequence of float, default 1.0
        One scale for all controls or one per control.
    guess_mode : bool, default False
        Guess mode (:func:`controlnet_scales`; no residuals on the unconditional half).
    convention : {"diffusers", "original"}, default "diffusers"
        The guess-mode ramp.
    timesteps : sequence of float, optional
        The sampler's time grid; needed for ``start``/``end``.
    start : float, default 0.0
        ``control_guidance_start`` (:func:`control_keep`).
    end : float, default 1.0
        ``control_guidance_end``.
    guidance_scale : float, optional
        Classifier-free guidance weight w; None (default): no guidance.

    Returns
    -------
    callable
        ``model(x, t)``.

    Raises
    ------
    ValueError
        If the number of scales differs from the number of controls, or ``start``/``end``
        are given without ``timesteps``; the model raises ValueError for a t not on the grid.
    """
    check_adapter_args(unet=unet, base_params=base_params, controls=controls, guess_mode=guess_mode,  # issue 19
                       start=start, end=end, guidance_scale=guidance_scale, cond=cond, convention=convention,
                       conditioning_scale=conditioning_scale, timesteps=timesteps)
    scales_in = list(conditioning_scale) if np.ndim(conditioning_scale) else [conditioning_scale] * len(controls)
    if len(scales_in) != len(controls):
        raise ValueError(f"controlled_model: {len(controls)} controls but {len(scales_in)} conditioning scales")
    keep = None
    if timesteps is not None:
        keep = control_keep(len(timesteps), start, end)
    elif (start, end) != (0.0, 1.0):
        raise ValueError("controlled_model: control_guidance_start/end need the sampler's timesteps")

    def branches(x, t, k):
        xp, n = array_namespace(x), x.shape[0]
        out = []
        for (cnet, P, ctrl), s in zip(controls, scales_in):
            ctrl = xp.broadcast_to(ctrl, (n, *ctrl.shape[1:])) if ctrl.shape[0] == 1 else ctrl
            out.append((cnet, P, ctrl, k * controlnet_scales(cnet.num_residuals, s, guess_mode=guess_mode,
                                                            convention=convention)))
        return out

    def model(x, t):
        k = 1.0 if keep is None else float(keep[_step_index(t, timesteps)])
        out_c = controlled_forward(unet, base_params, branches(x, t, k), x, t, cond)[0]
        if guidance_scale is None:
            return out_c
        null = unet.null_cond(cond, x.shape[0], xp=array_namespace(x), dtype=x.dtype)
        bs = [] if guess_mode else branches(x, t, k)
        out_u = controlled_forward(unet, base_params, bs, x, t, null)[0]
        return out_u + guidance_scale * (out_c - out_u)

    return model
