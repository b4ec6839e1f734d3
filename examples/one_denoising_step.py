"""One denoising step on a tiny image, with every number printed.

A 4x4 image x_0 (a bright plus sign on a dark background, values in [-1, 1]) is noised to
timestep t of the linear schedule (T = 1000, 0-based t), then one DDPM step goes from
x_t to x_{t-1} (MATH.md (8.1)-(8.2), ``refdiff.ddpm_step``):

1. predict the noise: eps_hat = model(x_t, t).  The "model" here is exact: the data are
   Gaussian, x_0 ~ N(m, v I) with m the plus sign and v = 0.05, whose optimal noise
   prediction is eps_hat = sigma_t (x_t - alpha_t m) / (alpha_t^2 v + sigma_t^2)
   (alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t); MATH.md chapter 6);
2. subtract the scaled noise: mean = (x_t - beta_t / sigma_t * eps_hat) / sqrt(1 - beta_t);
3. add fresh noise: x_{t-1} = mean + sqrt(beta_tilde_t) z, with the posterior variance
   beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) ("fixed_small").

Every scalar and every 4x4 array is printed to 3 decimals, so the step can be redone on
paper; the script then checks that refdiff.ddpm_step gives the same x_{t-1}.

    python examples/one_denoising_step.py --t 300
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

PLUS = np.array([[-1, 1, 1, -1], [1, 1, 1, 1], [1, 1, 1, 1], [-1, 1, 1, -1]], dtype=np.float64) * 0.8
DATA_VAR = 0.05


def show(name, a):
    print(f"{name} =")
    for row in np.atleast_2d(a):
        print("    " + " ".join(f"{v:7.3f}" for v in row))


def step_by_hand(sched, t, x_t, z):
    """(eps_hat, mean, x_prev) of one DDPM step at 0-based t, from the formulas above."""
    ab, beta = sched.alpha_bars[t], sched.betas[t]
    ab_prev = sched.alpha_bars[t - 1] if t > 0 else 1.0
    alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
    eps_hat = sigma * (x_t - alpha * PLUS) / (alpha**2 * DATA_VAR + sigma**2)
    mean = (x_t - beta / sigma * eps_hat) / np.sqrt(1.0 - beta)
    beta_tilde = beta * (1.0 - ab_prev) / (1.0 - ab)
    x_prev = mean + (np.sqrt(beta_tilde) * z if t > 0 else 0.0)
    return eps_hat, mean, x_prev


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--t", type=int, default=300, help="0-based timestep of the step (1..999)")
    args = p.parse_args(argv)
    import refdiff

    sched = refdiff.make_schedule("linear", 1000)
    t = args.t
    if not 1 <= t <= sched.T - 1:
        raise SystemExit(f"--t must be in [1, {sched.T - 1}], got {t}")
    rng = np.random.default_rng(args.seed)
    x0 = PLUS + np.sqrt(DATA_VAR) * rng.standard_normal((4, 4))
    eps, z = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    ab, beta = sched.alpha_bars[t], sched.betas[t]
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    print(f"t = {t}: beta_t = {beta:.5f}, alpha_bar_t = {ab:.4f}, alpha_t = sqrt(alpha_bar_t) = {np.sqrt(ab):.4f}, "
          f"sigma_t = {np.sqrt(1 - ab):.4f}")
    show("x_0 (a plus sign plus data noise)", x0)
    show("eps (the noise added)", eps)
    show("x_t = alpha_t x_0 + sigma_t eps", x_t)
    eps_hat, mean, x_prev = step_by_hand(sched, t, x_t, z)
    show("1. eps_hat = sigma_t (x_t - alpha_t m) / (alpha_t^2 v + sigma_t^2)   (predicted noise)", eps_hat)
    print(f"2. subtract the scaled noise: beta_t / sigma_t = {beta / np.sqrt(1 - ab):.5f}, "
          f"1 / sqrt(1 - beta_t) = {1 / np.sqrt(1 - beta):.5f}")
    show("   mean = (x_t - beta_t / sigma_t eps_hat) / sqrt(1 - beta_t)", mean)
    bt = beta * (1 - sched.alpha_bars[t - 1]) / (1 - ab)
    print(f"3. add fresh noise z with std sqrt(beta_tilde_t) = {np.sqrt(bt):.5f}")
    show("   z", z)
    show("x_{t-1} = mean + sqrt(beta_tilde_t) z", x_prev)
    lib = refdiff.ddpm_step(sched, eps_hat[None], np.array([t]), x_t[None], z[None])[0]
    diff = float(np.max(np.abs(lib - x_prev)))
    print(f"refdiff.ddpm_step gives the same x_(t-1): max |difference| = {diff:.1e}")
    return diff


if __name__ == "__main__":
    main()
