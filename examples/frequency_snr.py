"""Where structure dies first: the per-frequency signal-to-noise ratio of the forward
process on the 8x8 digits.

Write an image in an orthonormal basis of frequencies (the 2D DCT-II, ``dct_basis``):
c = F x with F orthogonal.  The forward process x_t = alpha_t x_0 + sigma_t eps
(MATH.md (2.4)) becomes c_t = alpha_t c_0 + sigma_t F eps, and F eps is again N(0, I)
because F is orthogonal.  So frequency k carries signal variance alpha_t^2 s_k, where
s_k = Var(c_0,k) is the data's power at k, and noise variance sigma_t^2, whatever k is:

    SNR_k(t) = alpha_bar_t s_k / (1 - alpha_bar_t).

Natural images (and the digits) have most power at low frequencies, so the noise, white
in every basis, drowns the high frequencies first: SNR_k(t) = 1 is reached at a smaller t
for a larger frequency.  For Gaussian data with a known spectrum s_k the formula is the
exact ratio of the two variances; for the digits it is exact for their second moments.

Prints, per radial frequency band u + v, the data power and the first timestep at which
the SNR falls below 1, and writes ``frequency_snr.png`` (the spectrum, SNR_k(t) per band,
and one digit's x_t split into its low- and high-frequency parts).

    python examples/frequency_snr.py    # writes figures/ (--out docs/figures: the gallery)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def dct_basis(n: int) -> np.ndarray:
    """The orthonormal 1D DCT-II matrix D (n, n): D[k, j] = a_k cos(pi (j + 1/2) k / n),
    a_0 = sqrt(1/n), a_k = sqrt(2/n); D @ D.T = I.  The 2D transform of an (n, n) image X
    is D X D^T."""
    j, k = np.meshgrid(np.arange(n), np.arange(n))
    D = np.cos(np.pi * (j + 0.5) * k / n) * np.sqrt(2.0 / n)
    D[0] /= np.sqrt(2.0)
    return D


def spectrum(x: np.ndarray) -> np.ndarray:
    """Per-frequency variance s_k (n, n) of images x (N, 1, n, n) in the 2D DCT basis."""
    D = dct_basis(x.shape[-1])
    c = np.einsum("ki,nij,lj->nkl", D, x[:, 0], D)  # (N, n, n): D X D^T per image
    return c.var(axis=0)


def per_frequency_snr(s: np.ndarray, alpha_bars: np.ndarray) -> np.ndarray:
    """SNR_k(t) = alpha_bar_t s_k / (1 - alpha_bar_t), shape (T, *s.shape)."""
    ab = np.asarray(alpha_bars, dtype=np.float64).reshape((-1,) + (1,) * s.ndim)
    return ab * s / (1.0 - ab)


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    args = p.parse_args(argv)
    import refdiff

    x, _, name = _common.eight_by_eight("train")
    if args.tiny:
        x = x[:200]
    sched = refdiff.make_schedule("linear", 1000)
    s = spectrum(x)
    n = s.shape[0]
    band = np.add.outer(np.arange(n), np.arange(n))  # radial band u + v, 0 .. 2n - 2
    snr = per_frequency_snr(s, sched.alpha_bars)
    print(f"{name}: {x.shape[0]} images; linear schedule, T = 1000 (0-based t)")
    print(f"{'band u+v':>8} {'data power':>11} {'SNR < 1 from t =':>17}")
    drown = []
    for b in range(2 * n - 1):
        snr_b = snr[:, band == b].mean(axis=1)  # mean SNR over the band's frequencies
        t_star = int(np.argmax(snr_b < 1.0)) if np.any(snr_b < 1.0) else sched.T
        drown.append(t_star)
        print(f"{b:>8} {s[band == b].mean():11.4f} {t_star:>17}")
    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    im = axes[0].imshow(np.log10(s), cmap="viridis")
    axes[0].set_title(f"log10 data power s_k per DCT frequency (u, v)\n{name}; (0, 0) = mean brightness", fontsize=9)
    axes[0].set_xlabel("v")
    axes[0].set_ylabel("u")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    cmap = plt.get_cmap("plasma")
    for b in range(0, 2 * n - 1, 2):
        axes[1].semilogy(snr[:, band == b].mean(axis=1), color=cmap(b / (2 * n - 2)), label=f"band u+v = {b}")
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[1].set_ylim(1e-4, 1e4)
    axes[1].set_xlabel("timestep t")
    axes[1].set_ylabel("SNR_k(t) = alpha_bar s_k / (1 - alpha_bar)")
    axes[1].set_title("per-frequency SNR: high frequencies drown first\n(dashed: SNR = 1)", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].plot(range(2 * n - 1), drown, "o-")
    axes[2].set_xlabel("radial frequency band u + v")
    axes[2].set_ylabel("first t with SNR < 1")
    axes[2].set_title("the timestep where each band's structure is lost", fontsize=9)
    fig.tight_layout()
    _common.save(fig, out / "frequency_snr.png")
    return drown


if __name__ == "__main__":
    main()
