"""A toy Stable Diffusion, end to end (issue 14): a KL autoencoder (16x16 -> 4x4xc), a toy
CLIP (text transformer + image encoder, symmetric InfoNCE), then frozen; a latent U-Net with
cross-attention to the frozen text encoder's token states (as SD attends to CLIP's) trained
with condition dropout, and text-to-image with classifier-free guidance against the empty
prompt (whose states, under the same frozen encoder, are the null condition).

Measured and printed (and written to toy_sd.json):
* the VAE's reconstruction error and latent scaling factor (LDM rule, MATH.md (21.9));
* the toy CLIP's final contrastive loss against its chance value log(batch) and its
  zero-shot attribute accuracy on images of held-out attribute combinations;
* prompt adherence: the fraction of samples whose digit, position and weight are all right
  according to an attribute classifier (refdiff layers, trained on images, never on
  samples), on seen and held-out combinations, and the Frechet distance (classifier
  features) to real images, against the guidance scale w;
* latent against pixel diffusion: forward FLOPs and measured time of one training step of
  the same U-Net on 4x4xc latents and on 16x16 pixels; then the pixel U-Net is trained for
  the same wall time as the latent one (its steps = the latent steps x the measured ratio
  of step times; both trainings' seconds are reported) and its samples are scored with the
  same classifier (adherence, Frechet distance) at a few guidance scales.

* the classic failure: gradient ascent on the toy-CLIP score from noise gives images that
  score as well as real ones and look like nothing, where diffusion gives the digit.

Figures: toy_sd_prompts.png (prompts -> images, seen and held-out), toy_sd_guidance.png,
toy_sd_clip_adversarial.png.
``--context tokens`` trains the earlier variant instead: a U-Net that learns its own token
embeddings (condition kind ``tokens``) and ignores the toy CLIP.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def build_parser():
    p = _common.parser(__doc__.splitlines()[0], "toy-sd-out")
    p.add_argument("--n-train", type=int, default=6000, help="captioned training images")
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--clip-steps", type=int, default=800)
    p.add_argument("--clf-steps", type=int, default=800)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    p.add_argument("--chosen-scale", type=float, default=4.0, help="guidance scale of the prompt figure")
    p.add_argument("--n-eval", type=int, default=200, help="samples per guidance scale")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--context", choices=("clip", "tokens"), default="clip",
                   help="U-Net condition: the frozen toy CLIP's text states, or its own token embeddings")
    p.add_argument("--pixel-steps", type=int, default=None,
                   help="pixel U-Net steps (default: the latent U-Net's wall time, by the measured step-time ratio; 0: "
                   "no pixel model)")
    p.add_argument("--pixel-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    return p


def tiny_args(a):
    a.n_train, a.vae_steps, a.clip_steps, a.clf_steps, a.unet_steps = 64, 3, 3, 3, 3
    a.scales, a.n_eval, a.sample_steps, a.chosen_scale = [0.0, 2.0], 8, 2, 2.0
    a.pixel_scales, a.pixel_steps = [2.0], 2
    return a


def _batches(n, bs, r):
    return r.integers(0, n, min(bs, n))


def train_vae(x, args, progress):
    from refdiff.nn.vae import KLAutoencoder, KLAutoencoderConfig
    from refdiff.training import fit, init_state

    ae = KLAutoencoder(KLAutoencoderConfig(image_size=16, latent_channels=args.latent_channels, width=16))
    P = ae.init_params(np.random.default_rng([args.seed, 1]))
    st = init_state({"params": P}, {"params": True}, np.random.default_rng([args.seed, 2]), args.vae_steps)
    c = args.latent_channels

    def next_batch(r):
        idx = _batches(len(x), 64, r)
        return x[idx].astype(np.float32), r.standard_normal((len(idx), c, 4, 4)).astype(np.float32)

    def loss_fn(groups, batch, r):
        loss, G, _ = ae.loss(groups["params"], *batch, beta=1e-3, sigma_x2=1.0)
        return loss, {"params": G}

    st = fit(loss_fn, st, next_batch, steps=args.vae_steps, trainable={"params": True}, lr=2e-3,
             lr_decay="cosine", grad_clip=5.0, progress=progress, desc="VAE")
    return ae, st.groups["params"]


def _ce(logits, labels):
    """Mean softmax cross entropy and its gradient."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.mean(np.log(p[np.arange(n), labels] + 1e-30))
    d = p.copy()
    d[np.arange(n), labels] -= 1.0
    return loss, d / n


HEADS = ((0, 10, "digit"), (10, 14, "position"), (14, 16, "weight"))


def train_attribute_classifier(data, args, progress):
    """An ImageEncoder whose 16 outputs are the logits of digit (10), position (4), weight (2)."""
    from refdiff.nn.text import ImageEncoder
    from refdiff.training import fit, init_state

    enc = ImageEncoder(1, 32, 16)
    st = init_state({"params": enc.init_params(np.random.default_rng([args.seed, 3]), dtype="float32")},
                    {"params": True}, np.random.default_rng([args.seed, 4]), args.clf_steps)
    x = data["x"]

    def loss_fn(groups, idx, r):
        P = groups["params"]
        out, cache = enc.forward(P, x[idx].astype(np.float32))
        d, total = np.zeros_like(out), 0.0
        for lo, hi, key in HEADS:
            loss, g = _ce(out[:, lo:hi], data[key][idx])
            total, d[:, lo:hi] = total + loss, g
        return total, {"params": enc.backward(P, cache, d)}

    st = fit(loss_fn, st, lambda r: _batches(len(x), 128, r), steps=args.clf_steps, trainable={"params": True},
             lr=3e-3, lr_decay="cosine", progress=progress, desc="attribute classifier")
    P = st.groups["params"]

    def classify(imgs):
        out, cache = enc.forward(P, np.asarray(imgs, dtype=np.float32))
        pred = {key: out[:, lo:hi].argmax(axis=1) for lo, hi, key in HEADS}
        return pred, np.asarray(cache[1][0], dtype=np.float64)  # predictions, pooled features

    return classify


def train_clip(data, tok, args, progress):
    from refdiff.nn.text import ImageEncoder, TextEncoder, TextEncoderConfig, contrastive_loss
    from refdiff.training import fit, init_state

    tenc = TextEncoder(TextEncoderConfig(tok.vocab_size, tok.context_len, dim=32, heads=2, layers=2, embed_dim=32))
    ienc = ImageEncoder(1, 32, 32)
    r0 = np.random.default_rng([args.seed, 5])
    groups = {"text": tenc.init_params(r0, dtype="float32"), "image": ienc.init_params(r0, dtype="float32"),
              "temp": {"log_temp": np.array([np.log(10.0)], dtype=np.float32)}}
    ids, mask = tok(data["captions"])
    x = data["x"].astype(np.float32)
    st = init_state(groups, {"text": True, "image": True, "temp": True}, np.random.default_rng([args.seed, 6]),
                    args.clip_steps)
    B = min(64, len(x))

    def loss_fn(g, idx, r):
        (_, te), tc = tenc.forward(g["text"], ids[idx], mask[idx])
        ie, ic = ienc.forward(g["image"], x[idx])
        loss, (di, dt, dlt) = contrastive_loss(ie, te, float(g["temp"]["log_temp"][0]))
        return loss, {"text": tenc.backward(g["text"], tc, None, dt), "image": ienc.backward(g["image"], ic, di),
                      "temp": {"log_temp": np.array([dlt], dtype=np.float32)}}

    def batch(r):  # distinct images; with 70 training combinations a batch of 64 repeats some
        return r.permutation(len(x))[:B]  # captions' attributes, so the loss cannot reach 0

    st = fit(loss_fn, st, batch, steps=args.clip_steps, trainable={"text": True, "image": True, "temp": True},
             lr=2e-3, lr_decay="cosine", progress=progress, desc="toy CLIP")
    last = float(np.mean(st.losses[-min(50, args.clip_steps):]))
    return tenc, ienc, st.groups, last, B


def zero_shot(tenc, ienc, groups, tok, imgs):
    """Predicted (digit, position, weight) = the attributes of the most similar caption among
    the canonical captions of all 80 combinations."""
    from refdiff.captions import all_combinations, caption
    from refdiff.nn.text import zero_shot_classify

    combos = all_combinations("all")
    ids, mask = tok([caption(*c) for c in combos])
    (_, te), _ = tenc.forward(groups["text"], ids, mask)
    ie, _ = ienc.forward(groups["image"], np.asarray(imgs, dtype=np.float32))
    return np.asarray(combos)[np.asarray(zero_shot_classify(ie, te))]



def clip_score(tenc, ienc, groups, tok, prompt, imgs):
    """Cosine similarity of each image's toy-CLIP embedding with the prompt's."""
    ids, mask = tok([prompt])
    (_, te), _ = tenc.forward(groups["text"], ids, mask)
    ie, _ = ienc.forward(groups["image"], np.asarray(imgs, dtype=np.float32))
    u = ie / np.linalg.norm(ie, axis=1, keepdims=True)
    return (u @ (te / np.linalg.norm(te, axis=1, keepdims=True)).T)[:, 0]


def clip_ascent(tenc, ienc, groups, tok, prompt, n, steps, rng, step=0.02):
    """The classic failure: signed gradient ascent on the toy-CLIP score from noise (pixels
    kept in [-1, 1]).  The images score well and look like no digit."""
    from tqdm.auto import tqdm

    ids, mask = tok([prompt])
    (_, te), _ = tenc.forward(groups["text"], ids, mask)
    v = te / np.linalg.norm(te)
    x = (0.3 * rng.standard_normal((n, 1, 16, 16)) - 0.5).astype(np.float32)
    for _ in tqdm(range(steps), desc="CLIP ascent", disable=steps < 50):
        ie, cache = ienc.forward(groups["image"], x)
        nrm = np.linalg.norm(ie, axis=1, keepdims=True)
        u = ie / nrm
        dscore = (v - u * (u @ v.T)) / nrm  # gradient of cos(u, v) with respect to ie
        _, dx = ienc.backward(groups["image"], cache, dscore.astype(np.float32), return_dx=True)
        x = np.clip(x + step * np.sign(dx), -1.0, 1.0).astype(np.float32)
    return x

def unet_config(args, tok, in_channels, size, text=None):
    """The U-Net: cross-attention at both levels and the middle; ``text`` = (encoder,
    params) of the frozen toy CLIP for the ``text_states`` condition (None: ``tokens``)."""
    from refdiff.nn import UNetConfig
    from refdiff.txt2img import null_text_states

    kw = dict(in_channels=in_channels, image_size=size, base_channels=24, channel_mults=(1, 2), attention=False,
              groups=8, cross_attention=(0, 1, "mid"), context_len=tok.context_len, heads=2)
    if text is None:
        return UNetConfig(**kw, vocab_size=tok.vocab_size, context_dim=32)
    states, mask = null_text_states(*text, tok)
    return UNetConfig(**kw, context_kind="text_states", context_dim=text[0].config.dim,
                      null_context=states.tolist(), null_context_mask=mask.tolist())


def prompt_cond(prompts, tok, text):
    """The U-Net condition of ``prompts``: the frozen encoder's states, or token ids."""
    from refdiff.txt2img import encode_prompts

    if text is not None:
        return encode_prompts(*text, tok, prompts)
    ids, mask = tok(prompts)
    return {"tokens": ids, "token_mask": mask}


def sample_prompts(model, ae, ae_params, scaling, prompts, w, tok, args, rng, progress, text=None):
    """Images for ``prompts`` at guidance scale w ('w' convention, against the empty
    prompt); ``ae`` None: a pixel-space model (no decoding)."""
    import refdiff
    from refdiff.latent import decode_latents
    from refdiff.schedules import timesteps

    f = model.bind(prompt_cond(prompts, tok, text), guidance_scale=w)
    z_T = rng.standard_normal((len(prompts), *model.sample_shape)).astype(np.float32)
    z = refdiff.sample(f, z_T, model.schedule, timesteps(model.schedule.T, args.sample_steps, "trailing"), "ddim",
                       prediction_type=model.prediction_type, rng=rng, progress=progress)
    if ae is None:
        return np.clip(np.asarray(z, dtype=np.float32), -1, 1)
    return np.clip(decode_latents(lambda zz: ae.decode(ae_params, zz), np.asarray(z, dtype=np.float32), *scaling,
                                  latent_shape=ae.config.latent_shape), -1, 1)


def benchmark_latent_vs_pixel(tok, args, text, batch=64, reps=3):
    """Forward FLOPs (2 x multiply-adds of every convolution, linear map and attention
    product, counted by wrapping refdiff's layers) and measured seconds of one training
    step (forward + backward) of the same U-Net on latents and on pixels."""
    import refdiff.nn.attention as A
    import refdiff.nn.blocks as B
    from refdiff.nn import UNet

    flops = [0]
    conv0, lin0, att0, proj0 = B.conv2d_forward, B.linear_forward, A.attention_forward, A._proj_f

    def conv(x, w, b, **kw):
        out, c = conv0(x, w, b, **kw)
        flops[0] += 2 * out.size * w.shape[1] * w.shape[2] * w.shape[3]
        return out, c

    def lin(x, w, b):
        flops[0] += 2 * x.shape[0] * w.shape[0] * w.shape[1]
        return lin0(x, w, b)

    def att(q, k, v, *a, **kw):
        flops[0] += 2 * q.size * k.shape[-2] + 2 * q.shape[0] * np.prod(q.shape[1:-1]) * k.shape[-2] * v.shape[-1]
        return att0(q, k, v, *a, **kw)

    def proj(P, name, x):
        flops[0] += 2 * x.shape[0] * x.shape[1] * P[name + ".w"].size
        return proj0(P, name, x)

    rows = {}
    cond = prompt_cond(["a thick three in the top left"] * batch, tok, text)
    B.conv2d_forward, B.linear_forward, A.attention_forward, A._proj_f = conv, lin, att, proj
    try:
        for name, (ch, size) in {"latent 4x4x%d" % args.latent_channels: (args.latent_channels, 4),
                                 "pixel 16x16x1": (1, 16)}.items():
            net = UNet(unet_config(args, tok, ch, size, text))
            P = net.init_params(np.random.default_rng(0))
            x = np.random.default_rng(1).standard_normal((batch, ch, size, size)).astype(np.float32)
            t = np.full(batch, 500.0)
            flops[0] = 0
            out, cache = net.forward(P, x, t, cond)
            f = flops[0]
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                out, cache = net.forward(P, x, t, cond)
                net.backward(P, cache, out)
                times.append(time.perf_counter() - t0)
            rows[name] = {"forward_gflops": f / 1e9, "step_seconds": float(np.median(times)), "batch": batch,
                          "params": net.num_params()}
    finally:
        B.conv2d_forward, B.linear_forward, A.attention_forward, A._proj_f = conv0, lin0, att0, proj0
    return rows


def train_unet(net, x, cond, steps, out_dir, args, progress):
    """The denoiser on ``x`` (scaled latents or pixels) with condition dropout 0.15 (the
    empty prompt's condition replaces the prompt's), v-prediction, EMA; returns the loaded
    EMA model."""
    import shutil

    import refdiff
    from refdiff.train import train

    if (out_dir / "checkpoint.npz").exists():
        shutil.rmtree(out_dir)
    train(net, (np.asarray(x, dtype=np.float64), cond), schedule=refdiff.make_schedule("cosine", 1000), steps=steps,
          batch_size=64, lr=2e-3, target="v_prediction", ema_decay=0.995, ema_warmup=True, cond_dropout=0.15,
          lr_decay="cosine", warmup_steps=min(100, steps // 10), grad_clip=1.0, eval_size=0, progress=progress,
          out_dir=out_dir, seed=args.seed)
    return refdiff.load(out_dir)[0]


def evaluate(model, ae, aeP, scaling, scales, splits, feat_seen, classify, tok, args, text):
    """Per guidance scale: the fraction of samples with all attributes right on each split
    and the Frechet distance of the seen-split samples' classifier features to real images."""
    from refdiff.metrics import frechet_distance

    rows = []
    for w in scales:
        r = np.random.default_rng([args.seed, 20])
        row = {"w": w}
        for split, td in splits:
            n = args.n_eval
            imgs = sample_prompts(model, ae, aeP, scaling, td["captions"][:n], w, tok, args, r, False, text)
            pred, feat = classify(imgs)
            row[split] = adherence(pred, td["digit"][:n], td["position"][:n], td["weight"][:n])
            if split == "seen":
                row["frechet"] = frechet_distance(feat, feat_seen) if n > 2 else float("nan")
        rows.append(row)
        print(f"  w = {w:3.1f}: all attributes right {row['seen']:.3f} (seen combos), {row['heldout']:.3f} "
              f"(held-out combos); Frechet distance {row['frechet']:.3f}")
    return rows


def pixel_model(data, cond, steps, splits, feat_seen, classify, tok, args, text, times, out, progress):
    """The same U-Net trained on the 16x16 pixels for ``steps`` steps and scored like the
    latent one at ``args.pixel_scales``."""
    from refdiff.nn import UNet

    t0 = time.perf_counter()
    pnet = UNet(unet_config(args, tok, 1, 16, text))
    pmodel = train_unet(pnet, data["x"], cond, steps, out / "pixel_unet", args, progress)
    times["pixel_unet"] = time.perf_counter() - t0
    print(f"pixel U-Net: {pnet.num_params()} parameters, {steps} steps ({times['pixel_unet']:.0f} s; the latent "
          f"U-Net: {args.unet_steps} steps, {times['unet']:.0f} s)")
    t0 = time.perf_counter()
    prows = evaluate(pmodel, None, None, None, args.pixel_scales, splits, feat_seen, classify, tok, args, text)
    times["pixel_eval"] = time.perf_counter() - t0
    return {"steps": steps, "train_seconds": times["pixel_unet"], "latent_steps": args.unet_steps,
            "latent_train_seconds": times["unet"], "budget": "same wall time as the latent U-Net (steps from the "
            "measured per-step time ratio)" if args.pixel_steps is None else "steps given", "guidance": prows}


def adherence(pred, d, p, wt):
    return float(np.mean((pred["digit"] == d) & (pred["position"] == p) & (pred["weight"] == wt)))


def main(argv=None):
    t_start = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.tiny:
        args = tiny_args(args)
    progress = not args.tiny
    import refdiff
    from refdiff.captions import VOCAB, all_combinations, caption, captioned_digits
    from refdiff.latent import latent_scaling, scale_latents
    from refdiff.nn import UNet
    from refdiff.nn.text import Tokenizer
    from refdiff.txt2img import save_autoencoder, save_text_encoder

    out = _common.out_dir(args.out)
    tok = Tokenizer(VOCAB, 10)
    data = captioned_digits(args.n_train, np.random.default_rng([args.seed, 0]))
    test_seen = captioned_digits(max(args.n_eval, 64), np.random.default_rng([args.seed, 10]), source="test")
    test_held = captioned_digits(max(args.n_eval, 64), np.random.default_rng([args.seed, 11]), split="heldout",
                                 source="test")
    summary, times = {"args": vars(args)}, {}

    t0 = time.perf_counter()
    ae, aeP = train_vae(data["x"], args, progress)
    rec = ae.decode(aeP, ae.encode(aeP, test_seen["x"].astype(np.float32)))
    z = ae.encode(aeP, data["x"].astype(np.float32))
    scaling = latent_scaling(z, "ldm")
    times["vae"] = time.perf_counter() - t0
    summary["vae"] = {"test_mse": float(np.mean((rec - test_seen["x"]) ** 2)), "scaling_factor": scaling[0]}
    print(f"VAE: test reconstruction MSE {summary['vae']['test_mse']:.4f} (pixels in [-1, 1]), LDM scaling factor "
          f"{scaling[0]:.4f} ({times['vae']:.0f} s)")

    t0 = time.perf_counter()
    classify = train_attribute_classifier(data, args, progress)
    pr, feat_seen = classify(test_seen["x"])
    summary["classifier_accuracy_test_seen"] = adherence(pr, test_seen["digit"], test_seen["position"], test_seen["weight"])
    pr, _ = classify(test_held["x"])
    summary["classifier_accuracy_test_heldout"] = adherence(pr, test_held["digit"], test_held["position"],
                                                            test_held["weight"])
    times["classifier"] = time.perf_counter() - t0
    print(f"attribute classifier: all-attributes accuracy on real test images {summary['classifier_accuracy_test_seen']:.3f}"
          f" (seen combos), {summary['classifier_accuracy_test_heldout']:.3f} (held-out combos)")

    t0 = time.perf_counter()
    tenc, ienc, cg, clip_loss, B = train_clip(data, tok, args, progress)
    zs = zero_shot(tenc, ienc, cg, tok, test_held["x"])
    acc = {k: float(np.mean(zs[:, i] == test_held[k])) for i, k in enumerate(("digit", "position", "weight"))}
    times["clip"] = time.perf_counter() - t0
    summary["clip"] = {"final_loss": clip_loss, "chance_log_batch": float(np.log(B)), "zero_shot_heldout": acc}
    print(f"toy CLIP: contrastive loss {clip_loss:.3f} vs chance log({B}) = {np.log(B):.3f}; zero-shot accuracy on "
          f"held-out-combination images: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))

    text = (tenc, cg["text"]) if args.context == "clip" else None  # frozen from here on
    summary["context"] = args.context
    summary["benchmark"] = benchmark_latent_vs_pixel(tok, args, text, batch=16 if args.tiny else 64,
                                                     reps=1 if args.tiny else 3)
    for k, v in summary["benchmark"].items():
        print(f"  {k}: {v['forward_gflops']:.3f} GFLOP forward, {v['step_seconds'] * 1e3:.0f} ms per training step "
              f"(batch {v['batch']}, forward + backward)")

    t0 = time.perf_counter()
    cond = prompt_cond(data["captions"], tok, text)
    net = UNet(unet_config(args, tok, args.latent_channels, 4, text))
    run = out / "model"
    model = train_unet(net, scale_latents(z, *scaling), cond, args.unet_steps, run / "unet", args, progress)
    save_autoencoder(run / "autoencoder.npz", ae, aeP, scaling_factor=scaling[0], shift=scaling[1], tokenizer=tok)
    if text is not None:
        save_text_encoder(run / "text_encoder.npz", tenc, cg["text"], tok)
    times["unet"] = time.perf_counter() - t0
    print(f"latent U-Net ({args.context} context): {net.num_params()} parameters, {args.unet_steps} steps "
          f"({times['unet']:.0f} s)")

    t0 = time.perf_counter()
    splits = (("seen", test_seen), ("heldout", test_held))
    rows = evaluate(model, ae, aeP, scaling, args.scales, splits, feat_seen, classify, tok, args, text)
    times["eval"] = time.perf_counter() - t0
    summary["guidance"] = rows

    bench = list(summary["benchmark"].values())
    px_steps = args.pixel_steps
    if px_steps is None:
        px_steps = max(1, round(args.unet_steps * bench[0]["step_seconds"] / bench[1]["step_seconds"]))
    if px_steps:
        summary["pixel"] = pixel_model(data, cond, px_steps, splits, feat_seen, classify, tok, args, text, times,
                                       out, progress)

    plt = _common.pyplot()
    show = [(3, 0, 1), (7, 3, 0), (1, 1, 1), (5, 2, 0)] + [HELD for HELD in ((0, 1, 0), (6, 3, 1))]
    ncol = 6
    r = np.random.default_rng([args.seed, 30])
    fig, axes = plt.subplots(len(show), 1, figsize=(ncol * 0.9 + 2.5, len(show) * 1.1))
    for ax, c in zip(axes, show):
        prompt = caption(*c)
        imgs = sample_prompts(model, ae, aeP, scaling, [prompt] * ncol, args.chosen_scale, tok, args, r, False, text)
        ax.imshow(_common.image_grid(imgs, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        tag = "held out" if c in set(all_combinations("heldout")) else "seen"
        ax.set_title(f'"{prompt}" ({tag})', fontsize=8, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"toy latent diffusion, text to image, CFG w = {args.chosen_scale:g}", fontsize=9)
    fig.tight_layout()
    _common.save(fig, out / "toy_sd_prompts.png")

    prompt = caption(3, 0, 1)
    adv = clip_ascent(tenc, ienc, cg, tok, prompt, 6, 10 if args.tiny else 300, np.random.default_rng([args.seed, 40]))
    diff = sample_prompts(model, ae, aeP, scaling, [prompt] * 6, args.chosen_scale, tok, args,
                          np.random.default_rng([args.seed, 41]), False, text)
    real = test_seen["x"][(test_seen["digit"] == 3) & (test_seen["position"] == 0) & (test_seen["weight"] == 1)][:6]
    adv_rows = {}
    for name, imgs in (("CLIP ascent", adv), ("diffusion", diff), ("real", real)):
        if len(imgs) == 0:
            continue
        pred, _ = classify(imgs)
        n = len(imgs)
        adv_rows[name] = {"clip_score": float(np.mean(clip_score(tenc, ienc, cg, tok, prompt, imgs))),
                          "attributes_right": adherence(pred, np.full(n, 3), np.zeros(n, int), np.ones(n, int))}
        print(f"  {name:12s}: toy-CLIP score {adv_rows[name]['clip_score']:.3f}, attribute classifier says all right "
              f"for {adv_rows[name]['attributes_right']:.2f}")
    summary["clip_adversarial"] = {"prompt": prompt, **adv_rows}
    fig, axes = plt.subplots(2, 1, figsize=(6, 2.6))
    for ax, (name, imgs) in zip(axes, (("gradient ascent on the toy-CLIP score", adv), ("latent diffusion", diff))):
        ax.imshow(_common.image_grid(imgs, nrow=1, fill=1.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        key = "CLIP ascent" if imgs is adv else "diffusion"
        ax.set_title(f"{name}: CLIP score {adv_rows[key]['clip_score']:.2f}, classifier all right "
                     f"{adv_rows[key]['attributes_right']:.0%}", fontsize=8, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f'"{prompt}"', fontsize=9)
    fig.tight_layout()
    _common.save(fig, out / "toy_sd_clip_adversarial.png")

    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    ws = [row["w"] for row in rows]
    axes[0].plot(ws, [row["seen"] for row in rows], "o-", label="seen combinations")
    axes[0].plot(ws, [row["heldout"] for row in rows], "s--", label="held-out combinations")
    axes[0].set_title("all three attributes right (held-out classifier)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(ws, [row["frechet"] for row in rows], "o-")
    axes[1].set_title("Frechet distance to real images (classifier features)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("guidance scale w ('w' convention)")
    fig.tight_layout()
    _common.save(fig, out / "toy_sd_guidance.png")

    summary["seconds"] = {**times, "total": time.perf_counter() - t_start}
    (out / "toy_sd.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"wrote {out / 'toy_sd.json'}; wall time {summary['seconds']['total']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
