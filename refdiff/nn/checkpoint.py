"""Checkpoints: one ``.npz`` of arrays plus a human-readable ``.json`` beside it.

``save_checkpoint("run/checkpoint.npz", ...)`` writes

* ``run/checkpoint.npz``: ``params/<name>``, ``ema/<name>``, ``opt/<key>`` (the
  :func:`refdiff.nn.optim.adam_init` state: ``opt/step``, ``opt/m/<name>``,
  ``opt/v/<name>``), ``history/<name>`` (1-D logs), ``step`` and ``meta`` (the JSON
  below, as a string, so the ``.npz`` alone is complete);
* ``run/checkpoint.json``: the same metadata: model config, training config, schedule
  description, host RNG state, step, refdiff version.

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

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "describe_schedule",
    "schedule_from_description",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.  ``model`` is rebuilt from the stored config;
    arrays are in the namespace asked for (NumPy by default)."""

    model: object
    params: dict
    ema_params: dict | None
    opt_state: dict | None
    rng_state: dict | None
    step: int
    meta: dict
    history: dict = field(default_factory=dict)

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
    (:func:`schedule_from_description`); betas are stored as exact float64 decimal reprs."""
    from ..schedules import InterpolatedVP, LinearVP, Schedule

    if isinstance(schedule, Schedule):
        return {"type": "discrete", "name": schedule.name, "T": schedule.T, "betas": [float(b) for b in schedule.betas]}
    if isinstance(schedule, LinearVP):
        return {"type": "linear_vp", "beta_0": schedule.beta_0, "beta_1": schedule.beta_1, "t_min": schedule.t_min}
    if isinstance(schedule, InterpolatedVP):
        return {"type": "interpolated_vp", **describe_schedule(schedule.schedule)}
    raise TypeError(f"cannot describe schedule of type {type(schedule).__name__}")


def schedule_from_description(d: dict):
    """Inverse of :func:`describe_schedule`."""
    from ..schedules import InterpolatedVP, LinearVP, schedule_from_betas

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
) -> Path:
    """Write ``path`` (a ``.npz``) and the ``.json`` beside it; returns the ``.npz`` path.

    ``model`` is an :class:`~refdiff.nn.MLP` / :class:`~refdiff.nn.UNet` (its config is
    stored); ``rng`` a ``numpy.random.Generator`` (its bit-generator state is stored) or
    a state dict; ``schedule`` a Schedule / continuous VP (described by
    :func:`describe_schedule`); ``history`` a dict of 1-D host arrays (loss logs)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint path must end in .npz, got {str(path)!r}")
    rng_state = rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng
    meta = {
        "format_version": FORMAT_VERSION,
        "refdiff_version": __version__,
        "step": int(step),
        "model_config": model.to_dict(),
        "train_config": train_config or {},
        "schedule": None if schedule is None else describe_schedule(schedule),
        "rng_state": rng_state,
        "has_ema": ema_params is not None,
        "has_opt_state": opt_state is not None,
    }
    arrays = {f"params/{k}": to_numpy(v) for k, v in params.items()}
    if ema_params is not None:
        arrays.update({f"ema/{k}": to_numpy(v) for k, v in ema_params.items()})
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


def _to(xp, a):
    return a if xp is None else xp.asarray(a)


def load_checkpoint(path, *, xp=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and check it against its model
    config.  Raises FileNotFoundError for a missing file and ValueError for a corrupted
    file, missing or unexpected keys, or a parameter whose shape differs from the one the
    stored model config implies.  ``xp``: namespace for the arrays (default NumPy)."""
    from . import build_model

    path = Path(path)
    data = _read_npz(path)
    if "meta" not in data or "step" not in data:
        raise ValueError(f"checkpoint {str(path)!r} has no 'meta'/'step' entries: not a refdiff checkpoint")
    try:
        meta = json.loads(str(data.pop("meta")))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {str(path)!r}: its metadata is not valid JSON ({e})") from e
    step = int(data.pop("step"))
    model = build_model(meta["model_config"])
    ref = model.init_params(np.random.default_rng(0), dtype="float64")  # shapes the config implies
    groups: dict = {"params": {}, "ema": {}, "opt": {}, "history": {}}
    for key, v in data.items():
        g, _, name = key.partition("/")
        if g not in groups or not name:
            raise ValueError(f"checkpoint {str(path)!r}: unexpected entry {key!r}")
        groups[g][name] = v
    _check_group("params", groups["params"], ref, path)
    ema = opt = None
    if meta.get("has_ema"):
        _check_group("ema", groups["ema"], ref, path)
        ema = {k: _to(xp, groups["ema"][k]) for k in ref}
    if meta.get("has_opt_state"):
        o = groups["opt"]
        if "step" not in o:
            raise ValueError(f"checkpoint {str(path)!r}: optimizer state has no 'step'")
        _check_group("optimizer first moment", {k[2:]: v for k, v in o.items() if k.startswith("m/")}, ref, path)
        _check_group("optimizer second moment", {k[2:]: v for k, v in o.items() if k.startswith("v/")}, ref, path)
        opt = {"step": int(o["step"])}
        for k in ref:
            opt["m/" + k] = _to(xp, o["m/" + k])
            opt["v/" + k] = _to(xp, o["v/" + k])
    params = {k: _to(xp, groups["params"][k]) for k in ref}
    return Checkpoint(model, params, ema, opt, meta.get("rng_state"), step, meta, groups["history"])
