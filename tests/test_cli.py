"""The command line: every subcommand runs, `--help` is complete, and every error path
(missing file, wrong checkpoint, unknown method, bad numbers) is one line on stderr with
exit status 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from refdiff import __version__
from refdiff.cli import build_parser, main

SUBCOMMANDS = ("demo", "train", "sample", "elbo", "orders", "vectors", "check")
TINY = ["--n", "300", "--hidden", "16", "--layers", "1", "--batch-size", "32", "--T", "50", "--no-progress"]


def _error(capsys, argv, *fragments):
    """Run argv, expect status 2 and a single stderr line containing every fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny unconditional checkpoint trained through the CLI (3 updates, T = 50)."""
    d = tmp_path_factory.mktemp("run")
    assert main(["train", "--steps", "3", "--out", str(d), *TINY]) == 0
    return d


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cond")
    assert main(["train", "--steps", "2", "--conditional", "--out", str(d), *TINY]) == 0
    return d


# ---------------------------------------------------------------------------- help and version
def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"refdiff {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in SUBCOMMANDS)
    for cmd in SUBCOMMANDS:
        assert main([cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: refdiff {cmd}")
        assert "default" in out or cmd == "check", cmd


def test_every_option_has_help():
    subs = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, sp in subs.items():
        for a in sp._actions:
            assert a.help, (name, a.dest)


def test_python_m_refdiff():
    r = subprocess.run([sys.executable, "-m", "refdiff", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"refdiff {__version__}"
    r = subprocess.run([sys.executable, "-m", "refdiff", "sample", "missing.npz"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- train / sample / elbo
def test_train_writes_and_resumes(ckpt, capsys):
    from refdiff.nn.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt / "checkpoint.npz").step == 3
    _error(capsys, ["train", "--steps", "5", "--out", str(ckpt), *TINY], "exists", "resume")
    assert main(["train", "--steps", "5", "--resume", "--out", str(ckpt), *TINY]) == 0
    assert load_checkpoint(ckpt / "checkpoint.npz").step == 5
    _error(capsys, ["train", "--steps", "5", "--resume", "--lr", "0.5", "--out", str(ckpt), *TINY], "cannot resume")


def test_train_ema_forgets_the_initialisation(tmp_path):
    """`refdiff train` warms the EMA decay up, MATH.md (14.16): after 30 updates the EMA
    weights sit near the trained weights, not near the random initialisation (with a fixed
    decay 0.999 they would still be 0.999^30 = 97% initialisation, and `refdiff sample`,
    which uses the EMA, would sample an untrained network)."""
    from refdiff.nn.checkpoint import load_checkpoint

    assert main(["train", "--steps", "30", "--out", str(tmp_path), *TINY]) == 0
    ck = load_checkpoint(tmp_path / "checkpoint.npz")
    init = ck.model.init_params(np.random.default_rng(0))  # --seed 0: the first draws of rng 0

    def dist(a, b):
        return sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a) ** 0.5

    assert dist(ck.ema_params, ck.params) < 0.3 * dist(ck.ema_params, init)


def test_sample_writes_npz_and_png(ckpt, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(ckpt), "--method", "ddim", "--steps", "4", "--n", "50", "--out", str(out),
                 "--no-progress"]) == 0
    x = np.load(out)["x"]
    assert x.shape == (50, 2) and np.all(np.isfinite(x))
    assert out.with_suffix(".png").is_file()
    # the same seed reproduces the same samples; the SDE-family path runs on the continuous view
    assert main(["sample", str(ckpt / "checkpoint.npz"), "--method", "ddim", "--steps", "4", "--n", "50", "--out",
                 str(tmp_path / "t.npz"), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["x"], x)
    assert main(["sample", str(ckpt), "--method", "pf_ode_rk4", "--steps", "3", "--n", "20", "--out",
                 str(tmp_path / "u.npz"), "--no-progress"]) == 0


def test_sample_conditional_with_guidance(cond_ckpt, tmp_path):
    out = tmp_path / "g.npz"
    assert main(["sample", str(cond_ckpt), "--method", "dpmpp_2m", "--steps", "3", "--n", "16", "--class", "2",
                 "--guidance-scale", "3", "--out", str(out), "--no-progress"]) == 0
    f = np.load(out)
    assert f["x"].shape == (16, 2) and np.all(f["y"] == 2)


def test_elbo_oracle_and_checkpoint(ckpt, capsys):
    assert main(["elbo", "--oracle", "--n", "8", "--T", "20"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "L_T" in out and "L_0" in out and "exact -log p" in out
    assert main(["elbo", "--checkpoint", str(ckpt), "--n", "8", "--estimator", "uniform", "--n-t", "2"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_orders_and_vectors(tmp_path, capsys):
    png = tmp_path / "o.png"
    assert main(["orders", "--methods", "ddim", "dpmpp_2m", "--steps", "8", "16", "--n-samples", "4",
                 "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "ddim" in out and "dpmpp_2m" in out and "fitted order" in out and png.is_file()
    assert main(["vectors", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "manifest.json").is_file()


# ---------------------------------------------------------------------------- error paths
def test_missing_files(capsys, tmp_path):
    _error(capsys, ["sample", str(tmp_path / "none.npz")], "checkpoint not found", "none.npz")
    _error(capsys, ["sample", str(tmp_path)], "checkpoint not found")  # a folder without checkpoint.npz
    _error(capsys, ["elbo", "--checkpoint", str(tmp_path / "none.npz")], "checkpoint not found")
    _error(capsys, ["check", str(tmp_path / "nosuite"), str(tmp_path)], "suite directory not found")
    _error(capsys, ["check", str(tmp_path), str(tmp_path / "nores")], "results directory not found")
    _error(capsys, ["check", str(tmp_path), str(tmp_path)], "manifest.json")


def test_wrong_checkpoint(capsys, tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    _error(capsys, ["sample", str(tmp_path / "other.npz")], "not a usable refdiff checkpoint")
    (tmp_path / "text.npz").write_text("not a zip file")
    _error(capsys, ["sample", str(tmp_path / "text.npz")], "not a usable refdiff checkpoint")


def test_wrong_checkpoint_for_data(ckpt, capsys):
    _error(capsys, ["elbo", "--checkpoint", str(ckpt), "--data", "digits8x8", "--n", "4"], "shape")
    _error(capsys, ["elbo", "--oracle", "--data", "moons"], "exact density")


def test_unknown_method(ckpt, capsys):
    _error(capsys, ["sample", str(ckpt), "--method", "nosuch"], "unknown method 'nosuch'", "dpmpp_2m", "ddpm")
    _error(capsys, ["sample", str(ckpt), "--method", "flow_euler"], "flow-matching")
    _error(capsys, ["orders", "--methods", "nosuch"], "unknown order setup")
    _error(capsys, ["train", "--data", "nosuch"], "invalid choice")


@pytest.mark.parametrize("argv,fragment", [
    (["sample", "X", "--steps", "0"], "--steps: must be an integer >= 1, got 0"),
    (["sample", "X", "--steps", "-3"], "--steps: must be an integer >= 1"),
    (["sample", "X", "--steps", "ten"], "--steps: must be an integer"),
    (["sample", "X", "--guidance-scale", "inf"], "--guidance-scale: must be a finite number"),
    (["sample", "X", "--guidance-scale", "nan"], "--guidance-scale"),
    (["sample", "X", "--eta", "1.5"], "--eta"),
    (["sample", "X", "--n", "0"], "--n"),
    (["train", "--lr", "0"], "--lr: must be a finite number in (0, inf]"),
    (["train", "--cond-dropout", "2"], "--cond-dropout"),
    (["train", "--T", "0"], "--T"),
    (["demo", "--seed", "-1"], "--seed"),
    (["check", "a", "b", "--tol-factor", "0"], "--tol-factor"),
    (["orders", "--steps", "0", "8"], "--steps"),
])
def test_bad_numbers(capsys, argv, fragment):
    _error(capsys, argv, fragment)


def test_bad_numbers_against_the_checkpoint(ckpt, cond_ckpt, capsys):
    _error(capsys, ["sample", str(ckpt), "--steps", "51"], "exceeds the checkpoint's T = 50")
    _error(capsys, ["sample", str(ckpt), "--guidance-scale", "3", "--class", "1"], "class-conditional")
    _error(capsys, ["sample", str(cond_ckpt), "--class", "8"], "--class 8 is out of range [0, 7]")
    _error(capsys, ["sample", str(cond_ckpt), "--guidance-scale", "2"], "needs --class")
    _error(capsys, ["sample", str(ckpt), "--eta", "0.5", "--method", "ddpm"], "--eta applies to method 'ddim'")
    _error(capsys, ["orders", "--steps", "16", "16"], "at least two different step counts")
    _error(capsys, ["train", "--model", "unet", "--steps", "1", "--out", "unused"], "use --model mlp")


def test_device_gpu_without_cupy_is_one_line(capsys, tmp_path):
    """--device gpu where CuPy or a CUDA device is missing: exit 2 and a one-line reason."""
    from conftest import CUPY

    if CUPY is not None:
        pytest.skip("CuPy and a GPU are present: the error path does not apply")
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "r"), "--device", "gpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'gpu' needs CuPy" in err[0]


def test_device_plumbing_with_a_stand_in_namespace(monkeypatch, tmp_path, capsys):
    """--device routes every array through the device's namespace: with array_api_strict standing
    in for CuPy, train and sample run end to end and give the CPU results exactly (the noise comes
    from the host generator either way)."""
    import array_api_strict

    import refdiff.backend as backend

    real = backend.namespace_for_device
    monkeypatch.setattr(backend, "namespace_for_device",
                        lambda d: array_api_strict if d == "gpu" else real(d))
    for dev in ("cpu", "gpu"):
        out = tmp_path / dev
        assert main(["train", "--steps", "20", "--n", "500", "--hidden", "16", "--out", str(out),
                     "--device", dev, "--no-progress"]) == 0
        assert main(["sample", str(out), "--steps", "4", "--n", "32", "--device", dev,
                     "--out", str(out / "s.npz"), "--no-progress"]) == 0
    capsys.readouterr()
    a, b = np.load(tmp_path / "cpu" / "s.npz")["x"], np.load(tmp_path / "gpu" / "s.npz")["x"]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # float32 network: same ops, same order


def test_train_batch_threads(tmp_path, monkeypatch):
    """issue 21: `refdiff train --batch-threads N` runs the U-Net on N batch slices, one
    thread each (refdiff.training.BatchThreads); the result is the same training run up to
    the order of float sums over the batch (float32 here, three updates: training and EMA
    held-out losses within 1e-5 relative of the one-thread run).  `--batch-threads 0` (default)
    picks 2 only for the U-Net on NumPy with BLAS on one thread and 2+ cores."""
    pytest.importorskip("sklearn")
    pytest.importorskip("threadpoolctl")
    from refdiff.nn.checkpoint import load_checkpoint

    args = ["train", "--data", "digits8x8", "--n", "64", "--steps", "3", "--batch-size", "16", "--T", "50",
            "--checkpoint-every", "0", "--no-progress"]
    assert main([*args, "--batch-threads", "1", "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--batch-threads", "2", "--out", str(tmp_path / "two")]) == 0
    c1 = load_checkpoint(tmp_path / "one" / "checkpoint.npz")
    c2 = load_checkpoint(tmp_path / "two" / "checkpoint.npz")
    # the per-step training losses (each a function of the parameters before its update) and
    # the EMA held-out loss; parameters are not compared one by one, because Adam turns the
    # rounding-level gradient of e.g. the key bias (which softmax ignores) into lr-sized steps
    l1, l2 = (np.asarray(c.history["losses"], np.float64) for c in (c1, c2))
    assert l1.shape == l2.shape == (3,)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    e1, e2 = (float(np.asarray(c.history["eval_losses"])[-1]) for c in (c1, c2))
    assert abs(e2 - e1) <= 1e-5 * e1

    seen = []
    import refdiff.train as rt

    real = rt.train
    monkeypatch.setattr(rt, "train", lambda *a, **kw: (seen.append(kw["threads"]), real(*a, **kw))[1])
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)  # a 2-core machine
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0
    assert main([*args, "--threads", "2", "--out", str(tmp_path / "auto2")]) == 0
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "mlp"), *TINY]) == 0
    assert seen == [2, 1, 1]  # U-Net, BLAS 1 thread: halves; BLAS 2 threads: 1; MLP: 1
