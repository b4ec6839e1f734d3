"""Training step of the 8x8 U-Net: refdiff on NumPy against the same network in PyTorch
CPU eager mode, same thread count, same process.

One step = forward, epsilon-MSE loss gradient, backward, Adam update, at batch 128 on
the default ``UNetConfig`` (0.27M parameters).  Prints ms/step for both and their ratio,
the achieved GFLOP/s (matmul/conv FLOPs of the architecture counted analytically, a
backward counted as twice its forward) and the fraction of this machine's float32
matmul peak (measured here with a large ``np.matmul``).  Before timing it checks that
the two implementations compute the same function (same parameters -> same output and
gradients to float32 rounding).

    python benchmarks/bench_unet_train.py                 # threads = all cores
    python benchmarks/bench_unet_train.py --threads 1 --steps 30
    python benchmarks/bench_unet_train.py --profile       # cProfile of the refdiff step
    python benchmarks/bench_unet_train.py --layers reference   # the U-Net on the reference
                                                          # layers instead of refdiff.nn.fast
    python benchmarks/bench_unet_train.py --variants f43,direct   # a subset of the table
    python benchmarks/bench_unet_train.py --threads 2 --variants direct,direct:halves
                                  # ':halves': the batch in --threads slices on as many Python
                                  # threads (refdiff.training.BatchThreads), BLAS on one thread
    python benchmarks/bench_unet_train.py --threads 1 --clock cpu   # CPU time, not wall time
    python benchmarks/bench_unet_train.py --threads 2 --variants hwnc:halves --thread-times
                                  # also each slice thread's wall and CPU time per step
    python benchmarks/bench_unet_train.py --threads 2 --variants hwnc,hwnc:halves,hwnc:procs
                                  # ':procs': the batch slices on worker PROCESSES
                                  # (refdiff.training.BatchProcesses); prints their start-up
                                  # and per-step transfer costs after the table

By default every variant is timed in one table: the tuned path in the channels-last
layout ("hwnc": refdiff.nn.fast.set_layout("hwnc"), Winograd F(4x4,3x3) with
matrix-product transforms, refdiff/nn/fast_hwnc.py), and in the (C, H, W, N) layout
with Winograd F(4x4,3x3) ("f43"), F(2x2,3x3) ("f23"), the direct column-matrix
convolution ("direct"), and the reference layers ("reference"), each against PyTorch in
alternating rounds; the machine's load average is printed with it.

PyTorch is needed only here: ``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="alternating timing rounds; the best median is kept")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the refdiff step")
    ap.add_argument("--base-channels", type=int, default=None)
    ap.add_argument("--layers", choices=("fast", "reference", "all"), default="all",
                    help="time the tuned layers (refdiff.nn.fast, layout hwnc), the reference ones, or every variant "
                         "(hwnc, F(4,3), F(2,3), direct, reference; the default)")
    ap.add_argument("--variants", default=None,
                    help="comma-separated subset of hwnc,f43,f23,direct,reference (and hwnc-exact: hwnc with the "
                         "bit-identical GroupNorm + SiLU, fast.set_gnsilu('exact')); a suffix ':halves' runs that variant "
                         "as --threads batch slices on as many Python threads (refdiff.training.BatchThreads) with "
                         "BLAS pinned to one thread, e.g. direct,direct:halves; ':procs' runs the slices on "
                         "worker processes instead (refdiff.training.BatchProcesses; not 'reference:procs', whose "
                         "swapped layers the workers do not see)")
    ap.add_argument("--split", type=int, default=None,
                    help="batch slices (Python threads) of the ':halves' variants; default --threads")
    ap.add_argument("--thread-times", action="store_true",
                    help="after the table, time the first ':halves' variant again with each slice's wall and thread "
                         "CPU time recorded (forward and backward per thread: shows how well the slices overlap)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: CPU time of the process (less sensitive to other jobs on a shared "
                         "machine; meaningful for one thread only)")
    ap.add_argument("--no-torch", action="store_true",
                    help="do not time PyTorch (still checked for the same function): on a machine whose other cores "
                         "are busy, torch's thread pool spins (seconds per step at 2 threads), and the refdiff rows "
                         "and --thread-times do not need it")
    return ap.parse_args()


def use_reference_layers():
    """Point the U-Net's blocks at the reference layers of refdiff.nn.layers (same maps,
    NCHW, no in-place updates), for timing only: the library itself trains on
    refdiff.nn.fast.  Names a module does not have are skipped."""
    from refdiff.nn import blocks, unet, unet_blocks
    from refdiff.nn import layers as L

    names = ("conv2d_forward", "conv2d_backward", "groupnorm_forward", "groupnorm_backward", "silu_forward",
             "silu_backward", "upsample2x_forward", "upsample2x_backward", "concat_forward", "concat_backward")
    swap = {n: getattr(L, n) for n in names}
    swap["add_channel_shift"] = lambda h, eo: h + eo[:, :, None, None]

    def gnsilu_forward(x, gamma, beta, groups, eps=1e-5):  # the fused tuned layer's twin: the composition
        y, c_n = L.groupnorm_forward(x, gamma, beta, groups, eps)
        out, c_s = L.silu_forward(y)
        return out, (c_n, c_s)

    def gnsilu_backward(dout, cache):
        return L.groupnorm_backward(L.silu_backward(dout, cache[1]), cache[0])

    swap["groupnorm_silu_forward"], swap["groupnorm_silu_backward"] = gnsilu_forward, gnsilu_backward
    for mod in (blocks, unet, unet_blocks):
        for n, f in swap.items():
            if hasattr(mod, n):
                setattr(mod, n, f)
    # the U-Net's loop after its parameters were checked once calls the tuned layers' unchecked
    # twins (round 9): point it at the (now swapped) checked blocks instead
    for n, v in (("_FORWARD_UNCHECKED", unet._FORWARD), ("_BACKWARD_UNCHECKED", unet._BACKWARD),
                 ("_concat_f", swap["concat_forward"]), ("_conv_fu", blocks.conv_f), ("_gnsilu_fu", blocks.gnsilu_f),
                 ("_gnsilu_bu", blocks.gnsilu_b)):
        if hasattr(unet, n):
            setattr(unet, n, v)


# ----------------------------------------------------------------------- FLOP count
def unet_forward_flops(model, batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass: convolutions, linear maps
    and the two attention products; elementwise work is not counted."""
    c = model.config
    S, E = c.image_size, c.time_embed_dim
    flops = 2 * batch * (c.base_channels * E + E * E)  # time embedding MLP
    conv = lambda cin, cout, hw, k=3: 2 * batch * hw * hw * cout * cin * k * k  # noqa: E731
    down, mid, up = model._plan()
    hw = S
    for kind, name, ci, co, _, _ in down + mid + up:  # (kind, name, c_in, c_out, push, pop)
        if kind == "res":
            flops += conv(ci, co, hw) + conv(co, co, hw) + 2 * batch * E * co
            if ci != co:
                flops += conv(ci, co, hw, 1)
        elif kind == "attn":
            L = hw * hw
            flops += 2 * batch * L * ci * 3 * ci + 2 * batch * L * ci * ci + 2 * 2 * batch * L * L * ci
        elif kind == "down":
            hw //= 2
            flops += conv(ci, co, hw)
        elif kind == "up":
            hw *= 2
            flops += conv(ci, co, hw)
        elif kind == "conv":  # conv_in
            flops += conv(ci, co, hw)
        else:
            raise ValueError(f"FLOP count: block kind {kind!r} is not counted here")
    return flops + conv(c.widths[0], c.in_channels, S)


def matmul_peak_gflops(np, n=2048, reps=5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


_CLOCK = {"f": time.perf_counter}


def _time(f) -> float:
    clock = _CLOCK["f"]
    t0 = clock()
    f()
    return clock() - t0


# ----------------------------------------------------------------------- PyTorch twin
def torch_unet(torch, model):
    """The refdiff U-Net written with torch.nn.functional (same parameter dict, same
    block plan), so the two compute the same function."""
    F = torch.nn.functional
    c = model.config
    down, mid, up = model._plan()
    G = c.groups

    def lin(P, n, x):
        return x @ P[n + ".w"] + P[n + ".b"]

    def conv(P, n, x, stride=1):
        w = P[n + ".w"]
        return F.conv2d(x, w, P[n + ".b"], stride=stride, padding=w.shape[-1] // 2)

    def res(P, n, x, e):
        h = conv(P, n + ".conv1", F.silu(F.group_norm(x, G, P[n + ".norm1.gamma"], P[n + ".norm1.beta"])))
        h = h + lin(P, n + ".emb", e)[:, :, None, None]
        h = conv(P, n + ".conv2", F.silu(F.group_norm(h, G, P[n + ".norm2.gamma"], P[n + ".norm2.beta"])))
        return (conv(P, n + ".skip", x) if n + ".skip.w" in P else x) + h

    def attn(P, n, x):
        N, C, H, W = x.shape
        h = F.group_norm(x, G, P[n + ".norm.gamma"], P[n + ".norm.beta"])
        tok = h.permute(0, 2, 3, 1).reshape(N, H * W, C)
        q, k, v = lin(P, n + ".qkv", tok).split(C, dim=-1)
        o = lin(P, n + ".proj", F.scaled_dot_product_attention(q, k, v))
        return x + o.reshape(N, H, W, C).permute(0, 3, 1, 2)

    def forward(P, x, t):
        half = c.base_channels // 2
        omega = torch.exp(-torch.log(torch.tensor(c.max_period)) * torch.arange(half) / half)
        arg = (t.float() * c.time_scale)[:, None] * omega[None, :]
        s = torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
        e = F.silu(lin(P, "temb.lin2", F.silu(lin(P, "temb.lin1", s))))
        h, skips = x, []
        for kind, n, _, _, push, _ in down:
            h = res(P, n, h, e) if kind == "res" else conv(P, n, h, 2 if kind == "down" else 1)
            if push:
                skips.append(h)
        for kind, n, _, _, _, pop in mid + up:
            if pop:
                h = torch.cat([h, skips.pop()], dim=1)
            if kind == "res":
                h = res(P, n, h, e)
            elif kind == "attn":
                h = attn(P, n, h)
            else:
                h = conv(P, n, F.interpolate(h, scale_factor=2, mode="nearest"))
        return conv(P, "out.conv", F.silu(F.group_norm(h, G, P["out.norm.gamma"], P["out.norm.beta"])))

    return forward


# ----------------------------------------------------------------------- thread accounting
class _Timed:
    """The network with each forward / backward call's wall and thread CPU time recorded
    per thread (for --thread-times)."""

    def __init__(self, model, log):
        self.model, self.log = model, log

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _timed(self, kind, f, *a, **k):
        import threading

        w0, c0 = time.perf_counter(), time.thread_time()
        out = f(*a, **k)
        self.log.append((kind, threading.get_ident(), time.perf_counter() - w0, time.thread_time() - c0))
        return out

    def forward(self, *a, **k):
        return self._timed("forward", self.model.forward, *a, **k)

    def backward(self, *a, **k):
        return self._timed("backward", self.model.backward, *a, **k)


def thread_times(name, use, net, step, halves, steps):
    """Time ``steps`` steps of the ':halves' variant ``name`` with every slice's forward and
    backward timed on its own thread; print per-thread wall and CPU ms per step."""
    log = []
    with use(name):
        halves.model = _Timed(halves.model, log)
        try:
            step()
            log.clear()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            wall, cpu = (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps
        finally:
            halves.model = halves.model.model
            halves.close()
    print(f"{name}, {steps} steps: {1e3 * wall:.1f} ms wall, {1e3 * cpu:.1f} ms process CPU per step")
    tids = sorted({t for _, t, _, _ in log})
    for kind in ("forward", "backward"):
        for i, tid in enumerate(tids):
            w = sum(r[2] for r in log if r[0] == kind and r[1] == tid) / steps
            c = sum(r[3] for r in log if r[0] == kind and r[1] == tid) / steps
            print(f"  {kind}, slice thread {i}: {1e3 * w:.1f} ms wall, {1e3 * c:.1f} ms thread CPU per step")


def transfer_costs(name, use, net, step, procs, state, steps):
    """Print the ':procs' variant's costs: worker start-up, and per step the parameter copy
    into the shared buffer, and for forward and backward the main process's slice, the
    worker's (request received to reply sent) and the call's wall time; the exchange
    overhead is the call's wall time beyond the slower slice (messages, pickling, the
    workers' gradient copy and the main process's gradient sum and concatenation)."""
    rec = {"forward": [], "backward": []}
    with use(name):
        fwd, bwd = procs.forward, procs.backward

        def f(*a, **k):
            w0 = time.perf_counter()
            r = fwd(*a, **k)
            rec["forward"].append((time.perf_counter() - w0, dict(procs.last_exchange)))
            return r

        def b(*a, **k):
            w0 = time.perf_counter()
            r = bwd(*a, **k)
            rec["backward"].append((time.perf_counter() - w0, dict(procs.last_exchange)))
            return r

        procs.forward, procs.backward = f, b
        try:
            step()
            rec = {"forward": [], "backward": []}
            w0 = time.perf_counter()
            for _ in range(steps):
                step()
            wall = (time.perf_counter() - w0) / steps
            P = state["P"]
            copy = statistics.median(_time(lambda: procs._ensure(P)) for _ in range(50))  # noqa: B023
        finally:
            del procs.forward, procs.backward
    nbytes = sum(v.nbytes for v in state["P"].values())
    print(f"{name}: worker start-up {1e3 * procs.startup_s:.0f} ms ({procs.parts - 1} worker(s), once per object); "
          f"{steps} steps {1e3 * wall:.1f} ms/step wall")
    print(f"  parameters into the shared buffer: {1e3 * copy:.3f} ms per step ({nbytes / 1e6:.2f} MB, "
          f"{len(state['P'])} arrays)")
    for kind in ("forward", "backward"):
        med = lambda f: 1e3 * statistics.median(f(r) for r in rec[kind])  # noqa: E731
        call, loc, locc = med(lambda r: r[0]), med(lambda r: r[1]["local_s"]), med(lambda r: r[1]["local_cpu_s"])
        wrk, wrkc = med(lambda r: max(r[1]["worker_s"])), med(lambda r: max(r[1]["worker_cpu_s"]))
        over = med(lambda r: r[0] - max(r[1]["local_s"], max(r[1]["worker_s"])))
        print(f"  {kind}: call {call:.2f} ms; main slice {loc:.2f} ms wall, {locc:.2f} ms CPU; worker {wrk:.2f} ms "
              f"wall, {wrkc:.2f} ms CPU; exchange overhead (call - slower slice) {over:.2f} ms (medians)")


# ----------------------------------------------------------------------- main
VARIANTS = ("hwnc", "f43", "f23", "direct", "reference")  # also "hwnc-exact": hwnc with fast.set_gnsilu("exact")


def set_variant(name, saved):
    """Point the U-Net at the tuned layers with 3x3 method ``name`` ("f43", "f23",
    "direct") or at the reference layers ("reference"); ``saved`` keeps the tuned ones."""
    from refdiff.nn import blocks, fast, unet, unet_blocks

    for mod, attrs in saved.items():
        for k, v in attrs.items():
            setattr(mod, k, v)
    name = name.split(":")[0]
    fast.set_gnsilu("exact" if name == "hwnc-exact" else "fast")
    name = "hwnc" if name == "hwnc-exact" else name
    fast.set_layout("hwnc" if name == "hwnc" else "chwn")
    if name == "reference":
        use_reference_layers()
    elif name != "hwnc":
        fast.set_conv3x3(name)


def main():
    args = parse()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy loads its BLAS
    import numpy as np
    import torch

    from refdiff.nn import UNet, UNetConfig, blocks, unet, unet_blocks
    from refdiff.nn.optim import FlatAdam, adam_init

    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        _CLOCK["f"] = time.process_time
    from refdiff.training import BatchProcesses, BatchThreads

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    variants = VARIANTS if args.layers == "all" else (("reference",) if args.layers == "reference" else ("hwnc",))
    if args.variants:
        variants = tuple(args.variants.split(","))
    saved = {mod: dict(vars(mod)) for mod in (blocks, unet, unet_blocks)}
    cfg = UNetConfig() if args.base_channels is None else UNetConfig(base_channels=args.base_channels)
    model = UNet(cfg)
    rng = np.random.default_rng(0)
    P = model.init_params(rng)  # float32
    # perturb the zero-initialised output conv so gradients flow everywhere
    P["out.conv.w"] = (0.01 * rng.standard_normal(P["out.conv.w"].shape)).astype(np.float32)
    N = args.batch
    x = rng.standard_normal((N, cfg.in_channels, cfg.image_size, cfg.image_size)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, N)

    # ---- refdiff step (the Adam update as fit runs it: FlatAdam in place)
    state = {"P": P, "S": adam_init(P)}
    flat = FlatAdam(inplace=True)

    halves = BatchThreads(model, args.split or args.threads)
    if any(v.startswith("reference:procs") for v in variants):
        raise SystemExit("'reference:procs' is not supported: the workers run the tuned layers (use reference:halves)")
    procs = BatchProcesses(model, args.split or args.threads) if any(v.endswith(":procs") for v in variants) else None
    net = {"m": model}

    def refdiff_step():
        m = net["m"]
        out, cache = m.forward(state["P"], x, t)
        dout = (2.0 / out.size) * (out - eps)  # d/d out of mean((out - eps)^2)
        G, _ = m.backward(state["P"], cache, dout)
        state["P"], state["S"] = flat.update(state["P"], G, state["S"], lr=1e-4)

    def use(name):
        """Set the variant; returns the BLAS thread-limit context it runs under."""
        set_variant(name, saved)
        split = name.endswith((":halves", ":procs"))
        net["m"] = (procs if name.endswith(":procs") else halves) if split else model
        if split and threadpool_limits is None:
            raise SystemExit("the ':halves' and ':procs' variants need threadpoolctl (to pin BLAS to one thread)")
        return threadpool_limits(limits=1, user_api="blas") if split else contextlib.nullcontext()

    # ---- torch step
    fwd = torch_unet(torch, model)
    TP = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in P.items()}
    opt = torch.optim.Adam(list(TP.values()), lr=1e-4)
    tx, teps, tt = torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(t)

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((fwd(TP, tx, tt) - teps) ** 2)
        loss.backward()
        opt.step()

    # ---- same function?  (float32 rounding: relative error ~1e-5)
    tout = fwd(TP, tx, tt)
    torch.mean((tout - teps) ** 2).backward()
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    errs = {}
    for v in variants:
        with use(v):
            out, cache = net["m"].forward(P, x, t)
            G, _ = net["m"].backward(P, cache, (2.0 / out.size) * (out - eps))
        errs[v] = (rel(out, tout.detach().numpy()), max(rel(G[k], TP[k].grad.numpy()) for k in P))
    for v in TP.values():
        v.grad = None

    # ---- timing: alternate rounds so every variant and torch see the same machine load
    load0 = os.getloadavg()
    for v in variants:
        with use(v):
            for _ in range(args.warmup):
                refdiff_step()
    for _ in range(args.warmup if not args.no_torch else 0):
        torch_step()
    timed = variants + (() if args.no_torch else ("torch",))
    times = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name in timed:
            with (use(name) if name != "torch" else contextlib.nullcontext()):
                step = torch_step if name == "torch" else refdiff_step
                times[name].append(statistics.median(_time(step) * 1e3 for _ in range(args.steps)))
    load1 = os.getloadavg()

    flops = 3 * unet_forward_flops(model, N)
    peak = matmul_peak_gflops(np)
    print(f"U-Net {model.num_params()} params, batch {N}, {args.threads} threads "
          f"(':halves': {halves.parts} slices on as many Python threads, BLAS 1 thread), "
          f"numpy {np.__version__}, torch {torch.__version__}, {os.cpu_count()} cores")
    print(f"load average (1, 5, 15 min) before timing {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, "
          f"after {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
    print(f"FLOPs per training step (3 x forward {flops / 3 / 1e9:.3f} GFLOP): {flops / 1e9:.3f} GFLOP; "
          f"float32 matmul peak (np.matmul 2048^3): {peak:.1f} GFLOP/s")
    print(f"clock: {args.clock}; {args.repeats} alternating rounds of {args.steps} steps; ms/step = the best round's median "
          f"(range over rounds); ratio = best / torch's best (range of per-round ratios)")
    print(f"| variant | ms/step | range | GFLOP/s | % peak | ratio to torch | per-round ratios | "
          f"rel. err. out / worst grad vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    tb = min(times["torch"]) if "torch" in times else None
    for name in timed:
        b = min(times[name])
        g = flops / b / 1e6
        err = f"{errs[name][0]:.1e} / {errs[name][1]:.1e}" if name in errs else "-"
        if tb is None:
            ratio = "- | -"
        else:
            rr = [a / c for a, c in zip(times[name], times["torch"])]
            ratio = f"{b / tb:.2f} | {min(rr):.2f}-{max(rr):.2f}"
        print(f"| {name} | {b:.1f} | {min(times[name]):.1f}-{max(times[name]):.1f} | {g:.1f} | "
              f"{100 * g / peak:.1f}% | {ratio} | {err} |")

    halves.close()
    if procs is not None:
        transfer_costs([v for v in variants if v.endswith(":procs")][0], use, net, refdiff_step, procs, state, args.steps)
        procs.close()
    split = [v for v in variants if v.endswith(":halves")]
    if args.thread_times and split:
        thread_times(split[0], use, net, refdiff_step, halves, args.steps)
    if args.profile:
        use(variants[0])
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(args.steps):
            refdiff_step()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "15")))


if __name__ == "__main__":
    main()
