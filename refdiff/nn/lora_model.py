"""LoRA on a whole network: target layers, several adapters with weights, merge/unmerge,
diffusers' fuse/unfuse and runtime scale, adapter-only checkpoints, MATH.md (19.4),
(19.5), (19.6), (19.7).

A network's parameters are a flat dict; its layers are the keys ``"<layer>.w"`` of rank 2
(linear, (d_in, d_out)) or 4 (conv, (F, C, k, k)).  An adapter targets the layers whose
name matches one of its fnmatch patterns (``"*.qkv"``, ``"mid.*"``, ``"*conv*"``) and holds
``"<layer>.lora_A"``, ``"<layer>.lora_B"`` (layouts: :mod:`refdiff.nn.lora`).

The model runs on ``lora_params(params, adapters, weights)`` = the effective weights (19.6);
nothing is stored on the network, so ``net.as_model(lora_params(...), cond)`` is an
adapted model and ``net.backward`` on those weights, followed by :func:`lora_grads`, gives
the adapters' gradients (19.5).  With B = 0 (init) the effective weights are the base
weights bit for bit (``w + 0.0 == w``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import warnings
from pathlib import Path

import numpy as np

from ..backend import array_namespace, to_numpy
from .._validate import check_choice, check_finite_scalar
from ._check import check_lora_dict, check_lora_model_args
from .lora import lora_delta, lora_delta_backward, lora_init_factors, lora_scaling

__all__ = ["LoRAConfig", "LoRAAdapter", "lora_target_layers", "lora_init", "lora_params", "lora_grads", "lora_merge",
           "lora_unmerge", "lora_fuse", "lora_unfuse", "scale_layer", "unscale_layer", "set_scale", "save_lora",
           "load_lora"]


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Rank ``r``, ``alpha`` (PEFT's ``lora_alpha``; None means alpha = r, scaling 1),
    fnmatch ``targets`` over layer names, ``rslora`` (alpha / sqrt(r)), ``init``
    ("kaiming" or "gaussian").

    Parameters
    ----------
    r : int, default 4
        The rank, >= 1.
    alpha : float, optional
        PEFT's ``lora_alpha``, > 0; None (default): alpha = r.
    targets : str or tuple of str, default ("*",)
        fnmatch patterns over layer names.
    rslora : bool, default False
        Scale by alpha / sqrt(r) instead of alpha / r.
    init : {"kaiming", "gaussian"}, default "kaiming"
        The initialisation of A.

    Raises
    ------
    ValueError
        If ``r`` or ``alpha`` is invalid (see :func:`refdiff.nn.lora.lora_scaling`).
    """

    r: int = 4
    alpha: float | None = None
    targets: tuple = ("*",)
    rslora: bool = False
    init: str = "kaiming"

    def __post_init__(self):
        check_lora_model_args(targets=self.targets)  # issue 19
        check_choice("init", self.init, ("kaiming", "gaussian"))
        object.__setattr__(self, "targets", (self.targets,) if isinstance(self.targets, str) else tuple(self.targets))
        lora_scaling(self.r if self.alpha is None else self.alpha, self.r, rslora=self.rslora)  # validates r, alpha

    @property
    def scaling(self) -> float:
        """``alpha / r`` (or ``alpha / sqrt(r)``), MATH.md (19.1)."""
        return lora_scaling(self.r if self.alpha is None else self.alpha, self.r, rslora=self.rslora)


@dataclasses.dataclass(frozen=True)
class LoRAAdapter:
    """An adapter: ``weights`` {"<layer>.lora_A" / ".lora_B": array}, its ``config`` and its
    current ``scaling`` (PEFT's per-layer ``scaling``; :func:`scale_layer` changes it).

    Parameters
    ----------
    weights : dict of str to array
        The factors ``"<layer>.lora_A"``, ``"<layer>.lora_B"``.
    config : LoRAConfig
        The adapter's configuration.
    scaling : float
        Its current scaling.
    """

    weights: dict
    config: LoRAConfig
    scaling: float

    def __post_init__(self):
        check_lora_dict(self.weights, "weights")  # issue 19
        check_lora_model_args(config=self.config)
        check_finite_scalar("scaling", self.scaling)

    @property
    def layers(self) -> list:
        return sorted(k[:-len(".lora_A")] for k in self.weights if k.endswith(".lora_A"))


def lora_target_layers(params: dict, targets) -> list:
    """Names of the linear/conv layers of ``params`` matched by ``targets`` (fnmatch
    patterns); a pattern that matches no layer is a ValueError listing the layers.

    Parameters
    ----------
    params : dict of str to array
        The network's parameters.
    targets : str or iterable of str
        fnmatch patterns over layer names.

    Returns
    -------
    list of str
        The matched layer names, sorted.

    Raises
    ------
    ValueError
        If a pattern matches no linear or conv layer.
    """
    check_lora_model_args(params=params, targets=targets)  # issue 19
    layers = sorted(k[:-2] for k, v in params.items() if k.endswith(".w") and v.ndim in (2, 4))
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    chosen = set()
    for pat in targets:
        hit = [n for n in layers if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise ValueError(f"targets: LoRA target pattern {pat!r} matches no linear or conv layer; layers: {layers}")
        chosen |= set(hit)
    return sorted(chosen)


def lora_init(params: dict, config: LoRAConfig, rng) -> LoRAAdapter:
    """A fresh adapter for ``params`` (A by ``config.init``, B = 0), in the dtype and
    namespace of ``params``; drawn on the host in float64 in sorted layer order.

    Parameters
    ----------
    params : dict of str to array
        The network's parameters.
    config : LoRAConfig
        Rank, alpha, targets and initialisation.
    rng : numpy.random.Generator
        Source of the A factors.

    Returns
    -------
    LoRAAdapter
        The adapter, with scaling ``config.scaling``.

    Raises
    ------
    ValueError
        If a target pattern matches no layer or the rank is out of range for a layer.
    """
    check_lora_model_args(params=params, config=config, rng=rng)  # issue 19
    xp = array_namespace(next(iter(params.values())))
    out = {}
    for name in lora_target_layers(params, config.targets):
        w = params[name + ".w"]
        A, B = lora_init_factors(tuple(w.shape), config.r, rng, init=config.init)
        out[name + ".lora_A"] = xp.asarray(A, dtype=w.dtype)
        out[name + ".lora_B"] = xp.asarray(B, dtype=w.dtype)
    return LoRAAdapter(out, config, config.scaling)


def _pairs(adapters, weights):
    adapters = [adapters] if isinstance(adapters, LoRAAdapter) else list(adapters)
    weights = [1.0] * len(adapters) if weights is None else list(weights)
    if len(weights) != len(adapters):
        raise ValueError(f"lora: {len(adapters)} adapters but {len(weights)} adapter weights")
    return list(zip(adapters, weights))


def lora_params(params: dict, adapters, weights=None) -> dict:
    """Effective weights ``W + sum_k weight_k s_k dW_k`` (diffusers' ``set_adapters(names,
    adapter_weights)``; ``weights`` default 1), MATH.md (19.6); other keys unchanged.

    Parameters
    ----------
    params : dict of str to array
        The base parameters.
    adapters : LoRAAdapter or sequence of LoRAAdapter
        The adapters.
    weights : sequence of float, optional
        One weight per adapter; None (default): all 1.

    Returns
    -------
    dict of str to array
        The effective parameters (a new dict).

    Raises
    ------
    ValueError
        If the number of weights differs from the number of adapters, or an adapter's
        layer is missing from ``params`` or has another shape.
    """
    check_lora_model_args(params=params, adapters=adapters, weights=weights)  # issue 19
    out = dict(params)
    for ad, wt in _pairs(adapters, weights):
        for name in ad.layers:
            key = name + ".w"
            if key not in params or tuple(params[key].shape) != _base_shape(ad, name):
                raise ValueError(f"lora: adapter layer {name!r} (base weight shape {_base_shape(ad, name)}) is not in "
                                 f"this model (shape {tuple(params[key].shape) if key in params else 'missing'})")
            out[key] = out[key] + lora_delta(ad.weights[name + ".lora_A"], ad.weights[name + ".lora_B"],
                                             wt * ad.scaling)
    return out


def _base_shape(ad, name):
    A, B = ad.weights[name + ".lora_A"], ad.weights[name + ".lora_B"]
    return (B.shape[0], *A.shape[1:]) if A.ndim == 4 else (A.shape[1], B.shape[0])


def lora_grads(grads: dict, adapter: LoRAAdapter, weight: float = 1.0) -> dict:
    """Gradients of the adapter's factors from the gradients of the effective weights,
    MATH.md (19.5) (the model's backward run on :func:`lora_params`).

    Parameters
    ----------
    grads : dict of str to array
        Gradients with respect to the effective parameters.
    adapter : LoRAAdapter
        The adapter.
    weight : float, default 1.0
        The adapter's weight in :func:`lora_params`.

    Returns
    -------
    dict of str to array
        Gradients of ``"<layer>.lora_A"`` and ``"<layer>.lora_B"``.
    """
    check_lora_model_args(grads=grads, adapter=adapter, weight=weight)  # issue 19
    out = {}
    for name in adapter.layers:
        A, B = adapter.weights[name + ".lora_A"], adapter.weights[name + ".lora_B"]
        out[name + ".lora_A"], out[name + ".lora_B"] = lora_delta_backward(grads[name + ".w"], A, B,
                                                                           weight * adapter.scaling)
    return out


# ------------------------------------------------------------------ merge, fuse, runtime scale
def lora_merge(params: dict, adapter: LoRAAdapter, weight: float = 1.0) -> dict:
    """PEFT's ``merge``: ``W <- W + weight s dW`` for the adapter's layers, MATH.md (19.7).

    Parameters
    ----------
    params : dict of str to array
        The base parameters.
    adapter : LoRAAdapter
        The adapter.
    weight : float, default 1.0
        The merge weight.

    Returns
    -------
    dict of str to array
        The merged parameters.

    Raises
    ------
    ValueError
        If an adapter layer does not fit ``params``.
    """
    check_lora_model_args(params=params, adapter=adapter, weight=weight)  # issue 19
    return lora_params(params, [adapter], [weight])


def lora_unmerge(params: dict, adapter: LoRAAdapter, weight: float = 1.0) -> dict:
    """PEFT's ``unmerge``: ``W <- W - weight s dW`` (s: the adapter's current scaling), MATH.md (19.7).

    Parameters
    ----------
    params : dict of str to array
        The merged parameters.
    adapter : LoRAAdapter
        The adapter.
    weight : float, default 1.0
        The weight it was merged with.

    Returns
    -------
    dict of str to array
        The unmerged parameters.

    Raises
    ------
    ValueError
        If an adapter layer does not fit ``params``.
    """
    check_lora_model_args(params=params, adapter=adapter, weight=weight)  # issue 19
    return lora_params(params, [adapter], [-weight])


def scale_layer(adapter: LoRAAdapter, scale: float) -> LoRAAdapter:
    """PEFT's ``scale_layer``: ``scaling *= scale`` (diffusers' runtime ``scale``).

    Parameters
    ----------
    adapter : LoRAAdapter
        The adapter.
    scale : float
        The factor.

    Returns
    -------
    LoRAAdapter
        A copy with the scaling multiplied by ``scale``.
    """
    check_lora_model_args(adapter=adapter, weight=1.0)  # issue 19
    check_finite_scalar("scale", scale)
    return dataclasses.replace(adapter, scaling=adapter.scaling * float(scale))


def unscale_layer(adapter: LoRAAdapter, scale: float | None = None) -> LoRAAdapter:
    """PEFT's ``unscale_layer``: None or 0 resets ``scaling`` to alpha / r (multiplying by
    0 cannot be undone by a division); else ``scaling /= scale``.

    Parameters
    ----------
    adapter : LoRAAdapter
        The adapter.
    scale : float, optional
        The factor to divide by; None (default) or 0: reset to the config's scaling.

    Returns
    -------
    LoRAAdapter
        A copy with the new scaling.
    """
    check_lora_model_args(adapter=adapter, scale=scale)  # issue 19
    if scale is None or scale == 0:
        return dataclasses.replace(adapter, scaling=adapter.config.scaling)
    return dataclasses.replace(adapter, scaling=adapter.scaling / float(scale))


def set_scale(adapter: LoRAAdapter, scale: float) -> LoRAAdapter:
    """PEFT's ``set_scale``: ``scaling = scale * alpha / r``.

    Parameters
    ----------
    adapter : LoRAAdapter
        The adapter.
    scale : float
        The factor applied to the config's scaling.

    Returns
    -------
    LoRAAdapter
        A copy with scaling ``scale * config.scaling``.
    """
    check_lora_model_args(adapter=adapter, weight=1.0)  # issue 19
    check_finite_scalar("scale", scale)
    return dataclasses.replace(adapter, scaling=float(scale) * adapter.config.scaling)


def lora_fuse(params: dict, adapter: LoRAAdapter, lora_scale: float = 1.0, *, safe: bool = False):
    """diffusers' ``fuse_lora(lora_scale)``: ``scale_layer(lora_scale)`` then merge, MATH.md
    (19.7).  Returns ``(fused params, adapter with scaling * lora_scale)``: the product
    stays, so :func:`lora_unfuse` subtracts what was added.  ``safe``: refuse a
    non-finite fused weight (diffusers' ``safe_fusing``).

    Parameters
    ----------
    params : dict of str to array
        The base parameters.
    adapter : LoRAAdapter
        The adapter.
    lora_scale : float, default 1.0
        The runtime scale multiplied into the adapter's scaling.
    safe : bool, default False
        Raise instead of returning non-finite fused weights.

    Returns
    -------
    params : dict of str to array
        The fused parameters.
    adapter : LoRAAdapter
        The adapter with scaling ``scaling * lora_scale``.

    Raises
    ------
    ValueError
        If ``safe`` and a fused weight is non-finite, or an adapter layer does not fit.
    """
    check_lora_model_args(params=params, adapter=adapter, lora_scale=lora_scale, safe=safe)  # issue 19
    ad = scale_layer(adapter, lora_scale)
    out = lora_merge(params, ad)
    if safe:
        for name in ad.layers:
            if not bool(np.all(np.isfinite(to_numpy(out[name + ".w"])))):
                raise ValueError(f"lora_fuse: fusing gives non-finite weights in layer {name!r}; not fused")
    return out, ad


def lora_unfuse(params: dict, adapter: LoRAAdapter) -> dict:
    """diffusers' ``unfuse_lora``: unmerge with the adapter's current scaling, MATH.md (19.7).

    Parameters
    ----------
    params : dict of str to array
        The fused parameters.
    adapter : LoRAAdapter
        The adapter returned by :func:`lora_fuse`.

    Returns
    -------
    dict of str to array
        The parameters with the adapter's increment subtracted.
    """
    check_lora_model_args(params=params, adapter=adapter)  # issue 19
    return lora_unmerge(params, adapter)


# ------------------------------------------------------------------ adapter-only checkpoints
def save_lora(path, adapter: LoRAAdapter, *, base_config: dict | None = None) -> Path:
    """Write the adapter alone to ``path`` (.npz): its arrays, and ``meta`` (JSON) with r,
    alpha (always stored: a lost alpha silently rescales the update), rslora, targets,
    the base weight shapes and the base model's config.

    Parameters
    ----------
    path : str or path-like
        The .npz file to write.
    adapter : LoRAAdapter
        The adapter.
    base_config : dict, optional
        The base model's config, stored in ``meta``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    check_lora_model_args(path=path, adapter=adapter, base_config=base_config)  # issue 19
    path = Path(path)
    alpha = adapter.config.r if adapter.config.alpha is None else adapter.config.alpha
    meta = {"format": "refdiff-lora", "r": adapter.config.r, "alpha": alpha, "rslora": adapter.config.rslora,
            "targets": list(adapter.config.targets), "init": adapter.config.init,
            "layers": {n: list(_base_shape(adapter, n)) for n in adapter.layers}, "base": base_config}
    arrays = {k: np.asarray(to_numpy(v)) for k, v in adapter.weights.items()}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_lora(path, params: dict, *, base_config: dict | None = None, alpha: float | None = None,
              xp=None) -> LoRAAdapter:
    """Read an adapter written by :func:`save_lora` (or any npz of ``<layer>.lora_A/B``
    arrays) and check it fits ``params`` (and ``base_config``, if both are known).

    alpha: the stored one; else the ``alpha`` argument; else **alpha = r is assumed**
    (scaling 1, what diffusers and PEFT assume for checkpoints without alpha), with a
    warning, since a LoRA trained with another alpha then runs at the wrong scale.

    Parameters
    ----------
    path : str or path-like
        The .npz file.
    params : dict of str to array
        The base parameters the adapter must fit (their namespace and dtype are used).
    base_config : dict, optional
        If given and the file stores one, they must be equal.
    alpha : float, optional
        The alpha to use when the file stores none.
    xp : namespace, optional
        Array namespace of the loaded arrays; None (default): that of ``params``.

    Returns
    -------
    LoRAAdapter
        The adapter.

    Raises
    ------
    ValueError
        If the layers have different ranks, the base configs differ, or a layer does not fit
        ``params``.

    Warns
    -----
    UserWarning
        When neither the file nor the call gives alpha (alpha = r is assumed).
    """
    check_lora_model_args(path=path, params=params, base_config=base_config, alpha=alpha, xp=xp)  # issue 19
    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        arrays = {k: z[k] for k in z.files if k != "meta"}
    ranks = {v.shape[0] for k, v in arrays.items() if k.endswith(".lora_A")}
    if len(ranks) != 1:
        raise ValueError(f"load_lora: {path}: need one rank across layers, found ranks {sorted(ranks)}")
    r = ranks.pop()
    if base_config is not None and meta.get("base") not in (None, base_config):
        raise ValueError(f"load_lora: {path} was trained on a model with config {meta['base']}, not {base_config}")
    if meta.get("alpha") is not None:
        a = meta["alpha"]
    elif alpha is not None:
        a = alpha
    else:
        warnings.warn(f"load_lora: {path} stores no alpha; assuming alpha = r = {r} (scaling 1)", stacklevel=2)
        a = r
    cfg = LoRAConfig(r=r, alpha=a, targets=tuple(meta.get("targets", ("*",))), rslora=bool(meta.get("rslora", False)))
    xp = array_namespace(next(iter(params.values()))) if xp is None else xp
    dtype = next(iter(params.values())).dtype
    ad = LoRAAdapter({k: xp.asarray(v, dtype=dtype) for k, v in arrays.items()}, cfg, cfg.scaling)
    for name in ad.layers:
        key = name + ".w"
        if key not in params or tuple(params[key].shape) != _base_shape(ad, name):
            have = tuple(params[key].shape) if key in params else "no such layer"
            raise ValueError(f"load_lora: {path} adapts layer {name!r} with base weight shape {_base_shape(ad, name)}; "
                             f"this model has {have}: the adapter is for another architecture")
    return ad
