"""The flat Adam (refdiff.nn.optim.FlatAdam) against the per-key reference adam_update,
and its use by the training loop (refdiff.training.adam_step)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.nn.optim import FlatAdam, adam_init, adam_update, adam_update_flat
from refdiff.training import adam_step

_shapes = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 5)).map(lambda s: s if s[0] > 1 else (s[1],)),
                   min_size=1, max_size=6)


def _host(a):
    return np.asarray(a) if not hasattr(a, "get") else a.get()


def _per_key(params, grads, state, decayed, **kw):
    """The reference: adam_update once per decay subset (what adam_step did before)."""
    wd = kw.pop("weight_decay")
    out_p, out_s = {}, {"step": state["step"] + 1}
    for subset, w in (([n for n in params if n in decayed], wd), ([n for n in params if n not in decayed], 0.0)):
        if subset:
            sub = {"step": state["step"], **{f"{m}/{n}": state[f"{m}/{n}"] for n in subset for m in "mv"}}
            p, s = adam_update({n: params[n] for n in subset}, {n: grads[n] for n in subset}, sub, weight_decay=w, **kw)
            out_p.update(p)
            out_s.update(s)
    return out_p, out_s


@given(shapes=_shapes, seed=st.integers(0, 2**16), wd=st.sampled_from([0.0, 0.3]),
       decoupled=st.booleans(), f32=st.booleans(), inplace=st.booleans())
@settings(max_examples=30, deadline=None)
def test_flat_adam_is_bit_identical_to_per_key_adam(shapes, seed, wd, decoupled, f32, inplace):
    """MATH.md (14.11), MATH.md (14.12), MATH.md (14.13): five steps of FlatAdam (one update over
    one flat array, decay on a random subset of keys chosen per element by ``where``) equal
    five steps of adam_update per decay subset BIT FOR BIT, parameters and both moments, in
    float64 and float32, with a learning rate that changes every step (warm-up) and the bias
    corrections 1 - beta^k of every step.  Bit-identity is exact, not a tolerance: both apply
    the same correctly rounded IEEE operations (+, *, /, sqrt) in the same order to each
    element, and a non-decayed element is selected unchanged, never multiplied by 1.0.
    Steps alternate between feeding back FlatAdam's own views (its cached flat buffers are
    reused) and fresh copies (gathered again), which must not matter, with and without the
    in-place mode (``out=`` ufuncs on the flat buffers); the caller's initial arrays are
    never written."""
    rng = np.random.default_rng(seed)
    dt = np.float32 if f32 else np.float64
    params = {f"k{i}": rng.standard_normal(s).astype(dt) for i, s in enumerate(shapes)}
    decayed = {n for n in params if rng.random() < 0.5}
    pr, sr = dict(params), adam_init(params)
    pf, sf = dict(params), adam_init(params)
    opt = FlatAdam(inplace=inplace)
    keep = {n: v.copy() for n, v in params.items()}
    for step in range(5):
        grads = {n: rng.standard_normal(p.shape).astype(dt) for n, p in params.items()}
        kw = dict(lr=1e-2 * (step + 1) / 5, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd, decoupled=decoupled)
        pr, sr = _per_key(pr, grads, sr, decayed, **kw)
        pf, sf = opt.update(pf, grads, sf, decayed=decayed, **kw)
        if step % 2:
            pf = {n: v.copy() for n, v in pf.items()}
            sf = {n: (v.copy() if n != "step" else v) for n, v in sf.items()}
        assert sf["step"] == sr["step"] == step + 1
        for n in params:
            assert pf[n].dtype == dt and pf[n].shape == params[n].shape
            assert np.array_equal(pf[n], pr[n]), n
            assert np.array_equal(sf["m/" + n], sr["m/" + n]) and np.array_equal(sf["v/" + n], sr["v/" + n]), n
    assert all(np.array_equal(params[n], keep[n]) for n in params)


def test_flat_adam_in_every_namespace(xp):
    """MATH.md (14.11) and MATH.md (14.12): FlatAdam in NumPy, array_api_strict (and CuPy on a GPU)
    equals the per-key reference bit for bit (same elementwise operations), keeps the
    namespace and the shapes, and leaves its inputs unchanged (no in-place update)."""
    rng = np.random.default_rng(1)
    host = {"a.w": rng.standard_normal((3, 4)), "a.b": rng.standard_normal(4), "c.w": rng.standard_normal((2, 2, 3))}
    P = {n: xp.asarray(v) for n, v in host.items()}
    G = {n: xp.asarray(rng.standard_normal(v.shape)) for n, v in host.items()}
    S = adam_init(P)
    opt = FlatAdam()
    pf, sf = opt.update(P, G, S, lr=0.05, weight_decay=0.2, decayed={"a.w", "c.w"})
    pf, sf = opt.update(pf, G, sf, lr=0.05, weight_decay=0.2, decayed={"a.w", "c.w"})
    pr, sr = _per_key(P, G, S, {"a.w", "c.w"}, lr=0.05, weight_decay=0.2)
    pr, sr = _per_key(pr, G, sr, {"a.w", "c.w"}, lr=0.05, weight_decay=0.2)
    for n in host:
        assert type(pf[n]) is type(P[n]) and tuple(pf[n].shape) == host[n].shape
        assert np.array_equal(_host(pf[n]), _host(pr[n])) and np.array_equal(_host(sf["v/" + n]), _host(sr["v/" + n]))
        assert np.array_equal(_host(P[n]), host[n])  # inputs untouched
    assert not np.any(_host(S["m/a.w"]))


def test_adam_update_flat_hand_step():
    """MATH.md (14.11): the first Adam step is p - lr g / (|g| + eps) (bias-corrected
    moments m_hat = g, v_hat = g^2), here for p = 1, g = 0.5, lr = 0.1 -> 0.9 + 2e-9; a
    decayed key (AdamW, MATH.md (14.12)) first shrinks by 1 - lr wd = 0.95 -> 0.85 + 2e-9."""
    P = {"x.w": np.ones((1, 1)), "x.b": np.ones(1)}
    G = {n: np.full(v.shape, 0.5) for n, v in P.items()}
    p, s = adam_update_flat(P, G, adam_init(P), lr=0.1, weight_decay=0.5, decayed={"x.w"})
    assert p["x.b"][0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15)
    assert p["x.w"][0, 0] == pytest.approx(0.95 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        adam_update_flat(P, G, adam_init(P), lr=-1.0)


def test_adam_step_flat_equals_reference_and_leaves_frozen_keys():
    """MATH.md (14.20) and MATH.md (14.21): adam_step through FlatAdam (the default, as fit runs it)
    equals adam_step with the per-key reference (flat=False) bit for bit over three steps;
    frozen keys keep the very same array objects and untouched (zero) moments."""
    rng = np.random.default_rng(3)
    groups = {"params": {"l.w": rng.standard_normal((3, 3)).astype(np.float32),
                         "l.b": rng.standard_normal(3).astype(np.float32),
                         "f.w": rng.standard_normal((2, 3)).astype(np.float32)}}
    keys, decayed = ["params/l.w", "params/l.b"], {"params/l.w"}
    opt0 = adam_init({f"params/{k}": v for k, v in groups["params"].items()})
    ga, oa, gb, ob, flat = groups, opt0, groups, opt0, FlatAdam()
    for step in range(3):
        g = {n: rng.standard_normal(groups["params"][n.split("/")[1]].shape).astype(np.float32) for n in keys}
        kw = dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1)
        ga, oa = adam_step(ga, g, oa, keys, decayed, flat=flat, **kw)
        gb, ob = adam_step(gb, g, ob, keys, decayed, flat=False, **kw)
        for k in groups["params"]:
            assert np.array_equal(ga["params"][k], gb["params"][k])
        assert oa.keys() == ob.keys() and all(np.array_equal(oa[k], ob[k]) for k in oa)
    assert ga["params"]["f.w"] is groups["params"]["f.w"] and oa["m/params/f.w"] is opt0["m/params/f.w"]
    assert not np.any(oa["v/params/f.w"]) and not np.array_equal(ga["params"]["l.w"], groups["params"]["l.w"])


def test_flat_adam_fast_path_same_bits_and_still_checks_gradients():
    """MATH.md (14.11), MATH.md (14.12): the in-place FlatAdam's fast path (its own views fed
    back: no per-parameter checks, the gradients copied into one persistent buffer) gives the
    same bits as the per-key reference over six steps with decay on a subset; the gradient
    buffer is the one kept (the fast path ran); a gradient of the wrong shape, a missing
    gradient or a gradient of another dtype leaves the fast path and is checked as before."""
    rng = np.random.default_rng(7)
    params = {"a.w": rng.standard_normal((4, 3)).astype(np.float32), "a.b": rng.standard_normal(3).astype(np.float32),
              "c.w": rng.standard_normal((2, 2, 3)).astype(np.float32)}
    decayed = {"a.w", "c.w"}
    pr, sr = dict(params), adam_init(params)
    pf, sf = dict(params), adam_init(params)
    opt = FlatAdam(inplace=True)
    bufs = []
    for step in range(6):
        grads = {n: rng.standard_normal(p.shape).astype(np.float32) for n, p in params.items()}
        kw = dict(lr=1e-2 * (step + 1), betas=(0.9, 0.99), eps=1e-8, weight_decay=0.3)
        pr, sr = _per_key(pr, grads, sr, decayed, **kw)
        pf, sf = opt.update(pf, grads, sf, decayed=decayed, **kw)
        bufs.append(getattr(opt._last[1], "gbuf", None))
        for n in params:
            assert np.array_equal(pf[n], pr[n]) and np.array_equal(sf["m/" + n], sr["m/" + n])
            assert np.array_equal(sf["v/" + n], sr["v/" + n])
    assert bufs[0] is None and bufs[1] is not None and all(b is bufs[1] for b in bufs[1:])
    kw0 = dict(lr=0.1, weight_decay=0.3, decayed=decayed)  # what the fast path would take
    bad = {n: np.zeros(p.shape, np.float32) for n, p in params.items()}
    with pytest.raises(ValueError, match=r"grads\['a.w'\] has shape"):
        opt.update(pf, {**bad, "a.w": np.zeros((3, 4), np.float32)}, sf, **kw0)
    with pytest.raises(ValueError, match="missing"):
        opt.update(pf, {n: g for n, g in bad.items() if n != "c.w"}, sf, **kw0)
    with pytest.raises(ValueError, match="unexpected"):
        opt.update(pf, {**bad, "z": np.zeros(2, np.float32)}, sf, **kw0)
    with pytest.raises(TypeError):
        opt.update(pf, {**bad, "a.b": [0.0, 0.0, 0.0]}, sf, **kw0)
    with pytest.raises(ValueError, match="lr must be"):
        opt.update(pf, bad, sf, **{**kw0, "lr": -0.1})
    other = {n: (np.abs(v) + 0.5 if n != "step" else v) for n, v in sf.items()}  # other moments, the same params
    ref_p, _ = FlatAdam().update({n: v.copy() for n, v in pf.items()}, bad, other, **kw0)
    got_p, _ = opt.update(pf, bad, other, **kw0)
    assert all(np.array_equal(got_p[n], ref_p[n]) for n in params)
    g64 = {**{n: rng.standard_normal(p.shape).astype(np.float32) for n, p in params.items()},
           "a.b": rng.standard_normal(3)}  # one float64 gradient: the general path (not cast to float32 first)
    ref_p, _ = FlatAdam().update({n: v.copy() for n, v in pf.items()}, g64,
                                 {n: (v.copy() if n != "step" else v) for n, v in sf.items()}, lr=0.1,
                                 weight_decay=0.3, decayed=decayed)
    b0 = opt._last[1]
    before = b0.gbuf.copy()
    got_p, _ = opt.update(pf, g64, sf, lr=0.1, weight_decay=0.3, decayed=decayed)
    assert all(np.array_equal(got_p[n], ref_p[n]) for n in params)
    assert np.array_equal(b0.gbuf, before)  # the fast path's buffer was not written
