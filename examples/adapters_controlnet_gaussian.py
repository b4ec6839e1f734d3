"""A ControlNet trained against a linear control (the 2x2-pooled low-resolution image) on
Gaussian 8x8 data, compared with the exact conditional oracle, MATH.md (19.8), (19.15).

1. Data N(m, Sigma) on 8x8 images (a smooth mean, a squared-exponential covariance).
2. A base U-Net is trained on it (epsilon objective, DDPM linear schedule).
3. A ControlNet copied from the base is trained with the base frozen; its control image is
   the pooled image c = H x0 (4x4), upsampled to 8x8 and mapped to [0, 1] by (c + 2.5) / 5.
4. For held-out controls, DDIM samples of the controlled model are compared with exact
   samples of N(m_c, Sigma_c) (Schur complement: m_c = m + K (c - H m), Sigma_c = Sigma - K H
   Sigma, K = Sigma H^T (H Sigma H^T)^-1): sliced Wasserstein against the oracle's own
   sampling noise (SW between two independent oracle sample sets of the same size), and
   the control adherence RMS ||H x - c|| for the base, the controlled model and the oracle.
5. A conditioning-scale sweep of the adherence.
6. A classifier-free guidance-scale sweep, ``u + w (c - u)`` with the base as the
   unconditional half u and the controlled model as c (the control on the conditional half
   only, as in diffusers' guess mode, without its scale ramp): adherence and SW to the exact
   conditional oracle against w, next to the same guidance applied to the exact oracles
   (unconditional N(m, Sigma), conditional N(m_c, Sigma_c)), which w = 1 reduces to the
   conditional oracle.

Writes controlnet_gaussian.png, controlnet_scale_sweep.png, controlnet_guidance_sweep.png,
controlnet_gaussian.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from refdiff import make_schedule, sample, timesteps  # noqa: E402
from refdiff.conditioning import condition_gaussian  # noqa: E402
from refdiff.controls import pool_matrix  # noqa: E402
from refdiff.metrics import sliced_wasserstein  # noqa: E402
from refdiff.nn import UNet, UNetConfig  # noqa: E402
from refdiff.oracles import GaussianData  # noqa: E402
from refdiff.nn.controlnet import ControlNet, controlled_backward, controlled_forward, controlled_model  # noqa: E402
from refdiff.train import train  # noqa: E402
from refdiff.training import fit, init_state  # noqa: E402


def gaussian_8x8():
    """Mean and covariance of the 8x8 Gaussian data (flattened, D = 64)."""
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    m = 0.4 * np.sin(i / 2.0) * np.cos(j / 3.0)
    p = np.stack([i.ravel(), j.ravel()], 1).astype(float)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    return m.ravel(), 0.5 * np.exp(-d2 / (2 * 1.5 ** 2)) + 0.02 * np.eye(64)


def conditional(m, S, H, c):
    """Exact N(m_c, Sigma_c) of x0 given H x0 = c (Schur complement; c (M,))."""
    K = np.linalg.solve(H @ S @ H.T, H @ S).T
    return m + K @ (c - H @ m), S - K @ H @ S


def draw(m, S, n, rng):
    e, V = np.linalg.eigh((S + S.T) / 2)
    return m + (rng.standard_normal((n, len(m))) * np.sqrt(np.clip(e, 0, None))) @ V.T


def control_image(c):
    """(N, 16) pooled values -> (N, 1, 8, 8) control image in [0, 1]."""
    img = np.kron(c.reshape(-1, 4, 4), np.ones((2, 2)))[:, None]
    return np.clip((img + 2.5) / 5.0, 0.0, 1.0)


def cfg_model(uncond, cond, w):
    """Classifier-free guidance ``u + w (c - u)`` of two epsilon models."""
    def model(x, t):
        u = uncond(x, t)
        return u + w * (cond(x, t) - u)
    return model


def guidance_sweep(net, base, cn, C, m, S, H, c, gen, n, rng, ws):
    """Adherence and SW to the exact conditional oracle against the guidance scale w, for the
    ControlNet (base as the unconditional half) and for the exact oracles guided the same way."""
    mc, Sc = conditional(m, S, H, c)
    ref = draw(mc, Sc, n, rng)
    floor = sliced_wasserstein(draw(mc, Sc, n, rng), ref, 128, np.random.default_rng(7))
    schedule = make_schedule("linear", 1000)
    o_u = GaussianData(m.reshape(1, 8, 8), S).as_model(schedule)
    o_c = GaussianData(mc.reshape(1, 8, 8), Sc + 1e-8 * np.eye(64)).as_model(schedule)  # Sigma_c has rank 48
    m_u, m_c = net.as_model(base), controlled_model(net, base, [(cn, C, control_image(c[None]).astype(np.float32))])
    rms = lambda x: float(np.sqrt(np.mean((x @ H.T - c) ** 2)))  # noqa: E731
    rows = {}
    for w in ws:
        x_cn, x_or = gen(cfg_model(m_u, m_c, w)), gen(cfg_model(o_u, o_c, w))
        rows[str(w)] = {"adherence_rms_controlnet": rms(x_cn), "adherence_rms_oracle_cfg": rms(x_or),
                        "sw_controlnet_vs_oracle": sliced_wasserstein(x_cn, ref, 128, np.random.default_rng(7)),
                        "sw_oracle_cfg_vs_oracle": sliced_wasserstein(x_or, ref, 128, np.random.default_rng(7))}
        print(f"guidance w = {w}: " + ", ".join(f"{a} {b:.4f}" for a, b in rows[str(w)].items()))
    return {"sw_floor_oracle_vs_oracle": floor, "adherence_rms_oracle": rms(ref), "w": rows}


def plot_guidance(plt, g, path):
    ws = [float(w) for w in g["w"]]
    col = lambda k: [g["w"][w][k] for w in g["w"]]  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(ws, col("adherence_rms_controlnet"), "o-", label="ControlNet + CFG")
    axes[0].plot(ws, col("adherence_rms_oracle_cfg"), "s--", label="exact oracles + CFG")
    axes[0].axhline(g["adherence_rms_oracle"], color="k", ls=":", lw=1, label="conditional oracle")
    axes[0].set_ylabel("RMS ||H x - c||")
    axes[1].plot(ws, col("sw_controlnet_vs_oracle"), "o-", label="ControlNet + CFG")
    axes[1].plot(ws, col("sw_oracle_cfg_vs_oracle"), "s--", label="exact oracles + CFG")
    axes[1].axhline(g["sw_floor_oracle_vs_oracle"], color="k", ls=":", lw=1, label="oracle vs oracle (floor)")
    axes[1].set_ylabel("SW to the conditional oracle")
    for ax in axes:
        ax.set_xlabel("guidance scale w")
        ax.legend(fontsize=7)
    _common.save(fig, path)


def train_controlnet(net, base, m, S, H, schedule, steps, rng, batch=64, lr=1e-3):
    cn = ControlNet(net)
    C = cn.init_params(base, rng)
    ab = schedule.alpha_bars

    def next_batch(r):
        x0 = draw(m, S, batch, r)
        t = r.integers(0, len(ab), batch)
        eps = r.standard_normal((batch, 64))
        xt = np.sqrt(ab[t])[:, None] * x0 + np.sqrt(1 - ab[t])[:, None] * eps
        f = lambda a: a.reshape(batch, 1, 8, 8).astype(np.float32)  # noqa: E731
        return f(xt), control_image(x0 @ H.T).astype(np.float32), t.astype(np.float32), f(eps)

    def loss_fn(groups, b, r):
        xt, ctrl, t, eps = b
        br = [(cn, groups["control"], ctrl, np.ones(cn.num_residuals))]
        out, cache = controlled_forward(net, groups["base"], br, xt, t)
        (g,), _, _ = controlled_backward(net, groups["base"], br, cache, 2 * (out - eps) / out.size)
        return float(np.mean((out - eps) ** 2)), {"control": g}

    st = fit(loss_fn, init_state({"base": base, "control": C}, {"control": True}, rng, steps), next_batch,
             steps=steps, trainable={"control": True}, lr=lr, progress=False)
    return cn, st.groups["control"], st.losses


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0], "figures/adapters")
    p.add_argument("--steps", type=int, default=3000, help="training steps of the base and of the ControlNet")
    p.add_argument("--samples", type=int, default=400, help="samples per control")
    args = p.parse_args(argv)
    out = _common.out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    tiny = args.tiny
    steps_base, steps_cn, n, n_steps, n_ctrl = ((20, 20, 16, 4, 2) if tiny else
                                                (args.steps, args.steps, args.samples, 50, 4))
    m, S = gaussian_8x8()
    H = pool_matrix(8)
    schedule = make_schedule("linear", 1000)
    net = UNet(UNetConfig(base_channels=16, groups=4, attention=False))
    t0 = time.time()
    data = draw(m, S, 20000, rng).reshape(-1, 1, 8, 8)
    base = train(net, data, schedule=schedule, steps=steps_base, batch_size=64, lr=2e-3, seed=args.seed,
                 ema_decay=0.995, progress=False).ema_params
    cn, C, losses = train_controlnet(net, base, m, S, H, schedule, steps_cn, rng)
    t_train = time.time() - t0
    ts = timesteps(1000, n_steps, "leading")
    rows, report = [], {"setup": {"steps_base": steps_base, "steps_controlnet": steps_cn, "samples_per_control": n,
                                  "ddim_steps": n_steps, "unet": net.to_dict(), "train_seconds": round(t_train, 1)}}

    def gen(model):
        x = sample(model, rng.standard_normal((n, 1, 8, 8)).astype(np.float32), schedule, ts, "ddim", rng=rng,
                   progress=False)
        return np.asarray(x, dtype=np.float64).reshape(n, 64)

    x_base = gen(net.as_model(base))
    rms = lambda x, c: float(np.sqrt(np.mean((x @ H.T - c) ** 2)))  # noqa: E731
    for k in range(n_ctrl):
        c = H @ draw(m, S, 1, rng)[0]
        mc, Sc = conditional(m, S, H, c)
        mc2, Sc2 = condition_gaussian(m, S, H, c)  # refdiff's oracle conditioning: an independent check
        assert np.allclose(mc, mc2, atol=1e-9) and np.allclose(Sc, Sc2, atol=1e-9)
        ctrl = control_image(c[None]).astype(np.float32)
        x_cn = gen(controlled_model(net, base, [(cn, C, ctrl)]))
        o1, o2 = draw(mc, Sc, n, rng), draw(mc, Sc, n, rng)
        sw_r = np.random.default_rng(k)
        rec = {"sw_controlnet_vs_oracle": sliced_wasserstein(x_cn, o1, 128, sw_r),
               "sw_oracle_vs_oracle": sliced_wasserstein(o2, o1, 128, np.random.default_rng(k)),
               "sw_base_vs_oracle": sliced_wasserstein(x_base, o1, 128, np.random.default_rng(k)),
               "adherence_rms_controlnet": rms(x_cn, c), "adherence_rms_base": rms(x_base, c),
               "adherence_rms_oracle": rms(o1, c)}
        report[f"control{k}"] = rec
        rows.append((ctrl[0, 0], o1[:6], x_cn[:6], x_base[:6]))
        print(f"control {k}: " + ", ".join(f"{a} {b:.4f}" for a, b in rec.items()))
    c = H @ draw(m, S, 1, rng)[0]
    scales = [0.0, 0.5, 1.0, 1.5, 2.0]
    sweep = [rms(gen(controlled_model(net, base, [(cn, C, control_image(c[None]).astype(np.float32))],
                                      conditioning_scale=s)), c) for s in scales]
    report["scale_sweep"] = dict(zip(map(str, scales), sweep))
    ws = [0.0, 1.0, 3.0] if tiny else [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    report["guidance_sweep"] = guidance_sweep(net, base, cn, C, m, S, H, c, gen, n, rng, ws)
    (out / "controlnet_gaussian.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'controlnet_gaussian.json'}")
    plt = _common.pyplot()
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.2 * len(rows)), squeeze=False)
    for r, (ctrl, o, x, b) in enumerate(rows):
        for a, (img, title) in enumerate(((ctrl[None, None], "control"), (o.reshape(-1, 1, 8, 8), "oracle"),
                                           (x.reshape(-1, 1, 8, 8), "ControlNet"), (b.reshape(-1, 1, 8, 8), "base"))):
            axes[r, a].imshow(_common.image_grid(img, 1 if len(img) == 1 else 2), cmap="gray", vmin=-1.5, vmax=1.5)
            axes[r, a].set_axis_off()
            axes[r, a].set_title(title, fontsize=8)
    _common.save(fig, out / "controlnet_gaussian.png")
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(scales, sweep, "o-")
    ax.set_xlabel("conditioning_scale")
    ax.set_ylabel("RMS ||H x - c||")
    _common.save(fig, out / "controlnet_scale_sweep.png")
    plot_guidance(plt, report["guidance_sweep"], out / "controlnet_guidance_sweep.png")
    return report


if __name__ == "__main__":
    main()
