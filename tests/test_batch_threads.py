"""BatchThreads (refdiff.training): the network run on slices of the batch, one slice
per thread, is the same function as the network on the whole batch.

The denoising loss is a mean over samples and the U-Net maps each sample on its own, so
the batch output is the slices' outputs stacked and the parameter gradient of
sum(out * dout) is the sum over slices of the slices' gradients (MATH.md (14.1): the loss
and dout are formed on the whole batch).  Only the order of the floating-point sums over
the batch changes: the comparisons are float64 to 1e-12 and, in float32, to 1e-5 normwise
per parameter (splitting a sum of n terms into two partial sums changes its rounding by at
most ~log2(n) u ~ 7 * 6e-8 per partial sum, more where the sum cancels, as in bias
gradients; measured <= 2e-6 at batch 7 in 3 slices and 1e-6 at batch 128 in 2).  A network that
mixes samples (a normalisation over the batch) is NOT the same function in slices: the
last test shows the comparison catches it.
"""

import numpy as np
import pytest

from refdiff.nn import UNet, UNetConfig
from refdiff.nn.gradcheck import relative_error
from refdiff.training import BatchThreads


def _setup(dtype, n, seed=0):
    """(model, params, x, t, y, dout) of a small class-conditional U-Net (also used by
    tests/test_batch_processes.py; its config is that file's _CFG)."""
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, attention=True, num_classes=3))
    rng = np.random.default_rng(seed)
    P = model.init_params(rng, dtype=dtype)
    P = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(dtype) for k, v in P.items()}  # no zero layers
    x = rng.standard_normal((n, 1, 8, 8)).astype(dtype)
    t = rng.integers(0, 1000, n)
    y = rng.integers(0, 4, n)  # 3 = the null class
    dout = rng.standard_normal(x.shape).astype(dtype)
    return model, P, x, t, y, dout


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("n,parts", [(6, 2), (7, 2), (7, 3), (1, 2)])
def test_slices_equal_whole_batch(dtype, tol, n, parts):
    """Output, every parameter gradient and the input gradient of the sliced run equal the
    whole-batch run's (MATH.md (14.1): gradient of a per-sample sum = sum of the slices');
    odd batches give unequal slices, a batch smaller than ``parts`` fewer of them."""
    model, P, x, t, y, dout = _setup(dtype, n)
    out, c = model.forward(P, x, t, {"class": y})
    G, dx = model.backward(P, c, dout)
    bt = BatchThreads(model, parts)
    try:
        out2, c2 = bt.forward(P, x, t, {"class": y})
        G2, dx2 = bt.backward(P, c2, dout)
    finally:
        bt.close()
    assert out2.dtype == out.dtype and out2.shape == out.shape
    assert relative_error(out2, out) < tol
    assert relative_error(dx2, dx) < tol
    assert set(G2) == set(G)
    worst = max(relative_error(G2[k], G[k], floor=1e-3 * float(np.linalg.norm(G[k]) + 1e-30)) for k in G)
    assert worst < tol, worst


def test_train_threads_option_same_run():
    """refdiff.train.train(..., threads=2) takes the same updates as threads=1 (same draws,
    same loss): float64 losses and final parameters to 1e-12."""
    import refdiff
    from refdiff.train import train

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (40, 1, 8, 8))
    y = rng.integers(0, 3, 40)
    sched = refdiff.make_schedule("cosine", 100)
    runs = []
    for th in (1, 2):
        model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, attention=False, num_classes=3))
        runs.append(train(model, (x, {"class": y}), schedule=sched, steps=3, batch_size=10, lr=1e-3, seed=3,
                          cond_dropout=0.2, eval_size=0, progress=False, dtype="float64", threads=th))
    a, b = runs
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-12)
    assert max(relative_error(b.params[k], a.params[k]) for k in a.params) < 1e-12


def test_mixing_network_is_caught():
    """Can fail: a network that normalises over the batch (samples mix) gives a different
    output in slices, and the comparison above sees it."""

    class BatchNormNet:
        def forward(self, P, x, t, cond=None):
            return (x - x.mean(axis=0)) * P["w"], x

        def backward(self, P, cache, dout):
            return {"w": np.sum(dout * (cache - cache.mean(axis=0)))}, dout

    x = np.random.default_rng(2).standard_normal((6, 3))
    net, P = BatchNormNet(), {"w": np.array(2.0)}
    bt = BatchThreads(net, 2)
    try:
        assert relative_error(bt.forward(P, x, None)[0], net.forward(P, x, None)[0]) > 1e-3
    finally:
        bt.close()


def test_bad_parts():
    with pytest.raises(ValueError, match="parts"):
        BatchThreads(object(), 0)
