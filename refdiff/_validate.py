"""Argument checks shared by every module: one wording for each kind of bad input (the
argument's name, the bad value and the valid range)."""

from __future__ import annotations

import math

import numpy as np


def check_int(name: str, value, min: int | None = None, hint: str = "") -> int:
    """``value`` as a Python int.  TypeError if it is not an integer (bools are refused),
    ValueError if it is below ``min``; both name ``name``, the value and the range."""
    bound = f" >= {min}" if min is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{bound}{hint}, got {name} = {value!r}")
    if min is not None and value < min:
        raise ValueError(f"{name} must be an integer{bound}{hint}, got {name} = {value!r}")
    return int(value)


def check_finite_scalar(name: str, value, *, low: float | None = None, high: float | None = None,
                        low_open: bool = False) -> float:
    """``value`` as a finite Python float in [low, high] (``low_open``: (low, high]);
    TypeError for a non-number or a bool, ValueError outside the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    lo_ok = low is None or (v > low if low_open else v >= low)
    if not math.isfinite(v) or not lo_ok or (high is not None and v > high):
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        raise ValueError(f"{name} = {value!r} is outside {'(' if low_open else '['}{lo}, {hi}]")
    return v


def check_choice(name: str, value, valid) -> str:
    """``value`` if it is one of ``valid``, else ValueError listing them."""
    if value not in valid:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(map(repr, valid))}")
    return value


_KINDS = {
    "float": "a real floating array (float32 or float64)",
    "int": "an integer array",
    "bool": "a boolean array",
    "index": "an integer or boolean array",
    "real": "a real array (float32, float64 or integer)",
    "any": "an array",
}


def _is_array(x) -> bool:
    if type(x) is np.ndarray:  # the common case first (this check runs ~600 times a training step)
        return True
    if isinstance(x, (str, bytes, list, tuple, dict, set, int, float, complex, bool)) or x is None:
        return False
    if isinstance(x, np.generic):
        return False
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "ndim")


_DTYPE_NAMES: dict = {}  # dtype object -> its short name (str(dtype) costs ~10 us in NumPy)


def _dtype_name(x) -> str:
    dt = x.dtype
    key = (type(dt), dt)  # the type first: array_api_strict dtypes hash like NumPy's but warn when compared with them
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # not seen yet, or an unhashable dtype object
        pass
    name = str(dt).rsplit(".", 1)[-1]  # array_api_strict spells its dtypes "array_api_strict.float64"
    try:
        if len(_DTYPE_NAMES) < 256:
            _DTYPE_NAMES[key] = name
    except TypeError:
        pass
    return name


def _dtype_ok(x, kind: str) -> bool:
    if kind == "any":
        return True
    name = _dtype_name(x)
    is_float = name in ("float32", "float64")
    if kind == "float":
        return is_float
    is_int = name.startswith(("int", "uint"))
    is_bool = name == "bool"
    return {"int": is_int, "bool": is_bool, "index": is_int or is_bool, "real": is_float or is_int}[kind]


def check_array(name: str, x, *, dtype: str = "float", ndim=None, min_ndim: int | None = None,
                shape=None, allow_empty: bool = False, finite: bool = False):
    """``x`` unchanged if it is an array that meets every requirement, else an error naming
    ``name``, what was given and what is valid.

    The one array check of refdiff (DESIGN.md: bad input is refused, never computed).  An
    array is anything with ``shape``, ``dtype`` and ``ndim`` (NumPy, CuPy, array-API);
    Python lists, tuples, scalars, strings and None are refused with TypeError, because the
    array namespace (NumPy or CuPy) is taken from the arrays passed in: convert with
    ``np.asarray(x, dtype=float)``.

    Parameters
    ----------
    name : str
        The argument's name, used in the message.
    x : object
        The value to check.
    dtype : {"float", "int", "bool", "index", "real", "any"}, default "float"
        The dtype kind required.  "float" is float32 or float64: integer and boolean arrays
        are refused (never computed in integer arithmetic), so are complex and float16
        (whose range overflows in the samplers' scalings).  "index" is integer or boolean.
    ndim : int or tuple of int, optional
        The allowed numbers of dimensions.
    min_ndim : int, optional
        The least number of dimensions.
    shape : tuple, optional
        The required shape; an entry None matches any length.  Implies ``ndim``.
    allow_empty : bool, default False
        Whether an array with a zero-length axis is accepted.
    finite : bool, default False
        Whether NaN and inf entries are refused (ValueError).  This reads the whole array
        (a device synchronisation on CuPy): used where a non-finite input would otherwise
        give a silent NaN result.

    Returns
    -------
    array
        ``x`` itself.

    Raises
    ------
    TypeError
        Not an array, or the wrong dtype kind.
    ValueError
        Wrong number of dimensions, wrong shape, empty, or (``finite``) NaN/inf entries.
    """
    want = _KINDS[dtype]
    if not _is_array(x):
        got = "None" if x is None else type(x).__name__
        hint = "; convert with np.asarray(...)" if isinstance(x, (list, tuple, int, float, np.generic)) else ""
        raise TypeError(f"{name} must be {want}, got {got}{hint}")
    if not _dtype_ok(x, dtype):
        raise TypeError(f"{name} must be {want}, got dtype {_dtype_name(x)}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            which = " or ".join(map(str, allowed))
            raise ValueError(f"{name} must have {which} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and any(s is not None and s != g for s, g in zip(shape, x.shape)):
        want_shape = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want_shape}, got shape {tuple(x.shape)}")
    if not allow_empty and (x.size == 0 if type(x) is np.ndarray else any(int(s) == 0 for s in x.shape)):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if finite and _dtype_name(x).startswith("float"):
        from .backend import array_namespace

        xp = array_namespace(x)
        if not bool(xp.all(xp.isfinite(x))):
            raise ValueError(f"{name} contains NaN or inf")
    return x


def check_same_shape(**arrays) -> tuple:
    """The common shape of ``arrays`` (keyword name -> array), else ValueError listing each
    name with its shape.  No broadcasting.

    Parameters
    ----------
    **arrays : arrays
        The arrays that must have one shape, by argument name.

    Returns
    -------
    tuple
        The shape.
    """
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: {desc}; these arrays must have the same shape")
    return next(iter(shapes.values()))


def check_same_batch(**arrays) -> int:
    """The common batch size (first axis) of ``arrays``, else ValueError naming each array
    with its shape.

    Parameters
    ----------
    **arrays : arrays
        Arrays of shape (N, ...), by argument name.

    Returns
    -------
    int
        N.
    """
    sizes = {k: int(v.shape[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        raise ValueError(f"batch size mismatch: {desc}; the first axes must agree")
    return next(iter(sizes.values()))


def check_bool(name: str, value) -> bool:
    """``value`` as a Python bool; TypeError for anything but a bool (or NumPy bool).

    Parameters
    ----------
    name : str
        The argument's name.
    value : object
        The value to check.

    Returns
    -------
    bool
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_coef(name: str, value, like=None):
    """``value`` unchanged if it is a path coefficient (alpha_t, sigma_t, ...): a real number
    (not a bool) or a real floating array that broadcasts against ``like`` per sample.

    NaN and inf are not checked (the algebra they enter propagates them).

    Parameters
    ----------
    name : str
        The argument's name, used in the message.
    value : float or array
        A Python/NumPy real number, or a float32/float64 array of shape (), (N,) or a shape
        that broadcasts against ``like`` without changing it (e.g. (N, 1, ..., 1)).
    like : array, optional
        The array the coefficient multiplies, of shape (N, ...).

    Returns
    -------
    float or array
        ``value`` itself.

    Raises
    ------
    TypeError
        For a bool, a complex number, a non-number, a list, or an integer/complex array.
    ValueError
        For an array whose shape does not fit ``like``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or a real floating array, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if not _is_array(value):
        hint = "; convert with np.asarray(...)" if isinstance(value, (list, tuple)) else ""
        raise TypeError(f"{name} must be a real number or a real floating array, got {type(value).__name__}{hint}")
    check_array(name, value, dtype="float")
    if like is not None and value.ndim >= 1:
        n = like.shape[0] if like.ndim >= 1 else None
        if value.ndim == 1:
            ok = n is not None and value.shape[0] in (1, n)
        else:
            ok = value.ndim <= like.ndim and all(
                v in (1, l) for v, l in zip(value.shape, like.shape))
        if not ok:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, which does not fit the data of shape "
                             f"{tuple(like.shape)}: pass a number, shape (), (N,) or (N, 1, ..., 1)")
    return value
