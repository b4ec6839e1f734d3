"""Editing, built on the samplers' loop contract (the state hook in VP coordinates), MATH.md
chapter 17: img2img (SDEdit), inpainting (replacement, RePaint, the exact oracle target),
outpainting (padded canvas, sliding windows), inversion and style transfer (DDIB)."""

from .img2img import *  # noqa: F401,F403
from .img2img import img2img_grid  # noqa: F401
from .inpaint import *  # noqa: F401,F403
from .inversion import *  # noqa: F401,F403
from .outpaint import *  # noqa: F401,F403
