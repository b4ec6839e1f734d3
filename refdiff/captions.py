"""A captioned toy data set for text-to-image: 16x16 images composed from the 8x8
handwritten digits, with three attributes and captions from a small grammar.

Attributes of an image:

* ``digit`` 0..9 (which 8x8 digit image is drawn; a random one of that class);
* ``position`` 0..3: the quadrant it sits in, POSITIONS = top left, top right, bottom
  left, bottom right (the 8x8 digit fills that quadrant of the 16x16 canvas, background -1);
* ``weight`` 0..1: WEIGHTS = thin (the digit as scanned) or thick (a 2x2 max filter, i.e.
  grey-level dilation, which widens every stroke by one pixel).

Captions: PHRASINGS (several templates), with synonyms for the weight words, so the same
attributes have several captions ("a thick three in the top left", "three written bold at
the top left", ...).  VOCAB is every word the grammar can produce.

Held-out combinations: HELD_OUT lists one (digit, position, weight) triple per digit;
``split="train"`` never draws them, ``split="heldout"`` draws only them.  Every digit,
position and weight value is still seen in training, only not in those combinations: what
a model does on them measures whether it composes attributes.

Deterministic given the ``rng``; needs the 8x8 digits (scikit-learn, the ``examples``
extra).
"""

from __future__ import annotations

import numpy as np

from ._validate import check_array, check_choice, check_int
from .backend import check_rng
from .data import digits8x8

__all__ = ["DIGIT_WORDS", "POSITIONS", "WEIGHTS", "WEIGHT_SYNONYMS", "PHRASINGS", "VOCAB", "HELD_OUT",
           "caption", "compose", "captioned_digits", "all_combinations"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
WEIGHTS = ("thin", "thick")
WEIGHT_SYNONYMS = (("thin", "light"), ("thick", "bold"))
PHRASINGS = (
    "a {w} {d} in the {p}",
    "{d} written {w} at the {p}",
    "the {p} holds a {w} {d}",
)
HELD_OUT = tuple((d, (d * 3 + 1) % 4, (d // 2) % 2) for d in range(10))


def _vocab():
    words = set()
    for t in PHRASINGS:
        words.update(w for w in t.split() if not w.startswith("{"))
    for group in (DIGIT_WORDS, POSITIONS, sum(WEIGHT_SYNONYMS, ())):
        for phrase in group:
            words.update(phrase.split())
    return tuple(sorted(words))


VOCAB = _vocab()


def caption(digit: int, position: int, weight: int, phrasing: int = 0, synonym: int = 0) -> str:
    """The caption of one attribute triple in template ``phrasing`` with weight word
    ``synonym`` (0: thin/thick, 1: light/bold).

    Parameters
    ----------
    digit, position, weight : int
        the attributes
    phrasing : int
        index into PHRASINGS
    synonym : int
        0: thin/thick, 1: light/bold
    """
    for name, v in (("digit", digit), ("position", position), ("weight", weight), ("phrasing", phrasing),
                    ("synonym", synonym)):
        check_int(name, v, min=0)
    if not (0 <= digit < 10 and 0 <= position < 4 and 0 <= weight < 2):
        raise ValueError(f"caption: need digit in 0..9, position in 0..3, weight in 0..1, got "
                         f"{(digit, position, weight)}")
    if not (0 <= phrasing < len(PHRASINGS) and 0 <= synonym < 2):
        raise ValueError(f"caption: phrasing must be in 0..{len(PHRASINGS) - 1} and synonym in 0..1, got "
                         f"{phrasing}, {synonym}")
    return PHRASINGS[phrasing].format(w=WEIGHT_SYNONYMS[weight][synonym], d=DIGIT_WORDS[digit], p=POSITIONS[position])


def compose(img8, position: int, weight: int) -> np.ndarray:
    """The 16x16 image (1, 16, 16) of one 8x8 digit image (values in [-1, 1]) at a
    quadrant, thin or thick (2x2 max filter).

    Parameters
    ----------
    img8 : array (8, 8)
        one digit image in [-1, 1]
    position : int
        quadrant 0..3
    weight : int
        0 thin, 1 thick
    """
    check_array("img8", img8, finite=True)
    if img8.size != 64:
        raise ValueError(f"img8 must hold one 8x8 image (64 values), got shape {tuple(img8.shape)}")
    position, weight = check_int("position", position, min=0), check_int("weight", weight, min=0)
    if position > 3 or weight > 1:
        raise ValueError(f"compose: need position in 0..3 and weight in 0..1, got position = {position}, "
                         f"weight = {weight}")
    d = np.asarray(img8, dtype=np.float64).reshape(8, 8)
    if weight:
        p = np.pad(d, ((0, 1), (0, 1)), constant_values=-1.0)
        d = np.maximum.reduce([p[:8, :8], p[1:, :8], p[:8, 1:], p[1:, 1:]])
    out = np.full((16, 16), -1.0)
    r, c = 8 * (position // 2), 8 * (position % 2)
    out[r:r + 8, c:c + 8] = d
    return out[None]


def all_combinations(split: str = "train") -> list:
    """Attribute triples (digit, position, weight) of ``split`` ("train", "heldout", "all").

    Parameters
    ----------
    split : {'train', 'heldout', 'all'}
        which combinations
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    combos = [(d, p, w) for d in range(10) for p in range(4) for w in range(2)]
    if split == "all":
        return combos
    held = set(HELD_OUT)
    return [c for c in combos if (c in held) == (split == "heldout")]


def captioned_digits(n: int, rng: np.random.Generator, *, split: str = "train", source: str = "train",
                     digits=None) -> dict:
    """``n`` captioned 16x16 images: a dict with ``x`` (n, 1, 16, 16) float64 in [-1, 1],
    ``digit``, ``position``, ``weight`` (n,) int64 and ``captions`` (list of n str).

    split: which attribute combinations ("train": all but HELD_OUT, "heldout": only them,
    "all"); source: which split of the 8x8 digits the strokes come from ("train" or "test",
    so a classifier can be scored on unseen strokes); digits: restrict to these classes.

    Parameters
    ----------
    n : int
        number of images
    rng : numpy.random.Generator
        the only source of randomness
    split : {'train', 'heldout', 'all'}
        attribute combinations drawn
    source : {'train', 'test'}
        split of the 8x8 digits the strokes come from
    digits : iterable of int, optional
        restrict to these classes
    """
    n = check_int("n", n, min=1)
    rng = check_rng(rng)
    check_choice("source", source, ("train", "test"))
    x8, y8 = digits8x8(source)
    combos = all_combinations(split)
    if digits is not None:
        keep = {int(d) for d in digits}
        combos = [c for c in combos if c[0] in keep]
        if not combos:
            raise ValueError(f"digits={sorted(keep)} leave no combination in split {split!r}")
    pick = rng.integers(0, len(combos), n)
    by_class = [np.flatnonzero(y8 == d) for d in range(10)]
    x = np.empty((n, 1, 16, 16))
    attrs = np.asarray([combos[i] for i in pick], dtype=np.int64)  # (n, 3)
    caps = []
    for i, (d, p, w) in enumerate(attrs):
        img = x8[rng.choice(by_class[d])]
        x[i] = compose(img, int(p), int(w))
        caps.append(caption(int(d), int(p), int(w), int(rng.integers(len(PHRASINGS))), int(rng.integers(2))))
    return {"x": x, "digit": attrs[:, 0], "position": attrs[:, 1], "weight": attrs[:, 2], "captions": caps}
