"""Latent consistency distillation (LCM) at toy scale and progressive distillation, as
``loss_fn``s for :func:`refdiff.training.fit`, MATH.md chapter 18 (sections 18.6-18.7).

**LCM** (Luo et al. 2023; diffusers ``train_lcm_distill_sd_wds.py``) on a discrete VP
:class:`~refdiff.Schedule`: the teacher is a class-conditional model with classifier-free
guidance ``eps_c + omega (eps_c - eps_u)`` (the LCM paper's omega, i.e. refdiff's ``"w"``
convention with w = 1 + omega); omega is drawn per sample from [omega_min, omega_max] and given to
the student through the guidance-scale embedding.  The student is a consistency function
f = c_skip(t) x + c_out(t) x0_hat (LCM boundary, :func:`refdiff.lcm_boundary`) trained to agree
with its EMA target one skipping DDIM step (of the guided teacher) further down the grid.

*Found by reading* (diffusers): the script's ``--w_min/--w_max`` help text speaks of the Imagen
form ("guidance scales have 1 added") while its code applies ``cond + w (cond - uncond)``; the
pipeline embeds ``guidance_scale - 1``, consistent with the code, not with the help.

*Workaround*: refdiff's networks (refdiff/nn, another helper's module) have no extra embedding
slot that is added to the time embedding, so :class:`GuidedNet` concatenates the guidance
embedding to the network's input features (the wrapped MLP is built with ``dim = D + E``) and
drops the extra outputs.  The conditioning is the same information through another route.

**Progressive distillation** (Salimans & Ho 2022) on the VE path x = x0 + sigma z: a student with
an EDM-preconditioned denoiser learns to do in one DDIM step what its teacher does in two.

NaN and inf in the arrays of the pure functions propagate: not checked.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_finite_scalar, check_int
from .backend import array_namespace, check_rng
from .consistency import _grid
from .consistency_training import _check_c, _check_net, _col, _loss_and_grad, cm_backward, cm_forward
from .parameterization import PREDICTION_TYPES, to_eps_x0
from .samplers.common import check_args
from .samplers.lcm import lcm_boundary
from .schedules import Schedule

__all__ = ["lcm_solver_timesteps", "guidance_scale_embedding", "GuidedNet", "lcm_loss_fn", "lcm_student_model",
           "pd_grid", "pd_target", "pd_loss_fn", "pd_sample", "edm_student_denoiser"]


def lcm_solver_timesteps(T=1000, n=50):
    """LCM's skipping DDIM-solver grid (diffusers ``DDIMSolver``), MATH.md (18.25):
    tau_k = k (T // n) - 1, k = 1..n (19, 39, ..., 999 for T = 1000, n = 50); the step from tau_k
    goes to max(tau_k - T // n, 0).  int64, increasing.

    Parameters
    ----------
    T : int, default 1000
        Number of training timesteps.
    n : int, default 50
        Number of solver steps, 1 <= n <= T.

    Returns
    -------
    numpy.ndarray (n,)
        The int64 timesteps tau_1..tau_n.

    Raises
    ------
    ValueError
        If ``n`` is not an integer in [1, T].
    """
    check_int("T", T, min=1)
    check_int("n", n, min=1)
    if T > 2**31 - 1:
        raise ValueError(f"lcm_solver_timesteps: T = {T} exceeds 2**31 - 1")
    if not 1 <= n <= T:
        raise ValueError(f"lcm_solver_timesteps: n = {n!r} must be an integer in [1, T = {T}]")
    return np.arange(1, n + 1, dtype=np.int64) * (T // n) - 1


def guidance_scale_embedding(w, dim=256, scale=1000.0):
    """The guidance-scale embedding of LCM (diffusers ``get_guidance_scale_embedding``),
    MATH.md (18.26): with s = scale w and half = dim/2, frequencies
    f_i = exp(-ln(10000) i / (half - 1)), i = 0..half-1, the vector [sin(s f), cos(s f)]
    (a zero column appended for odd dim).  ``w`` shape (N,) -> (N, dim) float64.

    Parameters
    ----------
    w : array_like (N,)
        Guidance scales (flattened).
    dim : int, default 256
        The embedding width (>= 4).
    scale : float, default 1000.0
        The factor applied to ``w`` before the embedding.

    Returns
    -------
    numpy.ndarray (N, dim)
        Float64 embeddings.

    Raises
    ------
    ValueError
        If ``dim`` is not an integer >= 4.
    """
    check_int("dim", dim, min=4)
    if dim > 10**6:
        raise ValueError(f"guidance_scale_embedding: dim = {dim} exceeds 10**6")
    check_finite_scalar("scale", scale)
    if hasattr(w, "shape") and hasattr(w, "dtype") and not isinstance(w, np.generic):
        check_array("w", w, finite=True)
    else:
        check_finite_scalar("w", w)
    w = np.asarray(w, dtype=np.float64).reshape(-1) * scale
    half = dim // 2
    f = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
    e = np.concatenate([np.sin(w[:, None] * f), np.cos(w[:, None] * f)], axis=1)
    return np.pad(e, ((0, 0), (0, dim % 2)))


def _check_range(omega_range):
    if not (isinstance(omega_range, (tuple, list)) and len(omega_range) == 2):
        raise TypeError(f"omega_range must be a (low, high) pair of numbers, got {omega_range!r}")
    for v in omega_range:
        check_finite_scalar("omega_range", v)


class GuidedNet:
    """A network that also takes the guidance scale omega (module docstring: the embedding is
    concatenated to the input).  ``net`` a refdiff network on D + ``embed_dim`` features;
    cond holds ``"omega"`` (N,) in [omega_min, omega_max] besides the network's own kinds.

    Parameters
    ----------
    net : network
        A refdiff network (``init_params``, ``forward``, ``backward``) whose input and output
        have ``dim + embed_dim`` features.
    dim : int
        D, the number of data features.
    embed_dim : int, default 16
        The width of the guidance-scale embedding (>= 4, :func:`guidance_scale_embedding`).
    omega_range : tuple of float, default (0.0, 4.0)
        (low, high), low < high: the guidance scales the network accepts.
    scale : float, default 100.0
        The ``scale`` of :func:`guidance_scale_embedding`.

    Raises
    ------
    ValueError
        If ``omega_range`` is not increasing.
    """

    def __init__(self, net, dim, embed_dim=16, omega_range=(0.0, 4.0), scale=100.0):
        _check_net(net)
        if not callable(getattr(net, "init_params", None)):
            raise TypeError(f"net must have init_params(rng, ...), got {type(net).__name__}")
        check_int("dim", dim, min=1)
        check_int("embed_dim", embed_dim, min=4)
        if embed_dim > 10**6:
            raise ValueError(f"GuidedNet: embed_dim = {embed_dim} exceeds 10**6")
        _check_range(omega_range)
        check_finite_scalar("scale", scale, low=0.0, low_open=True)
        if not omega_range[0] < omega_range[1]:
            raise ValueError(f"GuidedNet: omega_range = {omega_range!r} must be (low, high) with low < high")
        self.net, self.dim, self.embed_dim, self.omega_range, self.scale = net, int(dim), int(embed_dim), \
            tuple(float(v) for v in omega_range), float(scale)

    def init_params(self, rng, **kw):
        """The wrapped network's initial parameters.

        Parameters
        ----------
        rng : numpy.random.Generator
            Passed to ``net.init_params``.
        **kw
            Further keywords of ``net.init_params``.

        Returns
        -------
        dict
            The parameters.
        """
        return self.net.init_params(check_rng(rng), **kw)

    def _omega(self, cond, n):
        om = np.asarray(cond.get("omega", np.zeros(n)), dtype=np.float64).reshape(-1)
        lo, hi = self.omega_range
        if om.shape != (n,) or not np.all((om >= lo - 1e-12) & (om <= hi + 1e-12)):
            bad = om[(om < lo) | (om > hi)] if om.shape == (n,) else om
            raise ValueError(f"GuidedNet: omega = {bad[:3]!r} outside the embedded range [{lo}, {hi}] "
                             f"(or not of shape ({n},))")
        return om

    def forward(self, params, x, t, cond=None):
        """The wrapped network on [x, embedding(omega)], its first D outputs.

        Parameters
        ----------
        params : dict
            The network's parameters.
        x : array (N, D)
            Inputs.
        t : array (N,)
            Times, passed to the network.
        cond : dict, optional
            ``"omega"`` (N,) in ``omega_range`` (zeros when absent); the other entries are passed to
            the network (None when there are none).

        Returns
        -------
        out : array (N, D)
            The output.
        cache : tuple
            For :meth:`backward`.

        Raises
        ------
        ValueError
            If omega is outside ``omega_range`` or not of shape (N,).
        """
        check_array("x", x, ndim=2, shape=(None, self.dim))
        if hasattr(t, "shape") and getattr(t, "ndim", 0) == 1 and t.shape[0] != x.shape[0]:
            raise ValueError(f"x has shape {tuple(x.shape)} and t shape {tuple(t.shape)}: one time per row")
        if cond is not None and not isinstance(cond, dict):
            raise TypeError(f"cond must be a dict (with \"omega\") or None, got {type(cond).__name__}")
        cond = dict(cond or {})
        om = self._omega(cond, x.shape[0])
        rest = {k: v for k, v in cond.items() if k != "omega"}
        xp = array_namespace(x)
        e = xp.asarray(guidance_scale_embedding(om, self.embed_dim, self.scale), dtype=x.dtype)
        out, cache = self.net.forward(params, xp.concat([x, e], axis=1), t, rest or None)
        return out[:, :self.dim], (cache, out.shape)

    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)`` through :meth:`forward` (the dropped outputs get zero).

        Parameters
        ----------
        params : dict
            The network's parameters.
        cache : tuple
            The cache of :meth:`forward`.
        dout : array (N, D)
            The gradient with respect to the output.

        Returns
        -------
        grads : dict
            The parameter gradients.
        dx : array (N, D)
            The gradient with respect to ``x`` (not the embedding).
        """
        inner, shape = cache
        check_array("dout", dout, shape=(shape[0], self.dim))
        xp = array_namespace(dout)
        full = xp.concat([dout, xp.zeros((shape[0], shape[1] - self.dim), dtype=dout.dtype)], axis=1)
        grads, dx = self.net.backward(params, inner, full)
        return grads, dx[:, :self.dim]


def _lcm_f(net, params, x, t, cond, schedule, timestep_scaling, prediction_type="epsilon"):
    """f = c_skip(t) x + c_out(t) x0_hat, MATH.md (16.16); the network predicts epsilon
    (x0_hat = (x - sigma out)/alpha), v (x0_hat = alpha x - sigma out) or the sample (x0_hat = out).  Returns (f, (cache, df/dout))."""
    xp = array_namespace(x)
    ab = xp.asarray(np.asarray(schedule.alpha_bars)[t], dtype=x.dtype)
    a, s = _col(xp.sqrt(ab), x), _col(xp.sqrt(1.0 - ab), x)
    cs, co = (np.array(v) for v in zip(*[lcm_boundary(int(k), 0.5, timestep_scaling) for k in t]))
    out, cache = net.forward(params, x, xp.asarray(t, dtype=x.dtype), cond)
    cs, co = _col(xp.asarray(cs, dtype=x.dtype), x), _col(xp.asarray(co, dtype=x.dtype), x)
    if prediction_type == "sample":
        return cs * x + co * out, (cache, co)
    if prediction_type == "v_prediction":  # x0 = alpha x - sigma v: no 1/alpha amplification at high noise
        return cs * x + co * (a * x - s * out), (cache, -co * s)
    return cs * x + co * (x - s * out) / a, (cache, -co * s / a)


def lcm_loss_fn(student, teacher, schedule, *, n_solver=50, omega_range=(0.0, 4.0), metric="l2", huber_c=None,
                teacher_prediction_type="epsilon", student_prediction_type="epsilon", timestep_scaling=10.0,
                target="ema"):
    """LCM distillation ``loss_fn(groups, batch, rng)``, MATH.md (18.27).  ``batch`` = (x0, y);
    ``teacher(x, t, y)`` (y None: unconditional) of ``teacher_prediction_type``; ``student`` a
    :class:`GuidedNet` predicting ``student_prediction_type`` ("epsilon", "v_prediction" or "sample"), its parameters the group ``"params"`` and its EMA
    target the group ``target``.  Per sample: n ~ U{0..n_solver-1}, start = tau_n, t = max(tau_n -
    T//n_solver, 0), omega ~ U(omega_range), x = alpha x0 + sigma z; the guided teacher's x0 and eps
    give one DDIM step to t; loss d(f_theta(x, start), sg f_target(x_prev, t)).

    Parameters
    ----------
    student : GuidedNet
        The student.
    teacher : callable
        ``teacher(x, t, y) -> output`` with t an integer array (N,).
    schedule : Schedule
        The discrete VP schedule (its ``alpha_bars``; T = their number).
    n_solver : int, default 50
        Number of solver steps of :func:`lcm_solver_timesteps`.
    omega_range : tuple of float, default (0.0, 4.0)
        (low, high), within the student's ``omega_range``.
    metric : {"l2", "pseudo_huber"}, default "l2"
        The distance d.
    huber_c : float, optional
        The pseudo-Huber constant (required, > 0, for ``metric="pseudo_huber"``).
    teacher_prediction_type : str, default "epsilon"
        What the teacher predicts (one of refdiff.parameterization's prediction types).
    student_prediction_type : {"epsilon", "v_prediction", "sample"}, default "epsilon"
        What the student network predicts.
    timestep_scaling : float, default 10.0
        The LCM boundary's timestep scaling (:func:`refdiff.lcm_boundary`).
    target : str, default "ema"
        The group holding the target network's parameters.

    Returns
    -------
    callable
        ``loss_fn(groups, batch, rng) -> (loss, {"params": grads})``.

    Raises
    ------
    ValueError
        If a prediction type, ``metric``, ``huber_c``, ``omega_range`` or ``n_solver`` is
        invalid (checked at once).
    """
    if not (callable(getattr(student, "forward", None)) and hasattr(student, "omega_range")):
        raise TypeError(f"student must be a GuidedNet (forward and omega_range), got {type(student).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_int("n_solver", n_solver, min=1)
    if n_solver > schedule.T:
        raise ValueError(f"lcm_loss_fn: n_solver = {n_solver} exceeds T = {schedule.T}")
    _check_range(omega_range)
    check_finite_scalar("timestep_scaling", timestep_scaling, low=0.0, low_open=True)
    if not isinstance(target, str):
        raise TypeError(f"target must be a group name (str), got {type(target).__name__}")
    if teacher_prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"lcm_loss_fn: unknown teacher_prediction_type: prediction_type "
                         f"{teacher_prediction_type!r}; valid: "
                         f"{', '.join(PREDICTION_TYPES)}")
    if student_prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"lcm_loss_fn: student_prediction_type {student_prediction_type!r}; valid: 'epsilon', "
                         f"'sample', 'v_prediction'")
    if metric == "pseudo_huber":
        _check_c(huber_c)
    elif metric != "l2":
        raise ValueError(f"lcm_loss_fn: unknown metric {metric!r}; valid: 'l2', 'pseudo_huber'")
    lo, hi = omega_range
    if not (student.omega_range[0] <= lo <= hi <= student.omega_range[1]):
        raise ValueError(f"lcm_loss_fn: omega_range {omega_range!r} outside the student's embedded range "
                         f"{student.omega_range!r}")
    if not callable(teacher):
        raise TypeError(f"teacher must be callable (teacher(x, t, cond) -> output), got {type(teacher).__name__}")
    T = len(schedule.alpha_bars)
    taus, k = lcm_solver_timesteps(T, n_solver), T // n_solver
    ab = np.asarray(schedule.alpha_bars, dtype=np.float64)

    def loss_fn(groups, batch, rng):
        x0, y = batch
        xp = array_namespace(x0)
        n = x0.shape[0]
        idx = rng.integers(0, n_solver, n)
        start, t = taus[idx], np.maximum(taus[idx] - k, 0)
        om = lo + (hi - lo) * rng.random(n)
        z = xp.asarray(rng.standard_normal(x0.shape), dtype=x0.dtype)
        a_s, s_s = _col(xp.asarray(np.sqrt(ab[start])), x0), _col(xp.asarray(np.sqrt(1 - ab[start])), x0)
        x = a_s * x0 + s_s * z
        ts = xp.asarray(start)
        e_c, x0_c = to_eps_x0(teacher(x, ts, y), x, a_s, s_s, teacher_prediction_type)
        e_u, x0_u = to_eps_x0(teacher(x, ts, None), x, a_s, s_s, teacher_prediction_type)
        w = _col(xp.asarray(om, dtype=x0.dtype), x0)  # per-sample omega: c + omega (c - u)
        e_g, x0_g = e_c + w * (e_c - e_u), x0_c + w * (x0_c - x0_u)
        x_prev = _col(xp.asarray(np.sqrt(ab[t])), x0) * x0_g + _col(xp.asarray(np.sqrt(1 - ab[t])), x0) * e_g
        cond = {"omega": om} if y is None else {"omega": om, "class": y}
        f, (cache, dfdout) = _lcm_f(student, groups["params"], x, start, cond, schedule, timestep_scaling,
                                    student_prediction_type)
        f_t, _ = _lcm_f(student, groups[target], x_prev, t, cond, schedule, timestep_scaling, student_prediction_type)
        loss, df = _loss_and_grad(f, f_t, xp.ones((n,), dtype=x0.dtype), metric, huber_c)
        return loss, {"params": student.backward(groups["params"], cache, dfdout * df)[0]}

    return loss_fn


def lcm_student_model(student, params, omega, cond=None):
    """The trained LCM student as a plain model ``model(x, t)`` (its prediction type) at guidance ``omega``
    (for :func:`refdiff.samplers.lcm.lcm`, which applies the LCM boundary itself).

    Parameters
    ----------
    student : GuidedNet
        The trained student.
    params : dict
        Its parameters.
    omega : float
        The guidance scale (within the student's ``omega_range``).
    cond : dict, optional
        Further condition entries (e.g. ``"class"``).

    Returns
    -------
    callable
        ``model(x, t) -> output``.
    """
    if not (callable(getattr(student, "forward", None)) and hasattr(student, "omega_range")):
        raise TypeError(f"student must be a GuidedNet (forward and omega_range), got {type(student).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be the student's parameter dict, got {type(params).__name__}")
    check_finite_scalar("omega", omega, low=student.omega_range[0], high=student.omega_range[1])
    if cond is not None and not isinstance(cond, dict):
        raise TypeError(f"cond must be a dict or None, got {type(cond).__name__}")

    def model(x, t):
        n = x.shape[0]
        c = {"omega": np.full(n, float(omega)), **({} if cond is None else cond)}
        return student.forward(params, x, t, c)[0]

    return model


# ------------------------------------------------------------------ progressive distillation
def pd_grid(sigmas_desc, steps):
    """Every (len - 1)/steps-th point of a decreasing grid ending in 0 (the student's grid of a
    progressive-distillation round), MATH.md (18.28).

    Parameters
    ----------
    sigmas_desc : array_like
        A decreasing grid ending in 0, with n intervals.
    steps : int
        The student's number of steps; must divide n.

    Returns
    -------
    numpy.ndarray (steps + 1,)
        Float64 grid.

    Raises
    ------
    ValueError
        If ``steps`` < 1 or does not divide n.
    """
    s = _grid(sigmas_desc, "pd_grid", "sigmas_desc")
    if s.size < 2 or np.any(np.diff(s) >= 0) or np.any(s < 0):
        raise ValueError(f"pd_grid: sigmas_desc must be a strictly decreasing grid of >= 2 levels >= 0, "
                         f"got {s.tolist()}")
    check_int("steps", steps, min=1)
    n = len(s) - 1
    if steps < 1 or n % steps:
        raise ValueError(f"pd_grid: steps = {steps} must divide the {n} intervals of the base grid")
    return s[:: n // steps]


@check_args(arrays=("x", "x2"), coefs=("sigma", "sigma2"), same_shape=("x", "x2"))
def pd_target(x, x2, sigma, sigma2):
    """The denoiser target that makes one DDIM step from (x, sigma) land on x2 at sigma2 < sigma,
    MATH.md (18.28): D = (x2 - (sigma2/sigma) x) / (1 - sigma2/sigma).

    Parameters
    ----------
    x : array (N, ...)
        The start point at ``sigma``.
    x2 : array (N, ...)
        The point to land on at ``sigma2``.
    sigma, sigma2 : float or array broadcasting against ``x``
        The two noise levels, sigma2 < sigma.

    Returns
    -------
    array (N, ...)
        The target D.
    """
    r = sigma2 / sigma
    return (x2 - r * x) / (1.0 - r)


def _ddim_ve(D, x, s, s_next):
    return D + (s_next / s) * (x - D)


def pd_loss_fn(student, teacher, grid, *, sigma_data=0.5):
    """Progressive distillation ``loss_fn(groups, batch, rng)``, MATH.md (18.28): the student grid
    ``grid`` (decreasing, ending in 0) halves the teacher's; a pair j, x = x0 + s_j z, two teacher
    DDIM steps s_j -> m_j -> s_{j+1} (m_j the teacher's midpoint, geometric mean in rho-space given by
    the caller's fine grid: ``teacher`` is (denoiser(x, sigma), fine grid)); the student's EDM
    denoiser regresses pd_target (squared error).

    Parameters
    ----------
    student : network
        The student network, made an EDM denoiser by :func:`refdiff.consistency_training.cm_forward`
        (``form="edm"``, sigma_min = 0); group ``"params"``.
    teacher : tuple
        ``(denoiser(x, sigma), fine_grid)``: the teacher's denoiser (sigma a float64 array (N,))
        and its decreasing grid, with twice the intervals of ``grid`` and containing it.
    grid : array_like
        The student's decreasing grid, ending in 0.
    sigma_data : float, default 0.5
        The EDM scalings' sigma_data.

    Returns
    -------
    callable
        ``loss_fn(groups, batch, rng) -> (loss, {"params": grads})`` with ``batch`` the x0 array.

    Raises
    ------
    ValueError
        If the teacher's grid does not have twice the intervals of ``grid`` or does not
        contain it.
    """
    _check_net(student, "student")
    if not (isinstance(teacher, (tuple, list)) and len(teacher) == 2 and callable(teacher[0])):
        raise TypeError(f"teacher must be (denoiser(x, sigma), fine_grid), got {type(teacher).__name__}")
    _grid(grid, "pd_loss_fn", "grid")
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    D_t, fine = teacher
    grid, fine = np.asarray(grid, np.float64), np.asarray(fine, np.float64)
    if len(fine) - 1 != 2 * (len(grid) - 1) or not np.allclose(fine[::2], grid):
        raise ValueError("pd_loss_fn: the teacher's fine grid must have twice the student's intervals and contain it")
    kw = dict(sigma_data=sigma_data, sigma_min=0.0, form="edm")

    def loss_fn(groups, batch, rng):
        x0 = batch
        xp = array_namespace(x0)
        n = x0.shape[0]
        j = rng.integers(0, len(grid) - 1, n)
        s, m, s2 = fine[2 * j], fine[2 * j + 1], fine[2 * j + 2]
        z = xp.asarray(rng.standard_normal(x0.shape), dtype=x0.dtype)
        x = x0 + _col(xp.asarray(s), x0) * z
        xm = _ddim_ve(D_t(x, s), x, _col(xp.asarray(s), x0), _col(xp.asarray(m), x0))
        x2 = _ddim_ve(D_t(xm, m), xm, _col(xp.asarray(m), x0), _col(xp.asarray(s2), x0))
        tgt = pd_target(x, x2, _col(xp.asarray(s), x0), _col(xp.asarray(s2), x0))
        D, cache = cm_forward(student, groups["params"], x, xp.asarray(s), None, **kw)
        loss, dD = _loss_and_grad(D, tgt, xp.ones((n,), dtype=x0.dtype), "l2", None)
        return loss, {"params": cm_backward(student, groups["params"], cache, dD)}

    return loss_fn


def pd_sample(denoiser, x_T, grid):
    """DDIM (= Euler on the VE path) down the decreasing ``grid`` (ending in 0) with
    ``denoiser(x, sigma_vector)``, MATH.md (18.28); x_T at grid[0].

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> D`` with sigma a float64 array (N,).
    x_T : array (N, ...)
        The initial point at ``grid[0]``.
    grid : sequence of float
        Decreasing noise levels, ending in 0.

    Returns
    -------
    array (N, ...)
        The final sample.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable (denoiser(x, sigma) -> x0), got {type(denoiser).__name__}")
    check_array("x_T", x_T, min_ndim=1, finite=True)
    g = _grid(grid, "pd_sample", "grid")
    if g.size < 2 or np.any(np.diff(g) >= 0) or np.any(g < 0):
        raise ValueError(f"grid must be a strictly decreasing sequence of >= 2 noise levels >= 0, got {g.tolist()}")
    grid = [float(v) for v in g]
    x = x_T
    for s, s2 in zip(grid[:-1], grid[1:]):
        D = denoiser(x, np.full(x.shape[0], s))
        x = _ddim_ve(D, x, s, s2)
    return x


def edm_student_denoiser(net, params, sigma_data=0.5):
    """A student network as the EDM denoiser D(x, sigma) (sigma (N,)), MATH.md (18.1) with
    sigma_min = 0 (``form="edm"``).

    Parameters
    ----------
    net : network
        The student network.
    params : dict
        Its parameters.
    sigma_data : float, default 0.5
        The EDM scalings' sigma_data.

    Returns
    -------
    callable
        ``D(x, sigma)`` with sigma array_like (N,).
    """
    _check_net(net)
    if not isinstance(params, dict):
        raise TypeError(f"params must be the network's parameter dict, got {type(params).__name__}")
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    return lambda x, s: cm_forward(net, params, x, np.asarray(s, np.float64), None, sigma_data=sigma_data,
                                   sigma_min=0.0, form="edm")[0]

