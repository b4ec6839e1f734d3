"""A toy SD3 (the MMDiT of refdiff.nn.mmdit) against a toy SD (the U-Net with cross-attention)
on captioned 8x8 digits: prompt adherence on seen and held-out caption combinations.

Captions come from a small grammar (no pretrained text encoder exists in refdiff yet; each
model learns its own token table): ``[start] <digit word>`` (the digit as it is) or
``[start] inverted <digit word>`` (the image negated), padded to 3 tokens with a key mask.
Token ids: 0 start, 1..10 the words "zero".."nine", 11 "inverted".  The combinations
"inverted three" and "inverted seven" are never shown in training (held out).  Both models
are velocity fields trained with flow matching (MATH.md (18.16)) and SD3's logit-normal times
on pixels, with 15 % of the prompts replaced by the empty prompt, the same steps, batch,
optimiser; sampled with the same Euler flow solver and classifier-free guidance.

Adherence of a sample to its caption: its style is right (mean pixel > 0 iff "inverted") and
a separately trained digit classifier (applied to the un-inverted image) reads the asked digit.

    python examples/dit_mmdit_captions.py --steps 3000 --out runs/captions
    python examples/dit_mmdit_captions.py --tiny --out /tmp/x
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

INVERTED, HELD_OUT = 11, ((1, 3), (1, 7))  # (style, digit): style 1 = inverted


def captions(digits, styles):
    """Token ids (N, 3) and mask (N, 3) of the grammar (module docstring)."""
    n = digits.shape[0]
    ids = np.zeros((n, 3), dtype=np.int64)
    mask = np.ones((n, 3), dtype=bool)
    plain = styles == 0
    ids[plain, 1], mask[plain, 2] = digits[plain] + 1, False
    ids[~plain, 1], ids[~plain, 2] = INVERTED, digits[~plain] + 1
    return {"tokens": ids, "token_mask": mask}


def build_parser():
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=40, help="MMDiT width (168k parameters at 40, depth 3)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base-channels", type=int, default=16, help="U-Net width (177k parameters at 16)")
    p.add_argument("--scale", type=float, default=3.0, help="CFG scale ('w' convention)")
    p.add_argument("--per-combo", type=int, default=20)
    p.add_argument("--sample-steps", type=int, default=30)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--nets", nargs="+", default=["mmdit", "unet"], choices=["mmdit", "unet"])
    return p


def euler_guided(net, params, cond, null, x, steps, w):
    """Euler on dx/dt = v from t = 1 (noise) to 0 (data), v = v_u + w (v_c - v_u)."""
    ts = np.linspace(1.0, 0.0, steps + 1)
    for t, t_next in zip(ts[:-1], ts[1:]):
        tt = np.full(x.shape[0], t)
        vc = net.apply(params, x, tt, cond)
        vu = net.apply(params, x, tt, null)
        x = x + (t_next - t) * (vu + w * (vc - vu))
    return x


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.width, args.depth, args.base_channels = 3, 16, 16, 1, 8
        args.per_combo, args.sample_steps, args.classifier_steps = 1, 2, 20
    from refdiff.flow_matching import fm_loss_fn
    from refdiff.nn import UNet, UNetConfig, classifier
    from refdiff.nn.mmdit import MMDiT, MMDiTConfig
    from refdiff.train import train_digit_classifier
    from refdiff.training import fit, init_state

    out = _common.out_dir(args.out)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    clf, clf_acc = train_digit_classifier(steps=args.classifier_steps, seed=args.seed, x_train=x_tr, y_train=y_tr,
                                          x_test=x_te, y_test=y_te)
    nets = {"mmdit": lambda: MMDiT(MMDiTConfig(width=args.width, depth=args.depth, heads=4, vocab_size=12,
                                               max_text_len=3, text_dim=32)),
            "unet": lambda: UNet(UNetConfig(base_channels=args.base_channels, channel_mults=(1, 2), attention=False,
                                            groups=max(1, min(8, args.base_channels // 2)), cross_attention=(1, "mid"),
                                            vocab_size=12, context_len=3, context_dim=32, heads=4,
                                            time_scale=1000.0))}
    combos = [(s, d) for s in (0, 1) for d in range(10)]
    rows = []
    for key in args.nets:
        net = nets[key]()
        spec, lf = net.cond_spec, fm_loss_fn(net, times="logit_normal", cond_key="cond")

        def next_batch(rng):
            """A batch of captioned images; a held-out combination drawn is shown plain instead."""
            idx, sty = rng.integers(0, x_tr.shape[0], args.batch_size), rng.integers(0, 2, args.batch_size)
            for s, d in HELD_OUT:
                sty[(sty == s) & (y_tr[idx] == d)] = 0
            x0 = np.where(sty[:, None, None, None] == 1, -x_tr[idx], x_tr[idx]).astype(np.float32)
            c = spec.drop(captions(y_tr[idx], sty), 0.15, rng, args.batch_size, np, np.float32)
            return x0, None, c

        state = init_state({"params": net.init_params(np.random.default_rng(args.seed))}, {"params": True},
                           np.random.default_rng([args.seed, 1]), args.steps)
        t0 = time.perf_counter()
        state = fit(lf, state, next_batch, steps=args.steps, trainable={"params": True}, lr=args.lr,
                    warmup_steps=min(100, args.steps // 10), lr_decay="cosine", grad_clip=1.0, progress=False)
        t_train = time.perf_counter() - t0
        params = state.groups["params"]
        rng = np.random.default_rng([args.seed, 5])
        per = {}
        for s, d in combos:
            n = args.per_combo
            cond = captions(np.full(n, d), np.full(n, s))
            null = spec.null(cond, n, np, np.float32)
            x = euler_guided(net, params, cond, null, rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
                             args.sample_steps, args.scale).astype(np.float64)
            inv = x.reshape(n, -1).mean(axis=1) > 0
            pred = classifier.classify(clf, np.clip(np.where(inv[:, None, None, None], -x, x), -1, 1))
            per[(s, d)] = float(np.mean((inv == (s == 1)) & (pred == d)))
        seen = [v for k, v in per.items() if k not in HELD_OUT]
        held = [per[k] for k in HELD_OUT]
        rows.append({"net": key, "params": net.num_params(), "train_seconds": t_train,
                     "final_loss": float(np.mean(state.losses[-100:])), "adherence_seen": float(np.mean(seen)),
                     "adherence_held_out": float(np.mean(held)),
                     "per_combo": {f"{'inverted ' if s else ''}{d}": v for (s, d), v in per.items()}})
        print({k: v for k, v in rows[-1].items() if k != "per_combo"})
    table = ("| model | parameters | training wall time (s) | final FM loss | adherence, seen captions | "
             "adherence, held-out (inverted 3, inverted 7) |\n|---|---|---|---|---|---|\n")
    table += "".join(f"| {r['net']} | {r['params']} | {r['train_seconds']:.0f} | {r['final_loss']:.3f} | "
                     f"{r['adherence_seen']:.3f} | {r['adherence_held_out']:.3f} |\n" for r in rows)
    setup = (f"{name}; {args.steps} AdamW steps of batch {args.batch_size}, lr {args.lr} cosine, flow matching with "
             f"logit-normal times, 15 % empty prompts; Euler {args.sample_steps} steps, CFG w = {args.scale}; "
             f"{args.per_combo} samples per caption; classifier test accuracy {clf_acc:.3f}")
    print(table + setup)
    (out / "dit_mmdit_captions.md").write_text(table + "\n" + setup + "\n")
    (out / "dit_mmdit_captions.json").write_text(json.dumps({"setup": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
