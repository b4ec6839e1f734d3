"""GPU benchmarks: the 8x8 U-Net training step and sampling throughput on CuPy, against
NumPy on the CPU and against the same architecture in PyTorch on the same GPU.

Training step = forward, epsilon-MSE gradient, backward, Adam update (as in
``bench_unet_train.py``), at batch 128, 1024 and 4096 by default.  Sampling = 10,000 8x8
images with DPM-Solver++(2M), 20 steps, through ``refdiff.sample`` with the U-Net as the
model.  Every implementation runs in this one process; GPU timings synchronise the device
around each timed call (CUDA events would not include Python dispatch, which is part of
what a user waits for).

    python benchmarks/bench_gpu.py                         # everything that is available
    python benchmarks/bench_gpu.py --batches 1024 --steps 20
    python benchmarks/bench_gpu.py --smoke                 # seconds-long check of the script (CPU works)

Where there is no CuPy or no CUDA device, or no PyTorch, the columns that need them are
printed as "n/a" with the reason.  Targets (issue 7): CuPy at most 1.5 x PyTorch-on-GPU
per training step at batch 1024, and at least 20 x faster than NumPy-on-CPU there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 1024, 4096])
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per implementation and batch")
    ap.add_argument("--cpu-max-batch", type=int, default=1024,
                    help="largest batch timed on NumPy-CPU (larger ones are slow; ratios use this batch's per-image time)")
    ap.add_argument("--sample-images", type=int, default=10_000)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    a = ap.parse_args(argv)
    if a.smoke:
        a.batches, a.steps, a.sample_images, a.sample_steps, a.cpu_max_batch = [8], 2, 16, 3, 8
    return a


def _cupy():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device"
        return cupy, ""
    except Exception as e:  # ImportError or CUDA runtime error
        return None, f"{type(e).__name__}: {e}"


def _torch_cuda():
    try:
        import torch
    except ImportError as e:
        return None, f"no PyTorch ({e})"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    return torch, ""


def _median_ms(fn, steps, sync=lambda: None):
    ts = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def refdiff_train_ms(xp_name, model, P_host, batch, steps):
    """ms per training step of refdiff on NumPy ("numpy") or CuPy ("cupy")."""
    import numpy as np

    from refdiff.nn.optim import adam_init, adam_update

    if xp_name == "cupy":
        import cupy as xp

        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)
    rng = np.random.default_rng(0)
    P = {k: xp.asarray(v) for k, v in P_host.items()}
    x = xp.asarray(rng.standard_normal((batch, 1, 8, 8)).astype(np.float32))
    eps = xp.asarray(rng.standard_normal((batch, 1, 8, 8)).astype(np.float32))
    t = xp.asarray(rng.integers(0, 1000, batch))
    state = {"P": P, "S": adam_init(P)}

    def step():
        out, cache = model.forward(state["P"], x, t)
        G, _ = model.backward(state["P"], cache, (2.0 / out.size) * (out - eps))
        state["P"], state["S"] = adam_update(state["P"], G, state["S"], lr=1e-4)

    step()  # warm-up (CuPy compiles its kernels on first use)
    step()
    return _median_ms(step, steps, sync)


def torch_train_ms(torch, model, P_host, batch, steps):
    from bench_unet_train import torch_unet

    import numpy as np

    torch.set_default_device("cuda")
    try:
        fwd = torch_unet(torch, model)
        TP = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in P_host.items()}
        opt = torch.optim.Adam(list(TP.values()), lr=1e-4)
        rng = np.random.default_rng(0)
        x = torch.tensor(rng.standard_normal((batch, 1, 8, 8)).astype(np.float32))
        eps = torch.tensor(rng.standard_normal((batch, 1, 8, 8)).astype(np.float32))
        t = torch.tensor(rng.integers(0, 1000, batch))

        def step():
            opt.zero_grad(set_to_none=True)
            torch.mean((fwd(TP, x, t) - eps) ** 2).backward()
            opt.step()

        step()
        step()
        return _median_ms(step, steps, torch.cuda.synchronize)
    finally:
        torch.set_default_device("cpu")


def sampling_s(xp_name, model, P_host, n_images, n_steps):
    """Seconds to draw ``n_images`` with DPM-Solver++(2M) in ``n_steps`` steps."""
    import numpy as np

    import refdiff

    if xp_name == "cupy":
        import cupy as xp

        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)
    P = {k: xp.asarray(v) for k, v in P_host.items()}
    sched = refdiff.make_schedule("linear", 1000)
    ts = refdiff.timesteps(1000, n_steps, "trailing")
    xT = xp.asarray(np.random.default_rng(0).standard_normal((n_images, 1, 8, 8)).astype(np.float32))
    net = model.as_model(P)
    refdiff.sample(net, xT[:8], sched, ts, "dpmpp_2m", progress=False)  # warm-up
    sync()
    t0 = time.perf_counter()
    refdiff.sample(net, xT, sched, ts, "dpmpp_2m", progress=False)
    sync()
    return time.perf_counter() - t0


def main(argv=None):
    args = parse(argv)
    import numpy as np

    from refdiff.nn import UNet, UNetConfig

    cupy, why_cupy = _cupy()
    torch, why_torch = _torch_cuda()
    model = UNet(UNetConfig())
    P = model.init_params(np.random.default_rng(0))  # float32 host arrays
    P["out.conv.w"] = (0.01 * np.random.default_rng(1).standard_normal(P["out.conv.w"].shape)).astype(np.float32)
    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode() if cupy is not None else "none"
    print(f"U-Net {model.num_params(P)} params; GPU: {dev}; CPU threads: {os.cpu_count()}")
    if cupy is None:
        print(f"CuPy columns n/a: {why_cupy}")
    if torch is None:
        print(f"PyTorch-GPU columns n/a: {why_torch}")

    print(f"\n{'batch':>6} {'CuPy ms':>9} {'NumPy ms':>9} {'Torch ms':>9} {'CuPy img/s':>11} "
          f"{'CuPy/Torch':>11} {'NumPy/CuPy':>11}")
    cpu_ms_per_img = None
    for b in args.batches:
        gpu = refdiff_train_ms("cupy", model, P, b, args.steps) if cupy is not None else None
        cpu = None
        if b <= args.cpu_max_batch:
            cpu = refdiff_train_ms("numpy", model, P, b, max(2, args.steps // 2))
            cpu_ms_per_img = cpu / b
        tor = torch_train_ms(torch, model, P, b, args.steps) if torch is not None else None
        cpu_est = cpu if cpu is not None else (cpu_ms_per_img * b if cpu_ms_per_img else None)
        fmt = lambda v, f="9.1f": format(v, f) if v is not None else "n/a".rjust(int(f.split(".")[0]))  # noqa: E731
        print(f"{b:6d} {fmt(gpu)} {fmt(cpu)} {fmt(tor)} {fmt(b / gpu * 1e3 if gpu else None, '11.0f')} "
              f"{fmt(gpu / tor if gpu and tor else None, '11.2f')} "
              f"{fmt(cpu_est / gpu if gpu and cpu_est else None, '11.1f')}"
              + ("  (NumPy extrapolated per image)" if cpu is None and gpu and cpu_est else ""))

    print(f"\nsampling {args.sample_images} images, DPM-Solver++(2M), {args.sample_steps} steps:")
    for name, avail in (("cupy", cupy is not None), ("numpy", True)):
        if not avail:
            print(f"  {name:6s} n/a")
            continue
        n = args.sample_images if name == "cupy" or args.smoke else min(args.sample_images, 2000)
        s = sampling_s(name, model, P, n, args.sample_steps)
        print(f"  {name:6s} {n} images in {s:.2f} s = {n / s:,.0f} images/s")


if __name__ == "__main__":
    main()
