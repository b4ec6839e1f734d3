"""The API reference covers every public name, and every public callable that takes
parameters documents them.

The names are enumerated from the code, exactly as docs/conf.py does when it generates the
API pages: every public module of the package (found by walking it) and the names in its
``__all__`` that it defines.  A callable (function, class, public method) that takes
parameters must have a docstring with a numpydoc ``Parameters`` section; one without
parameters must have a docstring.  The Sphinx build itself runs in CI with warnings as
errors (.ci/run); here, where Sphinx may not be installed, the enumeration is checked."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import refdiff

ROOT = Path(__file__).resolve().parent.parent

# Modules whose public callables do not all have their numpydoc sections yet (each entry:
# module prefix, reason).  The issues that restructured them in parallel have landed; an
# entry goes when the module's sections are written (the test then covers it).
RESTRUCTURED_IN_PARALLEL: dict = {}
# Single names without their sections yet, with the reason (none at present).
NAMES_RESTRUCTURED_IN_PARALLEL: dict = {}
SKIP_MODULES = {"refdiff.__main__", "refdiff._version"}
_SECTION = re.compile(r"^\s*Parameters\n\s*-{3,}\s*$", re.M)


def public_modules():
    names = ["refdiff"]
    for info in pkgutil.walk_packages(refdiff.__path__, prefix="refdiff."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) or info.name in SKIP_MODULES:
            continue
        names.append(info.name)
    return sorted(names)


def documented_callables():
    """(qualified name, object) for every public callable defined in a public module,
    with the public methods of public classes."""
    out = []
    for m in public_modules():
        mod = importlib.import_module(m)
        for n in getattr(mod, "__all__", []):
            obj = getattr(mod, n)
            if not callable(obj) or getattr(obj, "__module__", None) != m:
                continue
            out.append((f"{m}.{n}", obj))
            if inspect.isclass(obj):
                out += [(f"{m}.{n}.{k}", v) for k, v in vars(obj).items()
                        if not k.startswith("_") and inspect.isfunction(v)]
    return out


def _allowed(qualname):
    if qualname in NAMES_RESTRUCTURED_IN_PARALLEL:
        return True
    return any(qualname.startswith(p + ".") for p in RESTRUCTURED_IN_PARALLEL)


def _takes_parameters(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "cls") for p in sig.parameters)


def test_every_public_module_declares_all():
    """Every public module lists its public names in __all__ (the API pages come from it)."""
    missing = [m for m in public_modules() if not hasattr(importlib.import_module(m), "__all__")
               and m not in ("refdiff.samplers",)]  # samplers/__init__ re-exports its families
    assert not missing, f"modules without __all__: {missing}"


def test_every_public_callable_documents_its_parameters():
    undocumented = []
    for q, obj in documented_callables():
        if _allowed(q):
            continue
        doc = inspect.getdoc(obj) or ""
        if not doc.strip():
            undocumented.append(f"{q}: no docstring")
        elif _takes_parameters(obj) and not _SECTION.search(doc):
            undocumented.append(f"{q}: no 'Parameters' section")
    assert not undocumented, "document these (numpydoc sections):\n" + "\n".join(undocumented)


def test_the_check_can_fail(monkeypatch):
    """The section check recognises a numpydoc Parameters section and nothing else; the
    allow-list is empty, and an entry would exempt exactly its module prefix."""
    assert _SECTION.search("Text.\n\nParameters\n----------\nx : int\n    A number.")
    assert not _SECTION.search("Text with parameters x and y.")
    assert not _allowed("refdiff.samplers.ddim.ddim_step") and not _allowed("refdiff.nn.mlp.MLP")
    monkeypatch.setitem(RESTRUCTURED_IN_PARALLEL, "refdiff.nn", "example")
    assert _allowed("refdiff.nn.mlp.MLP") and not _allowed("refdiff.forward.q_sample")


def test_top_level_names_are_all_documented_somewhere():
    """Every name in refdiff.__all__ is defined in a public module whose page lists it (an
    alias, e.g. ``ddpm_log_variance = reverse_log_variance``, is documented under the name
    of the object it is)."""
    documented = documented_callables()
    homes = {q.rsplit(".", 1)[1] for q, _ in documented}
    for n in refdiff.__all__:
        obj = getattr(refdiff, n)
        if callable(obj):
            assert n in homes or any(obj is o for _, o in documented), f"refdiff.{n} is not in any public module's __all__"


def test_api_pages_are_generated_from_the_code(tmp_path, monkeypatch):
    """docs/conf.py writes one API page per public module (the same enumeration as here)."""
    spec = importlib.util.spec_from_file_location("docs_conf", ROOT / "docs" / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert conf.public_modules() == public_modules()
    page = conf._module_page("refdiff.forward")
    assert ".. autofunction:: refdiff.forward.q_sample" in page


@pytest.mark.parametrize("page", ["index.md", "migration.md", "verifying.md", "gallery.md", "toy_scale.md",
                                  "conventions.md", "getting_started.md", "math.md"])
def test_docs_pages_exist(page):
    assert (ROOT / "docs" / page).is_file()


def test_migration_table_covers_every_sampler():
    """The 'coming from diffusers / k-diffusion' page has a row for every method of
    refdiff.sample, with the diffusers scheduler or k-diffusion function and a switch."""
    from refdiff.samplers.loop import sampler_methods

    text = (ROOT / "docs" / "migration.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    for method in sampler_methods():
        assert any(f"`{method}`" in ln.split("|")[1] for ln in rows), f"no migration row for {method}"
