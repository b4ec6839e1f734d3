"""Fuzz recipes for refdiff.nn's networks and blocks (h-nnval; merged into recipes_nn).

Small networks (a few hundred parameters, float64) keep each probe a few milliseconds.
Model forwards validate x, t and cond once at the top and let NaN propagate (documented);
``t`` may be a float array, an integer array or a Python number."""

from __future__ import annotations

import numpy as np

from .harness import Call

RECIPES: dict = {}
EXEMPT: dict = {}


def A(*shape, seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def add(qualname, factory):
    RECIPES[qualname] = factory


T_OPTS = dict(accept={"t": {"int_array", "python_float"}}, nan_propagates={"x", "t"})


def _model_calls(prefix, make, x_shape, *, cond=None, forward_extra=None):
    """Recipes for the DenoiserBase methods of one network class: ``make()`` -> instance."""
    def params(m):
        return m.init_params(np.random.default_rng(0), dtype="float64")

    def fwd(name):
        def f():
            m = make()
            kw = dict(params=params(m), x=A(*x_shape), t=np.array([0.3, 0.7]), cond=cond() if cond else None)
            return Call(getattr(m, name), kw, kinds={"params": "object", "t": "array", "cond": "object"},
                        bad={"params": {"empty": {}}}, **T_OPTS)
        return f

    def bwd(name):
        def f():
            m = make()
            p = params(m)
            out, cache = m.forward(p, A(*x_shape), np.array([0.3, 0.7]), cond() if cond else None)
            return Call(getattr(m, name), dict(params=p, cache=cache, dout=A(*out.shape, seed=3)),
                        kinds={"params": "object", "cache": "object"}, nan_propagates={"dout"})
        return f

    add(prefix + ".forward", fwd("forward"))
    if hasattr(make(), "backward"):
        add(prefix + ".backward", bwd("backward"))
    return fwd, bwd, params


# ---------------------------------------------------------------------------- networks
def _networks():
    from refdiff import nn
    from refdiff.nn import base, dit, mlp, mmdit, unet

    mk_mlp = lambda: mlp.MLP(mlp.MLPConfig(dim=3, hidden=8, layers=2, time_embed_dim=4, num_classes=3))  # noqa: E731
    y = lambda: {"class": np.array([0, 2])}  # noqa: E731
    fwd, bwd, params = _model_calls("refdiff.nn.mlp.MLP", mk_mlp, (2, 3), cond=y)
    add("refdiff.nn.mlp.MLP", lambda: Call(mlp.MLP, dict(config=mlp.MLPConfig(dim=3, hidden=8)),
                                           kinds={"config": "object"}))
    add("refdiff.nn.mlp.MLPConfig", lambda: Call(mlp.MLPConfig, dict(dim=3, hidden=8)))
    # DenoiserBase's methods, on an MLP (the base class is abstract)
    add("refdiff.nn.base.DenoiserBase", lambda: Call(base.DenoiserBase, dict(config=mlp.MLPConfig(dim=3)),
                                                     kinds={"config": "object"}))
    add("refdiff.nn.base.DenoiserBase.forward", fwd("forward"))
    add("refdiff.nn.base.DenoiserBase.apply", fwd("apply"))
    add("refdiff.nn.base.DenoiserBase.init_params",
        lambda: Call(mk_mlp().init_params, dict(rng=np.random.default_rng(0)), kinds={"xp": "object"},
                     bad={"dtype": {"float16": "float16"}}))
    add("refdiff.nn.base.DenoiserBase.num_params", lambda: Call(mk_mlp().num_params, {}, kinds={"params": "object"},
                                                                ref={"params": params(mk_mlp())}))
    add("refdiff.nn.base.DenoiserBase.to_dict", lambda: Call(mk_mlp().to_dict, {}))
    add("refdiff.nn.base.DenoiserBase.null_cond",
        lambda: Call(mk_mlp().null_cond, dict(cond=y(), n=2), kinds={"cond": "object"}, accept={"cond": {"None"}},
                     bad={"kinds": {"unknown": "nope"}, "n": {"zero": 0}}))
    add("refdiff.nn.base.DenoiserBase.as_model",
        lambda: Call(mk_mlp().as_model, dict(params=params(mk_mlp()), cond=y()), kinds={"params": "object",
                                                                                        "cond": "object"}))

    def mk_unet():
        return unet.UNet(unet.UNetConfig(base_channels=4, channel_mults=(1, 2), groups=2, image_size=4,
                                         num_classes=3, time_embed_dim=8))
    ubwd = _model_calls("refdiff.nn.unet.UNet", mk_unet, (2, 1, 4, 4), cond=y)[1]
    add("refdiff.nn.unet.UNet.backward_full", ubwd("backward_full"))
    add("refdiff.nn.unet.UNet", lambda: Call(unet.UNet, dict(config=unet.UNetConfig(base_channels=4, groups=2)),
                                             kinds={"config": "object"}))
    add("refdiff.nn.unet.UNetConfig", lambda: Call(unet.UNetConfig, dict(base_channels=4, groups=2),
                                                   kinds={"channel_mults": "shape", "time_embed_dim": "int"},
                                                   ref={"time_embed_dim": 8},
                                                   bad={"channel_mults": {"empty": (), "zero": (1, 0)},
                                                        "cross_attention": {"bad_level": (5,), "string": "mid"}}))

    mk_dit = lambda: dit.DiT(dit.DiTConfig(image_size=4, patch=2, width=8, depth=1, heads=2, num_classes=3,  # noqa: E731
                                           freq_dim=4, learn_sigma=True))
    dfwd = _model_calls("refdiff.nn.dit.DiT", mk_dit, (2, 1, 4, 4), cond=y)[0]
    add("refdiff.nn.dit.DiT.apply", dfwd("apply"))
    add("refdiff.nn.dit.DiT", lambda: Call(dit.DiT, dict(config=dit.DiTConfig(width=8, heads=2, depth=1)),
                                           kinds={"config": "object"}))
    add("refdiff.nn.dit.DiTConfig", lambda: Call(dit.DiTConfig, dict(width=8, heads=2, depth=1),
                                                 bad={"patch": {"not_dividing": 3}, "heads": {"not_dividing": 3}}))
    add("refdiff.nn.dit.DiT.guided",
        lambda: Call(mk_dit().guided, dict(params=mk_dit().init_params(np.random.default_rng(0), dtype="float64"),
                                           cond=y(), guidance_scale=2.0),
                     kinds={"params": "object", "cond": "object", "guided_channels": "option"},
                     accept={"cond": {"None"}, "guided_channels": {"int"}},
                     bad={"guided_channels": {"zero": 0, "too_many": 5}}))

    tok = lambda: {"tokens": np.array([[1, 2, 0], [3, 0, 0]]),  # noqa: E731
                   "token_mask": np.array([[True, True, False], [True, False, False]])}
    mk_mm = lambda: mmdit.MMDiT(mmdit.MMDiTConfig(image_size=4, patch=2, width=8, depth=1, heads=2, vocab_size=5,  # noqa: E731
                                                  max_text_len=3, text_dim=4, freq_dim=4))
    _model_calls("refdiff.nn.mmdit.MMDiT", mk_mm, (2, 1, 4, 4), cond=tok)
    add("refdiff.nn.mmdit.MMDiT", lambda: Call(mmdit.MMDiT, dict(config=mmdit.MMDiTConfig(width=8, heads=2, depth=1)),
                                               kinds={"config": "object"}))
    add("refdiff.nn.mmdit.MMDiTConfig", lambda: Call(mmdit.MMDiTConfig, dict(width=8, heads=2, depth=1)))

    cfg = lambda: mlp.MLPConfig(dim=3, hidden=8).to_dict()  # noqa: E731
    bad_cfg = {"config_dict": {"unknown_arch": {"arch": "nope"}, "unknown_key": {**cfg(), "nope": 1},
                               "bad_value": {**cfg(), "dim": -1}, "no_arch": {"dim": 3}}}
    add("refdiff.nn.config_from_dict", lambda: Call(nn.config_from_dict, dict(config_dict=cfg()),
                                                    kinds={"config_dict": "object"}, bad=bad_cfg))
    add("refdiff.nn.build_model", lambda: Call(nn.build_model, dict(config_dict=cfg()),
                                               kinds={"config_dict": "object"}, bad=bad_cfg))


_networks()


# ------------------------------------------------------------------------- DiT pieces
def _dit_parts():
    from refdiff.nn import dit

    p = "refdiff.nn.dit."
    add(p + "sincos_pos_embed_2d", lambda: Call(dit.sincos_pos_embed_2d, dict(dim=8, grid=2),
                                                bad={"dim": {"not_multiple_of_4": 6}}))
    add(p + "patch_embed_weight_from_conv", lambda: Call(dit.patch_embed_weight_from_conv, dict(w_conv=A(5, 3, 2, 2)),
                                                         nan_propagates={"w_conv"}))
    add(p + "patch_embed_weight_to_conv", lambda: Call(dit.patch_embed_weight_to_conv,
                                                       dict(w_lin=A(12, 5), channels=3, patch=2),
                                                       nan_propagates={"w_lin"}))
    add(p + "xavier_uniform", lambda: Call(dit.xavier_uniform, dict(rng=np.random.default_rng(0), d_in=3, d_out=4)))
    mod = lambda: dict(x=A(2, 3, 4), shift=A(2, 4, seed=1), scale=A(2, 4, seed=2))  # noqa: E731
    add(p + "modulate_forward", lambda: Call(dit.modulate_forward, mod(), nan_propagates={"x", "shift", "scale"}))

    def mod_b():
        out, cache = dit.modulate_forward(**mod())
        return Call(dit.modulate_backward, dict(dout=A(*out.shape, seed=5), cache=cache), kinds={"cache": "object"},
                    nan_propagates={"dout"})
    add(p + "modulate_backward", mod_b)

    def P_tok():
        return {"lin.w": A(4, 5), "lin.b": A(5, seed=1)}
    add(p + "tok_linear_forward", lambda: Call(dit.tok_linear_forward, dict(P=P_tok(), name="lin", x=A(2, 3, 4)),
                                               kinds={"P": "object", "name": "option"}, nan_propagates={"x"}))

    def tok_b():
        out, cache = dit.tok_linear_forward(P_tok(), "lin", A(2, 3, 4))
        return Call(dit.tok_linear_backward, dict(G={}, name="lin", dout=A(*out.shape, seed=5), cache=cache),
                    kinds={"G": "object", "name": "option", "cache": "object"}, nan_propagates={"dout"},
                    accept={"name": {"unknown"}})
    add(p + "tok_linear_backward", tok_b)

    def blockP(final=False):
        P = {}
        rng = np.random.default_rng(0)
        if final:
            P.update({"fin.ada.w": A(4, 8, seed=3), "fin.ada.b": A(8, seed=4), "fin.linear.w": A(4, 6, seed=5),
                      "fin.linear.b": A(6, seed=6)})
        else:
            dit.dit_block_init(P, "blk", 4, 2, 2.0, rng)
            P["blk.ada.w"] = A(4, 24, seed=3)  # not zero, so that every input matters
        return P
    add(p + "dit_block_init", lambda: Call(dit.dit_block_init, dict(P={}, pre="blk", D=4, heads=2, mlp_ratio=2.0,
                                                                     rng=np.random.default_rng(0)),
                                           kinds={"P": "object", "pre": "option"}, accept={"pre": {"unknown"}},
                                           bad={"heads": {"not_dividing": 3}}))
    io = lambda: dict(x=A(2, 3, 4), s=A(2, 4, seed=1))  # noqa: E731
    common = dict(kinds={"P": "object", "pre": "option"}, nan_propagates={"x", "s"})
    add(p + "dit_block_forward", lambda: Call(dit.dit_block_forward, dict(P=blockP(), pre="blk", heads=2, **io()),
                                              **common))
    add(p + "final_layer_forward", lambda: Call(dit.final_layer_forward, dict(P=blockP(True), pre="fin", **io()),
                                                **common))

    def blk_b(fwd, bwd, final):
        def f():
            P = blockP(final)
            pre = "fin" if final else "blk"
            kw = dict(heads=2) if not final else {}
            out, cache = fwd(P, pre, **io(), **kw)
            return Call(bwd, dict(G={}, P=P, pre=pre, dout=A(*out.shape, seed=5), cache=cache),
                        kinds={"G": "object", "P": "object", "pre": "option", "cache": "object"},
                        nan_propagates={"dout"})
        return f
    add(p + "dit_block_backward", blk_b(dit.dit_block_forward, dit.dit_block_backward, False))
    add(p + "final_layer_backward", blk_b(dit.final_layer_forward, dit.final_layer_backward, True))
    add(p + "dit_cfg", lambda: Call(dit.dit_cfg, dict(out_uncond=A(2, 2, 3, 3), out_cond=A(2, 2, 3, 3, seed=1),
                                                      guidance_scale=2.0),
                                    kinds={"guided_channels": "option"}, accept={"guided_channels": {"int"}},
                                    nan_propagates={"out_uncond", "out_cond"},
                                    bad={"guided_channels": {"zero": 0, "too_many": 3}}))
    add(p + "DiTConfig.to_dict", lambda: Call(dit.DiTConfig(width=8, heads=2).to_dict, {}))


_dit_parts()


# ------------------------------------------------------------------- MMDiT joint block
def _mmdit_parts():
    from refdiff.nn import mmdit

    p = "refdiff.nn.mmdit."

    def P(pre_only=False):
        P = {}
        mmdit.joint_block_init(P, "jb", 4, 2, 2.0, np.random.default_rng(0), pre_only=pre_only)
        for k in list(P):
            if k.endswith(".ada.w"):
                P[k] = A(*P[k].shape, seed=len(k))  # not zero, so that every input matters
        return P
    add(p + "joint_block_init", lambda: Call(mmdit.joint_block_init, dict(P={}, pre="jb", D=4, heads=2, mlp_ratio=2.0,
                                                                         rng=np.random.default_rng(0)),
                                             kinds={"P": "object", "pre": "option"}, accept={"pre": {"unknown"}},
                                             bad={"heads": {"not_dividing": 3}}))
    io = lambda: dict(ctx=A(2, 3, 4), x=A(2, 5, 4, seed=1), s=A(2, 4, seed=2),  # noqa: E731
                      text_mask=np.array([[True, True, False], [True, False, False]]))
    add(p + "joint_block_forward", lambda: Call(mmdit.joint_block_forward, dict(P=P(), pre="jb", heads=2, **io()),
                                                kinds={"P": "object", "pre": "option"},
                                                nan_propagates={"ctx", "x", "s"},
                                                bad={"pre_only": {"mismatch": True},
                                                     "text_mask": {"float": np.ones((2, 3))}}))

    def bwd():
        Pp = P()
        (c_out, x_out), cache = mmdit.joint_block_forward(Pp, "jb", heads=2, **io())
        return Call(mmdit.joint_block_backward, dict(G={}, P=Pp, pre="jb", dctx_out=A(*c_out.shape, seed=5),
                                                     dx_out=A(*x_out.shape, seed=6), cache=cache),
                    kinds={"G": "object", "P": "object", "pre": "option", "cache": "object"},
                    nan_propagates={"dctx_out", "dx_out"})
    add(p + "joint_block_backward", bwd)
    add(p + "MMDiTConfig.to_dict", lambda: Call(mmdit.MMDiTConfig(width=8, heads=2).to_dict, {}))


_mmdit_parts()


# ------------------------------------------------------------------------ U-Net blocks
def _blocks():
    from refdiff.nn import blocks as B, unet_blocks as U

    def P_res():
        P = {}
        B.resblock_init(P, "rb", 4, 6, 5, np.random.default_rng(0))
        return P

    def P_attn():
        P = {}
        B.attnblock_init(P, "ab", 4, np.random.default_rng(0))
        return P

    def P_x():
        P = {}
        U.xattn_init(P, "xa", 4, 3, 2, np.random.default_rng(0))
        P["xa.attn.out.w"] = A(*P["xa.attn.out.w"].shape, seed=9)  # not zero
        return P

    common = dict(kinds={"P": "object", "pre": "option"}, bad={"groups": {"not_dividing": 3}})
    res = lambda: dict(P=P_res(), pre="rb", x=A(2, 4, 4, 4), e=A(2, 5, seed=1), groups=2)  # noqa: E731
    att = lambda: dict(P=P_attn(), pre="ab", x=A(2, 4, 4, 4), groups=2)  # noqa: E731
    xat = lambda: dict(P=P_x(), pre="xa", x=A(2, 4, 4, 4), context=A(2, 5, 3, seed=1),  # noqa: E731
                       key_mask=np.array([[True] * 4 + [False], [True] * 5]), groups=2, heads=2)
    add("refdiff.nn.blocks.resblock_forward", lambda: Call(B.resblock_forward, res(), nan_propagates={"x", "e"},
                                                           **common))
    add("refdiff.nn.blocks.attnblock_forward", lambda: Call(B.attnblock_forward, att(), nan_propagates={"x"}, **common))
    add("refdiff.nn.unet_blocks.xattn_forward",
        lambda: Call(U.xattn_forward, xat(), nan_propagates={"x", "context"},
                     kinds={"P": "object", "pre": "option", "key_mask": "object"}, accept={"key_mask": {"None"}},
                     bad={"groups": {"not_dividing": 3}, "key_mask": {"float": np.ones((2, 5))},
                          "heads": {"not_dividing": 3}}))

    def bwd(fwd, bwd_fn, kw):
        def f():
            k = kw()
            out, cache = fwd(**k)
            return Call(bwd_fn, dict(G={}, P=k["P"], pre=k["pre"], dout=A(*out.shape, seed=5), cache=cache),
                        kinds={"G": "object", "P": "object", "pre": "option", "cache": "object"},
                        nan_propagates={"dout"})
        return f
    add("refdiff.nn.blocks.resblock_backward", bwd(B.resblock_forward, B.resblock_backward, res))
    add("refdiff.nn.blocks.attnblock_backward", bwd(B.attnblock_forward, B.attnblock_backward, att))
    add("refdiff.nn.unet_blocks.xattn_backward", bwd(U.xattn_forward, U.xattn_backward, xat))
    add("refdiff.nn.unet_blocks.xattn_init",
        lambda: Call(U.xattn_init, dict(P={}, pre="xa", c=4, context_dim=3, heads=2, rng=np.random.default_rng(0)),
                     kinds={"P": "object", "pre": "option"}, accept={"pre": {"unknown"}},
                     bad={"heads": {"not_dividing": 3}}))
    add("refdiff.nn.unet_blocks.Block",
        lambda: Call(U.Block, dict(init=B.resblock_init, forward=B.resblock_forward, backward=B.resblock_backward),
                     kinds={"init": "object", "forward": "object", "backward": "object"}))


_blocks()


# ---------------------------------------------------------------------------- classifier
def _classifier():
    from refdiff.nn import classifier as C

    p = "refdiff.nn.classifier."
    P = lambda: C.classifier_init(np.random.default_rng(0), n_in=6, hidden=(5,), n_classes=3)  # noqa: E731
    opts = dict(kinds={"params": "object"}, nan_propagates={"x"})
    add(p + "classifier_init", lambda: Call(C.classifier_init, dict(rng=np.random.default_rng(0), n_in=6, hidden=(5,),
                                                                   n_classes=3),
                                            kinds={"hidden": "shape", "xp": "object"}, bad={"dtype": {"f16": "float16"}}))
    add(p + "classifier_forward", lambda: Call(C.classifier_forward, dict(params=P(), x=A(2, 2, 3)),
                                               kinds={"params": "object", "upto": "int"}, ref={"upto": 1},
                                               nan_propagates={"x"}, bad={"upto": {"too_big": 3}}))

    def bwd():
        params = P()
        out, cache = C.classifier_forward(params, A(2, 2, 3))
        return Call(C.classifier_backward, dict(params=params, cache=cache, dlogits=A(*out.shape, seed=4)),
                    kinds={"params": "object", "cache": "object"}, nan_propagates={"dlogits"})
    add(p + "classifier_backward", bwd)
    add(p + "softmax_cross_entropy", lambda: Call(C.softmax_cross_entropy, dict(logits=A(2, 3), y=np.array([0, 2])),
                                                  nan_propagates={"logits"},
                                                  bad={"y": {"out_of_range": np.array([0, 3])}}))
    add(p + "classify", lambda: Call(C.classify, dict(params=P(), x=A(2, 6)), kinds={"params": "object"}))
    add(p + "features", lambda: Call(C.features, dict(params=P(), x=A(2, 6)), **opts))


_classifier()


# --------------------------------------------------------------------------------- optim
def _optim():
    from refdiff.nn import optim as O

    p = "refdiff.nn.optim."
    params = lambda: {"w": A(3, 2), "b": A(2, seed=1)}  # noqa: E731
    grads = lambda: {"w": A(3, 2, seed=2), "b": A(2, seed=3)}  # noqa: E731
    dicts = {"params": "object", "grads": "object", "state": "object"}
    bad = {"grads": {"missing_key": {"w": A(3, 2)}, "wrong_shape": {"w": A(2, 3), "b": A(2)},
                     "int_entry": {"w": np.ones((3, 2), int), "b": A(2)}},
           "params": {"int_entry": {"w": np.ones((3, 2), int), "b": A(2)}},
           "state": {"no_step": {"m/w": A(3, 2)}}, "betas": {"one": (0.9,), "big": (0.9, 1.0), "nan": (0.9, np.nan)}}
    upd = lambda f: Call(f, dict(params=params(), grads=grads(), state=O.adam_init(params()), lr=1e-3),  # noqa: E731
                         kinds=dicts, bad=bad)
    add(p + "adam_init", lambda: Call(O.adam_init, dict(params=params()), kinds={"params": "object"},
                                      bad={"params": bad["params"]}))
    add(p + "adam_update", lambda: upd(O.adam_update))
    add(p + "adam_update_flat", lambda: upd(O.adam_update_flat))
    add(p + "FlatAdam.update", lambda: upd(O.FlatAdam().update))
    add(p + "FlatAdam", lambda: Call(O.FlatAdam, {}))
    add(p + "global_norm", lambda: Call(O.global_norm, dict(grads=grads()), kinds={"grads": "object"},
                                        bad={"grads": {"int_entry": bad["grads"]["int_entry"]}}))
    add(p + "clip_grad_norm", lambda: Call(O.clip_grad_norm, dict(grads=grads(), max_norm=0.5),
                                           kinds={"grads": "object"}, bad={"max_norm": {"zero": 0.0}}))
    add(p + "ema_update", lambda: Call(O.ema_update, dict(ema_params=params(), params=grads(), decay=0.9),
                                       kinds={"ema_params": "object", "params": "object"},
                                       bad={"decay": {"big": 1.5}, "params": bad["grads"]}))
    add(p + "ema_decay_warmup", lambda: Call(O.ema_decay_warmup, dict(step=3, decay=0.99), bad={"decay": {"big": 1.5}}))
    add(p + "warmup_lr", lambda: Call(O.warmup_lr, dict(step=3, base_lr=1e-3, warmup_steps=10)))
    add(p + "cosine_lr", lambda: Call(O.cosine_lr, dict(step=3, base_lr=1e-3, total_steps=10),
                                      bad={"total_steps": {"le_warmup": 0}}))


_optim()
