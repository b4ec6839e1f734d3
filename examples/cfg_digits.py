"""Class-conditional 8x8 digits with classifier-free guidance at several scales.

Trains a class-conditional U-Net (refdiff.nn.UNet, hand-written forward/backward; 160k
parameters, v-prediction, cosine schedule, T = 1000) on the scikit-learn 8x8 digits with
condition dropout (the null class is label 10), samples
every digit from the checkpoint loaded back with ``refdiff.load`` (which knows the
schedule and the prediction type) with classifier-free guidance of the class condition
(``cond={"class": labels}``, guided against its null) at several scales, and scores the
samples with a separately trained MLP classifier (refdiff.nn.classifier), whose own
accuracy on the held-out test split is reported.

Guidance convention: "w" (``eps_u + w (eps_c - eps_u)``): w = 0 is the unconditional
model, w = 1 the conditional one, w > 1 guided (w = 3 here equals w' = 2 in the
"1+w" convention of Ho & Salimans 2022).  MATH.md (12.2)-(12.3).

Writes ``cfg_digits.png`` (one panel per scale: rows = requested digit 0..9),
``cfg_tradeoff.png`` (class accuracy and a diversity measure against the scale) and
``cfg_digits.json`` (every number printed).  Without scikit-learn it says so and uses the
procedural 8x8 shapes instead.

    OPENBLAS_NUM_THREADS=1 python examples/cfg_digits.py --out docs/figures

About 3-6 minutes on 2 CPU cores (2000 updates of batch 128) before the U-Net was trained on
two batch halves in two threads and the scales sampled concurrently (--train-threads 2, the
default on 2 or more cores; see benchmarks/README.md for the measured time).  The matrices are small:
on a busy machine one BLAS thread (OPENBLAS_NUM_THREADS=1) is several times faster than
the default, whose threads wait on each other.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def build_parser():
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--steps", type=int, default=2000, help="training updates of the U-Net")
    p.add_argument("--target", default="v_prediction", choices=["epsilon", "sample", "v_prediction"],
                   help="what the U-Net predicts (v trains fastest here)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--base-channels", type=int, default=16, help="U-Net width at 8x8 (twice that at 4x4)")
    p.add_argument("--cond-dropout", type=float, default=0.15, help="probability of training on the null class")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 8.0],
                   help="guidance scales, 'w' convention (0: unconditional, 1: conditional)")
    p.add_argument("--per-class", type=int, default=50, help="samples per digit and scale")
    p.add_argument("--method", default="dpmpp_2m", help="refdiff.sample method")
    p.add_argument("--sample-steps", type=int, default=25, help="sampler steps")
    p.add_argument("--classifier-steps", type=int, default=1500, help="training updates of the classifier")
    p.add_argument("--show", type=int, default=8, help="samples per digit shown in the figure")
    p.add_argument("--train-threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="U-Net training on this many batch slices, one Python thread each "
                        "(refdiff.training.BatchThreads; the same updates up to float summation order); "
                        "keep --threads 1 (BLAS single-threaded) with it")
    return p


def tiny_args(a):
    a.steps, a.batch_size, a.base_channels, a.per_class, a.sample_steps = 4, 16, 8, 2, 3
    a.classifier_steps, a.scales, a.show, a.lr = 20, [0.0, 3.0], 2, 1e-3
    return a


def sample_scale(model, w, labels, args, rng, progress=False):
    """Samples for the labels at guidance scale w ('w' convention) from a
    :class:`refdiff.LoadedModel` (it knows its schedule and prediction type): the class
    condition {"class": labels} guided against its null (the null class), MATH.md (12.8)."""
    cond = None if w == 0.0 else {"class": labels}  # w = 0: the unconditional model (null class)
    scale = None if w in (0.0, 1.0) else w  # w = 1: the conditional model; CFG is the same thing there
    x0 = model.sample(labels.shape[0], steps=args.sample_steps, method=args.method, rng=rng, cond=cond,
                      guidance_scale=scale, guided=("class",), progress=progress)
    return np.clip(np.asarray(x0, dtype=np.float64), -1.0, 1.0)


def main(argv=None):
    t_start = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.tiny:
        args = tiny_args(args)
    import tempfile

    import refdiff
    from refdiff import metrics
    from refdiff.nn import UNet, UNetConfig, classifier
    from refdiff.train import train, train_digit_classifier

    out = _common.out_dir(args.out)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    print(f"data: {name}, {x_tr.shape[0]} training and {x_te.shape[0]} held-out test images")

    t0 = time.perf_counter()
    clf, clf_acc = train_digit_classifier(steps=args.classifier_steps, seed=args.seed, x_train=x_tr,
                                                  y_train=y_tr, x_test=x_te, y_test=y_te)
    t_clf = time.perf_counter() - t0
    print(f"classifier: held-out test accuracy {clf_acc:.4f} ({t_clf:.0f} s)")

    schedule = refdiff.make_schedule("cosine", 1000)
    cfg = UNetConfig(base_channels=args.base_channels, channel_mults=(1, 2), attention=False, num_classes=10,
                     groups=max(1, min(8, args.base_channels // 2)))
    model = UNet(cfg)
    t0 = time.perf_counter()
    run_dir = tempfile.TemporaryDirectory()
    res = train(model, (x_tr, {"class": y_tr}), schedule=schedule, steps=args.steps, batch_size=args.batch_size,
                lr=args.lr, target=args.target, seed=args.seed, ema_decay=args.ema_decay, ema_warmup=True,
                cond_dropout=args.cond_dropout, warmup_steps=min(100, args.steps // 10),
                lr_decay="cosine", grad_clip=1.0, eval_size=0, progress=not args.tiny, out_dir=run_dir.name,
                threads=max(1, args.train_threads))
    t_train = time.perf_counter() - t0
    loaded, meta = refdiff.load(run_dir.name)  # the EMA network with its schedule and prediction type
    run_dir.cleanup()
    print(f"loaded the checkpoint: {meta['prediction_type']} prediction, condition kinds {meta['cond_kinds']}")
    print(f"U-Net: {model.num_params()} parameters, {args.steps} steps of batch {args.batch_size}, "
          f"training wall time {t_train:.0f} s, final loss (mean of last 100) {np.mean(res.losses[-100:]):.4f}")

    labels = np.repeat(np.arange(10), args.per_class)  # (10 per_class,)
    feat_real = classifier.features(clf, x_te)
    rows, shown = [], {}
    t0 = time.perf_counter()
    # every scale draws from its own generator default_rng([seed, 3]), so the scales are
    # independent runs: with --train-threads > 1 they are sampled concurrently, one thread each
    # (NumPy releases the GIL in the products); the samples are the same as in turn
    workers = max(1, min(args.train_threads, len(args.scales)))
    draw = lambda w: sample_scale(loaded, w, labels, args, np.random.default_rng([args.seed, 3]),  # noqa: E731
                                  progress=workers == 1 and not args.tiny)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            samples = list(pool.map(draw, args.scales))
    else:
        samples = [draw(w) for w in args.scales]
    for w, x0 in zip(args.scales, samples):
        pred = classifier.classify(clf, x0)
        acc = float(np.mean(pred == labels))
        per_digit = [float(np.mean(pred[labels == k] == k)) for k in range(10)]
        fd = metrics.frechet_distance(classifier.features(clf, x0), feat_real) if x0.shape[0] > 2 else float("nan")
        spread = float(np.mean([np.mean(np.std(x0[labels == k], axis=0)) for k in range(10)]))
        rows.append({"scale_w": w, "accuracy": acc, "per_digit_accuracy": per_digit, "frechet": fd,
                     "within_class_std": spread})
        shown[w] = np.concatenate([x0[labels == k][: args.show] for k in range(10)])  # (10 show, 1, 8, 8)
        print(f"  w = {w:4.1f}: accuracy {acc:.3f}, Frechet (classifier features, vs test) {fd:.3f}, "
              f"within-class pixel std {spread:.3f}")
    t_sample = time.perf_counter() - t0

    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(args.scales), figsize=(2.6 * len(args.scales) + 0.3, 3.6))
    for ax, w, r in zip(np.atleast_1d(axes), args.scales, rows):
        ax.imshow(_common.image_grid(shown[w], nrow=10, fill=0.0), cmap="gray_r", vmin=-1, vmax=1,
                  interpolation="nearest")
        head = f"w = {w:g}" + (" (unconditional)" if w == 0 else " (conditional)" if w == 1 else "")
        ax.set_title(f"{head}\naccuracy {r['accuracy']:.1%}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([(8 + 1) * k + 3.5 for k in range(10)])
        ax.set_yticklabels([str(k) for k in range(10)] if ax is np.atleast_1d(axes)[0] else [], fontsize=7)
    fig.suptitle(f"class-conditional {name}, classifier-free guidance ('w' convention; rows: requested class)",
                 fontsize=9)
    _common.save(fig, out / "cfg_digits.png")

    ws = [r["scale_w"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    panels = (("accuracy", "class accuracy (held-out classifier)"),
              ("frechet", "Frechet distance to test digits\n(classifier features)"),
              ("within_class_std", "within-class pixel std (diversity)"))
    for ax, (key, title) in zip(axes, panels):
        ax.plot(ws, [r[key] for r in rows], "o-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("guidance scale w ('w' convention)")
    axes[0].axhline(clf_acc, color="k", ls=":", lw=1, label=f"classifier test accuracy {clf_acc:.3f}")
    axes[0].set_ylim(min(0.5, min(r["accuracy"] for r in rows)), 1.01)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("classifier-free guidance: fidelity against diversity", fontsize=9)
    fig.tight_layout()
    _common.save(fig, out / "cfg_tradeoff.png")

    t_total = time.perf_counter() - t_start
    print(f"wall time: training {t_train:.0f} s, sampling {t_sample:.0f} s, total {t_total:.0f} s")
    summary = {"data": name, "total_seconds": t_total, "classifier_test_accuracy": clf_acc, "train_seconds": t_train,
               "sample_seconds": t_sample, "classifier_seconds": t_clf, "unet_params": model.num_params(),
               "args": vars(args), "scales": rows}
    (out / "cfg_digits.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'cfg_digits.json'}")
    return summary


if __name__ == "__main__":
    main()
