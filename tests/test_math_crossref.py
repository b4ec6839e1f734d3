"""MATH.md, the code and the tests stay in step, and this file cannot satisfy itself.

What counts as a mention:

* in tests/, only the docstring of a test module, of a ``Test*`` class or of a ``test*``
  function (methods included) counts: comments, code (``math.sqrt(12.5)``), helper
  functions and this file itself never do;
* in refdiff/, only string literals (docstrings, and docstring fragments that a module
  appends to ``__doc__``) count, never comments or code; there a range after ``MATH.md``
  cites each equation it spans (a function may implement (8.1)-(8.4) at once);
* a mention is the text ``MATH.md`` followed by one label written out, or by a list of
  labels written out and joined by commas, "and" or "or".  A range such as
  ``(3.2)-(3.4)`` names no equation: the equations it spans are listed by
  :func:`test_no_equation_is_covered_only_through_a_range`.

What is checked: every label is unique and inside a display block; every equation is cited
by refdiff/ and named by a test; every equation a test names is cited by refdiff/ (a test
cannot check an equation that no function implements).
"""

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
LABEL = r"\((\d+\.\d+)\)"
JOIN = r"\s*(?:,\s*and|,\s*or|,|and|or)\s*"
RANGE = r"\s*(?:-|–|—|to)\s*"
MENTION = re.compile(r"MATH\.md\s*" + LABEL + r"(?:(?:" + JOIN + "|" + RANGE + r")" + LABEL + r")*")
TOKEN = re.compile(LABEL + r"|(-|–|—|\bto\b)")


def parse_mentions(text: str):
    """(written, ranged): labels written out after ``MATH.md``, and labels only spanned
    by a range (the endpoints of a range included: ``(3.2)-(3.4)`` writes none)."""
    written, ranged = set(), set()
    for m in MENTION.finditer(text):
        toks = [t.group(1) or "-" for t in TOKEN.finditer(m.group(0))]
        i = 0
        while i < len(toks):
            if i + 2 < len(toks) and toks[i + 1] == "-":
                (ca, ka), (cb, kb) = toks[i].split("."), toks[i + 2].split(".")
                span = range(int(ka), int(kb) + 1) if ca == cb else ()
                ranged |= {toks[i], toks[i + 2]} | {f"{ca}.{k}" for k in span}
                i += 3
            else:
                written.add(toks[i])
                i += 1
    return written, ranged - written


def _test_docstrings(path: Path):
    """(name, docstring) of the module, its Test* classes and test* functions."""
    tree = ast.parse(path.read_text())
    out = [("<module>", ast.get_docstring(tree) or "")]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            prefix = "Test" if isinstance(node, ast.ClassDef) else "test"
            if node.name.startswith(prefix):
                out.append((node.name, ast.get_docstring(node) or ""))
    return out


def _test_files():
    return [p for p in sorted((ROOT / "tests").glob("test_*.py")) if p.resolve() != THIS]


def mentions_in_tests(files=None):
    """label -> ["file::name", ...] written out; and label -> [...] through ranges only."""
    written, ranged = {}, {}
    for p in _test_files() if files is None else files:
        for name, doc in _test_docstrings(p):
            w, r = parse_mentions(doc)
            for lab in w:
                written.setdefault(lab, []).append(f"{p.name}::{name}")
            for lab in r:
                ranged.setdefault(lab, []).append(f"{p.name}::{name}")
    return written, ranged


def cited_in_code():
    """label -> files of refdiff/ whose string literals cite it (comments never count)."""
    cited = {}
    for p in sorted((ROOT / "refdiff").rglob("*.py")):
        text = " ".join(
            n.value for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        )
        written, ranged = parse_mentions(text)
        for lab in written | ranged:
            cited.setdefault(lab, []).append(p.relative_to(ROOT).as_posix())
    return cited


def defined_labels():
    math = (ROOT / "MATH.md").read_text()
    return math, re.findall(r"\\tag\{(\d+\.\d+)\}", math)


def test_parser_counts_only_written_labels():
    """The rule itself, on hand-made text: a range names nothing, code-like text names
    nothing, a list names each of its labels."""
    assert parse_mentions("MATH.md (3.2)-(3.4)") == (set(), {"3.2", "3.3", "3.4"})
    assert parse_mentions("MATH.md (3.2), (3.3) and (3.5)")[0] == {"3.2", "3.3", "3.5"}
    assert parse_mentions("math.sqrt(12.5) and (3.3)") == (set(), set())
    assert parse_mentions("MATH.md (1.2) to (1.3), (2.1)") == ({"2.1"}, {"1.2", "1.3"})


def test_this_file_and_comments_do_not_count(tmp_path):
    """A test file whose only mentions are in comments, code, a helper's docstring and a
    range covers nothing."""
    f = tmp_path / "test_fake.py"
    f.write_text(
        '"""MATH.md (1.1)-(1.3)."""\n'
        "# MATH.md (2.1)\n"
        "def helper():\n    'MATH.md (2.2)'\n"
        "def test_x():\n    x = 'MATH.md (2.3)'\n    return x\n"
    )
    written, ranged = mentions_in_tests([f])
    assert written == {}
    assert set(ranged) == {"1.1", "1.2", "1.3"}
    assert THIS not in _test_files()


def test_math_md_is_built_from_chapters():
    spec = importlib.util.spec_from_file_location("build_math", ROOT / "math" / "build.py")
    if spec is None or not (ROOT / "math" / "build.py").exists():
        pytest.skip("no chapter sources")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "MATH.md").read_text() == mod.build(ROOT), "MATH.md is stale: run python math/build.py"


def test_labels_unique_and_inside_display_math():
    math, labels = defined_labels()
    dup = sorted({x for x in labels if labels.count(x) > 1})
    assert not dup, f"duplicate equation labels: {dup}"
    assert math.count("$$") % 2 == 0, "unbalanced $$ in MATH.md"
    blocks = re.findall(r"\$\$(.*?)\$\$", math, flags=re.S)
    in_blocks = [t for b in blocks for t in re.findall(r"\\tag\{(\d+\.\d+)\}", b)]
    assert sorted(in_blocks) == sorted(labels), "a \\tag outside a $$ block"


def test_every_citation_exists():
    _, labels = defined_labels()
    missing = {lab: files for lab, files in cited_in_code().items() if lab not in labels}
    assert not missing, f"code cites equations that MATH.md does not define: {missing}"


def test_every_equation_cited_by_code():
    _, labels = defined_labels()
    cited = cited_in_code()
    uncited = [lab for lab in labels if lab not in cited]
    assert not uncited, f"equations no function in refdiff/ cites: {uncited}"


def test_every_equation_checked_by_a_test():
    _, labels = defined_labels()
    written, _ = mentions_in_tests()
    unchecked = [lab for lab in labels if lab not in written]
    assert not unchecked, f"equations no test docstring names as MATH.md (C.k): {unchecked}"


def test_tests_name_only_implemented_equations():
    """A test docstring naming an equation that MATH.md lacks, or that no function in
    refdiff/ cites, checks nothing that the code implements."""
    _, labels = defined_labels()
    cited = cited_in_code()
    written, _ = mentions_in_tests()
    bad = {lab: where for lab, where in written.items() if lab not in labels or lab not in cited}
    assert not bad, f"tests name equations no code implements: {bad}"


def test_no_equation_is_covered_only_through_a_range():
    """Lists the equations that a test docstring spans by a range and none names."""
    written, ranged = mentions_in_tests()
    only = {lab: where for lab, where in ranged.items() if lab not in written}
    assert not only, f"equations covered only through ranges: {only}"
