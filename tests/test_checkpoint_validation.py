"""Checkpoints are validated on load, entry by entry (issue 19 finding 7): every corrupted
entry gives one ValueError line naming it; a pickled payload is never unpickled; resuming a
checkpoint without its history, training config or RNG state is a one-line error."""

import json
import os

import numpy as np
import pytest

import refdiff
from refdiff.cli import main
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.checkpoint import load_checkpoint, save_checkpoint
from refdiff.train import train
from refdiff.training import init_state, load_fit, save_fit

SCHED = refdiff.make_schedule("linear", 10)


def _mlp():
    return MLP(MLPConfig(dim=2, hidden=8, layers=1, time_embed_dim=4))


def _data(n=64):
    return np.random.default_rng(0).normal(size=(n, 2))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A checkpoint written by refdiff.train (3 updates, with history, config, RNG state)."""
    out = tmp_path_factory.mktemp("run")
    train(_mlp(), _data(), schedule=SCHED, steps=3, batch_size=8, eval_size=0, progress=False, out_dir=out)
    return out


def _mutated(src, dst, mutate_arrays=None, mutate_meta=None):
    """A copy of checkpoint ``src`` at ``dst`` with its arrays and/or metadata changed."""
    with np.load(src) as z:
        d = {k: z[k] for k in z.files}
    meta = json.loads(str(d["meta"]))
    if mutate_meta is not None:
        meta = mutate_meta(meta)
    d["meta"] = np.asarray(json.dumps(meta))
    if mutate_arrays is not None:
        mutate_arrays(d)
    np.savez(dst, **d)
    return dst


def _set(key, value):
    def f(m):
        m[key] = value
        return m

    return f


def _drop(prefix):
    def f(d):
        for k in [k for k in d if k.startswith(prefix)]:
            del d[k]

    return f


META_CASES = [
    (_set("rng_state", {"bit_generator": "seed", "state": {}}), r"meta\.rng_state.*PCG64.*got 'seed'"),
    (_set("rng_state", {"bit_generator": "PCG64", "state": "garbage"}), r"meta\.rng_state"),
    (_set("rng_state", 7), r"meta\.rng_state"),
    (_set("rng_state", {"bit_generator": "MT19937", "state": {"key": [1, 2], "pos": 3}}), r"meta\.rng_state"),
    (_set("format_version", True), r"format_version True"),
    (_set("format_version", "2"), r"format_version '2'"),
    (_set("step", 5), r"meta\.step 5 disagrees with entry 'step' 3"),
    (_set("schedule", {"type": "discrete", "betas": ["x"]}), r"meta\.schedule"),
    (_set("schedule", {"type": "discrete", "betas": [0.1, 2.0]}), r"meta\.schedule"),
    (_set("model_config", {"arch": "mlp", "dim": -3}), r"meta\.model_config"),
    (lambda m: {k: v for k, v in m.items() if k != "model_config"}, r"meta has no 'model_config'"),
    (_set("train_config", [1, 2]), r"meta\.train_config must be a mapping"),
    (lambda m: [1, 2], r"metadata is not a JSON object"),
]


@pytest.mark.parametrize("mutate,msg", META_CASES)
def test_corrupted_metadata_is_one_line_naming_the_entry(run_dir, tmp_path, mutate, msg):
    """issue 19 finding 7: a garbage RNG state (an unknown bit generator, a state that does
    not fit it), a non-integer format_version, a step that disagrees with the stored step, a
    schedule or model config that cannot be rebuilt: one ValueError line naming the entry,
    raised by load_checkpoint (not later, when the RNG or the schedule is used)."""
    bad = _mutated(run_dir / "checkpoint.npz", tmp_path / "bad.npz", mutate_meta=mutate)
    with pytest.raises(ValueError, match=msg) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


def test_unknown_bit_generator_name_is_never_looked_up(run_dir, tmp_path, monkeypatch):
    """issue 19 finding 7: the stored bit-generator name is checked against a fixed list
    before any attribute of numpy.random is touched (``"seed"`` would otherwise call the
    global ``np.random.seed``)."""
    called = []
    monkeypatch.setattr(np.random, "seed", lambda *a, **k: called.append(a))
    bad = _mutated(run_dir / "checkpoint.npz", tmp_path / "bad.npz",
                   mutate_meta=_set("rng_state", {"bit_generator": "seed", "state": {}}))
    with pytest.raises(ValueError):
        load_checkpoint(bad)
    assert called == []


ARRAY_CASES = [
    (lambda d: d.__setitem__("history/losses", np.array(["a", "b", "c"])), r"entry 'history/losses' has dtype <U1"),
    (lambda d: d.__setitem__("history/losses", np.zeros((3, 2))), r"entry 'history/losses' must be 1-D"),
    (lambda d: d.__setitem__("history/grad_norms", np.zeros(3, complex)), r"'history/grad_norms' has dtype complex"),
    (lambda d: d.__setitem__("ema/out.w", np.full(d["ema/out.w"].shape, np.inf, np.float32)), r"'ema/out\.w'.*inf"),
    (lambda d: d.__setitem__("opt/v/params/out.b", np.full(2, -np.nan, np.float32)), r"'opt/v/params/out\.b'.*NaN"),
    (lambda d: d.__setitem__("opt/step", np.asarray(True)), r"entry 'opt/step' must be a non-negative integer"),
    (lambda d: d.__setitem__("step", np.asarray([3, 3])), r"entry 'step' must be a non-negative integer scalar"),
]


@pytest.mark.parametrize("mutate,msg", ARRAY_CASES)
def test_corrupted_arrays_are_one_line_naming_the_entry(run_dir, tmp_path, mutate, msg):
    """issue 19 finding 7: string, complex, 2-D history logs, inf/NaN EMA parameters or
    Adam moments, a boolean or non-scalar step: one ValueError line naming the entry."""
    bad = _mutated(run_dir / "checkpoint.npz", tmp_path / "bad.npz", mutate_arrays=mutate)
    with pytest.raises(ValueError, match=msg) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this object would create the file named by ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_payload_is_never_run(run_dir, tmp_path):
    """issue 19 finding 7: an object array (a pickle) in a checkpoint is refused without
    unpickling it: the payload, which would create a file when unpickled, never runs
    (np.load with allow_pickle=False), through load_checkpoint, refdiff.load and the CLI."""
    marker = tmp_path / "payload_ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))
    bad = _mutated(run_dir / "checkpoint.npz", tmp_path / "bad.npz",
                   mutate_arrays=lambda d: d.__setitem__("params/out.b", payload))
    with np.load(bad, allow_pickle=True) as z:  # the file does hold a pickle that runs when loaded
        assert z["params/out.b"].dtype == object
    assert marker.exists()
    marker.unlink()
    for load in (load_checkpoint, refdiff.load):
        with pytest.raises(ValueError, match="corrupted or not a refdiff"):
            load(bad)
    assert main(["sample", str(bad), "--n", "2", "--steps", "2", "--no-progress"]) == 2
    assert not marker.exists()


RESUME_CASES = [
    (dict(mutate_arrays=_drop("history/")), r"no history entry 'history/losses'"),
    (dict(mutate_arrays=lambda d: d.__setitem__("history/losses", np.zeros(1))), r"'history/losses' holds 1 values.*3"),
    (dict(mutate_meta=lambda m: {k: v for k, v in m.items() if k != "train_config"}), r"stores no train_config"),
    (dict(mutate_meta=_set("rng_state", None)), r"stores no RNG state"),
    (dict(mutate_arrays=_drop("opt/"), mutate_meta=_set("has_opt_state", False)), r"stores no optimizer state"),
]


@pytest.mark.parametrize("how,msg", RESUME_CASES)
def test_resume_without_history_or_config_is_one_line(run_dir, tmp_path, how, msg, capsys):
    """issue 19 finding 7: resuming (refdiff.train(resume=True), refdiff.training.load_fit,
    ``refdiff train --resume``) from a checkpoint whose history, training config, RNG state
    or optimizer state is missing is a one-line ValueError naming what is missing, never a
    KeyError traceback."""
    d = tmp_path / "run"
    d.mkdir()
    _mutated(run_dir / "checkpoint.npz", d / "checkpoint.npz", **how)
    with pytest.raises(ValueError, match=msg) as e:
        train(_mlp(), _data(), schedule=SCHED, steps=5, batch_size=8, eval_size=0, progress=False, out_dir=d,
              resume=True)
    assert "\n" not in str(e.value)
    if "train_config" not in msg:  # load_fit has no config to compare
        with pytest.raises(ValueError, match=msg):
            load_fit(d / "checkpoint.npz", 5)
    rc = main(["train", "--out", str(d), "--resume", "--steps", "5", "--n", "64", "--T", "10", "--hidden", "8",
               "--layers", "1", "--batch-size", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_valid_checkpoint_still_loads_and_resumes(run_dir, tmp_path):
    """The checks refuse no valid checkpoint: save_fit / load_fit round trip with a state of
    every kind (params, EMA, Adam state, RNG, history) loads with the same values."""
    model = _mlp()
    P = model.init_params(np.random.default_rng(1))
    st = init_state({"params": P, "ema": dict(P)}, {"params": True}, np.random.default_rng(2), 4)
    path = save_fit(tmp_path / "c.npz", st, {"params": model, "ema": model}, main="params")
    back = load_fit(path, 4)
    assert back.step == 0 and back.rng.bit_generator.state == st.rng.bit_generator.state
    assert all(np.array_equal(back.groups["params"][k], P[k]) for k in P)
    assert load_checkpoint(run_dir / "checkpoint.npz").step == 3
    assert os.path.exists(run_dir / "checkpoint.json")


def test_no_file_refdiff_reads_unpickles(tmp_path, capsys):
    """issue 19 finding 7: every array file refdiff reads is opened with allow_pickle=False:
    an image for `refdiff edit --image`, a results file for `refdiff check` and an
    autoencoder's parameters each hold a pickle that would create a file when unpickled;
    each is refused (status 2, a FAIL row, a ValueError) and the payload never runs."""
    from refdiff.nn.vae import KLAutoencoder, KLAutoencoderConfig
    from refdiff.txt2img import load_autoencoder, save_autoencoder
    from refdiff.vectors import write_suite

    marker = tmp_path / "payload_ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))
    np.save(tmp_path / "img.npy", payload, allow_pickle=True)
    ck = tmp_path / "unet"
    from refdiff.nn import UNet, UNetConfig

    net = UNet(UNetConfig(base_channels=4, groups=2, time_embed_dim=8))
    save_checkpoint(ck / "checkpoint.npz", model=net, params=net.init_params(np.random.default_rng(0)), schedule=SCHED)
    assert main(["edit", str(ck), "img2img", "--image", str(tmp_path / "img.npy"), "--steps", "2",
                 "--out", str(tmp_path / "e.npz")]) == 2
    suite = write_suite(tmp_path / "suite").parent
    res = tmp_path / "res"
    res.mkdir()
    np.savez(res / "schedule_linear.npz", betas=payload, allow_pickle=True)
    assert main(["check", str(suite), str(res), "--cases", "schedule_linear"]) == 1  # FAIL: unreadable
    ae = KLAutoencoder(KLAutoencoderConfig(latent_channels=2, width=4))
    P = dict(ae.init_params(np.random.default_rng(1)))
    path = save_autoencoder(tmp_path / "ae.npz", ae, P, scaling_factor=1.0)
    np.savez(path, **{**P, next(iter(P)): payload})
    with pytest.raises(ValueError):
        load_autoencoder(path)
    assert "Traceback" not in capsys.readouterr().err
    assert not marker.exists()
