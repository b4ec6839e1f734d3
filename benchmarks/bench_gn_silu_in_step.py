"""CPU time spent inside the fused GroupNorm + SiLU during the U-Net training step (batch
128, float32, one thread), per form of ``fast.set_gnsilu``: the layer functions of
refdiff/nn/fast_hwnc_norm.py wrapped with a CPU clock, forms alternating per round.

    python benchmarks/bench_gn_silu_in_step.py [--rounds 3 --steps 10]

In the step the layer's arrays are cold (made long before the backward pass reads them),
which the standalone bench_gn_silu.py does not show.  Prints ms per step per function.
"""

import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from refdiff.nn import UNet, UNetConfig, fast
    from refdiff.nn import fast_hwnc_norm as H

    acc = collections.defaultdict(float)
    names = ("groupnorm_silu_forward", "groupnorm_silu_backward",
             "groupnorm_silu_forward_fast", "groupnorm_silu_backward_fast")

    def wrap(name):
        f = getattr(H, name)

        def g(*args):
            t0 = time.process_time()
            r = f(*args)
            acc[name] += time.process_time() - t0
            return r
        setattr(H, name, g)

    for n in names:
        wrap(n)
    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    x = rng.standard_normal((128, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 1000, 128)

    def step():
        out, c = model.forward(P, x, t)
        model.backward(P, c, (out - x) * (2 / out.size))

    print(f"GroupNorm + SiLU inside the U-Net step, batch 128, float32, 1 thread, CPU time; "
          f"load average {os.getloadavg()[0]:.1f}")
    for r in range(a.rounds):
        for form in ("exact", "fast"):
            fast.set_gnsilu(form)
            for _ in range(2):
                step()
            acc.clear()
            t0 = time.process_time()
            for _ in range(a.steps):
                step()
            total = (time.process_time() - t0) / a.steps * 1e3
            parts = {k: v / a.steps * 1e3 for k, v in acc.items()}
            print(f"round {r} {form}: step {total:.1f} ms; " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                  + f"; GroupNorm + SiLU {sum(parts.values()):.2f} ms/step")


if __name__ == "__main__":
    main()
