"""``refdiff edit``: img2img, inpainting and outpainting from a checkpoint and an image file
or a held-out digit (the subcommand's parser and its command; refdiff/cli.py adds it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["add_edit_parser", "cmd_edit"]

REGIONS = ("lower", "upper", "left", "right")


def add_edit_parser(subs, make_sub):
    """Add the ``edit`` subparser to ``subs`` (``make_sub(subs, name, help, description)``).

    Parameters
    ----------
    subs : argparse subparsers action
        Where the subparser is added.
    make_sub : callable
        ``make_sub(subs, name, help, description) -> argparse.ArgumentParser``.

    Returns
    -------
    argparse.ArgumentParser
        The ``edit`` subparser (its ``func`` default is :func:`cmd_edit`).
    """
    from ..cli import _float_range, _int_min
    d = make_sub(subs, "edit", "img2img, inpainting or outpainting with a checkpoint",
                 "Edit an image with a trained checkpoint (MATH.md chapter 17) and write OUT.npz (x: the edits,\n"
                 "x_in: the input) and OUT.png.  The input is --image (a .npy or .npz holding one (C, H, W) or\n"
                 "(1, C, H, W) image in [-1, 1]) or --digit I (the I-th held-out scikit-learn 8x8 digit).\n"
                 "  img2img : SDEdit with the library strength rule (k = int(steps * strength) steps of the grid's tail)\n"
                 "  inpaint : generate --region (a half of the image) with --scheme replace or repaint\n"
                 "  outpaint: shift the image --shift columns to the left and generate the columns that come in")
    d.add_argument("checkpoint", help="checkpoint.npz, or the folder holding it")
    d.add_argument("mode", choices=("img2img", "inpaint", "outpaint"), help="what to do (see above)")
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help=".npy/.npz file with one image (C, H, W) in [-1, 1]")
    src.add_argument("--digit", type=_int_min(0), help="index of a held-out 8x8 digit (needs scikit-learn)")
    d.add_argument("--strength", type=_float_range(0, 1), default=0.6, help="img2img strength in [0, 1] (default: %(default)s)")
    d.add_argument("--method", default="ddim", help="sampler for img2img / replacement (default: %(default)s)")
    d.add_argument("--steps", type=_int_min(1), default=50, help="grid steps (default: %(default)s)")
    d.add_argument("--spacing", default="trailing", choices=("linspace", "leading", "trailing"), help="grid spacing")
    d.add_argument("--scheme", default="replace", choices=("replace", "repaint"), help="inpainting scheme")
    d.add_argument("--noise-mode", default="fresh", choices=("fresh", "reuse"), help="replacement noise for the kept region")
    d.add_argument("--jump-length", type=_int_min(1), default=10, help="RePaint jump length (default: %(default)s)")
    d.add_argument("--jump-n-sample", type=_int_min(1, 100), default=5,
                   help="RePaint resamplings, 1..100 (default: %(default)s)")
    d.add_argument("--region", default="lower", choices=REGIONS, help="inpaint: the half to generate")
    d.add_argument("--shift", type=_int_min(1), default=4, help="outpaint: columns shifted out on the left (default: 4)")
    d.add_argument("--class", dest="label", type=_int_min(0), default=None, help="class condition (conditional checkpoints)")
    d.add_argument("--guidance-scale", type=_float_range(), default=None, help="CFG scale ('w' convention) with --class")
    d.add_argument("--n", type=_int_min(1), default=8, help="edits of the one input (default: %(default)s)")
    d.add_argument("--seed", type=_int_min(0), default=0, help="seed of every draw (default: %(default)s)")
    d.add_argument("--out", default="edit.npz", help="output .npz path; the PNG goes beside it (default: %(default)s)")
    d.set_defaults(func=cmd_edit)
    return d


def _input(args, shape):
    from ..cli import CLIError

    if args.digit is not None:
        from ..data import digits8x8

        x, _ = digits8x8("test")
        if not 0 <= args.digit < x.shape[0]:
            raise CLIError(f"--digit {args.digit} is out of range [0, {x.shape[0] - 1}]")
        img = x[args.digit]
    else:
        p = Path(args.image)
        if not p.is_file():
            raise CLIError(f"image not found: {str(p)!r}")
        try:
            data = np.load(p, allow_pickle=False)  # an object array is refused, never unpickled
        except (ValueError, OSError, EOFError) as e:
            raise CLIError(f"--image {str(p)!r} is not a .npy/.npz array file ({' '.join(str(e).split())})") from None
        if hasattr(data, "files") and not data.files:
            raise CLIError(f"--image {str(p)!r} holds no array")
        img = data[data.files[0]] if hasattr(data, "files") else data
    if img.dtype.kind not in "iuf":
        raise CLIError(f"--image holds an array of dtype {img.dtype}; an image of real numbers in [-1, 1] is needed")
    img = np.asarray(img, dtype=np.float64)
    if not np.all(np.isfinite(img)):
        raise CLIError("--image contains NaN or inf; an image of real numbers in [-1, 1] is needed")
    img = img[0] if img.ndim == 4 and img.shape[0] == 1 else img
    if tuple(img.shape) != tuple(shape):
        raise CLIError(f"the image has shape {tuple(img.shape)}; the checkpoint's model expects {tuple(shape)}")
    return img


def _region_mask(shape, region):
    c, h, w = shape
    m = np.zeros((1, c, h, w))
    sl = {"lower": (slice(h // 2, None), slice(None)), "upper": (slice(None, h // 2), slice(None)),
          "left": (slice(None), slice(None, w // 2)), "right": (slice(None), slice(w // 2, None))}[region]
    m[:, :, sl[0], sl[1]] = 1.0
    return m


def cmd_edit(args):
    """Run ``refdiff edit`` with the parsed arguments of :func:`add_edit_parser`: load the
    checkpoint, edit the input and write OUT.npz and OUT.png.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        0, the exit status.

    Raises
    ------
    refdiff.cli.CLIError
        If the checkpoint is missing or has no discrete schedule, or an option is out of range.
    """
    from ..cli import CLIError, _output_file, _save_plot
    from ..loading import load
    from ..schedules import Schedule, timesteps
    from .img2img import img2img
    from .inpaint import inpaint

    p = Path(args.checkpoint)
    p = p / "checkpoint.npz" if p.is_dir() else p
    if not p.is_file():
        raise CLIError(f"checkpoint not found: {str(p)!r}")
    model, meta = load(p)
    sch = model.schedule
    if not isinstance(sch, Schedule):
        raise CLIError("refdiff edit needs a checkpoint with a discrete schedule")
    if not 1 <= args.steps <= sch.T:
        raise CLIError(f"--steps {args.steps} is outside [1, T = {sch.T}]")
    path = _output_file(args.out, "edit.npz", ".npz", args.overwrite, png_beside=True)  # before the work
    x_in = _input(args, model.sample_shape)
    K = int(getattr(model.net.config, "num_classes", 0))
    if args.label is not None and not args.label < K:
        raise CLIError(f"--class {args.label} is outside [0, {K - 1}], the checkpoint's classes" if K else
                       "--class needs a class-conditional checkpoint")
    cond = None if args.label is None else {"class": np.full(args.n, args.label, dtype=np.int64)}
    if args.guidance_scale is not None and cond is None:
        raise CLIError("--guidance-scale needs --class")
    f = model.bind(cond, guidance_scale=args.guidance_scale) if args.guidance_scale is not None else model.bind(cond)
    ts = timesteps(sch.T, args.steps, args.spacing)
    x = np.repeat(x_in[None], args.n, axis=0)
    rng = np.random.default_rng(args.seed)
    pt = model.prediction_type
    if args.mode == "img2img":
        out = img2img(f, x, sch, ts, args.strength, args.method, rng=rng, prediction_type=pt)
    else:
        if args.mode == "inpaint":
            mask = _region_mask(x_in.shape, args.region)
        else:
            s = args.shift
            if not 1 <= s < x_in.shape[-1]:
                raise CLIError(f"--shift {s} is outside [1, {x_in.shape[-1] - 1}]")
            x = np.concatenate([x[..., s:], np.zeros(x.shape[:-1] + (s,))], axis=-1)
            mask = np.zeros((1,) + x_in.shape)
            mask[..., -s:] = 1.0
        opts = dict(jump_length=args.jump_length, jump_n_sample=args.jump_n_sample) if args.scheme == "repaint" else \
            dict(noise_mode=args.noise_mode)
        out = inpaint(f, x, mask, sch, ts, args.method, rng=rng, scheme=args.scheme, prediction_type=pt, **opts)
    out = np.clip(np.asarray(out, dtype=np.float64), -1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=out, x_in=x_in)
    png = _save_plot(np.concatenate([x[:1], out]), path.with_suffix(".png"), f"refdiff edit {args.mode} (first: input)")
    print(f"wrote {path}" + (f" and {png}" if png else "") + f": {args.n} edits ({args.mode}) of shape {x_in.shape}")
    return 0
