"""The U-Net's tuned loop checks its parameters once (issue 21, the fixed per-step cost):
a forward with every layer's argument checks, then, while the very same parameter arrays
come back (as FlatAdam's in-place views do every step), the unchecked twins of the layers
(``blocks._UNCHECKED``, ``fast._conv_f`` ...), which run the same operations.  These tests
show the two paths give the same bits, that the unchecked path is really taken, and that
anything else (new arrays, a changed shape, swapped keys, another dtype) goes back through
the checked path with its error messages."""

import numpy as np
import pytest

from refdiff.nn import UNet, UNetConfig, blocks, fast
from refdiff.nn.optim import FlatAdam, adam_init


@pytest.fixture
def conv_checks(monkeypatch):
    """Count the calls of the public (checked) convolution from the blocks."""
    calls = []
    real = blocks.conv2d_forward

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(blocks, "conv2d_forward", counting)
    return calls


def _setup(dtype, n=3, seed=0, **cfg):
    model = UNet(UNetConfig(**cfg))
    rng = np.random.default_rng(seed)
    P = model.init_params(rng, dtype=dtype)
    P["out.conv.w"] = (0.05 * rng.standard_normal(P["out.conv.w"].shape)).astype(dtype)
    x = rng.standard_normal((n, 1, 8, 8)).astype(dtype)
    t = rng.integers(0, 1000, n)
    return model, P, x, t, rng


@pytest.mark.parametrize("layout", ["hwnc", "chwn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unchecked_steps_equal_checked_steps_bit_for_bit(dtype, layout, conv_checks):
    """Four training steps (forward, backward, in-place FlatAdam) of one model, whose third
    and fourth steps take the unchecked loop (no convolution check is called), equal the same
    steps of a second model forced through the checked loop every time, bit for bit: output,
    input gradient and every parameter gradient and updated parameter."""
    old = fast.set_layout(layout)
    try:
        runs = []
        for force_checked in (False, True):
            model, P, x, t, rng = _setup(dtype, num_classes=3)
            y = rng.integers(0, 3, x.shape[0])
            st = {"P": P, "S": adam_init(P)}
            flat = FlatAdam(inplace=True)
            outs, counts = [], []
            for _ in range(4):
                if force_checked:
                    model.__dict__.pop("_checked_params", None)
                conv_checks.clear()
                out, cache = model.forward(st["P"], x, t, {"class": y})
                G, dx = model.backward(st["P"], cache, out - x)
                counts.append(len(conv_checks))
                outs.append((out.copy(), dx.copy(), {k: g.copy() for k, g in G.items()}))
                st["P"], st["S"] = flat.update(st["P"], G, st["S"], lr=1e-3)
            runs.append((outs, counts, {k: v.copy() for k, v in st["P"].items()}))
        (fast_outs, fast_counts, fast_P), (ref_outs, ref_counts, ref_P) = runs
        # steps 1 and 2 checked (step 2 sees FlatAdam's new views for the first time), then none
        assert fast_counts[0] == fast_counts[1] > 10 and fast_counts[2:] == [0, 0]
        assert all(c == fast_counts[0] for c in ref_counts)
        for (o1, d1, g1), (o2, d2, g2) in zip(fast_outs, ref_outs):
            assert np.array_equal(o1, o2) and np.array_equal(d1, d2)
            assert g1.keys() == g2.keys() and all(np.array_equal(g1[k], g2[k]) for k in g1)
        assert all(np.array_equal(fast_P[k], ref_P[k]) for k in fast_P)
    finally:
        fast.set_layout(old)


def test_changed_parameters_are_checked_again(conv_checks):
    """After a checked forward, new arrays, a parameter of the wrong shape, swapped keys or
    inputs of another dtype go through the checked loop: the layer's own error message for a
    wrong shape, and the checks are called again."""
    model, P, x, t, _ = _setup("float32")
    model.forward(P, x, t)
    conv_checks.clear()
    model.forward(P, x, t)
    assert not conv_checks  # the same arrays: unchecked
    bad = dict(P)
    bad["down0.res0.conv1.w"] = np.zeros((32, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match="channels"):
        model.forward(bad, x, t)
    swapped = dict(P)
    swapped["down0.res0.conv1.w"], swapped["down0.res0.conv2.w"] = P["down0.res0.conv2.w"], P["down0.res0.conv1.w"]
    swapped = {k: swapped[k] for k in P}  # same keys and order, two values exchanged
    conv_checks.clear()
    out_s, _ = model.forward(swapped, x, t)
    assert conv_checks
    copies = {k: v.copy() for k, v in P.items()}
    conv_checks.clear()
    model.forward(copies, x, t)
    assert conv_checks  # new arrays (equal values): checked once more
    conv_checks.clear()
    model.forward(copies, x.astype(np.float64), t)
    assert conv_checks  # another dtype of x: checked
    reordered = dict(reversed(list(copies.items())))
    conv_checks.clear()
    model.forward(reordered, x, t)
    assert conv_checks  # the same arrays under another key order: checked


def test_backward_checks_dout_against_the_forward():
    """The unchecked backward still checks dout's batch against the forward's output (the
    first layer of the backward stays checked)."""
    model, P, x, t, _ = _setup("float32", n=4)
    model.forward(P, x, t)
    out, cache = model.forward(P, x, t)  # unchecked
    with pytest.raises(ValueError, match="dout"):
        model.backward(P, cache, out[:3])
