"""refdiff's new samplers against diffusers 0.42.1 (the ``compare`` extra): float64, the same
grid, the same injected noise, a full loop of 20-50 steps on an exact oracle (refdiff's
GaussianData as a model), agreement <= 1e-10.

How the library is put in float64 without changing its algorithm: the schedulers' float32
``alphas_cumprod`` is replaced by refdiff's float64 one, and where ``set_timesteps`` casts its
sigma grid to float32 (UniPC, DEIS, KDPM2Ancestral) that module's ``np.float32`` is redirected
to float64 for the call, or the float32 ``sigmas`` are replaced by the same formula in float64
((1 - alpha_bar)/alpha_bar)^(1/2) at the scheduler's own timesteps.  Stochastic schedulers
draw through their module's ``randn_tensor``, which is replaced by the recorded draws.
MATH.md (16.3), (16.4), (16.6), (16.7), (16.8), (16.9), (16.10), (16.16), (16.17), (16.18).
"""

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[compare]')")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[compare]')")

import refdiff  # noqa: E402
from refdiff.samplers.lcm import lcm_timesteps  # noqa: E402

# numpy 2 deprecation warnings raised inside diffusers/torch interop, not by refdiff
pytestmark = [pytest.mark.compare, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

T = 1000
G = refdiff.GaussianData(np.array([0.5, -1.0, 2.0]), np.array([[0.3, 0.1, 0.0], [0.1, 1.0, -0.2], [0.0, -0.2, 3.0]]))
TOL = 1e-10


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _np64():
    """A stand-in for a diffusers module's ``np`` whose float32 is float64."""
    ns = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    ns.float32 = np.float64
    return ns


def _x_T(n=6):
    return np.random.default_rng(0).standard_normal((n, 3))


def _run(sch, model, x, scale_input=False):
    """diffusers' sampling loop as its pipelines write it (one model call per timestep)."""
    x = torch.tensor(x)
    for t in sch.timesteps:
        xin = sch.scale_model_input(x, t) if scale_input else x
        tt = float(t)
        t_arg = np.full(x.shape[0], int(tt)) if tt == int(tt) else np.full(x.shape[0], tt)
        x = sch.step(torch.tensor(model(xin.numpy(), t_arg)), t, x).prev_sample
    return x.numpy()


def _set_vp_sigmas(sch, s, final):
    ts = sch.timesteps.numpy()
    ab = s.alpha_bars
    last = 0.0 if final == "zero" else float(np.sqrt((1 - ab[0]) / ab[0]))
    sch.sigmas = torch.tensor(np.append(np.sqrt((1 - ab[ts]) / ab[ts]), last))
    return ts


def _tape(n_draws, shape, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(n_draws)]


# ---------------------------------------------------------------------------- UniPC
@pytest.mark.parametrize("variant,order,final,predict_x0,dc", [
    ("bh1", 2, "sigma_min", True, ()), ("bh1", 3, "sigma_min", True, ()), ("bh2", 2, "zero", True, ()),
    ("bh2", 3, "zero", True, ()), ("bh2", 3, "sigma_min", True, (2, 5)), ("bh2", 2, "sigma_min", False, ()),
    ("bh1", 3, "sigma_min", False, ())])
def test_unipc(variant, order, final, predict_x0, dc):
    """MATH.md (16.3), (16.4): UniPCMultistepScheduler(solver_type, solver_order, predict_x0,
    final_sigmas_type, disable_corrector), 25 steps, "linspace" grid, epsilon model."""
    from diffusers import UniPCMultistepScheduler

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    sch = UniPCMultistepScheduler(num_train_timesteps=T, solver_order=order, solver_type=variant,
                                  final_sigmas_type=final, predict_x0=predict_x0, disable_corrector=list(dc))
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.set_timesteps(25)
    ts = _set_vp_sigmas(sch, s, final)
    want = _run(sch, model, _x_T())
    got = refdiff.sample(model, _x_T(), s, ts, "unipc", order=order, solver_type=variant, final_sigmas_type=final,
                         form="data" if predict_x0 else "noise", disable_corrector=dc, progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("variant,predict_x0", [("bh1", True), ("bh2", False)])
def test_unipc_final_sigma_zero_nan_in_diffusers_finite_in_refdiff(variant, predict_x0):
    """MATH.md (16.3): the diffusers 0.42.1 quirks refdiff documents: with the default final
    sigma = 0, bh1 returns NaN (B(h) = -inf times 0), and so does the noise form
    (predict_x0=False: sigma_t (e^h - 1) = 0 * inf); refdiff's last step is x0_hat."""
    from diffusers import UniPCMultistepScheduler

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    sch = UniPCMultistepScheduler(num_train_timesteps=T, solver_type=variant, predict_x0=predict_x0)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.set_timesteps(20)
    ts = _set_vp_sigmas(sch, s, "zero")
    assert np.isnan(_run(sch, model, _x_T())).all()
    got = refdiff.sample(model, _x_T(), s, ts, "unipc", solver_type=variant, form="data" if predict_x0 else "noise",
                         progress=False)
    assert np.isfinite(got).all()


# ---------------------------------------------------------------------------- DEIS, PNDM
@pytest.mark.parametrize("order,n", [(1, 25), (2, 25), (3, 25), (3, 12)])
def test_deis(order, n):
    """MATH.md (16.6): DEISMultistepScheduler(solver_order) on its "linspace" grid ending at
    sigma_min (refdiff final_sigmas_type="sigma_min"); n = 12 < 15 exercises lower_order_final."""
    from diffusers import DEISMultistepScheduler

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    sch = DEISMultistepScheduler(num_train_timesteps=T, solver_order=order)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.set_timesteps(n)
    ts = _set_vp_sigmas(sch, s, "sigma_min")
    want = _run(sch, model, _x_T())
    got = refdiff.sample(model, _x_T(), s, ts, "deis", order=order, final_sigmas_type="sigma_min", progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("skip_prk_steps", [True, False])
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_pndm(skip_prk_steps, set_alpha_to_one):
    """MATH.md (16.7), (16.8), (16.9): PNDMScheduler (PRK warm-up or skip_prk_steps) on its
    default "leading" grid, 25 steps (T // n = 40, even, so its PRK midpoints are grid-exact)."""
    from diffusers import PNDMScheduler

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    sch = PNDMScheduler(num_train_timesteps=T, skip_prk_steps=skip_prk_steps, set_alpha_to_one=set_alpha_to_one)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.final_alpha_cumprod = torch.tensor(1.0 if set_alpha_to_one else float(s.alpha_bars[0]))
    sch.set_timesteps(25)
    want = _run(sch, model, _x_T())
    got = refdiff.sample(model, _x_T(), s, refdiff.timesteps(T, 25, "leading"), "pndm", skip_prk_steps=skip_prk_steps,
                         final_sigmas_type="zero" if set_alpha_to_one else "sigma_min", progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------- KDPM2 ancestral
@pytest.mark.parametrize("spacing,init_scale", [("trailing", "sigma_max"), ("leading", "vp")])
def test_kdpm2_ancestral(monkeypatch, spacing, init_scale):
    """MATH.md (16.10): KDPM2AncestralDiscreteScheduler, 25 steps, the same 24 noise draws; its
    midpoint model times are log-sigma interpolated (refdiff interpolation="log_sigma"), its
    initial scale sigma_max on "trailing", sqrt(sigma_max^2 + 1) on "leading"."""
    import diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete as M

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    draws = _tape(24, (6, 3))
    it = iter(draws)
    monkeypatch.setattr(M, "np", _np64())
    monkeypatch.setattr(M, "randn_tensor", lambda shape, **kw: torch.tensor(next(it)))
    sch = M.KDPM2AncestralDiscreteScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.set_timesteps(25)
    want = _run(sch, model, _x_T() * float(sch.init_noise_sigma), scale_input=True)
    it2 = iter(draws)
    got = refdiff.sample(model, _x_T(), s, refdiff.timesteps(T, 25, spacing), "dpm_2_ancestral",
                         noise=lambda like: next(it2), interpolation="log_sigma", init_scale=init_scale, progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------- LCM
@pytest.mark.parametrize("n,original_steps", [(4, 50), (20, 50), (25, 40)])
def test_lcm(monkeypatch, n, original_steps):
    """MATH.md (16.16), (16.17), (16.18): LCMScheduler (scaled_linear betas, timestep_scaling 10,
    sigma_data 0.5, set_alpha_to_one) with the same draws; its grid equals lcm_timesteps."""
    import diffusers.schedulers.scheduling_lcm as M

    s = refdiff.make_schedule("scaled_linear", T, beta_start=0.00085, beta_end=0.012)
    model = G.as_model(s, "epsilon")
    draws = _tape(n - 1, (6, 3))
    it = iter(draws)
    monkeypatch.setattr(M, "randn_tensor", lambda shape, **kw: torch.tensor(next(it)))
    sch = M.LCMScheduler(num_train_timesteps=T, original_inference_steps=original_steps)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.final_alpha_cumprod = torch.tensor(1.0)
    sch.set_timesteps(n)
    ts = lcm_timesteps(T, n, original_steps)
    assert ts.tolist() == sch.timesteps.numpy().tolist()
    want = _run(sch, model, _x_T())
    it2 = iter(draws)
    got = refdiff.sample(model, _x_T(), s, ts, "lcm", noise=lambda like: next(it2), progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------- refdiff vectors
def _scheduler_for(name, monkeypatch, draws):
    """The diffusers scheduler (float64, noise injected) that vectors case ``library_<name>``
    names in its description."""
    import diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete as K
    import diffusers.schedulers.scheduling_lcm as LC
    from diffusers import DEISMultistepScheduler, PNDMScheduler, UniPCMultistepScheduler

    it = iter(draws)
    for mod in (K, LC):
        monkeypatch.setattr(mod, "randn_tensor", lambda shape, **kw: torch.tensor(next(it)))
    monkeypatch.setattr(K, "np", _np64())
    if name.startswith("unipc"):
        v, o = name.split("_")[1], int(name[-1])
        final = "sigma_min" if v == "bh1" else "zero"
        return UniPCMultistepScheduler(solver_type=v, solver_order=o, final_sigmas_type=final)
    if name.startswith("deis"):
        return DEISMultistepScheduler(solver_order=int(name[-1]))
    if name.startswith("pndm"):
        return PNDMScheduler(skip_prk_steps=name.endswith("plms"))
    if name == "kdpm2_ancestral":
        return K.KDPM2AncestralDiscreteScheduler(timestep_spacing="trailing")
    return LC.LCMScheduler(original_inference_steps=50, set_alpha_to_one=True)


def test_vectors_library_cases_agree_with_diffusers(monkeypatch):
    """MATH.md (16.3), (16.6), (16.9), (16.10), (16.17): every chapter-16 ``library_*`` case of
    ``refdiff vectors`` (``NEW_LIBRARY_RUNS``) is reproduced by the diffusers 0.42.1 scheduler its description names (same
    timesteps, oracle model, x_T and draws) to <= 1e-10."""
    from refdiff import vectors as V

    cases = [c for c in V.build_cases() if c.name[len("library_"):] in V.NEW_LIBRARY_RUNS]
    assert len(cases) == len(V.NEW_LIBRARY_RUNS)
    for c in cases:
        name = c.name[len("library_"):]
        kind = c.parameters["schedule"]["kind"]
        s = refdiff.make_schedule(kind, T)
        draws = list(c.inputs.get("noise", []))
        sch = _scheduler_for(name, monkeypatch, draws)
        sch.alphas_cumprod = torch.tensor(s.alpha_bars)
        if hasattr(sch, "final_alpha_cumprod"):
            sch.final_alpha_cumprod = torch.tensor(1.0 if name == "lcm" else float(s.alpha_bars[0]))
        sch.set_timesteps(len(c.inputs["timesteps"]))
        if name.startswith(("unipc", "deis")):
            _set_vp_sigmas(sch, s, "sigma_min" if name.startswith(("deis", "unipc_bh1")) else "zero")
        assert set(c.inputs["timesteps"].tolist()) <= {int(round(float(t))) for t in sch.timesteps}, name
        model = V.oracle_eps_model(s)
        kd = name == "kdpm2_ancestral"
        want = _run(sch, model, c.inputs["x_T"] * (float(sch.init_noise_sigma) if kd else 1.0), scale_input=kd)
        np.testing.assert_allclose(c.outputs["x0"], want, rtol=0, atol=TOL, err_msg=name)


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_karras(monkeypatch, order):
    """MATH.md (16.3), (16.4), (2.10): UniPCMultistepScheduler(use_karras_sigmas=True) (Karras
    levels over the schedule's range, integer model times rounded from the log-sigma
    interpolation, final sigma 0) equals refdiff's unipc on ``refdiff.library_grid(...,
    "dpmsolver_multistep", use_karras_sigmas=True)``, 25 steps."""
    import diffusers.schedulers.scheduling_unipc_multistep as M

    s = refdiff.make_schedule("linear", T)
    model = G.as_model(s, "epsilon")
    monkeypatch.setattr(M, "np", _np64())
    sch = M.UniPCMultistepScheduler(num_train_timesteps=T, solver_order=order, use_karras_sigmas=True)
    sch.alphas_cumprod = torch.tensor(s.alpha_bars)
    sch.set_timesteps(25)
    grid = refdiff.library_grid(s, 25, "dpmsolver_multistep", use_karras_sigmas=True)
    assert [p.t for p in grid[:-1]] == sch.timesteps.numpy().tolist()
    want = _run(sch, model, _x_T())
    got = refdiff.sample(model, _x_T(), s, grid, "unipc", order=order, progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
