"""Temporal consistency of a trained video U-Net's unconditional clips, sampler by sampler.

Loads the parameters examples/video.py trained (``--params``, given with that run's
network flags, ``--schedule`` and ``--target``: the parameters file does not hold them) and draws ``--n-clips`` unconditional clips with each ``sampler:steps`` of
``--samplers``, every one from the same initial noise and generator seed
(``default_rng([seed, 2])``, the draws of examples/video.py's own unconditional clips, so
a sampler's row equals that script's ``generated_all_frames_agree`` for the same
settings).  Prints and writes (``video_samplers.json``, ``video_samplers.png``) the
fraction of clips whose 8 frames all get one digit from the crop classifier and the
fraction moving at a constant speed within 0.5 px (MATH.md (22.8)), with binomial
standard errors.

The comparison separates the number of steps from the sampler's stochasticity: with a
trained (imperfect) denoiser, the deterministic probability-flow samplers (DDIM,
DPM-Solver++ 2M) carry an error made at one step along to the end, while the stochastic
ones (DPM-Solver++ 2M SDE, Euler ancestral, DDPM) inject fresh noise each step, and the
denoiser's pull towards the data at the next steps shrinks part of the earlier errors.

Measured (fourth session, 2026-12-01, load ~2; the 36000-step parameters of the README,
``--jattn-levels 1``; 200 clips from another generator seed, the runs that chose the
sampler): DPM-Solver++ 2M 25 steps 86.0 % of clips on one digit (50 steps gave the same as
25 at 17000 steps: 50.0 % against 50.5 %), DPM-Solver++ 2M SDE 25 / 50 / 100 steps
89.0 / 93.0 / 95.0 %, DPM-Solver++ 3M SDE 50 steps 91.0 %, Euler ancestral 50 steps
92.5 %, DDPM 100 steps 90.0 %.  On the single-command run's 44000-step parameters
(400 clips, seed 0, docs/figures/video_samplers.json): DPM-Solver++ 2M 25 / 100 steps 90.5 /
93.0 %, DDIM 100 steps 92.2 %, DPM-Solver++ 2M SDE 25 / 50 / 100 steps 94.5 / 95.8 / 93.5 %,
Euler ancestral 100 steps 93.5 % (README, Video at toy scale).

Run (after examples/video.py has written the parameters)::

    OPENBLAS_NUM_THREADS=1 python examples/video_samplers.py --params vunet.npz \\
        --jattn-levels 1 --width 24 --schedule cosine --target v_prediction --n-clips 400
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import video as V  # noqa: E402

DEFAULT_SAMPLERS = "dpmpp_2m:25,dpmpp_2m:100,ddim:100,dpmpp_2m_sde:25,dpmpp_2m_sde:50,dpmpp_2m_sde:100," \
                   "euler_ancestral:100"
STOCHASTIC = {"ddpm", "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_2m_sde_eta", "dpmpp_3m_sde", "euler_maruyama", "pc", "lcm"}


def build_parser():
    p = V.build_parser()
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--samplers", default=DEFAULT_SAMPLERS, help="comma-separated sampler:steps "
                   "(refdiff.sampler_methods())")
    p.set_defaults(n_clips=400)
    return p


def parse_specs(text):
    """``"a:25,b:50"`` -> ``[("a", 25), ("b", 50)]``; unknown samplers and bad step counts
    are a ValueError naming the item."""
    import refdiff

    methods, specs = refdiff.sampler_methods(), []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, _, steps = item.partition(":")
        if name not in methods:
            raise ValueError(f"--samplers: unknown sampler {name!r} in {item!r}; valid: {', '.join(sorted(methods))}")
        if name.startswith("flow_"):
            raise ValueError(f"--samplers: {name!r} integrates a flow-matching velocity, not this diffusion model")
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"--samplers: {item!r} must be sampler:steps with steps an integer >= 1")
        specs.append((name, int(steps)))
    if not specs:
        raise ValueError("--samplers: give at least one sampler:steps")
    return specs


def main(argv=None):
    args = build_parser().parse_args(argv)
    specs = parse_specs(args.samplers)
    args.arch = "unet"
    if args.width is None:
        args.width = 24
    if args.tiny:
        args.steps, args.n_clips, args.classifier_steps, args.width = 3, 4, 20, 8
        specs = list(dict.fromkeys((n, min(s, 3)) for n, s in specs))
    elif not (args.params and Path(args.params).exists()):
        raise SystemExit("--params must name the .npz examples/video.py wrote (or use --tiny)")
    out = _common.out_dir(args.out)
    import refdiff
    from refdiff.nn.video import video_as_model
    from refdiff.video_data import moving_digit_clips, speed_consistency

    digits = [int(d) for d in args.digits.split(",")]
    sched, cfg = refdiff.make_schedule(args.schedule, 1000), V.unet_config(args)
    P = V.train_or_load(args, lambda r, n: moving_digit_clips(n, r, digits=digits)[0], cfg, sched)[0]
    cls, _ = V.crop_classifier(args, digits)
    model, rows = video_as_model(P, cfg, args.target), []
    for name, steps in specs:
        g = np.random.default_rng([args.seed, 2])
        t0 = time.time()
        gen = refdiff.sample(model, g.standard_normal((args.n_clips, 8, 8, 8)), sched,
                             refdiff.timesteps(1000, steps, "trailing"), name, rng=g, progress=not args.tiny,
                             prediction_type=args.target)
        gen = np.clip(np.asarray(gen, dtype=np.float64), -1, 1)
        dev = speed_consistency(gen)
        agree, speed = V.consistency(cls, gen)[0], float(np.mean(dev <= 0.5))
        se = float(np.sqrt(agree * (1 - agree) / args.n_clips))
        rows.append({"sampler": name, "steps": steps, "stochastic": name in STOCHASTIC, "all_frames_agree": agree,
                     "all_frames_agree_se": se, "speed_within_0.5px": speed,
                     "speed_deviation_median": float(np.median(dev)), "seconds": round(time.time() - t0, 1)})
        print(f"{name:>16} {steps:4d} steps ({'SDE' if name in STOCHASTIC else 'ODE'}): all frames one digit "
              f"{agree:.3f} +- {se:.3f}, constant speed {speed:.3f} ({rows[-1]['seconds']} s)", flush=True)
    res = {"n_clips": args.n_clips, "rows": rows, "config": vars(args) | {"out": str(args.out)}}
    (out / "video_samplers.json").write_text(json.dumps(res, indent=1, default=str))
    _figure(out, rows, args.n_clips)
    return res


def _figure(out, rows, n):
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    y = [r["all_frames_agree"] for r in rows]
    err = [2 * r["all_frames_agree_se"] for r in rows]
    ax.bar(range(len(rows)), y, yerr=err, capsize=3,
           color=["tab:orange" if r["stochastic"] else "tab:blue" for r in rows])
    ax.axhline(0.9, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(rows)), [f"{r['sampler']}\n{r['steps']}" for r in rows], fontsize=7)
    ax.set_ylim(max(0.0, min(y) - 0.15), 1.0)
    ax.set_ylabel("all 8 frames one digit")
    ax.set_title(f"{n} unconditional clips, same noise; blue: ODE, orange: SDE; bars +- 2 s.e.", fontsize=8)
    _common.save(fig, out / "video_samplers.png")


if __name__ == "__main__":
    main()
