"""LoRA fine-tunes of the 2D mixture model at r = 1, 2, 4, 8 against full fine-tuning,
MATH.md (19.5), (19.6).

A base MLP denoiser is trained on the 8 Gaussians; it is then fine-tuned, with the same
number of Adam steps and learning rate, to the same mixture rotated by 22.5 degrees: every
parameter (full fine-tuning) or LoRA adapters (alpha = r, PEFT init) on the hidden layers,
the time-embedding layer and the per-layer embedding projections, base frozen.  Quality:
sliced Wasserstein of DDIM samples to fresh samples of the rotated mixture, next to the
floor SW between two independent target sample sets of the same size.

Writes lora_mixture.png and lora_mixture.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from refdiff import make_schedule, sample, timesteps  # noqa: E402
from refdiff.data import mixture_parameters, sample_mixture  # noqa: E402
from refdiff.metrics import sliced_wasserstein  # noqa: E402
from refdiff.nn import MLP, MLPConfig  # noqa: E402
from refdiff.nn.lora_model import LoRAAdapter, LoRAConfig, lora_grads, lora_init, lora_params  # noqa: E402
from refdiff.train import train  # noqa: E402
from refdiff.training import fit, init_state  # noqa: E402

TARGETS = ("layer?", "layer?.emb", "temb")


def rotated_mixture(angle):
    w, mu, var = mixture_parameters("8gaussians")
    c, s = np.cos(angle), np.sin(angle)
    return w, mu @ np.array([[c, s], [-s, c]]), var


def finetune(net, base, data, schedule, steps, rng, r=None, lr=2e-3, batch=256):
    """Full fine-tuning (r None) or LoRA of rank r; returns (effective params, trainable count)."""
    ab = schedule.alpha_bars
    cfg = None if r is None else LoRAConfig(r=r, alpha=float(r), targets=TARGETS)
    ad = None if r is None else lora_init(base, cfg, rng)
    groups = {"base": base, "train": dict(base) if r is None else dict(ad.weights)}

    def eff(g):
        return g["train"] if r is None else lora_params(g["base"], LoRAAdapter(g["train"], cfg, cfg.scaling))

    def next_batch(rr):
        x0 = data[rr.integers(0, len(data), batch)]
        t = rr.integers(0, len(ab), batch)
        eps = rr.standard_normal(x0.shape)
        xt = np.sqrt(ab[t])[:, None] * x0 + np.sqrt(1 - ab[t])[:, None] * eps
        return xt.astype(np.float32), t.astype(np.float32), eps.astype(np.float32)

    def loss_fn(g, b, rr):
        xt, t, eps = b
        P = eff(g)
        out, cache = net.forward(P, xt, t)
        grads, _ = net.backward(P, cache, 2 * (out - eps) / out.size)
        if r is not None:
            grads = lora_grads(grads, LoRAAdapter(g["train"], cfg, cfg.scaling))
        return float(np.mean((out - eps) ** 2)), {"train": grads}

    st = fit(loss_fn, init_state(groups, {"train": True}, rng, steps), next_batch, steps=steps,
             trainable={"train": True}, lr=lr, progress=False)
    return eff(st.groups), int(sum(v.size for v in st.groups["train"].values()))


def main(argv=None):
    args = _common.parser(__doc__.splitlines()[0], "figures/adapters").parse_args(argv)
    out = _common.out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    steps_base, steps_ft, n = (20, 10, 64) if args.tiny else (4000, 1500, 2000)
    schedule = make_schedule("linear", 1000)
    net = MLP(MLPConfig(dim=2, hidden=128, layers=3))
    src = sample_mixture(*mixture_parameters("8gaussians"), 20000, rng)[0]
    tgt_params = rotated_mixture(np.pi / 8)
    tgt = sample_mixture(*tgt_params, 20000, rng)[0]
    base = train(net, src, schedule=schedule, steps=steps_base, batch_size=256, lr=2e-3, seed=args.seed,
                 ema_decay=0.995, progress=False).ema_params
    ts = timesteps(1000, 50, "leading")
    x_T = rng.standard_normal((n, 2)).astype(np.float32)

    def gen(P):
        return np.asarray(sample(net.as_model(P), x_T, schedule, ts, "ddim", rng=rng, progress=False), dtype=np.float64)

    ref, ref2 = sample_mixture(*tgt_params, n, rng)[0], sample_mixture(*tgt_params, n, rng)[0]
    sw = lambda x: sliced_wasserstein(x, ref, 256, np.random.default_rng(1))  # noqa: E731
    report = {"setup": {"steps_base": steps_base, "steps_finetune": steps_ft, "n_samples": n, "lr": 2e-3,
                        "targets": list(TARGETS), "rotation_deg": 22.5},
              "floor_sw_target_vs_target": sw(ref2), "base": {"sw": sw(gen(base)), "trainable": 0}}
    samples = {"base": gen(base)}
    for name, r in [("full", None), ("r1", 1), ("r2", 2), ("r4", 4), ("r8", 8)]:
        P, count = finetune(net, base, tgt, schedule, steps_ft, rng, r)
        samples[name] = gen(P)
        report[name] = {"sw": sw(samples[name]), "trainable": count}
        print(f"{name}: SW to target {report[name]['sw']:.4f}, trainable parameters {count}")
    print(f"floor (target vs target, n = {n}): {report['floor_sw_target_vs_target']:.4f}; base: {report['base']['sw']:.4f}")
    (out / "lora_mixture.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'lora_mixture.json'}")
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 2.8))
    for ax, (name, x) in zip(axes, samples.items()):
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
        ax.scatter(x[:, 0], x[:, 1], s=1)
        ax.set_title(f"{name}  SW {report[name]['sw']:.3f}", fontsize=8)
        ax.set_aspect("equal")
        ax.set_axis_off()
    _common.save(fig, out / "lora_mixture.png")
    return report


if __name__ == "__main__":
    main()
