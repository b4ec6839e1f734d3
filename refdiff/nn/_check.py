"""Cheap argument checks shared by the layer pairs of :mod:`refdiff.nn` (issue 19's policy:
types, dtype kind, ranks and shape agreement; never a scan for NaN, so the per-step cost
stays a few attribute reads).  Built on :mod:`refdiff._validate`."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int, check_same_shape


def check_cache(cache, forward: str, n: int, *, name: str = "cache"):
    """``cache`` if it is a tuple of ``n`` entries (what ``forward`` returns), else
    TypeError naming ``name`` and saying where a cache comes from."""
    if not isinstance(cache, tuple) or len(cache) != n:
        got = f"a tuple of {len(cache)} entries" if isinstance(cache, tuple) else type(cache).__name__
        raise TypeError(f"{name} must be the {n}-tuple returned by {forward}, got {got}")
    return cache


def check_dout(dout, shape, *, name: str = "dout"):
    """``dout`` if it is a real floating array of the forward output's ``shape``, else
    TypeError (not a float array) or ValueError (wrong shape) naming ``name``."""
    check_array(name, dout, allow_empty=True)
    shape = tuple(int(s) for s in shape)
    if tuple(dout.shape) != shape:
        raise ValueError(f"{name} must have the forward output's shape {shape}, got shape {tuple(dout.shape)}")
    return dout


MAX_SIZE = 2 ** 31 - 1  # no array axis is longer; a bigger size or stride is a mistake


def check_size(name: str, value, low: int = 1, high: int = MAX_SIZE) -> int:
    """``value`` as an int in [low, high] (a size, stride or padding), else TypeError
    (not an int, or a bool) or ValueError naming ``name`` and the range."""
    v = check_int(name, value, low)
    if v > high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {name} = {value!r}")
    return v


def check_params(P, name: str = "P"):
    """``P`` if it is a dict (a flat parameter dict), else TypeError naming ``name``."""
    if not isinstance(P, dict):
        raise TypeError(f"{name} must be a dict of parameter arrays, got {type(P).__name__}")
    return P


def check_prefix(pre, name: str = "pre"):
    """``pre`` if it is a non-empty str (a parameter-key prefix), else TypeError/ValueError."""
    if not isinstance(pre, str):
        raise TypeError(f"{name} must be a str (the parameter-key prefix), got {type(pre).__name__}")
    if not pre:
        raise ValueError(f"{name} must be a non-empty parameter-key prefix, got {pre!r}")
    return pre


def check_rng(rng, name: str = "rng"):
    """``rng`` if it is a numpy.random.Generator, else TypeError naming ``name``."""
    import numpy as np

    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def check_xp(xp, name: str = "xp"):
    """``xp`` if it looks like an array namespace (``asarray``, ``float32``), else TypeError."""
    if not (hasattr(xp, "asarray") and hasattr(xp, "float32") and hasattr(xp, "float64")):
        raise TypeError(f"{name} must be an array namespace (numpy, cupy, array_api_strict) or None, "
                        f"got {type(xp).__name__}")
    return xp


def check_float_dtype(dtype, name: str = "dtype"):
    """``dtype`` if it names float32 or float64 (a string or a dtype object), else TypeError
    or ValueError naming ``name``."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{name} must be 'float32' or 'float64', got {dtype!r}")
        return dtype
    label = None
    if dtype is not None and not isinstance(dtype, (bool, int, float)):
        try:
            label = np.dtype(dtype).name
        except TypeError:  # an array-API namespace's dtype object
            label = str(dtype).rsplit(".", 1)[-1]
    if label not in ("float32", "float64"):
        raise TypeError(f"{name} must be 'float32' or 'float64' (or that dtype), got {dtype!r}")
    return dtype


def check_none_cache(cache, forward: str, name: str = "cache"):
    """``cache`` must be None: the cache ``forward`` returns when the backward needs nothing."""
    if cache is not None:
        raise TypeError(f"{name} must be None (what {forward} returns), got {type(cache).__name__}")
    return cache


MAX_FIELD = 1 << 20  # the largest width, size or count a config field may hold


def check_config(owner: str, obj, *, ints=None, floats=None, bools=()):
    """Check a config dataclass's fields by name: ``ints`` {field: least value} (integers,
    not bools, at most MAX_FIELD), ``floats`` {field: (low, low_open)} (finite reals, not
    bools), ``bools`` (True/False).  The error names ``owner`` and the field."""
    try:
        for n, lo in (ints or {}).items():
            object.__setattr__(obj, n, check_size(n, getattr(obj, n), lo, MAX_FIELD))  # NumPy ints -> int
        for n, (lo, low_open) in (floats or {}).items():
            check_finite_scalar(n, getattr(obj, n), low=lo, low_open=low_open)
        for n in bools:
            check_bool(n, getattr(obj, n))
    except (TypeError, ValueError) as e:
        raise type(e)(f"{owner}: {e}") from None


def check_block(P, pre, *suffixes, what: str = "", pre_name: str = "pre"):
    """A parameter dict ``P`` holding ``pre + suffix`` for every suffix, else TypeError (P
    not a dict, pre not a str) or ValueError naming P and pre and the missing keys."""
    check_params(P)
    check_prefix(pre, pre_name)
    missing = [pre + s for s in suffixes if pre + s not in P]
    if missing:
        raise ValueError(f"{what + ': ' if what else ''}P has no parameters under {pre_name} = {pre!r} "
                         f"(missing {missing[:3]}); initialise them first")
    return P


def check_grads(G, name: str = "G"):
    """``G`` if it is a dict (the gradient accumulator), else TypeError."""
    if not isinstance(G, dict):
        raise TypeError(f"{name} must be a dict (the gradient accumulator), got {type(G).__name__}")
    return G


def check_array_dict(name: str, d, *, allow_empty: bool = False):
    """``d`` if it is a dict of real floating arrays (a parameter or gradient dict), else
    TypeError/ValueError naming ``name`` and the offending key.  Cheap: no NaN scan."""
    if not isinstance(d, dict):
        raise TypeError(f"{name} must be a dict {{name: float array}}, got {type(d).__name__}")
    if not d and not allow_empty:
        raise ValueError(f"{name} is an empty dict")
    for k, v in d.items():
        check_array(f"{name}[{k!r}]", v, allow_empty=True)
    return d


def check_optim_scalars(lr, betas, eps, weight_decay):
    """The optimiser's hyper-parameters by name: lr >= 0, betas two numbers in [0, 1),
    eps > 0, weight_decay >= 0 (each finite)."""
    def real(name, v, ok, want):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number {want}, got {v!r}")
        if not (math.isfinite(v) and ok(v)):
            raise ValueError(f"{name} must be {want} (finite), got {v!r}")

    real("lr", lr, lambda v: v >= 0, ">= 0")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for b in betas:
        real("betas", b, lambda v: 0 <= v < 1, "in [0, 1)")
    real("eps", eps, lambda v: v > 0, "> 0")
    real("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")


MAX_STEP = 2 ** 53  # step counts beyond this are not exact in the float formulas


def check_cond_args(*, need=None, **kw):
    """The arguments of the condition kinds' methods (:mod:`refdiff.nn.conditions`), by
    name: ``c``/``null`` dicts (``c`` holding ``need`` when given), ``n`` a batch size,
    ``xp`` a namespace, ``dtype`` a float dtype, ``what`` a str label, ``drop`` a (N,)
    boolean array, ``rng`` a Generator."""
    for name, v in kw.items():
        if name in ("c", "null") or (name == "p" and not isinstance(v, (int, float, np.integer, np.floating))):
            if not isinstance(v, dict):
                raise TypeError(f"{name} must be a dict, got {type(v).__name__}")
        if name == "p":  # one probability for every droppable kind, or one per kind
            for k, q in (v.items() if isinstance(v, dict) else [(None, v)]):
                check_finite_scalar("p" if k is None else f"p[{k!r}]", q, low=0.0, high=1.0)
        elif name == "n":
            check_size("n", v, 1, MAX_FIELD)
        elif name == "xp":
            check_xp(v)
        elif name == "dtype":
            check_float_dtype(v)
        elif name == "what":
            if not isinstance(v, str):
                raise TypeError(f"what must be a str (the caller's name, used in messages), got {type(v).__name__}")
        elif name == "drop":
            check_array("drop", v, dtype="bool", ndim=1)
        elif name == "rng":
            check_rng(v)
    if need is not None and need not in kw["c"]:
        raise ValueError(f"c has no {need!r} entry (keys {sorted(kw['c'])})")


# ------------------------------------------------------------------ LoRA (refdiff.nn.lora)
def check_lora_factors(A, B, scale, w_shape=None, what: str = "lora"):
    """A (r, d_in) and B (d_out, r) (linear) or A (r, C, k, k) and B (F, r, 1, 1) (conv),
    float arrays of one rank r matching the base weight's shape ``w_shape`` when given
    (linear (d_in, d_out), conv (F, C, k, k)); ``scale`` a finite real."""
    check_array("A", A, ndim=(2, 4))
    check_array("B", B, ndim=A.ndim)
    check_finite_scalar("scale", scale)
    r = A.shape[0]
    if A.ndim == 2:
        want_B = (w_shape[1] if w_shape else B.shape[0], r)
        want_A = (r, w_shape[0]) if w_shape else tuple(A.shape)
    else:
        want_B = (w_shape[0] if w_shape else B.shape[0], r, 1, 1)
        want_A = (r,) + tuple(w_shape[1:]) if w_shape else tuple(A.shape)
    if tuple(A.shape) != want_A or tuple(B.shape) != want_B:
        raise ValueError(f"{what}: A {tuple(A.shape)} and B {tuple(B.shape)} do not fit (need A {want_A}, B {want_B}"
                         f"{'' if not w_shape else f' for the base weight w of shape {tuple(w_shape)}'})")


def check_mask(mask, shape, name: str = "mask"):
    """None, or a float array of ``shape`` (a dropout mask)."""
    if mask is not None:
        check_array(name, mask)
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"{name} must have the input's shape {tuple(shape)}, got shape {tuple(mask.shape)}")


def check_lora_dict(lora, name: str = "lora"):
    """A dict of float factor arrays (keys ``<layer>.lora_A``, ``<layer>.lora_B``)."""
    return check_array_dict(name, lora, allow_empty=True)


def check_lora_model_args(**kw):
    """Arguments of :mod:`refdiff.nn.lora_model`'s functions, by name: ``params``/``grads``
    dicts of float arrays, ``adapter`` a LoRAAdapter, ``adapters`` one or a sequence of
    them, ``config`` a LoRAConfig, ``weight``/``scale``/``lora_scale``/``alpha`` finite
    reals (None allowed for ``scale``, ``alpha``), ``weights`` None or finite reals,
    ``safe`` a bool, ``rng`` a Generator, ``path`` a str or path-like, ``targets`` a str or
    strs, ``base_config`` None or a dict, ``xp`` None or a namespace."""
    import os

    from .lora_model import LoRAAdapter, LoRAConfig

    for name, v in kw.items():
        if name in ("params", "grads"):
            check_array_dict(name, v)
        elif name == "adapter" and not isinstance(v, LoRAAdapter):
            raise TypeError(f"adapter must be a LoRAAdapter (from lora_init or load_lora), got {type(v).__name__}")
        elif name == "adapters":
            items = [v] if isinstance(v, LoRAAdapter) else v
            if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__") \
                    or not all(isinstance(a, LoRAAdapter) for a in items):
                raise TypeError(f"adapters must be a LoRAAdapter or a sequence of them, got {v!r:.60}")
        elif name == "config" and not isinstance(v, LoRAConfig):
            raise TypeError(f"config must be a LoRAConfig, got {type(v).__name__}")
        elif name in ("weight", "lora_scale") or (name in ("scale", "alpha") and v is not None):
            check_finite_scalar(name, v)
        elif name == "weights" and v is not None:
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
                raise TypeError(f"weights must be None or a sequence of numbers, got {v!r:.60}")
            for w in v:
                check_finite_scalar("weights", w)
        elif name == "safe":
            check_bool("safe", v)
        elif name == "rng":
            check_rng(v)
        elif name == "path" and not isinstance(v, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path-like, got {type(v).__name__}")
        elif name == "targets":
            ok = isinstance(v, str) or (isinstance(v, (tuple, list)) and v and all(isinstance(t, str) for t in v))
            if not ok:
                raise TypeError(f"targets must be a str or a non-empty sequence of str patterns, got {v!r:.60}")
        elif name == "base_config" and v is not None and not isinstance(v, dict):
            raise TypeError(f"base_config must be None or a dict, got {type(v).__name__}")
        elif name == "xp" and v is not None:
            check_xp(v)


def check_adapter_args(**kw):
    """Arguments of :mod:`refdiff.nn.controlnet` and :mod:`refdiff.nn.t2i_adapter`, by
    name: ``unet`` a UNet; ``params``/``base_params``/``adapter_params`` dicts of float
    arrays; ``branches`` (cnet, params, control, scales) 4-tuples; ``controls`` (cnet,
    params, control) 3-tuples; ``extra``/``dres``/``dfeats`` None or dicts of float
    arrays; ``guess_mode`` a bool; ``num_steps``/``K`` counts; ``start``/``end``/``factor``
    and the scales finite reals (``guidance_scale`` may be None); ``rng`` a Generator."""
    from .unet import UNet

    for name, v in kw.items():
        if name == "unet" and not isinstance(v, UNet):
            raise TypeError(f"unet must be a refdiff UNet, got {type(v).__name__}")
        elif name in ("params", "base_params", "adapter_params"):
            check_array_dict(name, v)
        elif name in ("branches", "controls"):
            n = 4 if name == "branches" else 3
            if not isinstance(v, (list, tuple)) or not all(isinstance(b, (list, tuple)) and len(b) == n
                                                                     for b in v):
                raise TypeError(f"{name} must be a list of {n}-tuples, got {v!r:.60}")
        elif name in ("dres", "dfeats") or (name == "extra" and v is not None):
            check_array_dict(name, v, allow_empty=True)
        elif name == "guess_mode":
            check_bool(name, v)
        elif name in ("num_steps", "K"):
            check_size(name, v, 1, MAX_FIELD)
        elif name == "factor":
            check_finite_scalar(name, v, low=0.0, high=1.0)
        elif name in ("start", "end") or (name == "guidance_scale" and v is not None):
            check_finite_scalar(name, v)
        elif name == "conditioning_scale":  # one number, or one per control
            for c in (v if isinstance(v, (list, tuple)) else [v]):
                check_finite_scalar(name, c)
        elif name == "timesteps" and v is not None:
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__") or not all(
                    isinstance(u, (int, float, np.integer, np.floating)) and not isinstance(u, bool) for u in v):
                raise TypeError(f"timesteps must be None or the sampler's grid (a sequence of numbers), got {v!r:.60}")
        elif name == "cond":
            from .conditions import as_cond

            as_cond(v)
        elif name == "convention":
            check_choice("convention", v, ("diffusers", "original"))
        elif name == "control":
            check_array("control", v, ndim=4)
        elif name == "rng":
            check_rng(v)


def check_text_args(**kw):
    """Arguments of :mod:`refdiff.nn.text`, by name: ``params`` a dict of float arrays;
    ``ids`` (N, L) integers with ``mask`` (N, L) booleans of its shape; ``x`` float images;
    ``dstates``/``dembedding``/``dout`` None or float arrays; ``img_emb``, ``txt_emb``,
    ``class_emb`` (N, D) floats; ``log_temp`` a finite real in [-50, 50]; ``rng`` a
    Generator; ``dtype`` a float dtype; ``return_dx`` a bool."""
    for name, v in kw.items():
        if name == "params":
            check_array_dict(name, v)
        elif name == "ids":
            check_array("ids", v, dtype="int", ndim=2)
        elif name == "mask":
            check_array("mask", v, dtype="bool", ndim=2)
            if "ids" in kw and tuple(v.shape) != tuple(kw["ids"].shape):
                raise ValueError(f"mask must have ids' shape {tuple(kw['ids'].shape)}, got shape {tuple(v.shape)}")
        elif name in ("dstates", "dembedding") and v is not None:
            check_array(name, v)
        elif name in ("img_emb", "txt_emb", "class_emb", "dout"):
            check_array(name, v, ndim=2)
        elif name == "log_temp":
            check_finite_scalar("log_temp", v, low=-50.0, high=50.0)
        elif name == "rng":
            check_rng(v)
        elif name == "dtype":
            check_float_dtype(v)
        elif name == "return_dx":
            check_bool(name, v)
    if "img_emb" in kw and "txt_emb" in kw:
        check_same_shape(img_emb=kw["img_emb"], txt_emb=kw["txt_emb"])


def check_video_args(**kw):
    """Arguments of :mod:`refdiff.nn.video`, by name: ``cfg`` a VideoConfig; ``P``/``G``
    dicts; ``pre`` a prefix; ``z`` float tokens (N T, L, D); ``frames``/``heads`` counts;
    ``t`` float or integer times (N,); ``prediction_type`` one of the library's; ``rng`` a
    Generator."""
    from .video import VideoConfig
    from .video_unet import VideoUNetConfig

    for name, v in kw.items():
        if name == "cfg" and not isinstance(v, (VideoConfig, VideoUNetConfig)):
            raise TypeError(f"cfg must be a VideoConfig or VideoUNetConfig, got {type(v).__name__}")
        elif name == "P":
            check_array_dict("P", v)
        elif name == "G":
            check_grads(v)
        elif name == "pre":
            check_prefix(v)
        elif name in ("z", "dy"):
            check_array(name, v, ndim=3)
        elif name in ("frames", "heads"):
            check_size(name, v, 1, MAX_FIELD)
        elif name == "t":
            check_array("t", v, dtype="real", ndim=1)
        elif name == "prediction_type":
            from ..parameterization import PREDICTION_TYPES

            check_choice("prediction_type", v, PREDICTION_TYPES)
        elif name == "rng":
            check_rng(v)


def check_vae_args(**kw):
    """Arguments of :mod:`refdiff.nn.vae`, by name: float arrays ``moments`` (N, 2c, ...),
    ``x``, ``x_hat``, ``z``, ``mean``, ``logvar``, ``kl`` (N,), ``dm``, ``dout``; ``eps``,
    ``dz``, ``dkl`` None or float arrays; ``params``/``G`` dicts; ``beta`` >= 0 and
    ``sigma_x2`` > 0 finite; ``sample`` a bool; ``rng`` a Generator; ``dtype`` a float
    dtype; ``xp`` None or a namespace; ``dim``/``latent_dim`` sizes."""
    for name, v in kw.items():
        if name in ("dm", "dout"):  # the conv autoencoder's NCHW gradients
            check_array(name, v, ndim=4)
        elif name in ("moments", "x", "x_hat", "z", "mean", "logvar"):
            check_array(name, v, min_ndim=1 if name in ("mean", "logvar", "z") else 2)
        elif name == "kl":
            check_array("kl", v, ndim=1)
        elif name in ("eps", "dz", "dkl") and v is not None:
            check_array(name, v)
        elif name == "params":
            check_array_dict(name, v)
        elif name == "G":
            check_grads(v)
        elif name == "beta":
            check_finite_scalar("beta", v, low=0.0)
        elif name == "sigma_x2":
            check_finite_scalar("sigma_x2", v, low=0.0, low_open=True)
        elif name == "sample":
            check_bool(name, v)
        elif name == "dtype":
            check_float_dtype(v)
        elif name == "xp" and v is not None:
            check_xp(v)
        elif name in ("dim", "latent_dim"):
            check_size(name, v, 1, MAX_FIELD)
    pairs = [("x", "x_hat"), ("z", "mean"), ("mean", "logvar")]
    for a, b in pairs:
        if a in kw and b in kw:
            check_same_shape(**{a: kw[a], b: kw[b]})
    if "x" in kw and "kl" in kw and kw["kl"].shape[0] != kw["x"].shape[0]:
        raise ValueError(f"kl must have x's batch ({kw['x'].shape[0]},), got shape {tuple(kw['kl'].shape)}")
