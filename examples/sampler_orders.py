"""Print the measured convergence order of every ODE sampler and save an error-vs-steps plot.

Errors are RMS distances to the exact probability-flow ODE map of a Gaussian oracle (flow
midpoint: a fine RK4 reference on a 2-D mixture); the setups are stated in
``refdiff/samplers/orders.py`` and MATH.md (10.17), (11.11).  Every ODE sampler registered
in ``refdiff.sample`` that has an order setup is included (DDIM, Euler, Heun, DPM-2 from the
sigma-space family; DPM-Solver; RK4 PF-ODE; flow Euler/midpoint/RK4).

    python examples/sampler_orders.py [--out figures] [--steps 16 32 64 128] [--tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128], help="step counts to fit over")
    p.add_argument("--samples", type=int, default=16, help="samples x_T per run (RMS over them)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.samples = [8, 16], 4
    from refdiff.samplers import orders

    out = _common.out_dir(args.out)
    result = orders.measure_orders(steps=tuple(args.steps), n_samples=args.samples, seed=args.seed)
    print(f"{'setup':<20}{'expected':>9}{'measured':>10}   RMS errors at steps {args.steps}")
    for label, r in result.items():
        errs = " ".join(f"{e:.1e}" for e in r["errors"])
        print(f"{label:<20}{r['expected']:>9}{r['order']:>10.2f}   {errs}")
    path = orders.plot_errors(result, out / "sampler_orders.png")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
