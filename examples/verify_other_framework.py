"""Worked example: check an implementation written in another framework against refdiff's
reference vectors (docs/verifying.md).

The "other implementation" below is written from the formulas alone, without importing
refdiff: in PyTorch (float64) when torch is importable, else in plain NumPy.  It covers

* schedules: linear and cosine, every array of the Schedule (cases ``schedule_linear``,
  ``schedule_cosine``);
* the "trailing" timestep grids (``timesteps_trailing``);
* q_sample (``q_sample``) and one DDIM step at eta = 0, 0.5, 1 (``ddim_step``);
* a whole DPM-Solver++(2M) trajectory on the suite's Gaussian oracle model
  (``trajectory_dpmpp_2m``).

It reads each case's inputs from SUITE/<case>.npz, writes RESULTS/<case>.npz with the
output names of manifest.json, and runs ``refdiff check SUITE RESULTS --cases ...``.

    python examples/verify_other_framework.py --out verify-demo [--backend numpy|torch]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

CASES = ["schedule_linear", "schedule_cosine", "timesteps_trailing", "q_sample", "ddim_step", "trajectory_dpmpp_2m"]


class Backend:
    """The few array operations the re-implementation needs, in torch or NumPy (float64)."""

    def __init__(self, name):
        self.name = name
        if name == "torch":
            import torch

            self.t = torch
            self.asarray = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
            self.to_numpy = lambda a: a.detach().cpu().numpy()
            self.linspace = lambda a, b, n: torch.linspace(a, b, n, dtype=torch.float64)
        else:
            self.t = np
            self.asarray = lambda a: np.asarray(a, dtype=np.float64)
            self.to_numpy = np.asarray
            self.linspace = lambda a, b, n: np.linspace(a, b, n)
        for f in ("sqrt", "log", "cos", "minimum", "exp"):
            setattr(self, f, getattr(self.t, f))

    def cumprod(self, a):
        return self.t.cumprod(a, 0) if self.name == "torch" else np.cumprod(a)

    def cat(self, parts):
        return self.t.cat(parts) if self.name == "torch" else np.concatenate(parts)


# ---------------------------------------------------------------------------- the re-implementation
def schedule_arrays(B, betas):
    """Every Schedule array from betas (0-based: index t is paper step t+1)."""
    alphas = 1.0 - betas
    ab = B.cumprod(alphas)
    ab_prev = B.cat([B.asarray([1.0]), ab[:-1]])
    pv = betas * (1.0 - ab_prev) / (1.0 - ab)
    return {
        "betas": betas, "alphas": alphas, "alpha_bars": ab, "alpha_bars_prev": ab_prev,
        "sqrt_alpha_bars": B.sqrt(ab), "sqrt_one_minus_alpha_bars": B.sqrt(1.0 - ab),
        "sigmas": B.sqrt((1.0 - ab) / ab), "log_snr": B.log(ab / (1.0 - ab)), "posterior_variance": pv,
        "posterior_log_variance_clipped": B.log(B.cat([pv[1:2], pv[1:]])),
        "posterior_mean_coef1": betas * B.sqrt(ab_prev) / (1.0 - ab),
        "posterior_mean_coef2": (1.0 - ab_prev) * B.sqrt(alphas) / (1.0 - ab),
    }


def linear_betas(B, T):
    return B.linspace(1e-4, 0.02, T)


def cosine_betas(B, T, s=0.008, max_beta=0.999):
    t = B.asarray(np.arange(T + 1) / T)
    f = B.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return B.minimum(1.0 - f[1:] / f[:-1], B.asarray(max_beta))


def trailing(T, n):
    # the suite follows the widely used PyTorch library: round(arange(T, 0, -T/n)) - 1 in
    # float64, halves to even.  Exact fractions would differ where the float arange lands
    # just below a half (T = 1000, n = 48: 937.4999999999999 -> 936, exact 937.5 -> 937);
    # for some n that arange also has an (n+1)-th value near 0, dropped here as in refdiff.
    return (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1)[:n]


def oracle_eps(B, x, alpha, sigma, mean, var):
    """E[eps | x_t] for data N(mean, diag(var)) on x_t = alpha x0 + sigma eps."""
    return sigma * (x - alpha * mean) / (alpha * alpha * var + sigma * sigma)


def ddim(B, ab, x, eps, t, t_prev, eta, z):
    a_t = ab[t][:, None]
    a_p = B.cat([B.asarray([1.0]), ab])[t_prev + 1][:, None]  # t_prev = -1 -> alpha_bar = 1
    x0 = (x - B.sqrt(1 - a_t) * eps) / B.sqrt(a_t)
    sig = eta * B.sqrt((1 - a_p) / (1 - a_t)) * B.sqrt(1 - a_t / a_p)
    return B.sqrt(a_p) * x0 + B.sqrt(1 - a_p - sig**2) * eps + sig * z


def dpmpp_2m(B, ab, x, ts, mean, var):
    """DPM-Solver++(2M), data form: first order at the first step, the 2M update after,
    and a last step to sigma = 0 that returns x0_hat.  Returns the states after each step."""
    pts = [(math.sqrt(float(ab[t])), math.sqrt(1.0 - float(ab[t]))) for t in ts] + [(1.0, 0.0)]
    states, prev = [], None
    for i in range(len(ts)):
        (a_s, s_s), (a_t, s_t) = pts[i], pts[i + 1]
        x0 = (x - s_s * oracle_eps(B, x, a_s, s_s, mean, var)) / a_s
        lam_s = math.log(a_s / s_s)
        if s_t == 0.0:
            x = x0
        else:
            h = math.log(a_t / s_t) - lam_s
            d = x0 if prev is None else x0 + 0.5 * (x0 - prev[1]) / ((lam_s - prev[0]) / h)
            x = (s_t / s_s) * x - a_t * math.expm1(-h) * d
        prev = (lam_s, x0)
        states.append(x)
    return states


# ---------------------------------------------------------------------------- driver
def run_cases(B, suite: Path, results: Path):
    manifest = json.loads((suite / "manifest.json").read_text())["cases"]
    results.mkdir(parents=True, exist_ok=True)
    inp = lambda name: dict(np.load(suite / f"{name}.npz"))  # noqa: E731
    out = {}
    out["schedule_linear"] = schedule_arrays(B, linear_betas(B, 1000))
    out["schedule_cosine"] = schedule_arrays(B, cosine_betas(B, 1000))
    out["timesteps_trailing"] = {f"T{T}_n{n}": trailing(T, n) for T, n in manifest["timesteps_trailing"]["parameters"]["grids"]}
    ab = schedule_arrays(B, linear_betas(B, 1000))["alpha_bars"]
    q = inp("q_sample")
    a = ab[q["t"]][:, None]
    out["q_sample"] = {"x_t": B.sqrt(a) * B.asarray(q["x0"]) + B.sqrt(1 - a) * B.asarray(q["noise"])}
    d = inp("ddim_step")
    x, eps, z = (B.asarray(d[k]) for k in ("x_t", "model_output", "noise"))
    out["ddim_step"] = {f"eta{e:g}": ddim(B, ab, x, eps, d["t"], d["t_prev"], e, z) for e in (0.0, 0.5, 1.0)}
    tr = inp("trajectory_dpmpp_2m")
    states = dpmpp_2m(B, ab, B.asarray(tr["x_T"]), [int(t) for t in tr["timesteps"]], B.asarray(tr["data_mean"]),
                      B.asarray(tr["data_var"]))
    out["trajectory_dpmpp_2m"] = {"x_steps": B.t.stack(states), "x0": states[-1]}
    for case, arrays in out.items():
        missing = set(manifest[case]["outputs"]) - set(arrays)
        assert not missing, (case, missing)
        np.savez(results / f"{case}.npz", **{k: np.asarray(B.to_numpy(v) if not isinstance(v, np.ndarray) else v)
                                             for k, v in arrays.items()})
    return list(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="verify-demo", help="folder for suite/ and results/ (default: %(default)s)")
    p.add_argument("--suite", default=None, help="an existing suite (default: write one with `refdiff vectors`)")
    p.add_argument("--backend", choices=("auto", "torch", "numpy"), default="auto",
                   help="torch if importable (auto, default), or numpy")
    p.add_argument("--tiny", action="store_true", help="accepted for the example runner; the example is already small")
    args = p.parse_args(argv)
    name = args.backend
    if name == "auto":
        try:
            import torch  # noqa: F401

            name = "torch"
        except ImportError:
            name = "numpy"
    out = Path(args.out)
    suite = Path(args.suite) if args.suite else out / "suite"
    refdiff = [sys.executable, "-m", "refdiff"]
    if args.suite is None:
        subprocess.run(refdiff + ["vectors", str(suite)], check=True)
    cases = run_cases(Backend(name), suite, out / "results")
    print(f"re-implemented {len(cases)} cases in {name}; checking:")
    return subprocess.run(refdiff + ["check", str(suite), str(out / "results"), "--cases", *cases]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
