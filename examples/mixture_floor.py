"""Train the MLP denoiser on a 2D Gaussian mixture for about a minute of CPU and compare its
held-out eps-MSE with the irreducible floor E||eps - E[eps|x_t]||^2 of the exact mixture
oracle, MATH.md (14.18).

    python examples/mixture_floor.py --data 8gaussians --steps 8000
    python examples/mixture_floor.py --data 25gaussians --steps 8000 --out run_dir

Prints the floor, the model's held-out loss (raw and EMA parameters) and their ratio, and
the same split by noise level (quartiles of t), and writes ``mixture_floor.json`` to
``--out`` when given (with checkpoints there).
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

import refdiff
import refdiff.data
from refdiff.losses import irreducible_loss, objective_loss
from refdiff.nn import MLP, MLPConfig
from refdiff.train import train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="8gaussians", choices=["8gaussians", "25gaussians"])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--n-heldout", type=int, default=50000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (needs threadpoolctl; small matmuls prefer 1)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    sched = refdiff.make_schedule("linear", args.T)
    data = refdiff.data.load_dataset(args.data, 50000, np.random.default_rng(args.seed))
    model = MLP(MLPConfig(dim=2, hidden=args.hidden, layers=args.layers))
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads)
    except ImportError:
        limit = contextlib.nullcontext()
    t0 = time.perf_counter()
    with limit:
        res = train(model, data, schedule=sched, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    ema_decay=args.ema_decay, seed=args.seed, eval_every=max(1, args.steps // 10), eval_size=4096,
                    out_dir=args.out, lr_decay="cosine", warmup_steps=min(100, args.steps // 10))
    seconds = time.perf_counter() - t0

    rng = np.random.default_rng(10_000 + args.seed)  # held-out draws, independent of training
    n = args.n_heldout
    w, mu, var = refdiff.data.mixture_parameters(args.data)
    x0, _ = refdiff.data.sample_mixture(w, mu, var, n, rng)
    t = rng.integers(0, sched.T, n)
    noise = rng.standard_normal((n, 2))
    a, s = refdiff.alpha_sigma(sched, t, x0)
    x_t = (a * x0 + s * noise).astype(np.float32)
    floor = float(irreducible_loss(data.oracle, x0, t, noise, sched))
    out = {"data": args.data, "steps": args.steps, "train_seconds": seconds, "floor": floor}
    for name, params in (("raw", res.params), ("ema", res.ema_params)):
        pred = model.apply(params, x_t, t).astype(np.float64)
        out[f"mse_{name}"] = float(objective_loss(pred, x0, noise, a, s)[0])
        out[f"ratio_{name}"] = out[f"mse_{name}"] / floor
    # by noise level: quartiles of t
    eps_bar = data.oracle.eps(a * x0 + s * noise, a, s)
    pred = model.apply(res.ema_params, x_t, t).astype(np.float64)
    q = []
    for lo in range(0, sched.T, sched.T // 4):
        m = (t >= lo) & (t < lo + sched.T // 4)
        q.append({"t": [lo, lo + sched.T // 4 - 1], "floor": float(np.mean((noise[m] - eps_bar[m]) ** 2)),
                  "ema_mse": float(np.mean((noise[m] - pred[m]) ** 2))})
    out["by_t_quartile"] = q
    print(f"{args.data}: {args.steps} steps in {seconds:.1f} s; held-out eps-MSE floor {floor:.5f}; "
          f"raw {out['mse_raw']:.5f} (x{out['ratio_raw']:.4f}); EMA {out['mse_ema']:.5f} (x{out['ratio_ema']:.4f})")
    for r in q:
        print(f"  t in {r['t']}: floor {r['floor']:.5f}, EMA {r['ema_mse']:.5f} (x{r['ema_mse'] / r['floor']:.3f})")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "mixture_floor.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
