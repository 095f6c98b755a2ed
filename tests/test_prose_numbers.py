"""Every number in the prose is printed, or set, by code on the same page.

A number typed into a markdown cell goes stale the first time the book runs on
another machine or with another library version; a number the page prints
cannot. So every number in a markdown cell must appear in that page's code or
in its executed output (in the strictly built book), unless it is one of:

- a year (1950-2039), a list or exercise number, or a citation of a paper's
  own table, figure, section, equation or page;
- part of a name: float32, MobileNet v2, AVX-512, x86-64, 2-D, Conv2d ...
  (digits glued to letters or hyphens are names, not quantities);
- inside math, inline code, a link target or a MyST role;
- in the Exercises, whose numbers are settings the reader is asked to try,
  not results the book claims;
- listed in ALLOWED below, with the reason.

The book's own sections are links ({numref}), never typed numbers: a typed
"Section 2.3" or "Chapter 3" fails too, unless it cites a paper.
"""

import json
import re
from html.parser import HTMLParser

import pytest

from conftest import REPO
from test_book import PAGES

# (page, number): why the number may stand in prose without the page
# printing it. Keep this short: each entry is a claim nobody re-checks.
ALLOWED = {
    ("chapters/numerics/bitwise_swap", "1e-7"):
        "the forum question's own words, quoted as its title",
}

# A citation role ({cite:t}`howard2017mobilenets`) names a paper: "Table 2" after it is the
# paper's table, as after a typed "et al".
CITE = re.compile(r"\{cite(?::\w+)?\}`[^`]*`")
STRIP = [
    re.compile(r"```.*?```", re.S),           # fenced code and directives
    re.compile(r"\$\$.*?\$\$", re.S),         # display math
    re.compile(r"(?<!\\)\$[^$\n]+\$"),        # inline math
    re.compile(r"\{[\w:-]+\}`[^`]*`"),        # MyST roles: {numref}`...`
    re.compile(r"`[^`\n]*`"),                 # inline code
    re.compile(r"\]\([^)\s]*\)"),             # link targets
    re.compile(r"^\([\w:-]+\)=\s*$", re.M),   # MyST labels
    re.compile(r"<[^>\n]+>"),                 # HTML tags
    re.compile(r"^\s*\d+\.\s", re.M),         # numbered list items
    re.compile(r"https?://\S+"),              # bare addresses
]
# A number standing on its own: not glued to letters, digits, '.', '-' or '_'
# before it, e.g. float32, v2, x86-64, AVX-512 stay out. A unit may follow.
NUMBER = re.compile(
    r"(?<![\w.\-^/])(\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)"
    r"(?=(?:%|×|x\b|M\b|G\b|K\b|k\b|ms\b|µs\b|us\b|ns\b|s\b|MiB\b|GiB\b"
    r"|KiB\b|MB\b|GB\b|B\b|th\b|st\b|nd\b|rd\b)?(?![\w\-]|\.\d))")
YEAR = re.compile(r"^(19[5-9]\d|20[0-3]\d)$")
CITATION = re.compile(
    r"(Table|Tables|Figure|Fig\.|Eq\.|Equation|Section|Sections|Algorithm|"
    r"Appendix|page|pp?\.)\s*$")
PAPER_CONTEXT = re.compile(r"\b(paper|its|their|et al)\b", re.I)
BOOK_SECTION = re.compile(r"\b(Section|Chapter)s?\s+\d")


def prose(page):
    cells = json.loads((REPO / f"{page}.ipynb").read_text())["cells"]
    text = "\n\n".join("".join(c["source"]) for c in cells
                       if c["cell_type"] == "markdown")
    text = text.split("\n## Exercises", 1)[0]
    text = CITE.sub(" the cited paper ", text)
    for pattern in STRIP:
        text = pattern.sub(" ", text)
    return text


def code(page):
    cells = json.loads((REPO / f"{page}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "code")


class _OutputText(HTMLParser):
    """The text of a built page's cell outputs (myst-nb's ``cell_output``)."""

    def __init__(self):
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if self.depth or "cell_output" in classes:
            self.depth += 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def printed(html_file):
    parser = _OutputText()
    parser.feed(html_file.read_text())
    return " ".join(parser.parts)


def normalised(number):
    return number.replace(",", "")


def numbers_in(text):
    return {normalised(m) for m in re.findall(r"\d[\d,_]*(?:\.\d+)?(?:e-?\d+)?",
                                              text)} | {
        normalised(m).replace("_", "") for m in re.findall(r"\d[\d_]+", text)}


def unexplained_numbers(page, shown):
    text = prose(page)
    found = []
    for match in NUMBER.finditer(text):
        number = match.group(1).rstrip(",")
        before = text[max(0, match.start() - 40):match.start()]
        sentence = text[max(0, match.start() - 120):match.end() + 60]
        if YEAR.match(number) or (page, number) in ALLOWED:
            continue
        if CITATION.search(before) and PAPER_CONTEXT.search(sentence):
            continue
        if normalised(number) not in shown:
            found.append(f"{number!r} in ...{text[match.start() - 50:match.end() + 30]!r}...")
    return found


def test_a_citation_role_is_paper_context():
    text = "{cite:t}`howard2017mobilenets`, Table 2, splits the cost"
    stripped = CITE.sub(" the cited paper ", text)
    assert PAPER_CONTEXT.search(stripped) and "howard" not in stripped


def test_the_number_scanner_tells_quantities_from_names():
    text = ("float32 MobileNet v2 AVX-512 x86-64 2-D Conv2d a 3.5× speed-up, "
            "10.8M multiply-adds, 1e-7 and 42% in 2017 (Table 3 of the paper)")
    numbers = [m.group(1) for m in NUMBER.finditer(text)]
    assert numbers == ["3.5", "10.8", "1e-7", "42", "2017", "3"]


@pytest.mark.parametrize("page", PAGES)
def test_no_typed_section_numbers(page):
    """The book's own sections are {numref} links; only papers' sections are typed."""
    text = prose(page)
    typed = [text[max(0, m.start() - 60):m.end() + 40]
             for m in BOOK_SECTION.finditer(text)
             if not PAPER_CONTEXT.search(text[max(0, m.start() - 60):m.end() + 40])]
    assert not typed, f"{page}: use {{numref}} for: {typed}"


def test_every_number_in_the_prose_is_printed_or_set_by_the_page(built_book):
    assert built_book.result.returncode == 0, built_book.result.stderr[-3000:]
    problems = {}
    for page in PAGES:
        html_file = built_book.html / f"{page}.html"
        shown = numbers_in(printed(html_file)) | numbers_in(code(page))
        found = unexplained_numbers(page, shown)
        if found:
            problems[page] = found
    assert not problems, "numbers typed into prose:\n" + "\n".join(
        f"{page}: {item}" for page, items in problems.items() for item in items)


def test_allowed_entries_are_still_needed():
    """An allow-list entry whose number left the page is dead weight."""
    for page, number in ALLOWED:
        path = REPO / f"{page}.ipynb"
        if path.exists():
            assert number in prose(page), (page, number)
