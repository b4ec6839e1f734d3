"""Sphinx configuration of refdiff's documentation (build: ``python3 -m sphinx -W -b html
docs docs/_build/html``; the ``docs`` extra installs Sphinx and MyST).

The API reference is generated at build time from the code: every public module of the
``refdiff`` package (found by walking the package, so a new module appears without editing
anything here) gets a page listing the names in its ``__all__``, and the ``refdiff`` page
lists every top-level name of ``refdiff.__all__`` with the module that defines it.
``tests/test_docs.py`` fails on a public callable whose docstring lacks its sections.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import refdiff  # noqa: E402

project = "refdiff"
author = "refdiff authors"
release = version = refdiff.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "api/_template.txt", "figures/*.md"]  # result tables the examples write (shown in the README)
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings state types in their Parameters sections
html_theme = "alabaster"
html_static_path = []
suppress_warnings = ["myst.xref_missing"]  # links into the repository (examples/, refdiff/) are GitHub links

# Modules whose own pages are not API (the command line has its own --help; __main__ runs it).
SKIP = {"refdiff.__main__", "refdiff._version"}


def public_modules():
    """Every public module of the package, in import-path order (private ``_x`` excluded)."""
    names = ["refdiff"]
    for info in pkgutil.walk_packages(refdiff.__path__, prefix="refdiff."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) or info.name in SKIP:
            continue
        names.append(info.name)
    return sorted(names)


def public_names(module) -> list:
    """The module's ``__all__`` (every public module of refdiff declares one)."""
    return list(getattr(module, "__all__", []))


def _module_page(name: str) -> str:
    mod = importlib.import_module(name)
    title = f"``{name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", ""]
    for n in public_names(mod):
        obj = getattr(mod, n)
        if inspect.isclass(obj):
            # A class re-exported from another module is indexed on its home module's page
            # only: two re-exports (refdiff.X, refdiff.elbo.X) would be two descriptions of
            # the same canonical name, which Sphinx reports as duplicates.
            again = ["   :no-index:"] if getattr(obj, "__module__", name) != name else []
            lines += [f".. autoclass:: {name}.{n}", "   :members:", *again, ""]
        elif callable(obj):
            # likewise a re-exported function (refdiff.editing.img2img, the function, also names
            # the module refdiff.editing.img2img): indexed on its home module's page only
            again = ["   :no-index:"] if getattr(obj, "__module__", name) != name else []
            lines += [f".. autofunction:: {name}.{n}", *again, ""]
        else:
            lines += [f".. autodata:: {name}.{n}", "   :no-value:", ""]
    return "\n".join(lines)


def _top_level_page() -> str:
    lines = ["Top-level names (``refdiff.*``)", "=" * 31, "",
             "Every name in ``refdiff.__all__``, with the module that defines it (its documentation is on",
             "that module's page).", "", ".. list-table::", "   :header-rows: 1", "", "   * - name", "     - defined in"]
    for n in refdiff.__all__:
        obj = getattr(refdiff, n)
        home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or callable(obj)) else None
        home = home if home and home.startswith("refdiff") else "refdiff"
        lines += [f"   * - ``refdiff.{n}``", f"     - :mod:`{home}`"]
    return "\n".join(lines) + "\n"


def generate_api(app=None):
    out = Path(__file__).resolve().parent / "api"
    out.mkdir(exist_ok=True)
    mods = public_modules()
    pages = {"refdiff_toplevel": _top_level_page()}
    for m in mods:
        pages[m] = _module_page(m)
    for stale in out.glob("*.rst"):
        if stale.stem not in pages:
            stale.unlink()
    for stem, text in pages.items():
        path = out / f"{stem}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    index = ["API reference", "=============", "",
             "Generated from the docstrings: one page per public module of the package (``refdiff.nn``,",
             "``refdiff.samplers`` and every module in them), so a new module or a new name in a module's",
             "``__all__`` appears here without editing the documentation.", "",
             ".. toctree::", "   :maxdepth: 1", "", "   refdiff_toplevel"] + [f"   {m}" for m in mods]
    (out / "index.rst").write_text("\n".join(index) + "\n")


def docstring_as_text(app, what, name, obj, options, lines):
    """Show each docstring as written, in a literal block.

    refdiff's docstrings are plain text read next to the code: ASCII mathematics
    (``|x|``, ``a * b``, ``x_0``), numpydoc-style sections (Parameters, Returns, Raises)
    and ``MATH.md (C.k)`` references.  Parsed as reStructuredText, the mathematics would be
    misread as markup, so the reference shows the text verbatim (the signature above it is
    rendered by autodoc)."""
    if not any(line.strip() for line in lines):
        return
    text = [line.rstrip() for line in lines]
    lines[:] = ["::", ""] + [("    " + line) if line else "" for line in text] + [""]


def setup(app):
    app.connect("builder-inited", generate_api)
    app.connect("autodoc-process-docstring", docstring_as_text)
