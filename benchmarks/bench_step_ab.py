"""Two settings of the tuned path timed against each other in one process: the U-Net
training step (forward, epsilon-MSE gradient, backward, FlatAdam) alternately under
setting A and setting B, one thread, CPU-time clock, paired per round.

A setting is a list of module attributes of ``refdiff.nn`` to assign, e.g.

    python benchmarks/bench_step_ab.py --a fast_hwnc._TAPS_MAX_F=0 --b fast_hwnc._TAPS_MAX_F=1
    python benchmarks/bench_step_ab.py --a fast_hwnc_norm._KEEP_HU_FLOATS=0 --b fast_hwnc_norm._KEEP_HU_FLOATS=524288
    python benchmarks/bench_step_ab.py --a-from /tmp/base:_input_transform,winograd_backward --b fast_hwnc._TAPS_MAX_F=1

``--a-from DIR:f,g`` makes setting A take the functions f, g of ``refdiff/nn/fast_hwnc.py``
from another checkout DIR (e.g. ``git archive <commit> | tar -x -C DIR``), loaded as a
separate module, in place of this checkout's (the rest of the step is this checkout's).

Each round runs one untimed step and five timed steps per setting (their median); the
ratio B/A is taken per round, so a slow phase of a shared machine hits both settings.
Small differences (a few per cent) that separate runs of bench_unet_train.py cannot
resolve under load show up here.  Prints the per-round ratios and their median.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _setting(items):
    """[(module, attribute, value)] from 'module.attr=value' strings (value: a Python literal)."""
    import ast

    out = []
    for it in items:
        name, _, val = it.partition("=")
        mod, _, attr = name.rpartition(".")
        out.append((importlib.import_module("refdiff.nn." + mod), attr, ast.literal_eval(val)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", nargs="+", default=[], help="setting A: module.attr=value ...")
    ap.add_argument("--a-from", default=None, help="setting A also takes these fast_hwnc functions from another "
                                                   "checkout: DIR:name,name")
    ap.add_argument("--b", nargs="+", default=[], help="setting B")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn.optim import FlatAdam, adam_init

    settings = {"A": _setting(args.a), "B": _setting(args.b)}
    if args.a_from:
        import importlib.util

        from refdiff.nn import fast_hwnc

        where, _, names = args.a_from.partition(":")
        spec = importlib.util.spec_from_file_location("refdiff.nn._fast_hwnc_other",
                                                      os.path.join(where, "refdiff", "nn", "fast_hwnc.py"))
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        for n in names.split(","):  # A: the other checkout's function; B: this checkout's
            settings["A"].append((fast_hwnc, n, getattr(other, n)))
            settings["B"].append((fast_hwnc, n, getattr(fast_hwnc, n)))
    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    P["out.conv.w"] = (0.01 * rng.standard_normal(P["out.conv.w"].shape)).astype(np.float32)
    x = rng.standard_normal((args.batch, 1, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, args.batch)
    st = {"P": P, "S": adam_init(P)}
    flat = FlatAdam(inplace=True)

    def step():
        out, cache = model.forward(st["P"], x, t)
        G, _ = model.backward(st["P"], cache, (2.0 / out.size) * (out - eps))
        st["P"], st["S"] = flat.update(st["P"], G, st["S"], lr=1e-4)

    original = {(mod, attr): getattr(mod, attr) for mod, attr, _ in settings["A"] + settings["B"]}

    def use(name):  # every attribute either setting touches back to this checkout's value, then the setting's
        for (mod, attr), val in original.items():
            setattr(mod, attr, val)
        for mod, attr, val in settings[name]:
            setattr(mod, attr, val)

    res = {"A": [], "B": []}
    for name in res:
        use(name)
        for _ in range(3):
            step()
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name in res:
            use(name)
            step()
            ts = []
            for _ in range(5):
                t0 = time.process_time()
                step()
                ts.append(time.process_time() - t0)
            res[name].append(statistics.median(ts) * 1e3)
    ratios = [b / a for a, b in zip(res["A"], res["B"])]
    print(f"batch {args.batch}, 1 thread, CPU time, {args.rounds} rounds; load average before {load0[0]:.1f}, "
          f"after {os.getloadavg()[0]:.1f}")
    for name, v in res.items():
        what = " ".join(args.a + ([f"fast_hwnc functions from {args.a_from}"] if args.a_from else [])) \
            if name == "A" else " ".join(args.b) or "this checkout"
        print(f"{name} ({what}): median {statistics.median(v):.2f} ms/step "
              f"(rounds {min(v):.2f}-{max(v):.2f})")
    print("B/A per round: " + " ".join(f"{r:.3f}" for r in ratios) + f"; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
