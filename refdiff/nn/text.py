"""A toy CLIP: a word-level tokenizer, a small transformer text encoder with a key-padding
mask, a conv image encoder, the symmetric InfoNCE loss with a learned temperature
(MATH.md (21.10)) and zero-shot attribute classification.  Hand-written backprop
throughout (layers of :mod:`refdiff.nn.norm`, :mod:`refdiff.nn.activations`,
:mod:`refdiff.nn.attention`).

Token ids follow the U-Net's ``tokens`` condition (:mod:`refdiff.nn.conditions`): id 0 is
the start token BOS (the empty prompt is BOS alone), 1 the end token EOS, 2 padding, and
the words of the vocabulary are 3, 4, ...  A prompt becomes ``BOS w_1 .. w_n EOS PAD ..``
with ``token_mask`` True on BOS, the words and EOS.  Out-of-vocabulary words are an error
that lists them (by choice: no UNK token, so a typo cannot silently become a different
prompt); a prompt longer than the context is an error naming both lengths.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validate import check_array
from ..backend import array_namespace, check_rng
from ._check import MAX_FIELD, check_cache, check_config, check_size, check_text_args
from .activations import gelu_backward, gelu_forward, silu_backward, silu_forward
from .attention import mha_backward, mha_forward, mha_init
from .blocks import acc, conv_b, conv_f, init_conv, init_linear
from .layers import embedding_backward, embedding_forward, linear_backward, linear_forward
from .norm import layernorm_backward, layernorm_forward

__all__ = ["BOS", "EOS", "PAD", "Tokenizer", "TextEncoderConfig", "TextEncoder", "ImageEncoder",
           "contrastive_loss", "zero_shot_classify"]

BOS, EOS, PAD = 0, 1, 2


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary (module docstring for the ids).

    Parameters
    ----------
    vocab : iterable of str
        The words: distinct, non-empty, without spaces; word i gets id 3 + i.
    context_len : int
        Tokens per prompt, >= 2 (BOS and EOS).

    Raises
    ------
    ValueError
        If the vocabulary is invalid or ``context_len < 2``.
    """

    def __init__(self, vocab, context_len: int):
        if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):  # issue 19
            raise TypeError(f"vocab must be a sequence of words (str), got {type(vocab).__name__}")
        check_size("context_len", context_len, 2, MAX_FIELD)
        words = list(vocab)
        if len(set(words)) != len(words) or not all(isinstance(w, str) and w and " " not in w for w in words):
            raise ValueError("Tokenizer: vocab must be distinct non-empty words without spaces")
        if context_len < 2:
            raise ValueError(f"Tokenizer: context_len must be >= 2 (BOS and EOS), got {context_len}")
        self.words, self.context_len = tuple(words), int(context_len)
        self.ids = {w: 3 + i for i, w in enumerate(words)}

    @property
    def vocab_size(self) -> int:
        return 3 + len(self.words)

    def __call__(self, prompts):
        """``(ids (N, context_len) int64, mask (N, context_len) bool)`` for a prompt or a
        list of prompts.  The empty prompt "" is BOS EOS."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = np.full((len(prompts), self.context_len), PAD, dtype=np.int64)
        for i, p in enumerate(prompts):
            words = p.lower().split()
            bad = sorted({w for w in words if w not in self.ids})
            if bad:
                raise ValueError(f"prompt {p!r}: out-of-vocabulary words {bad}; the vocabulary is {list(self.words)}")
            if len(words) + 2 > self.context_len:
                raise ValueError(f"prompt {p!r} has {len(words)} words; with BOS and EOS that is {len(words) + 2} "
                                 f"tokens, more than the context length {self.context_len}")
            ids[i, :len(words) + 2] = [BOS, *(self.ids[w] for w in words), EOS]
        return ids, ids != PAD

    def decode(self, ids) -> list:
        """The prompts of token ids: each row's words joined by spaces (BOS, EOS, PAD dropped).

        Parameters
        ----------
        ids : array_like of int, shape (N, L)
            Token ids.

        Returns
        -------
        list of str
            One prompt per row.
        """
        check_array("ids", ids if hasattr(ids, "shape") else np.asarray(ids), dtype="int", ndim=2)  # issue 19
        inv = {v: k for k, v in self.ids.items()}
        return [" ".join(inv[int(t)] for t in row if int(t) > PAD) for row in np.asarray(ids)]


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Sizes of a :class:`TextEncoder`.

    Parameters
    ----------
    vocab_size : int
        Number of token ids (``Tokenizer.vocab_size``).
    context_len : int
        Maximum number of tokens (rows of the position embedding).
    dim : int, default 32
        Width D of the token states.
    heads : int, default 2
        Attention heads; must divide ``dim``.
    layers : int, default 2
        Number of transformer layers.
    embed_dim : int, default 32
        Width E of the pooled embedding.
    position : bool, default True
        Add position embeddings (False: permutation-equivariant).

    Raises
    ------
    ValueError
        If ``heads`` does not divide ``dim``.
    """
    vocab_size: int
    context_len: int
    dim: int = 32
    heads: int = 2
    layers: int = 2
    embed_dim: int = 32
    position: bool = True  # token + position embeddings (False: permutation-equivariant)

    def __post_init__(self):
        check_config("TextEncoderConfig", self, ints={"vocab_size": 1, "context_len": 2, "dim": 1, "heads": 1,  # issue 19
                                                      "layers": 1, "embed_dim": 1}, bools=("position",))
        if self.dim % self.heads:
            raise ValueError(f"TextEncoderConfig: heads={self.heads} must divide dim={self.dim}")


def _lin3_f(P, name, x):  # token-wise linear on (N, L, D)
    N, L, D = x.shape
    xp = array_namespace(x)
    y, c = linear_forward(xp.reshape(x, (N * L, D)), P[name + ".w"], P[name + ".b"])
    return xp.reshape(y, (N, L, -1)), c


def _lin3_b(G, name, dy, c):
    N, L, D = dy.shape
    xp = array_namespace(dy)
    dx, dw, db = linear_backward(xp.reshape(dy, (N * L, D)), c)
    acc(G, name + ".w", dw)
    acc(G, name + ".b", db)
    return xp.reshape(dx, (N, L, -1))


def _ln_f(P, name, x):
    return layernorm_forward(x, P[name + ".gamma"], P[name + ".beta"])


def _ln_b(G, name, d, c):
    dx, dg, db = layernorm_backward(d, c)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx


class TextEncoder:
    """Pre-LN transformer over the tokens, MATH.md (13.23) for its attention:

        h = T[ids] (+ P[:L])                                     (N, L, D)
        per layer: h = h + mha(ln1(h); key_mask);  h = h + W2 gelu(W1 ln2(h))
        states = ln_f(h)                                          (N, L, D)
        embedding = states[EOS position] W_proj                   (N, E)

    ``forward(params, ids, mask) -> ((states, embedding), cache)``; ``backward(params,
    cache, dstates, dembedding) -> grads`` (either upstream gradient may be None).

    Parameters
    ----------
    config : TextEncoderConfig
        The sizes.
    """

    def __init__(self, config: TextEncoderConfig):
        if not isinstance(config, TextEncoderConfig):  # issue 19
            raise TypeError(f"config must be a TextEncoderConfig, got {type(config).__name__}")
        self.config = config

    def init_params(self, rng, *, dtype="float64") -> dict:
        """Initial parameters: token (and position) embeddings, per layer LayerNorms, attention
        (:func:`refdiff.nn.attention.mha_init`) and MLP, the final LayerNorm and the projection.

        Parameters
        ----------
        rng : numpy.random.Generator or int
            Source of the initial weights (checked by ``check_rng``).
        dtype : str, default "float64"
            NumPy dtype of the arrays.

        Returns
        -------
        dict of str to numpy.ndarray
            The parameters.
        """
        check_text_args(rng=rng, dtype=dtype)  # issue 19
        rng, c, P = check_rng(rng), self.config, {}
        P["token_emb"] = 0.5 * rng.standard_normal((c.vocab_size, c.dim))
        if c.position:
            P["pos_emb"] = 0.1 * rng.standard_normal((c.context_len, c.dim))
        for i in range(c.layers):
            for ln in ("ln1", "ln2"):
                P[f"l{i}.{ln}.gamma"], P[f"l{i}.{ln}.beta"] = np.ones(c.dim), np.zeros(c.dim)
            mha_init(P, f"l{i}.attn", c.dim, c.heads, rng)
            init_linear(P, f"l{i}.mlp1", c.dim, 4 * c.dim, rng)
            init_linear(P, f"l{i}.mlp2", 4 * c.dim, c.dim, rng)
            P[f"l{i}.mlp2.w"] *= 0.5
        P["lnf.gamma"], P["lnf.beta"] = np.ones(c.dim), np.zeros(c.dim)
        P["proj.w"] = rng.standard_normal((c.dim, c.embed_dim)) / math.sqrt(c.dim)
        return {k: np.asarray(v, dtype=dtype) for k, v in P.items()}

    def forward(self, params, ids, mask):
        """Token states and the pooled embedding (the class docstring's equations).

        Parameters
        ----------
        params : dict of str to array
            The parameters (:meth:`init_params`).
        ids : array of int, shape (N, L)
            Token ids, L <= ``context_len``.
        mask : bool array, shape (N, L)
            True on the kept tokens (BOS, words, EOS); the last kept token is pooled.

        Returns
        -------
        (states, embedding) : tuple of array
            States (N, L, D) and embedding (N, E).
        cache : tuple
            For :meth:`backward`.

        Raises
        ------
        ValueError
            If L exceeds the context length.
        """
        check_text_args(params=params, ids=ids, mask=mask)  # issue 19
        if ids.shape[0] and not 0 <= int(ids.min()) <= int(ids.max()) < self.config.vocab_size:
            raise ValueError(f"ids must lie in [0, {self.config.vocab_size - 1}] (vocab_size), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        xp = array_namespace(params["token_emb"])
        c = self.config
        N, L = ids.shape
        if L > c.context_len:
            raise ValueError(f"TextEncoder: {L} tokens exceed the context length {c.context_len}")
        h, c_e = embedding_forward(xp.reshape(ids, (N * L,)), params["token_emb"])
        h = xp.reshape(h, (N, L, c.dim))  # (N, L, D)
        if c.position:
            h = h + params["pos_emb"][None, :L]
        caches = []
        for i in range(c.layers):
            a, c1 = _ln_f(params, f"l{i}.ln1", h)
            a, c2 = mha_forward(params, f"l{i}.attn", a, heads=c.heads, key_mask=mask)
            h = h + a
            m, c3 = _ln_f(params, f"l{i}.ln2", h)
            m, c4 = _lin3_f(params, f"l{i}.mlp1", m)  # (N, L, 4D)
            m, c5 = gelu_forward(m)
            m, c6 = _lin3_f(params, f"l{i}.mlp2", m)
            h = h + m
            caches.append((c1, c2, c3, c4, c5, c6))
        s, c_f = _ln_f(params, "lnf", h)
        eos = xp.sum(xp.astype(mask, xp.int64), axis=1) - 1  # the last kept token
        onehot = xp.astype(xp.arange(L)[None, :] == eos[:, None], s.dtype)  # (N, L)
        pooled = xp.sum(onehot[:, :, None] * s, axis=1)  # (N, D)
        emb = pooled @ params["proj.w"]  # (N, E)
        return (s, emb), (c_e, caches, c_f, onehot, pooled, (N, L))

    def backward(self, params, cache, dstates=None, dembedding=None):
        """Gradients of ``<states, dstates> + <embedding, dembedding>`` with respect to every parameter.

        Parameters
        ----------
        params : dict of str to array
            The parameters used in :meth:`forward`.
        cache : tuple
            The cache of :meth:`forward`.
        dstates : array, shape (N, L, D), optional
            Gradient with respect to the states; None: zero.
        dembedding : array, shape (N, E), optional
            Gradient with respect to the embedding; None: zero.

        Returns
        -------
        dict of str to array
            Gradients, keyed like ``params``.
        """
        check_text_args(params=params, dstates=dstates, dembedding=dembedding)  # issue 19
        check_cache(cache, "TextEncoder.forward", 6)
        N, L = cache[5]
        for name, d, want in (("dstates", dstates, (N, L, self.config.dim)), ("dembedding", dembedding,
                                                                            (N, self.config.embed_dim))):
            if d is not None and tuple(d.shape) != want:
                raise ValueError(f"{name} must have the forward output's shape {want}, got shape {tuple(d.shape)}")
        c_e, caches, c_f, onehot, pooled, (N, L) = cache
        xp = array_namespace(onehot)
        G, D = {}, self.config.dim
        ds = xp.zeros((N, L, D), dtype=onehot.dtype) if dstates is None else dstates
        if dembedding is not None:
            G["proj.w"] = pooled.T @ dembedding
            ds = ds + onehot[:, :, None] * (dembedding @ params["proj.w"].T)[:, None, :]
        else:
            G["proj.w"] = xp.zeros_like(params["proj.w"])
        dh = _ln_b(G, "lnf", ds, c_f)
        for i in reversed(range(self.config.layers)):
            c1, c2, c3, c4, c5, c6 = caches[i]
            dm = _lin3_b(G, f"l{i}.mlp2", dh, c6)
            dm = _lin3_b(G, f"l{i}.mlp1", gelu_backward(dm, c5), c4)
            dh = dh + _ln_b(G, f"l{i}.ln2", dm, c3)
            da, _ = mha_backward(G, params, f"l{i}.attn", dh, c2)
            dh = dh + _ln_b(G, f"l{i}.ln1", da, c1)
        if self.config.position:
            G["pos_emb"] = xp.concat([xp.sum(dh, axis=0), xp.zeros_like(params["pos_emb"][L:])], axis=0)
        G["token_emb"] = embedding_backward(xp.reshape(dh, (N * L, D)), c_e)
        return {k: G[k] for k in params}


class ImageEncoder:
    """conv3x3 -> silu -> [conv3x3 stride 2 -> silu] x 2 -> mean over pixels -> linear.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the images.
    width : int, default 32
        Channels of the three convolutions.
    embed_dim : int, default 32
        Width of the output embedding.
    """

    LAYERS = (("c0", 1), ("c1", 2), ("c2", 2))

    def __init__(self, in_channels=1, width=32, embed_dim=32):
        for name, v in (("in_channels", in_channels), ("width", width), ("embed_dim", embed_dim)):  # issue 19
            check_size(name, v, 1, MAX_FIELD)
        self.in_channels, self.width, self.embed_dim = in_channels, width, embed_dim

    def init_params(self, rng, *, dtype="float64"):
        """Initial parameters of the three convolutions and the projection.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the initial weights.
        dtype : str, default "float64"
            NumPy dtype of the arrays.

        Returns
        -------
        dict of str to numpy.ndarray
            The parameters.
        """
        check_text_args(rng=rng, dtype=dtype)  # issue 19
        P = {}
        init_conv(P, "c0", self.in_channels, self.width, 3, rng)
        init_conv(P, "c1", self.width, self.width, 3, rng)
        init_conv(P, "c2", self.width, self.width, 3, rng)
        init_linear(P, "proj", self.width, self.embed_dim, rng)
        return {k: np.asarray(v, dtype=dtype) for k, v in P.items()}

    def forward(self, params, x):
        """Embeddings of images.

        Parameters
        ----------
        params : dict of str to array
            The parameters (:meth:`init_params`).
        x : array, shape (N, in_channels, H, W)
            The images.

        Returns
        -------
        out : array, shape (N, embed_dim)
            The embeddings.
        cache : tuple
            For :meth:`backward`.
        """
        check_text_args(params=params)  # issue 19
        check_array("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels (in_channels), got shape {tuple(x.shape)}")
        xp = array_namespace(x)
        h, caches = x, []
        for name, stride in self.LAYERS:
            h, cc = conv_f(params, name, h, stride)
            h, cs = silu_forward(h)
            caches.append((cc, cs))
        pooled = xp.mean(h, axis=(2, 3))  # (N, W)
        out, cp = linear_forward(pooled, params["proj.w"], params["proj.b"])
        return out, (caches, cp, h.shape)

    def backward(self, params, cache, dout, *, return_dx=False):
        """Parameter gradients of ``<out, dout>``; with ``return_dx`` also the gradient
        with respect to the images: ``(grads, dx)``.

        Parameters
        ----------
        params : dict of str to array
            The parameters used in :meth:`forward`.
        cache : tuple
            The cache of :meth:`forward`.
        dout : array, shape (N, embed_dim)
            Gradient with respect to the embeddings.
        return_dx : bool, default False
            Also return the gradient with respect to the images.

        Returns
        -------
        grads : dict of str to array
            Parameter gradients.
        dx : array, shape (N, in_channels, H, W)
            Only with ``return_dx``: the gradient with respect to the images.
        """
        check_text_args(params=params, dout=dout, return_dx=return_dx)  # issue 19
        check_cache(cache, "ImageEncoder.forward", 3)
        xp = array_namespace(dout)
        caches, cp, shape = cache
        G = {}
        dp, G["proj.w"], G["proj.b"] = linear_backward(dout, cp)
        dh = xp.broadcast_to(dp[:, :, None, None] / (shape[2] * shape[3]), shape)
        for (name, _), (cc, cs) in zip(reversed(self.LAYERS), reversed(caches)):
            dh = conv_b(G, name, silu_backward(dh, cs), cc)
        return (G, dh) if return_dx else G


def _normalize(xp, a):
    n = xp.sqrt(xp.sum(a * a, axis=1, keepdims=True))
    return a / n, n


def _normalize_backward(xp, d, u, n):
    return (d - u * xp.sum(d * u, axis=1, keepdims=True)) / n


def contrastive_loss(img_emb, txt_emb, log_temp):
    """Symmetric InfoNCE with a learned temperature, MATH.md (21.10): embeddings are
    normalised to unit length, logits = e^log_temp u v^T, the matching pair is the label
    in both directions.  Returns ``(loss, (dimg, dtxt, dlog_temp))``.

    Parameters
    ----------
    img_emb : array, shape (B, E)
        Image embeddings.
    txt_emb : array, shape (B, E)
        Text embeddings; row i matches image i.
    log_temp : float
        Log of the temperature multiplier.

    Returns
    -------
    loss : float
        The mean of the two cross-entropies.
    grads : tuple
        ``(dimg (B, E), dtxt (B, E), dlog_temp float)``.

    Raises
    ------
    ValueError
        If the numbers of images and texts differ.
    """
    check_text_args(img_emb=img_emb, txt_emb=txt_emb, log_temp=log_temp)  # issue 19
    xp = array_namespace(img_emb, txt_emb)
    B = img_emb.shape[0]
    if txt_emb.shape[0] != B:
        raise ValueError(f"contrastive_loss: {B} images but {txt_emb.shape[0]} texts")
    u, nu = _normalize(xp, img_emb)
    v, nv = _normalize(xp, txt_emb)
    t = math.exp(float(log_temp))
    S = u @ v.T  # (B, B) cosine similarities
    Lg = t * S
    lr = Lg - xp.max(Lg, axis=1, keepdims=True)
    lc = Lg - xp.max(Lg, axis=0, keepdims=True)
    Pr = xp.exp(lr) / xp.sum(xp.exp(lr), axis=1, keepdims=True)
    Pc = xp.exp(lc) / xp.sum(xp.exp(lc), axis=0, keepdims=True)
    I = xp.eye(B, dtype=Lg.dtype)
    loss = -(xp.sum(xp.log(xp.sum(Pr * I, axis=1))) + xp.sum(xp.log(xp.sum(Pc * I, axis=0)))) / (2 * B)
    dL = (Pr + Pc - 2 * I) / (2 * B)  # (21.10)
    dS = t * dL
    dlt = float(xp.sum(dL * Lg))
    du, dv = dS @ v, dS.T @ u
    return float(loss), (_normalize_backward(xp, du, u, nu), _normalize_backward(xp, dv, v, nv), dlt)


def zero_shot_classify(img_emb, class_emb):
    """Index of the most similar (cosine) class text embedding for every image.

    Parameters
    ----------
    img_emb : array, shape (N, E)
        Image embeddings.
    class_emb : array, shape (K, E)
        One text embedding per class.

    Returns
    -------
    array of int, shape (N,)
        The class index of every image.
    """
    check_text_args(img_emb=img_emb, class_emb=class_emb)  # issue 19
    if img_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"img_emb {tuple(img_emb.shape)} and class_emb {tuple(class_emb.shape)} need one width")
    xp = array_namespace(img_emb)
    u, _ = _normalize(xp, img_emb)
    v, _ = _normalize(xp, class_emb)
    return xp.argmax(u @ v.T, axis=1)
