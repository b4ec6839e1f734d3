"""Fuzz recipes for the nn area (h-nnval: refdiff.nn except nn.checkpoint).

See tests/fuzz/harness.py's docstring for how to write a recipe."""

from __future__ import annotations

# qualname -> factory() returning a harness.Call (only for callables the automatic
# factories cannot build, or that need options such as nan_propagates).
RECIPES = {}

# qualname -> reason: callables that take no argument a caller can get wrong.
EXEMPT = {}

# TEMPORARY (issue 19 in progress): module -> reason.  The per-argument test skips these
# modules and the completeness test tolerates them; delete each entry when the module
# passes (the goal is an empty dict).
PENDING = {
    "refdiff.nn": "not validated yet",
    "refdiff.nn.activations": "not validated yet",
    "refdiff.nn.attention": "not validated yet",
    "refdiff.nn.base": "not validated yet",
    "refdiff.nn.blocks": "not validated yet",
    "refdiff.nn.classifier": "not validated yet",
    "refdiff.nn.conditions": "not validated yet",
    "refdiff.nn.controlnet": "not validated yet",
    "refdiff.nn.conv": "not validated yet",
    "refdiff.nn.dit": "not validated yet",
    "refdiff.nn.fast": "not validated yet",
    "refdiff.nn.gradcheck": "not validated yet",
    "refdiff.nn.layers": "not validated yet",
    "refdiff.nn.lora": "not validated yet",
    "refdiff.nn.lora_model": "not validated yet",
    "refdiff.nn.mlp": "not validated yet",
    "refdiff.nn.mmdit": "not validated yet",
    "refdiff.nn.norm": "not validated yet",
    "refdiff.nn.optim": "not validated yet",
    "refdiff.nn.resample": "not validated yet",
    "refdiff.nn.t2i_adapter": "not validated yet",
    "refdiff.nn.text": "not validated yet",
    "refdiff.nn.unet": "not validated yet",
    "refdiff.nn.unet_blocks": "not validated yet",
    "refdiff.nn.vae": "not validated yet",
    "refdiff.nn.video": "not validated yet",
    "refdiff.nn.winograd": "not validated yet",
}
