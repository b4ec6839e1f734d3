"""Where matplotlib's font cache goes when refdiff draws (issue 19 finding 9): refdiff
documents it (README, "The command line") and leaves the choice to matplotlib, so the
documented knob, MPLCONFIGDIR, keeps every file out of the user's home."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_the_matplotlib_cache():
    """issue 19 finding 9: the README says that the drawing commands let matplotlib write its
    font cache (and where), and names MPLCONFIGDIR to direct it."""
    text = (ROOT / "README.md").read_text()
    assert "font cache" in text and "MPLCONFIGDIR" in text and "~/.cache/matplotlib" in text


def test_drawing_writes_nothing_in_home_with_mplconfigdir(tmp_path):
    """issue 19 finding 9: with HOME a fresh folder and MPLCONFIGDIR set, drawing through
    refdiff (refdiff.cli._save_plot, what sample and edit call) creates matplotlib's cache
    in MPLCONFIGDIR and nothing at all under HOME."""
    home, mpl, out = tmp_path / "home", tmp_path / "mpl", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), MPLCONFIGDIR=str(mpl), PYTHONPATH=str(ROOT))
    code = ("import numpy as np; from refdiff.cli import _save_plot; "
            f"_save_plot(np.zeros((5, 2)), {str(out / 'p.png')!r}, 't')")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert (out / "p.png").is_file()
    assert list(home.rglob("*")) == []
    assert any(mpl.iterdir())
