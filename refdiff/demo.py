"""``refdiff demo``: train a small denoiser on a 2D toy with a known exact density, sample
it with DDPM, DDIM and DPM-Solver++(2M), and measure the samples against held-out data
and the exact density.

What it does (seeded; about a minute on 2 CPU cores):

1. Draws the "8gaussians" mixture (``refdiff.data``; unit per-coordinate variance,
   component std 0.1), whose exact density is known (a :class:`refdiff.GaussianMixture`).
2. Trains the MLP denoiser (:class:`refdiff.nn.MLP`, epsilon prediction, linear schedule,
   T = 1000) with :func:`refdiff.train.train` and writes ``checkpoint.npz`` (usable with
   ``refdiff sample``).
3. Samples N points with each sampler from the same x_T ~ N(0, I): DDPM with all 1000
   steps (integer timesteps 999, ..., 0), DDIM and DPM-Solver++(2M) with 10 and 20 steps on
   DPM-Solver's continuous view of the schedule (:class:`refdiff.InterpolatedVP`, times
   uniform in log-SNR from t = 1 to t = 1/T, i.e. index 999 to index 0, the grid the
   DPM-Solver authors recommend; the network is called at the continuous index
   tau = t T - 1, MATH.md (2.15)), and the same samplers on the exact oracle model as the
   reference.
4. Measures, against N held-out data points: the sliced 2-Wasserstein distance SW2
   (MATH.md (15.1)-(15.2), 256 directions shared by all rows) and the energy distance
   (15.4); and the mean negative log-likelihood under the exact mixture (15.6, nats; the
   data's own entropy is the "data" row; lower is not better, closer is).
5. Prints the table, writes ``samples.png`` (each sampler's samples over the data),
   ``loss.png`` (training loss and held-out EMA loss), ``samples.npz`` and ``results.json``.

The claim it checks (full mode): DPM-Solver++(2M) with 10 and with 20 steps is within
``SW_TOL`` = 0.06 of DDPM with 1000 steps in sliced Wasserstein distance to the held-out
data, i.e. ``SW2(dpmpp_2m, n) <= SW2(ddpm, 1000) + 0.06`` for n = 10, 20, at N = 4000
samples.  Why 0.06: each SW2 entry is a noisy estimate, because the sample counts of the
eight tight modes fluctuate; between two independent 4000-point draws of the mixture and
4000 held-out points, SW2 is 0.056 +- ``SW_SD`` = 0.016 (mean +- standard deviation over
200 seeds; the "data" row shows one such draw).  The check compares *two* such estimates,
S_ddpm = SW2(ddpm, H) and S_dpm = SW2(dpmpp_2m, H).  If both samplers drew from the same
distribution, the two would have the same law, so their difference has mean 0 and
variance 2 SW_SD^2 (1 - rho) <= 2 SW_SD^2, rho >= 0 the correlation through the shared
held-out set H and projection directions: sd(S_dpm - S_ddpm) <= sqrt(2) SW_SD = 0.0226
(measured: 0.018).  Two comparisons are made (10 and 20 steps); for a false-FAIL rate of
at most 1% (Bonferroni) each is one-sided at 0.5%, z = 2.576, and 2.576 * 0.0226 = 0.058,
rounded up to 0.06.  (Over the 200 null seeds the difference's 99th percentile is 0.046,
its maximum 0.063.)  A tolerance of two standard deviations of a *single* estimate
(0.03-0.04) fails a correct sampler in a few percent of seeds (seed 2 did).  Measured gaps
SW2(dpmpp_2m) - SW2(ddpm) over seeds 0-4 (10 / 20 steps): +0.009/-0.010, +0.022/+0.030,
+0.049/+0.023, +0.022/+0.028, -0.010/-0.019, all within 0.06; their mean +0.014 is the
real, small cost of 10-20 ODE steps (the "NLL" columns show the modes slightly widened).
The demo exits with status 1 if the claim fails.  ``--quick`` (a smoke test at a tiny
size) reports the comparison but does not enforce it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SW_TOL", "SW_SD", "DemoResult", "run_demo", "demo_settings", "format_table", "strict_json", "DEMO_FILES"]

# the files run_demo writes into its folder; any of them already there is a previous run
DEMO_FILES = ("checkpoint.npz", "checkpoint.json", "samples.npz", "results.json", "samples.png", "loss.png")

SW_SD = 0.016  # sd of one SW2 estimate at N = 4000 (module docstring)
SW_TOL = 0.06  # >= 2.576 * sqrt(2) * SW_SD: two comparisons of two estimates at a 1% false-FAIL rate
SAMPLERS = (("ddpm", 1000), ("ddim", 10), ("ddim", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 20))


def demo_settings(quick: bool = False) -> dict:
    """Sizes of the demo (``quick``: a few seconds, for tests).

    Parameters
    ----------
    quick : bool
        Tiny sizes.

    Returns
    -------
    dict
        n_train, n_samples, train_steps, batch_size, hidden, layers.
    """
    if not isinstance(quick, (bool, np.bool_)):
        raise TypeError(f"quick must be True or False, got {quick!r}")
    if quick:
        return dict(n_train=2000, n_samples=200, train_steps=300, batch_size=128, hidden=32, layers=2)
    return dict(n_train=20000, n_samples=4000, train_steps=2500, batch_size=512, hidden=64, layers=3)


@dataclass
class DemoResult:
    """The demo's table (``rows``: dicts with sampler, steps, sw, energy, nll, sw_oracle,
    nll_oracle, seconds), whether the tolerance check passed (``ok``; None when not
    enforced), the files written and the total wall time.

    Parameters
    ----------
    rows : list of dict
        The table.
    ok : bool or None
        The tolerance check's verdict (None with ``quick``).
    files : list of Path
        Files written.
    seconds : float
        Wall time.
    message : str
        The check's line.
    """

    rows: list
    ok: bool | None
    files: list = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""


def _blas_threads(n: int):
    """Cap BLAS at ``n`` threads (0: leave it alone).  Small matrices: BLAS threading costs
    more than it gains (and oversubscribes shared machines; README, "Threads").  Uses
    threadpoolctl when it is installed (the ``examples`` extra); otherwise does nothing."""
    if n == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def run_demo(out="refdiff-demo", *, seed: int = 0, quick: bool = False, progress: bool = True,
             stream=None, threads: int = 1, overwrite: bool = False) -> DemoResult:
    """Run the demo (module docstring) writing into directory ``out``.

    Parameters
    ----------
    out : path-like
        Output folder (created).
    seed : int
        Seed of every random draw.
    quick : bool
        Tiny sizes (a few seconds); the tolerance check is reported but not enforced.
    progress : bool
        tqdm progress bars on stderr.
    stream : file-like, optional
        Where the table is printed (default stdout).
    threads : int
        BLAS threads (threadpoolctl); 0 leaves the library's own choice.
    overwrite : bool, default False
        Replace whatever files of :data:`DEMO_FILES` ``out`` holds.  Without it, the files
        of a previous demo in ``out`` (recognised by the checkpoint's SHA-256 recorded in its
        ``results.json``) are replaced, so running the demo twice works; any other file of
        those names (a training run's checkpoint, a demo checkpoint trained further) is
        refused (ValueError) before any work.

    Returns
    -------
    DemoResult
        The table's rows, the check's verdict, the files written and the wall time.
    """
    stream = sys.stdout if stream is None else stream
    taken = [f for f in DEMO_FILES if (Path(out) / f).exists()]
    if taken and not overwrite and not _previous_demo(Path(out)):
        raise ValueError(f"{str(Path(out) / taken[0])!r} exists (a previous run in out = {str(out)!r}): pass "
                         "overwrite=True (refdiff demo --overwrite) to replace it, or choose another out")
    Path(out).mkdir(parents=True, exist_ok=True)  # an unwritable out fails here, before the training
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads = {threads!r} must be an integer >= 0 (0: the BLAS library's own choice)")
    # np.errstate: the sigmoid of a large negative pre-activation overflows exp() to inf and
    # correctly yields 0; the warning would only clutter the table.
    with _blas_threads(threads), np.errstate(over="ignore"):
        return _run(Path(out), int(seed), bool(quick), progress, stream)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _previous_demo(out: Path) -> bool:
    """Whether ``out`` holds the files of a previous demo, unchanged since: its results.json
    records the SHA-256 of the checkpoint it wrote, and the checkpoint still has it."""
    try:
        rec = json.loads((out / "results.json").read_text())
        return isinstance(rec, dict) and rec.get("checkpoint_sha256") == _sha256(out / "checkpoint.npz")
    except (OSError, ValueError):
        return False


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None, so that ``json.dumps(...,
    allow_nan=False)`` writes strict JSON (NaN as null; bare NaN is not JSON).

    Parameters
    ----------
    obj : dict, list, tuple, float, int or other JSON-able value
        The value to clean (nested containers are walked).

    Returns
    -------
    object
        A copy with non-finite floats as None and NumPy scalars as Python numbers.
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _run(out, seed, quick, progress, stream):
    from . import InterpolatedVP, make_schedule, sample, time_grid, timesteps
    from .data import load_dataset
    from .metrics import energy_distance, oracle_nll, sliced_wasserstein
    from .nn import MLP, MLPConfig
    from .nn.checkpoint import save_checkpoint
    from .train import train

    t_start = time.perf_counter()
    cfg = demo_settings(quick)
    out.mkdir(parents=True, exist_ok=True)
    N = cfg["n_samples"]
    data = load_dataset("8gaussians", cfg["n_train"], np.random.default_rng([seed, 0]))
    held_out = load_dataset("8gaussians", N, np.random.default_rng([seed, 1])).x
    fresh = load_dataset("8gaussians", N, np.random.default_rng([seed, 2])).x  # the noise floor
    oracle = data.oracle
    schedule = make_schedule("linear", 1000)
    model = MLP(MLPConfig(dim=2, hidden=cfg["hidden"], layers=cfg["layers"]))
    print(f"refdiff demo: training an MLP denoiser ({model.num_params(model.init_params(np.random.default_rng(0)))} "
          f"parameters) on 8gaussians for {cfg['train_steps']} steps", file=stream, flush=True)
    res = train(model, data, schedule=schedule, steps=cfg["train_steps"], batch_size=cfg["batch_size"], lr=2e-3,
                seed=seed, ema_decay=0.995, lr_decay="cosine", warmup_steps=min(100, cfg["train_steps"] // 10),
                eval_data=(held_out, None), eval_every=max(1, cfg["train_steps"] // 20), eval_size=512,
                progress=progress)
    files = [save_checkpoint(out / "checkpoint.npz", model=model, params=res.params, ema_params=res.ema_params,
                             opt_state=res.opt_state, step=res.step, train_config=res.config, schedule=schedule,
                             history={"losses": res.losses, "eval_steps": res.eval_steps,
                                      "eval_losses": res.eval_losses})]
    x_T = np.random.default_rng([seed, 3]).standard_normal((N, 2))
    net, ref = res.ema_model(), oracle.as_model(schedule, "epsilon")

    def measure(x):
        sw = sliced_wasserstein(x, held_out, 256, np.random.default_rng([seed, 4]))
        return sw, energy_distance(x, held_out), oracle_nll(x, oracle)

    sw, ed, nll = measure(fresh)
    rows = [dict(sampler="data", steps=0, sw=sw, energy=ed, nll=nll, sw_oracle=float("nan"),
                 nll_oracle=float("nan"), seconds=0.0)]
    samples = {"data": fresh, "held_out": held_out}
    vp, T = InterpolatedVP(schedule), schedule.T
    net_c = lambda x, t: net(x, t * T - 1.0)  # noqa: E731  continuous t -> index tau = t T - 1, MATH.md (2.15)
    ref_c = oracle.as_model(vp, "epsilon")
    for method, n in SAMPLERS:
        if method == "ddpm":  # the full integer chain
            grid, m_net, m_ref = (schedule, timesteps(T, n, "trailing")), net, ref
        else:  # DPM-Solver's continuous view of the schedule, uniform in log-SNR
            grid, m_net, m_ref = (vp, time_grid(vp, n, "logSNR")), net_c, ref_c
        t0 = time.perf_counter()
        x = sample(m_net, x_T.astype(np.float32), *grid, method, rng=np.random.default_rng([seed, 5]),
                   progress=progress).astype(np.float64)
        secs = time.perf_counter() - t0
        x_ref = sample(m_ref, x_T, *grid, method, rng=np.random.default_rng([seed, 5]), progress=progress)
        sw, ed, nll = measure(x)
        rows.append(dict(sampler=method, steps=n, sw=sw, energy=ed, nll=nll, sw_oracle=measure(x_ref)[0],
                         nll_oracle=oracle_nll(x_ref, oracle), seconds=secs))
        samples[f"{method}_{n}"], samples[f"{method}_{n}_oracle"] = x, x_ref
    ok, message = _check(rows, quick)
    np.savez(out / "samples.npz", **samples)
    files.append(out / "samples.npz")
    (out / "results.json").write_text(json.dumps(strict_json({"rows": rows, "ok": ok, "check": message, "seed": seed,
                                                              "quick": quick, "settings": cfg,
                                                              "checkpoint_sha256": _sha256(out / "checkpoint.npz")}),
                                                 indent=1,
                                                 allow_nan=False))
    files.append(out / "results.json")
    files += _figures(out, samples, rows, res, stream)
    result = DemoResult(rows, ok, files, time.perf_counter() - t_start, message)
    print(format_table(rows), file=stream)
    print(message, file=stream)
    print(f"wrote {', '.join(str(f) for f in files)}  ({result.seconds:.0f} s)", file=stream, flush=True)
    return result


def _check(rows, quick):
    ddpm = next(r for r in rows if r["sampler"] == "ddpm")
    worst = max(r["sw"] for r in rows if r["sampler"] == "dpmpp_2m")
    ok = worst <= ddpm["sw"] + SW_TOL
    verdict = "PASS" if ok else "FAIL"
    msg = (f"check: SW2(DPM-Solver++(2M), 10 and 20 steps) <= SW2(DDPM, 1000 steps) + {SW_TOL}: "
           f"{worst:.4f} <= {ddpm['sw']:.4f} + {SW_TOL} -> {verdict}")
    if quick:
        return None, msg + " (--quick: not enforced)"
    return ok, msg


def format_table(rows) -> str:
    """The demo's table as text.

    Parameters
    ----------
    rows : list of dict
        ``DemoResult.rows``.

    Returns
    -------
    str
    """
    head = (f"{'sampler':<10}{'steps':>6}{'SW2':>9}{'energy':>9}{'NLL':>8}{'SW2 oracle':>12}"
            f"{'NLL oracle':>12}{'seconds':>9}")
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"rows must be a list of dicts (the demo's rows), got {type(rows).__name__}")
    lines = [head, "-" * len(head)]
    for r in rows:
        steps = "-" if r["steps"] == 0 else str(r["steps"])
        orc = "" if r["sampler"] == "data" else f"{r['sw_oracle']:12.4f}{r['nll_oracle']:12.3f}"
        orc = orc or f"{'-':>12}{'-':>12}"
        lines.append(f"{r['sampler']:<10}{steps:>6}{r['sw']:9.4f}{r['energy']:9.4f}{r['nll']:8.3f}{orc}{r['seconds']:9.2f}")
    lines.append("How to read it: the data row is a fresh draw of the data itself, what a perfect sampler "
                 "scores.  SW2 (sliced 2-Wasserstein) and energy (squared energy distance) are distances to "
                 "held-out data: lower is better, and rows within the sampling noise of the data row (SW2 sd "
                 f"~{SW_SD} at N = 4000) are as good as data.  NLL: mean -log p under the exact mixture (nats); "
                 "closer to the data row is better, lower is NOT (samples piled on the modes' centres score "
                 "below the data's entropy).  oracle: the same sampler on the exact denoiser (what the sampler "
                 "does with a perfect network); seconds: the network's sampling time.")
    return "\n".join(lines)


def _figures(out, samples, rows, res, stream):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("figures skipped: matplotlib is not installed (pip install matplotlib)", file=stream)
        return []
    keys = ["data"] + [f"{m}_{n}" for m, n in SAMPLERS]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2), sharex=True, sharey=True)
    ho = samples["held_out"]
    for ax, k, r in zip(axes, keys, rows):
        ax.scatter(ho[:, 0], ho[:, 1], s=2, c="0.8", lw=0, label="held-out data")
        ax.scatter(samples[k][:, 0], samples[k][:, 1], s=2, c="C0" if k == "data" else "C3", lw=0,
                   label="fresh data draw" if k == "data" else "samples")
        ax.legend(loc="lower left", fontsize=7, markerscale=4, frameon=False)
        title = "data (fresh draw)" if k == "data" else f"{r['sampler']}, {r['steps']} steps"
        ax.set_title(f"{title}\nSW2 {r['sw']:.3f}", fontsize=9)
        ax.set_xlim(-2.2, 2.2)
        ax.set_ylim(-2.2, 2.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("samples (red) over held-out data (grey); SW2: sliced Wasserstein distance to the held-out data, "
                 "lower is better, the data panel shows what the data itself scores", fontsize=9, y=1.06)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=90, bbox_inches="tight")  # keep the two-line titles
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    losses = res.losses
    k = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    ax.plot(np.arange(len(losses)), losses, c="0.8", lw=0.5, label="training loss (batch)")
    ax.plot(np.arange(k - 1, len(losses)), smooth, c="C0", label=f"training loss ({k}-step mean)")
    if len(res.eval_steps):
        ax.plot(res.eval_steps, res.eval_losses, "o-", c="C3", ms=3, label="held-out loss (EMA parameters)")
    ax.set_xlabel("update")
    ax.set_ylabel("epsilon MSE")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=90)
    plt.close(fig)
    return [out / "samples.png", out / "loss.png"]
