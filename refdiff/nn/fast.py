"""Tuned versions of the reference layers (same signatures, same results to rounding): the
switches and the public entry points.

The reference layers (``layers.py``, ``conv.py``) transcribe their equations in NCHW.
This module computes the same maps faster on a CPU, and the U-Net's training path
(``blocks.py``, ``unet.py``) uses it; ``tests/test_nn_fast.py`` checks every function here
against its reference twin, forward and backward, in float64 and float32.  The tricks:

* **two layouts** (:func:`set_layout`): "hwnc" (the default, NumPy arrays) hands every
  layer to refdiff/nn/fast_hwnc.py, which keeps (H, W, N, C) order and runs 3x3
  convolutions by Winograd F(4x4, 3x3) (MATH.md (23.6)); the items below describe the
  "chwn" layout (refdiff/nn/fast_chwn.py; CuPy, and NumPy after ``set_layout("chwn")``);
* **the "hwnc" fused GroupNorm + SiLU** in two forms (:func:`set_gnsilu`): "fast" (the
  default, one-pass statistics, MATH.md (23.9)) and "exact" (bit-identical to the two
  layers);
* **memory order** (C, H, W, N), batch fastest, while arrays stay logically NCHW: the
  convolution writes its output as a transposed view of an (F, Ho, Wo, N) product,
  elementwise layers keep that order, GroupNorm reduces over contiguous rows of its
  (G, M, N) view, resampling and concatenation build their output in that order, and the
  next convolution reads it without a copy (``fast_chwn._cfirst`` is free then);
* **the convolution** gathers its column matrix (MATH.md (13.4)) one cache-sized block of
  output rows at a time with memoised slice tables (``lru_cache``: pure functions of
  shapes), does not keep it for the backward pass, and computes (13.6) by three paths:
  a product for 1x1 kernels, a flipped-kernel gather for "same" stride-1 kernels, a
  scatter of shifted slices otherwise;
* **in-place updates** in SiLU and GroupNorm (fewer full-size temporaries);
* **the GroupNorm backward** (13.10) assembled from per-(channel, sample) spatial sums.

Where the code lives: this module holds the switches (:func:`set_layout`,
:func:`set_conv3x3`, :func:`set_gnsilu`, :func:`set_shift_fold`) and re-exports the public
layers, which are defined in refdiff/nn/fast_layers.py (convolution, SiLU, resampling,
GroupNorm, concatenation, channel shift) and refdiff/nn/fast_fused.py (the fused GroupNorm +
SiLU, with and without the time-embedding shift); the "chwn" layout's convolution is in
refdiff/nn/fast_chwn.py (with its GroupNorm), the "hwnc" layout in fast_hwnc.py and fast_hwnc_norm.py.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.  The U-Net's tuned loop calls unchecked twins of some
of them (``_conv_f``, ``_conv_b``, ``_gnsilu_f`` ...) once its parameters have been checked.
"""

from __future__ import annotations

import numpy as _np

from . import fast_hwnc as _hw

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "silu_forward",
    "silu_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "groupnorm_silu_forward",
    "groupnorm_silu_backward",
    "upsample2x_forward",
    "upsample2x_backward",
    "avgpool2x_forward",
    "avgpool2x_backward",
    "concat_forward",
    "concat_backward",
    "add_channel_shift",
    "set_conv3x3",
    "get_conv3x3",
    "set_layout",
    "get_layout",
    "set_gnsilu",
    "get_gnsilu",
    "groupnorm_silu_shift_forward",
    "groupnorm_silu_shift_backward",
    "set_shift_fold",
    "get_shift_fold",
]

# How 3x3 stride-1 pad-1 convolutions with C >= 2 are computed in the "chwn" layout (the
# "hwnc" layout, the default on NumPy, always uses its own F(4,3): see set_layout): "f43"
# (Winograd F(4x4, 3x3), MATH.md (23.2)), "f23" (F(2x2, 3x3)) or "direct" (the
# column-matrix product).  The default is "direct" because F(4,3) did not measure faster for the default U-Net
# (8x8 and 4x4 images, 32-64 channels) on the 2-core test VM: whole training step at batch
# 128, one thread, three runs at load 3-13: F(4,3) 468 / 138 / 256 ms against direct
# 405 / 143 / 250 ms (equal within the noise), and per layer (fwd + bwd, 32 -> 32
# channels, 8x8, batch 128) 12.0 against 6.5 ms (benchmarks/bench_unet_train.py,
# benchmarks/results/cpu-2026-11-30).  The direct method also keeps float32 rounding
# (MATH.md (23.5)) and, on CuPy, avoids the ~200 small transform operations per
# Winograd convolution that a launch-bound GPU step would pay for.
def _swap(store: dict, key: str, value, allowed: list, what: str):
    """Set ``store[key] = value`` after checking it is one of ``allowed`` (ValueError naming
    ``what``); returns the previous value (the tuned path's switches)."""
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    old, store[key] = store[key], value
    return old


_CONV3X3 = {"method": "direct"}
_CONV3X3_METHODS = {"f43": 4, "f23": 2, "direct": None}


def set_conv3x3(method: str) -> str:
    """Choose the 3x3 convolution method of the tuned path's "chwn" layout ("f43", "f23"
    or "direct"); returns the previous one.  All three compute the same map (tests/test_winograd.py);
    they differ in speed and in float32 rounding (MATH.md (23.5)).

    Parameters
    ----------
    method : {"f43", "f23", "direct"}
        The method for 3x3 stride-1 pad-1 convolutions with C >= 2.

    Returns
    -------
    str
        The previous method.

    Raises
    ------
    ValueError
        If ``method`` is not one of the three.
    """
    return _swap(_CONV3X3, "method", method, sorted(_CONV3X3_METHODS), "conv3x3 method")


def get_conv3x3() -> str:
    """The current 3x3 convolution method of the tuned path (see :func:`set_conv3x3`)."""
    return _CONV3X3["method"]


# Memory order of the tuned path: "chwn" ((C, H, W, N), batch fastest; this module, with
# the 3x3 method of set_conv3x3) or "hwnc" ((H, W, N, C), channels fastest, every 3x3
# stride-1 convolution with C >= 2 by Winograd F(4x4, 3x3) with matrix-product transforms:
# refdiff/nn/fast_hwnc.py).  Arrays are logically NCHW in both; "hwnc" applies to NumPy
# arrays (CuPy runs "chwn").  The default is "hwnc": the default U-Net's training step at
# batch 128, one thread, CPU time, 2-core VM: hwnc 72 ms against chwn/direct 100 ms and
# PyTorch 51 ms (benchmarks/README.md, round 4).  set_layout("chwn") with
# set_conv3x3("direct") keeps the direct method's float32 rounding.  The environment
# variable REFDIFF_LAYOUT (chwn or hwnc) sets the layout at import, so command-line runs
# can choose it too (e.g. `REFDIFF_LAYOUT=chwn refdiff train ...`).
_LAYOUTS = ("chwn", "hwnc")


def _layout_from_env() -> str:
    import os

    name = os.environ.get("REFDIFF_LAYOUT", "hwnc")
    if name not in _LAYOUTS:
        raise ValueError(f"the environment variable REFDIFF_LAYOUT must be one of {list(_LAYOUTS)}, got {name!r}")
    return name


_LAYOUT = {"name": _layout_from_env()}


def set_layout(layout: str) -> str:
    """Choose the memory order of the tuned path ("chwn" or "hwnc"); returns the previous
    one.  Both compute the same maps as the reference layers (tests/test_nn_fast.py,
    tests/test_nn_fast_hwnc.py); "hwnc" runs every 3x3 stride-1 convolution with C >= 2
    by Winograd F(4x4, 3x3) in the batched form MATH.md (23.6) (float32 rounding as
    MATH.md (23.5)) and ignores :func:`set_conv3x3`.  Selecting "hwnc" also calls
    :func:`refdiff.nn.fast_hwnc.keep_freed_memory` (glibc keeps freed blocks for reuse:
    no page faults per step; process-wide).

    Parameters
    ----------
    layout : {"chwn", "hwnc"}
        The memory order.

    Returns
    -------
    str
        The previous layout.

    Raises
    ------
    ValueError
        If ``layout`` is not one of the two.
    """
    old = _swap(_LAYOUT, "name", layout, list(_LAYOUTS), "layout")
    if layout == "hwnc":
        _hw.keep_freed_memory()
    return old


def get_layout() -> str:
    """The current memory order of the tuned path (see :func:`set_layout`)."""
    return _LAYOUT["name"]


# How the "hwnc" layout computes GroupNorm + SiLU: "exact" (bit for bit the two layers,
# MATH.md (23.7)) or "fast" (five full-size passes forward instead of ten, within the float32
# bound of MATH.md (23.11)).  Default chosen by measurement: benchmarks/README.md, round 7.
_GNSILU_MODES = ("exact", "fast")
_GNSILU = {"mode": "fast"}


def set_gnsilu(mode: str) -> str:
    """Choose the "hwnc" layout's fused GroupNorm + SiLU: "exact" (bit-identical to
    GroupNorm then SiLU, MATH.md (23.7)) or "fast" (fewer passes, one-pass statistics,
    MATH.md (23.9), MATH.md (23.10), float32 bound MATH.md (23.11)); returns the previous
    mode.  A cache remembers the form that made it, so switching between a forward and its
    backward is safe.

    Parameters
    ----------
    mode : {"exact", "fast"}
        The form.

    Returns
    -------
    str
        The previous mode.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the two.
    """
    return _swap(_GNSILU, "mode", mode, list(_GNSILU_MODES), "gnsilu mode")


def get_gnsilu() -> str:
    """The current form of the "hwnc" fused GroupNorm + SiLU (see :func:`set_gnsilu`)."""
    return _GNSILU["mode"]

# How the residual block's time-embedding shift reaches its GroupNorm + SiLU in the "hwnc"
# layout with the "fast" form: "fold" (the shift folded into the statistics and the
# per-(n, c) row b, MATH.md (23.12), and its gradient from the backward's sums, MATH.md
# (23.13): no full-size add or sum) or "add" (add_channel_shift, then the fused layer, then
# the spatial sum of dx: bit for bit the composition).  Default chosen by measurement:
# benchmarks/README.md, round 8.
_SHIFT_FOLD_MODES = ("add", "fold")
_SHIFT_FOLD = {"mode": "fold"}


def set_shift_fold(mode: str) -> str:
    """Choose how :func:`groupnorm_silu_shift_forward` applies its shift in the "hwnc"
    layout with ``set_gnsilu("fast")``: "fold" (into the statistics, MATH.md (23.12),
    MATH.md (23.13); a different rounding within the bound of MATH.md (23.11)) or "add"
    (a full-size add first: the composition's rounding); returns the previous mode.  A
    cache remembers the form that made it.

    Parameters
    ----------
    mode : {"add", "fold"}
        The form.

    Returns
    -------
    str
        The previous mode.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the two.
    """
    return _swap(_SHIFT_FOLD, "mode", mode, list(_SHIFT_FOLD_MODES), "shift fold mode")


def get_shift_fold() -> str:
    """The current form of :func:`groupnorm_silu_shift_forward` (see :func:`set_shift_fold`)."""
    return _SHIFT_FOLD["mode"]

def _hwnc(*arrays) -> bool:
    """True when the "hwnc" layout is selected and the arrays are NumPy arrays (a plain
    loop: ~200 calls per training step, a generator costs more than the test)."""
    if _LAYOUT["name"] != "hwnc":
        return False
    for a in arrays:
        if not isinstance(a, _np.ndarray):
            return False
    return True


def _tokens(xp, h):
    """(N, C, H, W) -> the pixel-major (H W N, C) token matrix (free in either layout when
    h is in that layout's memory order)."""
    if _hwnc(h):
        return _hw.tokens(h)
    N, C, H, W = h.shape
    return xp.reshape(xp.permute_dims(h, (1, 2, 3, 0)), (C, H * W * N)).T


def _from_tokens(xp, o, shape):
    """Inverse of :func:`_tokens`: (H W N, C) -> an (N, C, H, W) view."""
    if _hwnc(o):
        return _hw.from_tokens(o, shape)
    N, C, H, W = shape
    return xp.permute_dims(xp.reshape(o.T, (C, H, W, N)), (3, 0, 1, 2))


def _winograd_tile(w, stride, pad):
    """The Winograd tile m for this convolution, or None for the direct method."""
    if w.shape[2] == 3 and w.shape[3] == 3 and stride == 1 and pad == 1 and w.shape[1] >= 2:
        return _CONV3X3_METHODS[_CONV3X3["method"]]
    return None


# ------------------------------------------------------------------ the layers
# Imported last: their modules read the switches above (``from .fast import _hwnc, ...``).
from .fast_layers import (  # noqa: E402
    _concat_f,
    _conv_b,
    _conv_f,
    add_channel_shift,
    avgpool2x_backward,
    avgpool2x_forward,
    concat_backward,
    concat_forward,
    conv2d_backward,
    conv2d_forward,
    groupnorm_backward,
    groupnorm_forward,
    silu_backward,
    silu_forward,
    upsample2x_backward,
    upsample2x_forward,
)
from .fast_fused import (  # noqa: E402
    _gnsilu_b,
    _gnsilu_f,
    _gnsilu_shift_b,
    _gnsilu_shift_f,
    groupnorm_silu_backward,
    groupnorm_silu_forward,
    groupnorm_silu_shift_backward,
    groupnorm_silu_shift_forward,
)

for _name in __all__:  # the public layers belong to this module's API (as numpy's set_module does)
    _obj = globals()[_name]
    if getattr(_obj, "__module__", __name__) != __name__:
        _obj.__module__ = __name__
del _name, _obj
