"""Assemble MATH.md from the chapter files math/chNN-*.md (in chapter order).

Run ``python math/build.py`` after editing a chapter; tests/test_math_crossref.py checks
that MATH.md is up to date with the chapters and that code, tests and equations agree."""

from pathlib import Path

HEADER = """# refdiff — the mathematics

Derivations behind every function of refdiff. Each derivation ends in a numbered
equation $(C.k)$; the function that implements it cites `MATH.md (C.k)` in its docstring,
and a test checks it (the test suite enforces both directions). Chapters:

"""


def build(root: Path) -> str:
    chapters = sorted((root / "math").glob("ch[0-9][0-9]-*.md"))
    toc, bodies = [], []
    for p in chapters:
        text = p.read_text().strip()
        title = text.splitlines()[0].lstrip("# ").strip()
        anchor = "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")
        toc.append(f"- [{title}](#{anchor})")
        bodies.append(text)
    return HEADER + "\n".join(toc) + "\n\n" + "\n\n".join(bodies) + "\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    (root / "MATH.md").write_text(build(root))
    print(f"wrote {root / 'MATH.md'}")
