"""Bad input to the layers and models of refdiff.nn is refused with a TypeError/ValueError
that names the argument (issue 19).  Each test was seen to fail before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from refdiff.nn import conv, gradcheck

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape)


def test_conv2d_forward_refuses_integer_input():
    """issue 19 finding 2: conv2d_forward with an integer x (or w, b) used to compute in
    integer arithmetic (the column matrix was built in x's integer dtype, truncating w's
    contribution); now a TypeError naming the argument."""
    x, w, b = _x(1, 2, 4, 4), _x(3, 2, 3, 3), _x(3)
    for name, bad in (("x", np.ones((1, 2, 4, 4), int)), ("w", np.ones((3, 2, 3, 3), int)),
                      ("b", np.ones(3, int)), ("x", np.ones((1, 2, 4, 4), bool)),
                      ("x", x.astype(np.complex128)), ("x", x.astype(np.float16))):
        args = {"x": x, "w": w, "b": b, name: bad}
        for fn in (conv.conv2d_forward, conv.conv2d_forward_naive):
            with pytest.raises(TypeError, match=rf"\b{name}\b must be a real floating array"):
                fn(**args)


def test_numerical_gradient_refuses_integer_point():
    """issue 19 finding 2: numerical_gradient at an integer x used to perturb a float64
    copy and hand f a point cast back to x's integer dtype (x + h rounds to x), returning a
    zero gradient; now a TypeError naming x."""
    def f(z):
        return float(np.sum(z ** 2))

    with pytest.raises(TypeError, match=r"\bx\b must be a real floating array"):
        gradcheck.numerical_gradient(f, np.arange(3))
    with pytest.raises(TypeError, match=r"\bx\b must be a real floating array"):
        gradcheck.check_gradient(f, np.arange(3), np.zeros(3))
    x = np.arange(3.0)
    assert np.allclose(gradcheck.numerical_gradient(f, x), 2 * x, atol=1e-8)  # the float path still works


@pytest.mark.parametrize("kw, name", [({"stride": 0}, "stride"), ({"stride": 1.5}, "stride"),
                                      ({"stride": True}, "stride"), ({"pad": -1}, "pad"),
                                      ({"pad": "same"}, "pad")])
def test_conv2d_forward_refuses_bad_stride_and_pad(kw, name):
    """stride and pad are integers (stride >= 1, pad >= 0); a float or bool used to reach
    a slice and fail inside NumPy."""
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        conv.conv2d_forward(_x(1, 2, 4, 4), _x(3, 2, 3, 3), _x(3), **kw)


def test_conv_backward_checks_dout_and_cache():
    """The backward passes refuse a dout that is not the forward output's shape (it used to
    be reshaped or broadcast into a wrong gradient) and a cache that is not the forward's."""
    x, w, b = _x(2, 2, 4, 4), _x(3, 2, 3, 3), _x(3)
    out, cache = conv.conv2d_forward(x, w, b)
    with pytest.raises(ValueError, match=r"\bdout\b must have the forward output's shape"):
        conv.conv2d_backward(out[:1], cache)
    with pytest.raises(TypeError, match=r"\bdout\b"):
        conv.conv2d_backward(out.astype(int), cache)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        conv.conv2d_backward(out, None)
    out, cache = conv.conv2d_forward_naive(x, w, b)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        conv.conv2d_backward_naive(out[:, :, :2], cache)
    out, cache = conv.conv_transpose2d_forward(x[:, :2], _x(2, 3, 3, 3), _x(3), stride=2, output_padding=1)
    conv.conv_transpose2d_backward(out, cache)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        conv.conv_transpose2d_backward(out[:, :, 1:], cache)  # 9 x 10: output_padding differs by axis
