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

``--a-tree DIR`` (and ``--b-tree DIR``, default this checkout) compares two whole checkouts:
each runs in its own worker process (``PYTHONPATH=DIR``, one BLAS thread) that builds the same
model, data and optimiser from the same seed and, on request, times five steps (CPU time of
that process); the rounds alternate between the two processes as above.

    python benchmarks/bench_step_ab.py --a-tree /tmp/base --batch 2 --rounds 20

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
if "--worker" not in sys.argv:  # a worker imports the checkout its PYTHONPATH names
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
    ap.add_argument("--a-tree", default=None, help="A: a whole other checkout, in a worker process")
    ap.add_argument("--b-tree", default=None, help="B: a whole other checkout (default: this one, with --a-tree)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if args.worker:
        return _worker(args.batch)
    if args.a_tree:
        return _trees(args)
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
    contents = {k: dict(v) for k, v in original.items() if isinstance(v, dict)}

    def assign(mod, attr, val):
        """Set mod.attr; a switch dict (fast._GNSILU, fast._SHIFT_FOLD ...) is updated in place,
        since the modules that read it (fast_fused) hold the same dict object."""
        cur = getattr(mod, attr)
        if isinstance(cur, dict) and isinstance(val, dict):
            cur.clear()
            cur.update(val)
        else:
            setattr(mod, attr, val)

    def use(name):  # every attribute either setting touches back to this checkout's value, then the setting's
        for (mod, attr), val in original.items():
            assign(mod, attr, contents.get((mod, attr), val))
        for mod, attr, val in settings[name]:
            assign(mod, attr, val)

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


def _make_step(batch):
    """The step of both modes: model, data and optimiser from seed 0."""
    import numpy as np

    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn.optim import FlatAdam, adam_init

    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    P["out.conv.w"] = (0.01 * rng.standard_normal(P["out.conv.w"].shape)).astype(np.float32)
    x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, batch)
    st = {"P": P, "S": adam_init(P)}
    flat = FlatAdam(inplace=True)

    def step():
        out, cache = model.forward(st["P"], x, t)
        G, _ = model.backward(st["P"], cache, (2.0 / out.size) * (out - eps))
        st["P"], st["S"] = flat.update(st["P"], G, st["S"], lr=1e-4)

    return step


def _worker(batch):
    """--worker: one untimed and five timed steps per line read; prints their median (ms)."""
    import refdiff

    step = _make_step(batch)
    for _ in range(3):
        step()
    print(os.path.dirname(os.path.dirname(refdiff.__file__)), flush=True)
    for _ in sys.stdin:
        step()
        ts = []
        for _ in range(5):
            t0 = time.process_time()
            step()
            ts.append(time.process_time() - t0)
        print(f"{statistics.median(ts) * 1e3:.6f}", flush=True)


def _trees(args):
    """--a-tree: the two checkouts in two worker processes, rounds alternating."""
    import subprocess

    procs, res = {}, {"A": [], "B": []}
    for name, tree in (("A", args.a_tree), ("B", args.b_tree or ROOT)):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        procs[name] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--batch",
                                        str(args.batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env=env, cwd=os.path.abspath(tree))
        where = procs[name].stdout.readline().strip()
        if os.path.realpath(where) != os.path.realpath(tree):
            raise SystemExit(f"worker {name} imported refdiff from {where}, not {tree}")
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name, p in procs.items():
            p.stdin.write("go\n")
            p.stdin.flush()
            res[name].append(float(p.stdout.readline()))
    for p in procs.values():
        p.stdin.close()
        p.wait()
    ratios = [b / a for a, b in zip(res["A"], res["B"])]
    print(f"batch {args.batch}, 1 thread, CPU time of each worker process, {args.rounds} rounds; load average "
          f"before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    for name, tree in (("A", args.a_tree), ("B", args.b_tree or ROOT)):
        v = res[name]
        print(f"{name} ({tree}): median {statistics.median(v):.3f} ms/step (rounds {min(v):.3f}-{max(v):.3f})")
    print("B/A per round: " + " ".join(f"{r:.3f}" for r in ratios) + f"; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
