"""Text to image in one call, from a folder that holds a latent text-conditioned U-Net and
its autoencoder (what ``examples/toy_sd.py`` writes):

    DIR/unet/checkpoint.npz        a refdiff checkpoint (refdiff.train with cross-attention,
                                   trained on scaled latents)
    DIR/autoencoder.npz (+ .json)  the KL autoencoder, its latent scaling factor and shift
                                   (MATH.md (21.9)) and the tokenizer's vocabulary
    DIR/text_encoder.npz (+ .json) the frozen toy-CLIP text encoder and its tokenizer, when
                                   the U-Net attends to its states (context_kind
                                   "text_states", as SD attends to CLIP's)

    images = refdiff.txt2img.txt2img("a thick three in the top left", "DIR", n=4,
                                     guidance_scale=4.0, rng=np.random.default_rng(0))

The prompt is tokenized (:class:`refdiff.nn.text.Tokenizer`) and, for a ``text_states``
U-Net, encoded by the frozen text encoder (:func:`encode_prompts`); latents are sampled with
classifier-free guidance against the empty prompt (``convention`` "w": u + w (c - u), or
"1+w": c + w (c - u), MATH.md (12.3)), mapped back with the inverse scaling and decoded.
"""

from __future__ import annotations

import dataclasses
import json
from os import PathLike
from pathlib import Path

import numpy as np

from .backend import check_rng, to_numpy
from .latent import unscale_latents
from .nn.text import TextEncoder, TextEncoderConfig, Tokenizer
from .nn.vae import KLAutoencoder, KLAutoencoderConfig

__all__ = ["save_autoencoder", "load_autoencoder", "encode_prompts", "null_text_states", "save_text_encoder",
           "load_text_encoder", "txt2img"]


def save_autoencoder(path, ae: KLAutoencoder, params: dict, *, scaling_factor: float, shift: float = 0.0,
                     tokenizer: Tokenizer | None = None) -> Path:
    """Write the autoencoder's parameters (``.npz``) and its config, latent scaling and the
    tokenizer (``.json`` beside it).  Returns the ``.npz`` path.

    Parameters
    ----------
    path : str or Path
        the .npz to write
    ae : KLAutoencoder
        the autoencoder (its config is stored)
    params : dict
        its parameters
    scaling_factor, shift : float
        the latent scaling of MATH.md (21.9)
    tokenizer : Tokenizer, optional
        stored as its vocabulary and context length
    """
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")
    if not isinstance(ae, KLAutoencoder):
        raise TypeError(f"ae must be a KLAutoencoder, got {type(ae).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    from ._validate import check_finite_scalar

    if check_finite_scalar("scaling_factor", scaling_factor) == 0.0:
        raise ValueError("scaling_factor must be nonzero")
    check_finite_scalar("shift", shift)
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a Tokenizer or None, got {type(tokenizer).__name__}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **{k: np.asarray(to_numpy(v)) for k, v in params.items()})
    meta = {"config": ae.config.to_dict(), "scaling_factor": float(scaling_factor), "shift": float(shift)}
    if tokenizer is not None:
        meta["vocab"], meta["context_len"] = list(tokenizer.words), tokenizer.context_len
    p.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return p


def load_autoencoder(path):
    """``(ae, params, meta)`` written by :func:`save_autoencoder`; ``meta`` has
    ``scaling_factor``, ``shift`` and ``tokenizer`` (or None).

    Parameters
    ----------
    path : str or Path
        the .npz written by save_autoencoder
    """
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")
    p = Path(path)
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise FileNotFoundError(f"autoencoder files not found: {str(p)!r} and {str(p.with_suffix('.json'))!r}")
    meta = json.loads(p.with_suffix(".json").read_text())
    cfg = dict(meta["config"])
    cfg.pop("arch", None)
    ae = KLAutoencoder(KLAutoencoderConfig(**cfg))
    with np.load(p, allow_pickle=False) as f:
        params = {k: f[k] for k in f.files}
    tok = Tokenizer(meta["vocab"], meta["context_len"]) if "vocab" in meta else None
    return ae, params, {"scaling_factor": meta["scaling_factor"], "shift": meta["shift"], "tokenizer": tok}


def _check_encoder(encoder, params, tokenizer):
    """TypeError unless ``encoder`` is a TextEncoder, ``params`` a dict, ``tokenizer`` a
    Tokenizer (issue 19)."""
    if not isinstance(encoder, TextEncoder):
        raise TypeError(f"encoder must be a TextEncoder, got {type(encoder).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of the encoder's arrays, got {type(params).__name__}")
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")


def _check_path(path):
    if not isinstance(path, (str, PathLike)):  # issue 19
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")


def encode_prompts(encoder: TextEncoder, params: dict, tokenizer: Tokenizer, prompts):
    """The frozen text encoder's token states and key-padding mask of ``prompts``: the
    ``text_states`` condition ``{"text_states": (N, L, D), "text_mask": (N, L)}``
    (L = the tokenizer's context length).

    Parameters
    ----------
    encoder : TextEncoder
        the (frozen) text encoder
    params : dict
        its parameters (their dtype is the states' dtype)
    tokenizer : Tokenizer
        its tokenizer
    prompts : str or list of str
        the prompt(s)
    """
    _check_encoder(encoder, params, tokenizer)
    if not (isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                         and all(isinstance(q, str) for q in prompts))):  # issue 19
        raise TypeError(f"prompts must be a str or a non-empty list of str, got {prompts!r:.80}")
    ids, mask = tokenizer(prompts)
    (states, _), _ = encoder.forward(params, ids, mask)
    return {"text_states": states, "text_mask": mask}


def null_text_states(encoder: TextEncoder, params: dict, tokenizer: Tokenizer):
    """The empty prompt's states (L, D) float64 and mask (L,) under the frozen encoder: the
    null condition of a ``text_states`` U-Net (``UNetConfig.null_context`` and
    ``null_context_mask``), as SD's unconditional branch uses the empty prompt's CLIP states.

    Parameters
    ----------
    encoder : TextEncoder
        the (frozen) text encoder
    params : dict
        its parameters
    tokenizer : Tokenizer
        its tokenizer
    """
    _check_encoder(encoder, params, tokenizer)
    c = encode_prompts(encoder, {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, tokenizer, "")
    return np.asarray(c["text_states"][0]), np.asarray(c["text_mask"][0])


def save_text_encoder(path, encoder: TextEncoder, params: dict, tokenizer: Tokenizer) -> Path:
    """Write the frozen text encoder's parameters (``.npz``), config and tokenizer (``.json``
    beside it).  Returns the ``.npz`` path.

    Parameters
    ----------
    path : str or Path
        the .npz to write
    encoder : TextEncoder
        the encoder (its config is stored)
    params : dict
        its parameters
    tokenizer : Tokenizer
        its tokenizer
    """
    _check_path(path)
    _check_encoder(encoder, params, tokenizer)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **{k: np.asarray(to_numpy(v)) for k, v in params.items()})
    meta = {"config": dataclasses.asdict(encoder.config), "vocab": list(tokenizer.words),
            "context_len": tokenizer.context_len}
    p.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return p


def load_text_encoder(path):
    """``(encoder, params, tokenizer)`` written by :func:`save_text_encoder`.

    Parameters
    ----------
    path : str or Path
        the .npz written by save_text_encoder
    """
    _check_path(path)
    p = Path(path)
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise FileNotFoundError(f"text encoder files not found: {str(p)!r} and {str(p.with_suffix('.json'))!r}")
    meta = json.loads(p.with_suffix(".json").read_text())
    with np.load(p) as f:
        params = {k: f[k] for k in f.files}
    return TextEncoder(TextEncoderConfig(**meta["config"])), params, Tokenizer(meta["vocab"], meta["context_len"])


def _prompt_cond(model, root, prompts, tok):
    """The U-Net's condition for ``prompts``: token ids, or the frozen encoder's states."""
    cfg = model.net.config
    if getattr(cfg, "context_kind", "tokens") == "text_states":
        enc, enc_params, tok = load_text_encoder(root / "text_encoder.npz")
        dtype = next(iter(model.params.values())).dtype
        return encode_prompts(enc, {k: np.asarray(v, dtype=dtype) for k, v in enc_params.items()}, tok, prompts)
    if tok is None:
        raise ValueError(f"{str(root / 'autoencoder.json')!r} stores no tokenizer vocabulary")
    ids, mask = tok(prompts)
    if ids.shape[1] > cfg.context_len:
        raise ValueError(f"txt2img: the tokenizer's context ({ids.shape[1]}) is longer than the U-Net's "
                         f"({cfg.context_len})")
    return {"tokens": ids, "token_mask": mask}


def _check_args(prompt, checkpoint, n, steps, guidance_scale, convention, method, progress):
    from ._validate import check_bool, check_choice, check_finite_scalar, check_int

    if not (isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt))):
        raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    if not isinstance(checkpoint, (str, PathLike)):
        raise TypeError(f"checkpoint must be a folder path (str or Path), got {type(checkpoint).__name__}")
    check_int("n", n, min=1)
    check_int("steps", steps, min=1)
    check_finite_scalar("guidance_scale", guidance_scale)
    check_choice("convention", convention, ("w", "1+w"))
    if not isinstance(method, str):
        raise TypeError(f"method must be a refdiff.sample method name, got {type(method).__name__}")
    check_bool("progress", progress)


def txt2img(prompt, checkpoint, *, n: int = 4, steps: int = 20, guidance_scale: float = 4.0,
            convention: str = "w", method: str = "ddim", rng=None, progress: bool = False):
    """``n`` images (n, C, S, S) host float64 for ``prompt`` (a str; or a list of n str)
    from the folder ``checkpoint`` (module docstring): tokenize, sample latents with CFG
    against the empty prompt (for a ``text_states`` U-Net, the prompt is encoded by the
    frozen text encoder stored as ``text_encoder.npz`` in the folder), unscale (MATH.md (21.9)), decode.

    Parameters
    ----------
    prompt : str or list of str
        the prompt(s)
    checkpoint : str or Path
        the model folder
    n : int
        number of images
    steps : int
        sampler steps (trailing grid)
    guidance_scale : float
        CFG scale
    convention : {'w', '1+w'}
        the scale convention
    method : str
        a refdiff.sample method
    rng : numpy.random.Generator
        noise source
    progress : bool
        show a progress bar
    """
    from .loading import load
    from .samplers.loop import sample
    from .schedules import timesteps

    rng = check_rng(rng)
    _check_args(prompt, checkpoint, n, steps, guidance_scale, convention, method, progress)  # issue 19
    root = Path(checkpoint)
    model, _ = load(root / "unet")
    ae, ae_params, meta = load_autoencoder(root / "autoencoder.npz")
    prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
    if len(prompts) != n:
        raise ValueError(f"txt2img: {len(prompts)} prompts for n = {n} images")
    cond = _prompt_cond(model, root, prompts, meta["tokenizer"])
    guided = model.bind(cond, guidance_scale=guidance_scale, convention=convention)
    dtype = next(iter(model.params.values())).dtype
    z_T = np.asarray(rng.standard_normal((n, *model.sample_shape)), dtype=dtype)
    z = sample(guided, z_T, model.schedule, timesteps(model.schedule.T, steps, "trailing"), method,
               prediction_type=model.prediction_type, rng=rng, progress=progress)
    z = unscale_latents(np.asarray(z, dtype=np.float64), meta["scaling_factor"], meta["shift"])
    params = {k: np.asarray(v, dtype=np.float64) for k, v in ae_params.items()}
    return ae.decode(params, z)
