"""Bad-input fuzz harness (issue 19): every public callable, every argument, every bad value.

How it works
------------
For each public callable (enumerated like tests/test_docs.py), a *valid call* is built:
either automatically, from the parameter NAMES (``_factory`` below: ``schedule``, ``x``,
``x0``, ``x_t``, ``eps``, ``noise``, ``t`` (with a schedule), ``rng``, ``model``,
``denoiser``, ``n``, ``alpha``, ``sigma``, ``mean``, ``cov``, ...; only the parameters
without a default are needed), or by a recipe.  A method is called on an instance built from
its class's Call (``params`` from the instance's ``init_params`` when it has one); a
``X_backward(dout, cache)`` / ``Class.backward`` is paired with its forward automatically
(``backward_call``).  The valid call must run and return finite values.  Then each argument
in turn is replaced by each bad value of its *kind* (``CATALOGUE``: "array", "int_array",
"timestep", "grid", "sigmas", "int", "float", "coef", "bool", "option", "label", "rng",
"shape", "object"), one at a time, and the outcome is classified (``classify``).  Expected:
TypeError/ValueError whose message names the argument (a whole word: ``x`` is not matched
by ``x_t``).  NaN/inf probes pass with that error too (or FloatingPointError naming it), or,
where the recipe declares ``nan_propagates``, whatever the arithmetic gives.  "edge" probes
(float32 arrays, NumPy scalars, per-sample coefficients) are valid: accepted with a finite
result (float32 within 1 % of the float64 result) or refused clearly.

How to add a recipe (in your area's ``tests/fuzz/recipes_<area>.py``)
-------------------------------------------------------------------
::

    from .harness import Call, auto_call, backward_call, ctx

    def _q_sample():
        c = ctx()                                  # shared small sizes: c.B=2, c.D=3, c.T=10
        return Call(q_sample, dict(schedule=c.schedule(), x0=c.array(), t=c.t(), noise=c.array()),
                    nan_propagates={"x0", "noise"})

    RECIPES = {"refdiff.forward.q_sample": _q_sample}
    EXEMPT = {"refdiff.x.f": "takes no argument a caller can get wrong (reason)"}
    PENDING = {"refdiff.x": "temporary: not validated yet"}    # empty it when your area is done

The key is the qualname as test_docs.documented_callables() spells it (a method:
"refdiff.nn.unet.UNet.forward"; a recipe for a method returns ``Call(instance.forward, ...)``).
``auto_call(qualname, **overrides)`` gives the automatic Call with some keyword arguments
replaced or ``Call`` options set, e.g. ``auto_call("refdiff.metrics.sliced_wasserstein",
kwargs=dict(y=ctx().array()))``.  ``Call`` options (all keyed by argument name):

- ``kwargs``: the valid keyword arguments (positional-only parameters are passed in order);
- ``nan_propagates={"x"}``: documented NaN/inf propagation (the docstring must say so);
- ``skip={"model": "reason"}``: do not fuzz this argument;
- ``kinds={"t": "float"}``: override the inferred kind (see ``CATALOGUE``);
- ``accept={"x": {"empty"}}``: these probe labels are valid for this argument (edge cases);
- ``bad={"n": {"zero": 0}}``: extra bad values that must be refused;
- ``ref={"noise": array}``: the reference value for an optional argument left at its
  default in ``kwargs`` (probes such as "batch" are derived from it);
- ``nonfinite_ok="reason"``: the valid call's result may hold inf/NaN (e.g. a log-density);
- ``aliases={"out": "model output"}``: another phrase that names the argument in messages
  (e.g. a model's output checked by a validator whose messages speak of "the model").

``PENDING`` (module or qualname -> reason) is the temporary allow-list: the per-argument
test skips those callables and the completeness test tolerates them; each area empties its
own.  Optional parameters are fuzzed too when their kind can be inferred (from ``kinds``,
the name, or the default's type: bool, int, float, str); a default of None makes the None
probe valid.  ``PYTHONPATH=$PWD python3 -m tests.fuzz.report [prefix ...] [--failures]``
prints the summary table (pending modules included) and, with ``--failures``, each failing
probe with its message: the quickest way to work through a module.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import importlib
import inspect
import math
import pkgutil
import re
import signal
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import refdiff

from .catalogue import BATCH, CATALOGUE, infer_kind  # noqa: F401  (re-exported)
from .factories import Ctx, NoFactory, _factory, ctx  # noqa: F401  (re-exported)

SKIP_MODULES = {"refdiff.__main__", "refdiff._version"}
TIMEOUT_S = 10.0  # one probe; a probe that runs longer is reported as "timeout"
VALID_TIMEOUT_S = 60.0  # the valid call (may import a data set or build a network first)


# --------------------------------------------------------------------------- enumeration
def public_modules():
    names = ["refdiff"]
    for info in pkgutil.walk_packages(refdiff.__path__, prefix="refdiff."):
        if any(p.startswith("_") for p in info.name.split(".")[1:]) or info.name in SKIP_MODULES:
            continue
        names.append(info.name)
    return sorted(names)


@functools.lru_cache(maxsize=None)
def public_callables():
    """(module, qualname, object) for each public callable and public method (the same
    enumeration as tests/test_docs.py's documented_callables)."""
    out = []
    for m in public_modules():
        mod = importlib.import_module(m)
        for n in getattr(mod, "__all__", []):
            obj = getattr(mod, n)
            if not callable(obj) or getattr(obj, "__module__", None) != m:
                continue
            out.append((m, f"{m}.{n}", obj))
            if inspect.isclass(obj):
                out += [(m, f"{m}.{n}.{k}", v) for k, v in vars(obj).items()
                        if not k.startswith("_") and inspect.isfunction(v)]
    return tuple(out)


# --------------------------------------------------------------------------- the Call
@dataclass
class Call:
    """A valid call of ``fn`` with ``kwargs``, and the per-argument options (harness doc)."""

    fn: Callable
    kwargs: dict = field(default_factory=dict)
    nan_propagates: set = field(default_factory=set)
    skip: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)
    accept: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)
    nonfinite_ok: str = ""
    aliases: dict = field(default_factory=dict)


def _params(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return [p for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def missing_factories(fn) -> list:
    """Required parameters of ``fn`` that no factory can build (empty: auto-callable)."""
    ps = _params(fn)
    if ps is None:
        return ["<no signature>"]
    names, c, out = {p.name for p in ps}, Ctx(), []
    for p in ps:
        if p.default is p.empty:
            try:
                _factory(p.name, names, c)
            except NoFactory:
                out.append(p.name)
    return out


def auto_call(target, **options) -> Call:
    """The automatic Call of ``target`` (a qualname or a callable); ``options`` are Call
    fields, ``kwargs`` entries replace the automatic ones."""
    fn, kwargs = _auto_target(target) if isinstance(target, str) else (target, {})
    kwargs.update(options.pop("kwargs", {}))
    ps, c = _params(fn), Ctx()
    names = {p.name for p in ps}
    auto = {p.name: _factory(p.name, names, c) for p in ps if p.default is p.empty and p.name not in kwargs}
    return Call(fn, {**auto, **kwargs}, **options)


def recipes():
    """(RECIPES, EXEMPT, PENDING) merged over the four area files."""
    R, E, P = {}, {}, {}
    for area in ("core", "samplers", "nn", "systems"):
        mod = importlib.import_module(f"{__package__}.recipes_{area}")
        R.update(mod.RECIPES)
        E.update(mod.EXEMPT)
        P.update(getattr(mod, "PENDING", {}))
    return R, E, P


def _locate(qualname: str):
    """(module, object, method name or None) of ``qualname``."""
    for m, q, obj in public_callables():
        if q == qualname:
            rest = q[len(m) + 1:].split(".")
            return m, obj, (rest[1] if len(rest) == 2 else None)
    raise KeyError(qualname)


def _forward_name(qualname: str):
    """The forward pass paired with a backward pass taking ``cache`` (else None)."""
    for suffix, fwd in (("_backward", "_forward"), (".backward", ".forward")):
        if qualname.endswith(suffix):
            q = qualname[: -len(suffix)] + fwd
            if any(q == k for _, k, _ in public_callables()):
                _, obj, _ = _locate(qualname)
                if "cache" in {p.name for p in _params(obj) or []}:
                    return q
    return None


def backward_call(forward: Call, backward, **options) -> Call:
    """The Call of a backward pass: runs ``forward`` (which returns ``(out, cache)``) and
    passes its ``cache``, a random gradient shaped like ``out`` for each ``d*`` argument,
    ``{}`` for an accumulator ``G``, and the forward's arguments of the same name."""
    res = _invoke(forward.fn, _fresh(forward.kwargs))
    out, cache = res[0], res[-1]
    kwargs = {}
    for p in _params(backward):
        if p.default is not p.empty:
            continue
        if p.name == "cache":
            kwargs[p.name] = cache
        elif p.name in forward.kwargs:
            kwargs[p.name] = forward.kwargs[p.name]
        elif p.name == "G":
            kwargs[p.name] = {}
        elif p.name.startswith("d") and hasattr(out, "shape"):
            kwargs[p.name] = np.asarray(Ctx().rng(5).standard_normal(out.shape), dtype=out.dtype)
        else:
            kwargs[p.name] = _factory(p.name, {q.name for q in _params(backward)}, Ctx())
    kwargs.update(options.pop("kwargs", {}))
    options.setdefault("skip", {}).setdefault("cache", "produced by the forward pass")
    return Call(backward, kwargs, **options)


def _auto_target(qualname: str):
    """(callable, keyword arguments) of ``qualname``: a method is bound to an instance built
    from its class's Call, with ``params`` from the instance's ``init_params`` if needed."""
    m, obj, meth = _locate(qualname)
    if meth is None:
        return obj, {}
    owner = build_call(qualname.rsplit(".", 1)[0])
    inst = _invoke(owner.fn, _fresh(owner.kwargs))
    fn = getattr(inst, meth)
    need = {p.name for p in _params(fn) or [] if p.default is p.empty}
    kwargs = {}
    if "params" in need and hasattr(inst, "init_params"):
        kwargs["params"] = inst.init_params(np.random.default_rng(0))
    return fn, kwargs


def build_call(qualname: str) -> Call:
    """The Call for ``qualname``: its recipe, the automatic backward pairing, or the
    automatic call (a method: on an instance built from its class's Call)."""
    R, _, _ = recipes()
    if qualname in R:
        return R[qualname]()
    fwd = _forward_name(qualname)
    if fwd is not None:
        return backward_call(build_call(fwd), _auto_target(qualname)[0])
    return auto_call(qualname)


# --------------------------------------------------------------------------- running
class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@functools.lru_cache(maxsize=None)
def _scratch_dir() -> str:
    """A temporary working directory for every call: a bad value accepted as a file name
    (e.g. an unknown option used as an output path) writes there, never into the checkout."""
    d = tempfile.TemporaryDirectory(prefix="refdiff-fuzz-")
    _KEEP.append(d)  # removed at interpreter exit
    return d.name


_KEEP: list = []


def _fresh(kwargs):
    """A copy of the keyword arguments for one call: arrays, lists and dicts copied, random
    generators deep-copied (each probe draws the same numbers as the valid call)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else copy.copy(v) if isinstance(v, (list, dict))
                else copy.deepcopy(v) if isinstance(v, np.random.Generator) else v)
            for k, v in kwargs.items()}


def _invoke(fn, kwargs):
    ps = _params(fn) or []
    pos = [kwargs.pop(p.name) for p in ps if p.kind == p.POSITIONAL_ONLY and p.name in kwargs]
    return fn(*pos, **kwargs)


def nonfinite(obj, depth=0) -> bool:
    """Whether ``obj`` (an array, number, or a container/record of them) holds NaN or inf."""
    if depth > 4:
        return False
    if isinstance(obj, (float, np.floating)):
        return not math.isfinite(obj)
    if isinstance(obj, np.ndarray):
        return obj.dtype.kind in "fc" and not bool(np.all(np.isfinite(obj)))
    if hasattr(obj, "__array_namespace__") and hasattr(obj, "dtype"):
        try:
            return not bool(np.all(np.isfinite(np.asarray(obj))))
        except Exception:
            return False
    if isinstance(obj, (list, tuple)):
        return any(nonfinite(o, depth + 1) for o in obj[:64])
    if isinstance(obj, dict):
        return any(nonfinite(o, depth + 1) for o in list(obj.values())[:64])
    if hasattr(obj, "__dataclass_fields__"):
        return any(nonfinite(getattr(obj, f, None), depth + 1) for f in obj.__dataclass_fields__)
    return False


@dataclass
class Outcome:
    arg: str
    probe: str
    expect: str  # "reject", "nan", "valid"
    result: str  # see OUTCOMES
    detail: str = ""


OUTCOMES = {
    "clear": "clear error naming the argument",
    "unnamed_refdiff": "TypeError/ValueError from refdiff not naming it",
    "unnamed_internal": "other error, or raised inside NumPy/Python",
    "accepted": "silently accepted (invalid value computed)",
    "nan_undeclared": "NaN in -> NaN out, not declared",
    "nan_declared": "NaN in -> NaN out, declared",
    "nan_from_finite": "finite in -> NaN/inf out",
    "valid_failed": "valid call failed (recipe needed)",
    "valid_ok": "valid call ran",
    "edge_ok": "valid edge case accepted",
    "edge_refused": "valid edge case refused clearly",
    "float32_differs": "float32 result differs from float64 by > 1 %",
    "timeout": "timeout",
}


def _names(msg: str, arg, aliases=()) -> bool:
    """Whether ``msg`` names ``arg`` (a whole word) or one of its aliases."""
    if arg is None:
        return False
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?!\w)", msg) for a in (arg, *aliases))


def classify(fn, kwargs, arg, expect, declared_nan=False, aliases=()):
    """Run ``fn(**kwargs)`` and classify the outcome for argument ``arg``."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, VALID_TIMEOUT_S if expect == "valid" else TIMEOUT_S)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.chdir(_scratch_dir()), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            result = _invoke(fn, kwargs)
    except _Timeout:
        return "timeout", ""
    except (Exception, SystemExit) as e:  # noqa: BLE001 - every exception is an outcome here
        msg = f"{type(e).__name__}: {e}"[:300]
        if expect == "valid":
            return "valid_failed", msg
        named = _names(str(e), arg, aliases)
        if expect == "edge" and isinstance(e, (TypeError, ValueError)) and named:
            return "edge_refused", msg
        ok_types = (TypeError, ValueError) + ((FloatingPointError,) if expect == "nan" else ())
        if isinstance(e, ok_types) and named:
            return "clear", msg
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        own = "/refdiff/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")
        return ("unnamed_refdiff" if own and isinstance(e, (TypeError, ValueError)) else "unnamed_internal"), msg
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    bad = nonfinite(result)
    if expect in ("valid", "edge"):
        return ("nan_from_finite" if bad else "valid_ok" if expect == "valid" else "edge_ok"), result
    if expect == "nan" and declared_nan:
        return "nan_declared", ""  # documented propagation (clip(inf) is finite: still declared)
    if expect == "nan" and bad:
        return "nan_undeclared", ""
    return "accepted", ""


def probes(call: Call):
    """(arg, label, expectation, bad value) for every probe of ``call``."""
    c = Ctx()
    ps = _params(call.fn) or []
    names = {p.name for p in ps}
    arrays = {k: v for k, v in call.kwargs.items() if isinstance(v, np.ndarray) and v.ndim >= 1}
    for p in ps:
        if p.name in call.skip:
            continue
        value = call.kwargs.get(p.name, call.ref.get(p.name, inspect.Parameter.empty))
        if value is inspect.Parameter.empty and p.default is p.empty:
            continue
        if value is inspect.Parameter.empty and p.default is None:
            try:
                value = _factory(p.name, names, c)
            except NoFactory:
                value = inspect.Parameter.empty
        kind = call.kinds.get(p.name) or infer_kind(p.name, value, p.default, names)
        if kind is None:
            continue
        ref = value if value is not inspect.Parameter.empty else p.default
        accept = call.accept.get(p.name, set())
        for label, (make, expect) in CATALOGUE[kind].items():
            if label in accept or (label == "None" and p.default is None):
                continue
            try:
                bad = make(ref, c)
            except Exception:  # noqa: BLE001 - a probe that does not apply to this value
                continue
            yield p.name, label, expect, bad
        if kind in ("array", "int_array", "timestep") and isinstance(ref, np.ndarray) and ref.ndim >= 1 \
                and BATCH not in accept and any(o.shape[0] == ref.shape[0] for k, o in arrays.items() if k != p.name):
            yield p.name, BATCH, "reject", np.concatenate([ref, ref[:1]])
        for label, v in call.bad.get(p.name, {}).items():
            yield p.name, label, "reject", v


def run_probes(call: Call) -> list:
    """Every Outcome of ``call``: the valid call, then one per probe."""
    res, ref = classify(call.fn, _fresh(call.kwargs), None, "valid")
    if res == "nan_from_finite" and call.nonfinite_ok:
        res = "valid_ok"
    out = [Outcome("", "valid", "valid", res, ref if res != "valid_ok" else "")]
    if res in ("valid_failed", "timeout"):
        return out
    for arg, label, expect, bad in probes(call):
        kw = _fresh(call.kwargs)
        kw[arg] = bad
        al = call.aliases.get(arg, ())
        r, d = classify(call.fn, kw, arg, expect, declared_nan=arg in call.nan_propagates,
                        aliases=(al,) if isinstance(al, str) else tuple(al))
        if r == "nan_from_finite" and call.nonfinite_ok:
            r = "edge_ok"
        if r == "edge_ok" and label == "float32" and arg in call.kwargs:
            diff = _rel_diff(d, ref)
            r, d = ("float32_differs", f"relative difference {diff:.3g}") if diff > 1e-2 else (r, "")
        out.append(Outcome(arg, label, expect, r, d if isinstance(d, str) else ""))
    return out


def _first_array(obj, depth=0):
    if isinstance(obj, (np.ndarray, float, np.floating)):
        return np.asarray(obj, dtype=float) if np.asarray(obj).dtype.kind == "f" else None
    if isinstance(obj, (list, tuple)) and obj and depth < 3:
        return _first_array(obj[0], depth + 1)
    return None


def _rel_diff(a, b) -> float:
    """max |a - b| / max |b| over the first array of two results (0 if not comparable)."""
    a, b = _first_array(a), _first_array(b)
    if a is None or b is None or a.shape != b.shape or b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def run_callable(qualname: str) -> list:
    """Every Outcome for ``qualname`` (its recipe or its automatic call)."""
    try:
        call = build_call(qualname)
    except Exception as e:  # noqa: BLE001
        return [Outcome("", "valid", "valid", "valid_failed", f"building the call: {type(e).__name__}: {e}"[:300])]
    return run_probes(call)


def uncovered_reason(module: str, qualname: str, obj) -> str:
    """Why ``qualname`` has no valid call ("" if it has one: recipe, exemption, automatic
    backward pairing or automatic call)."""
    R, E, _ = recipes()
    if qualname in R or qualname in E:
        return ""
    fwd = _forward_name(qualname)
    if fwd is not None:
        why = uncovered_reason(module, fwd, _locate(fwd)[1])
        return f"its forward pass {fwd}: {why}" if why else ""
    miss = missing_factories(obj)
    owner = qualname.rsplit(".", 1)[0]
    if owner != module:  # a method: its class needs a valid call too
        cls = getattr(importlib.import_module(module), owner.rsplit(".", 1)[1])
        why = uncovered_reason(module, owner, cls)
        if why:
            return f"its class: {why}"
        if hasattr(cls, "init_params"):
            miss = [n for n in miss if n != "params"]
    return f"no factory for {miss}" if miss else ""


def failures(outcomes) -> list:
    """The outcomes that break the policy (empty: the callable passes)."""
    bad = []
    for o in outcomes:
        if o.expect == "valid":
            ok = o.result == "valid_ok"
        elif o.expect == "edge":
            ok = o.result in ("edge_ok", "edge_refused")
        elif o.expect == "nan":
            ok = o.result in ("clear", "nan_declared")
        else:
            ok = o.result == "clear"
        if not ok:
            bad.append(o)
    return bad
