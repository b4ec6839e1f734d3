"""LoRA fine-tunes of the class-conditional 8x8-digits U-Net to a new style (thick strokes) at
r = 1, 2, 4, 8 against full fine-tuning, MATH.md (19.5), (19.6); and the composition of a
LoRA, the edge-map ControlNet and a class prompt at once.

The thick-stroke set is the grey dilation of every digit by the footprint {(0, 0), (0, 1),
(1, 0)} (each pixel becomes the max of itself and its right and lower neighbours).  The base
U-Net and the ControlNet are those of adapters_controlnet_digits.py (``--base`` its
controlnet_digits_params.npz; without it both are trained here first).  Fine-tuning: the
same number of Adam steps, learning rate and batch for every variant, class dropout 0.1,
either every parameter (full) or LoRA adapters (alpha = r, PEFT init) on the 3x3 convs of
every res block ("*.conv1", "*.conv2"; this U-Net has no attention layers), base frozen.
Quality of class-prompted DDIM samples, measured with an MLP classifier trained on the
thick training digits: the Frechet distance of its features to the thick held-out digits,
its class accuracy, and the mean stroke mass (mean of (x + 1) / 2).

Writes lora_digits.png, lora_digits_quality.png, lora_digits_compose.png, lora_digits.json,
lora_digits.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import adapters_controlnet_digits as cnd  # noqa: E402

from refdiff import make_schedule, sample, timesteps  # noqa: E402
from refdiff.controls import edge_iou, edge_map  # noqa: E402
from refdiff.metrics import frechet_distance  # noqa: E402
from refdiff.nn import classifier  # noqa: E402
from refdiff.nn.controlnet import controlled_model  # noqa: E402
from refdiff.nn.lora_model import LoRAAdapter, LoRAConfig, lora_grads, lora_init, lora_params  # noqa: E402
from refdiff.train import train  # noqa: E402
from refdiff.training import fit, init_state, train_digit_classifier  # noqa: E402

TARGETS = ("*.conv1", "*.conv2")


def thicken(x):
    """Grey dilation by {(0, 0), (0, 1), (1, 0)}: max of a pixel and its right and lower
    neighbours (background -1 beyond the border); x (N, 1, S, S)."""
    p = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-1.0)
    return np.maximum.reduce([p[:, :, :-1, :-1], p[:, :, :-1, 1:], p[:, :, 1:, :-1]])


def stroke_mass(x):
    return float(np.mean((np.clip(x, -1, 1) + 1) / 2))


def finetune(net, base, x, y, schedule, steps, rng, r=None, lr=1e-3, batch=64, p_uncond=0.1):
    """Full fine-tuning (r None) or a rank-r LoRA; returns (effective params, trainable count)."""
    ab = schedule.alpha_bars
    cfg = None if r is None else LoRAConfig(r=r, alpha=float(r), targets=TARGETS)
    start = {k: v.copy() for k, v in base.items()} if r is None else dict(lora_init(base, cfg, rng).weights)
    groups = {"base": base, "train": start}

    def eff(g):
        return g["train"] if r is None else lora_params(g["base"], LoRAAdapter(g["train"], cfg, cfg.scaling))

    def next_batch(rr):
        i, t = rr.integers(0, len(x), batch), rr.integers(0, len(ab), batch)
        eps = rr.standard_normal((batch, 1, 8, 8))
        xt = np.sqrt(ab[t])[:, None, None, None] * x[i] + np.sqrt(1 - ab[t])[:, None, None, None] * eps
        cls = np.where(rr.random(batch) < p_uncond, 10, y[i])
        return xt.astype(np.float32), t.astype(np.float32), eps.astype(np.float32), {"class": cls}

    def loss_fn(g, b, rr):
        xt, t, eps, cond = b
        P = eff(g)
        out, cache = net.forward(P, xt, t, cond)
        grads, _ = net.backward(P, cache, 2 * (out - eps) / out.size)
        if r is not None:
            grads = lora_grads(grads, LoRAAdapter(g["train"], cfg, cfg.scaling))
        return float(np.mean((out - eps) ** 2)), {"train": grads}

    st = fit(loss_fn, init_state(groups, {"train": True}, rng, steps), next_batch, steps=steps,
             trainable={"train": True}, lr=lr, lr_decay="cosine", grad_clip=1.0, progress=False)
    return eff(st.groups), int(sum(v.size for v in st.groups["train"].values()))


def base_and_control(args, x_tr, y_tr, schedule, rng):
    if args.base:
        base, C, meta = cnd.load_params(args.base)
        net, cn = cnd.build(meta["hint_widths"])
        return net, cn, base, C, meta
    net, cn = cnd.build()
    base = train(net, (x_tr, {"class": y_tr}), schedule=schedule, steps=args.steps_base, batch_size=64, lr=2e-3,
                 seed=args.seed, ema_decay=0.995, ema_warmup=True, cond_dropout=0.1, lr_decay="cosine",
                 grad_clip=1.0, progress=False).ema_params
    C = cnd.train_controlnet(net, cn, base, x_tr, y_tr, schedule, args.steps_base, rng)
    return net, cn, base, C, {"steps_base": args.steps_base, "steps_control": args.steps_base}


def quality(x, y, clf, feat_ref):
    return {"frechet": frechet_distance(classifier.features(clf, x), feat_ref),
            "accuracy": float(np.mean(classifier.classify(clf, x) == y)), "stroke_mass": stroke_mass(x)}


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0], "figures/adapters")
    p.add_argument("--base", default=None, help="controlnet_digits_params.npz (adapters_controlnet_digits.py)")
    p.add_argument("--steps-base", type=int, default=3000, help="base and ControlNet steps when --base is not given")
    p.add_argument("--steps-ft", type=int, default=600, help="fine-tuning steps of every variant")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of full fine-tuning")
    p.add_argument("--lr-lora", type=float, default=None, help="Adam learning rate of the LoRAs (default: --lr)")
    p.add_argument("--per-class", type=int, default=20, help="samples per class scored")
    args = p.parse_args(argv)
    clf_steps = 1500
    if args.tiny:
        args.steps_base, args.steps_ft, args.per_class, clf_steps = 10, 10, 2, 20
    out = _common.out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    k_tr, k_te = thicken(x_tr), thicken(x_te)
    schedule = make_schedule("cosine", 1000)
    t0 = time.time()
    net, cn, base, C, meta = base_and_control(args, x_tr, y_tr, schedule, rng)
    base0 = {k: v.copy() for k, v in base.items()}
    clf, clf_acc = train_digit_classifier(steps=clf_steps, seed=args.seed, x_train=k_tr, y_train=y_tr, x_test=k_te,
                                          y_test=y_te)
    feat_ref = classifier.features(clf, k_te)
    y = np.repeat(np.arange(10), args.per_class)
    x_T = rng.standard_normal((len(y), 1, 8, 8)).astype(np.float32)
    ts = timesteps(1000, 5 if args.tiny else 50, "leading")

    def gen(model, xT=x_T):
        return np.asarray(sample(model, xT, schedule, ts, "ddim", rng=rng, progress=False), dtype=np.float64)

    lr_lora = args.lr if args.lr_lora is None else args.lr_lora
    report = {"data": name, "base_setup": meta, "steps_ft": args.steps_ft, "lr": args.lr, "lr_lora": lr_lora,
              "batch": 64,
              "targets": list(TARGETS), "samples": len(y), "classifier_test_accuracy_thick": clf_acc,
              "reference": {"thin_test_digits": quality(x_te, y_te, clf, feat_ref),
                            "thick_train_digits": quality(k_tr, y_tr, clf, feat_ref)}}
    samples, params = {"base": gen(net.as_model(base, {"class": y}))}, {"base": base}
    report["base"] = {**quality(samples["base"], y, clf, feat_ref), "trainable": 0}
    for key, r in [("full", None), ("r1", 1), ("r2", 2), ("r4", 4), ("r8", 8)]:
        t1 = time.time()
        params[key], count = finetune(net, base, k_tr, y_tr, schedule, args.steps_ft, rng, r,
                                      lr=args.lr if r is None else lr_lora)
        samples[key] = gen(net.as_model(params[key], {"class": y}))
        report[key] = {**quality(samples[key], y, clf, feat_ref), "trainable": count,
                       "seconds": round(time.time() - t1, 1)}
        print(f"{key}: {report[key]}")
    report["compose"], imgs = compose(net, cn, base, C, params["r4"], x_te, y_te, gen, clf, feat_ref, rng, len(y))
    report["base_bit_identical_after_training"] = all(np.array_equal(base[k], v) for k, v in base0.items())
    report["total_seconds"] = round(time.time() - t0, 1)
    print(f"frozen base bit-identical after all fine-tunes: {report['base_bit_identical_after_training']}; "
          f"classifier (thick digits) test accuracy {clf_acc:.3f}; total {report['total_seconds']} s")
    (out / "lora_digits.json").write_text(json.dumps(report, indent=1))
    (out / "lora_digits.md").write_text(table(report))
    print(table(report))
    figures(out, samples, imgs, report, y)
    return report


def compose(net, cn, base, C, P_lora, x_te, y_te, gen, clf, feat_ref, rng, n):
    """The r = 4 thick LoRA + the edge ControlNet + a class prompt at once, against the
    ControlNet + class on the base: held-out controls with their own labels."""
    idx = rng.choice(len(x_te), min(n, len(x_te)), replace=False)
    ctrl, y = edge_map(x_te[idx], cnd.THRESHOLD).astype(np.float32), y_te[idx]
    xT = rng.standard_normal((len(idx), 1, 8, 8)).astype(np.float32)
    rep, imgs = {"n": len(idx)}, {"control": 2 * ctrl - 1}
    for key, P in (("controlnet_class", base), ("lora_controlnet_class", P_lora)):
        x = gen(controlled_model(net, P, [(cn, C, ctrl)], {"class": y}), xT)
        imgs[key] = x
        iou = edge_iou(edge_map(np.clip(x, -1, 1), cnd.THRESHOLD), ctrl)
        rep[key] = {**quality(x, y, clf, feat_ref), "edge_iou": float(iou.mean()),
                    "edge_iou_se": float(iou.std(ddof=1) / np.sqrt(len(idx)))}
        print(f"compose {key}: {rep[key]}")
    return rep, {k: v[:12] for k, v in imgs.items()}


def table(rep):
    rows = ["| model | trainable parameters | Frechet to thick test (classifier features) | class accuracy | "
            "stroke mass |", "|---|---:|---:|---:|---:|"]
    for k, label in (("base", "base (no fine-tune)"), ("full", "full fine-tune"), ("r1", "LoRA r = 1"),
                     ("r2", "LoRA r = 2"), ("r4", "LoRA r = 4"), ("r8", "LoRA r = 8")):
        q = rep[k]
        rows.append(f"| {label} | {q['trainable']:,} | {q['frechet']:.2f} | {q['accuracy']:.3f} "
                    f"| {q['stroke_mass']:.3f} |")
    for k, label in (("thick_train_digits", "thick training digits (reference)"),
                     ("thin_test_digits", "thin held-out digits (reference)")):
        q = rep["reference"][k]
        rows.append(f"| {label} | | {q['frechet']:.2f} | {q['accuracy']:.3f} | {q['stroke_mass']:.3f} |")
    return "\n".join(rows) + "\n"


def plot_quality(plt, report, path):
    """Frechet distance, class accuracy and stroke mass against the trainable parameter count."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    fig.subplots_adjust(wspace=0.35)
    keys = ["r1", "r2", "r4", "r8", "full"]
    n = [report[k]["trainable"] for k in keys]
    for ax, m, lab in ((axes[0], "frechet", "Frechet to thick test (log)"), (axes[1], "accuracy", "class accuracy"),
                       (axes[2], "stroke_mass", "stroke mass")):
        ax.plot(n[:4], [report[k][m] for k in keys[:4]], "o-", label="LoRA r = 1, 2, 4, 8")
        ax.plot(n[4:], [report["full"][m]], "s", label="full fine-tune")
        ax.axhline(report["base"][m], color="0.5", ls="--", lw=1, label="base (thin)")
        ax.axhline(report["reference"]["thick_train_digits"][m], color="k", ls=":", lw=1, label="thick training set")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(lab)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    _common.save(fig, path)


def figures(out, samples, imgs, report, y):
    plt = _common.pyplot()
    first = [int(np.flatnonzero(y == c)[0]) for c in range(10)]
    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 1.0 * len(samples)))
    for ax, (k, x) in zip(axes, samples.items()):
        ax.imshow(_common.image_grid(np.clip(x[first], -1, 1), 1, fill=-1.0), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"{k}: {report[k]['trainable']:,} trainable, Frechet {report[k]['frechet']:.2f}", fontsize=7)
        ax.set_axis_off()
    _common.save(fig, out / "lora_digits.png")
    plot_quality(plt, report, out / "lora_digits_quality.png")
    fig, axes = plt.subplots(3, 1, figsize=(8, 3.2))
    titles = {"control": "control (edges of held-out digits; prompt: their class)",
              "controlnet_class": "ControlNet + class",
              "lora_controlnet_class": "thick LoRA (r = 4) + ControlNet + class"}
    for ax, (k, x) in zip(axes, imgs.items()):
        ax.imshow(_common.image_grid(np.clip(x, -1, 1), 1, fill=-1.0), cmap="gray_r", vmin=-1, vmax=1)
        extra = "" if k == "control" else f"  (edge IoU {report['compose'][k]['edge_iou']:.2f})"
        ax.set_title(titles[k] + extra, fontsize=7)
        ax.set_axis_off()
    _common.save(fig, out / "lora_digits_compose.png")


if __name__ == "__main__":
    main()
