"""Namespace parity: the same host inputs and host noise give the NumPy result in another
array namespace.

The ``other`` fixture is array_api_strict (always; a strict CPU namespace that fails on any
stray NumPy call, so these cases also prove the code stays inside the array API) and CuPy
(marked ``gpu``: skipped with the reason where CuPy or a CUDA device is missing).

Tolerances: float64 1e-12 relative (the same algorithms on IEEE doubles; CUDA's exp/log
differ from the host libm by a few ulp, amplified at most ~1e2 by the loops here);
float32 networks 1e-4 relative with an absolute floor of 1e-5 (float32 rounding of
reductions in a different order, accumulated over ~20 layers).
"""

import numpy as np
import pytest

import refdiff
from refdiff.backend import to_numpy
from conftest import CUPY, CUPY_REASON


def _others():
    import array_api_strict

    params = [pytest.param(array_api_strict, id="strict")]
    params.append(pytest.param(CUPY, id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(CUPY is None, reason=CUPY_REASON or "no CuPy")]))
    return params


@pytest.fixture(params=_others())
def other(request):
    return request.param


def _on(xp, a):
    a = np.asarray(a)
    return xp.asarray(a, dtype=getattr(xp, str(a.dtype)))


def _cmp(a, b, rtol=1e-12, atol=1e-14, what=""):
    if isinstance(a, (tuple, list)):
        for i, (u, v) in enumerate(zip(a, b)):
            _cmp(u, v, rtol, atol, f"{what}[{i}]")
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _cmp(a[k], b[k], rtol, atol, f"{what}[{k}]")
        return
    np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=rtol, atol=atol, err_msg=what)


def _both(fn, other, *host_args):
    """fn evaluated on NumPy and on ``other`` with the same host arguments."""
    return fn(np, *host_args), fn(other, *[_on(other, a) if isinstance(a, np.ndarray) else a for a in host_args])


SCHED = refdiff.make_schedule("cosine", 200)
RNG = np.random.default_rng(0)
X0 = RNG.standard_normal((6, 3, 4, 4))
EPS = RNG.standard_normal((6, 3, 4, 4))
T_ARR = np.array([0, 5, 50, 100, 150, 199])


def test_forward_and_posterior_parity(other):
    def f(xp, x0, eps, t):
        xt = refdiff.q_sample(SCHED, x0, t, eps)
        return xt, refdiff.q_posterior_mean_variance(SCHED, x0, xt, t)[0], refdiff.q_mean_variance(SCHED, x0, t)[1]

    a, b = _both(f, other, X0, EPS, T_ARR)
    _cmp(a, b)


@pytest.mark.parametrize("src", refdiff.PREDICTION_TYPES)
def test_parameterization_parity(other, src):
    def f(xp, x, out, t):
        al, sg = refdiff.alpha_sigma(SCHED, t, x)
        return [refdiff.convert(out, x, al, sg, src, dst) for dst in refdiff.PREDICTION_TYPES] + [
            refdiff.dynamic_threshold(out, 0.9, 2.0)]

    a, b = _both(f, other, X0, EPS, T_ARR)
    _cmp(a, b, rtol=1e-11)


def test_elbo_parity(other):
    """normal_kl, the discretized decoder and the whole nll_bound breakdown."""
    bins = 17
    x = np.round((np.clip(X0, -1, 1) + 1) / 2 * (bins - 1)) / (bins - 1) * 2 - 1
    data = refdiff.GaussianData(np.zeros(48), 0.3)
    sched = refdiff.make_schedule("linear", 40)

    def f(xp, x, mean, logv):
        kl = refdiff.normal_kl(mean, logv, x, 0.5 * logv)
        ll = refdiff.discretized_gaussian_log_likelihood(x, mean, 0.5 * logv - 1.0, bins=bins)
        nb = refdiff.nll_bound(data.as_model(sched), sched, x, rng=np.random.default_rng(3), bins=bins)
        return kl, ll, nb.prior_nats, nb.decoder_nats, nb.terms_nats, nb.total_nats, nb.bits_per_dim

    a, b = _both(f, other, x, EPS * 0.1, np.full(x.shape, -1.3))
    _cmp(a, b, rtol=1e-11, atol=1e-12)


def test_oracle_parity(other):
    mix = refdiff.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.2]], [[0.1, 0.3], [0.2, 0.05]])

    def f(xp, x, al, sg):
        return mix.eps(x, al, sg), mix.score(x, al, sg), mix.log_prob_t(x, al, sg), mix.x0_mean(x, al, sg)

    al = np.linspace(0.1, 0.99, 5)
    a, b = _both(f, other, RNG.standard_normal((5, 2)), al, np.sqrt(1 - al**2))
    _cmp(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-12, 1e-13), ("float32", 1e-4, 1e-5)])
def test_unet_forward_backward_parity(other, dtype, rtol, atol):
    """Every layer is exercised by the U-Net's forward and backward (with class conditioning)."""
    from refdiff.nn import UNet, UNetConfig

    model = UNet(UNetConfig(base_channels=16, num_classes=3, groups=4))
    params_np = model.init_params(np.random.default_rng(1), dtype=dtype)
    params_np = {k: np.asarray(v) for k, v in params_np.items()}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 8, 8)).astype(dtype)
    t = np.array([0.0, 10.5, 200.0, 999.0])
    y = np.array([0, 1, 2, 3])
    dout = rng.standard_normal(x.shape).astype(dtype)

    def f(xp, x, t, y, dout):
        params = {k: _on(xp, v) for k, v in params_np.items()}
        out, cache = model.forward(params, x, t, y)
        grads, dx = model.backward(params, cache, dout)
        return out, dx, grads

    a, b = _both(f, other, x, t, y, dout)
    _cmp(a, b, rtol=rtol, atol=atol)


SAMPLER_METHODS = sorted(refdiff.samplers.loop.sampler_methods())


@pytest.mark.parametrize("method", SAMPLER_METHODS)
def test_sampler_parity(other, method):
    """A whole seeded sampling run: the host generator gives both namespaces the same noise,
    so stochastic samplers agree too."""
    sched = refdiff.make_schedule("linear", 100)
    mix = refdiff.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.1, 0.2])
    ts = refdiff.timesteps(100, 8, "trailing")
    xT = np.random.default_rng(5).standard_normal((16, 2))

    def f(xp, xT):
        model = mix.as_model(sched, "epsilon")
        return refdiff.sample(model, xT, sched, ts, method, rng=np.random.default_rng(9), progress=False)

    a, b = _both(f, other, xT)
    _cmp(a, b, rtol=1e-11, atol=1e-12)


def test_checkpoint_crosses_namespaces(other, tmp_path):
    """A checkpoint written from ``other``'s arrays loads as NumPy with identical values, and
    a NumPy checkpoint loads into ``other``."""
    from refdiff.nn import MLP, MLPConfig
    from refdiff.nn.checkpoint import load_checkpoint, save_checkpoint

    model = MLP(MLPConfig())
    p_np = model.init_params(np.random.default_rng(0))
    p_other = {k: _on(other, np.asarray(v)) for k, v in p_np.items()}
    path = save_checkpoint(tmp_path / "o.npz", model=model, params=p_other, step=3)
    back = load_checkpoint(path)
    for k in p_np:
        np.testing.assert_array_equal(to_numpy(back.params[k]), np.asarray(p_np[k]))
    path2 = save_checkpoint(tmp_path / "n.npz", model=model, params=p_np, step=3)
    into = load_checkpoint(path2, xp=other)
    for k in p_np:
        assert type(into.params[k]).__module__.split(".")[0] == other.__name__.split(".")[0]
        np.testing.assert_array_equal(to_numpy(into.params[k]), np.asarray(p_np[k]))


def _layer_cases():
    """(name, forward, backward, host args, kwargs) for every layer of refdiff.nn.layers and
    multi-head attention: the reference forms (MATH.md ch. 13) and the new ones."""
    from refdiff.nn import layers as L

    r = np.random.default_rng(11)
    x4 = r.standard_normal((3, 4, 6, 6))
    tok = r.standard_normal((3, 5, 8))
    keep = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)
    return [
        ("linear", L.linear_forward, L.linear_backward, (tok[:, 0], r.standard_normal((8, 6)), r.standard_normal(6)), {}),
        ("silu", L.silu_forward, L.silu_backward, (x4,), {}),
        ("gelu", L.gelu_forward, L.gelu_backward, (tok,), {}),
        ("gelu_tanh", L.gelu_forward, L.gelu_backward, (tok,), {"approximate": "tanh"}),
        ("geglu", L.geglu_forward, L.geglu_backward, (tok, r.standard_normal((8, 12)), r.standard_normal(12)), {}),
        ("conv3x3", L.conv2d_forward, L.conv2d_backward, (x4, r.standard_normal((5, 4, 3, 3)), r.standard_normal(5)), {}),
        ("conv_stride2", L.conv2d_forward, L.conv2d_backward, (x4, r.standard_normal((5, 4, 3, 3)), r.standard_normal(5)),
         {"stride": 2, "pad": 1}),
        ("conv_transpose", L.conv_transpose2d_forward, L.conv_transpose2d_backward,
         (x4, r.standard_normal((4, 3, 4, 4)), r.standard_normal(3)), {"stride": 2, "pad": 1}),
        ("upsample2x", L.upsample2x_forward, L.upsample2x_backward, (x4,), {}),
        ("avgpool2x", L.avgpool2x_forward, L.avgpool2x_backward, (x4,), {}),
        ("patchify", L.patchify_forward, L.patchify_backward, (x4, 2), {}),
        ("pixel_shuffle", L.pixel_shuffle_forward, L.pixel_shuffle_backward, (x4, 2), {}),
        ("pixel_unshuffle", L.pixel_unshuffle_forward, L.pixel_unshuffle_backward, (x4, 2), {}),
        ("groupnorm", L.groupnorm_forward, L.groupnorm_backward, (x4, r.standard_normal(4), r.standard_normal(4), 2), {}),
        ("layernorm", L.layernorm_forward, L.layernorm_backward, (tok, r.standard_normal(8), r.standard_normal(8)), {}),
        ("adaln", L.adaln_forward, L.adaln_backward,
         (tok, r.standard_normal((3, 7)), r.standard_normal((7, 16)), r.standard_normal(16)), {}),
        ("attention_masked", L.attention_forward, L.attention_backward,
         (r.standard_normal((3, 4, 8)), r.standard_normal((3, 5, 8)), r.standard_normal((3, 5, 8)), keep), {}),
        ("concat", L.concat_forward, L.concat_backward, (x4, x4[:, :2] * 0.5), {}),
    ]


LAYER_CASES = _layer_cases()


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-12, 1e-13), ("float32", 1e-4, 1e-5)])
@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_forward_backward_parity(other, case, dtype, rtol, atol):
    """Every layer's forward and backward (MATH.md ch. 13) gives the NumPy result in ``other``:
    the same host inputs and output gradient, float64 to 1e-12 and float32 to 1e-4."""
    name, fwd, bwd, args, kw = case
    host = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args)
    out0, _ = fwd(*host, **kw)
    dout = np.random.default_rng(12).standard_normal(tuple(out0.shape)).astype(dtype)

    def f(xp, *a):
        out, cache = fwd(*a[:-1], **kw)
        return out, bwd(a[-1], cache)

    a, b = _both(f, other, *host, dout)
    _cmp(a, b, rtol=rtol, atol=atol, what=name)


@pytest.mark.parametrize("fused, cross", [(True, False), (False, False), (False, True)])
def test_multihead_attention_parity(other, fused, cross):
    """Multi-head attention (MATH.md (13.23)), self or cross with a key-padding mask, fused or
    separate projections: forward, dx, dcontext and every parameter gradient as NumPy's."""
    from refdiff.nn.attention import mha_backward, mha_forward, mha_init

    P = {}
    mha_init(P, "a", 8, 2, np.random.default_rng(4), context_dim=6 if cross else None, fused=fused)
    P = {k: np.asarray(v) + 0.1 for k, v in P.items()}  # out.w starts at 0 in some inits: move off it
    r = np.random.default_rng(5)
    x = r.standard_normal((3, 4, 8))
    ctx = r.standard_normal((3, 5, 6)) if cross else None
    keep = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)
    keep = keep if cross else keep[:, :4]
    dout = r.standard_normal((3, 4, 8))

    def f(xp, x, keep, dout, *ctx_):
        Px = {k: _on(xp, v) for k, v in P.items()}
        out, cache = mha_forward(Px, "a", x, ctx_[0] if ctx_ else None, heads=2, key_mask=keep)
        G = {}
        dx, dctx = mha_backward(G, Px, "a", dout, cache)
        return out, dx, (dctx if dctx is not None else dx), G

    a, b = _both(f, other, x, keep, dout, *((ctx,) if cross else ()))
    _cmp(a, b, rtol=1e-12, atol=1e-13)
