"""The documentation holds together: every relative link of README.md and docs/*.md resolves (the file,
and the heading its ``#anchor`` names), every repository path the pages name exists, every ``docs/X.md``
the code cites exists, and the README stays short (docs/development.md)."""
import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
while not (ROOT / "pyproject.toml").is_file():  # the repository root, wherever this file sits in tests/
    ROOT = ROOT.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
CODE_DIRS = ("imagenet52p", "pruning", "benchmark", "scripts")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# [text](target) or [text](target "title"); the text may span lines and hold `code`
LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
CITED_DOC = re.compile(r"docs/[A-Za-z0-9_]+\.md")
REPO_PATH = re.compile(r"(?<![\w./$~-])((?:%s|tests)/[\w/.*-]+)" % "|".join(CODE_DIRS))


def _without_code(text: str) -> str:
    """Markdown with fenced blocks removed (links and headings inside code are not links or headings)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than ``-`` and ``_``
    removed, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """The anchors of a Markdown file's headings, numbered ``-1``, ``-2`` ... on repeats like GitHub."""
    seen, out = {}, set()
    for m in HEADING.finditer(_without_code(path.read_text(encoding="utf-8"))):
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list:
    """``(line, target)`` of every Markdown link of a file outside code blocks and code spans."""
    text = _without_code(path.read_text(encoding="utf-8"))
    # blank code spans out, keeping their length and newlines: [`x`](y) stays a link, `[x](y)` is none
    prose = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    out = []
    for m in LINK.finditer(prose):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def broken_links(path: Path) -> list:
    """Every relative link of ``path`` whose file or heading does not exist, as readable strings."""
    bad = []
    for line, target in links(path):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{line}: ({target})"
        if not dest.exists():
            bad.append(f"{where}: no such file {file_part}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix != ".md":
            bad.append(f"{where}: an anchor into a file that is not Markdown")
    return bad


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "FORMAT.md", "RANDOM52.md", "builder.md", "dataset.md", "classes.md", "pruning.md",
            "algorithm1.md", "benchmark.md", "numbers.md", "development.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_the_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_every_doc_the_code_cites_exists():
    missing = []
    for d in CODE_DIRS:
        for f in sorted((ROOT / d).rglob("*")):
            if f.suffix not in (".py", ".sh", ".toml") or not f.is_file():
                continue
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                missing += [f"{f.relative_to(ROOT)}:{i}: {c}" for c in CITED_DOC.findall(line)
                            if not (ROOT / c).is_file()]
    assert missing == []


def cited_paths(path: Path) -> list:
    """``(line, path)`` of every repository path (``pruning/...``, ``tests/...``, ...) a page names in code,
    without a ``::test`` suffix; globs such as ``tests/test_pruning_*.py`` included."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1).rstrip(".").split("::")[0])
            for m in REPO_PATH.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_page_names_exists(page):
    """Files move: a page that names ``tests/test_x.py`` or ``pruning/x.py`` must follow them."""
    missing = [f"{page.relative_to(ROOT)}:{line}: {p}" for line, p in cited_paths(page)
               if not (glob.glob(str(ROOT / p)) if "*" in p else (ROOT / p).exists())]
    assert missing == []


def test_the_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title: `x` (y)\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-x-y) [ok2](a.md#same-1) [self](#here) [web](https://example.org/x)\n"
                    "[gone](missing.md) [bad](a.md#nope) `[code](missing.md)`\n\n# Here\n\n"
                    "```\n[fenced](missing.md)\n```\n", encoding="utf-8")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        bad = broken_links(page)
    finally:
        ROOT = saved
    assert len(bad) == 2 and "missing.md" in bad[0] and "#nope" in bad[1], bad
