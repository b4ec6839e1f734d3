"""BatchProcesses (refdiff.training): the network run on slices of the batch, the slices
beyond the first in worker processes, is the same function as the network on the whole
batch, MATH.md (14.1) (as for BatchThreads, tests/test_batch_threads.py, whose tolerances
and reasoning apply: float64 to 1e-12, float32 to 1e-5 normwise per parameter, the order
of the float sums over the batch being the only change).

One object per slice count serves the module (a worker starts in ~0.4 s: a fresh
interpreter importing NumPy and refdiff).
"""

import gc
import os
import signal

import numpy as np
import pytest

from refdiff.nn import UNet, UNetConfig, fast
from refdiff.nn.gradcheck import relative_error
from refdiff.training import BatchProcesses

_CFG = UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, attention=True, num_classes=3)


from test_batch_threads import _setup  # noqa: E402  (the same network and draws as the threads' tests)


@pytest.fixture(scope="module")
def procs():
    objs = {p: BatchProcesses(UNet(_CFG), p) for p in (2, 3)}
    yield objs
    for o in objs.values():
        o.close()


@pytest.fixture(params=["hwnc", "chwn"])
def layout(request):
    """The tuned path ("hwnc", the default) and the "chwn" layout with the direct column-matrix
    convolution (the direct method's float32 rounding)."""
    old = fast.set_layout(request.param), fast.set_conv3x3("direct")
    yield request.param
    fast.set_layout(old[0])
    fast.set_conv3x3(old[1])


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("n,parts", [(6, 2), (7, 2), (7, 3), (1, 2)])
def test_slices_equal_whole_batch(procs, layout, dtype, tol, n, parts):
    """Output, every parameter gradient and the input gradient of the run in processes equal
    the whole-batch run's (MATH.md (14.1): the gradient of a per-sample sum is the sum of the
    slices'); odd batches give unequal slices, a batch smaller than ``parts`` fewer of them."""
    model, P, x, t, y, dout = _setup(dtype, n)
    out, c = model.forward(P, x, t, {"class": y})
    G, dx = model.backward(P, c, dout)
    bp = procs[parts]
    out2, c2 = bp.forward(P, x, t, {"class": y})
    G2, dx2 = bp.backward(P, c2, dout)
    assert out2.dtype == out.dtype and out2.shape == out.shape
    assert relative_error(out2, out) < tol
    assert relative_error(dx2, dx) < tol
    assert set(G2) == set(G) and all(G2[k].dtype == G[k].dtype for k in G)
    worst = max(relative_error(G2[k], G[k], floor=1e-3 * float(np.linalg.norm(G[k]) + 1e-30)) for k in G)
    assert worst < tol, worst


def test_worker_slices_are_this_process_slices_bit_for_bit(procs, layout):
    """Each worker computes its slice exactly as this process would (same layout switches,
    same parameters through the shared buffer): float32 outputs, dx and every slice gradient
    bit for bit, in both layouts (a worker left on the other layout differs in the last
    bits: the two layouts round differently)."""
    model, P, x, t, y, dout = _setup("float32", 9, seed=4)
    bp = procs[3]
    out, c = bp.forward(P, x, t, {"class": y})
    G, dx = bp.backward(P, c, dout)
    G_sum = None
    for sl in bp._slices(9):
        o, cc = model.forward(P, x[sl], t[sl], {"class": y[sl]})
        g, d = model.backward(P, cc, dout[sl])
        np.testing.assert_array_equal(out[sl], o)
        np.testing.assert_array_equal(dx[sl], d)
        G_sum = dict(g) if G_sum is None else {k: G_sum[k] + g[k] for k in g}  # the same order of sums
    for k in G:
        np.testing.assert_array_equal(G[k], G_sum[k])


def test_parameters_follow_each_step(procs):
    """The workers see the parameters of each forward (copied into the shared buffer), also
    when a second forward runs before the first one's backward."""
    model, P, x, t, y, dout = _setup("float64", 6)
    Q = {k: v * 1.5 for k, v in P.items()}
    bp = procs[2]
    out_p, c_p = bp.forward(P, x, t, {"class": y})
    out_q, c_q = bp.forward(Q, x, t, {"class": y})
    Gp, _ = bp.backward(P, c_p, dout)  # P again, after Q was written
    Gq, _ = bp.backward(Q, c_q, dout)
    for Z, out2, G2 in ((P, out_p, Gp), (Q, out_q, Gq)):
        out, c = model.forward(Z, x, t, {"class": y})
        G, _ = model.backward(Z, c, dout)
        assert relative_error(out2, out) < 1e-12
        assert max(relative_error(G2[k], G[k], floor=1e-3 * float(np.linalg.norm(G[k]))) for k in G) < 1e-12


def test_train_processes_option_same_run():
    """refdiff.train.train(..., threads=2, batch_parallel="processes") takes the same updates
    as the unsplit run (same draws, same loss, MATH.md (14.1)): float64 losses and final
    parameters to 1e-12; its workers are stopped at the end."""
    import refdiff
    from refdiff.train import train

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (40, 1, 8, 8))
    y = rng.integers(0, 3, 40)
    sched = refdiff.make_schedule("cosine", 100)
    runs = []
    for th, how in ((1, "threads"), (2, "processes")):
        model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, attention=False, num_classes=3))
        runs.append(train(model, (x, {"class": y}), schedule=sched, steps=3, batch_size=10, lr=1e-3, seed=3,
                          cond_dropout=0.2, eval_size=0, progress=False, dtype="float64", threads=th,
                          batch_parallel=how))
    a, b = runs
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-12)
    assert max(relative_error(b.params[k], a.params[k]) for k in a.params) < 1e-12
    with pytest.raises(ValueError, match="batch_parallel"):
        train(UNet(_CFG), (x, {"class": y}), schedule=sched, steps=1, batch_size=4, threads=2,
              batch_parallel="fibers", progress=False, eval_size=0)


def test_worker_error_is_raised_here_with_its_traceback(procs):
    """A worker's exception is raised in the calling process (same type and message) with the
    worker's traceback attached; the object stays usable."""
    model, P, x, t, y, dout = _setup("float64", 6)
    bad = y.copy()
    bad[3:] = 99  # only the worker's half is out of range
    bp = procs[2]
    with pytest.raises(ValueError, match="99") as info:
        bp.forward(P, x, t, {"class": bad})
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "BatchProcesses worker 1" in note and "Traceback" in note and "forward" in note
    out, _ = bp.forward(P, x, t, {"class": y})
    assert relative_error(out, model.forward(P, x, t, {"class": y})[0]) < 1e-12


def test_dead_worker_is_an_error_not_a_hang():
    """A killed worker gives RuntimeError (no hang); the next forward starts new workers; a
    cache from before cannot be used; close() leaves no process behind, and neither does
    dropping the object."""
    model, P, x, t, y, dout = _setup("float64", 4)
    bp = BatchProcesses(model, 2)
    try:
        out, c = bp.forward(P, x, t, {"class": y})
        (pid,) = bp.pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="died|gone"):
            bp.backward(P, c, dout)
        assert _gone(pid) and bp.pids == []
        out2, c2 = bp.forward(P, x, t, {"class": y})  # new workers
        np.testing.assert_allclose(out2, out, rtol=1e-12)
        with pytest.raises(RuntimeError, match="stopped"):
            bp.backward(P, c, dout)
        pids = bp.pids
        assert pids and pids[0] != pid
    finally:
        bp.close()
    assert all(_gone(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        bp.forward(P, x, t, {"class": y})
    bp2 = BatchProcesses(model, 2)
    bp2.forward(P, x, t, {"class": y})
    pids = bp2.pids
    del bp2
    gc.collect()
    assert all(_gone(p) for p in pids)


class _Unpicklable:
    def __init__(self):
        self.f = lambda: None

    def forward(self, P, x, t, cond=None):
        return x, None

    def backward(self, P, cache, dout):
        return {}, dout


def test_bad_arguments():
    with pytest.raises(ValueError, match="parts"):
        BatchProcesses(UNet(_CFG), 0)
    with pytest.raises(TypeError, match="model"):
        BatchProcesses(object(), 2)
    model, P, x, t, y, dout = _setup("float64", 4)
    bp = BatchProcesses(_Unpicklable(), 2)
    with pytest.raises(TypeError, match="picklable"):
        bp.forward(P, x, t)
    bp.close()


def test_numpy_only(procs):
    """Other array namespaces are refused with TypeError before any work (CuPy: BatchThreads)."""
    xps = pytest.importorskip("array_api_strict")
    model, P, x, t, y, dout = _setup("float64", 4)
    with pytest.raises(TypeError, match="NumPy"):
        procs[2].forward(P, xps.asarray(x), t, {"class": y})
    with pytest.raises(TypeError, match="NumPy"):
        procs[2].forward({k: xps.asarray(v) for k, v in P.items()}, x, t, {"class": y})


def test_worker_caches_are_dropped_with_their_tokens(procs):
    """A worker keeps a slice's forward cache only while the calling process holds the cache
    of that forward: after many steps it holds the live ones only (no memory growth)."""
    model, P, x, t, y, dout = _setup("float32", 6)
    bp = procs[3]
    for _ in range(4):
        out, c = bp.forward(P, x, t, {"class": y})
        bp.backward(P, c, dout)
    kept = bp.forward(P, x, t, {"class": y})[1]
    del c
    gc.collect()
    bp.forward(P, x, t, {"class": y})  # the drops ride on the next request; this cache is dropped at once
    held = bp._worker_caches()
    assert len(held) == 2 and all(h == [kept[2].id] for h in held), held


class _Stop(BaseException):
    pass


@pytest.mark.parametrize("flag,expect", [([], "processes"), (["--batch-parallel", "threads"], "threads"),
                                         (["--batch-parallel", "processes"], "processes")])
def test_cli_batch_parallel(monkeypatch, tmp_path, flag, expect):
    """`refdiff train --batch-parallel {auto,threads,processes}` reaches train(); auto (the
    default) is processes on NumPy."""
    import refdiff.train as rt
    from refdiff.cli import main

    seen = []

    def fake(*a, **kw):
        seen.append(kw["batch_parallel"])
        raise _Stop

    monkeypatch.setattr(rt, "train", fake)
    with pytest.raises(_Stop):
        main(["train", "--data", "shapes8x8", "--model", "unet", "--n", "32", "--steps", "1",
              "--out", str(tmp_path / "run"), "--no-progress", *flag])
    assert seen == [expect]
