"""The checks :func:`refdiff.nn.checkpoint.load_checkpoint` applies to each entry of a
checkpoint: one-line ValueErrors naming the entry (``params/<name>``, ``opt/step``,
``history/losses``, ``meta.rng_state``...), raised when the file is read, never later when
the RNG, the schedule or the logs are used.  Arrays are read with ``allow_pickle=False``, so
an object array (a pickle) is refused without being unpickled."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

# the NumPy bit generators whose state is a plain JSON-able dict; nothing else is looked up
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def fail(path, what: str):
    raise ValueError(f"checkpoint {str(path)!r}: {what}")


def check_values(entry: str, a, path) -> None:
    """A parameter or moment array must be real floating point and finite."""
    if a.dtype.kind != "f":
        fail(path, f"entry {entry!r} has dtype {a.dtype}; parameters and optimizer moments must be float32 or float64")
    if not np.all(np.isfinite(a)):
        fail(path, f"entry {entry!r} contains NaN or inf")


def check_count(entry: str, a, path) -> int:
    """A step counter must be a non-negative integer scalar (bool refused)."""
    a = np.asarray(a)
    if a.shape != () or a.dtype.kind not in "iu" or int(a) < 0:
        fail(path, f"entry {entry!r} must be a non-negative integer scalar, got {a.tolist()!r} of dtype {a.dtype}")
    return int(a)


def check_history(history: dict, path) -> None:
    """Every log must be a 1-D real (integer or floating) array."""
    for k, v in history.items():
        if v.dtype.kind not in "iuf":
            fail(path, f"entry 'history/{k}' has dtype {v.dtype}; logs must be real numbers")
        if v.ndim != 1:
            fail(path, f"entry 'history/{k}' must be 1-D, got shape {tuple(v.shape)}")


def check_rng_state(state, path) -> None:
    """None, or the state dict of one of :data:`BIT_GENERATORS` that the generator accepts.
    The name is checked against the list before ``numpy.random`` is touched."""
    if state is None:
        return
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in BIT_GENERATORS:
        got = repr(name) if isinstance(state, dict) else f"{type(state).__name__} {str(state)[:40]!r}"
        fail(path, f"meta.rng_state must be None or the state of a NumPy bit generator "
                   f"({', '.join(BIT_GENERATORS)}), got {got}")
    try:
        getattr(np.random, name)().state = state
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
        fail(path, f"meta.rng_state is not a valid {name} state ({type(e).__name__}: {' '.join(str(e).split())})")


def check_meta(meta: dict, step: int, path) -> None:
    """The metadata entries that loading and resuming rely on (that it is a dict and its
    format_version are checked by the caller): model_config, train_config, step, groups, rng_state, schedule."""
    if "model_config" not in meta:
        fail(path, "meta has no 'model_config': not a refdiff checkpoint")
    for key in ("model_config", "train_config", "groups"):
        if key in meta and not isinstance(meta[key], dict):
            fail(path, f"meta.{key} must be a mapping, got {type(meta[key]).__name__}")
    if "step" in meta and meta["step"] != step:
        fail(path, f"meta.step {meta['step']!r} disagrees with entry 'step' {step}")
    check_rng_state(meta.get("rng_state"), path)
    if meta.get("schedule") is not None:
        from .checkpoint import schedule_from_description

        try:
            if not isinstance(meta["schedule"], dict):
                raise TypeError(f"got a {type(meta['schedule']).__name__}")
            schedule_from_description(meta["schedule"])
        except (TypeError, ValueError, KeyError) as e:
            fail(path, f"meta.schedule cannot be rebuilt ({type(e).__name__}: {' '.join(str(e).split())})")


def build(meta_key: str, config, path):
    """The network of a stored config, or a one-line error naming ``meta_key``."""
    from . import build_model

    try:
        return build_model(config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        fail(path, f"{meta_key} cannot be rebuilt ({type(e).__name__}: {' '.join(str(e).split())})")


HISTORY_LOGS = ("losses", "grad_norms", "eval_steps", "eval_losses")


def check_resumable(ck, path, *, config: bool = False) -> None:
    """What resuming a training run needs beyond a loadable checkpoint (one-line errors):
    the optimizer state, the RNG state, the four logs of :data:`HISTORY_LOGS` (``losses``
    and ``grad_norms`` with at least one value per completed step) and, with ``config``,
    the training config that the resumed run is compared with."""
    where = f"cannot resume from {str(path)!r}:"
    if config and not ck.meta.get("train_config"):
        raise ValueError(f"{where} the checkpoint stores no train_config (it was not written by refdiff.train)")
    if ck.opt_state is None:
        raise ValueError(f"{where} the checkpoint stores no optimizer state")
    if ck.rng_state is None:
        raise ValueError(f"{where} the checkpoint stores no RNG state")
    for k in HISTORY_LOGS:
        if k not in ck.history:
            raise ValueError(f"{where} the checkpoint has no history entry 'history/{k}'")
    for k in ("losses", "grad_norms"):
        if ck.history[k].shape[0] < ck.step:
            raise ValueError(f"{where} 'history/{k}' holds {ck.history[k].shape[0]} values, the checkpoint is at "
                             f"step {ck.step}")


def check_path(name: str, path) -> Path:
    """``path`` as a Path; TypeError naming ``name`` unless it is a str or path-like."""
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got {type(path).__name__}")
    return Path(path)


def check_groups_arg(groups) -> dict:
    """save_checkpoint's ``groups``: None or {name: (network or None, parameter dict)}."""
    if groups is None:
        return {}
    if not isinstance(groups, dict) or not all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], dict)
                                               for v in groups.values()):
        raise TypeError(f"groups must be None or a dict name -> (network or None, parameter dict), got "
                        f"{type(groups).__name__}")
    return dict(groups)


def check_saveable(model, params, rng, prediction_type, main_group) -> None:
    """The arguments of save_checkpoint that are stored as they are (TypeError/ValueError
    naming the argument)."""
    from ..parameterization import PREDICTION_TYPES

    if not hasattr(model, "to_dict"):
        raise TypeError(f"model must be a refdiff network (with to_dict()), got {type(model).__name__}")
    if not isinstance(params, dict) or not all(hasattr(v, "shape") for v in params.values()):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    if rng is not None and not isinstance(rng, (np.random.Generator, dict)):
        raise TypeError(f"rng must be a numpy.random.Generator, its bit-generator state dict or None, got "
                        f"{type(rng).__name__}")
    aliases = ("eps", "x0", "v")  # the training targets' short names, stored as given
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES + aliases:
        raise ValueError(f"prediction_type = {prediction_type!r} is not one of "
                         f"{', '.join(map(repr, PREDICTION_TYPES + aliases))}")
    if not isinstance(main_group, str) or not main_group or "/" in main_group:
        raise ValueError(f"main_group must be a non-empty group name without '/', got {main_group!r}")
