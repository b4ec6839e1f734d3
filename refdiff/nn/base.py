"""What the MLP and the U-Net share: parameter creation, input checks, inference helpers.

A model object holds only its (immutable) config.  Parameters are a flat dict of arrays
passed to every call; ``forward`` returns a cache that the caller hands to ``backward``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import array_namespace, check_rng
from .layers import embedding_backward, embedding_forward, timestep_embedding_forward

__all__ = ["DenoiserBase"]


class DenoiserBase:
    """Base of :class:`~refdiff.nn.MLP` and :class:`~refdiff.nn.UNet` (see there)."""

    arch = ""

    def __init__(self, config):
        self.config = config

    def __repr__(self):
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------------ parameters
    def _init_host(self, rng) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_params(self, rng, *, xp=None, dtype="float32") -> dict:
        """A fresh flat parameter dict.  Drawn on the host from the numpy Generator
        ``rng`` in float64 (so NumPy and CuPy runs from one seed agree), then cast to
        ``dtype`` ("float32" or "float64") and moved to namespace ``xp`` (default NumPy)."""
        rng = check_rng(rng)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        xp = array_namespace() if xp is None else xp
        host = self._init_host(rng)
        dt = getattr(xp, dtype)
        return {k: xp.asarray(np.ascontiguousarray(v), dtype=dt) for k, v in host.items()}

    def num_params(self, params=None) -> int:
        """Number of scalar parameters (of ``params``, or of a fresh init)."""
        if params is None:
            params = self._init_host(np.random.default_rng(0))
        return int(sum(int(np.prod(v.shape)) for v in params.values()))

    def to_dict(self) -> dict:
        return self.config.to_dict()

    # ------------------------------------------------------------------ checks
    def _check_xty(self, params, x, t, y, feature_shape: tuple, what: str):
        """Validate x (N, *feature_shape), t (N,), y; return (xp, t as float array, y)."""
        if x.ndim != 1 + len(feature_shape):
            raise ValueError(f"{what}: x must have shape (N, {', '.join(map(str, feature_shape))}); "
                             f"got rank {x.ndim} shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != tuple(feature_shape):
            raise ValueError(f"{what}: x has per-sample shape {tuple(x.shape[1:])}, the model expects "
                             f"{tuple(feature_shape)} (config {self.config})")
        xp = array_namespace(x)
        n = x.shape[0]
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            t = xp.full((n,), float(t), dtype=xp.float64)
        if getattr(t, "ndim", None) != 1 or t.shape[0] != n:
            raise ValueError(f"{what}: t must have shape ({n},), got {tuple(getattr(t, 'shape', ()))}")
        dtype = params[next(iter(params))].dtype
        t = xp.astype(t, dtype) * float(self.config.time_scale)
        K = self.config.num_classes
        if y is not None:
            if K == 0:
                raise ValueError(f"{what}: labels y were given to an unconditional model (num_classes=0)")
            if getattr(y, "ndim", None) != 1 or y.shape[0] != n:
                raise ValueError(f"{what}: y must have shape ({n},), got {tuple(getattr(y, 'shape', ()))}")
            if not xp.isdtype(y.dtype, "integral"):
                raise TypeError(f"{what}: y must be integer class labels, got dtype {y.dtype}")
            lo, hi = int(xp.min(y)), int(xp.max(y))
            if lo < 0 or hi > K:
                raise ValueError(f"{what}: labels y must lie in [0, {K}] ({K} = the null class), "
                                 f"got values in [{lo}, {hi}]")
        elif K > 0:
            y = xp.full((n,), K, dtype=xp.int64)  # null class: the unconditional prediction
        return xp, t, y

    # ------------------------------------------------------------------ embeddings
    def _embed_time(self, t, dim):
        return timestep_embedding_forward(t, dim, max_period=self.config.max_period, dtype=t.dtype)

    @staticmethod
    def _class_f(params, y):
        if y is None:
            return None, None
        return embedding_forward(y, params["class_emb"])

    @staticmethod
    def _class_b(grads, dout, cache):
        if cache is not None:
            grads["class_emb"] = embedding_backward(dout, cache)

    # ------------------------------------------------------------------ inference
    def forward(self, params, x, t, y=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, params, x, t, y=None):
        """The model output for inference (the cache is dropped)."""
        return self.forward(params, x, t, y)[0]

    def as_model(self, params, y=None):
        """A plain callable ``model(x, t)`` (the library's model contract) with fixed
        parameters and labels ``y`` (None: the null class for a conditional model)."""

        def model(x, t):
            return self.apply(params, x, t, y)

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
