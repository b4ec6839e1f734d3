"""The bad-value catalogue of the fuzz harness, by argument kind, and the kind inference
(explicit ``Call.kinds``, then the parameter name, then the valid value's or default's type)."""

from __future__ import annotations

import inspect

import numpy as np

from .factories import _COEF, _OBJECTS

_NAN, _INF = float("nan"), float("inf")


def _with(v, value):
    w = np.array(v, dtype=float, copy=True)
    w.reshape(-1)[0] = value
    return w


# label -> (make(valid_value, Ctx) -> bad value, expectation); expectation "reject" (a clear
# TypeError/ValueError), "nan" (that, or declared NaN propagation) or "edge" (a valid edge
# case: accepted with a finite result, or refused clearly; a float32 array's result must
# agree with the float64 call's to 1 %).
CATALOGUE = {
    "array": {
        "None": (lambda v, c: None, "reject"),
        "list": (lambda v, c: np.asarray(v).tolist(), "reject"),
        "python_float": (lambda v, c: 1.0, "reject"),
        "string": (lambda v, c: "not-an-array", "reject"),
        "int_array": (lambda v, c: np.round(3 * np.asarray(v)).astype(np.int64), "reject"),
        "bool_array": (lambda v, c: np.asarray(v) > 0, "reject"),
        "float16": (lambda v, c: np.asarray(v).astype(np.float16), "reject"),
        "complex": (lambda v, c: np.asarray(v).astype(np.complex128), "reject"),
        "nan": (lambda v, c: _with(v, _NAN), "nan"),
        "inf": (lambda v, c: _with(v, _INF), "nan"),
        "empty": (lambda v, c: np.asarray(v)[:0], "reject"),
        "float32": (lambda v, c: np.asarray(v, dtype=np.float32), "edge"),
        "rank0": (lambda v, c: np.asarray(v).reshape(-1)[:1].reshape(()), "edge"),  # wrong rank: 0-d
        "rank_plus1": (lambda v, c: np.asarray(v)[None], "edge"),  # wrong rank: a leading axis added
    },
    "int_array": {  # integer labels / indices
        "None": (lambda v, c: None, "reject"),
        "list": (lambda v, c: np.asarray(v).tolist(), "reject"),
        "string": (lambda v, c: "not-an-array", "reject"),
        "float_array": (lambda v, c: np.asarray(v).astype(float) + 0.5, "reject"),
        "complex": (lambda v, c: np.asarray(v).astype(np.complex128), "reject"),
        "empty": (lambda v, c: np.asarray(v)[:0], "reject"),
    },
    "timestep": {  # discrete t in [0, T): Python int or integer array
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "3", "reject"),
        "python_float": (lambda v, c: 2.5, "reject"),
        "bool": (lambda v, c: True, "reject"),
        "negative": (lambda v, c: -1, "reject"),
        "T": (lambda v, c: c.T, "reject"),
        "float_array": (lambda v, c: np.asarray(v, dtype=float) + 0.5, "reject"),
        "out_of_range_array": (lambda v, c: np.full(np.shape(v), c.T), "reject"),
        "complex": (lambda v, c: 1 + 1j, "reject"),
        "python_int": (lambda v, c: 3, "edge"),
        "numpy_int": (lambda v, c: np.int64(3), "edge"),
    },
    "grid": {  # a decreasing timestep list in [0, T)
        "empty": (lambda v, c: [], "reject"),
        "increasing": (lambda v, c: [1, 5, 9], "reject"),
        "duplicate": (lambda v, c: [9, 5, 5, 1], "reject"),
        "float": (lambda v, c: [9.5, 5.0, 1.0], "reject"),
        "out_of_range": (lambda v, c: [c.T + 5, 5, 1], "reject"),
        "negative": (lambda v, c: [9, 5, -1], "reject"),
        "string": (lambda v, c: "9,5,1", "reject"),
    },
    "sigmas": {  # a decreasing positive sigma list (a trailing 0 allowed)
        "empty": (lambda v, c: [], "reject"),
        "increasing": (lambda v, c: [0.1, 1.0, 5.0], "reject"),
        "negative": (lambda v, c: [5.0, 1.0, -0.5], "reject"),
        "nan": (lambda v, c: [5.0, _NAN, 0.1], "reject"),
        "string": (lambda v, c: "5,1", "reject"),
    },
    "int": {
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "3", "reject"),
        "float": (lambda v, c: 2.5, "reject"),
        "bool": (lambda v, c: True, "reject"),
        "negative": (lambda v, c: -1, "reject"),
        "nan": (lambda v, c: _NAN, "reject"),
        "numpy_int": (lambda v, c: np.int64(v), "edge"),
    },
    "float": {
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "1.0", "reject"),
        "bool": (lambda v, c: True, "reject"),
        "nan": (lambda v, c: _NAN, "reject"),
        "inf": (lambda v, c: _INF, "reject"),
        "complex": (lambda v, c: 1 + 1j, "reject"),
        "numpy_float": (lambda v, c: np.float64(v), "edge"),
    },
    "coef": {  # alpha, sigma, ...: a float or a float array (broadcast per sample)
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "0.5", "reject"),
        "bool": (lambda v, c: True, "reject"),
        "list": (lambda v, c: [v, v], "reject"),
        "complex": (lambda v, c: np.asarray(v) + 1j, "reject"),
        "int_array": (lambda v, c: np.ones(c.B, dtype=np.int64), "reject"),
        "nan": (lambda v, c: _NAN, "nan"),
        "inf": (lambda v, c: _INF, "nan"),
        "per_sample": (lambda v, c: np.full(c.B, float(np.ravel(v)[0])), "edge"),
    },
    "bool": {
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "True", "reject"),
        "int": (lambda v, c: 1, "reject"),
        "float": (lambda v, c: 0.5, "reject"),
    },
    "option": {
        "None": (lambda v, c: None, "reject"),
        "int": (lambda v, c: 1, "reject"),
        "unknown": (lambda v, c: "no_such_option", "reject"),
        "empty_string": (lambda v, c: "", "reject"),
    },
    "label": {  # a free-form name
        "None": (lambda v, c: None, "reject"),
        "int": (lambda v, c: 1, "reject"),
    },
    "rng": {
        "string": (lambda v, c: "seed", "reject"),
        "float": (lambda v, c: 1.5, "reject"),
        "bool": (lambda v, c: True, "reject"),
        "negative": (lambda v, c: -1, "reject"),
        "list": (lambda v, c: [1, 2], "reject"),
    },
    "shape": {
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "3", "reject"),
        "negative": (lambda v, c: (2, -1), "reject"),
        "float": (lambda v, c: (2.5, 3), "reject"),
    },
    "object": {
        "None": (lambda v, c: None, "reject"),
        "string": (lambda v, c: "not-an-object", "reject"),
    },
}
BATCH = "batch"  # extra "array"/"int_array"/"timestep" probe: first axis + 1 against another array

_NAME_KINDS = {"t": "timestep", "t_prev": "timestep", "t_next": "timestep", "timesteps": "grid",
               "sigmas": "sigmas", "shape": "shape", "rng": "rng", "y": None, "name": "label",
               "xp": None}
_NAME_KINDS.update({k: "coef" for k in _COEF})
_NAME_KINDS.update({k: "object" for k in _OBJECTS + ("oracle", "net", "forward", "f", "teacher")})


def infer_kind(name, value, default, names):
    if name in ("t", "t_prev", "t_next", "timesteps") and "schedule" not in names:
        pass  # continuous time or a grid of another kind: infer from the value
    elif name in _NAME_KINDS:
        return _NAME_KINDS[name]
    v = value if value is not inspect.Parameter.empty else default
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "option"
    if isinstance(v, np.random.Generator):
        return "rng"
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f":
            return "array"
        if v.dtype.kind in "iu":
            return "int_array"
    return None


