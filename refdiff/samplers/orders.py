"""Convergence orders of the ODE samplers, measured against exact oracle trajectories,
MATH.md (10.17) and (11.11).  Not star-exported: use ``refdiff.samplers.orders``.

Global error: run a sampler with n steps from x_T and compare with the exact probability-
flow ODE map (``GaussianData.ode_transport``) between the same two times; fit the slope of
log(error) against log(n) by least squares; a method of order k has slope about -k.

Setups (each stated so a user can reproduce it):

* VP samplers: ``LinearVP(beta_0=0.1, beta_1=20, t_min=1e-3)``, grid ``time_grid(vp, n,
  "logSNR")`` from t = 1 to t = 1e-3 (t = 0 is data), eps-prediction Gaussian oracle
  N(mu, Sigma) with mu = (0.5, -1, 2) and Sigma = Q diag(1e-3, 1e-4, 1e-5) Q^T (a fixed
  rotation Q): the data variances put the transition of x0_hat(lambda) inside the lambda
  window, so the leading error terms do not integrate to zero (MATH.md (10.17)).
* VP samplers started where x0_hat changes (``"vp_start"``, MATH.md (10.18)): the same VP,
  grid ``time_grid(vp, n, "logSNR", t_start=0.35)``, data N(mu, diag(0.3, 1, 3)); over the
  first step x0_hat moves by O(h), so a first-order start step caps the global order at 2.
* ``"vp_start_rho"`` (MATH.md section 16.3): as ``"vp_start"`` on a grid uniform in
  rho = sigma / alpha (where the PLMS weights are exact); expected 3 there is the cap of the
  O(h^3) warm-up steps, approached from above (3.7 over 16..128 steps).
* flow samplers: rectified flow (t = 0 data) from t = 1 to t = 0 on a uniform grid with a
  velocity model; Gaussian N(mu, Q diag(0.25, 1, 4) Q^T), exact reference; and a 2-D
  two-component Gaussian mixture whose reference is RK4 with 1024 steps (MATH.md (11.11)).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_finite_scalar, check_int
from ..oracles import GaussianData, GaussianMixture
from ..schedules import LinearVP, time_grid

__all__ = ["SPECS", "gaussian_vp_oracle", "gaussian_vp_start_oracle", "gaussian_flow_oracle", "mixture_flow_oracle", "global_error",
           "fit_order", "measure_orders", "local_errors", "plot_errors"]

_MEAN = np.array([0.5, -1.0, 2.0])
_Q = np.linalg.qr(np.array([[1.0, 0.3, -0.2], [0.4, -1.0, 0.5], [0.1, 0.6, 1.2]]))[0]

# label -> (method, options, expected order, setup); setup "vp", "vp_start" or "flow_gauss" / "flow_mix"
SPECS = {
    "ddim": ("ddim", {}, 1, "vp"),
    "euler": ("euler", {}, 1, "vp"),
    "heun": ("heun", {}, 2, "vp"),
    "dpm_2": ("dpm_2", {}, 2, "vp"),
    "dpm_solver_1": ("dpm_solver_1", {}, 1, "vp"),
    "dpm_solver_2": ("dpm_solver_2", {}, 2, "vp"),
    "dpm_solver_3": ("dpm_solver_3", {}, 3, "vp"),
    "dpmpp_2s": ("dpmpp_2s", {}, 2, "vp"),
    "dpmpp_2m": ("dpmpp_2m", {"lower_order_final": False}, 2, "vp"),
    "dpmpp_3m": ("dpmpp_3m", {"lower_order_final": False}, 3, "vp"),
    "dpmpp_3m_published": ("dpmpp_3m", {"lower_order_final": False, "variant": "published"}, 2, "vp"),
    "dpmpp_3m@start": ("dpmpp_3m", {"lower_order_final": False}, 3, "vp_start"),
    "dpmpp_3m_first_order@start": ("dpmpp_3m", {"lower_order_final": False, "warmup": "first_order"}, 2,
                                   "vp_start"),
    "dpmpp_3m_published@start": ("dpmpp_3m", {"lower_order_final": False, "variant": "published"}, 2, "vp_start"),
    # new samplers (MATH.md chapter 16), all started where x0_hat moves; no lower-order final steps
    "unip_1@start": ("unipc", {"order": 1, "corrector": False, "lower_order_final": False}, 1, "vp_start"),
    "unip_2@start": ("unipc", {"order": 2, "corrector": False, "lower_order_final": False}, 2, "vp_start"),
    "unip_3@start": ("unipc", {"order": 3, "corrector": False, "lower_order_final": False}, 2, "vp_start"),
    "unip_3_warm_corrector@start": ("unipc", {"order": 3, "disable_corrector": range(1, 2**31),
                                              "lower_order_final": False}, 3, "vp_start"),
    "unipc_1@start": ("unipc", {"order": 1, "lower_order_final": False}, 2, "vp_start"),
    "unipc_2@start": ("unipc", {"order": 2, "lower_order_final": False}, 3, "vp_start"),
    "unipc_3@start": ("unipc", {"order": 3, "lower_order_final": False}, 3, "vp_start"),
    "deis_1@start": ("deis", {"order": 1, "lower_order_final": False}, 1, "vp_start"),
    "deis_2@start": ("deis", {"order": 2, "lower_order_final": False}, 2, "vp_start"),
    "deis_3@start": ("deis", {"order": 3, "lower_order_final": False}, 2, "vp_start"),
    "deis_3_singlestep@start": ("deis", {"order": 3, "lower_order_final": False, "warmup": "singlestep"}, 3,
                                "vp_start"),
    "plms@start": ("pndm", {"skip_prk_steps": True}, 2, "vp_start"),
    "pndm@start": ("pndm", {}, 2, "vp_start"),
    "plms@start_rho": ("pndm", {"skip_prk_steps": True}, 3, "vp_start_rho"),
    "pndm@start_rho": ("pndm", {}, 3, "vp_start_rho"),
    "pf_ode_rk4": ("pf_ode_rk4", {}, 4, "vp"),
    "flow_euler": ("flow_euler", {}, 1, "flow_gauss"),
    "flow_midpoint": ("flow_midpoint", {}, 2, "flow_mix"),
    "flow_rk4": ("flow_rk4", {}, 4, "flow_gauss"),
}


def gaussian_vp_oracle():
    """N((0.5, -1, 2), Q diag(1e-3, 1e-4, 1e-5) Q^T): the VP order oracle."""
    return GaussianData(_MEAN, _Q @ np.diag([1e-3, 1e-4, 1e-5]) @ _Q.T)


def gaussian_vp_start_oracle():
    """N((0.5, -1, 2), diag(0.3, 1, 3)): the oracle of the "vp_start" setup (t from 0.35)."""
    return GaussianData(_MEAN, np.array([0.3, 1.0, 3.0]))


def gaussian_flow_oracle():
    """N((0.5, -1, 2), Q diag(0.25, 1, 4) Q^T): the flow order oracle."""
    return GaussianData(_MEAN, _Q @ np.diag([0.25, 1.0, 4.0]) @ _Q.T)


def mixture_flow_oracle():
    """0.3 N((1, 0.5), diag(0.3, 0.6)) + 0.7 N((-1, -0.5), diag(0.5, 0.2))."""
    return GaussianMixture([0.3, 0.7], [[1.0, 0.5], [-1.0, -0.5]], [[0.3, 0.6], [0.5, 0.2]])


def _check_run(label, n_samples, seed, methods_ok=True):
    """The shared checks of the measurement functions: a known label, sizes, seed."""
    valid = set(SPECS) | (set(_methods()) if methods_ok else set())
    if not isinstance(label, str) or label not in valid:
        raise ValueError(f"unknown order setup {label!r} (label); valid: a key of SPECS ({', '.join(SPECS)})"
                         + (" or a method name" if methods_ok else ""))
    check_int("n_samples", n_samples, min=1)
    if n_samples > 10**6:
        raise ValueError(f"n_samples = {n_samples} exceeds 10**6")
    check_int("seed", seed, min=0)


def _methods():
    from .loop import sampler_methods

    return sampler_methods()


def _vp():
    return LinearVP(0.1, 20.0, t_min=1e-3)


def _as(vp, t):
    t = np.asarray(float(t))
    return float(vp.alpha(t)), float(vp.sigma(t))


def _rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _flow_velocity(oracle):
    return lambda x, t: oracle.velocity(x, 1.0 - t, t, -1.0, 1.0)  # rectified flow, t = 0 data (11.7)


def _flow_reference(oracle, x, ts, n_ref=1024):
    """Exact map (Gaussian) or RK4 with ``n_ref`` steps (mixture; 1024 and 2048 steps agree to
    ~1e-12 on [0, 1], far below the errors measured)."""
    if isinstance(oracle, GaussianData):
        return oracle.ode_transport(x, 1.0 - ts[0], ts[0], 1.0 - ts[-1], ts[-1])
    from .flow import flow_rk4

    return flow_rk4(_flow_velocity(oracle), x, None, np.linspace(ts[0], ts[-1], n_ref + 1))


def global_error(label, n, *, n_samples=32, seed=0, **options):
    """RMS error (over samples and coordinates) of the setup ``label`` of :data:`SPECS` with
    n steps against the exact ODE map, MATH.md (10.17), (11.11).

    Parameters
    ----------
    label : str
        A key of :data:`SPECS`, or a method name (then the "vp" setup with no options).
    n : int
        The number of steps.
    n_samples : int, default 32
        The number of start points.
    seed : int, default 0
        The seed of the start points.
    **options
        Extra options of the method (over the setup's own).

    Returns
    -------
    float
        The RMS error.
    """
    _check_run(label, n_samples, seed)
    check_int("n", n, min=1)
    if n > 10**5:
        raise ValueError(f"n = {n} steps exceeds 10**5")
    method, opts, _, setup = SPECS[label] if label in SPECS else (label, {}, None, "vp")
    opts = {**opts, **options}
    fn = _methods()[method]
    rng = np.random.default_rng(seed)
    if setup in ("vp", "vp_start", "vp_start_rho"):
        vp, g = _vp(), gaussian_vp_oracle() if setup == "vp" else gaussian_vp_start_oracle()
        x = rng.standard_normal((n_samples, 3))
        ts = time_grid(vp, n, "logSNR", t_start=None if setup == "vp" else 0.35) if setup != "vp_start_rho" \
            else _rho_uniform_grid(vp, n, 0.35)
        out = fn(g.as_model(vp, "epsilon"), x, vp, ts, prediction_type="epsilon", **opts)
        return _rms(out, g.ode_transport(x, *_as(vp, ts[0]), *_as(vp, ts[-1])))
    g = gaussian_flow_oracle() if setup == "flow_gauss" else mixture_flow_oracle()
    x = rng.standard_normal((n_samples, g.D))
    ts = np.linspace(1.0, 0.0, n + 1)
    out = fn(_flow_velocity(g), x, None, ts, prediction_type="velocity", **opts)
    return _rms(out, _flow_reference(g, x, ts))


def _rho_uniform_grid(vp, n, t_start):
    """n + 1 times from t_start to vp.t_min uniform in rho = sigma / alpha = e^{-lambda}."""
    (a0, s0), (a1, s1) = _as(vp, t_start), _as(vp, vp.t_min)
    ts = np.asarray(vp.t_from_lambda(-np.log(np.linspace(s0 / a0, s1 / a1, n + 1))), dtype=np.float64)
    ts[0], ts[-1] = t_start, vp.t_min
    return ts


def fit_order(steps, errors):
    """The least-squares slope k of log(error) = c - k log(n): the measured order.

    Parameters
    ----------
    steps : array_like
        The step counts n.
    errors : array_like
        The errors at those counts.

    Returns
    -------
    float
        k.
    """
    s, e = np.log(np.asarray(steps, dtype=np.float64)), np.log(np.asarray(errors, dtype=np.float64))
    return float(-np.polyfit(s, e, 1)[0])


def measure_orders(methods=None, steps=(16, 32, 64, 128), *, n_samples=32, seed=0):
    """{label: {"steps", "errors", "order" (fitted), "expected", "method", "options"}} for each
    label of :data:`SPECS` (default: every one whose method exists), MATH.md (10.17), (11.11).

    Steps (16..128 by default) are where float64 round-off is far below the errors for
    every method here (the smallest errors, RK4's at 128 steps, are ~1e-9).

    Parameters
    ----------
    methods : iterable of str, optional
        Labels of :data:`SPECS`; default every label whose method exists.
    steps : tuple of int, default (16, 32, 64, 128)
        The step counts.
    n_samples : int, default 32
        The number of start points.
    seed : int, default 0
        The seed of the start points.

    Returns
    -------
    dict
        One entry per label (above, with also "setup").

    Raises
    ------
    ValueError
        If a label is not in :data:`SPECS`.
    """
    avail = _methods()
    labels = [k for k, v in SPECS.items() if v[0] in avail] if methods is None else list(methods)
    out = {}
    for label in labels:
        _check_run(label, n_samples, seed, methods_ok=False)
        errs = [global_error(label, int(n), n_samples=n_samples, seed=seed) for n in steps]
        method, opts, expected, _ = SPECS[label]
        out[label] = {"steps": list(map(int, steps)), "errors": errs, "order": fit_order(steps, errs),
                      "expected": expected, "method": method, "options": dict(opts), "setup": SPECS[label][3]}
    return out


def local_errors(label, hs, *, lam0=0.0, t0=0.6, n_samples=16, seed=0):
    """One-step (local) errors for step sizes ``hs``: in lambda from lambda0 for VP methods, in t
    from t0 for flow methods, starting on the exact trajectory (and, for the multistep
    methods, with the exact previous predictions at lambda0 - h, lambda0 - 2h).  A method of
    order k has local error O(h^{k+1}), MATH.md (10.17).

    Parameters
    ----------
    label : str
        A key of :data:`SPECS`.
    hs : iterable of float
        The step sizes.
    lam0 : float, default 0.0
        lambda0 (VP setups).
    t0 : float, default 0.6
        The start time (flow setups).
    n_samples : int, default 16
        The number of start points.
    seed : int, default 0
        The seed of the start points.

    Returns
    -------
    list of float
        The RMS one-step error for each h.

    Raises
    ------
    ValueError
        If ``label`` is not in :data:`SPECS`, or a size, ``lam0`` or ``t0`` is invalid.
    """
    from .dpm_solver import dpmpp_2m_update, dpmpp_3m_update

    _check_run(label, n_samples, seed, methods_ok=False)
    check_finite_scalar("lam0", lam0)
    check_finite_scalar("t0", t0, low=0.0, low_open=True, high=1.0)
    method, opts, _, setup = SPECS[label]
    rng = np.random.default_rng(seed)
    errs = []
    if setup != "vp":
        g = gaussian_flow_oracle() if setup == "flow_gauss" else mixture_flow_oracle()
        x1 = rng.standard_normal((n_samples, g.D))
        fn = _methods()[method]
        x = _flow_reference(g, x1, [1.0, t0], 512)
        for h in hs:
            out = fn(_flow_velocity(g), x, None, np.array([t0, t0 - h]), prediction_type="velocity")
            errs.append(_rms(out, _flow_reference(g, x, [t0, t0 - h], 64)))
        return errs
    vp, g = _vp(), gaussian_vp_oracle()
    xT = rng.standard_normal((n_samples, 3))
    a1, s1 = _as(vp, 1.0)
    tl = lambda lam: float(vp.t_from_lambda(np.asarray(lam)))  # noqa: E731
    for h in hs:
        ts = [tl(lam0 - 2 * h), tl(lam0 - h), tl(lam0), tl(lam0 + h)]
        pts = [_as(vp, t) for t in ts]
        xs = [g.ode_transport(xT, a1, s1, a, s) for a, s in pts]  # exact states
        ref = xs[3]
        if method in ("dpmpp_2m", "dpmpp_3m"):
            m = [g.x0_mean(xs[j], *pts[j]) for j in range(3)]
            lam = [math.log(a / s) for a, s in pts]
            if method == "dpmpp_2m":
                out = dpmpp_2m_update(xs[2], m[2], m[1], lam[1], *pts[2], *pts[3])
            else:
                out = dpmpp_3m_update(xs[2], m[2], m[1], m[0], lam[1], lam[0], *pts[2], *pts[3],
                                      variant=opts.get("variant", "exact"))
        else:
            fn = _methods()[method]
            out = fn(g.as_model(vp, "epsilon"), xs[2], vp, np.array(ts[2:]), prediction_type="epsilon", **opts)
        errs.append(_rms(out, ref))
    return errs


def plot_errors(result, path):
    """Save a log-log plot of global error against steps for a :func:`measure_orders` result
    (matplotlib imported here, not at module import).

    Parameters
    ----------
    result : dict
        A :func:`measure_orders` result.
    path : str or path-like
        Where the figure is written.

    Returns
    -------
    str or path-like
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(result), 2)))
    for c, (label, r) in zip(colors, result.items()):
        style = "s--" if label.startswith("flow") else ("^:" if SPECS.get(label, ("", {}, 0, "vp"))[2] >= 3 else "o-")
        ax.loglog(r["steps"], r["errors"], style, color=c, label=f"{label}: {r['order']:.2f} (expect {r['expected']})")
    ax.set_xlabel("steps")
    ax.set_ylabel("RMS global error vs exact ODE map")
    ax.set_title("refdiff sampler convergence on exact oracles")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
