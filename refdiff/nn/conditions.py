"""Conditions: one mapping ``cond`` whose keys name their kind, MATH.md (12.7), (12.8).

A network is built for a set of condition kinds (its :class:`CondSpec`).  Each kind owns
one or two keys of ``cond``, validates them (clear errors naming the key, the bad value and
the valid range) and defines its *null*, the value that means "no condition" and that
condition dropout (training) and classifier-free guidance (sampling) substitute:

============= ======================================== ==================================
kind           keys and shapes                          null
============= ======================================== ==================================
"class"        ``class`` (N,) int in [0, K]             the null class K
"tokens"       ``tokens`` (N, L) int in [0, V);         the empty prompt: token 0 (the
               ``token_mask`` (N, L) bool, True =       start token, id 0 is reserved
               a real token (key-padding mask;          for it) at position 0, every
               default all True)                        other position masked out
"control"      ``control`` (N, C_c, S, S) float         zeros (the dropped control)
"inpaint"      ``mask`` (N, 1, S, S) float in [0, 1]    mask 1 everywhere (all to be
               (1 = to generate); ``masked_image``      generated), masked image 0
               (N, C, S, S) float
"adapter"      ``adapter_scale`` float or (N,) >= 0     0 (the adapter switched off)
============= ======================================== ==================================

A kind missing from ``cond`` takes its null, so ``cond=None`` is the unconditional model.
A plain integer array is accepted wherever ``cond`` is, as shorthand for ``{"class": y}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..backend import array_namespace, check_rng

__all__ = ["CondKind", "ClassCond", "TokenCond", "ControlCond", "InpaintCond", "AdapterCond", "CondSpec",
           "as_cond"]


def as_cond(cond) -> dict:
    """``cond`` as a dict: None -> {}, a mapping -> a dict copy, an array -> {"class": it}."""
    if cond is None:
        return {}
    if isinstance(cond, Mapping):
        return {k: v for k, v in cond.items() if v is not None}  # a key set to None: that part absent
    if hasattr(cond, "shape") and hasattr(cond, "dtype"):
        return {"class": cond}
    raise TypeError(f"cond must be a mapping {{kind key: array}}, an integer class-label array or None, "
                    f"got {type(cond).__name__}")


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def _int_range(xp, a, lo, hi, key, what):
    """TypeError unless ``a`` is integral; ValueError unless its values lie in [lo, hi]."""
    if not xp.isdtype(a.dtype, "integral"):
        raise TypeError(f"{what}: cond[{key!r}] must be an integer array, got dtype {a.dtype}")
    if math.prod(a.shape):
        v_lo, v_hi = int(xp.min(a)), int(xp.max(a))
        if v_lo < lo or v_hi > hi:
            raise ValueError(f"{what}: cond[{key!r}] contains {v_lo if v_lo < lo else v_hi}, out of range [{lo}, {hi}]")


def _float_image(xp, a, key, shape, what):
    if _shape(a) != shape:
        raise ValueError(f"{what}: cond[{key!r}] must have shape (N, C, H, W) = {shape}, got {_shape(a)}")
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(f"{what}: cond[{key!r}] must be a float array, got dtype {a.dtype}")


class CondKind:
    """One kind of condition: ``keys`` (the first names the kind), ``check`` and ``null``;
    ``droppable`` kinds are dropped by default in condition dropout."""

    name = ""
    keys: tuple = ()
    droppable = True

    def check(self, c: dict, n: int, xp, what: str) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def null(self, n: int, xp, dtype) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def where(self, drop, c: dict, null: dict, xp) -> dict:
        """Per sample, the null where ``drop`` (N,) is True, else ``c``."""
        out = {}
        for k in self.keys:
            d = xp.reshape(drop, (drop.shape[0],) + (1,) * (c[k].ndim - 1))
            out[k] = xp.where(d, null[k], c[k])
        return out


class ClassCond(CondKind):
    """Class labels (N,) in [0, K]; K is the null class."""

    name, keys = "class", ("class",)

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)

    def check(self, c, n, xp, what):
        y = c["class"]
        if _shape(y) != (n,):
            raise ValueError(f"{what}: cond['class'] must have shape ({n},), got {_shape(y)}")
        _int_range(xp, y, 0, self.num_classes, "class", f"{what} (num_classes = {self.num_classes}; "
                   f"{self.num_classes} is the null class)")
        return {"class": y}

    def null(self, n, xp, dtype):
        return {"class": xp.full((n,), self.num_classes, dtype=xp.int64)}


class TokenCond(CondKind):
    """Token ids (N, L) in [0, vocab_size) with a key-padding mask (N, L)."""

    name, keys = "tokens", ("tokens", "token_mask")

    def __init__(self, vocab_size: int, max_len: int):
        self.vocab_size, self.max_len = int(vocab_size), int(max_len)

    def check(self, c, n, xp, what):
        ids = c["tokens"]
        if len(_shape(ids)) != 2 or ids.shape[0] != n or not 1 <= ids.shape[1] <= self.max_len:
            raise ValueError(f"{what}: cond['tokens'] must have shape (N, L) = ({n}, L) with 1 <= L <= "
                             f"{self.max_len}, got {_shape(ids)}")
        _int_range(xp, ids, 0, self.vocab_size - 1, "tokens", f"{what} (vocab_size = {self.vocab_size})")
        mask = c.get("token_mask")
        if mask is None:
            mask = xp.ones(ids.shape, dtype=xp.bool)
        if _shape(mask) != _shape(ids):
            raise ValueError(f"{what}: cond['token_mask'] must have the shape of cond['tokens'] {_shape(ids)}, "
                             f"got {_shape(mask)}")
        if mask.dtype != xp.bool:
            raise TypeError(f"{what}: cond['token_mask'] must be boolean (True = a real token), got dtype {mask.dtype}")
        if not bool(xp.all(xp.any(mask, axis=1))):
            raise ValueError(f"{what}: cond['token_mask'] masks out every token of some sample; keep at least "
                             "one (the empty prompt keeps its start token 0)")
        return {"tokens": ids, "token_mask": mask}

    def null(self, n, xp, dtype):
        mask = np.zeros((n, self.max_len), dtype=bool)
        mask[:, 0] = True
        return {"tokens": xp.zeros((n, self.max_len), dtype=xp.int64), "token_mask": xp.asarray(mask)}

    def where(self, drop, c, null, xp):
        L = c["tokens"].shape[1]  # the empty prompt cut to the prompt length
        return super().where(drop, c, {k: v[:, :L] for k, v in null.items()}, xp)


class ControlCond(CondKind):
    """A spatial control image (N, channels, size, size)."""

    name, keys = "control", ("control",)

    def __init__(self, channels: int, size: int):
        self.channels, self.size = int(channels), int(size)

    def check(self, c, n, xp, what):
        _float_image(xp, c["control"], "control", (n, self.channels, self.size, self.size), what)
        return {"control": c["control"]}

    def null(self, n, xp, dtype):
        return {"control": xp.zeros((n, self.channels, self.size, self.size), dtype=dtype)}


class InpaintCond(CondKind):
    """A mask (N, 1, S, S), 1 = to generate, and the masked image (N, C, S, S)."""

    name, keys, droppable = "inpaint", ("mask", "masked_image"), False

    def __init__(self, channels: int, size: int):
        self.channels, self.size = int(channels), int(size)

    def check(self, c, n, xp, what):
        if "masked_image" not in c or "mask" not in c:
            raise ValueError(f"{what}: the inpaint condition needs both cond['mask'] and cond['masked_image']")
        m = c["mask"]
        _float_image(xp, m, "mask", (n, 1, self.size, self.size), what)
        if math.prod(m.shape) and not (float(xp.min(m)) >= 0.0 and float(xp.max(m)) <= 1.0):
            raise ValueError(f"{what}: cond['mask'] must lie in [0, 1] (1 = to generate), got values in "
                             f"[{float(xp.min(m))}, {float(xp.max(m))}]")
        _float_image(xp, c["masked_image"], "masked_image", (n, self.channels, self.size, self.size), what)
        return {"mask": m, "masked_image": c["masked_image"]}

    def null(self, n, xp, dtype):
        return {"mask": xp.ones((n, 1, self.size, self.size), dtype=dtype),
                "masked_image": xp.zeros((n, self.channels, self.size, self.size), dtype=dtype)}


class AdapterCond(CondKind):
    """The scale of an adapter's contribution, a float or (N,), >= 0."""

    name, keys, droppable = "adapter", ("adapter_scale",), False

    def check(self, c, n, xp, what):
        s = c["adapter_scale"]
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            s = xp.full((n,), float(s), dtype=xp.float64)
        if _shape(s) != (n,) or not xp.isdtype(s.dtype, "real floating"):
            raise ValueError(f"{what}: cond['adapter_scale'] must be a number or a float array of shape ({n},), "
                             f"got {c['adapter_scale']!r}")
        if not bool(xp.all(xp.isfinite(s))) or float(xp.min(s)) < 0:
            raise ValueError(f"{what}: cond['adapter_scale'] must be finite and >= 0, got min {float(xp.min(s))}")
        return {"adapter_scale": s}

    def null(self, n, xp, dtype):
        return {"adapter_scale": xp.zeros((n,), dtype=xp.float64)}


class CondSpec:
    """The condition kinds a network was built for (an ordered tuple of :class:`CondKind`)."""

    def __init__(self, kinds=()):
        self.kinds = {k.name: k for k in kinds}
        self._owner = {key: k for k in kinds for key in k.keys}

    def __repr__(self):
        return f"CondSpec({list(self.kinds)})"

    def _split(self, cond, what):
        c = as_cond(cond)
        bad = sorted(set(c) - set(self._owner))
        if bad:
            took = ", ".join(repr(k) for k in self._owner) or "no condition: it is unconditional"
            raise ValueError(f"{what}: condition kind {bad[0]!r} is not one this model was built for (it takes "
                             f"{took})")
        return c

    def validate(self, cond, n: int, xp, dtype, what: str = "cond") -> dict:
        """The full, checked condition for a batch of ``n``: every kind present in ``cond``
        validated, every missing kind its null."""
        c, out = self._split(cond, what), {}
        for name, kind in self.kinds.items():
            present = [k for k in kind.keys if k in c]
            if present and kind.keys[0] not in c:
                raise ValueError(f"{what}: cond[{present[0]!r}] was given without cond[{kind.keys[0]!r}]")
            out.update(kind.check(c, n, xp, what) if present else kind.null(n, xp, dtype))
        return out

    def null(self, cond, n: int, xp, dtype, kinds=None) -> dict:
        """``cond`` with the kinds named in ``kinds`` (default: every droppable kind) replaced
        by their null, MATH.md (12.7): what the unconditional branch of CFG sees."""
        full = self.validate(cond, n, xp, dtype)
        for name in self._kinds(kinds):
            kind = self.kinds[name]
            drop = xp.ones((n,), dtype=xp.bool)
            full.update(kind.where(drop, full, kind.null(n, xp, dtype), xp))
        return full

    def _kinds(self, kinds):
        if kinds is None:
            return [k for k, v in self.kinds.items() if v.droppable]
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        bad = [k for k in kinds if k not in self.kinds]
        if bad:
            raise ValueError(f"condition kind {bad[0]!r} is not one this model was built for (kinds: "
                             f"{list(self.kinds)})")
        return kinds

    def drop(self, cond, p, rng, n: int, xp, dtype) -> dict:
        """Condition dropout, MATH.md (14.10): for each kind in ``p`` (a dict kind ->
        probability, or one probability for every droppable kind) and each sample, the null
        replaces the condition with that probability.  Draws ``rng.random(n)`` once per such
        kind, in the spec's kind order (even when p is 0 or 1)."""
        check_rng(rng)
        probs = {k: p for k in self._kinds(None)} if not isinstance(p, Mapping) else dict(p)
        self._kinds(list(probs))
        full = self.validate(cond, n, xp, dtype, "condition dropout")
        dev = getattr(full[next(iter(full))], "device", None) if full else None
        for name in self.kinds:
            if name not in probs:
                continue
            q = probs[name]
            if not (isinstance(q, (int, float)) and 0.0 <= q <= 1.0):
                raise ValueError(f"condition dropout probability for {name!r} must lie in [0, 1], got {q!r}")
            drop = rng.random(n) < q
            drop = xp.asarray(drop) if dev is None or xp is np else xp.asarray(drop, device=dev)
            kind = self.kinds[name]
            full.update(kind.where(drop, full, kind.null(n, xp, dtype), xp))
        return full


def spec_namespace(cond):
    """The array namespace of the arrays in a cond dict (NumPy when it holds none)."""
    arrs = [v for v in cond.values() if hasattr(v, "shape")]
    return array_namespace(*arrs) if arrs else np
