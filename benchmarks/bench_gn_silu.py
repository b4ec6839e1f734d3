"""GroupNorm then SiLU (two layers) against the fused ``groupnorm_silu`` of the tuned path
in its two forms (``fast.set_gnsilu("exact")``, bit-identical, and ``"fast"``, MATH.md
(23.9)), forward + backward, on one U-Net activation shape, alternating, CPU-time clock.

    python benchmarks/bench_gn_silu.py [--batch 128 --channels 32 --size 8 --groups 8]

Prints ms per forward + backward (the best of --repeats rounds of --calls calls each).
"""

import argparse
import time

import numpy as np

from refdiff.nn import fast
from refdiff.nn import fast_hwnc as hw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    fast.set_layout("hwnc")
    rng = np.random.default_rng(0)
    N, C, S, G = a.batch, a.channels, a.size, a.groups
    x = hw.to_nchw(rng.standard_normal((S, S, N, C)).astype(a.dtype))
    d = hw.to_nchw(rng.standard_normal((S, S, N, C)).astype(a.dtype))
    g, b = (1 + 0.1 * rng.standard_normal(C)).astype(a.dtype), (0.1 * rng.standard_normal(C)).astype(a.dtype)

    def separate():
        y, c_n = fast.groupnorm_forward(x, g, b, G)
        _, c_s = fast.silu_forward(y)
        fast.groupnorm_backward(fast.silu_backward(d, c_s), c_n)

    def fused():
        _, c = fast.groupnorm_silu_forward(x, g, b, G)
        fast.groupnorm_silu_backward(d, c)

    def exact():
        fast.set_gnsilu("exact")
        fused()

    def fewer():
        fast.set_gnsilu("fast")
        fused()

    best = {"separate": [], "fused exact": [], "fused fast": []}
    for _ in range(a.repeats):
        for name, f in (("separate", separate), ("fused exact", exact), ("fused fast", fewer)):
            f()
            t0 = time.process_time()
            for _ in range(a.calls):
                f()
            best[name].append((time.process_time() - t0) / a.calls * 1e3)
    print(f"GroupNorm + SiLU fwd + bwd, x ({N}, {C}, {S}, {S}) {a.dtype}, {G} groups, hwnc layout, CPU time")
    for name, v in best.items():
        print(f"{name}: {min(v):.3f} ms (rounds {min(v):.3f}-{max(v):.3f})")
    for name in ("fused exact", "fused fast"):
        print(f"{name} / separate: {min(best[name]) / min(best['separate']):.2f}")
    print(f"fast / exact: {min(best['fused fast']) / min(best['fused exact']):.2f}")


if __name__ == "__main__":
    main()
