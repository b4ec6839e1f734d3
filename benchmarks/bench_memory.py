"""Peak working memory of one U-Net training step, refdiff against PyTorch CPU.

Each measurement runs in a fresh subprocess (one BLAS/torch thread): it imports the
library, builds the default ``UNetConfig`` parameters, the optimiser and the batch, and
records its resident set size (RSS, from /proc/self/statm); then it runs ``--steps``
training steps (forward, epsilon-MSE gradient, backward, Adam) and reads the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``).  The working memory is the peak minus
the RSS before the first step, so imports, parameters and the batch are not counted for
either library.  For refdiff the subprocess also runs one more step under ``tracemalloc``
(NumPy reports its array buffers to it): the traced peak over that step, minus what was
traced at its start, is a cross-check that does not depend on the allocator.

    python benchmarks/bench_memory.py                  # batch 1024, both libraries
    python benchmarks/bench_memory.py --batch 128 --repeats 3

Prints a Markdown table (MiB).  Needs Linux (/proc) and, for the PyTorch column,
``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024.0 * 1024.0


def _rss() -> float:
    """Current resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> float:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def child(lib: str, batch: int, steps: int, conv3x3: str) -> dict:
    """One measurement (runs in the subprocess); returns a dict of byte counts."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from refdiff.nn import UNet, UNetConfig, fast
    from refdiff.nn.optim import FlatAdam, adam_init

    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, batch)
    if lib == "refdiff":
        fast.set_gnsilu("exact" if conv3x3 == "hwnc-exact" else "fast")  # hwnc-exact: the bit-identical GN + SiLU
        conv3x3 = "hwnc" if conv3x3 == "hwnc-exact" else conv3x3
        fast.set_layout("hwnc" if conv3x3 == "hwnc" else "chwn")
        if conv3x3 != "hwnc":
            fast.set_conv3x3(conv3x3)
        state = {"P": P, "S": adam_init(P)}
        flat = FlatAdam(inplace=True)

        def step():
            out, cache = model.forward(state["P"], x, t)
            G, _ = model.backward(state["P"], cache, (2.0 / out.size) * (out - eps))
            del cache, out
            state["P"], state["S"] = flat.update(state["P"], G, state["S"], lr=1e-4)
    else:
        import torch

        from bench_unet_train import torch_unet

        torch.set_num_threads(1)
        fwd = torch_unet(torch, model)
        TP = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in P.items()}
        opt = torch.optim.Adam(list(TP.values()), lr=1e-4)
        tx, te, tt = torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(t)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((fwd(TP, tx, tt) - te) ** 2)
            loss.backward()
            opt.step()
    base = _rss()
    for _ in range(steps):
        step()
    res = {"base": base, "peak": _peak(), "after": _rss()}
    if lib == "refdiff":
        import tracemalloc

        tracemalloc.start()
        t0 = tracemalloc.get_traced_memory()[0]
        step()
        res["traced"] = tracemalloc.get_traced_memory()[1] - t0
        tracemalloc.stop()
    return res


def measure(lib: str, batch: int, steps: int, conv3x3: str) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import bench_memory as b; print(json.dumps(b.child({lib!r}, {batch}, {steps}, {conv3x3!r})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=2, help="steps before reading the peak")
    ap.add_argument("--repeats", type=int, default=2, help="fresh subprocesses per row")
    ap.add_argument("--variants", default="hwnc,direct,f43",
                    help="refdiff variants measured (comma-separated): hwnc (layout, the default path), hwnc-exact (hwnc with "
                         "fast.set_gnsilu('exact')) or a 3x3 method "
                         "of the chwn layout (direct, f43, f23)")
    args = ap.parse_args()
    rows = [("refdiff", v) for v in args.variants.split(",")] + [("torch", "-")]
    import numpy as np
    import torch

    print(f"U-Net (default UNetConfig), batch {args.batch}, float32, 1 thread, {args.steps} steps per process, "
          f"{args.repeats} processes per row; numpy {np.__version__}, torch {torch.__version__}")
    print("| library | 3x3 conv | RSS before the steps MiB | peak RSS MiB | working = peak - before MiB | "
          "tracemalloc peak over one step MiB |")
    print("|---|---|---|---|---|---|")
    work = {}
    for lib, v in rows:
        rs = [measure(lib, args.batch, args.steps, v if lib == "refdiff" else "direct") for _ in range(args.repeats)]
        w = [(r["peak"] - r["base"]) / MiB for r in rs]
        work[(lib, v)] = min(w)
        tr = " / ".join(f"{r['traced'] / MiB:.0f}" for r in rs) if lib == "refdiff" else "-"
        fmt = lambda vals: " / ".join(f"{a:.0f}" for a in vals)  # noqa: E731
        print(f"| {lib} | {v} | {fmt(r['base'] / MiB for r in rs)} | {fmt(r['peak'] / MiB for r in rs)} | "
              f"{fmt(w)} | {tr} |")
    tw = work[("torch", "-")]
    for (lib, v), w in work.items():
        if lib == "refdiff":
            print(f"refdiff ({v}) working memory / PyTorch's: {w / tw:.2f} (smallest of each)")


if __name__ == "__main__":
    main()
