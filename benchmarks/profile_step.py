"""Where the tuned U-Net training step spends its CPU time, per layer kind (one thread,
float32, default ``UNetConfig``): every layer function the step calls is wrapped with a
CPU clock (``time.thread_time``) that records its EXCLUSIVE time (a wrapped callee's time is
subtracted from its caller's), so the rows add up to the step.

    python benchmarks/profile_step.py [--batch 128 --steps 10 --rounds 3]
    python benchmarks/profile_step.py --batch 4 --steps 50      # the fixed per-step cost

Rows: Winograd / taps / direct / 1x1 convolutions (forward, backward: dX and dW together),
the convolution wrappers' own time (argument checks, dispatch, the 1x1 product), fused
GroupNorm + SiLU and GroupNorm (inner kernel, and the checking wrapper), the residual block's
own time (the time-embedding add ``h + W_e e``, the spatial sum of its backward, the
residual add ``s + h``, checks), attention, linear layers, concatenation and resampling,
the U-Net's own loop (skip adds, dispatch), embeddings, Adam, the loss.  The wrappers cost
a few microseconds per call themselves (~150 calls per step), which lands in the callers'
rows.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# (module under refdiff.nn, attribute, row).  Functions imported by name into other modules
# are patched there too (every module in _USERS that has the attribute).
_TARGETS = [
    ("fast_hwnc", "winograd_forward", "conv3x3 Winograd fwd"),
    ("fast_hwnc", "winograd_backward", "conv3x3 Winograd bwd (dX+dW)"),
    ("fast_hwnc", "taps_forward", "conv3x3 F=1 taps fwd"),
    ("fast_hwnc", "taps_backward", "conv3x3 F=1 taps bwd"),
    ("fast_hwnc", "_direct_forward", "conv direct (stride 2, C=1) fwd"),
    ("fast_hwnc", "_direct_backward", "conv direct (stride 2, C=1) bwd"),
    ("fast_hwnc", "conv_forward", "conv wrappers + 1x1 fwd"),
    ("fast_hwnc", "conv_backward", "conv wrappers + 1x1 bwd"),
    ("fast", "conv2d_forward", "conv wrappers + 1x1 fwd"),
    ("fast", "conv2d_backward", "conv wrappers + 1x1 bwd"),
    ("fast", "_conv_f", "conv wrappers + 1x1 fwd"),  # the unchecked entries of the tuned loop (round 9)
    ("fast", "_conv_b", "conv wrappers + 1x1 bwd"),
    ("fast_hwnc_norm", "groupnorm_silu_forward_fast", "GN+SiLU fwd"),
    ("fast_hwnc_norm", "groupnorm_silu_backward_fast", "GN+SiLU bwd"),
    ("fast_hwnc_norm", "groupnorm_silu_forward", "GN+SiLU fwd"),
    ("fast_hwnc_norm", "groupnorm_silu_backward", "GN+SiLU bwd"),
    ("fast_hwnc_norm", "groupnorm_silu_shift_forward", "GN+SiLU fwd"),
    ("fast_hwnc_norm", "groupnorm_silu_shift_backward", "GN+SiLU bwd"),
    ("fast", "groupnorm_silu_forward", "GN+SiLU checks/dispatch"),
    ("fast", "groupnorm_silu_backward", "GN+SiLU checks/dispatch"),
    ("fast", "groupnorm_silu_shift_forward", "GN+SiLU checks/dispatch"),
    ("fast", "groupnorm_silu_shift_backward", "GN+SiLU checks/dispatch"),
    ("fast", "_gnsilu_f", "GN+SiLU checks/dispatch"),
    ("fast", "_gnsilu_b", "GN+SiLU checks/dispatch"),
    ("fast", "_gnsilu_shift_f", "GN+SiLU checks/dispatch"),
    ("fast", "_gnsilu_shift_b", "GN+SiLU checks/dispatch"),
    ("fast", "groupnorm_forward", "GroupNorm (attention) fwd"),
    ("fast", "groupnorm_backward", "GroupNorm (attention) bwd"),
    ("fast", "add_channel_shift", "emb shift h + W_e e (fwd)"),
    ("blocks", "resblock_forward", "resblock own fwd (s + h, checks)"),
    ("blocks", "resblock_backward", "resblock own bwd (sum_p dh, adds)"),
    ("blocks", "_resblock_f", "resblock own fwd (s + h, checks)"),
    ("blocks", "_resblock_b", "resblock own bwd (sum_p dh, adds)"),
    ("blocks", "_lin_fu", "linear fwd"),
    ("blocks", "_lin_bu", "linear bwd"),
    ("blocks", "attnblock_forward", "attention block own"),
    ("blocks", "attnblock_backward", "attention block own"),
    ("layers", "attention_forward", "attention softmax(QK^T)V fwd"),
    ("layers", "attention_backward", "attention bwd"),
    ("layers", "linear_forward", "linear fwd"),
    ("layers", "linear_backward", "linear bwd"),
    ("fast", "concat_forward", "skip concat / split"),
    ("fast", "concat_backward", "skip concat / split"),
    ("fast", "_concat_f", "skip concat / split"),
    ("fast", "upsample2x_forward", "upsample"),
    ("fast", "upsample2x_backward", "upsample"),
    ("unet.UNet", "_embed", "time embedding fwd"),
    ("unet.UNet", "_embed_backward", "time embedding bwd"),
    ("unet.UNet", "forward", "U-Net loop own fwd (skip adds, checks)"),
    ("unet.UNet", "backward_full", "U-Net loop own bwd (skip adds, checks)"),
    ("optim.FlatAdam", "update", "Adam (FlatAdam)"),
]
_USERS = ("fast", "fast_layers", "fast_fused", "fast_chwn", "blocks", "unet", "unet_blocks", "attention", "layers")  # modules that import them by name


def install(acc, counts):
    """Wrap every target; returns nothing (the wrappers add into ``acc`` by row)."""
    import importlib

    stack = [0.0]  # child time accumulated for the innermost running wrapper

    def wrap(f, row):
        def g(*a, **k):
            stack.append(0.0)
            t0 = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                dt = time.thread_time() - t0
                child = stack.pop()
                acc[row] += dt - child
                counts[row] += 1
                stack[-1] += dt
        g.__wrapped__ = f
        return g

    for modname, attr, row in _TARGETS:
        mod_path, _, cls = modname.partition(".")
        mod = importlib.import_module("refdiff.nn." + mod_path)
        owner = getattr(mod, cls) if cls else mod
        if not hasattr(owner, attr):
            continue
        f = getattr(owner, attr)
        w = wrap(f, row)
        setattr(owner, attr, w)
        if not cls:
            for u in _USERS:
                um = importlib.import_module("refdiff.nn." + u)
                if getattr(um, attr, None) is f:
                    setattr(um, attr, w)
    # the U-Net's block tables hold lambdas that look the block functions up at call time
    # (module globals of unet_blocks and unet), so patching those modules' names reaches them;
    # blocks.py's layer sets (_CHECKED, _UNCHECKED) hold the functions themselves: patched here.
    blocks = importlib.import_module("refdiff.nn.blocks")
    for layers in (blocks._CHECKED, blocks._UNCHECKED):
        for attr, f in list(vars(layers).items()):
            for name in dir(blocks):
                g = getattr(blocks, name)
                if getattr(g, "__wrapped__", None) is f:
                    setattr(layers, attr, g)
    return stack


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn.optim import FlatAdam, adam_init

    acc, counts = collections.defaultdict(float), collections.defaultdict(int)
    stack = install(acc, counts)
    model = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    P = model.init_params(rng)
    x = rng.standard_normal((args.batch, 1, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, args.batch)
    st = {"P": P, "S": adam_init(P)}
    flat = FlatAdam(inplace=True)

    def step():
        out, cache = model.forward(st["P"], x, t)
        t0 = time.thread_time()
        d = (2.0 / out.size) * (out - eps)
        acc["loss gradient"] += time.thread_time() - t0
        G, _ = model.backward(st["P"], cache, d)
        st["P"], st["S"] = flat.update(st["P"], G, st["S"], lr=1e-4)

    for _ in range(3):
        step()
    per_round = []
    for _ in range(args.rounds):
        acc.clear()
        counts.clear()
        stack[:] = [0.0]
        t0 = time.thread_time()
        for _ in range(args.steps):
            step()
        total = (time.thread_time() - t0) / args.steps * 1e3
        per_round.append((total, {k: v / args.steps * 1e3 for k, v in acc.items()},
                          {k: v // args.steps for k, v in counts.items()}))
    print(f"tuned U-Net step, batch {args.batch}, float32, 1 thread, CPU time (thread_time), {args.steps} steps x "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}")
    steps = [r[0] for r in per_round]
    print(f"step: median {statistics.median(steps):.2f} ms (rounds {min(steps):.2f}-{max(steps):.2f})")
    rows = sorted(per_round[0][1], key=lambda k: -statistics.median(r[1].get(k, 0.0) for r in per_round))
    print(f"| row | calls/step | ms/step (median of rounds) | share |")
    print("|---|---|---|---|")
    med_total = statistics.median(steps)
    covered = 0.0
    for k in rows:
        v = statistics.median(r[1].get(k, 0.0) for r in per_round)
        covered += v
        print(f"| {k} | {per_round[0][2].get(k, 0)} | {v:.2f} | {100 * v / med_total:.1f} % |")
    print(f"| not in a wrapped function (step loop, Python) | | {med_total - covered:.2f} | "
          f"{100 * (med_total - covered) / med_total:.1f} % |")


if __name__ == "__main__":
    main()
