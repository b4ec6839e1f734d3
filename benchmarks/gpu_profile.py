"""Where the time of the CuPy U-Net training step goes: host (Python dispatch and kernel
launches) against device (kernels), per part of the step, and what one change to the
convolution's blocking is worth on the GPU.

For each batch it times, with ``cupyx.profiler.benchmark`` (host wall time of the call and
device time between CUDA events around it), the forward pass, forward + backward, the Adam
update, and the whole step; then the whole step again with the convolution's column matrix
split into the ~2 MiB blocks of output rows used on the CPU (``refdiff.nn.fast`` blocks it
so that it stays in a CPU cache, and takes one block on CuPy, where every block is a
further set of kernel launches).  When
the device time is well below the host time the step is launch-bound: the GPU waits for
Python.  It also counts the host-device synchronisations of one sampling step
(``check_finite`` in the loops) by timing ``refdiff.sample`` with the check and with it
replaced by a no-op.

    python benchmarks/gpu_profile.py [--batches 128 1024 4096] [--repeat 10]

Needs CuPy and a CUDA device (prints the reason and exits 0 otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 1024, 4096])
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args(argv)
    try:
        import cupy as cp
        from cupyx.profiler import benchmark

        cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError or no CUDA
        print(f"n/a: {type(e).__name__}: {e}")
        return 0
    import numpy as np

    import refdiff
    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn import fast_chwn as fast_module  # the chwn convolution and its block budgets
    from refdiff.nn.optim import adam_init, adam_update

    model = UNet(UNetConfig())
    P_host = model.init_params(np.random.default_rng(0))
    P_host["out.conv.w"] = (0.01 * np.random.default_rng(1).standard_normal(P_host["out.conv.w"].shape)).astype(np.float32)
    P = {k: cp.asarray(v) for k, v in P_host.items()}
    S = adam_init(P)

    def ms(res):  # (host ms, device ms), medians
        return float(np.median(res.cpu_times)) * 1e3, float(np.median(res.gpu_times[0])) * 1e3

    print(f"{'batch':>6} {'part':<28} {'host ms':>9} {'device ms':>10}")
    for b in a.batches:
        rng = np.random.default_rng(0)
        x = cp.asarray(rng.standard_normal((b, 1, 8, 8)).astype(np.float32))
        eps = cp.asarray(rng.standard_normal((b, 1, 8, 8)).astype(np.float32))
        t = cp.asarray(rng.integers(0, 1000, b))
        out, cache = model.forward(P, x, t)
        G, _ = model.backward(P, cache, (2.0 / out.size) * (out - eps))

        def fwd():
            return model.forward(P, x, t)

        def fwd_bwd():
            o, c = model.forward(P, x, t)
            return model.backward(P, c, (2.0 / o.size) * (o - eps))

        def adam():
            return adam_update(P, G, S, lr=1e-4)

        def step():
            o, c = model.forward(P, x, t)
            g, _ = model.backward(P, c, (2.0 / o.size) * (o - eps))
            return adam_update(P, g, S, lr=1e-4)

        rows = [("forward", fwd), ("forward + backward", fwd_bwd), ("Adam update", adam), ("whole step", step)]
        for name, fn in rows:
            h, d = ms(benchmark(fn, n_repeat=a.repeat, n_warmup=2))
            print(f"{b:6d} {name:<28} {h:9.2f} {d:10.2f}")
        old = fast_module._CHUNK_FLOATS_DEVICE
        fast_module._CHUNK_FLOATS_DEVICE = fast_module._CHUNK_FLOATS
        try:
            h, d = ms(benchmark(step, n_repeat=a.repeat, n_warmup=2))
        finally:
            fast_module._CHUNK_FLOATS_DEVICE = old
        print(f"{b:6d} {'whole step, CPU-blocked conv':<28} {h:9.2f} {d:10.2f}")

    # sampling: cost of the per-step finite checks (one device sync each)
    import refdiff.backend as backend

    sched = refdiff.make_schedule("linear", 1000)
    ts = refdiff.timesteps(1000, 20, "trailing")
    xT = cp.asarray(np.random.default_rng(0).standard_normal((10_000, 1, 8, 8)).astype(np.float32))
    net = model.as_model(P)

    def sample():
        return refdiff.sample(net, xT, sched, ts, "dpmpp_2m", progress=False)

    h1, d1 = ms(benchmark(sample, n_repeat=3, n_warmup=1))
    mods = [m for m in list(sys.modules.values()) if getattr(m, "check_finite", None) is backend.check_finite]
    saved = [(m, m.check_finite) for m in mods]
    try:
        for m in mods:
            m.check_finite = lambda *args, **kw: None
        h2, d2 = ms(benchmark(sample, n_repeat=3, n_warmup=1))
    finally:
        for m, f in saved:
            m.check_finite = f
    print(f"\nsampling 10,000 images, DPM-Solver++(2M), 20 steps: {h1:.1f} ms host / {d1:.1f} ms device "
          f"with the per-step finite checks, {h2:.1f} / {d2:.1f} ms without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
