"""The conventions of scientific Python and the agreement of the API with the CLI:
``rng`` is an int seed or a Generator everywhere (SPEC 7), ``refdiff.timesteps`` defaults
to the spacing the CLI and README use, top-level names are not modules, and the CLI's help,
behaviour and domains match the API's."""

from __future__ import annotations

import types

import numpy as np
import pytest

import refdiff
from refdiff import backend
from refdiff.cli import build_parser, main

MIX = refdiff.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.1, 0.1])
SCHED = refdiff.make_schedule("linear", 100)


# ---------------------------------------------------------------------------- rng (SPEC 7)
def test_check_rng_follows_spec7():
    """An int seed gives np.random.default_rng(seed) (same stream); a Generator is returned
    as is (its state is shared, not copied); a SeedSequence is a seed; legacy RandomState,
    floats, bools and strings are refused naming the type; negative seeds naming the value."""
    assert np.array_equal(backend.check_rng(7).standard_normal(5), np.random.default_rng(7).standard_normal(5))
    g = np.random.default_rng(3)
    assert backend.check_rng(g) is g
    ss = np.random.SeedSequence(11)
    assert np.array_equal(backend.check_rng(ss).random(3), np.random.default_rng(np.random.SeedSequence(11)).random(3))
    assert isinstance(backend.check_rng(None), np.random.Generator)
    for bad in (np.random.RandomState(0), 0.5, True, "0"):
        with pytest.raises(TypeError, match=type(bad).__name__):
            backend.check_rng(bad)
    with pytest.raises(ValueError, match="-1"):
        backend.check_rng(-1)


@pytest.mark.parametrize("method", ["ddpm", "euler_ancestral", "dpmpp_2m_sde"])
def test_sample_with_int_seed_equals_generator(method):
    """refdiff.sample(..., rng=0) draws exactly what rng=np.random.default_rng(0) draws
    (stochastic samplers, so the noise matters); a different seed gives different samples."""
    x = np.random.default_rng(1).standard_normal((6, 2))
    ts = refdiff.timesteps(100, 8)
    run = lambda rng: refdiff.sample(MIX.as_model(SCHED), x, SCHED, ts, method, rng=rng, progress=False)  # noqa: E731
    a, b = run(0), run(np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, run(1))


def test_every_rng_entry_point_takes_a_seed():
    """Data, oracles, network initialisation, losses and metrics accept a seed and agree
    with the Generator of that seed."""
    from refdiff.data import load_dataset
    from refdiff.losses import drop_labels
    from refdiff.metrics import random_directions
    from refdiff.nn import MLP, MLPConfig

    G = np.random.default_rng
    np.testing.assert_array_equal(load_dataset("moons", 10, 5).x, load_dataset("moons", 10, G(5)).x)
    np.testing.assert_array_equal(MIX.sample(7, 2), MIX.sample(7, G(2)))
    net = MLP(MLPConfig(dim=2, hidden=8, layers=1))
    p1, p2 = net.init_params(4), net.init_params(G(4))
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    y = np.arange(10) % 3
    np.testing.assert_array_equal(drop_labels(y, 0.5, 9, 3), drop_labels(y, 0.5, G(9), 3))
    np.testing.assert_array_equal(random_directions(3, 2, 8), random_directions(3, 2, G(8)))


# ---------------------------------------------------------------------------- default spacing
@pytest.mark.parametrize("n", [1, 7, 10, 48, 999])
def test_default_spacing_is_trailing_and_starts_at_T_minus_1(n):
    """refdiff.timesteps(T, n) is the "trailing" grid that `refdiff sample` uses by default,
    so it starts at T - 1, where x_T ~ N(0, I) is the right start (alpha_bar_{T-1} ~ 4e-5)."""
    ts = refdiff.timesteps(1000, n)
    np.testing.assert_array_equal(ts, refdiff.timesteps(1000, n, "trailing"))
    assert ts[0] == 999
    assert build_parser().parse_args(["sample", "x"]).spacing == "trailing"


# ---------------------------------------------------------------------------- top-level names
def test_top_level_names_are_not_modules():
    """No public top-level name is a module other than refdiff's own submodules
    (refdiff.ddim used to be the sampler family module next to the function
    refdiff.dpmpp_2m); every name in refdiff.__all__ exists and is not a module."""
    for name in dir(refdiff):
        v = getattr(refdiff, name)
        if isinstance(v, types.ModuleType) and not name.startswith("_"):
            assert v.__name__ == f"refdiff.{name}", (name, v.__name__)
    assert not hasattr(refdiff, "ddim") and not hasattr(refdiff, "ddpm")
    for name in refdiff.__all__:
        assert not isinstance(getattr(refdiff, name), types.ModuleType), name
    assert {"ddim_step", "ddpm_step", "dpmpp_2m", "sample", "timesteps"} <= set(refdiff.__all__)
    import refdiff.samplers.ddim as ddim_module  # the family module is still reachable by its path
    assert ddim_module.ddim_step is refdiff.ddim_step


# ---------------------------------------------------------------------------- CLI agrees with help and API
def test_weighting_none_is_accepted_as_the_help_says():
    """`train --help` says the weighting defaults to none; `--weighting none` parses and is
    the default (it maps to weighting=None in refdiff.train)."""
    p = build_parser()
    assert p.parse_args(["train"]).weighting == "none"
    assert p.parse_args(["train", "--weighting", "none"]).weighting == "none"
    help_text = p._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: none)" in help_text


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cond")
    assert main(["train", "--steps", "2", "--conditional", "--out", str(d), "--n", "200", "--hidden", "8",
                 "--layers", "1", "--batch-size", "16", "--T", "20", "--no-progress", "--weighting", "none"]) == 0
    return d


def test_negative_guidance_same_domain_in_cli_and_api(cond_ckpt, tmp_path):
    """A negative scale w (guidance away from the class) is accepted by the API and the CLI
    alike; in the 'w' convention w = -1 gives 2 eps_u - eps_c (MATH.md (12.2) at w = -1)."""
    u, c = np.array([[1.0, 2.0]]), np.array([[0.5, -1.0]])
    np.testing.assert_allclose(refdiff.cfg_combine(u, c, -1.0), 2 * u - c, rtol=1e-15)
    assert main(["sample", str(cond_ckpt), "--steps", "3", "--n", "8", "--class", "1", "--guidance-scale", "-1",
                 "--out", str(tmp_path / "neg.npz"), "--no-progress"]) == 0
    assert np.all(np.isfinite(np.load(tmp_path / "neg.npz")["x"]))


def test_sample_files_are_named_by_every_distinguishing_option(cond_ckpt):
    """Two `refdiff sample` runs that differ only in the class (or seed, or guidance) write
    different files; the same options write the same name."""
    base = ["sample", str(cond_ckpt), "--steps", "2", "--n", "4", "--no-progress"]
    for extra in (["--class", "0"], ["--class", "1"], ["--class", "1", "--guidance-scale", "2"],
                  ["--class", "1", "--seed", "3"]):
        assert main(base + extra) == 0
    names = sorted(p.name for p in cond_ckpt.glob("samples_*.npz"))
    assert len(names) == 4, names
    assert "samples_dpmpp_2m_2steps_trailing_n4_seed0_class1_w2.npz" in names


def test_threads_option_caps_blas():
    """Every subcommand takes --threads; the cap is applied through threadpoolctl."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from refdiff.cli import _blas_threads

    p = build_parser()
    for cmd in ("demo", "train", "sample", "elbo", "orders", "vectors", "check"):
        argv = [cmd] + {"sample": ["x"], "vectors": ["x"], "check": ["a", "b"], "elbo": ["--oracle"]}.get(cmd, []) + ["--threads", "2"]
        assert p.parse_args(argv).threads == 2
    with _blas_threads(1):
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)


def test_version_metadata_agrees_with_the_cli(capsys):
    """`refdiff --version` prints refdiff.__version__, which is the installed distribution's
    version when refdiff is installed (pip install -e . or a wheel); skipped when it runs
    from a bare checkout on PYTHONPATH, where no metadata exists."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"refdiff {refdiff.__version__}"
    import importlib.metadata as md

    try:
        installed = md.version("refdiff")
    except md.PackageNotFoundError:
        pytest.skip("refdiff is not installed (running from the checkout)")
    assert installed == refdiff.__version__
