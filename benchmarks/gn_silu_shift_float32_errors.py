"""float32 errors of the residual block's shift + GroupNorm + SiLU, folded
(``fast.set_shift_fold("fold")``, MATH.md (23.12), MATH.md (23.13)) and as the composition
(the shift added in float32, then the bit-identical fused layer, then the float32 sum of
dx), against the float64 reference composition, on 400 random cases (shapes, groups, x
offsets and shifts that keep the one-pass branch or leave it), in units of u = 2^-24 of
each result's natural scale (those of tests/test_nn_gnsilu_shift.py): prints the largest
and median error per result (output, dx, dshift, dgamma, dbeta) and the largest ratio
fold / max(composition, 1) (the test bounds it by 17, MATH.md (23.11)).

    python benchmarks/gn_silu_shift_float32_errors.py [--cases 400]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=400)
    a = ap.parse_args()
    import numpy as np

    from refdiff.nn import fast
    from tests.test_nn_gnsilu_shift import U32, _case, _reference, _run, _scales

    fast.set_layout("hwnc")
    rng = np.random.default_rng(1)
    shifts = [(0.0, 0.0, 1.0), (0.0, 1.0, 0.5), (2.0, -1.0, 0.3), (0.0, 3.0, 0.1), (-30.0, 30.0, 0.0),
              (5.0, 0.0, 4.0), (0.0, -100.0, 1.0), (0.0, 2.0, 0.0), (1.0, 1.0, 1.0)]
    E = {"fold": [], "composition": []}
    for _ in range(a.cases):
        n, G, k = int(rng.integers(1, 4)), int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 3, 8]))
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        x, c, gamma, beta, dout = _case(rng, n, G, k, h, w, *shifts[int(rng.integers(len(shifts)))])
        want, ybar = _reference(x, c, gamma, beta, dout, G)
        scales = _scales(x, c, gamma, dout, G, want, ybar)
        for name, fold in (("fold", True), ("composition", False)):
            got = _run(x, c, gamma, beta, dout, G, "float32", fold)
            E[name].append([float(np.linalg.norm(np.asarray(g, np.float64) - wv)) / s / U32
                            for g, wv, s in zip(got, want, scales)])
    print(f"{a.cases} cases; columns: output, dx, dshift, dgamma, dbeta; errors in u of each natural scale")
    for m, v in E.items():
        v = np.array(v)
        print(f"{m}: max {v.max(0).round(1)}, median {np.median(v, 0).round(2)}")
    r = np.array(E["fold"]) / np.maximum(np.array(E["composition"]), 1.0)
    print(f"ratio fold / max(composition, 1): max {r.max(0).round(2)}, median {np.median(r, 0).round(2)}")


if __name__ == "__main__":
    main()
