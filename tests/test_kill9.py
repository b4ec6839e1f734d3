"""kill -9 at random points of training (issue 19): the checkpoint on disk is always
loadable and the run resumed from it is bit-identical to an uninterrupted one (the
temporary-file-and-rename writes of refdiff.nn.checkpoint._atomic_write, and the full state
in each checkpoint)."""

import os
import signal
import sys
import time

import numpy as np
import pytest

import refdiff
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.checkpoint import load_checkpoint
from refdiff.train import train

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                                reason="needs os.fork (Linux) to start the child without re-importing")

SCHED = refdiff.make_schedule("linear", 20)
STEPS = 16
X = np.random.default_rng(5).normal(size=(256, 2))
KW = dict(schedule=SCHED, steps=STEPS, batch_size=16, lr=1e-2, eval_every=5, eval_size=32, checkpoint_every=1,
          progress=False, seed=3)


def _net():
    return MLP(MLPConfig(dim=2, hidden=16, layers=2, time_embed_dim=8))


def _child(out):
    """Train in a forked child, writing a checkpoint after every update; never returns."""
    try:
        train(_net(), X, out_dir=out, resume=True, **KW)
    finally:
        os._exit(0)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_kill9_leaves_a_loadable_checkpoint_and_a_bit_identical_resume(tmp_path):
    """A child process training a tiny MLP (16 updates, a checkpoint after each) is killed
    with SIGKILL at 12 random times (fixed seed) spread over the length of an uninterrupted
    run, a fresh run each time.  After every kill the checkpoint on disk (if one was written)
    loads, and resuming it to step 16 gives parameters, EMA, Adam state, losses, gradient
    norms and evaluation logs bit-identical to the uninterrupted run.  At least one kill must
    land in the middle of the run (0 < step < 16), or the test proves nothing."""
    t0 = time.perf_counter()
    ref = train(_net(), X, out_dir=tmp_path / "ref", **KW)
    duration = time.perf_counter() - t0  # only to spread the kill times over a run
    delays = np.random.default_rng(19).uniform(0.0, 1.1 * duration, size=12)
    steps_at_kill = []
    for i, delay in enumerate(delays):
        out = tmp_path / f"k{i}"
        pid = os.fork()
        if pid == 0:  # pragma: no cover  (the child)
            _child(out)
        time.sleep(float(delay))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ck = out / "checkpoint.npz"
        steps_at_kill.append(load_checkpoint(ck).step if ck.exists() else None)
        res = train(_net(), X, out_dir=out, resume=True, **{**KW, "checkpoint_every": 0})  # one save, at the end
        assert _same(res.params, ref.params) and _same(res.ema_params, ref.ema_params), (i, steps_at_kill[-1])
        assert _same(res.opt_state, ref.opt_state), (i, steps_at_kill[-1])
        assert np.array_equal(res.losses, ref.losses) and np.array_equal(res.grad_norms, ref.grad_norms)
        assert np.array_equal(res.eval_steps, ref.eval_steps) and np.array_equal(res.eval_losses, ref.eval_losses)
        assert load_checkpoint(ck).rng_state == load_checkpoint(tmp_path / "ref" / "checkpoint.npz").rng_state
    mid = [s for s in steps_at_kill if s is not None and 0 < s < STEPS]
    assert mid, f"no kill landed mid-run: checkpoint steps at the kills {steps_at_kill}"
