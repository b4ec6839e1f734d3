"""`refdiff edit`: img2img, inpaint (replace, repaint) and outpaint from a checkpoint and a
digit or an image file; errors are one line with exit status 2."""

import numpy as np
import pytest

from refdiff.cli import main

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("edit")
    assert main(["train", "--data", "digits8x8", "--model", "unet", "--conditional", "--steps", "2", "--batch-size",
                 "8", "--T", "50", "--out", str(d), "--no-progress"]) == 0
    return d


@pytest.mark.parametrize("argv", [
    ["img2img", "--digit", "3", "--strength", "0.5"],
    ["inpaint", "--digit", "3", "--region", "lower"],
    ["inpaint", "--digit", "3", "--scheme", "repaint", "--steps", "6", "--jump-length", "2", "--jump-n-sample", "2"],
    ["outpaint", "--digit", "3", "--shift", "4", "--class", "1", "--guidance-scale", "2"],
])
def test_edit_modes_write_npz_and_keep_the_known_pixels(unet_ckpt, tmp_path, argv, capsys):
    out = tmp_path / "e.npz"
    assert main(["edit", str(unet_ckpt), *argv, "--n", "3", "--out", str(out)]) == 0
    with np.load(out) as f:
        x, x_in = f["x"], f["x_in"]
    assert x.shape == (3, 1, 8, 8) and x_in.shape == (1, 8, 8)
    if argv[0] == "inpaint":
        np.testing.assert_array_equal(x[:, :, :4], np.repeat(np.clip(x_in, -1, 1)[None, :, :4], 3, 0))
    if argv[0] == "outpaint":
        np.testing.assert_array_equal(x[..., :4], np.repeat(np.clip(x_in, -1, 1)[None, ..., 4:], 3, 0))
    assert "wrote" in capsys.readouterr().out


def test_edit_from_an_image_file_and_errors(unet_ckpt, tmp_path, capsys):
    img = tmp_path / "img.npy"
    np.save(img, np.zeros((1, 8, 8)))
    assert main(["edit", str(unet_ckpt), "img2img", "--image", str(img), "--n", "2", "--out", str(tmp_path / "o.npz")]) == 0
    capsys.readouterr()
    np.save(tmp_path / "bad.npy", np.zeros((8, 8)))
    for argv, frag in ((["img2img", "--image", str(tmp_path / "bad.npy")], "expects"),
                       (["img2img", "--digit", "100000"], "out of range"),
                       (["img2img", "--digit", "1", "--strength", "1.5"], "must be a finite number in [0, 1], got 1.5"),
                       (["img2img", "--digit", "1", "--strength", "0.01"], "leaves no step"),
                       (["outpaint", "--digit", "1", "--shift", "9"], "--shift 9")):
        assert main(["edit", str(unet_ckpt), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and frag in err, err
