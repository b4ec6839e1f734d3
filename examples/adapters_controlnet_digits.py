"""An edge-map ControlNet on the 8x8 digits, MATH.md (19.8), (19.15): a class-conditional base
U-Net (class dropout, so it also samples unconditionally) is trained on the digits, then a
ControlNet (base frozen, EMA of its weights) learns to follow toy-Canny edge maps
(``refdiff.controls.edge_map``: central-difference gradient magnitude above a threshold).
Edge agreement on held-out test digits: the IoU between the edge map of each sample and its
control, for the controlled model and for the base model (which ignores the control), both
with the null class.  Diagnostics of what limits the IoU: the ceilings of the metric itself
(a real image lightly noised against its own control; the best IoU any training image
reaches on a held-out control, i.e. what a model that reproduces training images can reach),
the IoU on training controls (generalisation gap), the conditioning scale, classifier-free
guidance on the control (base as the unconditional half), the sampler's step count.

Writes controlnet_digits.png, controlnet_digits.json and controlnet_digits_params.npz (the
base and ControlNet weights, reused by ``--load`` and by adapters_lora_digits.py).
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
from refdiff.controls import edge_iou, edge_map  # noqa: E402
from refdiff.metrics import frechet_distance  # noqa: E402
from refdiff.nn import classifier  # noqa: E402
from refdiff.nn import UNet, UNetConfig  # noqa: E402
from refdiff.nn.controlnet import ControlNet, controlled_backward, controlled_forward, controlled_model  # noqa: E402
from refdiff.train import train  # noqa: E402
from refdiff.training import fit, init_state, train_digit_classifier  # noqa: E402

THRESHOLD = 0.9  # edges on 25 % of the pixels; two random digits' maps have IoU 0.24


def build(hint_widths=(16, 32)):
    """The base U-Net (class-conditional, 10 classes) and its ControlNet."""
    net = UNet(UNetConfig(base_channels=16, channel_mults=(1, 2), groups=4, attention=False, num_classes=10))
    return net, ControlNet(net, hint_widths=tuple(hint_widths))


def train_controlnet(net, cn, base, x, y, schedule, steps, rng, *, threshold=THRESHOLD, p_uncond=0.1, lr=1e-3,
                     batch=64, ema_decay=0.995):
    """ControlNet training, base frozen: eps-MSE of the controlled U-Net on (x_t, edge_map(x0),
    class dropped to the null class with probability p_uncond); returns the EMA weights."""
    ab = schedule.alpha_bars
    e = edge_map(x, threshold).astype(np.float32)

    def next_batch(r):
        i, t = r.integers(0, len(x), batch), r.integers(0, len(ab), batch)
        eps = r.standard_normal((batch, 1, 8, 8))
        xt = np.sqrt(ab[t])[:, None, None, None] * x[i] + np.sqrt(1 - ab[t])[:, None, None, None] * eps
        cls = np.where(r.random(batch) < p_uncond, 10, y[i])
        return xt.astype(np.float32), e[i], t.astype(np.float32), eps.astype(np.float32), {"class": cls}

    def loss_fn(groups, b, r):
        xt, ctrl, t, eps, cond = b
        br = [(cn, groups["control"], ctrl, np.ones(cn.num_residuals))]
        o, cache = controlled_forward(net, groups["base"], br, xt, t, cond)
        (g,), _, _ = controlled_backward(net, groups["base"], br, cache, 2 * (o - eps) / o.size)
        return float(np.mean((o - eps) ** 2)), {"control": g}

    C = cn.init_params(base, rng)
    st = init_state({"base": base, "control": C, "ema": dict(C)}, {"control": True}, rng, steps)
    st = fit(loss_fn, st, next_batch, steps=steps, trainable={"control": True}, lr=lr, lr_decay="cosine",
             grad_clip=1.0, ema={"ema": ("control", ema_decay, True)}, progress=False)
    return st.groups["ema"]


def save_params(path, base, C, meta):
    np.savez(path, **{f"base/{k}": v for k, v in base.items()}, **{f"control/{k}": v for k, v in C.items()},
             meta=json.dumps(meta))


def load_params(path):
    z = np.load(path)
    base = {k[5:]: z[k] for k in z.files if k.startswith("base/")}
    C = {k[8:]: z[k] for k in z.files if k.startswith("control/")}
    return base, C, json.loads(str(z["meta"]))


def ceilings(x_tr, x_ctrl, threshold, rng):
    """What the metric allows: IoU of a real image's edges under light Gaussian pixel noise
    with its own edges, and the best IoU any training image reaches on each control."""
    c = edge_map(x_ctrl, threshold)
    out = {f"noised_real_{s}": float(edge_iou(edge_map(np.clip(x_ctrl + s * rng.standard_normal(x_ctrl.shape), -1, 1),
                                                       threshold), c).mean()) for s in (0.05, 0.1, 0.2)}
    E, Ec = edge_map(x_tr, threshold).reshape(len(x_tr), -1), c.reshape(len(c), -1)
    inter = Ec @ E.T
    best = (inter / np.maximum(Ec.sum(1)[:, None] + E.sum(1)[None] - inter, 1)).max(1)
    out["best_training_image"] = float(best.mean())
    return out


def threshold_table(x_tr, x_te, rng, thresholds=(0.5, 0.7, 0.9)):
    """Per threshold: edge density, the IoU of two random held-out digits (what a model
    ignoring the control gets) and the ceilings of :func:`ceilings` (no model involved)."""
    rows = {}
    for th in thresholds:
        e = edge_map(x_te, th)
        rows[str(th)] = {"edge_fraction": float(e.mean()),
                         "random_pair": float(edge_iou(edge_map(x_te[rng.permutation(len(x_te))], th), e).mean()),
                         **ceilings(x_tr, x_te, th, rng)}
        print(f"threshold {th}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[str(th)].items()))
    return rows


def control_cfg(net, base, cn, C, ctrl, cond, w, scale=1.0):
    """Guidance on the control: ``u + w (c - u)`` with u the base (no residuals), c controlled."""
    m_c = controlled_model(net, base, [(cn, C, ctrl)], cond, conditioning_scale=scale)
    m_u = net.as_model(base, cond)
    return lambda x, t: (lambda u: u + w * (m_c(x, t) - u))(m_u(x, t))


def evaluate(net, cn, base, C, x_tr, x_te, schedule, n, rng, threshold=THRESHOLD, steps=(50, 200), clf=None):
    """IoU (mean, standard error) per setting, and the Frechet distance of the samples'
    classifier features to the held-out digits when ``clf`` is given; returns (report, images)."""
    idx = rng.choice(len(x_te), n, replace=False)
    ctrl = edge_map(x_te[idx], threshold).astype(np.float32)
    null = {"class": np.full(n, 10)}
    x_T = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    feat_te = None if clf is None else classifier.features(clf, x_te)
    imgs = {"control": 2.0 * ctrl - 1}

    def run(model, c=ctrl, k=steps[0], key=None):
        x = np.asarray(sample(model, x_T, schedule, timesteps(1000, k, "leading"), "ddim", rng=rng,
                              progress=False), dtype=np.float64)
        iou = edge_iou(edge_map(np.clip(x, -1, 1), threshold), c)
        r = {"mean": float(iou.mean()), "se": float(iou.std(ddof=1) / np.sqrt(n))}
        if clf is not None:
            r["frechet"] = frechet_distance(classifier.features(clf, np.clip(x, -1, 1)), feat_te)
        if key:
            imgs[key] = x
        return r

    rep = {"controlnet": run(controlled_model(net, base, [(cn, C, ctrl)], null), key="controlnet"),
           "base": run(net.as_model(base, null), key="base")}
    for s in (1.5, 2.0):
        rep[f"controlnet_scale_{s}"] = run(controlled_model(net, base, [(cn, C, ctrl)], null, conditioning_scale=s))
    for w in (2.0, 3.0):
        rep[f"controlnet_control_cfg_{w}"] = run(control_cfg(net, base, cn, C, ctrl, null, w), key=f"cfg{w}")
    rep[f"controlnet_ddim_{steps[1]}"] = run(controlled_model(net, base, [(cn, C, ctrl)], null), k=steps[1])
    jtr = rng.choice(len(x_tr), n, replace=False)
    c_tr = edge_map(x_tr[jtr], threshold).astype(np.float32)
    rep["controlnet_training_controls"] = run(controlled_model(net, base, [(cn, C, c_tr)], null), c=c_tr)
    rep["ceilings"] = ceilings(x_tr, x_te[idx], threshold, rng)
    if clf is not None:
        rep["frechet_training_digits"] = frechet_distance(classifier.features(clf, x_tr[jtr]), feat_te)
    return rep, imgs


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0], "figures/adapters")
    p.add_argument("--steps-base", type=int, default=3000)
    p.add_argument("--steps-control", type=int, default=4000)
    p.add_argument("--hint-widths", type=int, nargs=2, default=(16, 32))
    p.add_argument("--n", type=int, default=200, help="held-out controls scored")
    p.add_argument("--ceilings", action="store_true", help="only print the metric's ceilings per threshold")
    p.add_argument("--load", default=None, help="controlnet_digits_params.npz of an earlier run: skip training")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps_base, args.steps_control, args.n = 10, 10, 8
    out = _common.out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    if args.ceilings:
        return threshold_table(x_tr, x_te, rng)
    schedule = make_schedule("cosine", 1000)
    t0 = time.time()
    if args.load:
        base, C, meta = load_params(args.load)
        net, cn = build(meta["hint_widths"])
    else:
        net, cn = build(args.hint_widths)
        base = train(net, (x_tr, {"class": y_tr}), schedule=schedule, steps=args.steps_base, batch_size=64, lr=2e-3,
                     seed=args.seed, ema_decay=0.995, ema_warmup=True, cond_dropout=0.1, lr_decay="cosine",
                     grad_clip=1.0, progress=False).ema_params
        t_base = time.time() - t0
        C = train_controlnet(net, cn, base, x_tr, y_tr, schedule, args.steps_control, rng)
        meta = {"data": name, "steps_base": args.steps_base, "steps_control": args.steps_control,
                "hint_widths": list(args.hint_widths), "threshold": THRESHOLD, "seed": args.seed,
                "train_seconds_base": round(t_base, 1), "train_seconds_control": round(time.time() - t0 - t_base, 1)}
        save_params(out / "controlnet_digits_params.npz", base, C, meta)
    steps = (5, 10) if args.tiny else (50, 200)
    clf, clf_acc = train_digit_classifier(steps=20 if args.tiny else 1500, seed=args.seed, x_train=x_tr, y_train=y_tr,
                                          x_test=x_te, y_test=y_te)
    rep, imgs = evaluate(net, cn, base, C, x_tr, x_te, schedule, args.n, rng, steps=steps, clf=clf)
    rep["classifier_test_accuracy"] = clf_acc
    report = {**meta, "n": args.n, "sampler": f"DDIM, {steps[0]} leading steps, null class", "iou": rep}
    print(f"edge IoU on {args.n} held-out controls: ControlNet {rep['controlnet']['mean']:.3f} "
          f"(se {rep['controlnet']['se']:.3f}), base {rep['base']['mean']:.3f} (se {rep['base']['se']:.3f})")
    for k, v in rep.items():
        print(f"  {k}: {v}")
    (out / "controlnet_digits.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'controlnet_digits.json'}")
    plt = _common.pyplot()
    k = min(12, args.n)
    rows = (("control", "control (edges of held-out digits)"),
            ("controlnet", f"ControlNet, scale 1 (IoU {rep['controlnet']['mean']:.2f})"),
            ("cfg2.0", "ControlNet + guidance on the control, w = 2 "
                       f"(IoU {rep['controlnet_control_cfg_2.0']['mean']:.2f})"),
            ("base", f"base (IoU {rep['base']['mean']:.2f})"))
    fig, axes = plt.subplots(len(rows), 1, figsize=(k * 0.8, 4.3))
    for ax, (key, title) in zip(axes, rows):
        ax.imshow(_common.image_grid(np.clip(imgs[key][:k], -1, 1), 1, fill=0.0), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    _common.save(fig, out / "controlnet_digits.png")
    return report


if __name__ == "__main__":
    main()
