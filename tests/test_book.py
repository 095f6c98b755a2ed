"""The chapters: clean sources, complete sections, and a strict build that executes them all."""
import json
import re

import pytest
import yaml

from conftest import REPO
from d2ldw.extract import numbered_pages

TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
# Every page is a notebook but the API reference, a Markdown page of autodoc directives.
MARKDOWN_PAGES = ["chapters/appendix/api"]
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


@pytest.mark.parametrize("page", SECTIONS)
def test_random_data_is_seeded(page):
    code = "\n".join("".join(c["source"]) for c in notebook(page)["cells"]
                     if c["cell_type"] == "code")
    uses_randomness = re.search(r"\b(randn|random|standard_normal|get_conv_data)\b", code)
    seeded = re.search(r"manual_seed|default_rng\(\d|Generator\(\)|get_conv_data", code)
    assert not uses_randomness or seeded, page


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

    for module in ("shapes", "data", "cost", "timing", "numerics", "numpy", "torch",
                   "mxnet", "tvm", "plotting", "bench"):
        imported = importlib.import_module(f"d2ldw.{module}")
        for name in imported.__all__:
            if inspect.isfunction(getattr(imported, name)) or inspect.isclass(
                    getattr(imported, name)):
                entry = text.split(f'id="d2ldw.{module}.{name}"', 1)
                assert len(entry) == 2, f"d2ldw.{module}.{name} is not in the API reference"
                body = entry[1].split('<dt class="sig', 1)[0]
                assert "Defined in" in body and 'href="../' in body, f"d2ldw.{module}.{name}"


@pytest.mark.parametrize("page", PAGES)
def test_code_cells_fit_the_text_column(page):
    """No code line over 80 characters: the page shows 80 without scrolling
    sideways (tests/test_browser.py checks the rendered page too)."""
    long = [line for cell in notebook(page)["cells"] if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > 80]
    assert not long, f"{len(long)} lines over 80 characters, e.g. {long[0]!r}"
