"""Importance sampling of the timestep (improved-diffusion's second-moment sampler),
MATH.md (5.14)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_array, check_finite_scalar, check_int
from ..backend import check_rng, to_numpy

__all__ = ["ImportanceState", "importance_probs", "importance_sample", "importance_update"]


# ---------------------------------------------------------------------------- importance sampling of t
@dataclass(frozen=True, eq=False)
class ImportanceState:
    """The second-moment history of improved-diffusion's t-sampler, MATH.md (5.14); a pure
    value (update with :func:`importance_update`, which returns a new state).

    Parameters
    ----------
    history : numpy.ndarray (T, K)
        Host float64, the last K observed values of L_t per t (oldest first).
    counts : numpy.ndarray (T,)
        Host int64, how many of the K slots are filled.

    ``ImportanceState.init(T, history=10)`` is the empty state.
    """

    history: np.ndarray
    counts: np.ndarray

    def __post_init__(self):
        check_array("history", self.history, ndim=2, finite=True)
        check_array("counts", self.counts, dtype="int", ndim=1)
        if self.counts.shape[0] != self.history.shape[0]:
            raise ValueError(f"counts has shape {tuple(self.counts.shape)} but history has shape "
                             f"{tuple(self.history.shape)}: one count per timestep")
        if not (np.all(self.counts >= 0) and np.all(self.counts <= self.history.shape[1])):
            raise ValueError(f"counts must lie in [0, {self.history.shape[1]}] (the history length), got {self.counts}")

    @classmethod
    def init(cls, T: int, history: int = 10) -> "ImportanceState":
        """An empty state for T timesteps keeping ``history`` values per timestep."""
        check_int("T", T, min=1)
        check_int("history", history, min=1)
        return cls(np.zeros((int(T), int(history))), np.zeros(int(T), dtype=np.int64))

    @property
    def T(self) -> int:
        return int(self.history.shape[0])

    @property
    def warmed_up(self) -> bool:
        """True once every timestep holds K values; until then sampling is uniform."""
        return bool(np.all(self.counts == self.history.shape[1]))


def _check_state(state):
    if not isinstance(state, ImportanceState):
        raise TypeError(f"state must be an ImportanceState (ImportanceState.init(T)), got {type(state).__name__}")


def importance_probs(state: ImportanceState, uniform_prob: float = 1e-3) -> np.ndarray:
    """p_t proportional to sqrt(E[L_t^2]) over the stored history, mixed with the uniform
    distribution: ``p = (1 - u) p_sqrt + u / T``; uniform until the state is warmed up,
    MATH.md (5.14).  Returns a (T,) host array summing to 1.

    Parameters
    ----------
    state : ImportanceState
        The history of L_t.
    uniform_prob : float, default 1e-3
        The weight u of the uniform distribution, in [0, 1].

    Returns
    -------
    numpy.ndarray
        (T,) float64 probabilities (uniform before warm-up, or if the history is all 0 or
        not finite).

    Raises
    ------
    ValueError
        If ``uniform_prob`` is outside [0, 1] or not finite.
    """
    _check_state(state)
    check_finite_scalar("uniform_prob", uniform_prob, low=0.0, high=1.0)
    T = state.T
    if not state.warmed_up:
        return np.full(T, 1.0 / T)
    w = np.sqrt(np.mean(state.history**2, axis=1))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:
        return np.full(T, 1.0 / T)
    return (1.0 - uniform_prob) * w / w.sum() + uniform_prob / T


def importance_sample(state: ImportanceState, rng: np.random.Generator, size, uniform_prob: float = 1e-3):
    """Draw t ~ p (:func:`importance_probs`) and the weights 1 / (T p_t) that make
    ``weight * L_t`` unbiased for the uniform average, MATH.md (5.14).  Host int64 t and
    float64 weights of shape ``size``.

    Parameters
    ----------
    state : ImportanceState
        The history of L_t.
    rng : numpy.random.Generator
        The host generator (one ``rng.choice`` call).
    size : int or tuple of int
        The shape of the draw.
    uniform_prob : float, default 1e-3
        As in :func:`importance_probs`.

    Returns
    -------
    t : numpy.ndarray
        int64 timesteps in [0, T-1].
    weights : numpy.ndarray
        float64 weights 1 / (T p_t).
    """
    _check_state(state)
    rng = check_rng(rng)
    sizes = size if isinstance(size, tuple) else (size,)
    for n in sizes:
        check_int("size", n, min=1)
    p = importance_probs(state, uniform_prob)
    t = rng.choice(state.T, size=size, p=p).astype(np.int64)
    return t, 1.0 / (state.T * p[t])


def importance_update(state: ImportanceState, t, losses) -> ImportanceState:
    """A new state with the observed ``losses`` (values of L_t) at timesteps ``t`` appended
    to the history (the oldest value dropped once K are stored), MATH.md (5.14).

    Parameters
    ----------
    state : ImportanceState
        The state; not modified.
    t : int array
        0-based timesteps in [0, T-1] (any shape, flattened; host or device).
    losses : array
        The observed L_t, one per entry of ``t``.

    Returns
    -------
    ImportanceState
        The new state.

    Raises
    ------
    ValueError
        If ``t`` and ``losses`` differ in size or ``t`` is out of range.
    """
    _check_state(state)
    check_array("t", t, dtype="int", allow_empty=True)
    check_array("losses", losses, allow_empty=True, finite=True)
    t = np.asarray(to_numpy(t), dtype=np.int64).ravel()
    losses = np.asarray(to_numpy(losses), dtype=np.float64).ravel()
    if t.shape != losses.shape:
        raise ValueError(f"t has {t.shape[0]} entries but losses has {losses.shape[0]}")
    if t.size and (t.min() < 0 or t.max() >= state.T):
        raise ValueError(f"t contains {int(t.min() if t.min() < 0 else t.max())}, out of range [0, {state.T - 1}]")
    history, counts = state.history.copy(), state.counts.copy()
    K = history.shape[1]
    for ti, li in zip(t, losses):
        if counts[ti] == K:
            history[ti, :-1] = history[ti, 1:]
            history[ti, -1] = li
        else:
            history[ti, counts[ti]] = li
            counts[ti] += 1
    return ImportanceState(history, counts)
