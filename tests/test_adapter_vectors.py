"""The adapter reference vectors (refdiff vectors: LoRA, ControlNet, T2I-Adapter cases) re-derived
from first principles, independently of the functions that produced them."""

import numpy as np

from refdiff.nn.conv import conv2d_forward_naive
from refdiff.vectors import build_cases


def _cases():
    return {c.name: c for c in build_cases() if c.name.startswith(("lora", "controlnet", "t2i"))}


def test_adapter_cases_from_first_principles():
    """MATH.md (19.1), (19.2), (19.4), (19.7), (19.11), (19.12), (19.14), (19.16): LoRA outputs by
    explicit sums, conv LoRA by the loop convolution, fuse by PEFT's arithmetic, guess-mode
    tables by powers, keep masks by counting, the rank-r optimum against a brute-force
    minimisation (least squares over random rank-2 column spaces)."""
    c = _cases()
    assert set(c) == {"lora_linear", "lora_conv", "lora_fuse", "controlnet_scales", "t2i_adapter_scaling",
                      "lora_rrr_optimum"}
    i, o = c["lora_linear"].inputs, c["lora_linear"].outputs
    BA = np.einsum("or,ri->io", i["B"], i["A"])
    assert np.allclose(o["y"], i["x"] @ i["w"] + i["b"] + 2.0 * i["x"] @ BA, rtol=1e-13, atol=1e-13)
    assert np.allclose(o["y_rslora"], i["x"] @ i["w"] + i["b"] + 4 / np.sqrt(2) * i["x"] @ BA, rtol=1e-13, atol=1e-13)
    i, o = c["lora_conv"].inputs, c["lora_conv"].outputs
    for stride in (1, 2):
        u = conv2d_forward_naive(i["x"], i["A"], np.zeros(2), stride=stride, pad=1)[0]
        v = np.einsum("or,nrhw->nohw", i["B"][:, :, 0, 0], u)
        base = conv2d_forward_naive(i["x"], i["w"], i["b"], stride=stride, pad=1)[0]
        assert np.allclose(o[f"y_stride{stride}"], base + 0.5 * v, rtol=1e-12, atol=1e-12)
    i, o = c["lora_fuse"].inputs, c["lora_fuse"].outputs
    assert o["scaling_after_fuse"][0] == 0.5 * 4.0 / 2
    assert np.allclose(o["fused_w"], i["w"] + (i["B"] @ i["A"]).T, rtol=1e-14, atol=1e-14)
    assert np.allclose(o["unfused_w"], i["w"], rtol=0, atol=1e-13)
    o = c["controlnet_scales"].outputs
    assert np.allclose(o["guess_diffusers"], 0.8 * 10.0 ** (np.arange(13) / 12 - 1), rtol=1e-14)
    assert np.allclose(o["guess_original"], [0.8 * 0.825 ** (12 - k) for k in range(13)], rtol=1e-14)
    assert list(o["keep_10_0.2_0.8"]) == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert list(o["keep_7_0_0.5"]) == [1, 1, 1, 0, 0, 0, 0]  # (i+1)/7 > 0.5 from i = 3
    assert list(c["t2i_adapter_scaling"].outputs["keep"]) == [1, 1, 1] + [0] * 7
    i, o = c["lora_rrr_optimum"].inputs, c["lora_rrr_optimum"].outputs
    C = 0.64 * i["Sigma1"] + 0.36 * np.eye(4)
    Ws = np.linalg.solve(C, 0.8 * i["Sigma1"])
    excess = lambda d: float(np.trace((i["W0"] + d - Ws).T @ C @ (i["W0"] + d - Ws)))  # noqa: E731
    assert abs(excess(o["delta_w"]) - o["excess"][0]) < 1e-12
    rng, Lt = np.random.default_rng(0), np.linalg.cholesky(C).T  # tr(E^T C E) = ||L^T E||_F^2
    for _ in range(200):  # for random column spaces X, the best Y (least squares) never beats the closed form
        X = rng.standard_normal((4, 2))
        Y = np.linalg.lstsq(Lt @ X, Lt @ (Ws - i["W0"]), rcond=None)[0]
        assert excess(X @ Y) >= o["excess"][0] - 1e-12
