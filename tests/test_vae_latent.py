"""The VAE posterior, the conv KL autoencoder's backward pass, the exact linear cases
(PCA autoencoder, linear VAE = probabilistic PCA) and latent scaling (MATH.md chapter 21).

Tolerances: float64 central differences (h = 1e-5) give ~1e-9 relative error for a
correct backward, we demand < 1e-6.  Monte Carlo checks allow 4 standard errors at a
fixed seed.  The linear VAE is trained by refdiff's own loop (training.fit, Adam with a
cosine decay) on a fixed data set, whose 1/N covariance defines the closed form, to 1e-4
relative.
"""

import math

import numpy as np
import pytest
from scipy import stats

from refdiff.latent import decode_latents, latent_oracle, latent_scaling, scale_latents, unscale_latents
from refdiff.metrics import frechet_distance_gaussians
from refdiff.nn.gradcheck import check_directional, check_gradient, inner
from refdiff.nn.vae import (KLAutoencoder, KLAutoencoderConfig, LinearVAE, PCAAutoencoder, diag_gaussian_kl,
                            diag_gaussian_nll, posterior_backward, posterior_forward)
from refdiff.oracles import GaussianData, GaussianMixture
from refdiff.training import fit, init_state

GC_TOL = 1e-6


def _random_cov(rng, s):
    Q, _ = np.linalg.qr(rng.standard_normal((len(s), len(s))))
    return Q @ np.diag(s) @ Q.T


def test_posterior_clamp_sample_and_mode():
    """MATH.md (21.1): the log-variance is clamped to [-30, 20]; z = m + e^{l/2} eps; the
    mode is the mean.  Checked entrywise against the formula written with Python math."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((2, 3, 2, 2))
    raw = rng.uniform(-45, 30, (2, 3, 2, 2))
    eps = rng.standard_normal(m.shape)
    z, kl, _ = posterior_forward(np.concatenate([m, raw], axis=1), eps)
    for idx in np.ndindex(*m.shape):
        lv = min(max(raw[idx], -30.0), 20.0)
        assert z[idx] == pytest.approx(m[idx] + math.exp(lv / 2) * eps[idx], rel=1e-13)
    z0, _, _ = posterior_forward(np.concatenate([m, raw], axis=1))
    np.testing.assert_array_equal(z0, m)


def test_kl_and_nll_against_scipy_and_monte_carlo():
    """MATH.md (21.2) and MATH.md (21.3): the NLL equals scipy's multivariate normal
    -logpdf; the KL equals E_q[log q(z) - log N(z; 0, I)] by Monte Carlo (4 s.e.)."""
    rng = np.random.default_rng(1)
    m, lv = rng.standard_normal((1, 5)), rng.uniform(-1.5, 1.0, (1, 5))
    z = rng.standard_normal((1, 5))
    ref = -stats.multivariate_normal(m[0], np.diag(np.exp(lv[0]))).logpdf(z[0])
    assert diag_gaussian_nll(z, m, lv)[0] == pytest.approx(ref, rel=1e-12)
    n = 200_000
    zs = m + np.exp(lv / 2) * rng.standard_normal((n, 5))
    mm, ll = np.repeat(m, n, 0), np.repeat(lv, n, 0)
    terms = -diag_gaussian_nll(zs, mm, ll) + diag_gaussian_nll(zs, np.zeros_like(mm), np.zeros_like(ll))
    kl = diag_gaussian_kl(m, lv)[0]
    assert abs(terms.mean() - kl) < 4 * terms.std() / math.sqrt(n)


def test_posterior_backward_central_differences_with_the_clamp():
    """MATH.md (21.1), MATH.md (21.2): the gradient of <z, dz> + <kl, dkl> with respect to the
    moments (sampling with a given eps and the KL), float64 central differences < 1e-6;
    log-variances beyond the clamp get exactly zero gradient."""
    rng = np.random.default_rng(2)
    m = rng.standard_normal((3, 2, 2, 2))
    raw = rng.uniform(-2, 2, (3, 2, 2, 2))
    raw[0, 0, 0, 0] = -35.0  # clamped below (the upper clamp, e^20, is checked apart: rounding)
    mom = np.concatenate([m, raw], axis=1)
    eps, dz, dkl = rng.standard_normal(m.shape), rng.standard_normal(m.shape), rng.standard_normal(3)

    def f(a):
        z, kl, _ = posterior_forward(a, eps)
        return inner(z, dz) + inner(kl, dkl)

    g = posterior_backward(dz, dkl, posterior_forward(mom, eps)[2])
    assert check_gradient(f, mom, g) < GC_TOL
    assert g[0, 2, 0, 0] == 0.0
    hi = mom.copy()
    hi[1, 3, 1, 1] = 24.0
    g = posterior_backward(dz, dkl, posterior_forward(hi, eps)[2])
    hi2 = hi.copy()
    hi2[1, 3, 1, 1] = 26.0
    assert g[1, 3, 1, 1] == 0.0 and f(hi) == f(hi2)  # flat beyond the clamp, exactly


def test_kl_autoencoder_loss_backward_directional():
    """MATH.md (21.4): the whole conv VAE (encoder, posterior sample, decoder, beta-VAE
    loss) against directional central differences over every parameter, float64."""
    rng = np.random.default_rng(3)
    ae = KLAutoencoder(KLAutoencoderConfig(image_size=8, latent_channels=2, width=4))
    P = ae.init_params(rng, dtype="float64")
    x = rng.standard_normal((2, 1, 8, 8))
    eps = rng.standard_normal((2, 2, 2, 2))
    loss, G, _ = ae.loss(P, x, eps, beta=0.3, sigma_x2=0.5)
    err = check_directional(lambda p: ae.loss(p, x, eps, beta=0.3, sigma_x2=0.5)[0], P, G, rng, n_dirs=4)
    assert err < GC_TOL


def test_linear_vae_loss_is_the_expectation_over_z_and_its_gradient():
    """MATH.md (21.5): the closed-form expectation equals a Monte Carlo average of (21.4)
    over z (4 s.e.); the hand-written gradient passes central differences."""
    rng = np.random.default_rng(4)
    vae = LinearVAE(4, 2)
    P = vae.init_params(rng)
    P["logvar"] = np.array([-0.5, 0.3])
    x = rng.standard_normal((3, 4))
    loss, G = vae.loss(P, x, beta=0.7, sigma_x2=0.4)
    n = 100_000
    m = x @ P["V"].T + P["a"]
    z = m[None] + np.exp(P["logvar"] / 2) * rng.standard_normal((n, 3, 2))
    rec = np.sum((x - z @ P["W"].T - P["b"]) ** 2, axis=-1).mean(axis=1) / 0.8
    kl = diag_gaussian_kl(m, np.broadcast_to(P["logvar"], m.shape)).mean()
    mc = rec + 0.7 * kl
    assert abs(mc.mean() - loss) < 4 * mc.std() / math.sqrt(n)
    assert check_directional(lambda p: vae.loss(p, x, beta=0.7, sigma_x2=0.4)[0], P, G, rng) < GC_TOL


def test_linear_vae_trained_by_fit_reaches_the_ppca_optimum():
    """MATH.md (21.6): trained by refdiff's own loop, the linear VAE's mean loss equals the
    closed-form minimum and the eigenvalues of W W^T equal s_i - beta sigma_x^2, to 1e-4
    relative."""
    rng = np.random.default_rng(0)
    D, k, beta, sx2 = 5, 2, 0.5, 0.2
    s = np.array([3.0, 1.5, 0.3, 0.2, 0.1])
    x = rng.multivariate_normal(np.full(D, 0.5), _random_cov(rng, s), size=2000)
    vae = LinearVAE(D, k)
    steps = 6000
    state = init_state({"params": vae.init_params(rng)}, {"params": True}, np.random.default_rng(1), steps)

    def loss_fn(groups, batch, r):
        loss, G = vae.loss(groups["params"], x, beta=beta, sigma_x2=sx2)
        return loss, {"params": G}

    state = fit(loss_fn, state, lambda r: None, steps=steps, trainable={"params": True}, lr=0.03,
                lr_decay="cosine", progress=False)
    P = state.groups["params"]
    best, ev = LinearVAE.optimum(x, k, beta=beta, sigma_x2=sx2)
    assert vae.loss(P, x, beta=beta, sigma_x2=sx2)[0] == pytest.approx(best, rel=1e-4)
    e = np.sort(np.linalg.eigvalsh(P["W"] @ P["W"].T))[::-1]
    np.testing.assert_allclose(e[:k], ev, rtol=1e-4)
    assert np.all(np.abs(e[k:]) < 1e-4 * ev[-1])
    # the closed form, independently: beta * (pPCA NLL with sigma^2 = beta sx2 - D/2 log 2 pi sigma^2)
    S = np.cov(x, rowvar=False, bias=True)
    C = P["W"] @ P["W"].T + beta * sx2 * np.eye(D)
    nll = 0.5 * (D * math.log(2 * math.pi) + np.linalg.slogdet(C)[1] + np.trace(np.linalg.solve(C, S)))
    assert beta * (nll - 0.5 * D * math.log(2 * math.pi * beta * sx2)) == pytest.approx(best, rel=1e-6)


def test_pca_latent_oracle_moments_and_w2_of_decoded_samples():
    """MATH.md (21.7), MATH.md (21.8): the latent oracle of the PCA autoencoder equals the
    empirical mean and covariance of encoded data (4 s.e.); decoded oracle samples are
    N(mu, U_k diag(s) U_k^T), whose squared W2 (Frechet) distance to the data is
    sum_{i>k} s_i, checked in closed form and from samples."""
    rng = np.random.default_rng(5)
    D, k = 6, 3
    s = np.array([4.0, 2.0, 1.0, 0.3, 0.2, 0.1])
    mu, cov = rng.standard_normal(D), _random_cov(rng, s)
    data = GaussianData(mu, cov)
    ae = PCAAutoencoder.from_moments(mu, cov, k)
    lat = latent_oracle(data, ae.encoder_matrix, ae.mean)
    np.testing.assert_allclose(lat.cov, np.diag(s[:k]), atol=1e-12)
    n = 100_000
    z = ae.encode(data.sample(n, rng))
    se = np.sqrt(s[:k] / n)
    assert np.all(np.abs(z.mean(0) - lat.mean) < 4 * se)
    emp = np.cov(z, rowvar=False)
    se_cov = np.sqrt((lat.cov ** 2 + np.outer(s[:k], s[:k])) / n)
    assert np.all(np.abs(emp - lat.cov) < 4 * se_cov + 1e-12)
    dec = ae.decode(lat.sample(n, rng))
    P = ae.components @ ae.components.T
    w2 = frechet_distance_gaussians(mu, cov, mu, P @ cov @ P)
    # the Frechet distance takes a matrix square root of cov P cov P, which is singular here: its
    # zero eigenvalues come back as O(sqrt(eps)) and cost ~1e-8 absolute (1.1e-7 relative was
    # seen with SciPy 1.18.1), so it is checked to 1e-6; a wrong formula (one eigenvalue too many
    # or too few) is off by >= 0.1 / 0.6 = 17 %
    assert w2 == pytest.approx(s[k:].sum(), rel=1e-6)
    assert ae.w2_squared_to_data() == pytest.approx(s[k:].sum(), rel=1e-12)
    w2_mc = frechet_distance_gaussians(mu, cov, dec.mean(0), np.cov(dec, rowvar=False))
    assert w2_mc == pytest.approx(s[k:].sum(), rel=0.03)


def test_latent_oracle_of_a_mixture_under_scaling_matches_monte_carlo():
    """MATH.md (21.7), MATH.md (21.9): a Gaussian mixture through z = f (A (x - c) - delta)
    has components N(f (A(mu_i - c) - delta), f^2 A S_i A^T) with the same weights; the
    sample mean and covariance of pushed samples match it (4 s.e. on the mean)."""
    rng = np.random.default_rng(6)
    D, k = 4, 2
    mix = GaussianMixture([0.3, 0.7], rng.standard_normal((2, D)) * 2, [0.5, 0.2])
    A, c = rng.standard_normal((k, D)), rng.standard_normal(D)
    f, delta = 0.7, 0.4
    lat = latent_oracle(mix, A, c, scaling_factor=f, shift=delta)
    n = 200_000
    z = scale_latents((mix.sample(n, rng) - c) @ A.T, f, delta)
    w = lat.weights
    mean = w @ lat.means
    cov = sum(wi * (Si + np.outer(mi - mean, mi - mean)) for wi, mi, Si in zip(w, lat.means, lat.covs))
    assert np.all(np.abs(z.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / n))
    np.testing.assert_allclose(np.cov(z, rowvar=False), cov, rtol=0.03, atol=0.01)


def test_scaling_rules_and_round_trip():
    """MATH.md (21.9): the LDM rule gives latents of unit standard deviation, the SD3 rule
    zero mean and unit standard deviation; unscale inverts scale."""
    rng = np.random.default_rng(7)
    z = 3.0 + 5.0 * rng.standard_normal((500, 4, 4, 4))
    f, d = latent_scaling(z, "ldm")
    assert d == 0.0 and f == pytest.approx(1 / 5.0, rel=0.01)
    zs = scale_latents(z, f)
    assert zs.std() == pytest.approx(1.0, rel=1e-12) and zs.mean() == pytest.approx(z.mean() * f, rel=1e-12)
    f, d = latent_scaling(z, "sd3")
    zs = scale_latents(z, f, d)
    assert abs(zs.mean()) < 1e-12 and zs.std() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(unscale_latents(zs, f, d), z, rtol=1e-13, atol=1e-14)


def test_latent_bad_input():
    """Clear errors: a scaling factor of 0, collapsed latents, a latent of the wrong shape to
    decode, odd moments."""
    with pytest.raises(ValueError, match="scaling_factor must be finite and nonzero"):
        scale_latents(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="scaling_factor"):
        unscale_latents(np.ones(3), float("inf"))
    with pytest.raises(ValueError, match="zero spread"):
        latent_scaling(np.ones((4, 2)))
    ae = KLAutoencoder(KLAutoencoderConfig(image_size=8, latent_channels=2, width=4))
    P = ae.init_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"z \(the latent\) must have shape \(N, 2, 2, 2\)"):
        ae.decode(P, np.zeros((1, 3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="latents must have shape"):
        decode_latents(lambda z: ae.decode(P, z), np.zeros((1, 2, 4, 4)), 1.0, latent_shape=(2, 2, 2))
    with pytest.raises(ValueError, match="even channel count"):
        posterior_forward(np.zeros((1, 3, 2, 2)))


def test_reference_vector_cases_from_first_principles():
    """The `refdiff vectors` cases of chapter 21 re-derived by hand: MATH.md (21.1) (clamp,
    sample with the given eps, mode), MATH.md (21.2) (KL), MATH.md (21.9) (SD 1.x and SD3
    scaling) and the masked cross-attention against its loop definition (MATH.md (13.23)).
    (contrastive_loss itself is checked against its definition in tests/test_text_clip.py.)"""
    from refdiff.nn.attention import mha_forward_naive
    from refdiff.vectors import _latent_text_cases

    cases = {c.name: c for c in _latent_text_cases(np.random.default_rng(3))}
    g = cases["diagonal_gaussian"]
    mom = g.inputs["moments"]
    m, raw = mom[:, :3], mom[:, 3:]
    lv = np.minimum(np.maximum(raw, -30.0), 20.0)
    np.testing.assert_array_equal(g.outputs["mode"], m)
    np.testing.assert_allclose(g.outputs["sample"], m + np.sqrt(np.exp(lv)) * g.inputs["eps"], rtol=1e-13)
    kl = 0.5 * np.sum((m ** 2 + np.exp(lv) - 1 - lv).reshape(2, -1), axis=1)
    np.testing.assert_allclose(g.outputs["kl"], kl, rtol=1e-13)
    assert g.outputs["dmoments"][0, 3, 0, 0] == 0.0 and g.outputs["dmoments"][1, 5, 1, 1] == 0.0
    s = cases["latent_scaling"]
    np.testing.assert_allclose(s.outputs["ldm"], 0.18215 * s.inputs["z"], rtol=1e-15)
    np.testing.assert_allclose(s.outputs["sd3"], 1.5305 * (s.inputs["z"] - 0.0609), rtol=1e-14)
    np.testing.assert_allclose(s.outputs["decoded_sd3"], s.inputs["z"], rtol=1e-14)
    a = cases["cross_attention_masked"]
    P = {k: v for k, v in a.inputs.items() if k.startswith("attn.")}
    y = mha_forward_naive(P, "attn", a.inputs["x"], a.inputs["context"], heads=2,
                          key_mask=a.inputs["key_mask"].astype(bool))
    np.testing.assert_allclose(a.outputs["y"], y, rtol=1e-12, atol=1e-13)


def test_a_sampler_run_in_latent_space_is_scored_by_the_latent_oracle():
    """MATH.md (21.7), MATH.md (21.9): data through the PCA encoder and the LDM scaling has
    an exact Gaussian latent law; DDIM (100 steps) driven by that law's exact eps gives
    samples whose Frechet distance to it is at Monte Carlo + discretisation level, while the
    unscaled law (a wrong scaling) is far from them."""
    import refdiff

    rng = np.random.default_rng(8)
    s = np.array([6.0, 3.0, 1.0, 0.2])
    mu, cov = rng.standard_normal(4), _random_cov(rng, s)
    ae = PCAAutoencoder.from_moments(mu, cov, 2)
    f = 1 / math.sqrt(s[:2].mean())  # the LDM rule for these latents: 1 / std over all entries
    lat = latent_oracle(GaussianData(mu, cov), ae.encoder_matrix, ae.mean, scaling_factor=f)
    sched = refdiff.make_schedule("linear", 1000)
    x_T = rng.standard_normal((20000, 2))
    z = refdiff.sample(lat.as_model(sched), x_T, sched, refdiff.timesteps(1000, 100, "trailing"), "ddim",
                       rng=rng, progress=False)
    fd = frechet_distance_gaussians(z.mean(0), np.cov(z, rowvar=False), lat.mean, lat.cov)
    assert fd < 0.01, fd
    wrong = latent_oracle(GaussianData(mu, cov), ae.encoder_matrix, ae.mean)
    assert frechet_distance_gaussians(z.mean(0), np.cov(z, rowvar=False), wrong.mean, wrong.cov) > 1.0
