"""The forward process q(x_t | x_0) dissolving an 8x8 digit and a 2D data set.

``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` (``refdiff.q_sample``,
MATH.md chapter 2), shown at the same 0-based timesteps for the linear and the cosine
schedule (T = 1000): the cosine schedule destroys information more evenly in t.  Each row
of the image figure uses one noise draw for all t, so only the schedule changes along it.
Without scikit-learn the procedural 8x8 shapes replace the digits (it says so).

Writes ``forward_digits.png`` and ``forward_2d.png``.

    python examples/forward_process.py    # writes figures/ (--out docs/figures: the gallery)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--points", type=int, default=2000, help="points of the 2D data set")
    p.add_argument("--dataset", default="moons", help="2D data set (refdiff.data.DATASETS)")
    args = p.parse_args(argv)
    if args.tiny:
        args.points = 200
    import refdiff
    from refdiff.data import load_dataset

    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    rng = np.random.default_rng(args.seed)
    ts = np.array([0, 50, 100, 200, 300, 500, 700, 999])
    schedules = {k: refdiff.make_schedule(k, 1000) for k in ("linear", "cosine")}

    x, y, name = _common.eight_by_eight("train")
    x0 = np.stack([x[np.flatnonzero(y == k)[0]] for k in (2, 5, 7)])  # (3, 1, 8, 8): three classes
    rows = [(sk, i) for sk in schedules for i in range(x0.shape[0])]
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(1.05 * len(ts), 1.1 * len(rows)))
    eps = rng.standard_normal(x0.shape)
    for r, (sk, i) in enumerate(rows):
        for c, t in enumerate(ts):
            xt = refdiff.q_sample(schedules[sk], x0[i:i + 1], np.array([t]), eps[i:i + 1])
            ax = axes[r, c]
            ax.imshow(xt[0, 0], cmap="gray_r", vmin=-2, vmax=2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(sk, fontsize=7)
    fig.suptitle(f"q(x_t | x_0) on {name} (0-based t, T = 1000)", fontsize=9)
    _common.save(fig, out / "forward_digits.png")

    data = load_dataset(args.dataset, args.points, rng)
    eps = rng.standard_normal(data.x.shape)
    fig, axes = plt.subplots(2, len(ts), figsize=(1.3 * len(ts), 2.9), sharex=True, sharey=True)
    for r, sk in enumerate(schedules):
        ab = schedules[sk].alpha_bars
        for c, t in enumerate(ts):
            xt = refdiff.q_sample(schedules[sk], data.x, np.full(data.x.shape[0], t), eps)
            ax = axes[r, c]
            ax.scatter(xt[:, 0], xt[:, 1], s=1, c=data.y if data.y is not None else "C0", cmap="coolwarm")
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t={t}, abar={ab[t]:.2g}", fontsize=6)
            if c == 0:
                ax.set_ylabel(sk, fontsize=7)
    fig.suptitle(f"q(x_t | x_0) on {args.dataset}", fontsize=9)
    _common.save(fig, out / "forward_2d.png")


if __name__ == "__main__":
    main()
