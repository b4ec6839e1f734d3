"""Editing, built on the samplers' loop contract (the state hook in VP coordinates), MATH.md
chapter 17: img2img (SDEdit), inpainting (replacement, RePaint, the exact oracle target),
outpainting (padded canvas, sliding windows), inversion and style transfer (DDIB)."""

from . import img2img as _img2img_mod, inpaint as _inpaint_mod, inversion as _inversion_mod, outpaint as _outpaint_mod
from .img2img import *  # noqa: F401,F403
from .img2img import img2img_grid  # noqa: F401
from .inpaint import *  # noqa: F401,F403
from .inversion import *  # noqa: F401,F403
from .outpaint import *  # noqa: F401,F403

__all__ = (list(_img2img_mod.__all__) + ["img2img_grid"] + list(_inpaint_mod.__all__) + list(_inversion_mod.__all__)
           + list(_outpaint_mod.__all__))
