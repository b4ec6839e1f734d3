"""The score field of a Gaussian mixture and how it changes with t (exact oracle).

For the "8gaussians" mixture (``refdiff.data.mixture_oracle``) the noised marginal
p_t(x) = sum_k w_k N(x; alpha_t mu_k, alpha_t^2 s_k^2 + sigma_t^2) is known exactly, and so
is its score grad log p_t(x) (``GaussianMixture.score``, MATH.md chapter 6).  Quiver plots
of the score over the log-density at several 0-based t of a cosine schedule (T = 1000):
near the data the arrows point at the nearest component; at large t they point at the
origin, the score of N(0, I) being -x.

Writes ``score_field.png``.

    python examples/score_field.py    # writes figures/ (--out docs/figures: the gallery)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--grid", type=int, default=21, help="quiver arrows per axis")
    p.add_argument("--t", type=int, nargs="+", default=[0, 150, 300, 500, 800], help="0-based timesteps shown")
    args = p.parse_args(argv)
    if args.tiny:
        args.grid, args.t = 7, [0, 500]
    import refdiff
    from refdiff.data import mixture_oracle

    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    oracle = mixture_oracle("8gaussians", std=0.2)
    schedule = refdiff.make_schedule("cosine", 1000)
    lim = 2.5
    g = np.linspace(-lim, lim, args.grid)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)  # (G^2, 2)
    f = np.linspace(-lim, lim, 120)
    fx, fy = np.meshgrid(f, f)
    fine = np.stack([fx.ravel(), fy.ravel()], 1)  # (120^2, 2)
    fig, axes = plt.subplots(1, len(args.t), figsize=(3.0 * len(args.t), 3.1))
    for ax, t in zip(np.atleast_1d(axes), args.t):
        alpha = float(schedule.sqrt_alpha_bars[t])
        sigma = float(schedule.sqrt_one_minus_alpha_bars[t])
        logp = oracle.log_prob_t(fine, alpha, sigma).reshape(fx.shape)
        ax.contourf(fx, fy, np.maximum(logp, logp.max() - 12), levels=20, cmap="Blues")
        s = oracle.score(pts, alpha, sigma)  # (G^2, 2)
        # arrow length: |score| relative to its median over the panel, capped, times the grid spacing
        n = np.linalg.norm(s, axis=1, keepdims=True)
        v = s / n * (0.9 * (g[1] - g[0])) * np.minimum(1.0, 0.5 * n / np.median(n))
        ax.quiver(pts[:, 0], pts[:, 1], v[:, 0], v[:, 1], color="k", angles="xy", scale_units="xy", scale=1.0,
                  width=0.004)
        ax.set_title(f"t = {t}: alpha = {alpha:.2f}, sigma = {sigma:.2f}", fontsize=8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("log p_t (shading) and its score grad log p_t (arrows; lengths scaled per panel), 8 Gaussians, cosine schedule", fontsize=9)
    _common.save(fig, out / "score_field.png")


if __name__ == "__main__":
    main()
