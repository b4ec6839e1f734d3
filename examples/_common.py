"""Helpers shared by the example scripts: the common command-line options, the output
folder, matplotlib on the Agg backend, and saving figures with a line printed per file.

Every example is a script with ``main(argv=None)``; ``--out DIR`` names the output
folder (created) and ``--tiny`` selects a seconds-long configuration (used by the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


class _Parser(argparse.ArgumentParser):
    """argparse that applies ``--threads`` as soon as the arguments are parsed."""

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        cap_threads(ns.threads)
        return ns


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every example takes (--out, --tiny, --seed,
    --threads).  ``default_out`` should be a folder outside docs/figures (the tracked
    gallery), which is rewritten only when asked with ``--out docs/figures``."""
    p = _Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=default_out, help="output folder for the figures (created if missing; "
                   "--out docs/figures rewrites the README gallery)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (used by the tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of every numpy Generator used")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads for the rest of the run (threadpoolctl); "
                   "0 leaves the library's own choice.  Small matrices: one thread measured faster (README, Threads)")
    return p


def cap_threads(n: int):
    """Cap the BLAS thread pools at ``n`` threads for the rest of the process (threadpoolctl;
    ``n`` = 0 leaves them alone).  Without threadpoolctl, says how to get it when asked for a cap."""
    if n is None or n == 0:
        return None
    if n < 0:
        raise SystemExit(f"--threads must be >= 0, got {n}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: BLAS threads are not capped (pip install threadpoolctl)",
              file=sys.stderr)
        return None
    return threadpool_limits(limits=n, user_api="blas")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def out_dir(path) -> Path:
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def save(fig, path: Path, dpi: int = 80) -> Path:
    """Save ``fig`` as PNG, close it, print the path; returns the path."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {path}")
    return path


def image_grid(images: np.ndarray, nrow: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(N, 1, H, W) images in [-1, 1] as one (nrow (H + pad), ncol (W + pad)) array,
    row-major, for ``imshow`` (missing cells are ``fill``)."""
    n, _, h, w = images.shape
    ncol = int(np.ceil(n / nrow))
    grid = np.full((nrow * (h + pad) - pad, ncol * (w + pad) - pad), fill)
    for k in range(n):
        i, j = divmod(k, ncol)
        grid[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = images[k, 0]
    return grid


def have_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def eight_by_eight(split: str = "train", rng=None, n_shapes: int = 3000):
    """(x, y, name): the scikit-learn 8x8 digits when available, else the procedural
    shapes (printing why)."""
    from refdiff.data import digits8x8, shapes8x8

    if have_sklearn():
        x, y = digits8x8(split)
        return x, y, "digits8x8"
    print("scikit-learn is not installed: using the procedural 8x8 shapes instead of the digits "
          "(pip install scikit-learn for the digits)", file=sys.stderr)
    x, y = shapes8x8(n_shapes, np.random.default_rng(0) if rng is None else rng)
    return x, y, "shapes8x8"
