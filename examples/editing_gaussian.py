"""Editing against exact oracles (MATH.md chapter 17).

Writes into --out:
* ``editing_inpaint_table.md`` / ``.json``: for replacement inpainting (fresh and re-used
  noise, DDPM and DDIM), RePaint at its defaults and oracle inpainting, the share of the
  exact conditional shift each keeps and its variance ratio to the exact conditional (exact
  moments, :func:`refdiff.affine_moments`), and on a two-mode mixture the fraction of
  samples in the wrong mode (Monte Carlo); every grid is "leading" (996, 992, ... for 250
  steps), the spacing the published table was computed on;
* ``editing_img2img.png``: the realism-faithfulness curve of img2img against strength:
  the exact ODE / SDE limits (17.8) and DDIM / DDPM on a 50-step grid (exact moments);
* ``editing_outpaint.png``: the seam error (KL of the chained law to the exact field) of an
  8 x 24 strip grown from 8 x 8 by sliding windows, for squared-exponential and
  exponential fields, against the number of columns each window keeps.

Run: ``PYTHONPATH=. python3 examples/editing_gaussian.py --out figures``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import refdiff  # noqa: E402
from refdiff.moments import gaussian_kl  # noqa: E402

MU = np.array([0.5, -0.3])
SIG = np.array([[1.0, 0.9], [0.9, 1.0]])
MASK = np.array([0.0, 1.0])  # generate x_1 (diffusers meaning)


def inpaint_table(tiny, seed):
    sch = refdiff.make_schedule("linear", 1000)
    data = refdiff.GaussianData(MU, SIG)
    xk = np.array([1.5, 0.0])
    exact = data.condition(np.array([[1.0, 0.0]]), [1.5])
    m_c, v_c = float(exact.mean[1]), float(exact.cov[1, 1])
    mix = refdiff.GaussianMixture([0.5, 0.5], [[1.0, 1.0], [-1.0, -1.0]], 0.09)
    xk_mix = np.array([0.4, 0.0])
    n_ddpm, n_ddim, rp = (100, 20, (50, 5, 3)) if tiny else (1000, 50, (250, 10, 10))
    n_mc = 200 if tiny else 4000
    methods = {
        f"replacement, DDPM {n_ddpm}, fresh noise": dict(ts=refdiff.timesteps(1000, n_ddpm, "leading"), method="ddpm"),
        f"replacement, DDPM {n_ddpm}, re-used noise (diffusers 4-channel)":
            dict(ts=refdiff.timesteps(1000, n_ddpm, "leading"), method="ddpm", noise_mode="reuse"),
        f"replacement, DDIM {n_ddim}, fresh noise": dict(ts=refdiff.timesteps(1000, n_ddim, "leading"), method="ddim"),
        f"replacement, DDIM {n_ddim}, re-used noise": dict(ts=refdiff.timesteps(1000, n_ddim, "leading"), method="ddim",
                                                           noise_mode="reuse"),
        f"RePaint {rp[0]} steps, jump_length {rp[1]}, jump_n_sample {rp[2]}":
            dict(ts=refdiff.timesteps(1000, rp[0], "leading"), method="ddpm", scheme="repaint", jump_length=rp[1],
                 jump_n_sample=rp[2]),
    }
    rows = []
    w_exact = mix.condition(np.array([[1.0, 0.0]]), [0.4])
    # wrong mode: closer to the other mean, x_0 + x_1 < 0; exact rate from the conditional mixture
    from scipy.stats import norm

    p_wrong = float(sum(w * norm.cdf(-0.4, loc=m[1], scale=0.3) for w, m in zip(w_exact.weights, w_exact.means)))
    for name, kw in methods.items():
        ts, method = kw.pop("ts"), kw.pop("method")
        mean, cov = refdiff.affine_moments(
            lambda x, noise: refdiff.inpaint(data.as_model(sch), x, MASK, sch, ts, method, noise=noise, **kw), xk,
            check=False)
        xs = refdiff.inpaint(mix.as_model(sch), np.tile(xk_mix, (n_mc, 1)), MASK, sch, ts, method,
                             rng=np.random.default_rng(seed), **kw)
        rows.append(dict(method=name, mean=float(mean[1]), shift_kept=(float(mean[1]) - MU[1]) / (m_c - MU[1]),
                         var=float(cov[1, 1]), var_ratio=float(cov[1, 1]) / v_c,
                         wrong_mode=float(np.mean(xs.sum(1) < 0)), n_mc=n_mc))
    xs = refdiff.oracle_inpaint(mix, xk_mix, MASK, n_mc, np.random.default_rng(seed))
    rows.append(dict(method="oracle inpainting (exact conditional)", mean=m_c, shift_kept=1.0, var=v_c, var_ratio=1.0,
                     wrong_mode=float(np.mean(xs.sum(1) < 0)), n_mc=n_mc, wrong_mode_exact=p_wrong))
    return rows


def table_md(rows):
    lines = ["| method | mean of x_1 | share of the exact shift kept | variance ratio | wrong mode (mixture) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['mean']:.3f} | {r['shift_kept']:.3f} | {r['var_ratio']:.3f} | "
                     f"{100 * r['wrong_mode']:.2f} % |")
    return "\n".join(lines) + "\n"


def img2img_figure(plt, out, tiny):
    sch = refdiff.make_schedule("linear", 1000)
    data = refdiff.GaussianData(MU, SIG)
    x_in = MU + np.array([2.0, -2.0]) * 0.5  # off the data's principal direction
    ts = refdiff.timesteps(1000, 50, "leading")
    strengths = np.linspace(0.1, 1.0, 6 if tiny else 19)
    curves = {k: ([], []) for k in ("ODE limit", "SDE limit", "DDIM 50", "DDPM 50")}
    for s in strengths:
        grid, _ = refdiff.img2img_grid(sch, ts, float(s))
        a, sg = grid[0].alpha, grid[0].sigma
        res = {"ODE limit": refdiff.sdedit_limits(MU, SIG, x_in, a, sg, "ode"),
               "SDE limit": refdiff.sdedit_limits(MU, SIG, x_in, a, sg, "sde")}
        for meth in ("ddim", "ddpm"):
            res[f"{meth.upper()} 50"] = refdiff.affine_moments(
                lambda x, noise: refdiff.img2img(data.as_model(sch), x, sch, ts, float(s), meth, noise=noise), x_in,
                check=False)
        for k, (m, C) in res.items():
            curves[k][0].append(gaussian_kl(m, C + 1e-12 * np.eye(2), MU, SIG))
            curves[k][1].append(float(np.sum((m - x_in) ** 2) + np.trace(C)))
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, (kl, dist) in curves.items():
        ax[0].plot(strengths, kl, "-" if "limit" in k else "o", label=k)
        ax[1].plot(strengths, dist, "-" if "limit" in k else "o", label=k)
    ax[0].set(xlabel="strength", ylabel="KL(output || data)  (realism: lower is better)", yscale="log")
    ax[1].set(xlabel="strength", ylabel="E|out - in|^2  (faithfulness: lower is better)")
    ax[0].legend(fontsize=7)
    fig.suptitle("img2img on N(mu, Sigma), input off-distribution: exact moments")
    return _common.save(fig, out / "editing_img2img.png")


def outpaint_figure(plt, out, tiny):
    h, width, w0, step = (4, 12, 4, 4) if tiny else (8, 24, 8, 4)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    res = {}
    for kernel, nug in (("se", 1e-4), ("exp", 0.0)):
        S = refdiff.stationary_field_cov(h, width, kernel, 2.0, nugget=nug)
        keeps = [1, 2, 3, 4]
        kls = []
        for keep in keeps:
            m, C = refdiff.chained_field_moments(np.zeros((h, width)), S, h, width, w0, keep + step, step)
            kls.append(max(gaussian_kl(m, C, np.zeros(h * width), S), 1e-16))
        res[kernel] = dict(zip(keeps, kls))
        ax.plot(keeps, kls, "o-", label={"se": "squared-exponential", "exp": "separable exponential (Markov)"}[kernel])
    ax.set(xlabel="columns each window keeps", ylabel="seam error KL(chained || exact) [nats]", yscale="log",
           title=f"{h}x{width} strip from {h}x{w0}, {step} new columns per window")
    ax.legend(fontsize=7)
    _common.save(fig, out / "editing_outpaint.png")
    return res


def main(argv=None):
    args = _common.parser(__doc__.splitlines()[0], "figures").parse_args(argv)
    out = _common.out_dir(args.out)
    plt = _common.pyplot()
    rows = inpaint_table(args.tiny, args.seed)
    (out / "editing_inpaint_table.md").write_text(table_md(rows))
    print(table_md(rows))
    img2img_figure(plt, out, args.tiny)
    seams = outpaint_figure(plt, out, args.tiny)
    (out / "editing_inpaint_table.json").write_text(json.dumps(dict(rows=rows, seam_kl=seams), indent=1))
    print(f"wrote {out / 'editing_inpaint_table.json'}")
    print("seam KL:", {k: {kk: f"{vv:.3g}" for kk, vv in v.items()} for k, v in seams.items()})


if __name__ == "__main__":
    main()
