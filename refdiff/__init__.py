"""refdiff: a reference implementation of diffusion models.

Every public function cites the numbered equation of MATH.md that it implements.
Conventions (0-based timesteps, float64 schedules, explicit noise, ``rng`` an int seed or
a ``numpy.random.Generator``) are stated in MATH.md chapter 1.  Subpackages:
``refdiff.nn`` (hand-written layers and models), ``refdiff.samplers`` (step functions
and loops).  ``refdiff.__all__`` lists every top-level public name (the API reference is
generated from it).
"""

import types as _types

from ._version import __version__
from .backend import array_namespace, standard_normal, to_numpy
from .schedules import *  # noqa: F401,F403
from .forward import *  # noqa: F401,F403
from .parameterization import *  # noqa: F401,F403
from .variance import *  # noqa: F401,F403
from .elbo import *  # noqa: F401,F403
from .likelihood import *  # noqa: F401,F403
from .oracles import *  # noqa: F401,F403
from .oracles.kronecker import KroneckerGaussian  # noqa: F401  (video, MATH.md ch. 22)
from .samplers import *  # noqa: F401,F403
from .guidance import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .conditioning import *  # noqa: F401,F403
from .moments import *  # noqa: F401,F403
from .editing import *  # noqa: F401,F403
from .loading import LoadedModel, load  # noqa: F401
from .consistency import *  # noqa: F401,F403
from .consistency_training import *  # noqa: F401,F403
from .flow_matching import *  # noqa: F401,F403
from .distill import *  # noqa: F401,F403

# ``from .samplers import *`` also binds the sampler family modules (ddim, ddpm, karras, ...)
# here, so that ``refdiff.ddim`` was a module while ``refdiff.dpmpp_2m`` is a function.
# Top-level names are functions, classes and constants; the family modules stay reachable
# as ``refdiff.samplers.ddim`` etc.  Only refdiff's own submodules (refdiff.elbo, ...) remain.
for _name, _value in list(globals().items()):
    if isinstance(_value, _types.ModuleType) and not _name.startswith("_") and _value.__name__ != f"{__name__}.{_name}":
        del globals()[_name]

__all__ = sorted(
    _name for _name, _value in globals().items()
    if not _name.startswith("_") and not isinstance(_value, _types.ModuleType)
)
del _name, _value
