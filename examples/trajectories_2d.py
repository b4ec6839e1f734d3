"""Denoising trajectories in 2D with the exact oracle denoiser.

The "8gaussians" mixture's exact eps-prediction (``GaussianMixture.as_model``, MATH.md
chapter 6) drives ``refdiff.sample`` from the same x_T ~ N(0, I) with DDPM (ancestral,
1000 steps), DDIM (eta = 0, 50 steps) and DPM-Solver++(2M) (10 steps) on a cosine
schedule (T = 1000, "trailing" timesteps 999, ..., 1000/steps - 1); the callbacks record every
intermediate state.  The deterministic samplers follow the probability-flow ODE, so their
paths are smooth and nearly agree; DDPM's paths are Brownian.  The last deterministic step
returns the posterior mean E[x_0 | x_t] at the last grid time (t = 19 for 50 steps, 99 for
10), which pulls samples towards the component centres: their oracle NLL falls *below*
the data's (MATH.md (15.6) is one-sided) while the two-sided distances grow.  Each panel reports the sample quality against fresh data
draws: sliced Wasserstein-2 and energy distance (refdiff.metrics, MATH.md (15.2),
(15.4)), and the oracle NLL (15.6) next to the data's own.

Writes ``trajectories_2d.png`` (into ``figures/`` unless ``--out`` says otherwise;
``--out docs/figures`` regenerates the gallery's copy).

    python examples/trajectories_2d.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

METHODS = (("ddpm", 1000, {}), ("ddim", 50, {"eta": 0.0}), ("dpmpp_2m", 10, {}))


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--n", type=int, default=2000, help="samples per sampler (metrics)")
    p.add_argument("--paths", type=int, default=40, help="trajectories drawn (deterministic samplers)")
    p.add_argument("--stochastic-paths", type=int, default=5,
                   help="trajectories drawn for DDPM, each state every --stochastic-every steps (Brownian paths "
                   "drawn at every step would hide each other)")
    p.add_argument("--stochastic-every", type=int, default=50, help="steps between the drawn DDPM states")
    args = p.parse_args(argv)
    methods = METHODS
    if args.tiny:
        args.n, args.paths = 100, 10
        methods = (("ddpm", 20, {}), ("ddim", 5, {"eta": 0.0}), ("dpmpp_2m", 5, {}))
    import refdiff
    from refdiff import metrics
    from refdiff.data import mixture_oracle

    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    oracle = mixture_oracle("8gaussians", std=0.1)
    schedule = refdiff.make_schedule("cosine", 1000)
    model = oracle.as_model(schedule, "epsilon")
    data = oracle.sample(args.n, np.random.default_rng([args.seed, 1]))
    nll_data, se_data = metrics.oracle_nll(data, oracle, return_se=True)
    x_T = np.random.default_rng([args.seed, 2]).standard_normal((args.n, 2))
    print(f"data: oracle NLL {nll_data:.3f} +- {se_data:.3f} nats (the entropy, estimated)")
    fig, axes = plt.subplots(1, len(methods), figsize=(4.0 * len(methods), 4.2))
    for ax, (method, steps, opts) in zip(axes, methods):
        path = [x_T[:args.paths]]

        def record(i, t, x, x0_hat):
            path.append(np.asarray(x[:args.paths]))

        ts = refdiff.timesteps(1000, steps, spacing="trailing")  # 999, ..., 1000/steps - 1
        x0 = refdiff.sample(model, x_T, schedule, ts, method, rng=np.random.default_rng([args.seed, 3]),
                            callback=record, progress=False, **opts)
        path = np.stack(path)  # (steps + 1, paths, 2)
        if method == "ddpm":  # a few Brownian paths, every k-th state (and the last): readable
            k = max(1, min(args.stochastic_every, (path.shape[0] - 1) // 4))
            path = np.concatenate([path[::k], path[-1:]])[:, :args.stochastic_paths]
        sw = metrics.sliced_wasserstein(x0, data, 256, np.random.default_rng([args.seed, 4]))
        ed = metrics.energy_distance(x0, data)
        nll, se = metrics.oracle_nll(x0, oracle, return_se=True)
        print(f"{method:>9} {steps:5d} steps: sliced W2 {sw:.4f}, energy distance {ed:.5f}, "
              f"oracle NLL {nll:.3f} +- {se:.3f}")
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8", label="data")
        for j in range(path.shape[1]):
            ax.plot(path[:, j, 0], path[:, j, 1], lw=0.9 if method == "ddpm" else 0.6, alpha=0.8)
        ax.scatter(path[0, :, 0], path[0, :, 1], s=8, c="k", marker="x", label="x_T")
        ax.scatter(path[-1, :, 0], path[-1, :, 1], s=10, c="r", label="x_0")
        shown = (f"{path.shape[1]} paths, every {k}th state" if method == "ddpm" else f"{path.shape[1]} paths")
        ax.set_title(f"{method}, {steps} steps ({shown})\nSW2 {sw:.3f}, energy {ed:.4f}, NLL {nll:.2f} "
                     f"(data {nll_data:.2f})", fontsize=8)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("trajectories from the same x_T under the exact 8-Gaussians denoiser (cosine schedule); "
                 "SW2 and energy: lower is better; NLL: closer to the data's is better", fontsize=9)
    _common.save(fig, out / "trajectories_2d.png")


if __name__ == "__main__":
    main()
