"""Exact oracles: data distributions whose noised marginals are known in closed form,
MATH.md chapter 6.

For data x_0 ~ q_0 and the affine path x_t = alpha x_0 + sigma eps (eps ~ N(0, I); t = 0 is
data, alpha and sigma Python floats or per-sample arrays of shape (N,) or (N, 1, ..., 1)),
every oracle gives the exact noised log-density log p_t, the score, the posterior mean
E[x_0 | x_t] (the ideal denoiser), E[eps | x_t], v, the flow velocity and its divergence.

* :class:`GaussianData` — N(mu, Sigma), Sigma isotropic, diagonal or full;
  also the exact probability-flow ODE map and the exact reverse kernel.
* :class:`GaussianMixture` — sum_k w_k N(mu_k, Sigma_k), with class labels per component.
* :class:`EmpiricalData` — the uniform distribution on a finite set of points (the ideal,
  memorising denoiser).

Data are (N, D), or (N, C, H, W) (any (N, ...) with D entries per sample, flattened inside
and returned in the input's shape).  All arithmetic is float64.  The constants
(eigendecompositions of the covariances) are computed once on the host with NumPy at
construction and moved to the data's namespace on each call; every per-call computation
on user arrays uses the array API of the input.

Modules: ``_base`` (inputs prepared once per call, the latent-mixture base class),
``gaussian`` (GaussianData, GaussianMixture), ``empirical`` (EmpiricalData).
"""

from .empirical import EmpiricalData
from .gaussian import GaussianData, GaussianMixture
from .kronecker import KroneckerGaussian, ar1_covariance, insert_frames, se_covariance  # noqa: F401  (MATH.md ch. 22)

__all__ = ["GaussianData", "GaussianMixture", "EmpiricalData"]
