"""refdiff against diffusers 0.42.1 (the ``compare`` extra): whole sampling runs, float64,
same grid, same injected noise, exact Gaussian oracle model, agreement <= 1e-10.

diffusers stores grids in float32 and casts the state to float32 inside ``step``; to compare
the algorithms rather than float32 round-off, each scheduler module's ``np``/``torch`` names are
replaced (for the test only, by ``monkeypatch``) with proxies whose ``float32`` is ``float64``:
diffusers' own code then runs in float64.  refdiff builds its grid independently with
:func:`refdiff.library_grid` (MATH.md (2.17)), which is checked against the scheduler's
``sigmas``/``timesteps`` first.
"""

import numpy as np
import pytest

import refdiff
from refdiff.samplers import dpm_solver as D
from refdiff.samplers import karras as K

torch = pytest.importorskip("torch", reason="the comparison tests need torch (pip install refdiff[compare])")
diffusers = pytest.importorskip("diffusers", reason="the comparison tests need diffusers (pip install refdiff[compare])")

pytestmark = pytest.mark.compare

T = 1000
SCHED = refdiff.make_schedule("scaled_linear", T)
DATA = refdiff.GaussianData(np.array([0.4, -0.8, 1.2]), np.array([0.3, 0.05, 1.5]))
MODEL = DATA.as_model(SCHED, "epsilon")  # exact eps at integer or fractional (2.15) model times
TOL = 1e-10


class _F64:
    """A module proxy whose ``float32`` is ``float64`` (everything else passes through)."""

    def __init__(self, mod):
        self._mod = mod

    def __getattr__(self, name):
        return self._mod.float64 if name == "float32" else getattr(self._mod, name)


@pytest.fixture
def f64(monkeypatch):
    """Run the diffusers scheduler modules' code in float64 (module docstring)."""
    import diffusers.schedulers.scheduling_dpmsolver_multistep as m1
    import diffusers.schedulers.scheduling_dpmsolver_singlestep as m2
    import diffusers.schedulers.scheduling_euler_discrete as m3

    for mod in (m1, m2, m3):
        monkeypatch.setattr(mod, "np", _F64(np))
        monkeypatch.setattr(mod, "torch", _F64(torch))


def _scheduler(cls, **config):
    return getattr(diffusers, cls)(num_train_timesteps=T, trained_betas=SCHED.betas.copy(), **config)


def _torch_model(x, t):
    tt = t.item() if t.ndim == 0 else t[0].item()
    tn = np.full((x.shape[0],), tt, dtype=np.int64 if float(tt).is_integer() and not t.is_floating_point() else np.float64)
    return torch.from_numpy(MODEL(x.numpy(), tn))


def _check_grid(sched, grid):
    """The scheduler's (timesteps, sigmas) equal refdiff's grid: times to 1e-9, levels to 1e-12."""
    sig = [0.0 if p.sigma == 0 else p.sigma / p.alpha for p in grid]
    np.testing.assert_allclose(sched.sigmas.numpy(), sig, rtol=1e-12, atol=0)
    np.testing.assert_allclose(sched.timesteps.numpy().astype(np.float64), [p.t for p in grid[:-1]], rtol=0, atol=1e-9)


def _x_T(seed=0):
    return np.random.default_rng(seed).standard_normal((6, 3))


# ----------------------------------------------------------------------------- Euler
@pytest.mark.parametrize("levels", ["spaced", "karras", "exponential"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_euler_discrete(f64, spacing, levels):
    """MATH.md (9.3), (9.9), (9.10), (2.17), (2.18): EulerDiscreteScheduler with each
    timestep_spacing (linspace: float timesteps, sigma linear in t) and with use_karras_sigmas /
    use_exponential_sigmas (model times linear in log sigma, fractional), 30 steps, against
    euler_loop on refdiff.library_grid with the spacing's init_noise_sigma (diffusers_init_scale)."""
    n = 30
    kw = {"use_karras_sigmas": levels == "karras", "use_exponential_sigmas": levels == "exponential",
          "timestep_spacing": spacing, "steps_offset": 1 if spacing == "leading" else 0}
    s = _scheduler("EulerDiscreteScheduler", **kw)
    s.set_timesteps(n)
    grid = refdiff.library_grid(SCHED, n, "euler", **kw)
    _check_grid(s, grid)
    x_T = _x_T()
    sample = torch.from_numpy(x_T) * s.init_noise_sigma
    for t in s.timesteps:
        out = _torch_model(s.scale_model_input(sample, t), t)
        sample = s.step(out, t, sample).prev_sample
    ours = K.euler_loop(MODEL, x_T, SCHED, grid, init_scale=refdiff.diffusers_init_scale(spacing))
    np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)


# ----------------------------------------------------------------------------- DPM-Solver++ multistep
def test_dpmsolver_multistep_exponential(f64):
    """MATH.md (2.17), (2.18): DPMSolverMultistepScheduler with use_exponential_sigmas evaluates
    the model at the log-sigma-interpolated times truncated to integers (floor; only Karras times
    are rounded); 3M published, 25 steps, agrees with dpmpp_3m on refdiff.library_grid."""
    n = 25
    s = _scheduler("DPMSolverMultistepScheduler", solver_order=3, use_exponential_sigmas=True)
    s.set_timesteps(n)
    grid = refdiff.library_grid(SCHED, n, "dpmsolver_multistep", use_exponential_sigmas=True)
    _check_grid(s, grid)
    assert all(isinstance(p.t, int) for p in grid[:-1])
    x_T = _x_T(5)
    sample = torch.from_numpy(x_T)
    for t in s.timesteps:
        sample = s.step(_torch_model(sample, t), t, sample).prev_sample
    ours = D.dpmpp_3m(MODEL, x_T, SCHED, grid, lower_order_final=False, variant="published")
    np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("algorithm", ["dpmsolver++", "sde-dpmsolver++"])
def test_dpmsolver_multistep_karras(f64, order, algorithm):
    """MATH.md (10.12)-(10.16), (10.20), (2.17): DPMSolverMultistepScheduler with
    use_karras_sigmas=True (integer model times rounded from log-sigma interpolation), 25
    steps, dpmsolver++ and sde-dpmsolver++ at orders 2 and 3, the same noise, against
    dpmpp_2m / dpmpp_3m (variant 'published', first-order start) / dpmpp_2m_sde (order 3:
    variant 'diffusers') on refdiff.library_grid.  With >= 15 steps diffusers lowers only the
    final step to sigma = 0, which is x0_hat in both: lower_order_final=False."""
    n = 25
    s = _scheduler("DPMSolverMultistepScheduler", solver_order=order, algorithm_type=algorithm,
                   use_karras_sigmas=True)
    s.set_timesteps(n)
    grid = refdiff.library_grid(SCHED, n, "dpmsolver_multistep", use_karras_sigmas=True)
    _check_grid(s, grid)
    assert all(isinstance(p.t, int) for p in grid[:-1])
    x_T = _x_T(1)
    z = np.random.default_rng(2).standard_normal((n,) + x_T.shape)
    sample = torch.from_numpy(x_T)
    for i, t in enumerate(s.timesteps):
        kw = {"variance_noise": torch.from_numpy(z[i])} if algorithm == "sde-dpmsolver++" else {}
        sample = s.step(_torch_model(sample, t), t, sample, **kw).prev_sample
    draws = iter(z)
    if algorithm == "dpmsolver++":
        loop = D.dpmpp_2m if order == 2 else D.dpmpp_3m
        extra = {} if order == 2 else {"variant": "published"}
        ours = loop(MODEL, x_T, SCHED, grid, lower_order_final=False, **extra)
    else:
        ours = D.dpmpp_2m_sde(MODEL, x_T, SCHED, grid, noise=lambda like: next(draws), order=order,
                              variant="diffusers", lower_order_final=False)
    np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)


def test_dpmsolver_multistep_spacings(f64):
    """MATH.md (2.17): DPMSolverMultistepScheduler's own "linspace" (n + 1 points, last
    dropped) and "leading" (T // (n + 1)) grids and final_sigmas_type='sigma_min' equal
    refdiff.library_grid, and a 2M run on each agrees to 1e-10."""
    for spacing, final in (("linspace", "zero"), ("leading", "zero"), ("trailing", "sigma_min")):
        n = 20
        s = _scheduler("DPMSolverMultistepScheduler", timestep_spacing=spacing, final_sigmas_type=final,
                       steps_offset=1 if spacing == "leading" else 0)
        s.set_timesteps(n)
        grid = refdiff.library_grid(SCHED, n, "dpmsolver_multistep", timestep_spacing=spacing,
                                    final_sigmas_type=final, steps_offset=1 if spacing == "leading" else 0)
        _check_grid(s, grid)
        x_T = _x_T(3)
        sample = torch.from_numpy(x_T)
        for t in s.timesteps:
            sample = s.step(_torch_model(sample, t), t, sample).prev_sample
        # with >= 15 steps diffusers lowers only a final step to sigma = 0 (x0_hat in both)
        ours = D.dpmpp_2m(MODEL, x_T, SCHED, grid, lower_order_final=False)
        np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)


# ----------------------------------------------------------------------------- singlestep
@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("order, solver_type", [(2, "midpoint"), (3, "midpoint"), (3, "heun")])
def test_dpmsolver_singlestep(f64, order, solver_type, karras):
    """MATH.md (10.9), (10.11), (10.19): DPMSolverSinglestepScheduler (dpmsolver++, grid points
    as stages, orders in blocks 1, 2(, 3)), 24 steps, against dpm_solver_grid_stages on
    refdiff.library_grid."""
    n = 24
    s = _scheduler("DPMSolverSinglestepScheduler", solver_order=order, solver_type=solver_type,
                   use_karras_sigmas=karras)
    s.set_timesteps(n)
    grid = refdiff.library_grid(SCHED, n, "dpmsolver_singlestep", use_karras_sigmas=karras)
    _check_grid(s, grid)
    x_T = _x_T(4)
    sample = torch.from_numpy(x_T)
    for t in s.timesteps:
        sample = s.step(_torch_model(sample, t), t, sample).prev_sample
    st = "taylor" if solver_type == "heun" else "dpmsolver"
    ours = D.dpm_solver_grid_stages(MODEL, x_T, SCHED, grid, order=order, form="data", solver_type=st)
    np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)
    assert refdiff.singlestep_orders(n, order, False, True) == list(s.order_list)


def test_float32_grids_agree_to_float32_precision():
    """Without the float64 proxy diffusers computes alphas_cumprod and the grid in float32:
    refdiff.library_grid agrees with it only to that precision (relative 1e-4: float32 round-off
    of the cumulative product, amplified in sqrt((1 - a)/a) where a is near 1), which is why the
    runs above use the proxy."""
    s = _scheduler("EulerDiscreteScheduler", use_karras_sigmas=True)
    s.set_timesteps(20)
    grid = refdiff.library_grid(SCHED, 20, "euler", use_karras_sigmas=True)
    sig = [0.0 if p.sigma == 0 else p.sigma / p.alpha for p in grid]
    assert s.sigmas.dtype == torch.float32
    np.testing.assert_allclose(s.sigmas.numpy().astype(np.float64), sig, rtol=1e-4)


def test_vector_library_cases_are_diffusers_runs(f64):
    """The 'library_*' cases of `refdiff vectors` (MATH.md (2.17)) are diffusers 0.42.1 runs:
    each case's configuration, run by diffusers in float64 on the case's x_T and noise, gives the
    case's x0 to 1e-10."""
    from refdiff import vectors as V

    s = refdiff.make_schedule("linear", 1000)
    model = V.oracle_eps_model(s)
    cases = {c.name: c for c in V._library_cases(np.random.default_rng(20240601))}
    assert len(cases) == len(V.LIBRARY_RUNS)
    for name, case in cases.items():
        cfg = dict(case.parameters["config"])
        sch = getattr(diffusers, cfg.pop("scheduler"))(num_train_timesteps=1000, trained_betas=s.betas.copy(), **cfg)
        sch.set_timesteps(case.parameters["steps"])
        sample = torch.from_numpy(case.inputs["x_T"].copy())
        noise = list(case.inputs.get("noise", [])) + [np.zeros_like(case.inputs["x_T"])]
        if hasattr(sch, "scale_model_input") and "Euler" in type(sch).__name__:
            sample = sample * sch.init_noise_sigma
        for i, t in enumerate(sch.timesteps):
            inp = sch.scale_model_input(sample, t)
            tt = t.item()
            tn = np.full((inp.shape[0],), tt, dtype=np.float64 if t.is_floating_point() else np.int64)
            out = torch.from_numpy(model(inp.numpy(), tn))
            kw = {"variance_noise": torch.from_numpy(noise[i])} if cfg.get("algorithm_type") == "sde-dpmsolver++" else {}
            sample = sch.step(out, t, sample, **kw).prev_sample
        np.testing.assert_allclose(case.outputs["x0"], sample.numpy(), rtol=TOL, atol=TOL, err_msg=name)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_trailing_final_step_noise(f64, monkeypatch, variance_type):
    """MATH.md (8.5), (8.12): DDPMScheduler on a 'trailing' grid (last timestep > 0) adds noise
    on its final step too; ddpm_loop(final_step_noise=True) reproduces the run to 1e-10 with the
    same draws (diffusers' randn_tensor replaced by the recorded draws), 20 steps."""
    import diffusers.schedulers.scheduling_ddpm as m

    monkeypatch.setattr(m, "np", _F64(np))
    monkeypatch.setattr(m, "torch", _F64(torch))
    n = 20
    s = _scheduler("DDPMScheduler", timestep_spacing="trailing", variance_type=variance_type, clip_sample=False)
    s.set_timesteps(n)
    ts = refdiff.timesteps(T, n, "trailing")
    np.testing.assert_array_equal(s.timesteps.numpy(), ts)
    z = np.random.default_rng(6).standard_normal((n,) + (6, 3))
    draws = iter(z)
    monkeypatch.setattr(m, "randn_tensor", lambda shape, **kw: torch.from_numpy(next(draws)))
    x_T = _x_T(6)
    sample = torch.from_numpy(x_T)
    for t in s.timesteps:
        sample = s.step(_torch_model(sample, t), t, sample).prev_sample
    assert next(draws, None) is None  # diffusers drew on every step, the last included
    mine = iter(z)
    ours = refdiff.ddpm_loop(MODEL, x_T, SCHED, ts, noise=lambda like: next(mine), variance_type=variance_type,
                             final_step_noise=True)
    np.testing.assert_allclose(ours, sample.numpy(), rtol=TOL, atol=TOL)
