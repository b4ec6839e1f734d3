"""Toy data sets (refdiff.data): population moments against the stated constants,
the mixture oracles against the samplers, the 8x8 sets' structure, seeding, errors."""

import math
import sys

import numpy as np
import pytest

import refdiff
from refdiff.data import (
    DATASETS,
    SHAPE_CLASSES,
    checkerboard,
    digits8x8,
    load_dataset,
    mixture_parameters,
    shapes8x8,
)

N = 200_000


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians", "moons", "swissroll", "circles", "checkerboard"])
def test_2d_toys_are_centred_with_unit_scale(name):
    """MATH.md (14.19): each 2D toy is centred by its population mean and scaled so that the
    mean of the two per-coordinate population variances is 1 (exactly 1 per coordinate for
    the mixtures, circles and checkerboard).  The constants are derived in the docstrings
    (moons: Var = 3/4 and 9/16 - 1/pi before scaling; swiss roll: quadrature); circles and
    swiss roll add their N(0, 0.05^2) noise after scaling, so their variance is 1 + 0.05^2.  With
    N = 200000 draws, the mean is within 4 standard errors (1/sqrt(N) per unit variance)
    and the variance within 4 standard errors sqrt((m4 - 1) / N)."""
    d = load_dataset(name, N, np.random.default_rng(1))
    x = d.x
    assert x.shape == (N, 2) and x.dtype == np.float64
    se_mean = 4.0 * x.std(0) / math.sqrt(N)
    assert np.all(np.abs(x.mean(0)) < se_mean), x.mean(0)
    var = x.var(0) - (0.05**2 if name in ("circles", "swissroll") else 0.0)
    se_var = 4.0 * np.sqrt(((x - x.mean(0)) ** 4).mean(0) - var**2) / math.sqrt(N)
    if name in ("moons", "swissroll"):
        assert abs(var.mean() - 1.0) < se_var.mean(), var
    else:
        assert np.all(np.abs(var - 1.0) < se_var), var


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_mixture_oracle_describes_the_sampler(name):
    """The oracle returned with a mixture is the distribution the sampler draws from: its
    own sampler (refdiff.GaussianMixture.sample, written independently) gives the same
    component frequencies and per-component means (4 standard errors, fixed seeds), the
    oracle's log-density is higher at the component means than between components, and
    the population covariance sum_k w_k (mu_k mu_k^T + s^2 I) is the identity exactly."""
    d = load_dataset(name, N, np.random.default_rng(2))
    orc = d.oracle
    w, mu, var = mixture_parameters(name)
    cov = (w[:, None, None] * (mu[:, :, None] * mu[:, None, :])).sum(0) + (w * var).sum() * np.eye(2)
    np.testing.assert_allclose(cov, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(orc.means, mu, rtol=1e-15)
    K = len(w)
    freq = np.bincount(d.y, minlength=K) / N
    assert np.all(np.abs(freq - 1.0 / K) < 4 * math.sqrt((1 / K) * (1 - 1 / K) / N))
    xs = refdiff.to_numpy(orc.sample(N, np.random.default_rng(3)))
    for k in (0, K // 2):
        mk = d.x[d.y == k].mean(0)
        assert np.all(np.abs(mk - mu[k]) < 4 * math.sqrt(var[k] / (N / K)))
    assert np.all(np.abs(xs.mean(0) - d.x.mean(0)) < 4 * math.sqrt(2.0 / N))
    between = 0.5 * (mu[0] + mu[1])
    lp = refdiff.to_numpy(orc.log_prob(np.stack([mu[0], between])))
    assert lp[0] > lp[1]


def test_generators_are_seeded():
    """Same Generator state, same data; another seed, other data; no global RNG used."""
    for name in DATASETS:
        if name == "digits8x8":
            continue
        a = load_dataset(name, 50, np.random.default_rng(9))
        np.random.seed(0)
        b = load_dataset(name, 50, np.random.default_rng(9))
        c = load_dataset(name, 50, np.random.default_rng(10))
        assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x), name
        if a.y is not None:
            assert np.array_equal(a.y, b.y) and a.y.dtype == np.int64


def test_checkerboard_lies_on_dark_squares():
    """Every point is on a square (i, j) of the 4x4 board on [-2, 2]^2 with i + j even,
    after undoing the sqrt(3)/2 scaling; the board's square index matches the label."""
    x, y = checkerboard(5000, np.random.default_rng(0))
    u = x / (math.sqrt(3.0) / 2.0) + 2.0
    ij = np.floor(u).astype(int)
    assert np.all((ij >= 0) & (ij <= 3)) and np.all(ij.sum(1) % 2 == 0)
    assert np.all(np.abs(x) <= math.sqrt(3.0) + 1e-12)


def test_shapes8x8_structure():
    """10 labelled classes, NCHW (n, 1, 8, 8), values in [-1, 1]; with noise = 0 the
    background is exactly -1 and the strokes have the class's geometry: a horizontal bar's
    foreground rows number at most 2, a vertical bar's columns at most 2, a diagonal's
    pixels satisfy i - j = const, an anti-diagonal's i + j = const, a filled square is a
    full rectangle."""
    x, y = shapes8x8(2000, np.random.default_rng(0), noise=0.0)
    assert x.shape == (2000, 1, 8, 8) and x.dtype == np.float64 and y.dtype == np.int64
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(len(SHAPE_CLASSES)))
    for img, lab in zip(x[:, 0], y):
        fg = img > -1.0
        assert fg.any()
        ii, jj = np.nonzero(fg)
        if lab == 0:
            assert len(set(ii)) <= 2
        elif lab == 1:
            assert len(set(jj)) <= 2
        elif lab == 2:
            assert len(set(ii - jj)) == 1
        elif lab == 3:
            assert len(set(ii + jj)) == 1
        elif lab == 5:
            assert fg.sum() == (ii.max() - ii.min() + 1) * (jj.max() - jj.min() + 1)
    xn, _ = shapes8x8(100, np.random.default_rng(0))
    assert xn.min() >= -1.0 and xn.max() <= 1.0


def test_digits8x8():
    """The scikit-learn digits: 17 gray levels v/8 - 1 (v = 0..16) in [-1, 1], 10 classes,
    a deterministic 80/20 split whose parts are disjoint and together the whole set."""
    pytest.importorskip("sklearn")
    xa, ya = digits8x8("all")
    xtr, ytr = digits8x8("train")
    xte, yte = digits8x8("test")
    assert xa.shape == (1797, 1, 8, 8)
    levels = np.unique(xa)
    assert np.all(np.isin(levels, np.arange(17) / 8.0 - 1.0)) and levels[0] == -1.0 and levels[-1] == 1.0
    assert xtr.shape[0] + xte.shape[0] == 1797 and xte.shape[0] == round(0.2 * 1797)
    rows = lambda x: {r.tobytes() for r in x.reshape(x.shape[0], -1)}  # noqa: E731
    assert rows(xtr) | rows(xte) == rows(xa)
    assert np.array_equal(digits8x8("test")[0], xte)
    assert set(np.unique(ytr)) == set(range(10))
    d = load_dataset("digits8x8", 100, np.random.default_rng(0), split="test")
    assert d.x.shape == (100, 1, 8, 8) and d.num_classes == 10


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    """Without scikit-learn the error names the install command."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install refdiff\[examples\].*scikit-learn"):
        digits8x8()


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown data set 'spiral'; valid: 8gaussians"):
        load_dataset("spiral", 10, rng)
    with pytest.raises(ValueError, match="pass the number of points"):
        load_dataset("moons", None, rng)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        load_dataset("moons", 0, rng)
    with pytest.raises(TypeError, match="Generator"):
        load_dataset("moons", 10, 4.2)
    with pytest.raises(ValueError, match="std must lie in \\(0, 1\\)"):
        load_dataset("8gaussians", 10, rng, std=1.5)
    with pytest.raises(TypeError, match="unexpected options"):
        load_dataset("8gaussians", 10, rng, noise=0.1)
    with pytest.raises(ValueError, match="unknown mixture"):
        mixture_parameters("3gaussians")
    with pytest.raises(ValueError, match="split must be"):
        digits8x8("validation")
    with pytest.raises(ValueError, match="factor"):
        load_dataset("circles", 10, rng, factor=1.0)
    if "sklearn" in sys.modules or _has_sklearn():
        with pytest.raises(ValueError, match="exceeds the 359 images"):
            load_dataset("digits8x8", 1000, rng, split="test")


def _has_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True
