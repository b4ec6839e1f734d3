"""One 3x3 convolution layer (forward + backward), float32, one thread, CPU time: the tuned
path's layouts against PyTorch's conv2d.

    python benchmarks/bench_conv_layer.py            # 32->32 at 8x8 and 64->64 at 4x4, batch 128

Rows: "hwnc" (refdiff.nn.fast in the (H, W, N, C) layout: Winograd F(4,3), MATH.md
(23.6)), "chwn direct" and "chwn f43" (the (C, H, W, N) layout), "torch" (conv2d and
autograd.grad).  Each input is given in the memory order its layout produces (so no
layout copy is timed).  Median of --reps calls of ``time.thread_time``.  PyTorch is needed
only here: ``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_ms(f, reps):
    import statistics

    f()
    ts = []
    for _ in range(reps):
        t0 = time.thread_time()
        f()
        ts.append(time.thread_time() - t0)
    return 1e3 * statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np
    import torch

    from refdiff.nn import fast

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    N = args.batch
    print(f"batch {N}, float32, 1 thread, CPU time (thread_time), median of {args.reps}; load {os.getloadavg()[0]:.1f}")
    print("| layer | variant | forward ms | backward ms | fwd + bwd ms |")
    print("|---|---|---|---|---|")
    for C, S in ((32, 8), (64, 4)):
        x = rng.standard_normal((N, C, S, S)).astype(np.float32)
        w = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
        b = np.zeros(C, np.float32)
        d = rng.standard_normal((N, C, S, S)).astype(np.float32)
        orders = {"hwnc": (2, 3, 0, 1), "chwn": (1, 2, 3, 0)}
        for name, layout, method in (("hwnc", "hwnc", None), ("chwn direct", "chwn", "direct"),
                                     ("chwn f43", "chwn", "f43")):
            old = fast.set_layout(layout)
            if method:
                old_m = fast.set_conv3x3(method)
            perm = orders[layout]
            inv = tuple(perm.index(i) for i in range(4))
            xv = np.transpose(np.ascontiguousarray(np.transpose(x, perm)), inv)  # NCHW view of that order
            dv = np.transpose(np.ascontiguousarray(np.transpose(d, perm)), inv)
            _, cache = fast.conv2d_forward(xv, w, b)
            tf = _median_ms(lambda: fast.conv2d_forward(xv, w, b), args.reps)
            tb = _median_ms(lambda: fast.conv2d_backward(dv, cache), args.reps)
            print(f"| {C}->{C} at {S}x{S} | {name} | {tf:.2f} | {tb:.2f} | {tf + tb:.2f} |")
            if method:
                fast.set_conv3x3(old_m)
            fast.set_layout(old)
        tx, tw, tb_ = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        td = torch.from_numpy(d)
        conv = lambda: torch.nn.functional.conv2d(tx, tw, tb_, padding=1)  # noqa: E731
        tf = _median_ms(conv, args.reps)
        tfb = _median_ms(lambda: torch.autograd.grad(conv(), (tx, tw, tb_), td), args.reps)
        print(f"| {C}->{C} at {S}x{S} | torch | {tf:.2f} | {tfb - tf:.2f} | {tfb:.2f} |")


if __name__ == "__main__":
    main()
