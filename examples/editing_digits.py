"""Editing held-out 8x8 digits with a trained class-conditional U-Net (MATH.md chapter 17).

* inpainting the lower half of every held-out digit with each scheme (replacement with
  fresh and re-used noise, DDPM and DDIM; RePaint), with the *unconditional* (null-class)
  model, and the share whose class a separately trained classifier recovers;
* class swap by inversion: DDIM-invert each digit under its own class, regenerate under
  another class with classifier-free guidance; the share classified as the target class,
  and how far the result is from the input compared with a fresh sample of that class;
* an img2img strength sweep (SDEdit) of a few digits.

The U-Net is trained as in examples/cfg_digits.py (v-prediction, cosine schedule, condition
dropout) unless ``--checkpoint`` names a run folder or checkpoint that exists (it is then
loaded with ``refdiff.load``; a folder that does not exist receives the new checkpoint).

Writes ``editing_digits_inpaint.png``, ``editing_digits_swap.png``,
``editing_digits_img2img.png`` and ``editing_digits.json`` into --out.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python3 examples/editing_digits.py --out docs/figures
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def build_parser():
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--checkpoint", default=None, help="run folder or checkpoint file (trained if missing)")
    p.add_argument("--steps", type=int, default=2000, help="training updates of the U-Net (when training)")
    p.add_argument("--classifier-steps", type=int, default=1500, help="training updates of the classifier")
    p.add_argument("--n-test", type=int, default=0, help="held-out digits used (0: all)")
    p.add_argument("--ddpm-steps", type=int, default=100, help="grid of the replacement DDPM runs")
    p.add_argument("--ddim-steps", type=int, default=50, help="grid of the replacement DDIM runs and of the inversion")
    p.add_argument("--repaint", type=int, nargs=3, default=[100, 10, 5], metavar=("N", "JUMP_LENGTH", "JUMP_N_SAMPLE"))
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale ('w' convention) of the class swap")
    p.add_argument("--show", type=int, default=10, help="digits shown per figure")
    return p


def tiny_args(a):
    a.steps, a.classifier_steps, a.n_test, a.ddpm_steps, a.ddim_steps, a.repaint, a.show = 4, 20, 6, 5, 5, [6, 2, 2], 4
    return a


def get_model(args, x_tr, y_tr):
    import refdiff
    from refdiff.nn import UNet, UNetConfig
    from refdiff.train import train

    path = args.checkpoint
    if path is not None and Path(path).exists():
        return refdiff.load(path)
    tmp = None if path is not None else tempfile.TemporaryDirectory()
    out_dir = path if path is not None else tmp.name
    base = 8 if args.tiny else 16
    model = UNet(UNetConfig(base_channels=base, channel_mults=(1, 2), attention=False, num_classes=10,
                            groups=max(1, min(8, base // 2))))
    train(model, (x_tr, {"class": y_tr}), schedule=refdiff.make_schedule("cosine", 1000), steps=args.steps,
          batch_size=16 if args.tiny else 128, lr=2e-3, target="v_prediction", seed=args.seed, ema_decay=0.995,
          ema_warmup=True, cond_dropout=0.15, warmup_steps=min(100, args.steps // 10), lr_decay="cosine",
          grad_clip=1.0, eval_size=0, progress=not args.tiny, out_dir=out_dir)
    out = refdiff.load(out_dir)
    if tmp is not None:
        tmp.cleanup()
    return out


def inpaint_all(loaded, x, args, seed):
    import refdiff

    sch, pt = loaded.schedule, loaded.prediction_type
    model = loaded.bind(None)  # the unconditional (null-class) model: it is not told the digit
    mask = np.zeros((1, 1, 8, 8))
    mask[..., 4:, :] = 1.0  # generate the lower half (1 = generate, the diffusers meaning)
    n, j, r = args.repaint
    schemes = {
        f"replace DDPM {args.ddpm_steps}, fresh": dict(ts=args.ddpm_steps, method="ddpm"),
        f"replace DDPM {args.ddpm_steps}, re-used noise": dict(ts=args.ddpm_steps, method="ddpm", noise_mode="reuse"),
        f"replace DDIM {args.ddim_steps}, fresh": dict(ts=args.ddim_steps, method="ddim"),
        f"RePaint {n}, j={j}, r={r}": dict(ts=n, method="ddpm", scheme="repaint", jump_length=j, jump_n_sample=r),
    }
    out = {}
    for name, kw in schemes.items():
        ts = refdiff.timesteps(sch.T, kw.pop("ts"), "trailing")
        t0 = time.perf_counter()
        out[name] = np.clip(refdiff.inpaint(model, x, mask, sch, ts, kw.pop("method"), rng=np.random.default_rng(seed),
                                            prediction_type=pt, **kw), -1, 1)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return mask, out


def class_swap(loaded, x, y, args, seed):
    import refdiff

    sch, pt = loaded.schedule, loaded.prediction_type
    rng = np.random.default_rng([seed, 5])
    y_tgt = (y + 1 + rng.integers(0, 9, y.shape[0])) % 10  # another class
    ts = refdiff.timesteps(sch.T, args.ddim_steps, "trailing")
    src = loaded.bind({"class": y})
    tgt = loaded.bind({"class": y_tgt}, guidance_scale=args.guidance, guided=("class",))
    x_swap = np.clip(refdiff.edit_by_inversion(src, tgt, x, sch, ts, prediction_type=pt), -1, 1)
    fresh = np.clip(refdiff.sample(tgt, np.random.default_rng([seed, 6]).standard_normal(x.shape), sch, ts, "ddim",
                                   prediction_type=pt, progress=False), -1, 1)
    return y_tgt, x_swap, fresh


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.tiny:
        args = tiny_args(args)
    import refdiff
    from refdiff.nn import classifier
    from refdiff.train import train_digit_classifier

    out = _common.out_dir(args.out)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    if args.n_test:
        x_te, y_te = x_te[: args.n_test], y_te[: args.n_test]
    clf, clf_acc = train_digit_classifier(steps=args.classifier_steps, seed=args.seed, x_train=x_tr, y_train=y_tr,
                                          x_test=x_te, y_test=y_te)
    print(f"data {name}: {x_te.shape[0]} held-out digits; classifier accuracy on them {clf_acc:.3f}", flush=True)
    loaded, meta = get_model(args, x_tr, y_tr)
    res = {"data": name, "n_test": int(x_te.shape[0]), "classifier_accuracy": clf_acc, "inpaint": {}}
    mask, inp = inpaint_all(loaded, x_te, args, args.seed)
    masked = x_te * (1 - mask) - mask  # the lower half shown as background (-1)
    res["inpaint"]["lower half blank (no inpainting)"] = float(np.mean(classifier.classify(clf, masked) == y_te))
    for k, v in inp.items():
        res["inpaint"][k] = float(np.mean(classifier.classify(clf, v) == y_te))
    for k, v in res["inpaint"].items():
        print(f"  class recovered, {k}: {v:.3f}")
    y_tgt, x_swap, fresh = class_swap(loaded, x_te, y_te, args, args.seed)
    res["swap"] = {"target_accuracy": float(np.mean(classifier.classify(clf, x_swap) == y_tgt)),
                   "fresh_target_accuracy": float(np.mean(classifier.classify(clf, fresh) == y_tgt)),
                   "rms_to_input": float(np.sqrt(np.mean((x_swap - x_te) ** 2))),
                   "rms_fresh_to_input": float(np.sqrt(np.mean((fresh - x_te) ** 2))), "guidance": args.guidance}
    print(f"  class swap by inversion: target-class accuracy {res['swap']['target_accuracy']:.3f} (fresh CFG samples "
          f"{res['swap']['fresh_target_accuracy']:.3f}); RMS distance to the input {res['swap']['rms_to_input']:.3f} "
          f"(fresh samples {res['swap']['rms_fresh_to_input']:.3f})")
    plt = _common.pyplot()
    k = args.show
    rows = [x_te[:k], masked[:k]] + [v[:k] for v in inp.values()]
    labels = ["original", "kept upper half"] + list(inp)
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.9 * k, 1.05 * len(rows)))
    for ax, r, lab in zip(axes, rows, labels):
        ax.imshow(_common.image_grid(r, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        acc = res["inpaint"].get(lab)
        ax.set_title(lab + ("" if acc is None else f"  (class recovered {100 * acc:.1f} %)"), fontsize=7)
    _common.save(fig, out / "editing_digits_inpaint.png")
    fig, axes = plt.subplots(3, 1, figsize=(0.9 * k, 3.3))
    for ax, r, lab in zip(axes, (x_te[:k], x_swap[:k], fresh[:k]),
                          ("input", f"class swapped by inversion (targets {y_tgt[:k].tolist()})", "fresh CFG samples")):
        ax.imshow(_common.image_grid(r, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(lab, fontsize=7)
    _common.save(fig, out / "editing_digits_swap.png")
    strengths = [0.2, 0.4, 0.6, 0.8, 1.0]
    ts = refdiff.timesteps(loaded.schedule.T, args.ddim_steps, "trailing")
    sweep = [x_te[:k]] + [np.clip(refdiff.img2img(loaded.bind(None), x_te[:k], loaded.schedule, ts, s, "ddim",
                                                  rng=np.random.default_rng(args.seed),
                                                  prediction_type=loaded.prediction_type), -1, 1) for s in strengths]
    fig, axes = plt.subplots(len(sweep), 1, figsize=(0.9 * k, 1.05 * len(sweep)))
    for ax, r, lab in zip(axes, sweep, ["input"] + [f"img2img DDIM, strength {s}" for s in strengths]):
        ax.imshow(_common.image_grid(r, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(lab, fontsize=7)
    _common.save(fig, out / "editing_digits_img2img.png")
    (out / "editing_digits.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {out / 'editing_digits.json'}")
    return res


if __name__ == "__main__":
    main()
