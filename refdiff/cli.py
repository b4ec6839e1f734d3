"""The ``refdiff`` command line.  Each subcommand lives in a small function; errors are
reported as one line on stderr with exit status 2, never as a traceback (out of memory and
NumPy's numerical warnings (overflow, invalid value: errors here) included; an unexpected exception, a bug, is one line with status
3, and ``REFDIFF_TRACEBACK=1`` shows its traceback).  No subcommand replaces the files of a
previous run unless asked: ``train`` needs ``--resume``, the others ``--overwrite``.

    refdiff demo                      train, sample and measure a 2D toy (about a minute)
    refdiff train / sample / elbo     experiment with toy 2D and 8x8 models
    refdiff orders                    fitted convergence orders of the ODE samplers
    refdiff vectors OUT / check SUITE RESULTS   reference vectors for other implementations
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

from ._version import __version__

__all__ = ["main", "build_parser"]

_DEFAULT_DEMO_OUT = "refdiff-demo"


class CLIError(Exception):
    """An error to report to the user as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- argument types
def _int_min(lo, hi=None):
    want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {v}")
        return v

    return parse


def _float_range(lo=-math.inf, hi=math.inf, lo_open=False):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
        bad = not math.isfinite(v) or v > hi or (v <= lo if lo_open else v < lo)
        if bad:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {rng}, got {s}")
        return v

    return parse


_POS = _int_min(1)
_NONNEG = _int_min(0)


# ---------------------------------------------------------------------------- helpers
def _device_namespace(args):
    """The array namespace of ``--device`` (cpu: NumPy; gpu: CuPy), or a one-line error."""
    from .backend import namespace_for_device

    try:
        return namespace_for_device(args.device)
    except RuntimeError as e:
        raise CLIError(str(e)) from None


def _load_checkpoint(path, xp=None):
    from .nn.checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.npz"
    if not p.is_file():
        raise CLIError(f"checkpoint not found: {str(p)!r}")
    try:
        return load_checkpoint(p, xp=xp)
    except (ValueError, KeyError, OSError) as e:
        raise CLIError(f"{str(p)!r} is not a usable refdiff checkpoint: {_one_line(e)}") from None


def _output_file(out, default_name: str, suffix: str, overwrite: bool, png_beside: bool = False) -> Path:
    """The file an output option names: ``out/default_name`` when ``out`` is an existing
    folder, ``suffix`` appended when ``out`` lacks it (so the path reported is the path
    written); an existing file (or, ``png_beside``, the PNG written beside it) is refused
    unless ``overwrite`` (``--overwrite``), so a previous run is never replaced silently."""
    p = Path(out)
    if p.is_dir():
        p = p / default_name
    if p.suffix != suffix:
        p = p.with_name(p.name + suffix)
    _refuse_overwrite([p, p.with_suffix(".png")] if png_beside else [p], overwrite)
    return p


def _refuse_overwrite(paths, overwrite: bool) -> None:
    if overwrite:
        return
    for q in paths:
        if Path(q).exists():
            raise CLIError(f"{str(q)!r} exists: pass --overwrite to replace it, or choose another --out")


def _checkpoint_schedule(ck):
    from .nn.checkpoint import schedule_from_description
    from .schedules import Schedule

    desc = ck.meta.get("schedule")
    if not desc:
        raise CLIError("the checkpoint stores no schedule (it was not written by refdiff train)")
    sched = schedule_from_description(desc)
    if not isinstance(sched, Schedule):
        raise CLIError(f"the checkpoint's schedule is {desc.get('type')!r}; refdiff sample and elbo need a discrete one")
    return sched


def _prediction_type(ck):
    return ck.prediction_type


def _progress(args):
    return not getattr(args, "no_progress", False)


def _save_plot(x, path, title):
    """A scatter (2D) or an image grid (N, 1, H, W); returns the path or None without matplotlib."""
    import numpy as np

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return None
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=2, lw=0)
        ax.set_aspect("equal")
    else:
        k = min(len(x), 100)
        cols = int(math.ceil(math.sqrt(k)))
        rows = int(math.ceil(k / cols))
        H, W = x.shape[-2:]
        grid = np.ones((rows * (H + 1), cols * (W + 1)))
        for i in range(k):
            r, c = divmod(i, cols)
            grid[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = (np.clip(x[i, 0], -1, 1) + 1) / 2
        fig, ax = plt.subplots(figsize=(4, 4 * rows / cols))
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- train
def _cmd_train(args):
    import numpy as np

    from .data import load_dataset
    from .nn import MLP, MLPConfig, UNet, UNetConfig
    from .schedules import make_schedule
    from .train import train

    xp = _device_namespace(args)
    n = None if args.data == "digits8x8" and args.n is None else (args.n or 20000)
    data = load_dataset(args.data, n, np.random.default_rng([args.seed, 100]))
    image = data.x.ndim == 4
    arch = args.model or ("unet" if image else "mlp")
    K = data.num_classes if args.conditional else 0
    if args.conditional and K == 0:
        raise CLIError(f"--conditional needs a labelled data set; {args.data!r} has no labels")
    if arch == "mlp":
        if image:
            raise CLIError(f"--model mlp is for (N, D) toy data; {args.data!r} holds images: use --model unet")
        model = MLP(MLPConfig(dim=data.x.shape[1], hidden=args.hidden, layers=args.layers, num_classes=K))
    else:
        if not image:
            raise CLIError(f"--model unet is for 8x8 images; {args.data!r} is (N, D) data: use --model mlp")
        model = UNet(UNetConfig(num_classes=K))
    schedule = make_schedule(args.schedule, args.T)
    if (Path(args.out) / "checkpoint.npz").exists() and not args.resume:
        raise CLIError(f"{str(Path(args.out) / 'checkpoint.npz')!r} exists: pass --resume to continue it to --steps "
                       "with the same options, or choose another --out")
    # ema_warmup: the decay min(0.999, (1 + k) / (10 + k)) of MATH.md (14.16); a fixed 0.999 would
    # leave 0.999^k of the random initialisation in the EMA weights that sample and elbo use.
    threads = args.batch_threads or _auto_batch_threads(arch, xp, args.threads)
    res = train(model, data, schedule=schedule, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                target=args.objective, weighting=None if args.weighting == "none" else args.weighting, seed=args.seed, out_dir=args.out,
                checkpoint_every=args.checkpoint_every, cond_dropout=args.cond_dropout if K else 0.0,
                resume=args.resume, progress=_progress(args), eval_every=max(1, args.steps // 10), eval_size=512,
                ema_warmup=True, xp=xp, threads=threads, batch_parallel=_batch_parallel(args, xp))
    tail = res.losses[-min(100, len(res.losses)):]
    print(f"trained {arch} ({model.num_params(res.params)} parameters) on {args.data} for {res.step} steps; "
          f"mean loss of the last {len(tail)} steps {float(np.nanmean(tail)):.4g}; "
          f"EMA held-out loss {float(res.eval_losses[-1]) if len(res.eval_losses) else float('nan'):.4g}")
    print(f"checkpoint: {res.checkpoint}")
    return 0


def _auto_batch_threads(arch: str, xp, blas_threads) -> int:
    """``--batch-threads 0``: two batch halves for the U-Net on NumPy when the process may
    use 2+ cores and BLAS is pinned to one thread (``--threads`` 1, the default, with
    threadpoolctl installed), else 1.  Measured on
    the 2-core test VM (benchmarks/README.md): the two-halves U-Net step takes 0.7x the
    one-thread step; the MLP's matrices are too small for threads to pay."""
    import os

    if arch != "unet" or "numpy" not in xp.__name__ or (DEFAULT_THREADS if blas_threads is None else blas_threads) != 1:
        return 1
    try:
        import threadpoolctl  # noqa: F401  (BatchThreads pins BLAS to one thread with it)
    except ImportError:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 2 else 1


def _batch_parallel(args, xp) -> str:
    """``--batch-parallel``: as given; "auto" is "processes" on NumPy on a POSIX system
    (issue 21: no shared GIL; benchmarks/README.md, round 10), else "threads"."""
    import os

    if args.batch_parallel != "auto":
        return args.batch_parallel
    return "processes" if "numpy" in xp.__name__ and os.name == "posix" else "threads"


# ---------------------------------------------------------------------------- sample
def _cmd_sample(args):
    import numpy as np

    from .backend import to_numpy
    from .loading import load
    from .samplers.loop import sampler_methods

    methods = sampler_methods()
    if args.method not in methods:
        raise CLIError(f"unknown method {args.method!r}; valid: {', '.join(sorted(methods))}")
    if args.method.startswith("flow_"):
        raise CLIError(f"method {args.method!r} integrates a flow-matching velocity; refdiff train checkpoints are "
                       "diffusion (epsilon/sample/v) models")
    xp = _device_namespace(args)
    p = Path(args.checkpoint)
    p = p / "checkpoint.npz" if p.is_dir() else p
    if not p.is_file():
        raise CLIError(f"checkpoint not found: {str(p)!r}")
    try:
        model, meta = load(p, ema=not args.no_ema, xp=xp)
    except (ValueError, KeyError, OSError) as e:
        raise CLIError(f"{str(p)!r} is not a usable refdiff checkpoint: {_one_line(e)}") from None
    schedule = _checkpoint_schedule_of(meta)
    if args.steps > schedule.T:
        raise CLIError(f"--steps {args.steps} exceeds the checkpoint's T = {schedule.T}")
    K = int(getattr(model.net.config, "num_classes", 0))
    if args.guidance_scale is not None and K == 0:
        raise CLIError("--guidance-scale needs a class-conditional checkpoint (trained with --conditional)")
    if args.label is not None and K == 0:
        raise CLIError("--class needs a class-conditional checkpoint (trained with --conditional)")
    if args.label is not None and not 0 <= args.label < K:
        raise CLIError(f"--class {args.label} is out of range [0, {K - 1}]")
    if args.guidance_scale is not None and args.label is None:
        raise CLIError("--guidance-scale needs --class (the class to guide towards)")
    opts = {}
    if args.eta is not None:
        if args.method != "ddim":
            raise CLIError(f"--eta applies to method 'ddim', not {args.method!r}")
        opts["eta"] = args.eta
    y = None if args.label is None else xp.asarray(np.full(args.n, args.label, dtype=np.int64))
    out = Path(args.out) if args.out else Path(args.checkpoint if Path(args.checkpoint).is_dir()
                                                else Path(args.checkpoint).parent) / _sample_name(args)
    out = _output_file(out, _sample_name(args), ".npz", args.overwrite, png_beside=True)  # before the work
    x = model.sample(args.n, steps=args.steps, rng=np.random.default_rng(args.seed), method=args.method,
                     cond=None if y is None else {"class": y}, guidance_scale=args.guidance_scale,
                     spacing=args.spacing, progress=_progress(args), **opts)
    x = np.asarray(to_numpy(x), dtype=np.float64)
    y = None if y is None else to_numpy(y)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=x, **({} if y is None else {"y": y}))
    label = "" if args.label is None else f", class {args.label}" + (
        "" if args.guidance_scale is None else f", guidance {args.guidance_scale:g} (w convention)")
    png = _save_plot(x, out.with_suffix(".png"), f"{args.method}, {args.steps} steps{label}")
    print(f"wrote {out}" + (f" and {png}" if png else "") + f": {args.n} samples of shape {model.sample_shape}, "
          f"{meta['prediction_type']} prediction")
    return 0


def _checkpoint_schedule_of(meta):
    from .schedules import Schedule

    sched = meta["schedule"]
    if sched is None:
        raise CLIError("the checkpoint stores no schedule (it was not written by refdiff train)")
    if not isinstance(sched, Schedule):
        raise CLIError("the checkpoint's schedule is continuous; refdiff sample needs a discrete one")
    return sched


def _sample_name(args) -> str:
    """The default file name of ``refdiff sample``: every option that changes the samples, so
    that two different runs never share a file (the same name means the same samples)."""
    from .loading import CONTINUOUS_ONLY_METHODS

    parts = [args.method, f"{args.steps}steps"]
    if args.method not in CONTINUOUS_ONLY_METHODS:  # continuous-time methods ignore --spacing
        parts.append(args.spacing)
    parts += [f"n{args.n}", f"seed{args.seed}"]
    if args.label is not None:
        parts.append(f"class{args.label}")
    if args.guidance_scale is not None:
        parts.append(f"w{args.guidance_scale:g}")
    if args.eta is not None:
        parts.append(f"eta{args.eta:g}")
    if args.no_ema:
        parts.append("noema")
    return "samples_" + "_".join(parts) + ".npz"


# ---------------------------------------------------------------------------- elbo
def _elbo_model(args, data, x0):
    """(model, description, prediction type, schedule) for `refdiff elbo`: the data set's
    exact oracle or a checkpoint's network."""
    import numpy as np

    from .schedules import make_schedule

    if args.oracle:
        if data.oracle is None:
            raise CLIError(f"--oracle needs a data set with an exact density (8gaussians, 25gaussians), not {args.data!r}")
        schedule = make_schedule(args.schedule, args.T)
        model, what = data.oracle.as_model(schedule, "epsilon"), f"exact oracle of {args.data}"
        pred = "epsilon"
    else:
        ck = _load_checkpoint(args.checkpoint)
        schedule = _checkpoint_schedule(ck)
        params = ck.ema_params if ck.ema_params is not None else ck.params
        net = ck.model
        want = (net.config.dim,) if net.arch == "mlp" else (net.config.in_channels, net.config.image_size, net.config.image_size)
        if tuple(x0.shape[1:]) != want:
            raise CLIError(f"the checkpoint's model takes samples of shape {want}; {args.data!r} has {tuple(x0.shape[1:])}")
        model, what, pred = (lambda x, t: net.apply(params, x.astype(np.float32), t).astype(np.float64)), \
            f"checkpoint {args.checkpoint}", _prediction_type(ck)
    return model, what, pred, schedule


def _cmd_elbo(args):
    import numpy as np

    from .data import load_dataset
    from .elbo import nll_bound

    rng = np.random.default_rng(args.seed)
    image = args.data in ("digits8x8", "shapes8x8")
    if args.data == "digits8x8":
        data = load_dataset(args.data, min(args.n, 360), rng, split="test")
    else:
        data = load_dataset(args.data, args.n, rng)
    x0 = np.asarray(data.x, dtype=np.float64)
    model, what, pred, schedule = _elbo_model(args, data, x0)
    decoder, bins = ("discretized", 17) if args.data == "digits8x8" else ("gaussian", 256)
    if args.data == "shapes8x8":
        raise CLIError("shapes8x8 is not on a fixed grid of levels: use digits8x8 (17 levels) or a 2D set")
    res = nll_bound(model, schedule, x0, rng=rng, prediction_type=pred, decoder=decoder, bins=bins,
                    estimator=args.estimator, n_t=args.n_t)
    D, N = res.dims, x0.shape[0]
    to_bpd = 1.0 / (D * math.log(2))

    def row(label, per_sample, note=""):
        v = np.asarray(per_sample, dtype=np.float64)
        m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
        print(f"  {label:<24}{m:11.5g} ± {se:<9.2g} nats/sample  {m * to_bpd:10.5g} ± {se * to_bpd:<9.2g} bits/dim{note}")

    print(f"negative ELBO of {N} {args.data} points under the {what} (T = {schedule.T}, {decoder} decoder"
          + (f", {bins} levels" if decoder == "discretized" else ", continuous density") + f", {args.estimator} estimator)")
    row("total", res.total_nats)
    row("L_T", res.prior_nats)
    if res.decoder_nats is not None:
        row("L_0", res.decoder_nats, "   (decoder, t = 0)")
    if res.terms_nats is not None:
        terms = np.asarray(res.terms_nats)  # (N, T)
        edges = np.unique(np.linspace(1, schedule.T, min(10, schedule.T - 1) + 1).astype(int)) if schedule.T > 1 else []
        for a, b in zip(edges[:-1], edges[1:]):
            row(f"L_t, t in [{a}, {b - 1}]", terms[:, a:b].sum(axis=1))
    elif schedule.T > 1:
        kl = np.asarray(res.total_nats) - np.asarray(res.prior_nats) - np.asarray(res.decoder_nats)
        row(f"sum of L_t, t >= 1", kl, f"   ((T-1) L_t at {args.n_t} uniform t per point)")
    if args.oracle and not image:
        lp = -np.asarray(data.oracle.log_prob(x0), dtype=np.float64)
        print(f"  exact -log p(x0) of the same points: {lp.mean():.5g} ± {lp.std(ddof=1) / math.sqrt(lp.size):.2g} "
              "nats/sample (the expected bound is >= it)")
    print("(± one standard error of the mean over the N points: data and Monte Carlo noise together; 0-based t: "
          f"L_t is the KL term at array index t, L_0 the decoder; bits/dim = nats / (D ln 2), D = {D})")
    return 0


# ---------------------------------------------------------------------------- orders
def _cmd_orders(args):
    from .samplers import orders

    if args.methods:
        bad = [m for m in args.methods if m not in orders.SPECS]
        if bad:
            raise CLIError(f"unknown order setup {bad[0]!r}; valid: {', '.join(orders.SPECS)}")
    steps = sorted(set(args.steps))
    if len(steps) < 2:
        raise CLIError("--steps needs at least two different step counts to fit an order")
    path = _output_file(args.out, "orders.png", Path(args.out).suffix or ".png", args.overwrite)  # before the work
    res = orders.measure_orders(args.methods or None, tuple(steps), n_samples=args.n_samples, seed=args.seed)
    w = max([22] + [len(label) + 2 for label in res])
    print(f"{'sampler':<{w}}{'fitted order':>13}{'expected':>10}   errors at steps {', '.join(map(str, steps))}")
    for label, r in res.items():
        errs = " ".join(f"{e:.2e}" for e in r["errors"])
        print(f"{label:<{w}}{r['order']:13.2f}{r['expected']:>10}   {errs}")
    if any(r.get("setup") == "vp_start" for r in res.values()):
        print("@start: the VP setup started at t = 0.35 on N(mu, diag(0.3, 1, 3)), where x0_hat changes over the "
              "first step (MATH.md (10.18))")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        orders.plot_errors(res, path)
        print(f"plot: {path}")
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- vectors, check, demo
def _cmd_vectors(args):
    import json

    from .vectors import write_suite

    _refuse_overwrite([Path(args.out) / "manifest.json"], args.overwrite)
    path = write_suite(args.out, seed=args.seed)
    n = len(json.loads(path.read_text())["cases"])
    print(f"wrote {n} cases and {path} (suite layout: docs/verifying.md)")
    return 0


def _cmd_check(args):
    from .vectors import check_suite, format_report

    if not Path(args.suite).is_dir():
        raise CLIError(f"suite directory not found: {args.suite!r}")
    if not Path(args.results).is_dir():
        raise CLIError(f"results directory not found: {args.results!r}")
    results = check_suite(args.suite, args.results, tol_factor=args.tol_factor, cases=args.cases)
    print(format_report(results))
    return 0 if all(r.status == "PASS" for r in results) else 1


def _cmd_txt2img(args):
    import numpy as np

    from .txt2img import txt2img

    root = Path(args.checkpoint)
    if not (root / "unet" / "checkpoint.npz").is_file() or not (root / "autoencoder.npz").is_file():
        raise CLIError(f"{str(root)!r} must hold unet/checkpoint.npz and autoencoder.npz (examples/toy_sd.py "
                       "writes such a folder as OUT/model)")
    out = _output_file(args.out, "txt2img.png", Path(args.out).suffix or ".png", args.overwrite)  # before the work
    x = txt2img(args.prompt, root, n=args.n, steps=args.steps, guidance_scale=args.guidance_scale,
                convention=args.convention, method=args.method, rng=np.random.default_rng(args.seed),
                progress=_progress(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, images=x, prompt=np.array(args.prompt))
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, x.shape[0], figsize=(1.2 * x.shape[0], 1.5), squeeze=False)
        for ax, img in zip(axes[0], x):
            ax.imshow(img[0], cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.axis("off")
        fig.suptitle(args.prompt, fontsize=8)
        fig.savefig(out, dpi=80, bbox_inches="tight")
        plt.close(fig)
    print(f"wrote {out}")
    return 0


def _cmd_demo(args):
    from .demo import run_demo

    threads = DEFAULT_THREADS if args.threads is None else args.threads
    res = run_demo(args.out, seed=args.seed, quick=args.quick, progress=_progress(args), threads=threads,
                   overwrite=args.overwrite)
    return 1 if res.ok is False else 0


# ---------------------------------------------------------------------------- parser
def _sub(subs, name, help_, description):
    return subs.add_parser(name, help=help_, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The ``refdiff`` argument parser (every subcommand, with ``--threads`` on each)."""
    from .data import DATASETS

    p = _Parser(prog="refdiff", description="refdiff: reference implementation of diffusion models.\n\n"
                "Start with `refdiff demo`.  Every subcommand has its own --help.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"refdiff {__version__}")
    subs = p.add_subparsers(dest="command", metavar="COMMAND")
    noprog = dict(action="store_true", help="hide the tqdm progress bars")
    device = dict(choices=("cpu", "gpu"), default="cpu",
                  help="where arrays live: cpu (NumPy) or gpu (CuPy on the current CUDA device; select one with "
                       "CUDA_VISIBLE_DEVICES). Noise is drawn on the host either way, so results match (default: cpu)")

    d = _sub(subs, "demo", "train, sample and measure a 2D toy model (about a minute on 2 CPU cores)",
             "Train an MLP denoiser on the 8gaussians mixture (exact density known), sample it with DDPM (1000 steps),\n"
             "DDIM and DPM-Solver++(2M) (10 and 20 steps), and print sliced Wasserstein / energy distances to\n"
             "held-out data, the mean NLL under the exact mixture and the sampling seconds, for the network and for\n"
             "the exact denoiser.  Checks SW2(DPM-Solver++(2M), 10/20 steps) <= SW2(DDPM, 1000) + 0.06 (the\n"
             "noise of a difference of two SW2 estimates at N = 4000: refdiff/demo.py) and exits with status 1\n"
             "if not.  Writes checkpoint.npz, samples.npz, results.json, samples.png, loss.png.")
    d.add_argument("--out", default=_DEFAULT_DEMO_OUT, help="output folder (default: ./%(default)s)")
    d.add_argument("--seed", type=_NONNEG, default=0, help="seed of every random draw (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="tiny sizes (a few seconds), a smoke test; the tolerance "
                   "check is reported but not enforced")
    d.add_argument("--no-progress", **noprog)
    d.set_defaults(func=_cmd_demo)

    t = _sub(subs, "train", "train a denoiser on a toy data set (resumable)",
             "Train refdiff's hand-written MLP (2D data) or U-Net (8x8 images) with Adam, an EMA of the weights\n"
             "(decay min(0.999, (1+k)/(10+k)) after k updates, MATH.md (14.16)) and a held-out loss,\n"
             "writing OUT/checkpoint.npz (+ .json).  0-based timesteps, T steps.")
    t.add_argument("--data", default="8gaussians", choices=DATASETS, metavar="NAME",
                   help=f"data set: {', '.join(DATASETS)} (default: %(default)s)")
    t.add_argument("--n", type=_POS, default=None, help="number of training points drawn for generated sets "
                   "(default: 20000; digits8x8: its whole training split)")
    t.add_argument("--model", choices=("mlp", "unet"), default=None, help="architecture (default: mlp for 2D "
                   "data, unet for 8x8 images)")
    t.add_argument("--hidden", type=_POS, default=128, help="MLP width (default: %(default)s)")
    t.add_argument("--layers", type=_int_min(1, 100), default=3, help="MLP hidden layers, 1..100 (default: %(default)s)")
    t.add_argument("--conditional", action="store_true", help="class-conditional model (labels + a null class "
                   "for classifier-free guidance)")
    t.add_argument("--cond-dropout", type=_float_range(0, 1), default=0.1,
                   help="probability of replacing a label by the null class (default: %(default)s)")
    t.add_argument("--objective", default="epsilon", choices=("epsilon", "sample", "v_prediction"),
                   help="regression target: the noise, x_0, or v = alpha eps - sigma x_0 (default: %(default)s)")
    t.add_argument("--weighting", default="none", choices=("none", "min_snr", "snr", "snr_plus_one", "truncated_snr"),
                   help="loss weighting over t; 'none' is the plain MSE of the target (default: %(default)s)")
    t.add_argument("--schedule", default="linear", choices=("linear", "scaled_linear", "cosine", "sigmoid"),
                   help="beta schedule (default: %(default)s)")
    t.add_argument("--T", type=_POS, default=1000, help="number of diffusion steps (default: %(default)s)")
    t.add_argument("--steps", type=_POS, default=2000, help="optimiser updates (default: %(default)s)")
    t.add_argument("--batch-size", type=_POS, default=256, help="batch size (default: %(default)s)")
    t.add_argument("--lr", type=_float_range(0, lo_open=True), default=1e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--seed", type=_NONNEG, default=0, help="seed of data, initialisation and training draws (default: %(default)s)")
    t.add_argument("--out", default="refdiff-run", help="output folder for checkpoint.npz (default: ./%(default)s)")
    t.add_argument("--checkpoint-every", type=_NONNEG, default=500, help="updates between checkpoints, 0: only at "
                   "the end (default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.npz to --steps (same options "
                   "required); without it an existing checkpoint is an error")
    t.add_argument("--batch-threads", type=_int_min(0, 64), default=0, metavar="N",
                   help="run the network on N slices of each batch, one Python thread each, BLAS on one thread "
                   "(refdiff.training.BatchThreads: the same updates up to the order of float sums over the "
                   "batch); 0: 2 for the U-Net on the CPU when 2+ cores are available, else 1 (default: 0)")
    t.add_argument("--batch-parallel", choices=("auto", "threads", "processes"), default="auto",
                   help="what runs the slices of --batch-threads beyond the first: Python threads "
                   "(refdiff.training.BatchThreads) or worker processes (refdiff.training.BatchProcesses, NumPy only, "
                   "no shared GIL); auto: processes on the CPU, threads on a GPU (default: %(default)s)")
    t.add_argument("--device", **device)
    t.add_argument("--no-progress", **noprog)
    t.set_defaults(func=_cmd_train)

    s = _sub(subs, "sample", "sample a trained checkpoint with any sampler",
             "Sample a checkpoint written by `refdiff train` (or `refdiff demo`) and write OUT.npz (array 'x', and 'y'\n"
             "for class-conditional samples) and OUT.png (a scatter for 2D data, an image grid for 8x8).\n"
             "Score-SDE methods (euler_maruyama, pc, pf_ode_rk4) run on DPM-Solver's continuous view of the schedule.")
    s.add_argument("checkpoint", help="checkpoint.npz, or the folder holding it")
    s.add_argument("--method", default="dpmpp_2m", help="sampler name, e.g. ddpm, ddim, euler, heun, dpmpp_2m, "
                   "dpmpp_3m, dpmpp_2m_sde (default: %(default)s; an unknown name lists the valid ones)")
    s.add_argument("--steps", type=_POS, default=20, help="sampling steps, 1..T (default: %(default)s)")
    s.add_argument("--spacing", default="trailing", choices=("linspace", "leading", "trailing"),
                   help="timestep grid spacing (default: %(default)s, which starts at t = T-1)")
    s.add_argument("--n", type=_POS, default=1000, help="number of samples (default: %(default)s)")
    s.add_argument("--guidance-scale", type=_float_range(), default=None,
                   help="classifier-free guidance scale w, any finite number (as refdiff.sample), in the 'w' "
                   "convention eps_u + w (eps_c - eps_u): 0 unconditional, 1 conditional, > 1 guided towards "
                   "the class, < 0 guided away from it (negative guidance) (default: no guidance)")
    s.add_argument("--class", dest="label", type=_NONNEG, default=None, help="class label to sample (conditional "
                   "checkpoints; default: the null class, i.e. unconditional)")
    s.add_argument("--eta", type=_float_range(0, 1), default=None, help="DDIM stochasticity in [0, 1] (default: 0)")
    s.add_argument("--seed", type=_NONNEG, default=0, help="seed of x_T and the sampler's noise (default: %(default)s)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    s.add_argument("--out", default=None, help="output .npz path (default: beside the checkpoint, named by every "
                   "option that changes the samples, e.g. samples_dpmpp_2m_20steps_trailing_n1000_seed0_class3_w2.npz); "
                   "the PNG goes beside it")
    s.add_argument("--device", **device)
    s.add_argument("--no-progress", **noprog)
    s.set_defaults(func=_cmd_sample)

    e = _sub(subs, "elbo", "negative ELBO (bits/dim) with its per-term breakdown",
             "The variational bound on -log p(x_0) (MATH.md (5.1)) of data points under a checkpoint or under the\n"
             "exact oracle of a Gaussian-mixture data set, in nats per sample and bits per dimension, with the\n"
             "prior term L_T, the decoder L_0 and the KL terms L_t summed over ten ranges of t (0-based).\n"
             "2D data: Gaussian decoder (a continuous density); digits8x8: discretized decoder on 17 levels.")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint.npz (or its folder) to evaluate")
    src.add_argument("--oracle", action="store_true", help="evaluate the exact denoiser of --data instead")
    e.add_argument("--data", default="8gaussians", choices=DATASETS, metavar="NAME",
                   help=f"data set: {', '.join(DATASETS)} (default: %(default)s)")
    e.add_argument("--n", type=_POS, default=256, help="number of data points (default: %(default)s)")
    e.add_argument("--estimator", default="full", choices=("full", "uniform"),
                   help="'full': all T terms (T model calls); 'uniform': the decoder plus (T-1) times the KL term at "
                        "one random t >= 1 per point (2 model calls; default: %(default)s)")
    e.add_argument("--n-t", type=_int_min(1, 10000), default=1, help="draws of t for --estimator uniform, "
                   "1..10000 (default: %(default)s)")
    e.add_argument("--schedule", default="linear", choices=("linear", "scaled_linear", "cosine", "sigmoid"),
                   help="schedule for --oracle (default: %(default)s; a checkpoint uses its own)")
    e.add_argument("--T", type=_POS, default=1000, help="diffusion steps for --oracle (default: %(default)s)")
    e.add_argument("--seed", type=_NONNEG, default=0, help="seed of the data and the bound's noise (default: %(default)s)")
    e.set_defaults(func=_cmd_elbo)

    o = _sub(subs, "orders", "measure the convergence order of every ODE sampler",
             "Run each ODE sampler on an exact Gaussian oracle with several step counts, compare with the exact\n"
             "probability-flow map, print the fitted order (slope of log error vs log steps) next to the expected\n"
             "one, and save the log-log plot (refdiff.samplers.orders; MATH.md (10.17), (10.18), (11.11)).")
    o.add_argument("--methods", nargs="+", default=None, metavar="LABEL", help="setups to run, e.g. ddim heun dpmpp_2m (default: all; an unknown "
                   "name lists the valid ones)")
    o.add_argument("--steps", nargs="+", type=_POS, default=[16, 32, 64, 128], help="step counts (default: 16 32 64 128)")
    o.add_argument("--n-samples", type=_POS, default=32, help="trajectories per run (default: %(default)s)")
    o.add_argument("--seed", type=_NONNEG, default=0, help="seed of the start states (default: %(default)s)")
    o.add_argument("--out", default="orders.png", help="plot path (default: ./%(default)s)")
    o.set_defaults(func=_cmd_orders)

    v = _sub(subs, "vectors", "write the reference-vector suite",
             "Write OUT/<case>.npz (inputs and outputs as named float64/int64 arrays) and OUT/manifest.json\n"
             "(conventions, per-case function, parameters, input/output names, dtypes, tolerances and why).\n"
             "Layout and a worked example: docs/verifying.md.")
    v.add_argument("out", help="output folder (created)")
    v.add_argument("--seed", type=_NONNEG, default=20240601, help="seed of the random inputs (default: %(default)s)")
    v.set_defaults(func=_cmd_vectors)

    c = _sub(subs, "check", "check another implementation's outputs against a suite",
             "Compare RESULTS/<case>.npz (the case's output names) with SUITE's expected outputs; an element passes\n"
             "when |actual - expected| <= atol + rtol |expected|.  Prints a pass/fail table with the worst absolute\n"
             "and relative error per case; exit status 1 if any case fails or is MISSING, 0 if all pass.")
    c.add_argument("suite", help="folder written by `refdiff vectors`")
    c.add_argument("results", help="folder of <case>.npz files written by the implementation under test")
    c.add_argument("--tol-factor", type=_float_range(0, lo_open=True), default=1.0,
                   help="multiply every rtol and atol, e.g. 1e5 for a float32 implementation (default: %(default)s)")
    c.add_argument("--cases", nargs="+", default=None, metavar="PATTERN",
                   help="check only the cases matching these shell patterns, e.g. 'schedule_*' q_sample "
                   "(default: every case of the suite; a pattern matching none is an error)")
    c.set_defaults(func=_cmd_check)
    t = _sub(subs, "txt2img", "text to image with a latent text-conditioned model (toy Stable Diffusion)",
             "Encode PROMPT with the model's tokenizer, sample latents with classifier-free guidance against the\n"
             "empty prompt, undo the latent scaling and decode (refdiff.txt2img).  CHECKPOINT is a folder with\n"
             "unet/checkpoint.npz and autoencoder.npz (+ .json), as examples/toy_sd.py writes to OUT/model;\n"
             "a U-Net conditioned on text states also needs text_encoder.npz (+ .json), the frozen toy CLIP that\n"
             "encodes the prompt.")
    t.add_argument("prompt", help='e.g. "a thick three in the top left"')
    t.add_argument("--checkpoint", required=True, help="the model folder")
    t.add_argument("--n", type=_int_min(1), default=4, help="images (default: %(default)s)")
    t.add_argument("--steps", type=_int_min(1), default=20, help="sampler steps (default: %(default)s)")
    t.add_argument("--guidance-scale", type=_float_range(0), default=4.0, help="CFG scale (default: %(default)s)")
    t.add_argument("--convention", choices=("w", "1+w"), default="w",
                   help="'w': u + w (c - u); '1+w': c + w (c - u) (default: %(default)s)")
    t.add_argument("--method", default="ddim", help="refdiff.sample method (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default: %(default)s)")
    t.add_argument("--out", default="txt2img.png", help=".png (a row of images) or .npz (default: %(default)s)")
    t.add_argument("--no-progress", **noprog)
    t.set_defaults(func=_cmd_txt2img)
    from .editing.cli_edit import add_edit_parser  # refdiff edit (img2img, inpaint, outpaint)

    add_edit_parser(subs, _sub)
    for name in WRITING_COMMANDS:  # a previous run's files are replaced only when asked
        subs.choices[name].add_argument("--overwrite", action="store_true", help="replace output files that exist "
                                        "(default: an existing output file is an error)")
    for sp in subs.choices.values():  # every subcommand: the BLAS thread cap (see _blas_threads)
        sp.add_argument("--threads", type=_int_min(0), default=None,
                        help=f"BLAS/OpenMP threads for NumPy's matrix products; 0 leaves the library's own "
                        f"choice (default: {DEFAULT_THREADS}; measured faster on the small matrices of the toy "
                        "models, see README 'Threads')")
    return p


WRITING_COMMANDS = ("demo", "sample", "orders", "vectors", "txt2img", "edit")

# ---------------------------------------------------------------------------- threads
DEFAULT_THREADS = 1


def _blas_threads(n):
    """A context capping the BLAS/OpenMP thread pools at ``n`` threads (threadpoolctl, which
    the ``examples`` extra installs); ``n`` = 0 leaves them alone.  Small matrices (the toy
    MLP, the 8x8 U-Net) gain little from a second BLAS thread and lose much when the cores
    are shared, so the default is 1 (README, "Threads").  With ``n`` None (the default) and
    no threadpoolctl, nothing is capped; an explicit ``--threads`` without it is an error."""
    import contextlib

    explicit = n is not None
    n = DEFAULT_THREADS if n is None else n
    if n == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if explicit:
            raise CLIError("--threads needs threadpoolctl: pip install threadpoolctl (or the 'examples' extra)") from None
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def _one_line(e) -> str:
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"file not found: {e.filename!r}"
    msg = str(e) if str(e) else type(e).__name__
    return " ".join(msg.split())


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 check failed, 2 error).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (one line, status 2)
        return int(e.code or 0)
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 0
    caught: list = []
    try:
        with _blas_threads(args.threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow / invalid value: an error
            status = int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError) as e:
        return _fail(args.command, f"error: {_one_line(e)}{_warned(caught, '; after ')}")
    except RuntimeWarning as e:
        return _fail(args.command, f"error: numerical failure ({_one_line(e)}): an option is outside the range where "
                     "the computation stays finite (e.g. --lr too large)")
    except MemoryError as e:
        return _fail(args.command, f"error: out of memory ({_one_line(e)}): a size option (--n, --batch-size, --T, "
                     f"--steps, --hidden, ...) is too large{_warned(caught, '; after ')}")
    except KeyboardInterrupt:
        print(f"refdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line; REFDIFF_TRACEBACK=1 shows the traceback
        if os.environ.get("REFDIFF_TRACEBACK"):
            raise
        return _fail(args.command, f"internal error (please report it): {type(e).__name__}: {_one_line(e)} "
                     "(REFDIFF_TRACEBACK=1 shows the traceback)", status=3)
    if caught:
        print(f"refdiff {args.command}: warning:{_warned(caught, ' ')}", file=sys.stderr)
    return status


def _fail(command, message, status=2) -> int:
    print(f"refdiff {command}: {message}", file=sys.stderr)
    return status


def _warned(caught, prefix) -> str:
    """The warnings a command raised, as one clause (NumPy's overflow warnings become part
    of the error line instead of a block of lines before it)."""
    if not caught:
        return ""
    first = " ".join(str(caught[0].message).split())
    more = f" and {len(caught) - 1} more" if len(caught) > 1 else ""
    return f"{prefix}{len(caught)} warning{'s' if len(caught) > 1 else ''} ({caught[0].category.__name__}: {first}{more})"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
