"""Toy data sets: 2D point clouds and 8x8 images, MATH.md (14.19).

Every generator takes a ``numpy.random.Generator`` and returns host float64 NumPy
arrays; nothing is drawn from global state.  2D sets have shape (N, 2) and are scaled so
that the per-coordinate standard deviation of the *population* is about 1 (exactly 1
for the Gaussian mixtures; the other constants are stated next to each generator).  8x8
sets are NCHW, shape (N, 1, 8, 8), values in [-1, 1].

:func:`load_dataset` is the registry: ``load_dataset(name, n, rng)`` returns a
:class:`Dataset` with ``x``, labels ``y`` (or None), ``num_classes`` and, for the
Gaussian mixtures, the exact ``oracle`` (a :class:`refdiff.GaussianMixture`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import check_array, check_finite_scalar, check_int
from .backend import check_rng

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "eight_gaussians",
    "twenty_five_gaussians",
    "mixture_parameters",
    "mixture_oracle",
    "sample_mixture",
    "two_moons",
    "swiss_roll",
    "circles",
    "checkerboard",
    "shapes8x8",
    "SHAPE_CLASSES",
    "digits8x8",
]


@dataclass(frozen=True)
class Dataset:
    """A data set: ``x`` (N, ...) float64, ``y`` (N,) int64 labels or None,
    ``num_classes`` (0 when unlabelled), and ``oracle`` (the exact data distribution as a
    :class:`refdiff.GaussianMixture` where one is known, else None).

    Parameters
    ----------
    name : str
        The data set's name.
    x : numpy.ndarray (N, ...)
        The points or images, float64.
    y : numpy.ndarray (N,), optional
        int64 labels.
    num_classes : int
        K, or 0 when unlabelled.
    oracle : GaussianMixture, optional
        The exact distribution when known.
    """

    name: str
    x: np.ndarray
    y: np.ndarray | None = None
    num_classes: int = 0
    oracle: object = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        check_array("x", self.x, min_ndim=2, finite=True)
        if self.y is not None:
            check_array("y", self.y, dtype="int", shape=(self.x.shape[0],))
        check_int("num_classes", self.num_classes, min=0)
        if self.oracle is not None and not callable(getattr(self.oracle, "log_prob", None)):
            raise TypeError(f"oracle must be None or an exact oracle (with log_prob), got {type(self.oracle).__name__}")

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _check_rng(rng):
    return check_rng(rng)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


# ---------------------------------------------------------------------------- mixtures
def mixture_parameters(name: str, std: float | None = None):
    """``(weights (K,), means (K, 2), variances (K,))`` of a named isotropic mixture,
    scaled to unit variance per coordinate by MATH.md (14.19).

    * "8gaussians": 8 equal components at angles 2 pi k / 8 on a circle of radius
      r = sqrt(2 (1 - s^2)), standard deviation s (default 0.1).  Per-coordinate
      variance r^2 / 2 + s^2 = 1 exactly.
    * "25gaussians": 25 equal components on the 5x5 grid c * {-2, ..., 2}^2 with
      c = sqrt((1 - s^2) / 2), standard deviation s (default 0.05).  Per-coordinate
      variance 2 c^2 + s^2 = 1 exactly.

    Parameters
    ----------
    name : {"8gaussians", "25gaussians"}
        The mixture.
    std : float, optional
        Component standard deviation (default the set's own).

    Returns
    -------
    weights, means, variances : numpy arrays (K,), (K, 2), (K,)
    """
    if std is not None:
        check_finite_scalar("std", std)
    if name == "8gaussians":
        s = 0.1 if std is None else float(std)
        _check_std(s)
        r = math.sqrt(2.0 * (1.0 - s * s))
        ang = 2.0 * np.pi * np.arange(8) / 8.0
        means = r * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (8, 2)
    elif name == "25gaussians":
        s = 0.05 if std is None else float(std)
        _check_std(s)
        c = math.sqrt((1.0 - s * s) / 2.0)
        g = c * np.arange(-2.0, 3.0)
        gx, gy = np.meshgrid(g, g, indexing="ij")
        means = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (25, 2)
    else:
        raise ValueError(f"unknown mixture {name!r} (name); valid: '8gaussians', '25gaussians'")
    k = means.shape[0]
    return np.full(k, 1.0 / k), means, np.full(k, s * s)


def _check_noise(noise):
    check_finite_scalar("noise", noise, low=0.0)


def _spec(name, v, ndim):
    """A host float64 copy of a specification array (lists and integer arrays converted;
    None, strings, bools, complex, float16, NaN/inf and empty refused)."""
    if v is None or isinstance(v, (str, bytes, bool, complex)) or np.asarray(v).dtype.kind not in "iuf" \
            or np.asarray(v).dtype == np.float16:
        raise TypeError(f"{name} must be a real array, got {v!r}")
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != ndim or a.size == 0:
        raise ValueError(f"{name} must be a non-empty array with {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _check_std(s):
    if not 0.0 < s < 1.0:
        raise ValueError(f"std must lie in (0, 1) so that the mixture has unit variance, got {s!r}")


def mixture_oracle(name: str, std: float | None = None):
    """The exact distribution of a named mixture as a :class:`refdiff.GaussianMixture`
    (component k has class label k).

    Parameters
    ----------
    name : {"8gaussians", "25gaussians"}
        The mixture.
    std : float, optional
        Component standard deviation.

    Returns
    -------
    GaussianMixture
    """
    from .oracles import GaussianMixture  # imported here: oracles sit above data in the layering

    w, mu, var = mixture_parameters(name, std)
    return GaussianMixture(w, mu, var)


def sample_mixture(weights, means, variances, n: int, rng: np.random.Generator):
    """``(x, k)``: n draws of an isotropic Gaussian mixture and their component indices.
    Draw order: the n component indices (``rng.choice``), then an (n, D) standard normal.

    Parameters
    ----------
    weights : array (K,)
        Mixture weights summing to 1.
    means : array (K, D)
        Component means.
    variances : array (K,)
        Isotropic component variances.
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).

    Returns
    -------
    x, k : arrays (n, D) float64 and (n,) int64
    """
    rng = _check_rng(rng)
    n = _check_n(n)
    weights, means, variances = _spec("weights", weights, 1), _spec("means", means, 2), _spec("variances", variances, 1)
    k = weights.shape[0]
    if means.shape[0] != k or variances.shape[0] != k:
        raise ValueError(f"weights {weights.shape}, means {means.shape} and variances {variances.shape} must "
                         f"describe the same number of components")
    if np.any(weights < 0) or abs(weights.sum() - 1.0) > 1e-8 or np.any(variances < 0):
        raise ValueError("weights must be >= 0 and sum to 1, variances >= 0")
    k = rng.choice(weights.shape[0], size=n, p=weights)
    z = rng.standard_normal((n, means.shape[1]))
    return means[k] + np.sqrt(variances[k])[:, None] * z, k.astype(np.int64)


def eight_gaussians(n: int, rng: np.random.Generator, std: float = 0.1):
    """``(x, y)``: n points of the "8gaussians" ring (see :func:`mixture_parameters`),
    y the component index.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    std : float
        Component standard deviation (before the unit-variance scaling).

    Returns
    -------
    x, y : arrays (n, 2) float64 and (n,) int64
    """
    if isinstance(std, bool) or not isinstance(std, (int, float, np.integer, np.floating)):
        check_finite_scalar("std", std)
    return sample_mixture(*mixture_parameters("8gaussians", std), n, rng)


def twenty_five_gaussians(n: int, rng: np.random.Generator, std: float = 0.05):
    """``(x, y)``: n points of the "25gaussians" grid, y the component index.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    std : float
        Component standard deviation.

    Returns
    -------
    x, y : arrays (n, 2) float64 and (n,) int64
    """
    if isinstance(std, bool) or not isinstance(std, (int, float, np.integer, np.floating)):
        check_finite_scalar("std", std)
    return sample_mixture(*mixture_parameters("25gaussians", std), n, rng)


# ---------------------------------------------------------------------------- other 2D toys
def two_moons(n: int, rng: np.random.Generator, noise: float = 0.1):
    """``(x, y)``: two interleaved half circles (y = 0 upper, y = 1 lower).

    Upper moon (cos th, sin th), lower (1 - cos th, 1/2 - sin th), th ~ U[0, pi], plus
    N(0, noise^2) per coordinate; then centred by the population mean (1/2, 1/4) and
    divided by sqrt((0.75 + 0.5625 - 1/pi) / 2 + noise^2), the root mean of the
    two population coordinate variances 3/4 + noise^2 and 0.5625 - 1/pi + noise^2
    (isotropic scaling keeps the shape).  Draw order: labels, angles, noise.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    noise : float
        Std of the added Gaussian noise.

    Returns
    -------
    x, y : arrays (n, 2) and (n,)
    """
    _check_noise(noise)
    rng = _check_rng(rng)
    n = _check_n(n)
    y = rng.integers(0, 2, size=n)
    th = rng.uniform(0.0, np.pi, size=n)
    z = rng.standard_normal((n, 2))
    x = np.where(y[:, None] == 0, np.stack([np.cos(th), np.sin(th)], 1), np.stack([1.0 - np.cos(th), 0.5 - np.sin(th)], 1))
    x = x + noise * z - np.array([0.5, 0.25])
    scale = math.sqrt((0.75 + 0.5625 - 1.0 / math.pi) / 2.0 + noise * noise)
    return x / scale, y.astype(np.int64)


def _swiss_roll_moments():
    """Population mean (2,) and root-mean per-coordinate variance of the noiseless roll
    (theta cos theta, theta sin theta), theta ~ U[1.5 pi, 4.5 pi], by the midpoint rule on
    2**16 nodes (error far below 1e-6 of the value)."""
    m = 1 << 16
    th = 1.5 * np.pi + 3.0 * np.pi * (np.arange(m) + 0.5) / m
    p = np.stack([th * np.cos(th), th * np.sin(th)], 1)
    mean = p.mean(0)
    return mean, math.sqrt(float(((p - mean) ** 2).mean(0).mean()))


def swiss_roll(n: int, rng: np.random.Generator, noise: float = 0.05):
    """``(x, theta)``: the 2D swiss roll (theta cos theta, theta sin theta), theta ~
    U[1.5 pi, 4.5 pi], centred by its population mean and divided by its population
    root-mean per-coordinate standard deviation (about 6.3; computed by quadrature),
    then N(0, noise^2) added per coordinate.  Returns the angle as the second value.
    Draw order: angles, noise.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    noise : float
        Std of the added Gaussian noise.

    Returns
    -------
    x, theta : arrays (n, 2) and (n,)
    """
    _check_noise(noise)
    rng = _check_rng(rng)
    n = _check_n(n)
    th = rng.uniform(1.5 * np.pi, 4.5 * np.pi, size=n)
    z = rng.standard_normal((n, 2))
    mean, scale = _swiss_roll_moments()
    x = (np.stack([th * np.cos(th), th * np.sin(th)], 1) - mean) / scale
    return x + noise * z, th


def circles(n: int, rng: np.random.Generator, noise: float = 0.05, factor: float = 0.5):
    """``(x, y)``: two concentric circles, radius 1 (y = 0) and ``factor`` (y = 1), plus
    N(0, noise^2) per coordinate, divided by sqrt((1 + factor^2) / 4), the population
    per-coordinate standard deviation of the noiseless circles (noise added after
    scaling).  Draw order: labels, angles, noise.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    noise : float
        Std of the added Gaussian noise.
    factor : float
        Radius of the inner circle, in (0, 1).

    Returns
    -------
    x, y : arrays (n, 2) and (n,)
    """
    _check_noise(noise)
    check_finite_scalar("factor", factor)
    rng = _check_rng(rng)
    n = _check_n(n)
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
    y = rng.integers(0, 2, size=n)
    th = rng.uniform(0.0, 2.0 * np.pi, size=n)
    z = rng.standard_normal((n, 2))
    r = np.where(y == 0, 1.0, factor)
    x = r[:, None] * np.stack([np.cos(th), np.sin(th)], 1) / math.sqrt((1.0 + factor * factor) / 4.0)
    return x + noise * z, y.astype(np.int64)


def checkerboard(n: int, rng: np.random.Generator):
    """``(x, y)``: uniform on the 8 dark squares of a 4x4 board on [-2, 2]^2, scaled by
    sqrt(3) / 2 (each marginal is uniform on [-2, 2], variance 4/3), so the coordinates
    are uniform on [-sqrt 3, sqrt 3] with unit variance; y the square index 0..7.
    Draw order: square index, then two uniforms.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).

    Returns
    -------
    x, y : arrays (n, 2) and (n,)
    """
    rng = _check_rng(rng)
    n = _check_n(n)
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)  # (8, 2)
    k = rng.integers(0, 8, size=n)
    u = rng.uniform(0.0, 1.0, size=(n, 2))
    x = cells[k] - 2.0 + u
    return x * (math.sqrt(3.0) / 2.0), k.astype(np.int64)


# ---------------------------------------------------------------------------- 8x8 images
SHAPE_CLASSES = (
    "horizontal bar",
    "vertical bar",
    "diagonal",
    "anti-diagonal",
    "square outline",
    "filled square",
    "plus",
    "cross",
    "ring",
    "corner",
)


def _shape_mask(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean 8x8 mask of class ``cls`` with random size and position."""
    m = np.zeros((8, 8), dtype=bool)
    ii, jj = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    if cls in (0, 1):  # bar: thickness 1-2, length 4-8
        th, ln = rng.integers(1, 3), rng.integers(4, 9)
        r0, c0 = rng.integers(0, 8 - th + 1), rng.integers(0, 8 - ln + 1)
        m[r0 : r0 + th, c0 : c0 + ln] = True
        return m if cls == 0 else m.T
    if cls in (2, 3):  # diagonal stroke of length 4-8
        ln = rng.integers(4, 9)
        r0, c0 = rng.integers(0, 8 - ln + 1), rng.integers(0, 8 - ln + 1)
        k = np.arange(ln)
        m[r0 + k, c0 + k] = True
        return m if cls == 2 else m[:, ::-1]
    if cls in (4, 5, 9):  # square outline / filled square / corner (L): side 3-7
        s = rng.integers(3, 8) if cls != 5 else rng.integers(2, 6)
        r0, c0 = rng.integers(0, 8 - s + 1), rng.integers(0, 8 - s + 1)
        if cls == 5:
            m[r0 : r0 + s, c0 : c0 + s] = True
        elif cls == 4:
            m[r0 : r0 + s, c0] = m[r0 : r0 + s, c0 + s - 1] = True
            m[r0, c0 : c0 + s] = m[r0 + s - 1, c0 : c0 + s] = True
        else:
            m[r0 : r0 + s, c0] = True
            m[r0 + s - 1, c0 : c0 + s] = True
        return m
    if cls in (6, 7):  # plus / cross, arm length 1-3 around a centre
        a = rng.integers(1, 4)
        r, c = rng.integers(a, 8 - a), rng.integers(a, 8 - a)
        k = np.arange(-a, a + 1)
        if cls == 6:
            m[r + k, c] = True
            m[r, c + k] = True
        else:
            m[r + k, c + k] = True
            m[r + k, c - k] = True
        return m
    # ring: |distance to centre - radius| < 0.6
    rad = rng.uniform(2.0, 3.2)
    cr, cc = rng.uniform(rad - 0.5, 7.5 - rad, size=2)
    d = np.hypot(ii - cr, jj - cc)
    return np.abs(d - rad) < 0.6


def shapes8x8(n: int, rng: np.random.Generator, noise: float = 0.05):
    """``(x, y)``: a procedural labelled 8x8 set of 10 classes (``SHAPE_CLASSES``) of
    simple strokes and shapes with random size and position, shape (n, 1, 8, 8), values
    in [-1, 1]: background -1, strokes at an intensity ~ U[0.5, 1], plus N(0, noise^2)
    clipped to [-1, 1].  Needs nothing installed.  Draw order: the n labels, then per
    sample its shape parameters and intensity, then all the noise.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    noise : float
        Std of the added pixel noise.

    Returns
    -------
    x, y : arrays (n, 1, 8, 8) and (n,)
    """
    _check_noise(noise)
    rng = _check_rng(rng)
    n = _check_n(n)
    y = rng.integers(0, len(SHAPE_CLASSES), size=n)
    x = np.full((n, 1, 8, 8), -1.0)
    for i in range(n):
        m = _shape_mask(int(y[i]), rng)
        x[i, 0][m] = rng.uniform(0.5, 1.0)
    x = np.clip(x + noise * rng.standard_normal(x.shape), -1.0, 1.0)
    return x, y.astype(np.int64)


_DIGITS_SPLIT_SEED = 20240101  # fixed: the train/test split never depends on the user's rng
_DIGITS_TEST_FRACTION = 0.2


def digits8x8(split: str = "train"):
    """``(x, y)``: the handwritten digits shipped with scikit-learn (1797 images, 10
    classes), NCHW (N, 1, 8, 8), gray levels 0..16 mapped to [-1, 1] by v / 8 - 1 (17
    levels).  ``split``: "train" (80%), "test" (20%) or "all"; the split is a fixed
    permutation (seed 20240101), so it is the same on every machine.

    Needs scikit-learn (``pip install refdiff[examples]`` or ``pip install scikit-learn``).

    Parameters
    ----------
    split : {"train", "test", "all"}
        Which part of the fixed split.

    Returns
    -------
    x, y : arrays (N, 1, 8, 8) float64 and (N,) int64

    Raises
    ------
    ImportError
        Without scikit-learn (the message says how to install it).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "the 8x8 digits data set needs scikit-learn: pip install refdiff[examples] "
            "(or pip install scikit-learn); the 'shapes8x8' set needs nothing installed"
        ) from e
    d = load_digits()
    x = np.asarray(d.images, dtype=np.float64)[:, None] / 8.0 - 1.0  # (N, 8, 8) -> (N, 1, 8, 8)
    y = np.asarray(d.target, dtype=np.int64)
    if split == "all":
        return x, y
    perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(x.shape[0])
    n_test = int(round(_DIGITS_TEST_FRACTION * x.shape[0]))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return x[idx], y[idx]


# ---------------------------------------------------------------------------- registry
_MIXTURES = ("8gaussians", "25gaussians")
_TOYS = {"moons": two_moons, "swissroll": swiss_roll, "circles": circles, "checkerboard": checkerboard}
DATASETS = _MIXTURES + tuple(_TOYS) + ("shapes8x8", "digits8x8")
_NUM_CLASSES = {"8gaussians": 8, "25gaussians": 25, "moons": 2, "circles": 2, "checkerboard": 8, "shapes8x8": 10, "digits8x8": 10}


def load_dataset(name: str, n: int | None, rng: np.random.Generator | None = None, *, split: str = "train", **options) -> Dataset:
    """The data set ``name`` (one of ``DATASETS``) with ``n`` points drawn with ``rng``;
    2D sets centred and scaled to unit population variance, MATH.md (14.19).

    Generated sets need ``n`` and ``rng``; options go to the generator (e.g. ``std`` for
    the mixtures, ``noise`` for moons).  "digits8x8" is finite: ``n=None`` returns the
    whole ``split``, an integer n a random subset of it without replacement (drawn with
    ``rng``).  The swiss roll is unlabelled (y None).

    Parameters
    ----------
    name : str
        One of ``DATASETS``.
    n : int or None
        Number of points (required for generated sets; for the digits, a random subset).
    rng : int or numpy.random.Generator, optional
        Draws the points (SPEC 7).
    split : {"train", "test", "all"}
        For the digits.
    **options
        Passed to the generator (e.g. ``std``, ``noise``).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        For an unknown name, a bad n or missing arguments.
    """
    if not isinstance(split, str) or split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)} (name)")
    if name == "digits8x8":
        x, y = digits8x8(split, **options)
        if n is not None:
            n = _check_n(n)
            if n > x.shape[0]:
                raise ValueError(f"n = {n} exceeds the {x.shape[0]} images of the digits {split!r} split")
            rng = _check_rng(rng)
            idx = rng.permutation(x.shape[0])[:n]
            x, y = x[idx], y[idx]
        return Dataset(name, x, y, 10)
    if n is None:
        raise ValueError(f"data set {name!r} is generated: pass the number of points n")
    if name in _MIXTURES:
        w, mu, var = mixture_parameters(name, options.pop("std", None))
        if options:
            raise TypeError(f"unexpected options for {name!r}: {sorted(options)}")
        x, y = sample_mixture(w, mu, var, n, rng)
        return Dataset(name, x, y, _NUM_CLASSES[name], _lazy_oracle(w, mu, var))
    if name == "shapes8x8":
        x, y = shapes8x8(n, rng, **options)
        return Dataset(name, x, y, 10)
    x, y = _TOYS[name](n, rng, **options)
    if name == "swissroll":
        return Dataset(name, x, None, 0)
    return Dataset(name, x, y, _NUM_CLASSES[name])


def _lazy_oracle(w, mu, var):
    try:
        from .oracles import GaussianMixture
    except ImportError:  # pragma: no cover - oracles are part of the package
        return None
    return GaussianMixture(w, mu, var)
