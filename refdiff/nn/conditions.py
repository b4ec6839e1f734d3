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
"text_states"  ``text_states`` (N, L, d_text) float,   the empty prompt's states (given
               a frozen text encoder's token states;    by the network, computed by the
               ``text_mask`` (N, L) bool, True = a      same frozen encoder, as SD uses
               real token (default all True)            the empty prompt's embedding)
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

from ..backend import array_namespace, asarray_like, check_rng
from .._validate import check_array
from ._check import MAX_FIELD, check_cond_args, check_size

__all__ = ["CondKind", "ClassCond", "TokenCond", "TextStateCond", "ControlCond", "InpaintCond", "AdapterCond",
           "CondSpec", "as_cond"]


def as_cond(cond) -> dict:
    """``cond`` as a dict: None -> {}, a mapping -> a dict copy, an array -> {"class": it}.

    Parameters
    ----------
    cond : Mapping, array of int, or None
        The condition.

    Returns
    -------
    dict
        The condition as a dict (keys whose value is None dropped).

    Raises
    ------
    TypeError
        If ``cond`` is none of the three.
    """
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


def _key_mask(xp, c, key, shape, what, want, empty):
    """The boolean key mask ``c[key]`` of a sequence condition (all True when absent),
    checked: shape ``shape`` (``want`` says it), boolean, at least one kept position per
    sample (``empty`` ends that message)."""
    mask = c.get(key)
    if mask is None:
        return xp.ones(shape, dtype=xp.bool)
    if _shape(mask) != shape:
        raise ValueError(f"{what}: cond['{key}'] must have {want}, got {_shape(mask)}")
    if mask.dtype != xp.bool:
        raise TypeError(f"{what}: cond['{key}'] must be boolean (True = a real token), got dtype {mask.dtype}")
    if not bool(xp.all(xp.any(mask, axis=1))):
        raise ValueError(f"{what}: cond['{key}'] masks out every {empty}")
    return mask


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
        """The checked keys of this kind from ``c`` (subclasses implement it).

        Parameters
        ----------
        c : dict
            The condition (holding at least one of this kind's keys).
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            This kind's keys, validated (defaults filled in).

        Raises
        ------
        TypeError, ValueError
            If a value has the wrong dtype, shape or range.
        """
        raise NotImplementedError

    def null(self, n: int, xp, dtype) -> dict:  # pragma: no cover - abstract
        """This kind's null condition for a batch (subclasses implement it).

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            The float dtype of float-valued nulls.

        Returns
        -------
        dict
            This kind's keys, set to their null values.
        """
        raise NotImplementedError

    def where(self, drop, c: dict, null: dict, xp) -> dict:
        """Per sample, the null where ``drop`` (N,) is True, else ``c``.

        Parameters
        ----------
        drop : bool array, shape (N,)
            True where the null replaces the condition.
        c : dict
            The checked condition.
        null : dict
            The null condition of this kind.
        xp : namespace
            The array namespace.

        Returns
        -------
        dict
            This kind's keys, mixed per sample.
        """
        check_cond_args(drop=drop, c=c, null=null, xp=xp)  # issue 19
        out = {}
        for k in self.keys:
            d = xp.reshape(drop, (drop.shape[0],) + (1,) * (c[k].ndim - 1))
            out[k] = xp.where(d, null[k], c[k])
        return out


class ClassCond(CondKind):
    """Class labels (N,) in [0, K]; K is the null class.

    Parameters
    ----------
    num_classes : int
        The number of classes K (labels 0..K-1; K is the null).
    """

    name, keys = "class", ("class",)

    def __init__(self, num_classes: int):
        self.num_classes = check_size("num_classes", num_classes, 1, MAX_FIELD)  # issue 19

    def check(self, c, n, xp, what):
        """The labels ``c["class"]``, checked.

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"class": labels}``.

        Raises
        ------
        ValueError
            If the labels are not (n,) or lie outside [0, K].
        TypeError
            If they are not integers.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
        y = c["class"]
        if _shape(y) != (n,):
            raise ValueError(f"{what}: cond['class'] must have shape ({n},), got {_shape(y)}")
        _int_range(xp, y, 0, self.num_classes, "class", f"{what} (num_classes = {self.num_classes}; "
                   f"{self.num_classes} is the null class)")
        return {"class": y}

    def null(self, n, xp, dtype):
        """The null class K for every sample.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            Unused (the labels are int64).

        Returns
        -------
        dict
            ``{"class": (n,) int64 array of K}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        return {"class": xp.full((n,), self.num_classes, dtype=xp.int64)}


class TokenCond(CondKind):
    """Token ids (N, L) in [0, vocab_size) with a key-padding mask (N, L).

    Parameters
    ----------
    vocab_size : int
        Number of token ids V.
    max_len : int
        Maximum prompt length (the null prompt's length).
    """

    name, keys = "tokens", ("tokens", "token_mask")

    def __init__(self, vocab_size: int, max_len: int):
        self.vocab_size, self.max_len = check_size("vocab_size", vocab_size, 1, MAX_FIELD), check_size("max_len", max_len, 1, MAX_FIELD)  # issue 19

    def check(self, c, n, xp, what):
        """The tokens and their mask, checked (the mask defaults to all True).

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"tokens": (n, L) ids, "token_mask": (n, L) bool}``.

        Raises
        ------
        ValueError
            If the shapes are wrong (1 <= L <= max_len), an id lies outside [0, V), or a sample
            keeps no token.
        TypeError
            If the ids are not integers or the mask is not boolean.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
        ids = c["tokens"]
        if len(_shape(ids)) != 2 or ids.shape[0] != n or not 1 <= ids.shape[1] <= self.max_len:
            raise ValueError(f"{what}: cond['tokens'] must have shape (N, L) = ({n}, L) with 1 <= L <= "
                             f"{self.max_len}, got {_shape(ids)}")
        _int_range(xp, ids, 0, self.vocab_size - 1, "tokens", f"{what} (vocab_size = {self.vocab_size})")
        mask = _key_mask(xp, c, "token_mask", _shape(ids), what, f"the shape of cond['tokens'] {_shape(ids)}",
                         "token of some sample; keep at least one (the empty prompt keeps its start token 0)")
        return {"tokens": ids, "token_mask": mask}

    def null(self, n, xp, dtype):
        """The empty prompt for every sample: ids 0 with only position 0 kept.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            Unused.

        Returns
        -------
        dict
            ``{"tokens": (n, max_len) int64 zeros, "token_mask": (n, max_len) bool}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        mask = np.zeros((n, self.max_len), dtype=bool)
        mask[:, 0] = True
        return {"tokens": xp.zeros((n, self.max_len), dtype=xp.int64), "token_mask": xp.asarray(mask)}

    def where(self, drop, c, null, xp):
        """Parameters
        ----------
        drop : bool array, shape (N,)
            True where the empty prompt replaces the prompt.
        c : dict
            The checked condition.
        null : dict
            The null condition (cut to the prompt length L).
        xp : namespace
            The array namespace.

        Returns
        -------
        dict
            ``tokens`` and ``token_mask``, mixed per sample.
        """
        check_cond_args(drop=drop, c=c, null=null, xp=xp)  # issue 19
        L = c["tokens"].shape[1]  # the empty prompt cut to the prompt length
        return super().where(drop, c, {k: v[:, :L] for k, v in null.items()}, xp)


class TextStateCond(CondKind):
    """Precomputed text states (N, L, d_text) of a frozen text encoder with their key-padding
    mask (N, L), the way Stable Diffusion conditions on CLIP: the U-Net never sees token ids,
    only the encoder's output.  The null is the empty prompt's states under the same frozen
    encoder (and its mask), which the network stores.

    Parameters
    ----------
    d_text : int
        Width of a text state.
    context_len : int
        The number of positions L every condition must have (the encoder's context).
    null_states : array, shape (context_len, d_text)
        The empty prompt's states.
    null_mask : bool array, shape (context_len,)
        The empty prompt's key-padding mask (at least one True).
    """

    name, keys = "text_states", ("text_states", "text_mask")

    def __init__(self, d_text: int, context_len: int, null_states, null_mask):
        self.d_text, self.context_len = check_size("d_text", d_text, 1, MAX_FIELD), check_size("context_len", context_len, 1, MAX_FIELD)  # issue 19
        check_array("null_states", null_states, ndim=2, finite=True)  # issue 19
        check_array("null_mask", null_mask, dtype="bool", ndim=1)  # issue 19
        self.null_states = np.asarray(null_states, dtype=np.float64)
        self.null_mask = np.asarray(null_mask, dtype=bool)
        if self.null_states.shape != (self.context_len, self.d_text) or self.null_mask.shape != (self.context_len,):
            raise ValueError(f"TextStateCond: null_states must have shape (context_len, d_text) = "
                             f"({self.context_len}, {self.d_text}) and null_mask ({self.context_len},), got "
                             f"{self.null_states.shape} and {self.null_mask.shape}")
        if not self.null_mask.any():
            raise ValueError("TextStateCond: null_mask keeps no position (the empty prompt keeps BOS and EOS)")

    def check(self, c, n, xp, what):
        """The text states and their mask, checked (the mask defaults to all True).

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"text_states": (n, L, d_text) float, "text_mask": (n, L) bool}``.

        Raises
        ------
        ValueError
            If a shape is wrong (L must equal context_len, the last axis d_text) or a sample
            keeps no position.
        TypeError
            If the states are not floating point or the mask is not boolean.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
        s = c["text_states"]
        want = (n, self.context_len, self.d_text)
        if len(_shape(s)) != 3 or _shape(s)[0] != n:
            raise ValueError(f"{what}: cond['text_states'] must have shape (N, L, d_text) = {want}, got {_shape(s)}")
        if s.shape[1] != self.context_len:
            raise ValueError(f"{what}: cond['text_states'] has L = {s.shape[1]} positions, the model's context "
                             f"length is {self.context_len} (shape must be {want}, got {_shape(s)})")
        if s.shape[2] != self.d_text:
            raise ValueError(f"{what}: cond['text_states'] has width {s.shape[2]}, the model's d_text is "
                             f"{self.d_text} (shape must be {want}, got {_shape(s)})")
        if not xp.isdtype(s.dtype, "real floating"):
            raise TypeError(f"{what}: cond['text_states'] must be a float array (a frozen encoder's states; "
                            f"token ids go to a 'tokens' model), got dtype {s.dtype}")
        mask = _key_mask(xp, c, "text_mask", _shape(s)[:2], what, f"shape (N, L) = {_shape(s)[:2]}",
                         "position of some sample; keep at least one")
        return {"text_states": s, "text_mask": mask}

    def null(self, n, xp, dtype):
        """The empty prompt's states and mask for every sample.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            The float dtype of the states.

        Returns
        -------
        dict
            ``{"text_states": (n, L, d_text), "text_mask": (n, L) bool}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        s = np.broadcast_to(self.null_states, (n, *self.null_states.shape))
        m = np.broadcast_to(self.null_mask, (n, self.context_len))
        return {"text_states": xp.asarray(np.ascontiguousarray(s), dtype=dtype),
                "text_mask": xp.asarray(np.ascontiguousarray(m))}


class ControlCond(CondKind):
    """A spatial control image (N, channels, size, size).

    Parameters
    ----------
    channels : int
        Channels of the control image.
    size : int
        Its side.
    """

    name, keys = "control", ("control",)

    def __init__(self, channels: int, size: int):
        self.channels, self.size = check_size("channels", channels, 1, MAX_FIELD), check_size("size", size, 1, MAX_FIELD)  # issue 19

    def check(self, c, n, xp, what):
        """The control image, checked.

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"control": image}``.

        Raises
        ------
        ValueError
            If its shape is not (n, channels, size, size).
        TypeError
            If it is not a float array.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
        _float_image(xp, c["control"], "control", (n, self.channels, self.size, self.size), what)
        return {"control": c["control"]}

    def null(self, n, xp, dtype):
        """Zero control images.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            Their dtype.

        Returns
        -------
        dict
            ``{"control": zeros (n, channels, size, size)}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        return {"control": xp.zeros((n, self.channels, self.size, self.size), dtype=dtype)}


class InpaintCond(CondKind):
    """A mask (N, 1, S, S), 1 = to generate, and the masked image (N, C, S, S).

    Parameters
    ----------
    channels : int
        Channels C of the image.
    size : int
        Its side S.
    """

    name, keys, droppable = "inpaint", ("mask", "masked_image"), False

    def __init__(self, channels: int, size: int):
        self.channels, self.size = check_size("channels", channels, 1, MAX_FIELD), check_size("size", size, 1, MAX_FIELD)  # issue 19

    def check(self, c, n, xp, what):
        """The mask and the masked image, checked.

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"mask": (n, 1, S, S), "masked_image": (n, C, S, S)}``.

        Raises
        ------
        ValueError
            If a key is missing, a shape is wrong, or the mask leaves [0, 1].
        TypeError
            If an array is not float.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
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
        """Mask 1 everywhere and a zero masked image.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            Their dtype.

        Returns
        -------
        dict
            ``{"mask": ones (n, 1, S, S), "masked_image": zeros (n, C, S, S)}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        return {"mask": xp.ones((n, 1, self.size, self.size), dtype=dtype),
                "masked_image": xp.zeros((n, self.channels, self.size, self.size), dtype=dtype)}


class AdapterCond(CondKind):
    """The scale of an adapter's contribution, a float or (N,), >= 0."""

    name, keys, droppable = "adapter", ("adapter_scale",), False

    def check(self, c, n, xp, what):
        """The adapter scale, checked (a number becomes an (n,) float64 array).

        Parameters
        ----------
        c : dict
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        what : str
            Name used in error messages.

        Returns
        -------
        dict
            ``{"adapter_scale": (n,) float array}``.

        Raises
        ------
        ValueError
            If it is neither a number nor a float (n,) array, or not finite and >= 0.
        """
        check_cond_args(c=c, n=n, xp=xp, what=what, need=self.keys[0])  # issue 19
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
        """Scale 0 for every sample.

        Parameters
        ----------
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            Unused (the scale is float64).

        Returns
        -------
        dict
            ``{"adapter_scale": (n,) float64 zeros}``.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
        return {"adapter_scale": xp.zeros((n,), dtype=xp.float64)}


class CondSpec:
    """The condition kinds a network was built for (an ordered tuple of :class:`CondKind`).

    Parameters
    ----------
    kinds : iterable of CondKind, default ()
        The kinds, in order (no kind: an unconditional network).
    """

    def __init__(self, kinds=()):
        if isinstance(kinds, (str, bytes)) or not hasattr(kinds, "__iter__") or not all(isinstance(k, CondKind) for k in kinds):
            raise TypeError(f"kinds must be a sequence of CondKind instances, got {kinds!r:.80}")  # issue 19
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
        validated, every missing kind its null.

        Parameters
        ----------
        cond : Mapping, array of int, or None
            The condition (:func:`as_cond`).
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            The float dtype of nulls.
        what : str, default "cond"
            Name used in error messages.

        Returns
        -------
        dict
            Every key of every kind.

        Raises
        ------
        ValueError
            If ``cond`` holds a key of a kind the spec lacks, a kind's second key without its
            first, or a value a kind rejects.
        TypeError
            If a kind rejects a dtype, or ``cond`` has an unsupported type.
        """
        check_cond_args(n=n, xp=xp, dtype=dtype, what=what)  # issue 19
        c, out = self._split(cond, what), {}
        for name, kind in self.kinds.items():
            present = [k for k in kind.keys if k in c]
            if present and kind.keys[0] not in c:
                raise ValueError(f"{what}: cond[{present[0]!r}] was given without cond[{kind.keys[0]!r}]")
            out.update(kind.check(c, n, xp, what) if present else kind.null(n, xp, dtype))
        return out

    def null(self, cond, n: int, xp, dtype, kinds=None) -> dict:
        """``cond`` with the kinds named in ``kinds`` (default: every droppable kind) replaced
        by their null, MATH.md (12.7): what the unconditional branch of CFG sees.

        Parameters
        ----------
        cond : Mapping, array of int, or None
            The condition.
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            The float dtype of nulls.
        kinds : str or iterable of str, optional
            Kinds to null; None (default): every droppable kind.

        Returns
        -------
        dict
            The full condition with those kinds null.

        Raises
        ------
        ValueError
            If a named kind is not in the spec, or ``cond`` is invalid (:meth:`validate`).
        """
        check_cond_args(n=n, xp=xp, dtype=dtype)  # issue 19
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
        kind, in the spec's kind order (even when p is 0 or 1).

        Parameters
        ----------
        cond : Mapping, array of int, or None
            The condition.
        p : float or dict of str to float
            Drop probability in [0, 1], for every droppable kind or per kind.
        rng : numpy.random.Generator or int
            Source of the draws (checked by ``check_rng``).
        n : int
            The batch size.
        xp : namespace
            The array namespace.
        dtype : dtype
            The float dtype of nulls.

        Returns
        -------
        dict
            The full condition after dropout.

        Raises
        ------
        ValueError
            If a kind in ``p`` is not in the spec, a probability lies outside [0, 1], or
            ``cond`` is invalid.
        """
        check_cond_args(p=p, rng=rng, n=n, xp=xp, dtype=dtype)  # issue 19
        if isinstance(p, dict) and set(p) - set(self.kinds):
            raise ValueError(f"p names kinds {sorted(set(p) - set(self.kinds))} this model lacks ({list(self.kinds)})")
        rng = check_rng(rng)
        probs = {k: p for k in self._kinds(None)} if not isinstance(p, Mapping) else dict(p)
        self._kinds(list(probs))
        full = self.validate(cond, n, xp, dtype, "condition dropout")
        ref = next((v for v in full.values() if hasattr(v, "shape")), None)  # namespace and device of the draws
        for name in self.kinds:
            if name not in probs:
                continue
            q = probs[name]
            if not (isinstance(q, (int, float)) and 0.0 <= q <= 1.0):
                raise ValueError(f"condition dropout probability for {name!r} must lie in [0, 1], got {q!r}")
            drop = rng.random(n) < q
            drop = xp.asarray(drop) if ref is None else asarray_like(drop, ref, dtype=array_namespace(ref).bool)
            kind = self.kinds[name]
            full.update(kind.where(drop, full, kind.null(n, xp, dtype), xp))
        return full


def spec_namespace(cond):
    """The array namespace of the arrays in a cond dict (NumPy when it holds none)."""
    arrs = [v for v in cond.values() if hasattr(v, "shape")]
    return array_namespace(*arrs) if arrs else np
