"""The ELBO broken down over t, for the exact oracle of a 2D mixture.

``refdiff.nll_bound`` (MATH.md chapter 5) with the full estimator returns every term of
-log p(x_0) <= L_T + sum_t L_t + L_0 per sample.  Here the model is the *exact* eps
predictor of the "8gaussians" mixture (continuous data, Gaussian decoder), so the gap
between the bound and the true NLL -log p(x_0) (the oracle's density, MATH.md (15.6)) is
not a learning error: it comes from the form of the reverse chain alone -- Gaussian
kernels with the fixed variance beta_tilde_t ("fixed_small") around the exact posterior
mean, where the true q(x_{t-1} | x_t) of a mixture is neither Gaussian nor of that variance,
and the N(0, I) prior (L_T, negligible here).  Each term is evaluated at one draw
x_t ~ q(x_t | x_0) per point, so the printed bound is a Monte Carlo estimate over the n
points.  Linear and cosine schedules (T = 1000) are compared: the per-step KL terms
against the 0-based t, and their cumulative sums.

Writes ``elbo_breakdown.png``.

    python examples/elbo_breakdown.py    # writes figures/ (--out docs/figures: the gallery)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--n", type=int, default=256, help="data points in the batch")
    p.add_argument("--T", type=int, default=1000, help="diffusion steps")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.T = 16, 50
    import refdiff
    from refdiff import metrics
    from refdiff.data import mixture_oracle

    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    oracle = mixture_oracle("8gaussians", std=0.1)
    x0 = oracle.sample(args.n, np.random.default_rng([args.seed, 1]))
    nll_true = metrics.oracle_nll(x0, oracle)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind in ("linear", "cosine"):
        schedule = refdiff.make_schedule(kind, args.T)
        b = refdiff.nll_bound(oracle.as_model(schedule, "epsilon"), schedule, x0, rng=np.random.default_rng(args.seed),
                              decoder="gaussian", estimator="full")
        terms = np.mean(np.asarray(b.terms_nats), axis=0)  # (T,): column 0 = L_0, t >= 1 the KL terms
        prior = float(np.mean(np.asarray(b.prior_nats)))
        t = np.arange(1, args.T)
        axes[0].semilogy(t, np.maximum(terms[1:], 1e-12), lw=1, label=f"{kind}: KL terms L_t")
        axes[1].plot(np.arange(args.T), prior + np.cumsum(terms), lw=1.2,
                     label=f"{kind}: bound {b.nats:.3f} nats (L_0 {terms[0]:.3f}, L_T {prior:.1e})")
        print(f"{kind:>7}: bound {b.nats:.4f} nats/sample (true NLL {nll_true:.4f}); L_0 {terms[0]:.4f}, "
              f"L_T {prior:.2e}, sum of KL terms {terms[1:].sum():.4f}")
    axes[0].set(xlabel="t (0-based)", ylabel="nats per sample", title="per-step terms of the bound")
    axes[1].axhline(nll_true, color="k", ls="--", lw=1, label=f"true NLL -log p(x_0) = {nll_true:.3f}")
    axes[1].set(xlabel="t (0-based)", ylabel="nats per sample", title="L_T + L_0 + sum of KL terms up to t")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("negative ELBO of the exact 8-Gaussians denoiser (Gaussian decoder)", fontsize=9)
    fig.tight_layout()
    _common.save(fig, out / "elbo_breakdown.png")


if __name__ == "__main__":
    main()
