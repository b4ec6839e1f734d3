"""An edge-map ControlNet on the 8x8 digits, MATH.md (19.8), (19.15): a base U-Net is trained
on the digits, then a ControlNet (base frozen) learns to follow toy-Canny edge maps
(``refdiff.controls.edge_map``: central-difference gradient magnitude above a threshold).
Edge agreement on held-out test digits: the IoU between the edge map of each sample and
its control, for the controlled model and for the base model (which ignores the control).

Writes controlnet_digits.png and controlnet_digits.json.
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
from refdiff.nn import UNet, UNetConfig  # noqa: E402
from refdiff.nn.controlnet import ControlNet, controlled_backward, controlled_forward, controlled_model  # noqa: E402
from refdiff.train import train  # noqa: E402
from refdiff.training import fit, init_state  # noqa: E402

THRESHOLD = 0.9  # edges on 25 % of the pixels; two random digits' maps have IoU 0.22


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0], "figures/adapters")
    p.add_argument("--steps-base", type=int, default=3000)
    p.add_argument("--steps-control", type=int, default=3000)
    p.add_argument("--n", type=int, default=200, help="held-out controls scored")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps_base, args.steps_control, args.n = 10, 10, 8
    out = _common.out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    x_tr, _, name = _common.eight_by_eight("train")
    x_te, _, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    schedule = make_schedule("cosine", 1000)
    ab = schedule.alpha_bars
    net = UNet(UNetConfig(base_channels=16, channel_mults=(1, 2), groups=4, attention=False))
    t0 = time.time()
    base = train(net, x_tr, schedule=schedule, steps=args.steps_base, batch_size=64, lr=2e-3, seed=args.seed,
                 ema_decay=0.995, lr_decay="cosine", grad_clip=1.0, progress=False).ema_params
    cn = ControlNet(net)
    C = cn.init_params(base, rng)
    e_tr = edge_map(x_tr, THRESHOLD).astype(np.float32)

    def next_batch(r):
        i = r.integers(0, len(x_tr), 64)
        t = r.integers(0, len(ab), 64)
        eps = r.standard_normal((64, 1, 8, 8))
        xt = np.sqrt(ab[t])[:, None, None, None] * x_tr[i] + np.sqrt(1 - ab[t])[:, None, None, None] * eps
        return xt.astype(np.float32), e_tr[i], t.astype(np.float32), eps.astype(np.float32)

    def loss_fn(groups, b, r):
        xt, ctrl, t, eps = b
        br = [(cn, groups["control"], ctrl, np.ones(cn.num_residuals))]
        o, cache = controlled_forward(net, groups["base"], br, xt, t)
        (g,), _, _ = controlled_backward(net, groups["base"], br, cache, 2 * (o - eps) / o.size)
        return float(np.mean((o - eps) ** 2)), {"control": g}

    st = fit(loss_fn, init_state({"base": base, "control": C}, {"control": True}, rng, args.steps_control),
             next_batch, steps=args.steps_control, trainable={"control": True}, lr=1e-3, progress=False)
    C = st.groups["control"]
    t_train = time.time() - t0
    idx = rng.choice(len(x_te), args.n, replace=False)
    ctrl = edge_map(x_te[idx], THRESHOLD).astype(np.float32)
    ts = timesteps(1000, 50, "leading")
    x_T = rng.standard_normal((args.n, 1, 8, 8)).astype(np.float32)
    x_cn = np.asarray(sample(controlled_model(net, base, [(cn, C, ctrl)]), x_T, schedule, ts, "ddim", rng=rng,
                             progress=False), dtype=np.float64)
    x_b = np.asarray(sample(net.as_model(base), x_T, schedule, ts, "ddim", rng=rng, progress=False), dtype=np.float64)
    iou_cn = edge_iou(edge_map(np.clip(x_cn, -1, 1), THRESHOLD), ctrl)
    iou_b = edge_iou(edge_map(np.clip(x_b, -1, 1), THRESHOLD), ctrl)
    report = {"data": name, "steps_base": args.steps_base, "steps_control": args.steps_control, "n": args.n,
              "threshold": THRESHOLD, "train_seconds": round(t_train, 1),
              "iou_controlnet_mean": float(iou_cn.mean()), "iou_controlnet_se": float(iou_cn.std(ddof=1) / np.sqrt(args.n)),
              "iou_base_mean": float(iou_b.mean()), "iou_base_se": float(iou_b.std(ddof=1) / np.sqrt(args.n))}
    print(f"edge IoU on {args.n} held-out controls: ControlNet {report['iou_controlnet_mean']:.3f} "
          f"(se {report['iou_controlnet_se']:.3f}), base {report['iou_base_mean']:.3f} (se {report['iou_base_se']:.3f})")
    (out / "controlnet_digits.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'controlnet_digits.json'}")
    plt = _common.pyplot()
    k = min(8, args.n)
    fig, axes = plt.subplots(3, 1, figsize=(k * 0.8, 3.2))
    for ax, (img, title) in zip(axes, ((2 * ctrl[:k] - 1, "control (edges)"), (x_cn[:k], "ControlNet"),
                                        (x_b[:k], "base"))):
        ax.imshow(_common.image_grid(np.clip(img, -1, 1), 1, fill=0.0), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    _common.save(fig, out / "controlnet_digits.png")
    return report


if __name__ == "__main__":
    main()
