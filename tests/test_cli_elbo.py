"""`refdiff elbo`: every printed estimate carries its standard error, and the uniform-t
estimator agrees with the full sum (MATH.md (5.13))."""

import math
import re

from refdiff.cli import main

ROW = re.compile(r"^\s+total\s+(\S+) ± (\S+)\s+nats/sample", re.M)


def _run(capsys, *args):
    assert main(["elbo", "--oracle", *args]) == 0
    return capsys.readouterr().out


def test_every_estimate_printed_with_its_standard_error(capsys):
    """Each line that prints nats or bits/dim prints '±' and a standard error beside each."""
    for est in ("full", "uniform"):
        out = _run(capsys, "--n", "16", "--T", "20", "--estimator", est)
        rows = [ln for ln in out.splitlines() if "nats/sample" in ln]
        assert len(rows) >= 3
        for ln in rows:
            assert ln.count("±") >= (2 if "bits/dim" in ln else 1), ln


def test_uniform_estimator_mean_over_seeds_matches_full(capsys):
    """MATH.md (5.13): on the 8gaussians oracle (T = 20, 64 points), the mean over 20 seeds
    of the uniform estimator's printed total lies within 3 standard errors of the mean of
    the full estimator's totals over the same seeds (same data per seed); the standard
    error of each 20-seed mean combines the printed ones, sqrt(sum se_i^2) / 20."""
    means = {}
    for est in ("uniform", "full"):
        vals = []
        for seed in range(20):
            m, se = ROW.search(_run(capsys, "--n", "64", "--T", "20", "--estimator", est, "--seed", str(seed))).groups()
            vals.append((float(m), float(se)))
        means[est] = (sum(v for v, _ in vals) / 20, math.sqrt(sum(s * s for _, s in vals)) / 20)
    (mu, su), (mf, sf) = means["uniform"], means["full"]
    assert abs(mu - mf) < 3 * math.sqrt(su**2 + sf**2), (means, (mu - mf) / math.sqrt(su**2 + sf**2))
