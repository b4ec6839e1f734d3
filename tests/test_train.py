"""The training loop and checkpoints: the MLP reaches the exact oracle's irreducible loss,
checkpoints round-trip exactly, resume is bit-identical, and bad input / NaN stop cleanly."""

import json
import math

import numpy as np
import pytest

import refdiff
import refdiff.data
from refdiff.losses import irreducible_loss, objective_loss
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.checkpoint import (
    describe_schedule,
    load_checkpoint,
    save_checkpoint,
    schedule_from_description,
)
from refdiff.nn.optim import adam_init
from refdiff.train import train

SCHED = refdiff.make_schedule("linear", 1000)


def _one_blas_thread():
    """Small matmuls run several times faster on one BLAS thread than on an oversubscribed
    shared machine; threadpoolctl (installed with scikit-learn) is used when present."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


@pytest.mark.slow
def test_mlp_reaches_the_oracle_floor():
    """Training the MLP on the "8gaussians" ring drives the held-out eps-MSE of its EMA
    parameters within 10% of the irreducible floor E||eps - E[eps|x_t]||^2, MATH.md (14.18),
    evaluated with the exact mixture oracle on the same 20000 held-out (x0, t, eps) draws
    (x0 fresh from the mixture, t uniform over the 1000 steps).  Both numbers use the same
    draws, so their ratio is not blurred by independent Monte Carlo error; 20000 draws make
    the floor's own relative standard error about 0.5%."""
    rng = np.random.default_rng(0)
    data = refdiff.data.load_dataset("8gaussians", 20000, rng)
    model = MLP(MLPConfig(dim=2, hidden=128, layers=3))
    with _one_blas_thread():
        res = train(model, data, schedule=SCHED, steps=1500, batch_size=256, lr=2e-3, ema_decay=0.99,
                    seed=0, progress=False, eval_size=0)
    hrng = np.random.default_rng(12345)
    x0, _ = refdiff.data.eight_gaussians(20000, hrng)
    t = hrng.integers(0, SCHED.T, 20000)
    noise = hrng.standard_normal((20000, 2))
    floor = irreducible_loss(data.oracle, x0, t, noise, SCHED)
    a, s = refdiff.alpha_sigma(SCHED, t, x0)
    pred = model.apply(res.ema_params, (a * x0 + s * noise).astype(np.float32), t)
    mse, _ = objective_loss(pred.astype(np.float64), x0, noise, a, s)
    assert floor <= mse <= 1.10 * floor, (mse, floor, mse / floor)


def _tiny_model(num_classes=0):
    return MLP(MLPConfig(dim=2, hidden=16, layers=1, time_embed_dim=8, num_classes=num_classes))


def _tiny_data(n=512, seed=0):
    return refdiff.data.load_dataset("8gaussians", n, np.random.default_rng(seed))


def _same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], (int, np.integer)):
            assert a[k] == b[k], k
        else:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_checkpoint_round_trip_is_exact(tmp_path):
    """Everything saved comes back bit for bit: float32 params, EMA, Adam moments and step,
    the RNG (it continues the same stream), step, history and the JSON beside the .npz."""
    model = _tiny_model(num_classes=3)
    rng = np.random.default_rng(7)
    params = model.init_params(rng)
    ema = {k: v * np.float32(0.5) for k, v in params.items()}
    opt = adam_init(params)
    opt = {**opt, "step": 12, **{k: v + np.float32(0.25) for k, v in opt.items() if k != "step"}}
    hist = {"losses": np.array([1.0, 0.5])}
    path = save_checkpoint(tmp_path / "c.npz", model=model, params=params, ema_params=ema, opt_state=opt, rng=rng,
                           step=12, train_config={"lr": 0.1}, schedule=SCHED, history=hist)
    ck = load_checkpoint(path)
    _same(ck.params, params)
    _same(ck.ema_params, ema)
    _same(ck.opt_state, opt)
    assert ck.step == 12 and ck.model.config == model.config
    assert np.array_equal(ck.history["losses"], hist["losses"])
    assert ck.rng().standard_normal(5).tolist() == rng.standard_normal(5).tolist()
    meta = json.loads((tmp_path / "c.json").read_text())
    assert meta["model_config"] == model.to_dict() and meta["train_config"] == {"lr": 0.1}
    assert meta["refdiff_version"] == refdiff.__version__ and meta["step"] == 12
    s2 = schedule_from_description(meta["schedule"])
    assert np.array_equal(s2.betas, SCHED.betas) and describe_schedule(s2) == meta["schedule"]


def test_resume_is_bit_identical(tmp_path):
    """A run of 24 updates equals, bit for bit, a run stopped after 10 updates and resumed
    to 24 (params, EMA, Adam state, per-step losses, evaluation history), on NumPy, with
    condition dropout, warm-up, clipping and weight decay all active."""
    model = _tiny_model(num_classes=8)
    data = _tiny_data()
    kw = dict(schedule=SCHED, batch_size=32, lr=1e-2, seed=3, eval_every=4, eval_size=64, checkpoint_every=5,
              cond_dropout=0.2, warmup_steps=3, grad_clip=1.0, weight_decay=1e-3, ema_warmup=True, progress=False)
    full = train(model, data, steps=24, out_dir=tmp_path / "full", **kw)
    train(model, data, steps=10, out_dir=tmp_path / "part", **kw)
    part = train(model, data, steps=24, out_dir=tmp_path / "part", resume=True, **kw)
    _same(full.params, part.params)
    _same(full.ema_params, part.ema_params)
    _same(full.opt_state, part.opt_state)
    assert np.array_equal(full.losses, part.losses) and np.all(np.isfinite(full.losses))
    assert np.array_equal(full.eval_steps, part.eval_steps) and np.array_equal(full.eval_losses, part.eval_losses)
    ck = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert ck.step == 24
    _same(ck.params, full.params)


def test_training_is_seeded_and_float32():
    """Same seed, same result; another seed, another; parameters stay float32 by default."""
    model, data = _tiny_model(), _tiny_data()
    kw = dict(schedule=SCHED, steps=5, batch_size=16, progress=False, eval_size=32)
    a, b, c = train(model, data, seed=1, **kw), train(model, data, seed=1, **kw), train(model, data, seed=2, **kw)
    _same(a.params, b.params)
    assert not np.array_equal(a.losses, c.losses)
    assert all(v.dtype == np.float32 for v in a.params.values())


def test_continuous_time_and_other_targets():
    """A continuous VP schedule (float t in [t_min, 1], t = 0 data) and the v / x0 targets
    with min-SNR weighting run and give finite losses."""
    model = MLP(MLPConfig(dim=2, hidden=16, layers=1, time_embed_dim=8, time_scale=1000.0))
    for target, sched in (("v_prediction", refdiff.LinearVP()), ("sample", SCHED)):
        r = train(model, _tiny_data(), schedule=sched, steps=4, batch_size=16, target=target, weighting="min_snr",
                  progress=False, eval_size=16)
        assert np.all(np.isfinite(r.losses)) and r.eval_losses.shape == (1,)


def _corrupt(path, mutate):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    mutate(d)
    np.savez(path, **d)


def test_corrupted_or_mismatched_checkpoints_give_clear_errors(tmp_path):
    model = _tiny_model()
    params = model.init_params(np.random.default_rng(0))
    p = save_checkpoint(tmp_path / "c.npz", model=model, params=params, step=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")
    raw = p.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(tmp_path / "junk.npz")
    key = next(iter(params))
    bad = tmp_path / "shape.npz"
    bad.write_bytes(raw)
    _corrupt(bad, lambda d: d.__setitem__(f"params/{key}", np.zeros((3, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=f"params\\['{key}'\\] has shape \\(3, 3, 3\\), the model config expects"):
        load_checkpoint(bad)
    bad.write_bytes(raw)
    _corrupt(bad, lambda d: d.pop(f"params/{key}"))
    with pytest.raises(ValueError, match=f"missing \\['{key}'\\]"):
        load_checkpoint(bad)
    bad.write_bytes(raw)
    _corrupt(bad, lambda d: d.__setitem__("params/extra.w", np.zeros(2)))
    with pytest.raises(ValueError, match="unexpected \\['extra.w'\\]"):
        load_checkpoint(bad)
    bad.write_bytes(raw)
    _corrupt(bad, lambda d: d.pop("meta"))
    with pytest.raises(ValueError, match="not a refdiff checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="must end in .npz"):
        save_checkpoint(tmp_path / "c.bin", model=model, params=params)


def test_resume_refuses_a_different_config(tmp_path):
    """Resuming with another model, learning rate or schedule is an error naming the
    difference; an existing checkpoint is never silently overwritten."""
    data = _tiny_data()
    kw = dict(schedule=SCHED, steps=3, batch_size=8, progress=False, eval_size=8, out_dir=tmp_path)
    train(_tiny_model(), data, **kw)
    with pytest.raises(ValueError, match="exists: pass resume=True"):
        train(_tiny_model(), data, **kw)
    with pytest.raises(ValueError, match="cannot resume.*lr: checkpoint 0.001, now 0.002"):
        train(_tiny_model(), data, resume=True, **{**kw, "lr": 2e-3})
    with pytest.raises(ValueError, match="cannot resume.*model config"):
        train(MLP(MLPConfig(dim=2, hidden=8, layers=1, time_embed_dim=8)), data, resume=True, **kw)
    with pytest.raises(ValueError, match="cannot resume.*schedule"):
        train(_tiny_model(), data, resume=True, **{**kw, "schedule": refdiff.make_schedule("cosine", 1000)})


def test_resume_with_cosine_decay_needs_the_same_steps(tmp_path):
    """Under cosine decay (14.17) the rate of every update depends on ``steps``, so a run
    resumed with another ``steps`` could not match any uninterrupted run: it is refused,
    naming ``steps``.  Under a constant rate ``steps`` may grow (test above)."""
    kw = dict(schedule=SCHED, batch_size=8, progress=False, eval_size=8, out_dir=tmp_path, lr_decay="cosine")
    train(_tiny_model(), _tiny_data(), steps=4, **kw)
    with pytest.raises(ValueError, match="cannot resume.*steps: checkpoint 4, now 6"):
        train(_tiny_model(), _tiny_data(), steps=6, resume=True, **kw)


class _NaNAfter:
    """The tiny MLP, except that its output is NaN from the ``k``-th forward call on."""

    def __init__(self, model, k):
        self.model, self.k, self.calls = model, k, 0
        self.config = model.config

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, params, x, t, y=None):
        out, cache = self.model.forward(params, x, t, y)
        self.calls += 1
        return (out * np.float32(np.nan) if self.calls > self.k else out), cache


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    """A NaN loss at update 7 (0-based) stops training with FloatingPointError naming step 7;
    the checkpoint written after update 5 stays on disk, finite and loadable."""
    model = _NaNAfter(_tiny_model(), 7)
    with pytest.raises(FloatingPointError, match="loss is nan at step 7.*after step 5\\) is kept"):
        train(model, _tiny_data(), schedule=SCHED, steps=20, batch_size=8, checkpoint_every=5, out_dir=tmp_path,
              progress=False, eval_size=0)
    ck = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ck.step == 5 and all(np.all(np.isfinite(v)) for v in ck.params.values())
    with pytest.raises(FloatingPointError, match="step 2.*no checkpoint was written"):
        train(_NaNAfter(_tiny_model(), 2), _tiny_data(), schedule=SCHED, steps=5, batch_size=8, progress=False)


def test_bad_input():
    """Labels out of range, labels missing for a conditional model, bad data and bad options."""
    data = _tiny_data()
    kw = dict(schedule=SCHED, steps=2, batch_size=4, progress=False)
    y_bad = data.y.copy()
    y_bad[3] = 8  # 8 classes: valid labels 0..7 (8 is the null class, not a data label)
    with pytest.raises(ValueError, match="label 8, out of range \\[0, 7\\]"):
        train(_tiny_model(8), (data.x, y_bad), **kw)
    with pytest.raises(ValueError, match="class-conditional .* has no labels"):
        train(_tiny_model(8), data.x, **kw)
    with pytest.raises(ValueError, match="NaN or inf"):
        train(_tiny_model(), np.full((4, 2), np.nan), **kw)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        train(_tiny_model(), data, **{**kw, "steps": 0})
    with pytest.raises(ValueError, match="cond_dropout"):
        train(_tiny_model(8), data, cond_dropout=2.0, **kw)
    with pytest.raises(ValueError, match="unknown target"):
        train(_tiny_model(), data, target="score", **kw)
    with pytest.raises(ValueError, match="dtype"):
        train(_tiny_model(), data, dtype="float16", **kw)
    with pytest.raises(TypeError, match="schedule must be"):
        train(_tiny_model(), data, **{**kw, "schedule": "linear"})
    with pytest.raises(ValueError, match="per-sample shape"):
        train(_tiny_model(), data, eval_data=np.zeros((4, 3)), **kw)
    assert math.isfinite(train(_tiny_model(), data, **kw).losses[-1])


def test_evaluation_never_touches_the_training_stream():
    """The held-out evaluation draws come from their own generator: changing the evaluation
    data, size or frequency leaves every training loss and parameter bit-identical."""
    model, data = _tiny_model(), _tiny_data()
    other = _tiny_data(seed=5)
    kw = dict(schedule=SCHED, steps=12, batch_size=16, progress=False, seed=4)
    a = train(model, data, eval_every=0, eval_size=0, **kw)
    b = train(model, data, eval_data=other, eval_every=3, eval_size=100, **kw)
    assert np.array_equal(a.losses, b.losses)
    _same(a.params, b.params)
    assert b.eval_steps.tolist() == [3, 6, 9, 12] and np.all(np.isfinite(b.eval_losses))
    assert a.eval_steps.size == 0


def test_progress_bar_shows_the_loss(capsys):
    """With progress=True a tqdm bar on stderr carries the running loss."""
    train(_tiny_model(), _tiny_data(), schedule=SCHED, steps=10, batch_size=8, eval_size=0, progress=True)
    assert "loss=" in capsys.readouterr().err
