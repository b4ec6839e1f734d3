"""refdiff: a reference implementation of diffusion models.

Every public function cites the numbered equation of MATH.md that it implements.
Conventions (0-based timesteps, float64 schedules, explicit noise) are stated in
MATH.md chapter 1.  Subpackages: ``refdiff.nn`` (hand-written layers and models),
``refdiff.samplers`` (step functions and loops).
"""

from ._version import __version__
from .backend import array_namespace, standard_normal, to_numpy
from .schedules import *  # noqa: F401,F403
from .forward import *  # noqa: F401,F403
from .parameterization import *  # noqa: F401,F403
from .elbo import *  # noqa: F401,F403
from .likelihood import *  # noqa: F401,F403
from .oracles import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .guidance import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .conditioning import *  # noqa: F401,F403
from .moments import *  # noqa: F401,F403
from .editing import *  # noqa: F401,F403
from .loading import LoadedModel, load  # noqa: F401
