"""Fuzz recipes for the core area (h-fuzz: schedules, forward, parameterization, losses,
guidance, variance, elbo, oracles (not kronecker), likelihood, metrics, moments, data, train).

See tests/fuzz/harness.py's docstring for how to write a recipe."""

from __future__ import annotations

import numpy as np

from .harness import Call, auto_call, ctx

_ALGEBRA = {  # pure elementwise algebra: NaN/inf propagate (documented), every argument
    "refdiff.parameterization.x0_from_eps": {"x_t", "eps", "alpha", "sigma"},
    "refdiff.parameterization.eps_from_x0": {"x_t", "x0", "alpha", "sigma"},
    "refdiff.parameterization.v_from_eps_x0": {"eps", "x0", "alpha", "sigma"},
    "refdiff.parameterization.x0_from_v": {"x_t", "v", "alpha", "sigma"},
    "refdiff.parameterization.eps_from_v": {"x_t", "v", "alpha", "sigma"},
    "refdiff.parameterization.score_from_eps": {"eps", "sigma"},
    "refdiff.parameterization.eps_from_score": {"score", "sigma"},
    "refdiff.parameterization.x0_from_score": {"x_t", "score", "alpha", "sigma"},
    "refdiff.parameterization.velocity_from_eps_x0": {"eps", "x0", "d_alpha", "d_sigma"},
    "refdiff.parameterization.eps_x0_from_velocity": {"x_t", "u", "alpha", "sigma", "d_alpha", "d_sigma"},
    "refdiff.parameterization.to_eps_x0": {"model_output", "x_t", "alpha", "sigma"},
    "refdiff.parameterization.edm_preconditioning": {"sigma"},
    "refdiff.parameterization.edm_denoiser": {"F_out", "x", "sigma"},
    "refdiff.parameterization.edm_target": {"x0", "x", "sigma"},
    "refdiff.parameterization.clip_x0": {"x0"},
    "refdiff.parameterization.dynamic_threshold": {"x0"},
}


def _algebra(q):
    return lambda: auto_call(q, nan_propagates=_ALGEBRA[q])


def _convert():
    c = ctx()
    return Call(__import__("refdiff").parameterization.convert,
                dict(model_output=c.array(), x_t=c.array(seed=1), alpha=0.8, sigma=0.6,
                     from_type="epsilon", to_type="v_prediction"),
                nan_propagates={"model_output", "x_t", "alpha", "sigma"})


def _edm_preconditioning():
    return Call(__import__("refdiff").parameterization.edm_preconditioning, dict(sigma=np.array([0.5, 2.0])),
                nan_propagates={"sigma"}, kinds={"sigma": "coef"})


RECIPES = {q: _algebra(q) for q in _ALGEBRA}
RECIPES.update({
    "refdiff.parameterization.convert": _convert,
    "refdiff.parameterization.edm_preconditioning": _edm_preconditioning,
})


def _r(q, **options):
    """Register the automatic call of ``q`` with ``options`` (Call fields)."""
    def factory():
        return auto_call(q, **{k: (v() if callable(v) and k == "kwargs" else v) for k, v in options.items()})
    RECIPES[q] = factory


c = ctx()
_X01 = lambda: np.clip(ctx().array(scale=0.4), -1, 1)  # noqa: E731  data in [-1, 1]
_VP = "refdiff.schedules"

# --- schedules
_BETAS = {"betas": {"list"}}
_r("refdiff.schedules.Schedule", kwargs=lambda: dict(betas=np.linspace(1e-3, 0.05, 10)), accept=_BETAS)
_r("refdiff.schedules.Schedule.check_t", kwargs=lambda: dict(t=ctx().t()), kinds={"t": "timestep"})
_r("refdiff.schedules.make_schedule", kwargs=lambda: dict(kind="linear", T=10))
_r("refdiff.schedules.schedule_from_betas", kwargs=lambda: dict(betas=np.linspace(1e-3, 0.05, 10)), accept=_BETAS)
_r("refdiff.schedules.schedule_from_alpha_bars", kwargs=lambda: dict(alpha_bars=np.linspace(0.99, 0.1, 10)),
   accept={"alpha_bars": {"list"}})
_r("refdiff.schedules.rescale_zero_terminal_snr", kwargs=lambda: dict(schedule_or_betas=ctx().schedule()),
   kinds={"schedule_or_betas": "object"}, nonfinite_ok="a zero terminal SNR schedule has log_snr = -inf")
_r("refdiff.schedules.cosine_alpha_bar", kwargs=lambda: dict(t=np.array([0.1, 0.5])), nan_propagates={"t"},
   kinds={"t": "coef"})
_r("refdiff.schedules.karras_sigmas", kwargs=lambda: dict(n=5, sigma_min=0.01, sigma_max=10.0))
_r("refdiff.schedules.exponential_sigmas", kwargs=lambda: dict(n=5, sigma_min=0.01, sigma_max=10.0))
_r("refdiff.schedules.polyexponential_sigmas", kwargs=lambda: dict(n=5, sigma_min=0.01, sigma_max=10.0))
_r("refdiff.schedules.sigma_from_alpha_bar", kwargs=lambda: dict(alpha_bar=np.array([0.9, 0.5])),
   nan_propagates={"alpha_bar"}, kinds={"alpha_bar": "coef"})
_r("refdiff.schedules.alpha_bar_from_sigma", kwargs=lambda: dict(sigma=np.array([0.5, 2.0])), nan_propagates={"sigma"},
   kinds={"sigma": "coef"})
for _cls in ("LinearVP", "InterpolatedVP"):
    for _m in ("log_alpha", "dlog_alpha_dt"):
        _r(f"{_VP}.{_cls}.{_m}", kwargs=lambda: dict(t=np.array([0.3, 0.7])), nan_propagates={"t"},
           kinds={"t": "coef"})
    _r(f"{_VP}.{_cls}.t_from_log_alpha", kwargs=lambda: dict(log_alpha=np.array([-0.1, -1.0])),
       nan_propagates={"log_alpha"}, kinds={"log_alpha": "coef"})
_r("refdiff.schedules.InterpolatedVP", kwargs=lambda: dict(schedule=ctx().schedule()))
_r("refdiff.schedules.gather", kwargs=lambda: dict(values=ctx().schedule().alpha_bars, t=ctx().t(), x=ctx().array()),
   skip={"values": "a Schedule's own array"}, kinds={"t": "timestep"}, accept={"x": {"nan", "inf"}})
_r("refdiff.schedules.alpha_sigma", kwargs=lambda: dict(like=ctx().array()),
   accept={"t": {"python_float", "float_array"}, "like": {"nan", "inf"}})
# --- forward
for _f, _arrs in (("q_step_mean_variance", {"x_prev"}), ("q_mean_variance", {"x0"}), ("q_sample", {"x0", "noise"}),
                  ("q_posterior_mean", {"x0", "x_t"}), ("q_posterior_mean_variance", {"x0", "x_t"})):
    _r(f"refdiff.forward.{_f}", nan_propagates=_arrs)

# --- losses
_AS = lambda: dict(alpha=np.array([0.8, 0.6]), sigma=np.array([0.6, 0.8]))  # noqa: E731
_COEF2 = {"alpha": "coef", "sigma": "coef"}


def _mlp():
    from refdiff.nn.mlp import MLP, MLPConfig

    net = MLP(MLPConfig(dim=ctx().D, hidden=8, layers=2, time_embed_dim=8))
    return net, net.init_params(np.random.default_rng(0))


def _diffusion_loss():
    from refdiff.losses import diffusion_loss

    net, params = _mlp()
    c = ctx()
    return Call(diffusion_loss, dict(forward=net.forward, params=params, x0=c.array(), t=c.t(), noise=c.array(seed=1),
                                     schedule=c.schedule()),
                skip={"params": "the network's own parameters (validated by the network)"},
                kinds={"forward": "object"}, nan_propagates={"x0", "noise"})


def _oracle():
    from refdiff.oracles.gaussian import GaussianData

    c = ctx()
    return GaussianData(np.zeros(c.D), c.spd())


_r("refdiff.losses.snr_from_alpha_sigma", kwargs=_AS, kinds=_COEF2, nan_propagates={"alpha", "sigma"})
_r("refdiff.losses.regression_target", kwargs=lambda: dict(x0=ctx().array(), noise=ctx().array(seed=1), **_AS(),
                                                             target="v_prediction"),
   kinds=_COEF2, nan_propagates={"x0", "noise", "alpha", "sigma"})
_r("refdiff.losses.weighted_mse", ref={"weights": np.ones(2)}, nan_propagates={"out", "target_value", "weights"})
_r("refdiff.losses.x0_error_factor", kwargs=lambda: dict(**_AS(), target="v_prediction"), kinds=_COEF2,
   nan_propagates={"alpha", "sigma"})
_r("refdiff.losses.x0_weight", kwargs=lambda: dict(weighting="min_snr", snr=np.array([0.5, 2.0])),
   nan_propagates={"snr"})
_r("refdiff.losses.target_weight", kwargs=lambda: dict(weighting="min_snr", **_AS(), target="epsilon"), kinds=_COEF2,
   nan_propagates={"alpha", "sigma"}, accept={"weighting": {"None"}})
_r("refdiff.losses.min_snr_weight", kwargs=lambda: dict(**_AS(), target="epsilon"), kinds=_COEF2,
   nan_propagates={"alpha", "sigma"})
RECIPES["refdiff.losses.objective_loss"] = lambda: auto_call(
    "refdiff.losses.objective_loss",
    kwargs=dict(out=ctx().array(seed=2), x0=ctx().array(), noise=ctx().array(seed=1), **_AS()),
    kinds={**_COEF2, "weighting": "option"}, ref={"extra_eps_weight": np.ones(2), "weighting": "min_snr"},
    nan_propagates={"out", "x0", "noise", "alpha", "sigma", "extra_eps_weight"})
RECIPES["refdiff.losses.diffusion_loss"] = _diffusion_loss
_r("refdiff.losses.eps_to_target_factor", kwargs=lambda: dict(**_AS(), target="v_prediction"), kinds=_COEF2,
   nan_propagates={"alpha", "sigma"})
_r("refdiff.losses.vlb_eps_weight", accept={"like": {"nan", "inf"}})
RECIPES["refdiff.losses.irreducible_loss"] = lambda: auto_call(
    "refdiff.losses.irreducible_loss", kwargs=dict(oracle=_oracle()), kinds={"oracle": "object"},
    nan_propagates={"x0", "noise"})
_r("refdiff.losses.check_labels", kwargs=lambda: dict(y=np.array([0, 2]), num_classes=3))
_r("refdiff.losses.drop_labels", kwargs=lambda: dict(y=np.array([0, 2]), p=0.5, num_classes=3))

# --- guidance
def _mixture():
    from refdiff.oracles.gaussian import GaussianMixture

    c = ctx()
    return GaussianMixture(np.array([0.3, 0.7]), np.array([[1.0, 0, 0], [-1.0, 0, 0]]),
                           np.stack([c.spd(), c.spd(seed=2)]), labels=np.array([0, 1]))


def _class_mlp():
    from refdiff.nn.mlp import MLP, MLPConfig

    net = MLP(MLPConfig(dim=ctx().D, hidden=8, layers=2, time_embed_dim=8, num_classes=3))
    return net, net.init_params(np.random.default_rng(0))


_G = "refdiff.guidance"
_r(f"{_G}.cfg_convert_scale", kwargs=lambda: dict(scale=2.0, from_convention="w", to_convention="1+w"))
_r(f"{_G}.cfg_combine", kwargs=lambda: dict(out_uncond=ctx().array(), out_cond=ctx().array(seed=1)),
   nan_propagates={"out_uncond", "out_cond"})
_r(f"{_G}.rescale_guidance", kwargs=lambda: dict(guidance_rescale=0.7), nan_propagates={"out_cfg", "out_cond"})
_r(f"{_G}.cfg_model", kwargs=lambda: dict(model=lambda x, t, c: 0.1 * x, y=np.array([0, 1]), null_label=3),
   kinds={"y": "int_array", "model": "object"}, accept={"null_label": {"negative"}})
RECIPES[f"{_G}.guided_model"] = lambda: (lambda n_p: auto_call(
    f"{_G}.guided_model", kwargs=dict(net=n_p[0], params=n_p[1], cond=np.array([0, 1])),
    kinds={"net": "object"}, skip={"params": "validated by the network", "cond": "validated by the network at the call",
                                   "guided": "validated by the network at the call"}))(_class_mlp())
_r(f"{_G}.classifier_guided_eps", kwargs=lambda: dict(grad_log_p_y=ctx().array(seed=3), sigma=0.6),
   nan_propagates={"eps", "grad_log_p_y", "sigma"})
_r(f"{_G}.classifier_guided_model", kwargs=lambda: dict(grad_log_p_y=lambda x, t, y: 0 * x, y=np.array([0, 1])),
   kinds={"grad_log_p_y": "object", "y": "int_array"})
_r(f"{_G}.mixture_classifier_grad", kwargs=lambda: dict(mixture=_mixture()), kinds={"mixture": "object"})
_r(f"{_G}.network_classifier_grad", kwargs=lambda: dict(forward=lambda x, t: (x, None), backward=lambda c, d: d),
   kinds={"backward": "object"})

# --- metrics
_M = "refdiff.metrics"
_r(f"{_M}.random_directions", ref={"like": np.zeros((2, 3))}, accept={"like": {"nan", "inf", "empty"}})
_r(f"{_M}.sliced_wasserstein", kwargs=lambda: dict(x=ctx().array((5, 3)), y=ctx().array((4, 3), seed=1),
                                                     rng=ctx().rng()),
   ref={"directions": ctx().array((6, 3), seed=2)}, accept={"p": {"float"}})
_r(f"{_M}.sliced_wasserstein_gaussians", kwargs=lambda: dict(mean1=np.zeros(3), cov1=ctx().spd(), mean2=np.ones(3),
                                                               cov2=ctx().spd(seed=2), directions=ctx().array((6, 3))))
_r(f"{_M}.energy_distance", kwargs=lambda: dict(x=ctx().array((5, 3)), y=ctx().array((4, 3), seed=1)))
_r(f"{_M}.oracle_nll", kwargs=lambda: dict(samples=ctx().array((5, 3)), oracle=_oracle()), kinds={"oracle": "object"})
_r(f"{_M}.frechet_distance", kwargs=lambda: dict(feat_a=ctx().array((5, 3)), feat_b=ctx().array((4, 3), seed=1)))
_r(f"{_M}.frechet_distance_gaussians", kwargs=lambda: dict(mean1=np.zeros(3), cov1=ctx().spd(), mean2=np.ones(3),
                                                             cov2=ctx().spd(seed=2)))
_r(f"{_M}.fit_gaussian", kwargs=lambda: dict(feat=ctx().array((5, 3))))

# --- variance
_V = "refdiff.variance"
_r(f"{_V}.model_output_shape", kwargs=lambda: dict(x_shape=(2, 3, 4, 4), variance_type="learned_range"),
   kinds={"x_shape": "shape"})
_r(f"{_V}.check_model_output", ref={"t": np.array([3, 7])}, kinds={"t": "int_array", "where": "label"},
   aliases={"out": "model"}, accept={"x": {"nan", "inf"}, "t": {"float_array"}})
_r(f"{_V}.split_learned", kwargs=lambda: dict(model_output=ctx().array((2, 6, 2, 2)), x=ctx().array((2, 3, 2, 2)),
                                               variance_type="learned_range"), nan_propagates={"model_output"},
   aliases={"model_output": "model", "x": "model"},
   accept={"x": {"nan", "inf"}})
_r(f"{_V}.reverse_log_variance", kwargs=lambda: dict(variance_type="learned_range", var_output=ctx().array(seed=4)),
   accept={"like": {"nan", "inf"}}, nan_propagates={"var_output"})

# --- elbo
_E = "refdiff.elbo"


def _levels(shape=(2, 3), bins=256, seed=0):
    """Data on the grid of ``bins`` levels in [-1, 1] (8-bit: k / 127.5 - 1), float64."""
    k = np.random.default_rng(seed).integers(0, bins, size=shape)
    return k * (2.0 / (bins - 1)) - 1.0


def _importance_state():
    from refdiff.elbo.importance import ImportanceState

    st = ImportanceState.init(10, history=2)
    return ImportanceState(np.abs(ctx().array((10, 2))) + 0.1, np.full(10, 2, dtype=np.int64)) if st else st


_COEF4 = {k: "coef" for k in ("mean1", "logvar1", "mean2", "logvar2")}
_r(f"{_E}.gaussian.normal_kl", kinds=_COEF4, nan_propagates=set(_COEF4))
_r(f"{_E}.gaussian.gaussian_log_density", kinds={"x": "coef", "mean": "coef", "logvar": "coef"},
   nan_propagates={"x", "mean", "logvar"})
_r(f"{_E}.gaussian.approx_standard_normal_cdf", nan_propagates={"x"})
_r(f"{_E}.gaussian.standard_normal_cdf", nan_propagates={"x"})
_r(f"{_E}.gaussian.discretized_gaussian_log_likelihood",
   kwargs=lambda: dict(x=_levels(), mean=ctx().array(scale=0.3), log_scale=np.full((2, 3), -2.0)),
   nan_propagates={"mean"}, kinds={"mean": "coef", "log_scale": "coef"})
_r(f"{_E}.importance.ImportanceState", kwargs=lambda: dict(history=np.abs(ctx().array((10, 2))) + 0.1,
                                                             counts=np.full(10, 2, dtype=np.int64)))
_r(f"{_E}.importance.importance_probs", kwargs=lambda: dict(state=_importance_state()), kinds={"state": "object"})
_r(f"{_E}.importance.importance_sample", kwargs=lambda: dict(state=_importance_state(), size=4),
   kinds={"state": "object"})
_r(f"{_E}.importance.importance_update", kwargs=lambda: dict(state=_importance_state(), t=np.array([3, 7]),
                                                               losses=np.array([0.5, 0.25])),
   kinds={"state": "object", "t": "timestep"}, accept={"t": {"python_int", "numpy_int"}})
_r(f"{_E}.objectives.l_simple", kwargs=lambda: dict(model_output=ctx().array(), target=ctx().array(seed=1)),
   kinds={"target": "array"}, nan_propagates={"model_output", "target"})
_r(f"{_E}.objectives.hybrid_loss", kwargs=lambda: dict(x0=_levels(), x_t=ctx().array(), noise=ctx().array(seed=1),
                                                         model_output=ctx().array(seed=2),
                                                         var_output=ctx().array(seed=3, scale=0.3)),
   nan_propagates={"x0", "x_t", "noise", "model_output", "var_output"})
_r(f"{_E}.terms.reverse_mean_log_variance", kwargs=lambda: dict(model_output=ctx().array(seed=2)),
   nan_propagates={"model_output", "x_t", "var_output"}, ref={"var_output": ctx().array(seed=3, scale=0.3)})
_r(f"{_E}.terms.eps_mse_weight")
_r(f"{_E}.terms.prior_term", nan_propagates={"x0"})
_r(f"{_E}.terms.vlb_term", kwargs=lambda: dict(x0=_levels(), model_output=ctx().array(seed=2)),
   nan_propagates={"x0", "x_t", "model_output", "var_output"}, ref={"var_output": ctx().array(seed=3, scale=0.3)})
_r(f"{_E}.terms.bits_per_dim", kwargs=lambda: dict(nats=np.array([3.0, 4.0]), dims=3), kinds={"nats": "coef"},
   nan_propagates={"nats"})
_r(f"{_E}.terms.dequantization_offset")
_r(f"{_E}.terms.continuous_to_discrete_bpd", kwargs=lambda: dict(nats_per_dim=np.array([1.0, 2.0])),
   kinds={"nats_per_dim": "coef"}, nan_propagates={"nats_per_dim"})
_r(f"{_E}.vdm.snr_derivative", kwargs=lambda: dict(t=np.array([0.3, 0.7])), kinds={"t": "coef"},
   nan_propagates={"t"})
_r(f"{_E}.vdm.vdm_diffusion_integrand", kwargs=lambda: dict(t=np.array([0.3, 0.7]), x0_hat=ctx().array(seed=1)),
   kinds={"t": "coef"}, nan_propagates={"t", "x0", "x0_hat"})
_r(f"{_E}.vdm.vdm_vlb", kwargs=lambda: dict(x0=ctx().array(scale=0.3)))
_r(f"{_E}.bound.nll_bound", kwargs=lambda: dict(x0=_levels()))

# --- oracles
_O = "refdiff.oracles"
_SPEC = {"list", "int_array"}  # specification arrays: lists and integer arrays are converted to float64 (documented)
_r(f"{_O}.empirical.EmpiricalData", kwargs=lambda: dict(points=ctx().array((5, 3))), ref={"labels": np.arange(5) % 2},
   kinds={"labels": "int_array"}, accept={"points": _SPEC, "labels": {"list"}})
_LIKE = {"like": {"nan", "inf", "empty", "int_array", "bool_array", "float16", "complex"}}  # like: the namespace only
_r(f"{_O}.empirical.EmpiricalData.sample", ref={"like": np.zeros((2, 3))}, accept=_LIKE)
_r(f"{_O}.gaussian.GaussianData", kwargs=lambda: dict(mean=np.zeros(3), cov=ctx().spd()),
   accept={"mean": _SPEC, "cov": _SPEC | {"python_float"}})
_r(f"{_O}.gaussian.GaussianData.condition", kwargs=lambda: dict(H=np.eye(2, 3), c=np.array([0.5, -0.5])),
   kinds={"noise_var": "float"}, accept={"H": _SPEC, "c": _SPEC})
_r(f"{_O}.gaussian.GaussianData.ode_transport", nan_propagates={"x"})
_r(f"{_O}.gaussian.GaussianData.reverse_kernel", nan_propagates={"x_t"})
_r(f"{_O}.gaussian.GaussianMixture", kwargs=lambda: dict(weights=np.array([0.3, 0.7]),
                                                           means=np.array([[1.0, 0, 0], [-1.0, 0, 0]]),
                                                           covs=np.stack([ctx().spd(), ctx().spd(seed=2)])),
   ref={"labels": np.array([0, 1])}, kinds={"labels": "int_array"},
   accept={"weights": _SPEC, "means": _SPEC, "covs": _SPEC | {"python_float"}, "labels": {"list"}})
RECIPES[f"{_O}.gaussian.GaussianMixture.condition"] = lambda: auto_call(
    _mixture().condition, kwargs=dict(H=np.eye(2, 3), c=np.array([0.5, -0.5])), kinds={"noise_var": "float"},
    accept={"H": _SPEC, "c": _SPEC})
RECIPES[f"{_O}.gaussian.GaussianMixture.conditional"] = lambda: auto_call(_mixture().conditional, kwargs=dict(label=1),
                                                                           kinds={"label": "int"})

# --- likelihood
_L = "refdiff.likelihood"
_r(f"{_L}.ode_log_likelihood", kwargs=lambda: dict(n_steps=3), kinds={"model": "object"})
_r(f"{_L}.dequantized_bits_per_dim", kwargs=lambda: dict(log_likelihood=np.array([-3.0, -4.0]), n_dims=3),
   kinds={"log_likelihood": "coef"}, nan_propagates={"log_likelihood"})
_r(f"{_L}.fd_divergence", kwargs=lambda: dict(f=lambda x: -x), kinds={"f": "object"}, nan_propagates={"x"})
_r(f"{_L}.hutchinson_divergence", kwargs=lambda: dict(f=lambda x: -x, probes=np.ones((2, 2, 3))),
   kinds={"f": "object"}, nan_propagates={"x", "probes"}, accept={"probes": {"batch"}})
_r(f"{_L}.draw_probes", kwargs=lambda: dict(n_probes=2, shape=(2, 3), like=np.zeros((2, 3))),
   accept={"like": {"nan", "inf", "empty", "None"}})
_r(f"{_L}.standard_normal_log_prob", nan_propagates={"x"})

# --- moments
_MO = "refdiff.moments"
_r(f"{_MO}.affine_moments", kwargs=lambda: dict(pipeline=lambda x, noise: 0.5 * x + 0.1 * noise(x),
                                                  x_in=np.array([0.5, -0.5, 0.2])),
   ref={"input_cov": np.eye(3)}, kinds={"pipeline": "object"},
   accept={"x_in": _SPEC | {"python_float"}, "input_cov": _SPEC})
_r(f"{_MO}.sdedit_limits", kwargs=lambda: dict(mean=np.zeros(3), cov=ctx().spd(), x_in=np.array([0.5, -0.5, 0.2])),
   kinds={"alpha": "float", "sigma": "float"},
   accept={"mean": _SPEC, "cov": _SPEC, "x_in": _SPEC})
_r(f"{_MO}.gaussian_kl", kwargs=lambda: dict(m0=np.zeros(3), C0=ctx().spd(), m1=np.ones(3), C1=ctx().spd(seed=2)),
   accept={k: _SPEC for k in ("m0", "C0", "m1", "C1")})

# --- data
_D = "refdiff.data"
_r(f"{_D}.Dataset", kwargs=lambda: dict(name="moons", x=ctx().array((5, 2))), ref={"y": np.arange(5) % 2},
   kinds={"y": "int_array"})
_r(f"{_D}.load_dataset", kwargs=lambda: dict(name="moons", n=8), accept={"rng": {"negative"}})
_r(f"{_D}.mixture_parameters", kwargs=lambda: dict(name="8gaussians"), kinds={"name": "option"}, ref={"std": 0.1})
_r(f"{_D}.mixture_oracle", kwargs=lambda: dict(name="8gaussians"), kinds={"name": "option"}, ref={"std": 0.1})
_r(f"{_D}.sample_mixture", kwargs=lambda: dict(weights=np.array([0.5, 0.5]), means=np.array([[1.0, 0], [-1.0, 0]]),
                                                variances=np.array([0.1, 0.2])),
   accept={"weights": _SPEC, "means": _SPEC, "variances": _SPEC})
_r(f"{_D}.digits8x8", kinds={"split": "option"})

# --- train
def _train_call():
    from refdiff.train import train

    net, _ = _mlp()
    return Call(train, dict(model=net, data=ctx().array((16, 3)), schedule=ctx().schedule(), steps=2, batch_size=4,
                            progress=False),
                kinds={"model": "object", "data": "array"},
                # data's trailing shape is the network's: MLP.forward refuses (1, N, D) at the first
                # step ("x must have shape (N, 3)"), naming its own argument x
                accept={"data": {"rank_plus1"}})


def _ema_model():
    from refdiff.train import train

    net, _ = _mlp()
    res = train(net, ctx().array((16, 3)), schedule=ctx().schedule(), steps=1, batch_size=4, progress=False)
    return auto_call(res.ema_model, skip={"cond": "validated by the network at the call"})


RECIPES["refdiff.train.train"] = _train_call
RECIPES["refdiff.train.TrainResult.ema_model"] = _ema_model

# --- oracles.kronecker (validated for issue 19 by h-fuzz2)
_K = "refdiff.oracles.kronecker"


def _kron():
    from refdiff.oracles.kronecker import KroneckerGaussian, ar1_covariance

    return KroneckerGaussian(ar1_covariance(3, 0.5), ctx().spd(2))


_r(f"{_K}.KroneckerGaussian", kwargs=lambda: dict(time_cov=np.eye(3) + 0.2, space_cov=ctx().spd(2)),
   accept={"time_cov": _SPEC, "space_cov": _SPEC, "mean": _SPEC}, ref={"mean": np.zeros((3, 2))},
   kinds={"frame_shape": "shape"})
RECIPES[f"{_K}.KroneckerGaussian.condition_frames"] = lambda: auto_call(
    _kron().condition_frames, kwargs=dict(known=[0], values=np.array([[0.5, -0.5]])), accept={"values": _SPEC},
    kinds={"known": "shape"})
_r(f"{_K}.KroneckerGaussian.sample", ref={"like": np.zeros((2, 3))}, accept=_LIKE)  # h2-kron: the factored sampler
_r(f"{_K}.ar1_covariance", kwargs=lambda: dict(frames=3, rho=0.5))
_r(f"{_K}.se_covariance", kwargs=lambda: dict(frame_shape=(2, 2)), kinds={"frame_shape": "shape"})
_r(f"{_K}.insert_frames", kwargs=lambda: dict(known=[0], x_known=np.array([[0.5, -0.5]]),
                                               x_other=ctx().array((2, 2, 2)), frames=3),
   kinds={"known": "shape"}, accept={"x_known": _SPEC}, nan_propagates={"x_other"})

# qualname -> reason: callables that take no argument a caller can get wrong.
EXEMPT = {
    "refdiff.elbo.bound.NLLBound": "a result record built by nll_bound, not an input API",
    "refdiff.elbo.bound.NLLBound.summary": "takes no argument",
    "refdiff.elbo.vdm.VDMBound": "a result record built by vdm_vlb, not an input API",
    "refdiff.train.TrainResult": "a result record built by train, not an input API",
    "refdiff.oracles.empirical.EmpiricalData.log_prob": "always raises: point masses have no density (log_prob_t)",
}
# TEMPORARY (issue 19 in progress): module -> reason.  The per-argument test skips these
# modules and the completeness test tolerates them; delete each entry when the module
# passes (the goal is an empty dict).
PENDING = {}
