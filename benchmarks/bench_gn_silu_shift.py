"""The residual block's shift + GroupNorm + SiLU per layer, folded (MATH.md (23.12),
MATH.md (23.13), ``fast.set_shift_fold("fold")``) against the add first ("add": the
shift added by ``add_channel_shift``, the fast fused layer, the spatial sum of dx),
forward and backward separately, the two forms alternating per round; one thread, CPU
time, float32, the default U-Net's shapes at batch 128; also the pieces the fold removes
or adds (the add, the spatial sum, the statistics with and without the shift).

    python benchmarks/bench_gn_silu_shift.py [--batch 128 --calls 200 --rounds 3] [--torch]

``--torch`` also times PyTorch's ``silu(group_norm(x + c))`` (NCHW, eager, one thread) with
``torch.autograd.grad`` for x, c, gamma and beta: what the layer costs there.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_us(f, calls):
    ts = []
    for _ in range(calls):
        t0 = time.process_time()
        f()
        ts.append(time.process_time() - t0)
    return statistics.median(ts) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch", action="store_true")
    a = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    from refdiff.nn import fast, fast_hwnc as hw, fast_hwnc_norm as hwn

    fast.set_layout("hwnc")
    fast.set_gnsilu("fast")
    N = a.batch
    print(f"shift + GroupNorm + SiLU, batch {N}, float32, groups 8, 1 thread, CPU time, median of {a.calls} calls, "
          f"{a.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    for C, S in ((32, 8), (32, 4), (64, 8)):
        x = hw.to_nchw(rng.standard_normal((S, S, N, C)).astype(np.float32))
        d = hw.to_nchw(rng.standard_normal((S, S, N, C)).astype(np.float32))
        c = rng.standard_normal((N, C)).astype(np.float32)
        g, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        res = {"add": ([], []), "fold": ([], [])}
        for _ in range(a.rounds):
            for mode in res:
                fast.set_shift_fold(mode)
                _, cache = fast.groupnorm_silu_shift_forward(x, c, g, b, 8)
                res[mode][0].append(_median_us(lambda: fast.groupnorm_silu_shift_forward(x, c, g, b, 8), a.calls))
                res[mode][1].append(_median_us(lambda: fast.groupnorm_silu_shift_backward(d, cache), a.calls))
        fast.set_shift_fold("fold")
        x2 = hw.to_hwnc(x).reshape(-1, N * C)
        pieces = {"add x + c": lambda: fast.add_channel_shift(x, c), "sum_p dx": lambda: np.sum(d, axis=(2, 3)),
                  "stats with shift": lambda: hwn._shifted_stats(x2, c, N, 8, C // 8, 1e-5),
                  "stats without": lambda: hwn._fast_stats(x2, N, 8, C // 8, 1e-5)}
        f = {m: (statistics.median(v[0]), statistics.median(v[1])) for m, v in res.items()}
        if a.torch:
            print(_torch_row(np.asarray(x), c, g, b, np.asarray(d), a.calls))
        print(f"C {C}, {S}x{S}: add fwd {f['add'][0]:.0f} bwd {f['add'][1]:.0f} us; fold fwd {f['fold'][0]:.0f} "
              f"bwd {f['fold'][1]:.0f} us (fold/add fwd {f['fold'][0] / f['add'][0]:.2f}, bwd "
              f"{f['fold'][1] / f['add'][1]:.2f}); " + ", ".join(f"{k} {_median_us(p, a.calls):.0f} us"
                                                              for k, p in pieces.items()))


def _torch_row(x, c, g, b, d, calls):
    """PyTorch's shift + GroupNorm + SiLU forward and backward times on the same numbers."""
    import torch

    torch.set_num_threads(1)
    xt, ct, gt, bt = (torch.tensor(v, requires_grad=True) for v in (x.copy(), c, g, b))
    dt = torch.tensor(d.copy())

    def fwd():
        return torch.nn.functional.silu(torch.nn.functional.group_norm(xt + ct[:, :, None, None], 8, gt, bt))

    def bwd():
        return torch.autograd.grad(fwd(), (xt, ct, gt, bt), dt)

    tf = _median_us(fwd, calls)
    tb = _median_us(bwd, calls) - tf  # forward + backward, less the forward
    return f"  torch (NCHW): fwd {tf:.0f} us, bwd {tb:.0f} us"


if __name__ == "__main__":
    main()
