"""The chapters: clean sources, complete sections, and a strict build that executes them all."""
import json
import re

import pytest
import yaml

from conftest import REPO
from extract import numbered_pages

TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
# Every page is a notebook but the API reference, a Markdown page of autodoc directives, and
# the references, a Markdown page with one {bibliography} directive.
MARKDOWN_PAGES = ["chapters/appendix/api", "chapters/appendix/references"]
NUMBERED = list(numbered_pages(TOC))
PAGES = [p for p in [TOC["root"]] + [e["file"] for _, e in NUMBERED]
         if p not in MARKDOWN_PAGES]
SECTIONS = [e["file"] for number, e in NUMBERED
            if "." in number and e["file"] not in MARKDOWN_PAGES]


def notebook(page):
    return json.loads((REPO / f"{page}.ipynb").read_text())


def test_every_toc_page_is_a_notebook_and_every_notebook_is_in_the_toc():
    on_disk = {str(p.relative_to(REPO).with_suffix("")) for p in (REPO / "chapters").rglob("*.ipynb")
               if ".ipynb_checkpoints" not in p.parts}
    assert on_disk == set(PAGES)
    assert all((REPO / f"{page}.md").exists() for page in MARKDOWN_PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_notebooks_are_committed_without_outputs(page):
    for cell in notebook(page)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, page


@pytest.mark.parametrize("page", SECTIONS)
def test_sections_end_with_summary_and_two_to_four_exercises(page):
    markdown = "\n".join("".join(c["source"]) for c in notebook(page)["cells"]
                         if c["cell_type"] == "markdown")
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[-2:] == ["Summary", "Exercises"], page
    exercises = markdown.split("## Exercises", 1)[1]
    assert 2 <= len(re.findall(r"^\d+\. ", exercises, flags=re.M)) <= 4, page


USES_RANDOMNESS = re.compile(r"\b(randn|rand|random|standard_normal|normal|get_conv_data)\b")
# a seed given: torch.manual_seed(0), Generator().manual_seed(s), default_rng(0 or seed),
# or d2ldw's get_conv_data (seeded by default)
SEEDED = re.compile(r"manual_seed\(\s*\w|default_rng\(\s*\w|get_conv_data")
# a generator made without a seed: default_rng(), and Generator() (NumPy's or torch's) not
# immediately seeded with .manual_seed(...)
UNSEEDED = re.compile(r"default_rng\(\s*\)|Generator\(\s*\)(?!\.manual_seed\()")


def seeding_problem(code):
    """Why ``code`` draws random numbers that a rebuild would not reproduce, or None."""
    if not USES_RANDOMNESS.search(code):
        return None
    unseeded = UNSEEDED.search(code)
    if unseeded:
        return f"unseeded generator: {unseeded.group(0)!r}"
    if not SEEDED.search(code):
        return "random numbers without any seed"
    return None


def test_the_seeding_check_catches_unseeded_generators():
    assert seeding_problem("x = np.arange(3)") is None
    assert seeding_problem("rng = np.random.default_rng(0)\nrng.random(3)") is None
    assert seeding_problem("g = torch.Generator().manual_seed(1)\ntorch.randn(3, generator=g)"
                           ) is None
    assert seeding_problem("rng = np.random.default_rng()\nrng.random(3)").startswith(
        "unseeded generator: 'default_rng()'")
    assert seeding_problem("g = np.random.Generator()\nx = g.standard_normal(3)").startswith(
        "unseeded generator: 'Generator()'")
    # a seed elsewhere on the page does not excuse an unseeded generator
    assert seeding_problem("torch.manual_seed(0)\ng = torch.Generator()\n"
                           "torch.randn(3, generator=g)") is not None
    assert seeding_problem("x = torch.randn(3)") == "random numbers without any seed"


@pytest.mark.parametrize("page", SECTIONS)
def test_random_data_is_seeded(page):
    code = "\n".join("".join(c["source"]) for c in notebook(page)["cells"]
                     if c["cell_type"] == "code")
    problem = seeding_problem(code)
    assert problem is None, f"{page}: {problem}"


def test_strict_build_executes_every_chapter(built_book):
    """jupyter-book build -W -n --keep-going into a fresh folder; every page gets outputs."""
    result, html = built_book.result, built_book.html
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    for page in SECTIONS:
        text = (html / f"{page}.html").read_text()
        assert text.count('class="cell_output') >= 3, page
        assert "Traceback (most recent call last)" not in text, page
    check_api_reference((html / "chapters/appendix/api.html").read_text())
    check_links_follow_repository_url(html)


def check_links_follow_repository_url(html):
    """The launch (Colab) and repository buttons use repository.url and branch."""
    repository = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]
    url, branch = repository["url"].rstrip("/"), repository.get("branch", "main")
    slug = url.removeprefix("https://github.com/")
    for page in SECTIONS:
        text = (html / f"{page}.html").read_text()
        assert f'href="{url}"' in text, page
        assert "_colab_setup" not in text, f"{page}: the Colab setup cell is not hidden"
        assert (f'href="https://colab.research.google.com/github/{slug}/blob/{branch}/'
                f'{page}.ipynb"') in text, page


def check_api_reference(text):
    """Every public function and class of d2ldw has an entry that links to its section."""
    import importlib
    import inspect

    from d2ldw._layout import MODULES

    for module in [name for name, spec in MODULES.items() if spec.generated and spec.public]:
        imported = importlib.import_module(f"d2ldw.{module}")
        for name in imported.__all__:
            if inspect.isfunction(getattr(imported, name)) or inspect.isclass(
                    getattr(imported, name)):
                entry = text.split(f'id="d2ldw.{module}.{name}"', 1)
                assert len(entry) == 2, f"d2ldw.{module}.{name} is not in the API reference"
                body = entry[1].split('<dt class="sig', 1)[0]
                # harness written by hand links to the section it serves
                assert ("Defined in" in body or "Written by hand for" in body) \
                    and 'href="../' in body, f"d2ldw.{module}.{name}"


@pytest.mark.parametrize("page", PAGES)
def test_code_cells_fit_the_text_column(page):
    """No code line over 80 characters: the page shows 80 without scrolling
    sideways (tests/test_browser.py checks the rendered page too)."""
    long = [line for cell in notebook(page)["cells"] if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > 80]
    assert not long, f"{len(long)} lines over 80 characters, e.g. {long[0]!r}"


def private_d2ldw_names(code):
    """Names leading with an underscore that ``code`` takes from d2ldw: imported
    (``from d2ldw.tvm import _pad``) or read as an attribute (``d2l_tvm._pad``)."""
    import ast

    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))]
    found = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("d2ldw"):
            found |= {alias.name for alias in node.names if alias.name.startswith("_")}
    found |= set(re.findall(r"\b(?:d2ldw|d2l_\w+)\.(_[a-z]\w*)", code))
    return found


def test_the_private_name_check_finds_imports_and_attributes():
    assert private_d2ldw_names("from d2ldw.tvm import padding as _pad, _te") == {"_te"}
    assert private_d2ldw_names("y = d2l_tvm._pad(x)\nz = d2ldw.gamma(3)") == {"_pad"}
    assert private_d2ldw_names("from d2ldw.numpy import conv2d") == set()


@pytest.mark.parametrize("page", PAGES)
def test_pages_take_no_private_name_from_d2ldw(page):
    """A page calls the package's public API; helpers a page needs are public, with
    docstrings, and listed in the API reference."""
    code = "\n".join("".join(c["source"]) for c in notebook(page)["cells"]
                     if c["cell_type"] == "code")
    assert private_d2ldw_names(code) == set(), page


# --- pages that teach: the code a reader sees stays short enough to read ------------------

MOST_VISIBLE_CODE_LINES = 300
# Tags that take a cell's code off the page: removed, or folded away behind a toggle.
HIDING_TAGS = {"remove-cell", "remove-input", "hide-input", "hide-cell"}


def visible_code_lines(nb):
    """Non-blank lines of the code cells a reader sees on the page."""
    return sum(1 for cell in nb["cells"]
               if cell["cell_type"] == "code"
               and not HIDING_TAGS & set(cell.get("metadata", {}).get("tags", []))
               for line in "".join(cell["source"]).splitlines() if line.strip())


def test_visible_code_lines_counts_what_the_reader_sees():
    cell = {"cell_type": "code", "metadata": {}, "source": ["a = 1\n", "\n", "b = 2"]}
    hidden = {**cell, "metadata": {"tags": ["hide-input"]}}
    text = {"cell_type": "markdown", "metadata": {}, "source": ["x\n", "y"]}
    assert visible_code_lines({"cells": [cell, hidden, text, cell]}) == 4


@pytest.mark.parametrize("page", PAGES)
def test_no_page_shows_more_than_300_lines_of_code(page):
    """A page teaches one idea with the code that expresses it; harness code (peer set-up,
    profilers, runners, tables, argument plumbing) lives in tested modules the page calls.
    A cell folded behind a toggle (the argument checkers of the first chapter, a figure's
    drawing code) is one click away and does not count."""
    nb = notebook(page)
    assert visible_code_lines(nb) <= MOST_VISIBLE_CODE_LINES, page

