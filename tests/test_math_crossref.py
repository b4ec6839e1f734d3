"""MATH.md, the code and the tests stay in step.

* every equation label ``\\tag{C.k}`` in MATH.md is unique and sits inside a ``$$`` block;
* every ``MATH.md (C.k)`` cited in refdiff/ exists in MATH.md;
* every equation of MATH.md is cited by code in refdiff/ and mentioned by a test.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABEL = r"\((\d+)\.(\d+)\)"
CITE = re.compile(r"MATH\.md\s*((?:\(\d+\.\d+\)(?:\s*(?:-|–|,|and|or|to)\s*)?)+)")


def _expand(text: str) -> set:
    """Labels in a citation list; ``(3.2)-(3.4)`` expands to 3.2, 3.3, 3.4."""
    out = set()
    for a, b, c, d in re.findall(LABEL + r"\s*[-–]\s*" + LABEL, text):
        if a == c:
            out |= {f"{a}.{k}" for k in range(int(b), int(d) + 1)}
    out |= {f"{a}.{b}" for a, b in re.findall(LABEL, text)}
    return out


def _defined():
    math = (ROOT / "MATH.md").read_text()
    return math, re.findall(r"\\tag\{(\d+\.\d+)\}", math)


def _cited_in_code():
    cited = {}
    for p in sorted((ROOT / "refdiff").rglob("*.py")):
        for m in CITE.finditer(p.read_text()):
            for lab in _expand(m.group(1)):
                cited.setdefault(lab, []).append(p.relative_to(ROOT).as_posix())
    return cited


def _mentioned_in_tests():
    seen = set()
    for p in sorted((ROOT / "tests").glob("test_*.py")):
        seen |= _expand(p.read_text())
    return seen


def test_math_md_is_built_from_chapters():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_math", ROOT / "math" / "build.py")
    if spec is None or not (ROOT / "math" / "build.py").exists():
        pytest.skip("no chapter sources")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "MATH.md").read_text() == mod.build(ROOT), "MATH.md is stale: run python math/build.py"


def test_labels_unique_and_inside_display_math():
    math, labels = _defined()
    dup = sorted({x for x in labels if labels.count(x) > 1})
    assert not dup, f"duplicate equation labels: {dup}"
    assert math.count("$$") % 2 == 0, "unbalanced $$ in MATH.md"
    blocks = re.findall(r"\$\$(.*?)\$\$", math, flags=re.S)
    in_blocks = [t for b in blocks for t in re.findall(r"\\tag\{(\d+\.\d+)\}", b)]
    assert sorted(in_blocks) == sorted(labels), "a \\tag outside a $$ block"


def test_every_citation_exists():
    _, labels = _defined()
    missing = {lab: files for lab, files in _cited_in_code().items() if lab not in labels}
    assert not missing, f"code cites equations that MATH.md does not define: {missing}"


def test_every_equation_cited_by_code():
    _, labels = _defined()
    cited = _cited_in_code()
    uncited = [lab for lab in labels if lab not in cited]
    assert not uncited, f"equations no function in refdiff/ cites: {uncited}"


def test_every_equation_checked_by_a_test():
    _, labels = _defined()
    seen = _mentioned_in_tests()
    unchecked = [lab for lab in labels if lab not in seen]
    assert not unchecked, f"equations no test mentions: {unchecked}"
