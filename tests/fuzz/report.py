"""Summary table of the bad-input fuzz run (issue 19), per module and in total.

    PYTHONPATH=$PWD python3 -m tests.fuzz.report                 # the whole package
    PYTHONPATH=$PWD python3 -m tests.fuzz.report refdiff.forward --failures

Every public callable is run, PENDING modules included (the test skips those).  Columns:
the probes that must be refused (clear error naming the argument, declared NaN
propagation; errors not naming it from refdiff's own checks or from inside NumPy/Python;
silently accepted; NaN in -> NaN out undeclared; timeouts), then the valid calls (failed:
no recipe or a broken one; NaN/inf from finite input).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from . import harness as H

COLS = [("clear", "clear"), ("nan_declared", "NaN decl."), ("unnamed_refdiff", "unnamed (refdiff)"),
        ("unnamed_internal", "unnamed (internal)"), ("accepted", "accepted"),
        ("nan_undeclared", "NaN undecl."), ("timeout", "timeout")]


def key(o) -> str:
    """The tally column of an Outcome: must-refuse probes by result; valid calls and edge
    cases prefixed."""
    if o.expect == "valid":
        return "valid:" + o.result
    if o.expect == "edge":
        return "edge:" + ("ok" if o.result in ("edge_ok", "edge_refused") else o.result)
    return o.result


def table(per_module) -> str:
    head = (["module", "callables"] + [c for _, c in COLS]
            + ["% clear", "edge ok", "edge wrong", "f32 differs", "valid failed", "NaN from finite"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = collections.Counter()
    for m, c in sorted(per_module.items()) + [("**total**", None)]:
        if c is None:
            c = total
        else:
            total.update(c)
        n = sum(v for k, v in c.items() if k.startswith("valid:"))
        probes = sum(c[k] for k, _ in COLS)
        pct = f"{100 * (c['clear'] + c['nan_declared']) / probes:.0f}" if probes else "-"
        edge_wrong = sum(v for k, v in c.items() if k.startswith("edge:") and k not in ("edge:ok", "edge:float32_differs"))
        cells = ([m, str(n)] + [str(c[k]) for k, _ in COLS]
                 + [pct, str(c["edge:ok"]), str(edge_wrong), str(c["edge:float32_differs"]),
                    str(c["valid:valid_failed"] + c["valid:timeout"]),
                    str(c["valid:nan_from_finite"] + c["edge:nan_from_finite"])])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(per_module) -> str:
    """The issue's outcome table over every call made (valid calls, probes and edge cases)."""
    c = collections.Counter()
    for v in per_module.values():
        c.update(v)
    total = sum(c.values())
    refuse = sum(c[k] for k, _ in COLS)
    edge_bad = sum(v for k, v in c.items() if k.startswith("edge:") and k not in ("edge:ok", "edge:float32_differs"))
    rows = [
        ("clear error naming the argument (bad input refused)", c["clear"]),
        ("documented NaN/inf propagation (pure algebra, declared)", c["nan_declared"]),
        ("error that does not name the argument: refdiff's own check", c["unnamed_refdiff"]),
        ("error that does not name the argument: inside NumPy/Python", c["unnamed_internal"]),
        ("silently accepted: invalid value computed", c["accepted"]),
        ("silently accepted: NaN in -> NaN out, undeclared", c["nan_undeclared"]),
        ("silently wrong: finite in -> NaN/inf out", c["valid:nan_from_finite"] + c["edge:nan_from_finite"]),
        ("silently wrong: float32 result differs from float64 by > 1 %", c["edge:float32_differs"]),
        ("timeout (10 s per probe)", c["timeout"] + c["valid:timeout"]),
        ("valid edge case accepted correctly or refused clearly", c["edge:ok"]),
        ("valid edge case: unclear error", edge_bad - c["edge:nan_from_finite"]),
        ("valid call ran", c["valid:valid_ok"]),
        ("valid call failed (no recipe, or a broken one)", c["valid:valid_failed"]),
    ]
    lines = ["| outcome | calls |", "|---|---|"]
    for name, n in rows:
        must = refuse - c["nan_declared"]  # the probes that must raise
        pct = f" ({100 * n / must:.1f} % of {must:,} probes that must raise)" if name.startswith("clear") and must else ""
        lines.append(f"| {name} | {n:,}{pct} |")
    lines.append(f"| **all calls** | {total:,} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prefixes", nargs="*", help="module or qualname prefixes (default: all)")
    ap.add_argument("--failures", action="store_true", help="list each failing probe")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    per_module = collections.defaultdict(collections.Counter)
    failing = []
    _, exempt, _ = H.recipes()
    for m, q, _ in H.public_callables():
        if q in exempt:
            continue
        if args.prefixes and not any(q == p or q.startswith(p + ".") for p in args.prefixes):
            continue
        outs = H.run_callable(q)
        for o in outs:
            per_module[m][key(o)] += 1
        failing += [(q, o) for o in H.failures(outs)]
    print(table(per_module))
    print()
    print(summary(per_module))
    print(f"\n{len(failing)} failing probes; {time.perf_counter() - t0:.1f} s")
    if args.failures:
        for q, o in failing:
            print(f"{q}: {o.arg or '(valid call)'} <- {o.probe}: {H.OUTCOMES[o.result]}  {o.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
