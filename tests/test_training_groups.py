"""The training loop over parameter groups (MATH.md (14.20), (14.21), (14.22)): frozen
parameters, weight decay on matrices only, a frozen teacher with a trainable student and
its bit-identical resume; refdiff.load round trips and checkpoint validation."""

import json

import numpy as np
import pytest

import refdiff
from refdiff.nn import MLP, MLPConfig, UNet, UNetConfig
from refdiff.nn.checkpoint import load_checkpoint, save_checkpoint
from refdiff.train import train
from refdiff.training import decayed_keys, fit, init_state, load_fit, save_fit, trainable_keys

SCHED = refdiff.make_schedule("cosine", 100)  # alpha_bar_T ~ 2e-7: x_T ~ N(0, I) is the right start


def _data(n=512, seed=0, mean=(2.0, -1.0), std=0.5):
    return np.random.default_rng(seed).normal(mean, std, size=(n, 2))


def _mlp(**kw):
    return MLP(MLPConfig(dim=2, hidden=16, layers=2, time_embed_dim=8, **kw))


def test_frozen_parameters_stay_bit_identical_with_untouched_adam_state():
    """MATH.md (14.20): after 100 AdamW updates with weight decay (on every key,
    ``decay="all"``) a parameter outside the trainable patterns is bit-identical to its
    initial value, its Adam moments are still exactly zero and its EMA equals it, while
    every trainable parameter moved."""
    model = _mlp()
    init = model.init_params(np.random.default_rng(0))
    res = train(model, _data(), schedule=SCHED, steps=100, batch_size=32, lr=1e-2, weight_decay=0.1, decay="all",
                trainable=["layer*", "out.*"], eval_size=0, progress=False, seed=0)
    frozen = [k for k in init if k.startswith(("in.", "temb."))]
    assert frozen and len(frozen) < len(init)
    for k in init:
        if k in frozen:
            assert np.array_equal(res.params[k], init[k]) and np.array_equal(res.ema_params[k], init[k]), k
            assert not np.any(res.opt_state["m/params/" + k]) and not np.any(res.opt_state["v/params/" + k]), k
        else:
            assert not np.array_equal(res.params[k], init[k]), k
    with pytest.raises(ValueError, match=r"trainable pattern 'lora\.\*' of group 'params' matches no parameter"):
        train(model, _data(), schedule=SCHED, steps=1, trainable=["out.*", "lora.*"], progress=False)


def test_weight_decay_only_on_weight_matrices():
    """MATH.md (14.21): with zero gradients one AdamW step leaves (m, v) = 0, so the only
    change is the decoupled decay p <- p (1 - lr mu) on the decayed keys; by default those
    are exactly the weight matrices and kernels (keys .w with >= 2 axes), never biases,
    GroupNorm gains/shifts or embedding tables; ``decay="all"`` decays every key."""
    net = UNet(UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=3))
    P = net.init_params(np.random.default_rng(0), dtype="float64")
    P = {k: v + 0.5 for k, v in P.items()}  # no zero entries, so decay is visible everywhere
    keys = trainable_keys({"params": P}, {"params": True})
    dec = decayed_keys({"params": P}, keys)
    assert "params/class_emb" not in dec and "params/temb.lin1.w" in dec and "params/down0.res0.conv1.w" in dec
    assert not any(n.endswith((".b", ".gamma", ".beta")) for n in dec)
    lr, mu = 0.1, 0.3
    for rule in ("matrices", "all"):
        st = init_state({"params": P}, {"params": True}, np.random.default_rng(0), 1)
        zero = lambda g, b, r: (0.0, {"params": {k: np.zeros_like(v) for k, v in g["params"].items()}})  # noqa: E731
        st = fit(zero, st, lambda r: None, steps=1, trainable={"params": True}, lr=lr, weight_decay=mu, decay=rule,
                 progress=False)
        want = decayed_keys({"params": P}, keys, rule)
        for k, v in P.items():
            exp = v * (1 - lr * mu) if "params/" + k in want else v
            np.testing.assert_allclose(st.groups["params"][k], exp, rtol=1e-15, atol=0)


def _distill_setup(tmp_path=None):
    teacher, student = _mlp(), _mlp()
    T = teacher.init_params(np.random.default_rng(10), dtype="float64")
    T = {k: v + 0.3 * np.random.default_rng(11).standard_normal(v.shape) for k, v in T.items()}  # non-trivial
    x = _data()

    def next_batch(rng):
        return x[rng.integers(0, x.shape[0], size=64)]

    def loss_fn(groups, x0, rng):
        """Regress the student on the frozen teacher at noised points: 0.5 |s - f|^2 / (N D)."""
        t = rng.integers(0, SCHED.T, size=x0.shape[0])
        a, s = refdiff.alpha_sigma(SCHED, t, x0)
        xt = a * x0 + s * rng.standard_normal(x0.shape)
        target = teacher.apply(groups["teacher"], xt, t)
        out, cache = student.forward(groups["student"], xt, t)
        r = out - target
        grads, _ = student.backward(groups["student"], cache, r / r.size)
        return 0.5 * float(np.sum(r * r)) / r.size, {"student": grads}

    def start(steps):
        rng = np.random.default_rng(3)
        S = student.init_params(rng, dtype="float64")
        return init_state({"student": S, "teacher": T, "ema": dict(S)}, {"student": True}, rng, steps)

    kw = dict(trainable={"student": True}, ema={"ema": ("student", 0.9, False)}, lr=3e-3, weight_decay=1e-2,
              grad_clip=5.0, progress=False)
    return teacher, student, T, next_batch, loss_fn, start, kw


def test_frozen_teacher_trainable_student_trains_and_resumes_bit_identically(tmp_path):
    """MATH.md (14.22): a loss over two networks (a frozen teacher, a trainable student)
    and an EMA target: the student's distillation loss falls below a third of its start,
    the teacher is bit-identical after training, and a run checkpointed after 40 updates
    and resumed to 120 equals the uninterrupted run bit for bit (every group, the Adam
    state, the losses)."""
    teacher, student, T, next_batch, loss_fn, start, kw = _distill_setup()
    full = fit(loss_fn, start(120), next_batch, steps=120, **kw)
    assert np.mean(full.losses[-10:]) < np.mean(full.losses[:10]) / 3
    for k in T:
        assert np.array_equal(full.groups["teacher"][k], T[k])
    nets = {"student": student, "teacher": teacher, "ema": student}
    part = fit(loss_fn, start(120), next_batch, steps=40, **kw)
    path = save_fit(tmp_path / "c.npz", part, nets, main="student")
    resumed = fit(loss_fn, load_fit(path, 120), next_batch, steps=120, **kw)
    for g in full.groups:
        for k in full.groups[g]:
            assert np.array_equal(full.groups[g][k], resumed.groups[g][k]), (g, k)
    assert full.opt.keys() == resumed.opt.keys() and all(np.array_equal(full.opt[k], resumed.opt[k]) for k in full.opt)
    assert np.array_equal(full.losses, resumed.losses)
    model, meta = refdiff.load(path, ema=False)  # the main group is the checkpoint's model
    assert np.array_equal(model.params[next(iter(model.params))], part.groups["student"][next(iter(model.params))])


def test_load_round_trip_samples_like_the_in_process_model(tmp_path):
    """refdiff.load: train, load, sample gives bit-identical samples to sampling the
    in-process EMA model with the same x_T and noise (ddpm: noise drawn every step), and
    the metadata carry the prediction type, schedule and condition kinds."""
    model = _mlp(num_classes=2)
    y = (np.arange(512) % 2).astype(np.int64)
    res = train(model, (_data(), y), schedule=SCHED, steps=30, batch_size=32, out_dir=tmp_path, eval_size=0,
                cond_dropout=0.2, progress=False)
    loaded, meta = refdiff.load(tmp_path)
    assert meta["prediction_type"] == "epsilon" and meta["cond_kinds"] == ["class"] and meta["step"] == 30
    assert np.array_equal(meta["schedule"].betas, SCHED.betas)
    labels = np.array([0, 1, 1, 0, 1])
    a = loaded.sample(5, steps=10, method="ddpm", rng=np.random.default_rng(4), cond={"class": labels},
                      guidance_scale=2.0)
    rng = np.random.default_rng(4)
    x_T = rng.standard_normal((5, 2)).astype(np.float32)
    b = refdiff.sample(lambda x, t, c: model.apply(res.ema_params, x, t, c), x_T, SCHED,
                       refdiff.timesteps(SCHED.T, 10, "trailing"), "ddpm", rng=rng, guidance_scale=2.0, y=labels,
                       null_label=2, progress=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("target", ["v_prediction"])
def test_v_prediction_checkpoint_samples_without_naming_its_type(tmp_path, target):
    """A v-prediction checkpoint knows its prediction type: refdiff.load samples it as v
    (400 deterministic DDIM samples of data N((2, -1), 0.5^2 I): mean within 0.15 and std
    within 0.1 of the truth; the mean's standard error is 0.025, the rest is the network's
    fit), whereas the same network read as an eps model lands far away (> 1)."""
    model = MLP(MLPConfig(dim=2, hidden=32, layers=2, time_embed_dim=8))
    train(model, _data(2048), schedule=SCHED, steps=1500, batch_size=128, lr=1e-2, target=target, out_dir=tmp_path,
          eval_size=0, ema_decay=0.99, ema_warmup=True, lr_decay="cosine", progress=False)
    loaded, meta = refdiff.load(tmp_path)
    assert loaded.prediction_type == "v_prediction" == meta["prediction_type"]
    x = loaded.sample(400, steps=20, method="ddim", rng=np.random.default_rng(0))
    assert np.max(np.abs(np.mean(x, axis=0) - [2.0, -1.0])) < 0.15 and np.max(np.abs(np.std(x, axis=0) - 0.5)) < 0.1
    x_eps = refdiff.sample(loaded, np.random.default_rng(0).standard_normal((400, 2)).astype(np.float32), SCHED,
                           refdiff.timesteps(SCHED.T, 20, "trailing"), "ddim", prediction_type="epsilon",
                           progress=False)
    assert np.max(np.abs(np.mean(x_eps, axis=0) - [2.0, -1.0])) > 1.0


def _rewrite(path, mutate):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    mutate(d)
    np.savez(path, **d)


def test_checkpoint_entries_are_validated_on_load(tmp_path):
    """String, complex or NaN parameter arrays, format_version 99, a negative or fractional
    step and an optimizer moment of the wrong shape: one-line ValueErrors naming the entry."""
    model = _mlp()
    P = model.init_params(np.random.default_rng(0))
    st = init_state({"params": P}, {"params": True}, np.random.default_rng(0), 1)
    good = save_checkpoint(tmp_path / "g.npz", model=model, params=P, opt_state=st.opt, step=3)
    raw = good.read_bytes()
    key = "params/out.w"

    def meta99(d):
        m = json.loads(str(d["meta"]))
        m["format_version"] = 99
        d["meta"] = np.asarray(json.dumps(m))

    cases = [
        (lambda d: d.__setitem__(key, np.full(d[key].shape, "a")), r"entry 'params/out\.w' has dtype <U1"),
        (lambda d: d.__setitem__(key, d[key].astype(np.complex64)), r"entry 'params/out\.w' has dtype complex64"),
        (lambda d: d.__setitem__(key, np.full(d[key].shape, np.nan, np.float32)), r"'params/out\.w' contains NaN"),
        (meta99, "format_version 99 is not one this refdiff reads"),
        (lambda d: d.__setitem__("step", np.asarray(-2)), r"entry 'step' must be a non-negative integer.*-2"),
        (lambda d: d.__setitem__("opt/step", np.asarray(2.5)), r"entry 'opt/step' must be a non-negative integer.*2\.5"),
        (lambda d: d.__setitem__("opt/m/params/out.w", np.zeros(3, np.float32)), r"moment 'opt/m/params/out\.w' has shape"),
    ]
    for mutate, msg in cases:
        bad = tmp_path / "b.npz"
        bad.write_bytes(raw)
        _rewrite(bad, mutate)
        with pytest.raises(ValueError, match=msg) as e:
            load_checkpoint(bad)
        assert "\n" not in str(e.value)
    assert load_checkpoint(good).step == 3


def test_condition_dropout_per_kind_on_token_data():
    """MATH.md (14.10), (12.7): training a cross-attention U-Net on (x, {class, tokens,
    token_mask}) with cond_dropout = {"tokens": 1} (every prompt replaced by the empty
    prompt) is bit-identical to training on data whose prompts are already empty with
    cond_dropout = {"tokens": 0} (both draw one uniform per sample for the tokens kind),
    and differs from training on the real prompts."""
    net = UNet(UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=2, cross_attention=(1,),
                          vocab_size=6, context_len=4, context_dim=4, heads=2, attention=False))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(16, 1, 8, 8))
    ids = rng.integers(1, 6, size=(16, 4))
    mask = np.ones((16, 4), dtype=bool)
    empty = net.cond_spec.kinds["tokens"].null(16, np, np.float32)
    y = rng.integers(0, 2, size=16)
    kw = dict(schedule=SCHED, steps=3, batch_size=4, eval_size=0, progress=False)
    a = train(net, (x, {"class": y, "tokens": ids, "token_mask": mask}), cond_dropout={"tokens": 1.0}, **kw)
    b = train(net, (x, {"class": y, **empty}), cond_dropout={"tokens": 0.0}, **kw)
    c = train(net, (x, {"class": y, "tokens": ids, "token_mask": mask}), cond_dropout={"tokens": 0.0}, **kw)
    assert np.array_equal(a.losses, b.losses) and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.losses, c.losses)
    with pytest.raises(ValueError, match=r"vocab_size = 6.*contains 7"):
        train(net, (x, {"class": y, "tokens": np.full((16, 4), 7), "token_mask": mask}), **kw)
