"""Checking another implementation's outputs against a reference-vector suite (written by
:func:`refdiff.vectors.write_suite`), and the report ``refdiff check`` prints.

An element passes when ``|actual - expected| <= atol + rtol * |expected|`` (non-finite
expected values must be matched exactly).  A case is PASS, PARTIAL (every output present
passes, some are missing), FAIL or MISSING; each failing output names its first diverging
step or row, missing names are matched against near misses, and float32 results get a hint.
The layout is documented in docs/verifying.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["OutputResult", "CaseResult", "check_suite", "format_report"]


# ---------------------------------------------------------------------------- checking
@dataclass
class OutputResult:
    """The outcome of one output of a case: ``status`` in "PASS", "FAIL", "MISSING"; on a
    failure ``first_bad`` is the first index along axis 0 with an element out of tolerance
    (a step of a trajectory, a row of a batch) and ``axis0`` what that axis counts.

    Parameters
    ----------
    name, status : str
        The output's name and status.
    max_abs, max_rel : float
        Worst absolute and relative errors.
    note : str
        Why it failed (and near misses).
    first_bad : int or None
        First index along axis 0 out of tolerance.
    axis0 : str
        What axis 0 counts.
    """

    name: str
    status: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    note: str = ""
    first_bad: int | None = None
    axis0: str = "row"


@dataclass
class CaseResult:
    """The outcome of one case: ``status`` in "PASS", "FAIL", "MISSING" (no results file),
    "PARTIAL" (every output present passes, some outputs are missing: an implementation of
    part of the case); ``outputs`` holds one :class:`OutputResult` per checked output.

    Parameters
    ----------
    name, status : str
        The case's name and status.
    max_abs, max_rel : float
        Worst errors over its outputs.
    worst : str
        The output with the worst absolute error.
    notes : list of str
        Per-output problems, near misses and the dtype hint.
    outputs : dict of OutputResult
        Per output.
    """

    name: str
    status: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    worst: str = ""
    notes: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)


def _read_manifest(suite: Path) -> dict:
    path = suite / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {str(suite)!r}: not a refdiff reference-vector suite")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from e
    from .vectors import SUITE_VERSION

    if m.get("suite_version") != SUITE_VERSION:
        raise ValueError(f"{str(path)!r} has suite_version {m.get('suite_version')!r}; this refdiff reads version {SUITE_VERSION}")
    return m


def _compare(expected, actual, rtol, atol):
    """(ok, max_abs, max_rel, note, first_bad) for one output; ``first_bad`` is the first
    index along axis 0 holding an element out of tolerance (None if all pass or 0-d)."""
    if actual.shape != expected.shape:
        return False, math.inf, math.inf, f"shape {actual.shape}, expected {expected.shape}", None
    if actual.dtype.kind not in "biuf":
        return False, math.inf, math.inf, f"dtype {actual.dtype} is not numeric", None
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    fin = np.isfinite(e)
    bad = np.zeros(e.shape, dtype=bool)
    bad[~fin] = ~((a[~fin] == e[~fin]) | (np.isnan(a[~fin]) & np.isnan(e[~fin])))
    bad[fin] = ~np.isfinite(a[fin])
    with np.errstate(invalid="ignore"):  # inf - inf where non-finite values are compared above
        d = np.abs(a - e)
        bad[fin] |= d[fin] > atol + rtol * np.abs(e[fin])
    note = ""
    if np.any(bad[~fin]):
        note = "non-finite values differ"
    elif np.any(~np.isfinite(a[fin])):
        note = "NaN/inf where a finite value is expected"
    first = int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]) if bad.ndim >= 1 and bad.any() else None
    if note:
        return False, math.inf, math.inf, note, first
    df = d[fin]
    if df.size == 0:
        return True, 0.0, 0.0, "", None
    rel = df / np.where(e[fin] != 0, np.abs(e[fin]), np.inf)
    return not bad.any(), float(df.max()), float(rel.max()), "", first


def _select(names, patterns):
    """{case: None (all outputs) or [output patterns]} for patterns "case" or "case:output"."""
    import fnmatch

    if patterns is None:
        return {k: None for k in names}
    chosen = {}
    for pat in patterns:
        case_pat, _, out_pat = str(pat).partition(":")
        hits = fnmatch.filter(names, case_pat)
        if not hits:
            raise ValueError(f"case pattern {case_pat!r} matches no case of the suite")
        for k in hits:
            if not out_pat:
                chosen[k] = None
            elif k not in chosen or chosen[k] is not None:
                chosen[k] = (chosen.get(k) or []) + [out_pat]
    return {k: chosen[k] for k in names if k in chosen}


def _near_miss(name, candidates):
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (the results have {close[0]!r}: a near miss?)" if close else ""


def _dtype_hint(arrays):
    low = sorted({str(a.dtype) for a in arrays if a.dtype.kind == "f" and a.dtype.itemsize < 8})
    if not low:
        return ""
    return (f"results are {'/'.join(low)} but the suite is float64: compute in float64, or pass "
            "--tol-factor 1e5 (tol_factor=1e5) to check a float32 implementation at its round-off")


def _check_case(name, spec, exp_path, res_path, out_pats, rtol, atol):
    import fnmatch

    if not res_path.is_file():
        others = [p.stem for p in res_path.parent.glob("*.npz")]
        return CaseResult(name, "MISSING", notes=[f"no {res_path.name}" + _near_miss(name, others)])
    outputs = [k for k in spec["outputs"] if out_pats is None or any(fnmatch.fnmatchcase(k, p) for p in out_pats)]
    if not outputs:
        raise ValueError(f"output patterns {out_pats} match no output of case {name!r} (outputs: {', '.join(spec['outputs'])})")
    try:
        with np.load(exp_path, allow_pickle=False) as E, np.load(res_path, allow_pickle=False) as R:
            exp = {k: E[k] for k in outputs}
            got = {k: R[k] for k in R.files}
    except (OSError, ValueError) as e:
        why = "not a .npz of numeric arrays" if "pickle" in str(e) else " ".join(str(e).split())
        return CaseResult(name, "FAIL", notes=[f"cannot read {res_path.name}: {why}"])
    axis0 = spec.get("output_axis0", {})
    r = CaseResult(name, "PASS", 0.0, 0.0)
    for k, e in exp.items():
        if k not in got:
            extra = [g for g in got if g not in spec["outputs"] and g not in spec.get("inputs", [])]
            o = OutputResult(k, "MISSING", note="MISSING" + _near_miss(k, extra))
        else:
            ok, da, dr, note, first = _compare(e, np.asarray(got[k]), rtol, atol)
            o = OutputResult(k, "PASS" if ok else "FAIL", da, dr, note, first, axis0.get(k, "row"))
            if not ok and not note:
                o.note = f"abs {da:.3g} rel {dr:.3g} > rtol {rtol:.1g}, atol {atol:.1g}"
            if first is not None and e.ndim >= 1 and e.shape[0] > 1:
                o.note += f"; first diverging {o.axis0} {first} ({k}[{first}])"
            if da > r.max_abs or math.isnan(r.max_abs):
                r.max_abs, r.worst = da, k
            r.max_rel = max(r.max_rel, dr)
        r.outputs[k] = o
    statuses = {o.status for o in r.outputs.values()}
    r.status = "FAIL" if "FAIL" in statuses else "PARTIAL" if "MISSING" in statuses else "PASS"
    r.notes = [f"{o.name}: {o.note}" if o.status == "FAIL" else f"output {o.name!r} {o.note}"
               for o in r.outputs.values() if o.status != "PASS"]
    hint = _dtype_hint([np.asarray(got[k]) for k in exp if k in got]) if r.status == "FAIL" else ""
    if hint:
        r.notes.append(hint)
    return r


def check_suite(suite, results, *, tol_factor: float = 1.0, cases=None) -> list:
    """Compare ``results/<case>.npz`` with the suite's outputs.

    Parameters
    ----------
    suite, results : path-like
        The folder written by :func:`write_suite` and the folder of ``<case>.npz`` files
        written by the implementation under test (each holding the case's output names).
    tol_factor : float
        Scales every rtol and atol (e.g. 1e5 to check a float32 implementation, whose
        round-off is ~1e-7 relative).
    cases : list of str, optional
        Shell-style patterns (``fnmatch``) restricting the check: ``"schedule_*"`` selects
        whole cases, ``"ode_steps:dpmpp_2m"`` (``case:output``) only some outputs of a case,
        for an implementation of one solver.  A pattern matching no case is a ValueError.

    Returns
    -------
    list of CaseResult
        One per selected case, in manifest order.  A case is "PASS" when every selected
        output passes, "PARTIAL" when every output present passes but some are missing,
        "FAIL" when an output fails (its note names the first diverging step or row),
        "MISSING" when there is no results file.  Near-miss names (``eta0.0`` for
        ``eta0``) and float32 results are pointed out in the notes.

    Raises
    ------
    FileNotFoundError, ValueError
        For a folder that is not a suite, a missing results folder, a bad ``tol_factor``
        or a pattern that matches nothing.
    """
    suite, results = Path(suite), Path(results)
    if not (isinstance(tol_factor, (int, float)) and math.isfinite(tol_factor) and tol_factor > 0):
        raise ValueError(f"tol_factor = {tol_factor!r} must be a finite number > 0")
    m = _read_manifest(suite)
    if not results.is_dir():
        raise FileNotFoundError(f"results directory {str(results)!r} does not exist")
    out = []
    for name, out_pats in _select(list(m["cases"]), cases).items():
        spec = m["cases"][name]
        exp_path = suite / f"{name}.npz"
        if not exp_path.is_file():
            raise FileNotFoundError(f"the suite lacks {str(exp_path)!r} listed in its manifest")
        out.append(_check_case(name, spec, exp_path, results / f"{name}.npz", out_pats,
                               spec["rtol"] * tol_factor, spec["atol"] * tol_factor))
    return out


def _expanded(r) -> bool:
    return r.status in ("PARTIAL", "FAIL") and len(r.outputs) > 1


def format_report(results: list) -> str:
    """The table printed by ``refdiff check``: one row per case with its worst absolute and
    relative error, and one indented row ``case:output`` per output under a case that is
    PARTIAL or FAIL (its status, errors, first diverging step or row, near misses).

    Parameters
    ----------
    results : list of CaseResult
        From :func:`check_suite`.

    Returns
    -------
    str
    """
    if not isinstance(results, (list, tuple)) or not all(isinstance(r, CaseResult) for r in results):
        raise TypeError(f"results must be a list of CaseResult (check_suite's output), got {type(results).__name__}")
    widths = [len(r.name) for r in results] + [4]
    widths += [len(r.name) + 3 + len(k) for r in results if _expanded(r) for k in r.outputs]
    w = max(widths)
    lines = [f"{'case':<{w}}  status   max abs err  max rel err  worst output / notes"]

    def nums(status, a, b):
        return "          -            -" if status == "MISSING" or math.isnan(a) else f"{a:11.3g}  {b:11.3g}"

    for r in results:
        if _expanded(r):  # details go on the output rows; the case row keeps what is not per output
            case_notes = [n for n in r.notes if not any(n.startswith((f"{k}:", f"output {k!r}")) for k in r.outputs)]
            missing = [k for k, o in r.outputs.items() if o.status == "MISSING"]
            failing = [k for k, o in r.outputs.items() if o.status == "FAIL"]
            head = [", ".join(f"{k}: FAIL" for k in failing)] if failing else []
            head += [f"{len(missing)} of {len(r.outputs)} outputs missing"] if missing else []
            note = "; ".join(head + case_notes)
        else:
            note = "; ".join(r.notes) if r.notes else r.worst
        lines.append(f"{r.name:<{w}}  {r.status:<7}  {nums(r.status, r.max_abs, r.max_rel)}  {note}".rstrip())
        if _expanded(r):
            for o in r.outputs.values():
                label = f"  {r.name}:{o.name}"
                note = o.note[len("MISSING"):].strip() if o.status == "MISSING" else o.note
                lines.append(f"{label:<{w}}  {o.status:<7}  {nums(o.status, o.max_abs, o.max_rel)}  {note}".rstrip())
    count = {s: sum(r.status == s for r in results) for s in ("PASS", "PARTIAL", "FAIL", "MISSING")}
    lines.append(f"{count['PASS']} of {len(results)} cases passed, {count['PARTIAL']} partial, {count['FAIL']} failed, "
                 f"{count['MISSING']} missing")
    return "\n".join(lines)
