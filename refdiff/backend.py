"""Array-namespace plumbing: one code path for NumPy, CuPy and any array-API library.

Library code never calls NumPy for array math on user data.  It asks
:func:`array_namespace` for the namespace of its inputs and uses the array API
standard.  The only host-side NumPy is

* schedule construction (float64 constants, computed once; see ``schedules.py``),
* the host random generator (:func:`standard_normal`), so that NumPy and CuPy runs
  from one seed see the same numbers,
* special functions on namespaces that have none (:func:`ndtr`, :func:`log_ndtr`).
"""

from __future__ import annotations

import numpy as np
import scipy.special
from array_api_compat import array_namespace as _compat_namespace
from array_api_compat import device as _device

__all__ = [
    "array_namespace",
    "standard_normal",
    "rademacher",
    "asarray_like",
    "to_numpy",
    "ndtr",
    "log_ndtr",
    "float_dtype",
    "is_floating",
    "bcast",
    "check_finite",
    "namespace_for_device",
    "check_rng",
]


def array_namespace(*arrays):
    """The array-API namespace of ``arrays`` (Python scalars and None are ignored).

    NumPy arrays give ``array_api_compat.numpy``; CuPy arrays ``array_api_compat.cupy``;
    strict arrays ``array_api_strict``.  Mixing namespaces raises TypeError.

    Parameters
    ----------
    *arrays : arrays, Python scalars or None
        The inputs whose namespace is wanted; with no array, NumPy's (array-api-compat).

    Returns
    -------
    module
        The array-API-compatible namespace.

    Raises
    ------
    TypeError
        When the arrays come from different namespaces.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool, complex))]
    if not arrs:
        return _compat_namespace(np.empty(0))
    return _compat_namespace(*arrs)


def _is_cupy_namespace(xp) -> bool:
    return "cupy" in getattr(xp, "__name__", "")


def asarray_like(a, like, dtype=None):
    """Host data ``a`` (NumPy array, list, scalar) as an array in the namespace and on
    the device of ``like``.  ``dtype`` defaults to ``like``'s floating dtype.

    Parameters
    ----------
    a : array-like
        Host data.
    like : array
        Gives the namespace, device and default dtype.
    dtype : dtype, optional
        Result dtype (default ``like.dtype``).

    Returns
    -------
    array
        ``a`` in ``like``'s namespace, on its device.
    """
    from ._validate import check_array

    if not isinstance(like, np.generic):  # NumPy scalars (0-d results) are accepted as they are
        check_array("like", like, dtype="any", allow_empty=True)
    xp = array_namespace(like)
    if dtype is None:
        dtype = like.dtype
    if isinstance(a, np.ndarray) and not _is_cupy_namespace(xp):
        a = np.ascontiguousarray(a)
    return xp.asarray(a, dtype=dtype, device=_device(like))


def check_rng(rng) -> np.random.Generator:
    """The ``numpy.random.Generator`` that ``rng`` stands for (SPEC 7, as NumPy and SciPy).

    Parameters
    ----------
    rng : int, numpy.random.Generator, numpy.random.SeedSequence, numpy.random.BitGenerator or None
        A Generator is returned as is (its state advances as it is used); a seed (a
        non-negative int, a SeedSequence or a BitGenerator) gives
        ``np.random.default_rng(rng)``, so ``rng=0`` and ``rng=np.random.default_rng(0)``
        draw the same numbers; None gives fresh OS entropy (not reproducible).

    Returns
    -------
    numpy.random.Generator
        refdiff's only source of randomness: draws are made on the host (MATH.md
        chapter 1), so NumPy and CuPy runs from one seed see the same numbers.

    Raises
    ------
    TypeError
        For anything else (a legacy ``RandomState``, a float, a bool, a string).
    ValueError
        For a negative int seed.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(rng)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng = {rng} is a negative seed; valid: an int >= 0 or a numpy.random.Generator")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be an int seed >= 0, a numpy.random.Generator (or SeedSequence/BitGenerator) or None, "
        f"got {type(rng).__name__}"
    )


def standard_normal(rng: np.random.Generator, shape, like=None, *, xp=None, dtype=None):
    """Standard normal draws made on the host by ``rng`` and returned in a namespace.

    The numbers depend only on ``rng``'s state and ``shape``: a NumPy run and a CuPy
    run from the same seed see identical noise.  The namespace and device come from
    ``like`` (an array) or ``xp``; the dtype from ``dtype``, else ``like``, else float64.
    Draws are made in float64 and then cast, so float32 runs see the rounded float64
    numbers.

    Parameters
    ----------
    rng : int or numpy.random.Generator
        A seed or a Generator (:func:`check_rng`, SPEC 7).
    shape : tuple of int
        Shape of the draws.
    like : array, optional
        The namespace, device and (by default) dtype of the result.
    xp : array namespace, optional
        Where to return the draws when ``like`` is None (default NumPy through array-api-compat).
    dtype : dtype, optional
        Result dtype (default ``like``'s, else float64).

    Returns
    -------
    array
        Standard normal draws of ``shape``.

    Raises
    ------
    TypeError
        If ``shape`` is not a tuple of ints, ``like`` is not an array, or the result dtype
        (``dtype``, else ``like``'s) is not float32/float64: integer draws would be zeros.
    ValueError
        If an entry of ``shape`` is negative.
    """
    rng = check_rng(rng)
    shape = _check_shape(shape)
    _check_draw_dtype(like, dtype)
    z = rng.standard_normal(shape)
    return _host_to(z, like, xp, dtype)


def rademacher(rng: np.random.Generator, shape, like=None, *, xp=None, dtype=None):
    """Random signs (+1/-1 with probability 1/2 each), drawn on the host like
    :func:`standard_normal`.

    Parameters
    ----------
    rng : int or numpy.random.Generator
        A seed or a Generator (:func:`check_rng`).
    shape : tuple of int
        Shape of the draws.
    like : array, optional
        The namespace, device and (by default) dtype of the result.
    xp : array namespace, optional
        Where to return the draws when ``like`` is None (default NumPy through array-api-compat).
    dtype : dtype, optional
        Result dtype (default ``like``'s, else float64).

    Returns
    -------
    array
        +1/-1 entries of ``shape``.

    Raises
    ------
    TypeError, ValueError
        As :func:`standard_normal`.
    """
    rng = check_rng(rng)
    shape = _check_shape(shape)
    _check_draw_dtype(like, dtype)
    z = rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0
    return _host_to(z, like, xp, dtype)


def _check_shape(shape) -> tuple:
    from ._validate import check_int

    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of ints >= 0, got {type(shape).__name__}")
    return tuple(check_int("shape entry", s, min=0, hint=f" (shape = {tuple(shape)!r})") for s in shape)


def _dtype_label(dtype) -> str:
    label = str(dtype).rsplit(".", 1)[-1]  # array_api_strict spells "array_api_strict.float64"
    if label in ("float32", "float64"):
        return label
    try:
        return np.dtype(dtype).name
    except TypeError:
        return label


def _check_draw_dtype(like, dtype) -> None:
    """The draws' dtype must be float32 or float64: cast to an integer or boolean dtype the
    normal draws become zeros (issue 19), float16 overflows in the samplers' scalings."""
    from ._validate import check_array

    if like is not None:
        check_array("like", like, dtype="any", allow_empty=True)
    if dtype is not None:
        if _dtype_label(dtype) not in ("float32", "float64"):
            raise TypeError(f"dtype must be float32 or float64 (the draws are real), got {_dtype_label(dtype)}")
    elif like is not None and _dtype_label(like.dtype) not in ("float32", "float64"):
        raise TypeError(f"like must be a real floating array (float32 or float64), got dtype "
                        f"{_dtype_label(like.dtype)}: the draws take like's dtype (pass dtype= to override)")


def _host_to(z: np.ndarray, like, xp, dtype):
    if like is not None:
        xp = array_namespace(like)
        dev = _device(like)
        dtype = like.dtype if dtype is None else dtype
    else:
        xp = xp if xp is not None else array_namespace()
        dev = None
        dtype = xp.float64 if dtype is None else dtype
    if dev is None:
        return xp.asarray(z, dtype=dtype)
    return xp.asarray(z, dtype=dtype, device=dev)


def to_numpy(x) -> np.ndarray:
    """Copy any array (NumPy, CuPy, strict, ...) to a host NumPy array.

    Parameters
    ----------
    x : array
        Any array with DLPack, ``.get()`` (CuPy) or ``__array__``.

    Returns
    -------
    numpy.ndarray
        The values on the host (no copy when ``x`` already is a NumPy array); any dtype,
        NaN and inf copied as they are.

    Raises
    ------
    TypeError
        If ``x`` is None or a string (lists and numbers are converted by ``np.asarray``).
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"x must be an array (or array_like: a list, a number), got {type(x).__name__}")
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get") and "cupy" in type(x).__module__:
        return x.get()
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(x)


def _special(x, name):
    from ._validate import check_array

    check_array("x", x, allow_empty=True)
    xp = array_namespace(x)
    if _is_cupy_namespace(xp):
        import cupyx.scipy.special as sp  # imported only when CuPy arrays are present

        return getattr(sp, name)(x)
    out = getattr(scipy.special, name)(to_numpy(x))
    if xp.__name__.endswith("numpy"):
        return xp.asarray(out)
    return asarray_like(out, x)


def ndtr(x):
    """Standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2, in ``x``'s namespace
    (scipy.special on the host, cupyx.scipy.special on CUDA).  NaN propagates: not checked;
    Phi(+-inf) = 1, 0.

    Parameters
    ----------
    x : array
        Real floating input.

    Returns
    -------
    array like x
        Phi(x).
    """
    return _special(x, "ndtr")


def log_ndtr(x):
    """log Phi(x), accurate in both tails (no log of a difference near 0 or 1).  NaN
    propagates: not checked; log Phi(+inf) = 0, log Phi(-inf) = -inf.

    Parameters
    ----------
    x : array
        Real floating input.

    Returns
    -------
    array like x
        log Phi(x).
    """
    return _special(x, "log_ndtr")


def float_dtype(xp, x=None):
    """The floating dtype to compute in: ``x``'s if it is floating, else float64.

    Parameters
    ----------
    xp : array namespace
        The namespace whose float64 is the fallback.
    x : array, optional
        The array whose floating dtype is preferred.

    Returns
    -------
    dtype
        ``x.dtype`` if floating, else ``xp.float64``.
    """
    if x is not None and is_floating(xp, x):
        return x.dtype
    return xp.float64


def is_floating(xp, x) -> bool:
    """
    Whether ``x`` has a real floating dtype.

    Parameters
    ----------
    xp : array namespace
        The namespace of ``x``.
    x : array
        The array to test.

    Returns
    -------
    bool
        True for float32/float64 (any real floating dtype).
    """
    from ._validate import check_array

    check_array("x", x, dtype="any", allow_empty=True)
    return xp.isdtype(x.dtype, "real floating")


def bcast(coef, x):
    """Reshape a per-sample array of shape (N,) (or a scalar) to broadcast against
    ``x`` of shape (N, ...): (N,) -> (N, 1, ..., 1).  Values are not read (NaN passes).

    Parameters
    ----------
    coef : float, 0-d array or array of shape (N,)
        A per-sample (or shared) coefficient.
    x : array (N, ...)
        The array it multiplies.

    Returns
    -------
    float or array
        Python floats and 0-d arrays unchanged (NumPy scalars as floats); (N,) reshaped to
        (N, 1, ..., 1).

    Raises
    ------
    ValueError
        When the length of ``coef`` is neither 1 nor N.
    """
    from ._validate import check_array

    check_array("x", x, dtype="any", allow_empty=True)
    if isinstance(coef, (bool, np.bool_, complex)) or not (isinstance(coef, (int, float, np.number))
                                                           or hasattr(coef, "shape")):
        raise TypeError(f"coef must be a real number or an array (a per-sample coefficient), got {type(coef).__name__}")
    xp = array_namespace(x)
    if isinstance(coef, (int, float)):
        return float(coef)  # also turns NumPy scalars into Python floats (strict namespaces reject them)
    if isinstance(coef, np.generic):
        return float(coef)
    if coef.ndim == 0:
        return coef
    if coef.ndim == 1 and x.ndim >= 1:
        if coef.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"coef has shape {tuple(coef.shape)}, x has batch {x.shape[0]}: coef must be (1,) or (N,)"
            )
        return xp.reshape(coef, (coef.shape[0],) + (1,) * (x.ndim - 1))  # (N,) -> (N,1,...)
    return coef


def check_finite(x, what: str, where: str = "") -> None:
    """Raise FloatingPointError naming ``what`` (and ``where``) if ``x`` has NaN or inf.

    Parameters
    ----------
    x : array
        The array to check.
    what : str
        Its name in the message.
    where : str
        Where it was produced (e.g. "step 3 (t = 29)"), added to the message.

    Raises
    ------
    FloatingPointError
        If any entry is NaN or infinite.
    """
    from ._validate import check_array

    check_array("x", x, dtype="any", allow_empty=True)
    xp = array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        loc = f" at {where}" if where else ""
        raise FloatingPointError(f"{what} contains NaN or inf{loc}")



def namespace_for_device(device: str = "cpu"):
    """The array namespace for a device name: ``"cpu"`` -> NumPy (through
    array-api-compat), ``"gpu"``/``"cuda"`` -> CuPy on the current CUDA device
    (select one with ``CUDA_VISIBLE_DEVICES`` or ``cupy.cuda.Device(i).use()``).

    Raises RuntimeError with the reason when CuPy is not installed or sees no device.

    Parameters
    ----------
    device : {"cpu", "gpu", "cuda"}
        The device name.

    Returns
    -------
    module
        The array-API namespace (array-api-compat's NumPy or CuPy).

    Raises
    ------
    ValueError
        For an unknown device name.
    RuntimeError
        When CuPy is not installed or no CUDA device is visible.
    """
    if device == "cpu":
        return array_namespace()
    if device not in ("gpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: 'cpu', 'gpu'")
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "device 'gpu' needs CuPy: pip install 'refdiff[gpu-cuda12]' (CUDA 12) "
            "or 'refdiff[gpu-cuda13]' (CUDA 13)"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise RuntimeError(f"device 'gpu': CuPy is installed but CUDA is unusable ({e})") from e
    if n < 1:
        raise RuntimeError("device 'gpu': CuPy is installed but no CUDA device is visible")
    return _compat_namespace(cupy.empty(0))
