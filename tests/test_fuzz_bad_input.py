"""Issue 19: every public callable refuses every bad input with a clear error.

The callables are enumerated from the package (tests/fuzz/harness.py, the enumeration of
tests/test_docs.py), so a new public callable is covered automatically: it needs a valid
call built from its parameter names, a recipe in tests/fuzz/recipes_<area>.py, or an
exemption with its reason, else the completeness test fails.  For each argument, each bad
value of its kind (harness.CATALOGUE: None, lists, strings, NaN/inf, empty, mismatched
batch, int/bool/float16/complex arrays, out-of-range timesteps, bad grids, bad options,
bools and non-finite numbers where numbers are meant) is tried one at a time; the call must
raise TypeError/ValueError naming the argument (NaN/inf: or propagate, where declared).
The enumeration is fixed (no random draws), so the run is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from fuzz import harness as H

# Modules outside issue 19's four areas (module -> reason); temporary, like PENDING.
UNASSIGNED = {}

RECIPES, EXEMPT, PENDING = H.recipes()
CALLABLES = H.public_callables()


def _pending(module, qualname):
    return next((r for k, r in {**PENDING, **UNASSIGNED}.items() if k in (module, qualname)), None)


def test_enumeration_is_test_docs_enumeration():
    """The harness fuzzes exactly the callables the API reference documents."""
    from test_docs import documented_callables

    assert [q for _, q, _ in CALLABLES] == [q for q, _ in documented_callables()]


def test_every_public_callable_is_covered():
    """Each public callable has an automatic valid call, a recipe or an exemption; the
    recipe and exemption keys name existing callables."""
    names = {q for _, q, _ in CALLABLES}
    stale = sorted((set(RECIPES) | set(EXEMPT)) - names)
    assert not stale, f"recipes/exemptions for callables that do not exist: {stale}"
    both = sorted(set(RECIPES) & set(EXEMPT))
    assert not both, f"both a recipe and an exemption: {both}"
    uncovered = []
    for m, q, obj in CALLABLES:
        if not _pending(m, q):
            why = H.uncovered_reason(m, q, obj)
            if why:
                uncovered.append(f"{q}: {why}")
    assert not uncovered, ("add a recipe (tests/fuzz/recipes_<area>.py) or an exemption:\n"
                           + "\n".join(uncovered))


_PARAMS = [pytest.param(m, q, id=q) for m, q, _ in CALLABLES if q not in EXEMPT]


@pytest.mark.parametrize("module, qualname", _PARAMS)
def test_bad_input_is_refused_naming_the_argument(module, qualname):
    """Every bad value of every argument: a TypeError/ValueError naming the argument (or
    declared NaN propagation); the valid call runs and gives finite values."""
    reason = _pending(module, qualname)
    if reason:
        pytest.skip(f"pending (issue 19 in progress): {reason}")
    failed = H.failures(H.run_callable(qualname))
    assert not failed, f"{len(failed)} bad inputs not refused clearly:\n" + "\n".join(
        f"  {o.arg or '(valid call)'} <- {o.probe}: {H.OUTCOMES[o.result]}  {o.detail}" for o in failed)


def test_declared_nan_propagation_is_documented():
    """A recipe's ``nan_propagates`` is the policy's exception for pure algebra, allowed only
    where the documentation says so: the callable's docstring (or its class's or module's)
    mentions NaN."""
    import importlib
    import inspect

    undocumented = []
    for qualname, factory in sorted(RECIPES.items()):
        module = next((m for m, q, _ in CALLABLES if q == qualname), None)
        if module is None or _pending(module, qualname):
            continue
        call = factory()
        if not call.nan_propagates:
            continue
        owner = getattr(call.fn, "__self__", None)
        docs = [inspect.getdoc(call.fn), inspect.getdoc(type(owner)) if owner is not None else None,
                importlib.import_module(module).__doc__]
        if not any("NaN" in (d or "") for d in docs):
            undocumented.append(qualname)
    assert not undocumented, f"nan_propagates declared but no docstring mentions NaN: {undocumented}"


def test_the_classifier_can_fail():
    """The harness tells a checked function from unchecked ones: a clear error passes; a
    NumPy error, an unnamed refdiff-style error, silent acceptance, undeclared NaN and a
    failing valid call are each reported."""
    from refdiff._validate import check_array

    def checked(x):
        """Parameters ---------- x : array"""
        check_array("x", x, finite=True)
        return x * 2

    def unchecked(x):
        return np.asarray(x, dtype=float) * 2

    def unnamed(x):
        if not isinstance(x, np.ndarray):
            raise TypeError("bad input")
        return x * 2

    ok = H.Call(checked, {"x": np.ones((2, 3))})
    assert not H.failures(H.run_probes(ok))
    results = {o.probe: o.result for o in H.run_probes(H.Call(unchecked, {"x": np.ones((2, 3))}))}
    assert results["list"] == "accepted" and results["nan"] == "nan_undeclared"
    assert results["string"] == "unnamed_internal"
    results = {o.probe: o.result for o in H.run_probes(H.Call(unnamed, {"x": np.ones((2, 3))}))}
    assert results["None"] == "unnamed_refdiff" or results["None"] == "unnamed_internal"
    assert H.run_probes(H.Call(checked, {"x": [1.0]}))[0].result == "valid_failed"
    declared = H.run_probes(H.Call(unchecked, {"x": np.ones(3)}, nan_propagates={"x"}))
    assert {o.probe: o.result for o in declared}["nan"] == "nan_declared"
    # "x" is a whole word: a message about x_t does not name x
    assert H.classify(lambda x: (_ for _ in ()).throw(ValueError("x_t bad")), {"x": 1}, "x", "reject")[0] != "clear"
