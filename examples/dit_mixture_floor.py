"""Train the DiT (adaLN-Zero, MATH.md chapter 20) on an 8-template Gaussian mixture of 8x8
images and compare its held-out eps-MSE with the exact irreducible loss E||eps - E[eps|x_t]||^2
of the mixture oracle, MATH.md (14.18).

The mixture: the 8 class-mean images of the 8x8 digits 0..7 (values in [-1, 1]) as means,
isotropic standard deviation ``--std``, equal weights.  Unconditional, eps-prediction, DDPM
linear schedule (T = 1000).

    python examples/dit_mixture_floor.py --steps 4000 --out runs/dit_mix
    python examples/dit_mixture_floor.py --tiny --out /tmp/x

Prints the floor, the model's held-out loss (raw and EMA) and their ratio, and writes
``dit_mixture_floor.json`` to ``--out``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

import refdiff
import refdiff.data
from refdiff.losses import irreducible_loss, objective_loss
from refdiff.nn.dit import DiT, DiTConfig
from refdiff.train import train


def template_mixture(std: float):
    """The 8 digit class means (classes 0..7) as a GaussianMixture with variance std^2."""
    x, y = refdiff.data.digits8x8("train")
    means = np.stack([x[y == k].mean(axis=0) for k in range(8)])  # (8, 1, 8, 8)
    return refdiff.GaussianMixture(np.full(8, 1 / 8), means, std ** 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--std", type=float, default=0.2)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--n-heldout", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a few steps at a small size (smoke test)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.width, args.depth, args.n_heldout, args.batch_size = 5, 16, 1, 500, 16

    sched = refdiff.make_schedule("linear", 1000)
    mix = template_mixture(args.std)
    data = mix.sample(50000, np.random.default_rng(args.seed))
    net = DiT(DiTConfig(image_size=8, in_channels=1, patch=args.patch, width=args.width, depth=args.depth,
                        heads=args.heads, freq_dim=64))
    t0 = time.perf_counter()
    res = train(net, data, schedule=sched, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                ema_decay=args.ema_decay, seed=args.seed, lr_decay="cosine", warmup_steps=min(200, args.steps // 10),
                progress=False)
    seconds = time.perf_counter() - t0

    rng = np.random.default_rng(10_000 + args.seed)  # held-out draws, independent of training
    n = args.n_heldout
    x0 = mix.sample(n, rng)
    t = rng.integers(0, 1000, n)
    noise = rng.standard_normal(x0.shape)
    a, s = refdiff.alpha_sigma(sched, t, x0)
    x_t = (a * x0 + s * noise).astype(np.float32)
    floor = float(irreducible_loss(mix, x0, t, noise, sched))
    out = {"setup": vars(args), "params": net.num_params(), "train_seconds": seconds, "floor": floor,
           "zero_model_loss": float(np.mean(noise ** 2))}
    for name, params in (("raw", res.params), ("ema", res.ema_params)):
        pred = np.concatenate([net.apply(params, x_t[i:i + 2000], t[i:i + 2000]) for i in range(0, n, 2000)])
        out[f"mse_{name}"] = float(objective_loss(pred.astype(np.float64), x0, noise, a, s)[0])
        out[f"ratio_{name}"] = out[f"mse_{name}"] / floor
    print(f"DiT {net.num_params()} params, {args.steps} steps in {seconds:.1f} s; held-out eps-MSE floor "
          f"{floor:.5f}; raw {out['mse_raw']:.5f} (x{out['ratio_raw']:.4f}); EMA {out['mse_ema']:.5f} "
          f"(x{out['ratio_ema']:.4f})")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "dit_mixture_floor.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
