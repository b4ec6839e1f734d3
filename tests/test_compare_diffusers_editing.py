"""refdiff's editing conventions against diffusers 0.42.1 (the ``compare`` extra): RePaint's
jump schedule (RePaintScheduler.set_timesteps) and the img2img start noising of a VP
scheduler (DDIMScheduler.add_noise), a VE one (EulerDiscreteScheduler.add_noise) and flow
matching (FlowMatchEulerDiscreteScheduler.scale_noise), in float64.  MATH.md (17.4), (17.6)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[compare]')")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[compare]')")

import refdiff  # noqa: E402
from refdiff.samplers.common import vp_from_flow_time  # noqa: E402

pytestmark = [pytest.mark.compare, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.mark.parametrize("n, j, r", [(250, 10, 10), (50, 5, 3), (20, 1, 2), (100, 10, 5)])
def test_repaint_schedule_matches_repaint_scheduler(n, j, r):
    """MATH.md (17.6): diffusers' RePaintScheduler times are refdiff's walk (without the final -1) times T // n."""
    s = diffusers.RePaintScheduler(num_train_timesteps=1000)
    s.set_timesteps(n, jump_length=j, jump_n_sample=r)
    ours = np.array(refdiff.repaint_schedule(n, j, r)[:-1]) * (1000 // n)
    np.testing.assert_array_equal(s.timesteps.numpy(), ours)


def test_start_noising_matches_the_schedulers():
    """MATH.md (17.4): VP add_noise = alpha x0 + sigma eps, VE add_noise = x0 + s eps, flow scale_noise = (1 - u) x0 + u eps."""
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    sch = refdiff.make_schedule("scaled_linear", 1000)
    t = 741
    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012)
    ddim.alphas_cumprod = torch.from_numpy(sch.alpha_bars.copy())
    got = ddim.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), torch.tensor([t])).numpy()
    a, s = float(sch.sqrt_alpha_bars[t]), float(sch.sqrt_one_minus_alpha_bars[t])
    np.testing.assert_allclose(got, refdiff.img2img_start(x0, a, s, eps, "vp"), rtol=1e-13, atol=1e-14)
    eul = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                           beta_end=0.012)
    eul.set_timesteps(50)
    k = 10
    sig = float(eul.sigmas[k])
    eul.set_begin_index(k)
    got = eul.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), eul.timesteps[k:k + 1]).numpy()
    a = 1.0 / np.sqrt(1.0 + sig * sig)
    np.testing.assert_allclose(got, refdiff.img2img_start(x0, a, sig * a, eps, "ve"), rtol=1e-12, atol=1e-13)
    fm = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    fm.set_timesteps(20)
    fm.set_begin_index(5)
    u = float(fm.sigmas[5])
    got = fm.scale_noise(torch.from_numpy(x0), fm.timesteps[5:6], torch.from_numpy(eps)).numpy()
    a, s = vp_from_flow_time(u)
    np.testing.assert_allclose(got, refdiff.img2img_start(x0, a, s, eps, "flow"), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("eta, clip", [(0.0, False), (1.0, False), (0.0, True)])
def test_repaint_library_matches_repaint_scheduler_loop(eta, clip, monkeypatch):
    """MATH.md (17.6): refdiff.repaint_library equals diffusers' RePaintScheduler driven as its pipeline does (start noise,
    step / undo_step by the walk, mask 1 = known there), same draws, float64, exact eps oracle, to 1e-10."""
    import diffusers.schedulers.scheduling_repaint as mod

    sch = refdiff.make_schedule("linear", 1000)
    data = refdiff.GaussianData(np.array([0.5, -0.3]), np.array([[1.0, 0.9], [0.9, 1.0]]))
    model = data.as_model(sch)
    xk = np.tile(np.array([1.5, 0.0]), (3, 1))
    mask = np.array([0.0, 1.0])
    draws = []

    def tape(like):
        z = np.random.default_rng(len(draws)).standard_normal(like.shape)
        draws.append(z)
        return z

    ours = refdiff.repaint_library(model, xk, mask, sch, 20, noise=tape, jump_length=3, jump_n_sample=2, eta=eta,
                                   clip_sample=clip)
    it = iter(draws)
    monkeypatch.setattr(mod, "randn_tensor", lambda shape, **kw: torch.from_numpy(next(it)))
    s = diffusers.RePaintScheduler(num_train_timesteps=1000, eta=eta, clip_sample=clip)
    s.betas = torch.from_numpy(sch.betas.copy())
    s.alphas_cumprod = torch.from_numpy(sch.alpha_bars.copy())
    s.set_timesteps(20, jump_length=3, jump_n_sample=2)
    image = torch.from_numpy(next(it))
    orig, keep = torch.from_numpy(xk), torch.from_numpy(1.0 - mask)
    t_last = s.timesteps[0] + 1
    for t in s.timesteps:
        if t < t_last:
            out = torch.from_numpy(model(image.numpy(), np.full(3, int(t))))
            image = s.step(out, int(t), image, orig, keep).prev_sample
        else:
            image = s.undo_step(image, int(t_last))
        t_last = t
    np.testing.assert_allclose(ours, image.numpy(), rtol=1e-10, atol=1e-10)
