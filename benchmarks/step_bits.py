"""Bit-identity of the tuned training step across two checkouts: run four steps (forward,
epsilon-MSE gradient, backward, in-place FlatAdam) of three U-Nets from fixed seeds and save
every output, input gradient, last parameter gradient and updated parameter; then compare
two such files with ``np.array_equal``.  Round 9 used it after every change (the changes were
meant to alter no bit).

    PYTHONPATH=/tmp/base python benchmarks/step_bits.py --save /tmp/base.npz   # another checkout
    python benchmarks/step_bits.py --save /tmp/new.npz                         # this one
    python benchmarks/step_bits.py --compare /tmp/base.npz /tmp/new.npz

Cases: the default U-Net at batches 2 and 5 (float32; 8x8: every Winograd tile group is one
tile) and a float64 16x16 three-level class-conditional U-Net at batch 3 (multi-tile groups).
"""

from __future__ import annotations

import argparse
import os
import sys

if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def save(path):
    import numpy as np

    import refdiff
    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn.optim import FlatAdam, adam_init

    out = {}
    cases = ((2, "float32", UNetConfig()), (5, "float32", UNetConfig()),
             (3, "float64", UNetConfig(image_size=16, channel_mults=(1, 2, 1), base_channels=16, groups=4,
                                       num_classes=3)))
    for B, dt, cfg in cases:
        model = UNet(cfg)
        rng = np.random.default_rng(B)
        P = model.init_params(rng, dtype=dt)
        P["out.conv.w"] = (0.01 * rng.standard_normal(P["out.conv.w"].shape)).astype(dt)
        S = cfg.image_size
        x = rng.standard_normal((B, 1, S, S)).astype(dt)
        eps = rng.standard_normal(x.shape).astype(dt)
        t = rng.integers(0, 1000, B)
        cond = {"class": rng.integers(0, 3, B)} if cfg.num_classes else None
        st = {"P": P, "S": adam_init(P)}
        flat = FlatAdam(inplace=True)
        for _ in range(4):
            o, c = model.forward(st["P"], x, t, cond)
            G, dx = model.backward(st["P"], c, (2.0 / o.size) * (o - eps))
            st["P"], st["S"] = flat.update(st["P"], G, st["S"], lr=1e-3)
        out.update({f"{B}/G/{k}": v for k, v in G.items()})
        out.update({f"{B}/P/{k}": v for k, v in st["P"].items()})
        out[f"{B}/out"], out[f"{B}/dx"] = o, dx
    np.savez(path, **out)
    print(f"{len(out)} arrays from {os.path.dirname(refdiff.__file__)} -> {path}")


def compare(a, b):
    import numpy as np

    A, B = np.load(a), np.load(b)
    if set(A.files) != set(B.files):
        raise SystemExit(f"different arrays: {sorted(set(A.files) ^ set(B.files))[:5]}")
    bad = [k for k in A.files if not np.array_equal(A[k], B[k])]
    print(f"{len(A.files)} arrays, {len(bad)} differing" + (f": {bad[:5]}" if bad else ""))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", metavar="FILE")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.save:
        save(args.save)
    if args.compare:
        sys.exit(compare(*args.compare))


if __name__ == "__main__":
    main()
