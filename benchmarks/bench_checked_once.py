"""The U-Net's forward + backward with its parameters checked once (round 9: the unchecked
layer twins while the same parameter arrays come back) against the same model forced through
every layer's argument checks (the memo cleared before each call), alternating in one process,
one thread, CPU time of the thread, paired per round (median of five calls each).

    python benchmarks/bench_checked_once.py --batch 2 --rounds 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from refdiff.nn import UNet, UNetConfig

    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    x = rng.standard_normal((args.batch, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 1000, args.batch)

    def fb(checked):
        if checked:
            model.__dict__.pop("_checked_params", None)  # forget: every layer checks its arguments
        out, cache = model.forward(P, x, t)
        model.backward(P, cache, out)

    for _ in range(3):
        fb(False)
    res = {False: [], True: []}
    for _ in range(args.rounds):
        for checked in (False, True):
            ts = []
            for _ in range(5):
                t0 = time.thread_time()
                fb(checked)
                ts.append(time.thread_time() - t0)
            res[checked].append(statistics.median(ts) * 1e3)
    ratios = [a / b for a, b in zip(res[False], res[True])]
    print(f"batch {args.batch}, forward + backward, 1 thread, thread CPU time, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"checked every call: median {statistics.median(res[True]):.3f} ms; checked once: median "
          f"{statistics.median(res[False]):.3f} ms")
    print("once / every call per round: " + " ".join(f"{r:.3f}" for r in ratios) + f"; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
