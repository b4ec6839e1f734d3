"""What the MLP and the U-Net share: parameter creation, input checks, inference helpers.

A model object holds only its (immutable) config.  Parameters are a flat dict of arrays
passed to every call; ``forward`` returns a cache that the caller hands to ``backward``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from array_api_compat import device as _device

from .._validate import check_array, check_finite_scalar
from ..backend import array_namespace, check_rng
from ._check import check_cache, check_float_dtype, check_params, check_size, check_xp
from .conditions import ClassCond, CondSpec, as_cond
from .layers import embedding_backward, embedding_forward, timestep_embedding_forward

__all__ = ["DenoiserBase"]


class DenoiserBase:
    """Base of :class:`~refdiff.nn.MLP` and :class:`~refdiff.nn.UNet` (see there).

    Parameters
    ----------
    config : dataclass
        The network's configuration (e.g. :class:`~refdiff.nn.UNetConfig`), kept as
        ``self.config``.
    """

    arch = ""

    def __init__(self, config):
        if not dataclasses.is_dataclass(config) or isinstance(config, type) or not hasattr(config, "to_dict"):
            raise TypeError(f"config must be a network config instance (e.g. MLPConfig(...)), got {config!r:.80}")
        self.config = config

    @staticmethod
    def _check_config_type(config, cls):
        """``config`` if it is an instance of ``cls`` (the network's config class)."""
        if not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__} (or None for the defaults), got {config!r:.80}")
        return config

    def _check_backward(self, params, cache, n: int, dout):
        """The cheap checks of a backward pass: params a dict, cache the ``n``-tuple of
        ``forward``, dout a float array (its shape is checked by the first layer's backward)."""
        check_params(params, "params")
        check_cache(cache, f"{type(self).__name__}.forward", n)
        check_array("dout", dout)

    def __repr__(self):
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------------ parameters
    def _init_host(self, rng) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_params(self, rng, *, xp=None, dtype="float32") -> dict:
        """A fresh flat parameter dict.  Drawn on the host from the numpy Generator
        ``rng`` in float64 (so NumPy and CuPy runs from one seed agree), then cast to
        ``dtype`` ("float32" or "float64") and moved to namespace ``xp`` (default NumPy).

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the initial values.
        xp : namespace or None, optional
            Array namespace of the parameters; None (default) for NumPy.
        dtype : {"float32", "float64"}, optional
            Dtype of the parameters (default ``"float32"``).

        Returns
        -------
        dict
            Parameter name -> array.

        Raises
        ------
        ValueError
            If ``dtype`` is not ``"float32"`` or ``"float64"``.
        """
        rng = check_rng(rng)
        if not isinstance(dtype, str):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        xp = array_namespace() if xp is None else check_xp(xp)
        host = self._init_host(rng)
        dt = getattr(xp, dtype)
        return {k: xp.asarray(np.ascontiguousarray(v), dtype=dt) for k, v in host.items()}

    def num_params(self, params=None) -> int:
        """Number of scalar parameters (of ``params``, or of a fresh init).

        Parameters
        ----------
        params : dict or None, optional
            Parameter dict to count; None (default) counts a fresh initialisation.

        Returns
        -------
        int
            Total number of scalar entries.
        """
        if params is None:
            params = self._init_host(np.random.default_rng(0))
        check_params(params, "params")
        return int(sum(int(np.prod(v.shape)) for v in params.values()))

    def to_dict(self) -> dict:
        """The config as a plain dict (its ``to_dict``), with the ``"arch"`` key."""
        return self.config.to_dict()

    # ------------------------------------------------------------------ checks
    @property
    def cond_spec(self) -> CondSpec:
        """The condition kinds this network was built for (class labels when
        ``num_classes`` > 0)."""
        K = int(getattr(self.config, "num_classes", 0))
        return CondSpec([ClassCond(K)] if K else [])

    def _check_inputs(self, params, x, t, cond, feature_shape: tuple, what: str):
        """Validate x (N, *feature_shape), t (N,) and ``cond``; return (xp, t as a float
        array scaled by time_scale, the full cond dict with nulls for missing kinds).
        Cheap (issue 19): types, dtypes and shapes, no scan for NaN (a NaN in x or t
        propagates to the output)."""
        check_params(params, "params")
        if not params:
            raise ValueError(f"{what}: params is empty; build it with init_params(rng)")
        check_array("x", x)
        if x.ndim != 1 + len(feature_shape):
            raise ValueError(f"{what}: x must have shape (N, {', '.join(map(str, feature_shape))}); "
                             f"got rank {x.ndim} shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != tuple(feature_shape):
            raise ValueError(f"{what}: x has per-sample shape {tuple(x.shape[1:])}, the model expects "
                             f"{tuple(feature_shape)} (config {self.config})")
        xp = array_namespace(x)
        n = x.shape[0]
        if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
            t = xp.full((n,), check_finite_scalar("t", t), dtype=xp.float64, device=_device(x))
        check_array("t", t, dtype="real", allow_empty=True)
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"{what}: t must have shape ({n},) (one time per sample of x, shape "
                             f"{tuple(x.shape)}), got shape {tuple(t.shape)}")
        dtype = params[next(iter(params))].dtype
        t = xp.astype(t, dtype) * float(self.config.time_scale)
        return xp, t, self.cond_spec.validate(cond, n, xp, dtype, what)

    def null_cond(self, cond, n: int, kinds=None, *, xp=None, dtype="float32") -> dict:
        """``cond`` for a batch of ``n`` with ``kinds`` (default: every droppable kind)
        replaced by their null: the unconditional branch of CFG, MATH.md (12.7).

        Parameters
        ----------
        cond : mapping, array or None
            The condition (see :func:`refdiff.nn.conditions.as_cond`).
        n : int
            Batch size.
        kinds : str, sequence of str or None, optional
            Condition kinds to replace by their null; None (default) for every droppable kind.
        xp : namespace or None, optional
            Array namespace; None (default) for NumPy.
        dtype : str or dtype, optional
            Floating dtype of the condition arrays (default ``"float32"``).

        Returns
        -------
        dict
            The full condition dict, every kind present, the chosen kinds set to their null.

        Raises
        ------
        ValueError
            If a name in ``kinds`` is not a kind of this network, or ``cond`` does not validate.
        """
        n = check_size("n", n)
        xp = array_namespace() if xp is None else check_xp(xp)
        check_float_dtype(dtype)
        return self.cond_spec.null(cond, n, xp, getattr(xp, dtype) if isinstance(dtype, str) else dtype, kinds)

    # ------------------------------------------------------------------ embeddings
    def _embed_time(self, t, dim):
        return timestep_embedding_forward(t, dim, max_period=self.config.max_period, dtype=t.dtype)

    @staticmethod
    def _class_f(params, cond):
        y = cond.get("class")
        if y is None:
            return None, None
        return embedding_forward(y, params["class_emb"])

    @staticmethod
    def _class_b(grads, dout, cache):
        if cache is not None:
            grads["class_emb"] = embedding_backward(dout, cache)

    # ------------------------------------------------------------------ inference
    def forward(self, params, x, t, cond=None):  # pragma: no cover - abstract
        """The network output and the cache for ``backward``; defined by each subclass.

        Parameters
        ----------
        params : dict
            Parameter dict.
        x : array, shape (N, ...)
            Noisy inputs, of the network's per-sample shape.
        t : array of shape (N,) or float
            Times.
        cond : mapping, array or None, optional
            Condition (default None: every kind's null).

        Returns
        -------
        out : array, shape of ``x``
            The network output.
        cache : tuple
            Saved values for ``backward``.
        """
        raise NotImplementedError

    def apply(self, params, x, t, cond=None):
        """The model output for inference (the cache is dropped).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            Parameter dict.
        x : array, shape (N, ...)
            Noisy inputs, of the network's per-sample shape.
        t : array of shape (N,) or float
            Times.
        cond : mapping, array or None, optional
            Condition (default None: every kind's null).

        Returns
        -------
        array, shape of ``x``
            The network output.
        """
        return self.forward(params, x, t, cond)[0]

    def as_model(self, params, cond=None, *, y=None):
        """A plain callable ``model(x, t)`` (the library's model contract) with fixed
        parameters and condition ``cond`` bound (a mapping of condition kinds, see
        :mod:`refdiff.nn.conditions`; a plain label array is shorthand for
        ``{"class": y}``, and so is the keyword ``y``; None, or a missing kind: that
        kind's null).  It is validated against the batch at every call (``forward``).

        Parameters
        ----------
        params : dict
            Parameter dict bound into the callable.
        cond : mapping, array or None, optional
            Condition bound into the callable (default None: every kind's null).
        y : array of int or None, optional
            Class labels, shorthand for ``cond={"class": y}``.

        Returns
        -------
        callable
            ``model(x, t) -> output``.

        Raises
        ------
        TypeError
            If both ``cond`` and ``y`` are given, or ``cond`` is not a mapping, an array or None.
        """
        if y is not None:
            if cond is not None:
                raise TypeError("as_model: pass the condition as cond or as the class labels y, not both")
            cond = {"class": y}
        check_params(params, "params")
        c = as_cond(cond)

        def model(x, t):
            return self.apply(params, x, t, c)

        model.__doc__ = f"{type(self).__name__} denoiser with fixed parameters"
        return model


def config_fields(cls, d: dict, arch: str):
    """Build dataclass ``cls`` from dict ``d`` (an ``"arch"`` key, if present, must be
    ``arch``); unknown keys are a ValueError naming them."""
    d = dict(d)
    a = d.pop("arch", arch)
    if a != arch:
        raise ValueError(f"config has arch={a!r}, expected {arch!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(d) - names)
    if bad:
        raise ValueError(f"unknown {cls.__name__} keys {bad}; valid keys: {sorted(names)}")
    for k, v in d.items():
        if isinstance(v, list):
            d[k] = tuple(v)
    return cls(**d)
