"""Samplers, one module per family (MATH.md chapters 8-11).

Each family module defines step functions (one update, explicit inputs and explicit
noise) and loop functions, and exports a ``METHODS`` dict mapping method names to loop
functions with the shared signature

    loop(model, x, schedule, timesteps, *, prediction_type, noise, callback, **options) -> x_0

``refdiff.sample`` (``loop.py``) validates arguments, wraps the model (guidance, checks)
and dispatches on the method name through the union of the ``METHODS`` dicts.
"""

from .common import *  # noqa: F401,F403
from .ddpm import *  # noqa: F401,F403
from .ddim import *  # noqa: F401,F403
from .karras import *  # noqa: F401,F403
from .dpm_solver import *  # noqa: F401,F403
from .sde import *  # noqa: F401,F403
from .flow import *  # noqa: F401,F403
from .loop import *  # noqa: F401,F403
