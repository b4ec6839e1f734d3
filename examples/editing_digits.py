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
``editing_digits_outpaint.png`` (digits shifted half out of the frame, the missing half
generated), ``editing_digits_img2img.png`` and ``editing_digits.json`` into --out.

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
    p.add_argument("--inpaint-checkpoint", default=None, help="the inpainting U-Net's run folder (trained if missing)")
    p.add_argument("--steps", type=int, default=2000, help="training updates of the U-Net (when training)")
    p.add_argument("--classifier-steps", type=int, default=1500, help="training updates of the classifier")
    p.add_argument("--n-test", type=int, default=0, help="held-out digits used (0: all)")
    p.add_argument("--ddpm-steps", type=int, default=100, help="grid of the replacement DDPM runs")
    p.add_argument("--ddim-steps", type=int, default=50, help="grid of the replacement DDIM runs and of the inversion")
    p.add_argument("--repaint", type=int, nargs=3, default=[100, 10, 5], metavar=("N", "JUMP_LENGTH", "JUMP_N_SAMPLE"))
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0],
                   help="CFG scales ('w' convention: 1 = conditional) of the class swap")
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


def training_masks(n, copies, rng):
    """(copies n, 1, 8, 8) random masks (1 = generate): the four halves and random rectangles."""
    masks = np.zeros((copies * n, 1, 8, 8))
    for k in range(copies * n):
        kind = rng.integers(0, 5)
        if kind == 0:
            masks[k, :, 4:, :] = 1
        elif kind == 1:
            masks[k, :, :4, :] = 1
        elif kind == 2:
            masks[k, :, :, :4] = 1
        elif kind == 3:
            masks[k, :, :, 4:] = 1
        else:
            h, w = rng.integers(2, 7, 2)
            i, j = rng.integers(0, 9 - h), rng.integers(0, 9 - w)
            masks[k, :, i:i + h, j:j + w] = 1
    return masks


def get_inpaint_model(args, x_tr):
    """The "9-channel" idea at toy scale: a U-Net whose input is (x_t, mask, masked image),
    trained on random masks (the inpaint condition kind); loaded if --inpaint-checkpoint exists."""
    import refdiff
    from refdiff.nn import UNet, UNetConfig
    from refdiff.train import train

    path = args.inpaint_checkpoint
    if path is not None and Path(path).exists():
        return refdiff.load(path)[0]
    tmp = None if path is not None else tempfile.TemporaryDirectory()
    out_dir = path if path is not None else tmp.name
    rng = np.random.default_rng([args.seed, 11])
    copies = 2 if args.tiny else 6
    m = training_masks(x_tr.shape[0], copies, rng)
    x = np.tile(x_tr, (copies, 1, 1, 1))
    base = 8 if args.tiny else 16
    model = UNet(UNetConfig(base_channels=base, channel_mults=(1, 2), attention=False, inpaint=True,
                            groups=max(1, min(8, base // 2))))
    train(model, (x, {"mask": m, "masked_image": x * (1 - m)}), schedule=refdiff.make_schedule("cosine", 1000),
          steps=args.steps, batch_size=16 if args.tiny else 128, lr=2e-3, target="v_prediction", seed=args.seed,
          ema_decay=0.995, ema_warmup=True, warmup_steps=min(100, args.steps // 10), lr_decay="cosine", grad_clip=1.0,
          eval_size=0, progress=not args.tiny, out_dir=out_dir)
    out = refdiff.load(out_dir)[0]
    if tmp is not None:
        tmp.cleanup()
    return out


def inpaint_with_model(inp_model, x, mask, args, seed):
    """Sample with the trained inpainting model (cond: mask, masked image), then keep x exactly outside the mask."""
    import refdiff

    cond = refdiff.inpaint_condition(x, mask)
    ts = refdiff.timesteps(inp_model.schedule.T, args.ddim_steps, "trailing")
    z = np.random.default_rng([seed, 12]).standard_normal(x.shape)
    out = refdiff.sample(inp_model.bind(cond), z, inp_model.schedule, ts, "ddim",
                         prediction_type=inp_model.prediction_type, progress=False)
    return np.clip(mask * out + (1 - mask) * x, -1, 1)


def outpaint_shifted(loaded, inp_model, x, args, seed):
    """Outpainting: each digit shifted 4 columns to the left (its left half leaves the frame),
    the 4 columns that come in on the right generated: by replacement (DDPM, the
    unconditional model) and by the trained inpainting U-Net."""
    import refdiff

    shifted = np.concatenate([x[..., 4:], np.zeros(x.shape[:-1] + (4,))], axis=-1)
    mask = np.zeros((1, 1, 8, 8))
    mask[..., 4:] = 1.0
    ts = refdiff.timesteps(loaded.schedule.T, args.ddpm_steps, "trailing")
    rep = refdiff.inpaint(loaded.bind(None), shifted, mask, loaded.schedule, ts, "ddpm", rng=np.random.default_rng(seed),
                          prediction_type=loaded.prediction_type)
    return shifted * (1 - mask) - mask, np.clip(rep, -1, 1), inpaint_with_model(inp_model, shifted, mask, args, seed)


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


def class_swap(loaded, x, y, args, seed, w):
    import refdiff

    sch, pt = loaded.schedule, loaded.prediction_type
    rng = np.random.default_rng([seed, 5])
    y_tgt = (y + 1 + rng.integers(0, 9, y.shape[0])) % 10  # another class
    ts = refdiff.timesteps(sch.T, args.ddim_steps, "trailing")
    src = loaded.bind({"class": y})
    tgt = loaded.bind({"class": y_tgt}, guidance_scale=w, guided=("class",))
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
    inp_model = get_inpaint_model(args, x_tr)
    inp[f"inpainting U-Net (x_t, mask, masked image), DDIM {args.ddim_steps}"] = inpaint_with_model(
        inp_model, x_te, mask, args, args.seed)
    masked = x_te * (1 - mask) - mask  # the lower half shown as background (-1)
    res["inpaint"]["lower half blank (no inpainting)"] = float(np.mean(classifier.classify(clf, masked) == y_te))
    for k, v in inp.items():
        res["inpaint"][k] = float(np.mean(classifier.classify(clf, v) == y_te))
    for k, v in res["inpaint"].items():
        print(f"  class recovered, {k}: {v:.3f}")
    res["swap"], swaps = {}, {}
    for w in args.guidance:
        y_tgt, x_swap, fresh = class_swap(loaded, x_te, y_te, args, args.seed, w)
        swaps[w] = (x_swap, fresh)
        r = {"target_accuracy": float(np.mean(classifier.classify(clf, x_swap) == y_tgt)),
             "fresh_target_accuracy": float(np.mean(classifier.classify(clf, fresh) == y_tgt)),
             "rms_to_input": float(np.sqrt(np.mean((x_swap - x_te) ** 2))),
             "rms_fresh_to_input": float(np.sqrt(np.mean((fresh - x_te) ** 2)))}
        res["swap"][f"w={w:g}"] = r
        print(f"  class swap by inversion, w = {w:g}: target-class accuracy {r['target_accuracy']:.3f} (fresh samples "
              f"{r['fresh_target_accuracy']:.3f}); RMS distance to the input {r['rms_to_input']:.3f} (fresh samples "
              f"{r['rms_fresh_to_input']:.3f})")
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
    rows = [(x_te[:k], "input")]
    for w, (x_swap, fresh) in swaps.items():
        rows += [(x_swap[:k], f"class swapped by inversion, w = {w:g} (targets {y_tgt[:k].tolist()})"),
                 (fresh[:k], f"fresh samples of the targets, w = {w:g}")]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.9 * k, 1.1 * len(rows)))
    for ax, (r, lab) in zip(axes, rows):
        ax.imshow(_common.image_grid(r, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(lab, fontsize=7)
    _common.save(fig, out / "editing_digits_swap.png")
    rows = outpaint_shifted(loaded, inp_model, x_te[:k], args, args.seed)
    fig, axes = plt.subplots(3, 1, figsize=(0.9 * k, 3.3))
    for ax, r, lab in zip(axes, rows, ("digits shifted half out of the frame (left half lost)",
                                       f"right half outpainted: replacement DDPM {args.ddpm_steps}",
                                       "right half outpainted: inpainting U-Net")):
        ax.imshow(_common.image_grid(r, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(lab, fontsize=7)
    _common.save(fig, out / "editing_digits_outpaint.png")
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
