"""DiT against the U-Net on the class-conditional 8x8 digits, at about equal parameter count:
the same data, schedule, objective, training steps, sampler and guidance; one table with
parameter counts, training wall time, cost per training step and per sampler step, the final
training loss, guided-class accuracy (a separately trained classifier) and the Frechet
distance to the test digits in the classifier's features.

    python examples/dit_digits.py --steps 3000 --out runs/dit_digits
    python examples/dit_digits.py --tiny --out /tmp/x

Writes ``dit_digits.json``, ``dit_digits.md`` (the table) and ``dit_digits.png`` (samples).
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def build_parser():
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--steps", type=int, default=3000, help="training updates of each network")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--base-channels", type=int, default=16, help="U-Net width (160k parameters at 16)")
    p.add_argument("--width", type=int, default=48, help="DiT width (180k parameters at 48, depth 4)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--scale", type=float, default=3.0, help="guidance scale ('w' convention)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--method", default="dpmpp_2m")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--nets", nargs="+", default=["unet", "dit"], choices=["unet", "dit"])
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.base_channels, args.width, args.depth = 3, 16, 8, 16, 1
        args.per_class, args.sample_steps, args.classifier_steps = 2, 3, 20
    import refdiff
    from refdiff import metrics
    from refdiff.nn import UNet, UNetConfig, classifier
    from refdiff.nn.dit import DiT, DiTConfig
    from refdiff.train import train, train_digit_classifier

    out = _common.out_dir(args.out)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    clf, clf_acc = train_digit_classifier(steps=args.classifier_steps, seed=args.seed, x_train=x_tr, y_train=y_tr,
                                          x_test=x_te, y_test=y_te)
    print(f"classifier: held-out test accuracy {clf_acc:.4f}")
    feat_real = classifier.features(clf, x_te)
    schedule = refdiff.make_schedule("cosine", 1000)
    nets = {"unet": lambda: UNet(UNetConfig(base_channels=args.base_channels, channel_mults=(1, 2), attention=False,
                                            num_classes=10, groups=max(1, min(8, args.base_channels // 2)))),
            "dit": lambda: DiT(DiTConfig(image_size=8, in_channels=1, patch=args.patch, width=args.width,
                                         depth=args.depth, heads=args.heads, num_classes=10, freq_dim=64))}
    labels = np.repeat(np.arange(10), args.per_class)
    rows, shown = [], []
    for key in args.nets:
        net = nets[key]()
        run = tempfile.TemporaryDirectory()
        t0 = time.perf_counter()
        res = train(net, (x_tr, {"class": y_tr}), schedule=schedule, steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, target="v_prediction", seed=args.seed, ema_decay=0.995, ema_warmup=True,
                    cond_dropout=0.15, warmup_steps=min(100, args.steps // 10), lr_decay="cosine", grad_clip=1.0,
                    eval_size=0, progress=False, out_dir=run.name)
        t_train = time.perf_counter() - t0
        loaded, _ = refdiff.load(run.name)
        run.cleanup()
        t0 = time.perf_counter()
        x0 = loaded.sample(labels.shape[0], steps=args.sample_steps, method=args.method,
                           rng=np.random.default_rng([args.seed, 3]), cond={"class": labels},
                           guidance_scale=args.scale, guided=("class",), progress=False)
        t_sample = time.perf_counter() - t0
        x0 = np.clip(np.asarray(x0, dtype=np.float64), -1.0, 1.0)
        acc = float(np.mean(classifier.classify(clf, x0) == labels))
        fd = metrics.frechet_distance(classifier.features(clf, x0), feat_real)
        rows.append({"net": key, "params": net.num_params(), "train_seconds": t_train,
                     "ms_per_train_step": 1000 * t_train / args.steps,
                     "ms_per_sampler_step": 1000 * t_sample / args.sample_steps,
                     "final_loss": float(np.mean(res.losses[-100:])), "guided_accuracy": acc, "frechet": fd})
        shown.append(np.concatenate([x0[labels == k][:4] for k in range(10)]))
        print(rows[-1])
    head = ("| net | parameters | training wall time (s) | ms / training step | ms / sampler step (2 passes, "
            f"{labels.shape[0]} samples) | final loss (v) | guided accuracy (w = {args.scale}) | Frechet |\n"
            "|---|---|---|---|---|---|---|---|\n")
    table = head + "".join(f"| {r['net']} | {r['params']} | {r['train_seconds']:.0f} | {r['ms_per_train_step']:.1f} | "
                           f"{r['ms_per_sampler_step']:.0f} | {r['final_loss']:.4f} | {r['guided_accuracy']:.3f} | "
                           f"{r['frechet']:.3f} |\n" for r in rows)
    setup = (f"{name}, cosine schedule T = 1000, v-prediction, {args.steps} AdamW steps of batch {args.batch_size}, "
             f"lr {args.lr} cosine, condition dropout 0.15, EMA 0.995; sampler {args.method} {args.sample_steps} "
             f"steps, CFG w = {args.scale}; classifier test accuracy {clf_acc:.3f}")
    print(table + setup)
    (out / "dit_digits.md").write_text(table + "\n" + setup + "\n")
    import json

    (out / "dit_digits.json").write_text(json.dumps({"setup": vars(args), "rows": rows, "classifier_acc": clf_acc},
                                                    indent=1))
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4), squeeze=False)
    for ax, r, imgs in zip(axes[0], rows, shown):
        ax.imshow(_common.image_grid(imgs, 10), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{r['net']} ({r['params']} params)\naccuracy {r['guided_accuracy']:.1%}", fontsize=9)
        ax.axis("off")
    _common.save(fig, out / "dit_digits.png")
    return rows


if __name__ == "__main__":
    main()
