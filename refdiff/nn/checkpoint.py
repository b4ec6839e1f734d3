"""Checkpoints: one ``.npz`` of arrays plus a human-readable ``.json`` beside it.

``save_checkpoint("run/checkpoint.npz", ...)`` writes

* ``run/checkpoint.npz``: ``params/<name>``, ``ema/<name>``, ``<group>/<name>`` for each
  further parameter group (a frozen teacher, an EMA target), ``opt/<key>`` (the optimizer
  state: ``opt/step`` and ``opt/m/<key>``, ``opt/v/<key>`` with ``<key>`` a parameter
  name or ``<group>/<name>``), ``history/<name>`` (1-D logs), ``step`` and ``meta`` (the
  JSON below, as a string, so the ``.npz`` alone is complete);
* ``run/checkpoint.json``: the same metadata: format version, model config, prediction
  type, condition kinds, the groups' model configs, training config, schedule
  description, host RNG state, step, refdiff version.

Loading validates every entry (:func:`load_checkpoint`); :func:`refdiff.load` turns a
checkpoint into a model in one call.

Both files are written to temporaries and renamed into place, so an interrupted save
never leaves a half-written checkpoint and the previous one stays valid.  Arrays are
stored as they are (exact round trip; float32 stays float32).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..backend import array_namespace, to_numpy
from .._validate import check_int
from ._checkpoint_checks import (build, check_count, check_groups_arg, check_history, check_meta, check_path,
                                 check_saveable, check_values)

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "describe_schedule",
    "schedule_from_description",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)  # 1: no 'groups', 'prediction_type', 'cond_kinds' in meta


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.  ``model`` is rebuilt from the stored config;
    arrays are in the namespace asked for (NumPy by default).

    Parameters
    ----------
    model : DenoiserBase
        The network rebuilt from the stored config.
    params : dict
        Its parameters.
    ema_params : dict or None
        EMA parameters, if saved.
    opt_state : dict or None
        Optimizer state (``"step"`` and moments ``m/<key>``, ``v/<key>``), if saved.
    rng_state : dict or None
        Bit-generator state of the host RNG, if saved.
    step : int
        Training step.
    meta : dict
        The JSON metadata.
    history : dict, optional
        1-D logs (default empty).
    groups : dict, optional
        Further parameter groups, name -> parameter dict (default empty).
    """

    model: object
    params: dict
    ema_params: dict | None
    opt_state: dict | None
    rng_state: dict | None
    step: int
    meta: dict
    history: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        """What the network predicts: stored since format 2, else the training target."""
        p = self.meta.get("prediction_type") or self.meta.get("train_config", {}).get("target") or "epsilon"
        return {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}.get(p, p)

    def rng(self) -> np.random.Generator:
        """A ``numpy.random.Generator`` in the saved state (raises if none was saved)."""
        if self.rng_state is None:
            raise ValueError("this checkpoint stores no RNG state")
        bg = getattr(np.random, self.rng_state["bit_generator"])()
        bg.state = self.rng_state
        return np.random.Generator(bg)


# ---------------------------------------------------------------------------- schedules
def describe_schedule(schedule) -> dict:
    """A JSON-able description of a schedule, enough to rebuild it exactly
    (:func:`schedule_from_description`); betas are stored as exact float64 decimal reprs.

    Parameters
    ----------
    schedule : Schedule, LinearVP or InterpolatedVP
        The schedule to describe.

    Returns
    -------
    dict
        JSON-able description with a ``"type"`` key (``"discrete"``, ``"linear_vp"`` or
        ``"interpolated_vp"``).

    Raises
    ------
    TypeError
        If ``schedule`` is of another type.
    """
    from ..schedules import InterpolatedVP, LinearVP, Schedule

    if isinstance(schedule, Schedule):
        return {"type": "discrete", "name": schedule.name, "T": schedule.T, "betas": [float(b) for b in schedule.betas]}
    if isinstance(schedule, LinearVP):
        return {"type": "linear_vp", "beta_0": schedule.beta_0, "beta_1": schedule.beta_1, "t_min": schedule.t_min}
    if isinstance(schedule, InterpolatedVP):
        return {"type": "interpolated_vp", **describe_schedule(schedule.schedule)}
    raise TypeError(f"cannot describe schedule of type {type(schedule).__name__}")


def schedule_from_description(d: dict):
    """Inverse of :func:`describe_schedule`.

    Parameters
    ----------
    d : dict
        A description from :func:`describe_schedule`.

    Returns
    -------
    Schedule, LinearVP or InterpolatedVP
        The rebuilt schedule.

    Raises
    ------
    ValueError
        If ``d["type"]`` is not a known description type.
    """
    from ..schedules import InterpolatedVP, LinearVP, schedule_from_betas

    if not isinstance(d, dict):
        raise TypeError(f"d must be a schedule description (a dict from describe_schedule), got {type(d).__name__}")
    try:
        return _schedule_from(d, InterpolatedVP, LinearVP, schedule_from_betas)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"d = {str(d)[:60]} is not a valid schedule description ({type(e).__name__}: {e})") from None


def _schedule_from(d, InterpolatedVP, LinearVP, schedule_from_betas):
    kind = d.get("type")
    if kind == "discrete":
        return schedule_from_betas(np.asarray(d["betas"], dtype=np.float64), name=d.get("name", "custom"))
    if kind == "linear_vp":
        return LinearVP(d["beta_0"], d["beta_1"], d["t_min"])
    if kind == "interpolated_vp":
        return InterpolatedVP(schedule_from_betas(np.asarray(d["betas"], dtype=np.float64), name=d.get("name", "custom")))
    raise ValueError(f"unknown schedule description type {kind!r}; valid: 'discrete', 'linear_vp', 'interpolated_vp'")


# ---------------------------------------------------------------------------- save
def _json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    path,
    *,
    model,
    params: dict,
    ema_params: dict | None = None,
    opt_state: dict | None = None,
    rng=None,
    step: int = 0,
    train_config: dict | None = None,
    schedule=None,
    history: dict | None = None,
    groups: dict | None = None,
    prediction_type: str | None = None,
    main_group: str = "params",
) -> Path:
    """Write ``path`` (a ``.npz``) and the ``.json`` beside it; returns the ``.npz`` path.

    ``model`` is an :class:`~refdiff.nn.MLP` / :class:`~refdiff.nn.UNet` (its config is
    stored); ``params`` (and ``ema_params``) its parameters; ``groups`` further named
    parameter groups ``{name: (network, params)}`` (a frozen teacher, an EMA target...;
    ``network`` None for a group without an architecture of its own); ``opt_state`` a flat
    optimizer state (``"step"`` and moment arrays keyed ``m/<key>``, ``v/<key>`` with
    ``<key>`` a key of ``params`` or ``<group>/<key>``); ``rng`` a
    ``numpy.random.Generator`` (its bit-generator state is stored) or a state dict;
    ``schedule`` a Schedule / continuous VP (:func:`describe_schedule`);
    ``prediction_type`` what the network predicts (default: the training target, else
    "epsilon"); ``history`` a dict of 1-D host arrays (loss logs); ``main_group`` the name
    the training loop gave ``params`` (optimizer keys ``m/<main_group>/<key>`` refer to it).

    Parameters
    ----------
    path : str or path-like
        Destination, ending in ``.npz``.
    model : DenoiserBase
        The network (its ``to_dict()`` config is stored).
    params : dict
        Its parameters.
    ema_params : dict or None, optional
        EMA parameters (default None).
    opt_state : dict or None, optional
        Flat optimizer state (default None).
    rng : numpy.random.Generator, dict or None, optional
        Host RNG or its state dict (default None).
    step : int, optional
        Training step (default 0).
    train_config : dict or None, optional
        Training configuration stored in the metadata (default None).
    schedule : object or None, optional
        Noise schedule, stored through :func:`describe_schedule` (default None).
    history : dict or None, optional
        1-D loss logs (default None).
    groups : dict or None, optional
        Further parameter groups ``{name: (network or None, params)}`` (default None).
    prediction_type : str or None, optional
        What the network predicts (default: ``train_config["target"]``, else ``"epsilon"``).
    main_group : str, optional
        Name the training loop gave ``params`` (default ``"params"``).

    Returns
    -------
    pathlib.Path
        The ``.npz`` path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.npz``, or a group name is reserved or contains ``/``.
    """
    path = check_path("path", path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint path must end in .npz, got {str(path)!r}")
    check_saveable(model, params, rng, prediction_type, main_group)
    step = check_int("step", step, min=0)
    groups = check_groups_arg(groups)
    for name in groups:
        if name in ("params", "ema", "opt", "history", "meta", "step") or "/" in name:
            raise ValueError(f"group name {name!r} is reserved or contains '/'")
    rng_state = rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng
    tc = train_config or {}
    meta = {
        "format_version": FORMAT_VERSION,
        "refdiff_version": __version__,
        "step": int(step),
        "model_config": model.to_dict(),
        "prediction_type": prediction_type or tc.get("target") or "epsilon",
        "cond_kinds": list(model.cond_spec.kinds) if hasattr(model, "cond_spec") else [],
        "train_config": tc,
        "schedule": None if schedule is None else describe_schedule(schedule),
        "rng_state": rng_state,
        "has_ema": ema_params is not None,
        "has_opt_state": opt_state is not None,
        "groups": {g: (None if net is None else net.to_dict()) for g, (net, _) in groups.items()},
        "main_group": main_group,
    }
    arrays = {f"params/{k}": to_numpy(v) for k, v in params.items()}
    if ema_params is not None:
        arrays.update({f"ema/{k}": to_numpy(v) for k, v in ema_params.items()})
    for g, (_, gp) in groups.items():
        arrays.update({f"{g}/{k}": to_numpy(v) for k, v in gp.items()})
    if opt_state is not None:
        for k, v in opt_state.items():
            arrays[f"opt/{k}"] = np.asarray(v, dtype=np.int64) if k == "step" else to_numpy(v)
    for k, v in (history or {}).items():
        arrays[f"history/{k}"] = np.asarray(v)
    arrays["step"] = np.asarray(int(step), dtype=np.int64)
    meta_json = json.dumps(meta, indent=1)
    arrays["meta"] = np.asarray(meta_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    _atomic_write(_json_path(path), lambda f: f.write(meta_json.encode()))
    return path


# ---------------------------------------------------------------------------- load
def _read_npz(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"checkpoint {str(path)!r} is corrupted or not a refdiff .npz checkpoint ({type(e).__name__}: {e})") from e


def _check_group(name: str, got: dict, expected: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ValueError(
            f"checkpoint {str(path)!r}: {name} keys do not match the model config: missing {missing}, unexpected {extra}"
        )
    for k, ref in expected.items():
        if tuple(got[k].shape) != tuple(ref.shape):
            raise ValueError(
                f"checkpoint {str(path)!r}: {name}[{k!r}] has shape {tuple(got[k].shape)}, "
                f"the model config expects {tuple(ref.shape)}"
            )


def _reference(meta: dict, path: Path, key: str = "meta.model_config"):
    """The network of a stored config and float64 parameters of the shapes it implies."""
    model = build(key, meta["model_config"], path)
    try:
        return model, model.init_params(np.random.default_rng(0), dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {str(path)!r}: {key} cannot be rebuilt ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from None


def _to(xp, a):
    return a if xp is None else xp.asarray(a)


def _read_meta(data: dict, path: Path) -> dict:
    if "meta" not in data or "step" not in data:
        raise ValueError(f"checkpoint {str(path)!r} has no 'meta'/'step' entries: not a refdiff checkpoint")
    try:
        meta = json.loads(str(data.pop("meta")))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {str(path)!r}: its metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {str(path)!r}: its metadata is not a JSON object (got a {type(meta).__name__})")
    v = meta.get("format_version")
    if isinstance(v, bool) or v not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(f"checkpoint {str(path)!r}: format_version {v!r} is not one this refdiff reads "
                         f"({', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})")
    return meta


def _check_opt(o: dict, shapes: dict, path: Path) -> dict:
    """The optimizer state: ``step`` and moments ``m/<key>``, ``v/<key>`` of known keys."""
    if "step" not in o:
        raise ValueError(f"checkpoint {str(path)!r}: optimizer state has no 'step'")
    opt = {"step": check_count("opt/step", o.pop("step"), path)}
    for k, v in o.items():
        moment, _, key = k.partition("/")
        if moment not in ("m", "v") or key not in shapes:
            raise ValueError(f"checkpoint {str(path)!r}: unexpected optimizer entry 'opt/{k}'")
        if tuple(v.shape) != shapes[key]:
            raise ValueError(f"checkpoint {str(path)!r}: optimizer moment 'opt/{k}' has shape {tuple(v.shape)}, "
                             f"its parameter has {shapes[key]}")
        check_values(f"opt/{k}", v, path)
        opt[k] = v
    return opt


def load_checkpoint(path, *, xp=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and check it.  Raises
    FileNotFoundError for a missing file and a one-line ValueError naming the entry for a
    corrupted file, an unknown ``format_version``, missing or unexpected keys, a parameter
    whose shape differs from the one its stored model config implies, a parameter or
    optimizer moment that is not real floating point (string, integer, complex) or not
    finite, a step counter that is not a non-negative integer (or a ``meta.step`` that
    disagrees with it), a history log that is not a 1-D real array, an RNG state that is not
    the state of a NumPy bit generator, and a model config or schedule description that
    cannot be rebuilt.  Arrays are read with ``allow_pickle=False``: an object array (a
    pickle) is refused and never unpickled.  ``xp``: namespace for the arrays (default
    NumPy).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` written by :func:`save_checkpoint`.
    xp : namespace or None, optional
        Array namespace of the returned arrays; None (default) for NumPy.

    Returns
    -------
    Checkpoint
        The model, its parameters and the saved state.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is corrupted or fails one of the checks above.
    """
    path = check_path("path", path)
    data = _read_npz(path)
    meta = _read_meta(data, path)
    step = check_count("step", data.pop("step"), path)
    check_meta(meta, step, path)
    model, ref = _reference(meta, path)  # ref: the shapes the config implies
    refs = {"params": ref, "ema": ref}
    for g, cfg in meta.get("groups", {}).items():
        refs[g] = None if cfg is None else _reference({"model_config": cfg}, path, f"meta.groups[{g!r}]")[1]
    found: dict = {g: {} for g in [*refs, "opt", "history"]}
    for key, v in data.items():
        g, _, name = key.partition("/")
        if g not in found or not name:
            raise ValueError(f"checkpoint {str(path)!r}: unexpected entry {key!r}")
        found[g][name] = v
    present = ["params"] + (["ema"] if meta.get("has_ema") else []) + list(meta.get("groups", {}))
    groups = {}
    for g in present:
        if refs[g] is not None:
            _check_group("params" if g == "params" else g, found[g], refs[g], path)
        for k, v in found[g].items():
            check_values(f"{g}/{k}", v, path)
        groups[g] = {k: _to(xp, v) for k, v in found[g].items()}
    opt = None
    if meta.get("has_opt_state"):
        shapes = {k: tuple(v.shape) for k, v in found["params"].items()}
        shapes.update({f"{g}/{k}": tuple(v.shape) for g in present for k, v in found[g].items()})
        main = meta.get("main_group", "params")
        shapes.update({f"{main}/{k}": tuple(v.shape) for k, v in found["params"].items()})
        opt = {k: (v if k == "step" else _to(xp, v)) for k, v in _check_opt(dict(found["opt"]), shapes, path).items()}
    check_history(found["history"], path)
    params, ema = groups.pop("params"), groups.pop("ema", None)
    return Checkpoint(model, params, ema, opt, meta.get("rng_state"), step, meta, found["history"], groups)
