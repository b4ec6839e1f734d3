"""Fuzz recipes for refdiff.nn's conditions, adapters, text, video and VAE modules (h-nnval;
merged into recipes_nn).  Small sizes keep each probe a few milliseconds; file paths are
not fuzzed with strings (they would write files), see save_lora/load_lora."""

from __future__ import annotations

import numpy as np

from .harness import Call

RECIPES: dict = {}
EXEMPT: dict = {}


def A(*shape, seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def add(qualname, factory):
    RECIPES[qualname] = factory


# ---------------------------------------------------------------------------- conditions
def _conditions():
    from refdiff.nn import conditions as Cd

    p = "refdiff.nn.conditions."
    xp = np
    kinds = {"c": "object", "xp": "object", "null": "object", "what": "option", "drop": "array",
             "dtype": "option"}
    acc = {"what": {"unknown", "empty_string"}}
    ids = lambda: np.array([[0, 2, 1], [0, 1, 1]])  # noqa: E731
    tmask = lambda: np.array([[True, True, False], [True, True, True]])  # noqa: E731
    made = {
        "ClassCond": (lambda: Cd.ClassCond(3), lambda: {"class": np.array([0, 3])}),
        "TokenCond": (lambda: Cd.TokenCond(4, 3), lambda: {"tokens": ids(), "token_mask": tmask()}),
        "ControlCond": (lambda: Cd.ControlCond(1, 4), lambda: {"control": A(2, 1, 4, 4)}),
        "InpaintCond": (lambda: Cd.InpaintCond(1, 4), lambda: {"mask": (A(2, 1, 4, 4) > 0).astype(float),
                                                             "masked_image": A(2, 1, 4, 4, seed=1)}),
        "AdapterCond": (lambda: Cd.AdapterCond(), lambda: {"adapter_scale": np.array([0.5, 1.0])}),
    }
    for name, (make, cond) in made.items():
        add(p + name + ".check", lambda make=make, cond=cond: Call(make().check, dict(c=cond(), n=2, xp=xp, what="f"),
                                                                   kinds=kinds, accept=acc, bad={"c": {"missing": {}}}))
        add(p + name + ".null", lambda make=make: Call(make().null, dict(n=2, xp=xp, dtype="float64"), kinds=kinds,
                                                       bad={"dtype": {"f16": "float16"}}))
    add(p + "CondKind.check", RECIPES[p + "ClassCond.check"])
    add(p + "CondKind.null", RECIPES[p + "ClassCond.null"])
    drop = lambda: np.array([True, False])  # noqa: E731
    for name, (make, cond) in (("CondKind", made["ClassCond"]), ("TokenCond", made["TokenCond"])):
        add(p + name + ".where",
            lambda make=make, cond=cond: Call(make().where, dict(drop=drop(), c=cond(), null=make().null(2, xp, "float64"),
                                                                 xp=xp),
                                              kinds={**kinds, "drop": "object"},
                                              bad={"drop": {"float": np.array([1.0, 0.0]), "int": np.array([1, 0]),
                                                            "list": [True, False]}}))
    add(p + "ClassCond", lambda: Call(Cd.ClassCond, dict(num_classes=3)))
    add(p + "TokenCond", lambda: Call(Cd.TokenCond, dict(vocab_size=4, max_len=3)))
    add(p + "ControlCond", lambda: Call(Cd.ControlCond, dict(channels=1, size=4)))
    add(p + "InpaintCond", lambda: Call(Cd.InpaintCond, dict(channels=1, size=4)))
    spec = lambda: Cd.CondSpec([Cd.ClassCond(3), Cd.TokenCond(4, 3)])  # noqa: E731
    full = lambda: {"class": np.array([0, 3]), "tokens": ids(), "token_mask": tmask()}  # noqa: E731
    add(p + "CondSpec", lambda: Call(Cd.CondSpec, dict(kinds=[Cd.ClassCond(3)]), kinds={"kinds": "object"},
                                     bad={"kinds": {"not_kinds": [3]}}))
    skinds = {"cond": "object", "xp": "object", "dtype": "option", "what": "option", "kinds": "object", "p": "object"}
    add(p + "CondSpec.validate", lambda: Call(spec().validate, dict(cond=full(), n=2, xp=xp, dtype="float64"),
                                              kinds=skinds, accept={"cond": {"None"}, **acc},
                                              bad={"cond": {"unknown_key": {"nope": np.ones(2)}}}))
    add(p + "CondSpec.null", lambda: Call(spec().null, dict(cond=full(), n=2, xp=xp, dtype="float64"),
                                          kinds=skinds, accept={"cond": {"None"}},
                                          bad={"kinds": {"unknown": "nope"}}))
    add(p + "CondSpec.drop", lambda: Call(spec().drop, dict(cond=full(), p={"class": 0.5}, rng=np.random.default_rng(0),
                                                            n=2, xp=xp, dtype="float64"),
                                          kinds=skinds, accept={"cond": {"None"}},
                                          bad={"p": {"big": {"class": 1.5}, "unknown": {"nope": 0.5}}}))
    add(p + "as_cond", lambda: Call(Cd.as_cond, dict(cond=full()), kinds={"cond": "object"}, accept={"cond": {"None"}}))


_conditions()


# ---------------------------------------------------------------------------------- LoRA
def _lora():
    from refdiff.nn import attention as At, lora as Lr

    p = "refdiff.nn.lora."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    lin = lambda: dict(x=A(2, 3), w=A(3, 5, seed=1), b=A(5, seed=2), A=A(4, 3, seed=3), B=A(5, 4, seed=4),  # noqa: E731
                       scale=0.5)
    nanp = {"x", "w", "b", "A", "B"}
    add(p + "lora_scaling", lambda: Call(Lr.lora_scaling, dict(alpha=8.0, r=4), kinds={"alpha": "float", "r": "int"}))
    add(p + "lora_init_factors", lambda: Call(Lr.lora_init_factors, dict(w_shape=(3, 5), r=2, rng=rng()),
                                              kinds={"w_shape": "shape"}, bad={"r": {"too_big": 4}}))
    add(p + "dropout_mask", lambda: Call(Lr.dropout_mask, dict(shape=(2, 3), p=0.1, rng=rng()), bad={"p": {"one": 1.0}}))
    add(p + "lora_delta", lambda: Call(Lr.lora_delta, dict(A=A(4, 3), B=A(5, 4, seed=1), scale=0.5),
                                       nan_propagates={"A", "B"}, kinds={"scale": "float"}))
    add(p + "lora_delta_backward", lambda: Call(Lr.lora_delta_backward, dict(d_delta=A(3, 5), A=A(4, 3, seed=1),
                                                                             B=A(5, 4, seed=2), scale=0.5),
                                                nan_propagates={"d_delta", "A", "B"}, kinds={"scale": "float"}))
    mask = lambda: np.ones((2, 3)) / 0.9  # noqa: E731
    for name in ("lora_linear_forward", "lora_linear_forward_naive"):
        f = getattr(Lr, name)
        add(p + name, lambda f=f: Call(f, lin(), kinds={"scale": "float", "mask": "array"}, ref={"mask": mask()},
                                       nan_propagates=nanp | {"mask"}, accept={"x": {"batch"}}))

    def bwd(fwd, backward, kw):
        def f():
            out, cache = fwd(**kw())
            return Call(backward, dict(dout=A(*out.shape, seed=7), cache=cache), kinds={"cache": "object"},
                        nan_propagates={"dout"})
        return f
    add(p + "lora_linear_backward", bwd(Lr.lora_linear_forward, Lr.lora_linear_backward, lin))
    cv = lambda: dict(x=A(2, 3, 4, 4), w=A(5, 3, 3, 3, seed=1), b=A(5, seed=2), A=A(2, 3, 3, 3, seed=3),  # noqa: E731
                      B=A(5, 2, 1, 1, seed=4), scale=0.5)
    add(p + "lora_conv_forward", lambda: Call(Lr.lora_conv_forward, cv(), kinds={"scale": "float", "mask": "array",
                                                                                "pad": "int"},
                                              ref={"mask": np.ones((2, 3, 4, 4)), "pad": 1}, nan_propagates=nanp | {"mask"},
                                              accept={"x": {"batch"}}))
    add(p + "lora_conv_backward", bwd(Lr.lora_conv_forward, Lr.lora_conv_backward, cv))
    Pl = lambda: {"lin.w": A(4, 5), "lin.b": A(5, seed=1)}  # noqa: E731
    lo = lambda: {"lin.lora_A": A(2, 4, seed=2), "lin.lora_B": A(5, 2, seed=3)}  # noqa: E731
    add(p + "lora_proj_forward", lambda: Call(Lr.lora_proj_forward, dict(P=Pl(), name="lin", x=A(2, 3, 4), lora=lo(),
                                                                         scale=0.5),
                                              kinds={"P": "object", "name": "option", "lora": "object", "scale": "float"},
                                              nan_propagates={"x"}))

    def proj_b():
        y, cache = Lr.lora_proj_forward(Pl(), "lin", A(2, 3, 4), lo(), 0.5)
        return Call(Lr.lora_proj_backward, dict(G={}, P=Pl(), name="lin", dy=A(*y.shape, seed=5), cache=cache),
                    kinds={"G": "object", "P": "object", "name": "option", "cache": "object"}, nan_propagates={"dy"})
    add(p + "lora_proj_backward", proj_b)

    def Pm():
        P = {}
        At.mha_init(P, "attn", 4, 2, rng())
        P["attn.out.w"] = A(4, 4, seed=3)
        return P
    lm = lambda: {"attn.qkv.lora_A": A(2, 4, seed=4), "attn.qkv.lora_B": A(12, 2, seed=5)}  # noqa: E731
    add(p + "lora_mha_forward", lambda: Call(Lr.lora_mha_forward, dict(P=Pm(), pre="attn", x=A(2, 3, 4), lora=lm(),
                                                                       scale=0.5, heads=2),
                                             kinds={"P": "object", "pre": "option", "lora": "object", "scale": "float"},
                                             nan_propagates={"x"}, bad={"heads": {"not_dividing": 3}}))

    def mha_b():
        P = Pm()
        y, cache = Lr.lora_mha_forward(P, "attn", A(2, 3, 4), lm(), 0.5, heads=2)
        return Call(Lr.lora_mha_backward, dict(G={}, P=P, pre="attn", dout=A(*y.shape, seed=5), cache=cache),
                    kinds={"G": "object", "P": "object", "pre": "option", "cache": "object"}, nan_propagates={"dout"})
    add(p + "lora_mha_backward", mha_b)
    S = A(3, 3, seed=8)
    add(p + "lora_rrr_optimum", lambda: Call(Lr.lora_rrr_optimum, dict(W0=A(3, 3), Sigma1=S @ S.T + np.eye(3), alpha=0.8,
                                                                       sigma=0.6, r=2),
                                             kinds={"alpha": "float", "sigma": "float"}, bad={"r": {"too_big": 4}}))


_lora()


# ----------------------------------------------------------------------------- LoRA model
def _lora_model():
    import tempfile

    from refdiff.nn import lora_model as M

    p = "refdiff.nn.lora_model."
    params = lambda: {"a.w": A(3, 4), "a.b": A(4, seed=1), "c.w": A(5, 2, 3, 3, seed=2), "c.b": A(5, seed=3)}  # noqa: E731
    cfg = lambda: M.LoRAConfig(r=2, alpha=4.0)  # noqa: E731
    ad = lambda: M.lora_init(params(), cfg(), np.random.default_rng(0))  # noqa: E731
    pk = {"params": "object", "adapter": "object", "adapters": "object", "config": "object", "weights": "object",
          "grads": "object", "targets": "object"}
    add(p + "LoRAConfig", lambda: Call(M.LoRAConfig, dict(r=2, alpha=4.0), kinds={"alpha": "float", "targets": "object"},
                                       accept={"alpha": {"None"}, "targets": {"string"}},
                                       bad={"targets": {"empty": (), "int": (3,)}}))
    add(p + "LoRAAdapter", lambda: Call(M.LoRAAdapter, dict(weights=dict(ad().weights), config=cfg(), scaling=2.0),
                                        kinds={"weights": "object", "config": "object", "scaling": "float"}))
    add(p + "lora_target_layers", lambda: Call(M.lora_target_layers, dict(params=params(), targets=("a",)), kinds=pk,
                                               bad={"targets": {"no_match": ("zzz",)}}))
    add(p + "lora_init", lambda: Call(M.lora_init, dict(params=params(), config=cfg(), rng=np.random.default_rng(0)),
                                      kinds=pk))
    add(p + "lora_params", lambda: Call(M.lora_params, dict(params=params(), adapters=ad()), kinds=pk,
                                        ref={"weights": [0.5]}, bad={"weights": {"too_many": [1.0, 1.0]}}))
    add(p + "lora_grads", lambda: Call(M.lora_grads, dict(grads=params(), adapter=ad()), kinds=pk))
    add(p + "lora_merge", lambda: Call(M.lora_merge, dict(params=params(), adapter=ad()), kinds=pk))
    add(p + "lora_unmerge", lambda: Call(M.lora_unmerge, dict(params=params(), adapter=ad()), kinds=pk))
    add(p + "lora_fuse", lambda: Call(M.lora_fuse, dict(params=params(), adapter=ad()), kinds=pk))
    add(p + "lora_unfuse", lambda: Call(M.lora_unfuse, dict(params=M.lora_fuse(params(), ad())[0] if isinstance(
        M.lora_fuse(params(), ad()), tuple) else M.lora_fuse(params(), ad()), adapter=ad()), kinds=pk))
    add(p + "scale_layer", lambda: Call(M.scale_layer, dict(adapter=ad(), scale=0.5), kinds=pk))
    add(p + "unscale_layer", lambda: Call(M.unscale_layer, dict(adapter=M.scale_layer(ad(), 0.5)), kinds=pk,
                                          ref={"scale": 0.5}))
    add(p + "set_scale", lambda: Call(M.set_scale, dict(adapter=ad(), scale=0.5), kinds=pk))
    tmp = lambda: tempfile.mkdtemp(prefix="refdiff-fuzz-lora-")  # noqa: E731  (made when a recipe is built)
    add(p + "save_lora", lambda: Call(M.save_lora, dict(path=f"{tmp()}/a.npz", adapter=ad()), kinds=pk,
                                      skip={"path": "a file path: the catalogue's strings would write files"},
                                      bad={"base_config": {"string": "cfg"}}))

    def load():
        path = f"{tmp()}/b.npz"
        M.save_lora(path, ad())
        return Call(M.load_lora, dict(path=path, params=params()), kinds={**pk, "xp": "object"},
                    skip={"path": "a file path: a missing file raises FileNotFoundError (an OSError)"},
                    bad={"base_config": {"string": "cfg"}})
    add(p + "load_lora", load)


_lora_model()


# ------------------------------------------------------------------- ControlNet, T2I-Adapter
def _adapters():
    from refdiff.nn import controlnet as Cn, t2i_adapter as Ta, unet as U

    p, q = "refdiff.nn.controlnet.", "refdiff.nn.t2i_adapter."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    mk = lambda: U.UNet(U.UNetConfig(base_channels=4, channel_mults=(1, 2), groups=2, image_size=4,  # noqa: E731
                                     time_embed_dim=8, attention=False))
    base = lambda u: u.init_params(rng(), dtype="float64")  # noqa: E731
    ctrl = lambda: np.abs(A(2, 1, 4, 4)) / 4  # noqa: E731
    ok = {"unet": "object", "params": "object", "base_params": "object", "adapter_params": "object",
          "branches": "object", "controls": "object", "cache": "object", "dres": "object", "dfeats": "object",
          "adapter": "object", "extra": "object", "cond": "object", "timesteps": "object"}
    add(p + "ControlNet", lambda: Call(Cn.ControlNet, dict(unet=mk()), kinds={**ok, "hint_widths": "shape"},
                                       bad={"hint_widths": {"three": (4, 4, 4)}}))

    def cn():
        u = mk()
        net = Cn.ControlNet(u, hint_widths=(4, 4))
        bp = base(u)
        return u, net, bp, net.init_params(bp, rng())
    add(p + "ControlNet.copied_keys", lambda: Call(cn()[1].copied_keys, dict(base_params=cn()[2]), kinds=ok))
    add(p + "ControlNet.init_params", lambda: Call(cn()[1].init_params, dict(base_params=cn()[2], rng=rng()), kinds=ok))

    def fwd():
        u, net, bp, P = cn()
        return Call(net.forward, dict(params=P, x=A(2, 1, 4, 4), t=np.array([0.3, 0.7]), control=ctrl()), kinds=ok,
                    nan_propagates={"x", "t"}, accept={"t": {"int_array", "python_float"}})
    add(p + "ControlNet.forward", fwd)

    def bwd():
        u, net, bp, P = cn()
        res, cache = net.forward(P, A(2, 1, 4, 4), np.array([0.3, 0.7]), ctrl())
        return Call(net.backward, dict(params=P, cache=cache, dres={k: A(*v.shape, seed=3) for k, v in res.items()}),
                    kinds=ok)
    add(p + "ControlNet.backward", bwd)
    add(p + "check_control", lambda: Call(Cn.check_control, dict(control=ctrl(), n=2, channels=1, size=4),
                                          accept={"what": {"unknown", "empty_string"}},
                                          bad={"control": {"above_one": ctrl() + 2.0}}))
    add(p + "controlnet_scales", lambda: Call(Cn.controlnet_scales, dict(K=3), bad={"K": {"zero": 0}}))
    add(p + "control_keep", lambda: Call(Cn.control_keep, dict(num_steps=5, start=0.0, end=0.6),
                                         bad={"start": {"after_end": 0.8}}))

    def branches():
        u, net, bp, P = cn()
        return u, bp, [(net, P, ctrl(), Cn.controlnet_scales(net.num_residuals))]
    xt = lambda: dict(x=A(2, 1, 4, 4), t=np.array([0.3, 0.7]))  # noqa: E731
    add(p + "controlled_forward", lambda: (lambda u, bp, br: Call(Cn.controlled_forward, dict(
        unet=u, base_params=bp, branches=br, **xt()), kinds=ok, nan_propagates={"x", "t"},
        accept={"t": {"int_array", "python_float"}}))(*branches()))

    def cbwd():
        u, bp, br = branches()
        out, cache = Cn.controlled_forward(u, bp, br, **xt())
        return Call(Cn.controlled_backward, dict(unet=u, base_params=bp, branches=br, cache=cache,
                                                 dout=A(*out.shape, seed=4)), kinds=ok, nan_propagates={"dout"})
    add(p + "controlled_backward", cbwd)

    def cmodel():
        u, net, bp, P = cn()
        return Call(Cn.controlled_model, dict(unet=u, base_params=bp, controls=[(net, P, ctrl())]), kinds=ok,
                    ref={"guidance_scale": 2.0})
    add(p + "controlled_model", cmodel)

    def ta():
        u = mk()
        ad = Ta.T2IAdapter(u)
        return u, ad, base(u), ad.init_params(rng(), dtype="float64")
    add(q + "T2IAdapter", lambda: Call(Ta.T2IAdapter, dict(unet=mk()), kinds=ok))
    add(q + "T2IAdapter.init_params", lambda: Call(ta()[1].init_params, dict(rng=rng()), kinds={"xp": "object"},
                                                   bad={"dtype": {"f16": "float16"}}))
    add(q + "T2IAdapter.forward", lambda: (lambda u, ad, bp, P: Call(ad.forward, dict(params=P, control=ctrl()),
                                                                    kinds=ok))(*ta()))

    def tbwd():
        u, ad, bp, P = ta()
        feats, cache = ad.forward(P, ctrl())
        return Call(ad.backward, dict(params=P, cache=cache, dfeats={k: A(*v.shape, seed=5) for k, v in feats.items()}),
                    kinds=ok)
    add(q + "T2IAdapter.backward", tbwd)
    add(q + "adapter_keep", lambda: Call(Ta.adapter_keep, dict(num_steps=5, factor=0.5), bad={"factor": {"big": 1.5}}))
    add(q + "t2i_model", lambda: (lambda u, ad, bp, P: Call(Ta.t2i_model, dict(unet=u, base_params=bp, adapter=ad,
                                                                             adapter_params=P, control=ctrl()),
                                                           kinds=ok))(*ta()))


_adapters()


# ---------------------------------------------------------------------------------- text
def _text():
    from refdiff.nn import text as Tx

    p = "refdiff.nn.text."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    vocab = ("a", "b", "c")
    add(p + "Tokenizer", lambda: Call(Tx.Tokenizer, dict(vocab=vocab, context_len=4), kinds={"vocab": "object"},
                                      bad={"vocab": {"duplicate": ("a", "a")}}))
    add(p + "Tokenizer.decode", lambda: Call(Tx.Tokenizer(vocab, 4).decode, dict(ids=np.array([[1, 3, 4, 2]])),
                                             kinds={"ids": "int_array"}, accept={"ids": {"list"}}))
    cfg = lambda: Tx.TextEncoderConfig(vocab_size=6, context_len=4, dim=8, heads=2, layers=1, embed_dim=4)  # noqa: E731
    add(p + "TextEncoderConfig", lambda: Call(Tx.TextEncoderConfig, dict(vocab_size=6, context_len=4, dim=8, heads=2),
                                              bad={"heads": {"not_dividing": 3}}))
    add(p + "TextEncoder", lambda: Call(Tx.TextEncoder, dict(config=cfg()), kinds={"config": "object"}))
    enc = lambda: Tx.TextEncoder(cfg())  # noqa: E731
    add(p + "TextEncoder.init_params", lambda: Call(enc().init_params, dict(rng=rng()), bad={"dtype": {"f16": "float16"}}))
    ids = lambda: np.array([[1, 3, 4, 2], [1, 5, 2, 0]])  # noqa: E731
    mask = lambda: np.array([[True] * 4, [True, True, True, False]])  # noqa: E731
    add(p + "TextEncoder.forward", lambda: Call(enc().forward, dict(params=enc().init_params(rng()), ids=ids(), mask=mask()),
                                                kinds={"params": "object", "mask": "object"},
                                                bad={"mask": {"float": mask().astype(float), "short": mask()[:, :3]},
                                                     "ids": {"out_of_range": np.array([[1, 9, 4, 2], [1, 5, 2, 0]])}}))

    def tbwd():
        e = enc()
        P = e.init_params(rng())
        (s, emb), cache = e.forward(P, ids(), mask())
        return Call(e.backward, dict(params=P, cache=cache, dstates=A(*s.shape, seed=3), dembedding=A(*emb.shape, seed=4)),
                    kinds={"params": "object", "cache": "object"}, nan_propagates={"dstates", "dembedding"},
                    accept={"dstates": {"None"}, "dembedding": {"None"}})
    add(p + "TextEncoder.backward", tbwd)
    add(p + "ImageEncoder", lambda: Call(Tx.ImageEncoder, dict(in_channels=1, width=4, embed_dim=3)))
    ie = lambda: Tx.ImageEncoder(1, 4, 3)  # noqa: E731
    add(p + "ImageEncoder.init_params", lambda: Call(ie().init_params, dict(rng=rng()), bad={"dtype": {"f16": "float16"}}))
    add(p + "ImageEncoder.forward", lambda: Call(ie().forward, dict(params=ie().init_params(rng()), x=A(2, 1, 8, 8)),
                                                 kinds={"params": "object"}, nan_propagates={"x"}))

    def ibwd():
        e = ie()
        P = e.init_params(rng())
        out, cache = e.forward(P, A(2, 1, 8, 8))
        return Call(e.backward, dict(params=P, cache=cache, dout=A(*out.shape, seed=3)),
                    kinds={"params": "object", "cache": "object"}, nan_propagates={"dout"})
    add(p + "ImageEncoder.backward", ibwd)
    add(p + "contrastive_loss", lambda: Call(Tx.contrastive_loss, dict(img_emb=A(3, 4), txt_emb=A(3, 4, seed=1), log_temp=0.5),
                                             kinds={"log_temp": "float"}, nan_propagates={"img_emb", "txt_emb"},
                                             bad={"log_temp": {"huge": 800.0}}))
    add(p + "zero_shot_classify", lambda: Call(Tx.zero_shot_classify, dict(img_emb=A(3, 4), class_emb=A(5, 4, seed=1)),
                                               nan_propagates={"img_emb", "class_emb"}))


_text()


# --------------------------------------------------------------------------------- video
def _video():
    from refdiff.nn import attention as At, video as V

    p = "refdiff.nn.video."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    cfg = lambda: V.VideoConfig(frames=2, size=4, patch=2, width=8, heads=2, depth=1)  # noqa: E731
    P = lambda: V.video_init(rng(), cfg())  # noqa: E731
    ok = {"P": "object", "G": "object", "cfg": "object", "cache": "object", "pre": "option"}
    add(p + "VideoConfig", lambda: Call(V.VideoConfig, dict(frames=2, size=4, width=8, heads=2),
                                        bad={"patch": {"not_dividing": 3}}))
    add(p + "video_init", lambda: Call(V.video_init, dict(rng=rng(), cfg=cfg()), kinds=ok))
    add(p + "check_clip", lambda: Call(V.check_clip, dict(x=A(2, 2, 4, 4), cfg=cfg()), kinds=ok,
                                       accept={"name": {"unknown", "empty_string"}}, nan_propagates={"x"},
                                       bad={"x": {"wrong_frames": A(2, 3, 4, 4)}}))
    xt = lambda: dict(x=A(2, 2, 4, 4), t=np.array([0.3, 0.7]))  # noqa: E731
    add(p + "video_forward", lambda: Call(V.video_forward, dict(P=P(), cfg=cfg(), **xt()), kinds={**ok, "t": "array"},
                                          nan_propagates={"x", "t"}, accept={"t": {"int_array"}}))

    def vbwd():
        Pv = P()
        out, cache = V.video_forward(Pv, cfg=cfg(), **xt())
        return Call(V.video_backward, dict(dout=A(*out.shape, seed=3), cache=cache), kinds=ok, nan_propagates={"dout"})
    add(p + "video_backward", vbwd)
    add(p + "video_as_model", lambda: Call(V.video_as_model, dict(P=P(), cfg=cfg()), kinds=ok))

    def Pa():
        Q = {}
        At.mha_init(Q, "ta", 8, 2, rng())
        Q["ta.out.w"] = A(8, 8, seed=4)
        return Q
    add(p + "temporal_attention_forward",
        lambda: Call(V.temporal_attention_forward, dict(P=Pa(), pre="ta", z=A(4, 3, 8), frames=2, heads=2), kinds=ok,
                     nan_propagates={"z"}, bad={"frames": {"not_dividing": 3}, "heads": {"not_dividing": 3}}))

    def tbwd():
        Q = Pa()
        y, cache = V.temporal_attention_forward(Q, "ta", A(4, 3, 8), 2, heads=2)
        return Call(V.temporal_attention_backward, dict(G={}, P=Q, pre="ta", dy=A(*y.shape, seed=5), cache=cache),
                    kinds=ok, nan_propagates={"dy"})
    add(p + "temporal_attention_backward", tbwd)


_video()


def _video_unet():
    from refdiff.nn import video_unet as U, video_unet_blocks as B

    p, pb = "refdiff.nn.video_unet.", "refdiff.nn.video_unet_blocks."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    cfg = lambda: U.VideoUNetConfig(frames=2, size=4, width=4, mults=(1, 2), groups=2, heads=2,  # noqa: E731
                                    tattn_levels=(1,))
    P = lambda: U.vunet_init(rng(), cfg())  # noqa: E731
    ok = {"P": "object", "G": "object", "cfg": "object", "cache": "object", "pre": "option", "name": "option",
          "mode": "option"}
    add(p + "VideoUNetConfig", lambda: Call(U.VideoUNetConfig, dict(frames=2, size=4, width=4, mults=(1, 2), groups=2,
                                                                    heads=2, tattn_levels=(1,)),
                                            kinds={"mults": "object", "tattn_levels": "object", "conv": "option"},
                                            bad={"groups": {"not_dividing": 3}}))
    add(p + "vunet_init", lambda: Call(U.vunet_init, dict(rng=rng(), cfg=cfg()), kinds=ok))
    xt = lambda: dict(x=A(2, 2, 4, 4), t=np.array([0.3, 0.7]))  # noqa: E731
    add(p + "vunet_forward", lambda: Call(U.vunet_forward, dict(P=P(), cfg=cfg(), **xt()), kinds={**ok, "t": "array"},
                                          nan_propagates={"x", "t"}, accept={"t": {"int_array"}}))

    def ubwd():
        out, cache = U.vunet_forward(P(), cfg=cfg(), **xt())
        return Call(U.vunet_backward, dict(dout=A(*out.shape, seed=3), cache=cache), kinds=ok, nan_propagates={"dout"})
    add(p + "vunet_backward", ubwd)
    add(pb + "temporal_stack_forward", lambda: Call(B.temporal_stack_forward, dict(x=A(4, 3, 2, 2), frames=2),
                                                    nan_propagates={"x"}, bad={"frames": {"not_dividing": 3}}))

    def sbwd():
        S, cache = B.temporal_stack_forward(A(4, 3, 2, 2), 2)
        return Call(B.temporal_stack_backward, dict(dS=A(*S.shape, seed=1), cache=cache), kinds=ok,
                    nan_propagates={"dS"})
    add(pb + "temporal_stack_backward", sbwd)
    Pc = lambda: {"k.w": A(2, 9, 3, 3, seed=2), "k.b": A(2, seed=3)}  # noqa: E731
    add(pb + "conv3d_forward", lambda: Call(B.conv3d_forward, dict(P=Pc(), name="k", x=A(4, 3, 4, 4), frames=2),
                                            kinds=ok, nan_propagates={"x"}, bad={"frames": {"not_dividing": 3}}))

    def cbwd():
        y, cache = B.conv3d_forward(Pc(), "k", A(4, 3, 4, 4), 2)
        return Call(B.conv3d_backward, dict(G={}, name="k", dout=A(*y.shape, seed=4), cache=cache), kinds=ok,
                    nan_propagates={"dout"})
    add(pb + "conv3d_backward", cbwd)
    Pa = lambda: {k: v for k, v in P().items() if k.startswith("down1.tattn0.")}  # noqa: E731
    kw = lambda: dict(P=Pa(), pre="down1.tattn0", x=A(4, 8, 2, 2), frames=2, groups=2, heads=2)  # noqa: E731
    add(pb + "st_attention_forward", lambda: Call(B.st_attention_forward, kw(), kinds=ok, nan_propagates={"x"},
                                                  bad={"frames": {"not_dividing": 3}, "heads": {"not_dividing": 3},
                                                       "groups": {"not_dividing": 3}}))

    def abwd():
        y, cache = B.st_attention_forward(**kw())
        return Call(B.st_attention_backward, dict(G={}, P=Pa(), pre="down1.tattn0", dout=A(*y.shape, seed=5),
                                                  cache=cache), kinds=ok, nan_propagates={"dout"})
    add(pb + "st_attention_backward", abwd)


_video_unet()


# ----------------------------------------------------------------------------------- VAE
def _vae():
    from refdiff.nn import vae as Va

    p = "refdiff.nn.vae."
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    ok = {"params": "object", "G": "object", "cache": "object", "xp": "object", "config": "object"}
    mom = lambda: A(2, 4, 3, 3)  # noqa: E731
    add(p + "posterior_forward", lambda: Call(Va.posterior_forward, dict(moments=mom()), kinds={"eps": "array"},
                                              ref={"eps": A(2, 2, 3, 3, seed=1)}, nan_propagates={"moments", "eps"},
                                              accept={"moments": {"batch"}}))

    def pb():
        z, kl, cache = Va.posterior_forward(mom(), A(2, 2, 3, 3, seed=1))
        return Call(Va.posterior_backward, dict(dz=A(*z.shape, seed=2), dkl=A(2, seed=3), cache=cache), kinds=ok,
                    nan_propagates={"dz", "dkl"}, accept={"dz": {"None"}, "dkl": {"None"}})
    add(p + "posterior_backward", pb)
    add(p + "diag_gaussian_kl", lambda: Call(Va.diag_gaussian_kl, dict(mean=A(2, 3), logvar=A(2, 3, seed=1)),
                                             nan_propagates={"mean", "logvar"}))
    add(p + "diag_gaussian_nll", lambda: Call(Va.diag_gaussian_nll, dict(z=A(2, 3, seed=2), mean=A(2, 3),
                                                                         logvar=A(2, 3, seed=1)),
                                              nan_propagates={"z", "mean", "logvar"}))
    lk = lambda: dict(x=A(2, 3), x_hat=A(2, 3, seed=1), kl=np.abs(A(2, seed=2)), beta=0.5)  # noqa: E731
    add(p + "vae_loss_forward", lambda: Call(Va.vae_loss_forward, lk(), nan_propagates={"x", "x_hat", "kl"}))
    add(p + "vae_loss_backward", lambda: Call(Va.vae_loss_backward, dict(cache=Va.vae_loss_forward(**lk())[1]), kinds=ok))
    cfg = lambda: Va.KLAutoencoderConfig(in_channels=1, image_size=8, latent_channels=2, width=4)  # noqa: E731
    add(p + "KLAutoencoderConfig", lambda: Call(Va.KLAutoencoderConfig, dict(image_size=8, width=4),
                                                bad={"image_size": {"not_multiple_of_4": 6}}))
    add(p + "KLAutoencoderConfig.to_dict", lambda: Call(cfg().to_dict, {}))
    add(p + "KLAutoencoder", lambda: Call(Va.KLAutoencoder, dict(config=cfg()), kinds=ok))
    ae = lambda: Va.KLAutoencoder(cfg())  # noqa: E731
    P = lambda: ae().init_params(rng(), dtype="float64")  # noqa: E731
    add(p + "KLAutoencoder.init_params", lambda: Call(ae().init_params, dict(rng=rng()), kinds=ok,
                                                      bad={"dtype": {"f16": "float16"}}))
    x = lambda: A(2, 1, 8, 8)  # noqa: E731
    add(p + "KLAutoencoder.encode_forward", lambda: Call(ae().encode_forward, dict(params=P(), x=x()), kinds=ok,
                                                         nan_propagates={"x"}))
    add(p + "KLAutoencoder.decode_forward", lambda: Call(ae().decode_forward, dict(params=P(), z=A(2, 2, 2, 2)),
                                                         kinds=ok, nan_propagates={"z"}))
    add(p + "KLAutoencoder.encode", lambda: Call(ae().encode, dict(params=P(), x=x()), kinds={**ok, "rng": "rng"},
                                                 nan_propagates={"x"}))
    add(p + "KLAutoencoder.decode", lambda: Call(ae().decode, dict(params=P(), z=A(2, 2, 2, 2)), kinds=ok,
                                                 nan_propagates={"z"}))

    def eb():
        a = ae()
        Pp = P()
        m, cache = a.encode_forward(Pp, x())
        return Call(a.encode_backward, dict(G={}, dm=A(*m.shape, seed=3), cache=cache), kinds=ok, nan_propagates={"dm"})
    add(p + "KLAutoencoder.encode_backward", eb)

    def db():
        a = ae()
        out, cache = a.decode_forward(P(), A(2, 2, 2, 2))
        return Call(a.decode_backward, dict(G={}, dout=A(*out.shape, seed=3), cache=cache), kinds=ok,
                    nan_propagates={"dout"})
    add(p + "KLAutoencoder.decode_backward", db)
    add(p + "KLAutoencoder.loss", lambda: Call(ae().loss, dict(params=P(), x=x(), eps=A(2, 2, 2, 2, seed=4), beta=0.5),
                                               kinds=ok, nan_propagates={"x", "eps"}, accept={"eps": {"None"}}))
    S = A(4, 4, seed=5)
    pca = lambda: Va.PCAAutoencoder.from_moments(np.zeros(4), S @ S.T + np.eye(4), 2)  # noqa: E731
    add(p + "PCAAutoencoder", lambda: (lambda q: Call(Va.PCAAutoencoder, dict(
        mean=q.mean, components=q.components, eigenvalues=q.eigenvalues, discarded=q.discarded)))(pca()))
    add(p + "PCAAutoencoder.w2_squared_to_data", lambda: Call(pca().w2_squared_to_data, {}))
    add(p + "PCAAutoencoder.encode", lambda: Call(pca().encode, dict(x=A(3, 4)), nan_propagates={"x"}))
    add(p + "PCAAutoencoder.decode", lambda: Call(pca().decode, dict(z=A(3, 2)), nan_propagates={"z"}))
    add(p + "LinearVAE", lambda: Call(Va.LinearVAE, dict(dim=4, latent_dim=2), bad={"latent_dim": {"too_big": 5}}))
    add(p + "LinearVAE.init_params", lambda: Call(Va.LinearVAE(4, 2).init_params, dict(rng=rng()),
                                                  bad={"dtype": {"f16": "float16"}}))
    add(p + "LinearVAE.loss", lambda: Call(Va.LinearVAE(4, 2).loss, dict(params=Va.LinearVAE(4, 2).init_params(rng()),
                                                                         x=A(3, 4), beta=0.5, sigma_x2=1.0),
                                           kinds=ok, nan_propagates={"x"}))


_vae()
