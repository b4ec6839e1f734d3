"""The noise schedules compared: alpha_bar, log-SNR and the sigmas of a sampling grid.

``refdiff.make_schedule`` kinds "linear", "scaled_linear", "cosine", "sigmoid" (T = 1000)
and the zero-terminal-SNR rescaling of the linear one: alpha_bar_t against the 0-based t,
the log-SNR log(alpha_bar_t / (1 - alpha_bar_t)) (= 2 lambda_t, twice the half log-SNR
lambda_t = log alpha_t - log sigma_t of MATH.md chapter 1), and for a 20-step sampler
the sigmas (VE view, sigma = sqrt((1 - alpha_bar) / alpha_bar)) of the "trailing" timestep
grid against the Karras et al. (rho = 7) grid between the same end points
(``refdiff.karras_sigmas``, MATH.md chapter 2).

Writes ``schedules.png``.

    python examples/schedules.py    # writes figures/ (--out docs/figures: the gallery)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps")
    p.add_argument("--steps", type=int, default=20, help="sampler steps of the sigma panel")
    args = p.parse_args(argv)
    if args.tiny:
        args.T, args.steps = 100, 8
    import refdiff

    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    scheds = {k: refdiff.make_schedule(k, args.T) for k in ("linear", "scaled_linear", "cosine", "sigmoid")}
    scheds["linear, zero terminal SNR"] = refdiff.make_schedule("linear", args.T, zero_terminal_snr=True)
    t = np.arange(args.T)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for name, s in scheds.items():
        ab = s.alpha_bars
        axes[0].plot(t, ab, label=name)
        with np.errstate(divide="ignore"):
            axes[1].plot(t, np.log(ab) - np.log1p(-ab), label=name)
    axes[0].set(xlabel="t (0-based)", ylabel="alpha_bar_t", title="alpha_bar")
    axes[1].set(xlabel="t (0-based)", ylabel="log SNR_t = 2 lambda_t", title="log-SNR, log(alpha_bar / (1 - alpha_bar))")
    axes[0].legend(fontsize=7)

    s = scheds["linear"]
    ts = refdiff.timesteps(args.T, args.steps, spacing="trailing")
    sig_grid = refdiff.sigma_from_alpha_bar(s.alpha_bars[ts])
    sig_k = refdiff.karras_sigmas(args.steps, float(sig_grid.min()), float(sig_grid.max()), rho=7.0)
    axes[2].semilogy(np.arange(args.steps), sig_grid, "o-", ms=3, label="linear schedule, 'trailing' timesteps")
    axes[2].semilogy(np.arange(args.steps), sig_k, "s-", ms=3, label="Karras rho = 7, same end points")
    axes[2].set(xlabel="sampler step i", ylabel="sigma",
                title=f"{args.steps}-step sigma grids")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    _common.save(fig, out / "schedules.png")


if __name__ == "__main__":
    main()
