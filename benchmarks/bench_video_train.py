"""Training update of the 8x8 video U-Net (examples/video.py's network), the whole batch
in one process against ``parallel`` batch slices on worker processes
(``refdiff.video_train.train_clip_denoiser(parallel=...)``, BatchProcesses over ClipNet).

Each round times ``--steps`` updates of each variant (after one untimed update that starts
the workers and warms the caches), alternating variant order round by round; the table
gives each variant's best round (ms per update, its range over rounds) and its ratio to
the serial run, with the per-round ratios.  BLAS is pinned to one thread (threadpoolctl)
in this process; the workers pin their own.  There is no PyTorch version of this network,
so the alternative a user has is the serial run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_video_train.py            # width 24, batch 32
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_video_train.py --tiny     # seconds (the test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--jattn-levels", default="1", help="levels with joint space-time attention (examples/video.py)")
    p.add_argument("--parallel", default="2", help="comma-separated slice counts to time beside the serial run")
    p.add_argument("--steps", type=int, default=8, help="timed updates per variant and round")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (the smoke test)")
    args = p.parse_args(argv)
    if args.tiny:
        args.width, args.batch, args.steps, args.repeats = 4, 4, 1, 1
    par = [int(s) for s in args.parallel.split(",") if s.strip()]
    if any(k < 2 for k in par) or args.steps < 1 or args.repeats < 1:
        p.error("--parallel takes counts >= 2; --steps and --repeats must be >= 1")

    import refdiff
    from refdiff.nn.video_unet import VideoUNetConfig
    from refdiff.video_train import train_clip_denoiser
    from refdiff.video_data import moving_digit_clips

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        pass
    jl = tuple(int(s) for s in args.jattn_levels.split(",") if s.strip())
    cfg = VideoUNetConfig(frames=8, size=8, width=args.width, mults=(1, 2, 2), groups=max(1, min(8, args.width // 4)),
                          heads=4 if args.width % 4 == 0 else 1, tattn_levels=(1, 2), jattn_levels=jl, first_frame=True)
    sched = refdiff.make_schedule("cosine", 1000)
    clips = lambda r, n: moving_digit_clips(n, r, digits=[0, 1, 4, 7])[0]  # noqa: E731
    kw = dict(batch_size=args.batch, target="v_prediction", first_drop=0.7)

    def per_update(k):
        """ms per update of a run of 1 + steps updates, less its first update's time."""
        t0 = time.perf_counter()
        train_clip_denoiser(clips, cfg, sched, steps=1, parallel=k, **kw)
        t1 = time.perf_counter()
        train_clip_denoiser(clips, cfg, sched, steps=1 + args.steps, parallel=k, **kw)
        t2 = time.perf_counter()
        return 1e3 * ((t2 - t1) - (t1 - t0)) / args.steps

    variants = [1] + par
    for k in variants:  # untimed: imports, first calls
        train_clip_denoiser(clips, cfg, sched, steps=1, parallel=k, **kw)
    times = {k: [] for k in variants}
    for r in range(args.repeats):
        for k in (variants if r % 2 == 0 else variants[::-1]):
            times[k].append(per_update(k))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"video U-Net width {args.width}, joint attention at {jl}, batch {args.batch} clips of 8x8x8, "
          f"numpy {np.__version__}, {os.cpu_count()} cores; load after {load}")
    print(f"{args.repeats} alternating rounds of {args.steps} updates (each less a 1-update run's time: start-up "
          "and first-call costs removed)")
    print("| variant | ms/update | range | ratio to serial | per-round ratios |")
    print("|---|---|---|---|---|")
    rows = []
    for k in variants:
        ratios = [a / b for a, b in zip(times[k], times[1])]
        rows.append({"parallel": k, "best_ms": min(times[k]), "ratio": min(times[k]) / min(times[1])})
        name = "serial" if k == 1 else f"parallel={k}"
        print(f"| {name} | {min(times[k]):.0f} | {min(times[k]):.0f}-{max(times[k]):.0f} | "
              f"{min(times[k]) / min(times[1]):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")
    return rows


if __name__ == "__main__":
    main()
