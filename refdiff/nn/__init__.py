"""Hand-written neural networks: layers as forward/backward pairs, blocks, the MLP and
U-Net denoisers, gradient checking (MATH.md chapter 13).

No autograd: every layer is ``*_forward(...) -> (out, cache)`` with a hand-derived
``*_backward(dout, cache)`` beside it.  Models hold only their config; parameters are flat
dicts of arrays passed to ``forward(params, x, t, cond=None) -> (out, cache)`` and
``backward(params, cache, dout) -> (grads, dx)``.  Conditions (class labels, tokens with a
mask, control images, inpainting masks, adapter scales) are one mapping ``cond``:
:mod:`refdiff.nn.conditions`.  The MLP classifier used to score samples:
:mod:`refdiff.nn.classifier`.
"""

from .layers import *  # noqa: F401,F403
from .blocks import *  # noqa: F401,F403
from .gradcheck import *  # noqa: F401,F403
from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig
from .lora import *  # noqa: F401,F403  (LoRA layer pairs, MATH.md chapter 19)
from .lora_model import *  # noqa: F401,F403  (LoRA on a whole network)
from .controlnet import ControlNet, control_keep, controlled_backward, controlled_forward, controlled_model, controlnet_scales
from .t2i_adapter import T2IAdapter, adapter_keep, t2i_model

from .dit import DiT, DiTConfig
from .mmdit import MMDiT, MMDiTConfig

__all__ = ["MLP", "MLPConfig", "UNet", "UNetConfig", "build_model", "config_from_dict"]
__all__ += ["DiT", "DiTConfig", "MMDiT", "MMDiTConfig"]
__all__ += ["LoRAConfig", "LoRAAdapter", "lora_init", "lora_params", "lora_grads", "lora_merge", "lora_unmerge",
            "lora_fuse", "lora_unfuse", "save_lora", "load_lora", "ControlNet", "controlled_model", "controlnet_scales",
            "control_keep", "T2IAdapter", "t2i_model", "adapter_keep"]


def config_from_dict(config_dict: dict):
    """The config dataclass described by ``config_dict`` (its ``"arch"`` key is "mlp"
    or "unet").

    Parameters
    ----------
    config_dict : dict
        A config's ``to_dict()`` output: field values and an ``"arch"`` key, one of
        ``"mlp"``, ``"unet"``, ``"dit"``, ``"mmdit"``.

    Returns
    -------
    MLPConfig, UNetConfig, DiTConfig or MMDiTConfig
        The configuration.

    Raises
    ------
    ValueError
        If ``config_dict`` is not a dict with an ``"arch"`` key, the arch is unknown, or a
        key is not a field of that config.
    """
    if not isinstance(config_dict, dict):
        raise TypeError(f"config_dict must be a dict (a config's to_dict()), got {type(config_dict).__name__}")
    if "arch" not in config_dict:
        raise ValueError("config_dict must have an 'arch' key ('mlp', 'unet', 'dit' or 'mmdit')")
    try:
        return _config_from_dict(config_dict)
    except (TypeError, ValueError) as e:
        raise type(e)(f"config_dict: {e}") from None


def _config_from_dict(config_dict):
    arch = config_dict["arch"]
    if arch == "mlp":
        return MLPConfig.from_dict(config_dict)
    if arch == "unet":
        return UNetConfig.from_dict(config_dict)
    if arch == "dit":
        return DiTConfig.from_dict(config_dict)
    if arch == "mmdit":
        return MMDiTConfig.from_dict(config_dict)
    raise ValueError(f"unknown arch {arch!r}; valid: 'mlp', 'unet', 'dit', 'mmdit'")


def build_model(config_dict: dict):
    """Rebuild a model (``MLP`` or ``UNet``) from ``model.to_dict()`` output.

    Parameters
    ----------
    config_dict : dict
        A model's ``to_dict()`` output, with an ``"arch"`` key (``"mlp"``, ``"unet"``,
        ``"dit"`` or ``"mmdit"``).

    Returns
    -------
    MLP, UNet, DiT or MMDiT
        The network (without parameters).

    Raises
    ------
    ValueError
        As :func:`config_from_dict`.
    """
    cfg = config_from_dict(config_dict)
    if isinstance(cfg, DiTConfig):
        return DiT(cfg)
    if isinstance(cfg, MMDiTConfig):
        return MMDiT(cfg)
    return MLP(cfg) if isinstance(cfg, MLPConfig) else UNet(cfg)
