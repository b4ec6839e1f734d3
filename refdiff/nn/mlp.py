"""An MLP denoiser for 2-D (or D-dimensional) toy data, with time and optional class
conditioning.  MATH.md (13.18).

Architecture (E = time_embed_dim, H = hidden)::

    s   = sinusoid(t * time_scale)               (N, E)      (13.12)
    e   = silu(s W_t + b_t [+ C[y]])             (N, H)      class table C has num_classes+1 rows
    h_0 = x W_in + b_in                          (N, H)
    h_l = silu(h_{l-1} W_l + b_l + e V_l + c_l)  l = 1..layers
    out = h_L W_out + b_out                      (N, D)      (W_out = 0 at init)
"""

from __future__ import annotations

import dataclasses

from ._check import check_config
from .base import DenoiserBase, config_fields
from .blocks import init_linear, lin_b, lin_f
from .layers import silu_backward, silu_forward

__all__ = ["MLPConfig", "MLP"]


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Configuration of :class:`MLP`.

    dim: data dimension D.  hidden: width H.  layers: number of conditioned hidden layers.
    time_embed_dim: sinusoid size E.  num_classes: 0 for an unconditional model, else K
    classes plus the null class K (classifier-free guidance).  time_scale: t is multiplied
    by it before the sinusoid (use ~1000 for continuous t in [0, 1]).  max_period: of the
    sinusoid.  zero_init_out: start with a zero output layer.

    Parameters
    ----------
    dim : int, optional
        Data dimension D, at least 1 (default 2).
    hidden : int, optional
        Hidden width H, at least 1 (default 128).
    layers : int, optional
        Number of conditioned hidden layers, at least 1 (default 3).
    time_embed_dim : int, optional
        Sinusoid size E, at least 2 (default 64).
    num_classes : int, optional
        Number of classes K, 0 (default) for an unconditional model.
    time_scale : float, optional
        Factor applied to t before the sinusoid (default 1).
    max_period : float, optional
        Longest period of the sinusoid (default 10000).
    zero_init_out : bool, optional
        Initialise the output layer to zero (default True).

    Raises
    ------
    ValueError
        If a size is below its minimum or ``num_classes`` is negative.
    """

    dim: int = 2
    hidden: int = 128
    layers: int = 3
    time_embed_dim: int = 64
    num_classes: int = 0
    time_scale: float = 1.0
    max_period: float = 10000.0
    zero_init_out: bool = True

    def __post_init__(self):
        check_config("MLPConfig", self, ints={"dim": 1, "hidden": 1, "layers": 1, "time_embed_dim": 2, "num_classes": 0},
                     floats={"time_scale": (0.0, True), "max_period": (0.0, True)}, bools=("zero_init_out",))

    def to_dict(self) -> dict:
        """The fields as a plain dict, with ``"arch": "mlp"``."""
        return {"arch": "mlp", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        return config_fields(cls, d, "mlp")


class MLP(DenoiserBase):
    """MLP denoiser ``(x (N, D), t (N,), cond) -> (N, D)``, MATH.md (13.18).

    ``forward(params, x, t, cond=None) -> (out, cache)``; ``backward(params, cache, dout) ->
    (grads, dx)``.  ``cond``: a condition mapping (:mod:`refdiff.nn.conditions`; this model
    takes ``{"class": y}`` when ``num_classes`` > 0) or a label array ``y`` as shorthand;
    None (or no "class") on a conditional model means the null class.

    Parameters
    ----------
    config : MLPConfig or None, optional
        The configuration; None (default) for ``MLPConfig()``.
    """

    arch = "mlp"

    def __init__(self, config: MLPConfig | None = None):
        super().__init__(MLPConfig() if config is None else self._check_config_type(config, MLPConfig))

    def _init_host(self, rng):
        c, P = self.config, {}
        init_linear(P, "temb", c.time_embed_dim, c.hidden, rng)
        if c.num_classes:
            P["class_emb"] = rng.standard_normal((c.num_classes + 1, c.hidden))
        init_linear(P, "in", c.dim, c.hidden, rng)
        for l in range(c.layers):
            init_linear(P, f"layer{l}", c.hidden, c.hidden, rng)
            init_linear(P, f"layer{l}.emb", c.hidden, c.hidden, rng)
        init_linear(P, "out", c.hidden, c.dim, rng, zero=c.zero_init_out)
        return P

    def forward(self, params, x, t, cond=None):
        """Output and cache, MATH.md (13.18).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            Parameter dict (:meth:`~refdiff.nn.base.DenoiserBase.init_params`).
        x : array, shape (N, D)
            Noisy inputs.
        t : array of shape (N,) or float
            Times (multiplied by ``time_scale``).
        cond : mapping, array or None, optional
            Condition: ``{"class": y}`` with y (N,) in [0, K], a label array, or None (default:
            the null class on a conditional model).

        Returns
        -------
        out : array, shape (N, D)
            The network output.
        cache : tuple
            Saved values for :meth:`backward`.

        Raises
        ------
        ValueError
            If ``x`` is not (N, D), ``t`` is not (N,), or ``cond`` does not validate.
        """
        c = self.config
        xp, t, cond = self._check_inputs(params, x, t, cond, (c.dim,), "MLP.forward")
        s, _ = self._embed_time(t, c.time_embed_dim)
        e, c_t = lin_f(params, "temb", s)
        ce, c_y = self._class_f(params, cond)
        if ce is not None:
            e = e + ce
        e, c_se = silu_forward(e)
        h, c_in = lin_f(params, "in", x)
        layers = []
        for l in range(c.layers):
            z, c_l = lin_f(params, f"layer{l}", h)
            ze, c_le = lin_f(params, f"layer{l}.emb", e)
            h, c_s = silu_forward(z + ze)
            layers.append((c_l, c_le, c_s))
        out, c_out = lin_f(params, "out", h)
        return out, (c_t, c_y, c_se, c_in, layers, c_out)

    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)``: ``(grads, dx)``, MATH.md (13.18).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            The parameter dict of the forward pass.
        cache : tuple
            The cache returned by :meth:`forward`.
        dout : array, shape (N, D)
            Gradient with respect to the output.

        Returns
        -------
        grads : dict
            Gradient of every parameter, keyed as ``params``.
        dx : array, shape (N, D)
            Gradient with respect to ``x``.
        """
        self._check_backward(params, cache, 6, dout)
        c_t, c_y, c_se, c_in, layers, c_out = cache
        G: dict = {}
        dh = lin_b(G, "out", dout, c_out)
        de = None
        for l in reversed(range(self.config.layers)):
            c_l, c_le, c_s = layers[l]
            dz = silu_backward(dh, c_s)
            de_l = lin_b(G, f"layer{l}.emb", dz, c_le)
            de = de_l if de is None else de + de_l
            dh = lin_b(G, f"layer{l}", dz, c_l)
        dx = lin_b(G, "in", dh, c_in)
        de = silu_backward(de, c_se)
        self._class_b(G, de, c_y)
        lin_b(G, "temb", de, c_t)
        return {k: G[k] for k in params}, dx
