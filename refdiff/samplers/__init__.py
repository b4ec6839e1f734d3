"""Samplers, one module per family (MATH.md chapters 8-11).

``common.py`` holds the contract every loop keeps: the time grid (``make_grid``: integer
timesteps, continuous times, sigma grids, flow times; the one validator), the VP <-> sigma
<-> flow maps, the model call and the hooks (``end_step``).  Each family module defines
step functions (one update, explicit inputs and explicit noise) and flat loop functions,
one per method, and exports a ``METHODS`` dict mapping method names to loops with the
shared signature

    loop(model, x, schedule, timesteps=None, *, prediction_type, noise, callback, project,
         sigmas=None, final_sigmas_type=None, interpolation="log_alpha", **options) -> x

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
from .library import *  # noqa: F401,F403
from .loop import *  # noqa: F401,F403
