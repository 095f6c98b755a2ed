"""The appendix's cheat sheet: one table whose every cell the page computes, whose rows
link to their sections, and which the built book renders as a table."""
import json
import re
from html.parser import HTMLParser

import pytest
import yaml

from conftest import REPO
from extract import numbered_pages

PAGE = "chapters/appendix/cheat_sheet"
ROWS = {  # row: the section that teaches it
    "full": "chapters/conv2d/from_scratch",
    "grouped": "chapters/grouped/groups",
    "depthwise": "chapters/depthwise/depthwise_as_groups",
    "depthwise-separable": "chapters/separable/depthwise_pointwise",
    "spatially separable": "chapters/separable/spatial",
}
COLUMNS = ["convolution", "PyTorch", "Keras", "TFLite", "ONNX", "MXNet", "TVM topi",
           "mult-adds", "parameters", "FLOP/byte"]


def cells():
    return json.loads((REPO / f"{PAGE}.ipynb").read_text())["cells"]


def code():
    return "\n".join("".join(c["source"]) for c in cells() if c["cell_type"] == "code")


def test_the_cheat_sheet_is_in_the_appendix_and_its_index():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = {entry["file"]: number for number, entry in numbered_pages(toc)}
    assert pages[PAGE].startswith(pages["chapters/appendix/index"] + ".")
    index = "".join(cells_of("chapters/appendix/index")[0]["source"])
    assert "[Cheat sheet](cheat_sheet)" in index


def cells_of(page):
    return json.loads((REPO / f"{page}.ipynb").read_text())["cells"]


def label_of(page):
    return "sec-" + page.removeprefix("chapters/").replace("/", "-").replace("_", "-")


def test_every_row_links_the_label_of_its_section():
    source = code()
    for row, page in ROWS.items():
        label = label_of(page)
        assert re.search(rf'"{row}": \(\s*"{label}"', source), row
        assert f"({label})=" in "".join(cells_of(page)[1]["source"]), (row, label)
    assert "{{numref}}`{label}`" in source


def test_the_table_is_rendered_as_myst_markdown():
    """A text/markdown output is CommonMark by default, without tables or roles; the
    table's cell asks myst-nb for MyST, which has both."""
    table = [c for c in cells() if "Markdown(" in "".join(c["source"])]
    assert len(table) == 1
    assert table[0]["metadata"]["mystnb"] == {"markdown_format": "myst"}


def test_no_shape_is_typed():
    """The shapes are read off layers: no tuple of four ints stands in the page's code,
    which reads the frameworks' layers and calls the cost function."""
    source = code()
    # a permutation of four axes, permute(2, 3, 1, 0) or transpose, is not a shape
    assert not re.search(r"(?<!permute)(?<!transpose)\(\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\)",
                         source)
    for framework in ("keras", "onnx", "mxnet", "topi", "tflite"):
        assert framework in source.lower(), framework
    assert "layer.weights" in source and "layer.weight.shape" in source
    assert "model.graph.initializer" in source and "conv2d_cost" in source


class _Table(HTMLParser):
    """The rows of the first table of a page: a list of cells, each (text, hrefs)."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.done, self.depth = [], None, False, 0

    def handle_starttag(self, tag, attrs):
        if self.done:
            return
        if tag == "table":
            self.depth += 1
        elif tag == "tr" and self.depth:
            self.rows.append([])
        elif tag in ("td", "th") and self.depth:
            self.cell = ["", []]
        elif tag == "a" and self.cell is not None:
            self.cell[1].append(dict(attrs).get("href", ""))
        elif tag == "br" and self.cell is not None:
            self.cell[0] += "\n"

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth, self.done = 0, True
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append((self.cell[0].strip(), self.cell[1]))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data


def rendered_table(html):
    parser = _Table()
    parser.feed(html)
    return parser.rows


def expected_row(row):
    """The shapes and costs of one row, from the layouts the frameworks document and
    d2ldw.conv2d_cost: an independent computation of what the page reads off layers."""
    import d2ldw

    c, o, k, g, m, size = 32, 64, 3, 4, 2, 14
    stages = {  # (weight (O, C/G, kH, kW), groups)
        "full": [((o, c, k, k), 1)],
        "grouped": [((o, c // g, k, k), g)],
        "depthwise": [((c * m, 1, k, k), c)],
        "depthwise-separable": [((c * m, 1, k, k), c), ((o, c * m, 1, 1), 1)],
        "spatially separable": [((c, c, k, 1), 1), ((o, c, 1, k), 1)],
    }[row]
    shapes = {f: [] for f in COLUMNS[1:7]}
    shape, mult_adds, params = (1, c, size, size), 0, 0
    for (out, per_group, kh, kw), groups in stages:
        depthwise = groups == shape[1] > 1
        shapes["PyTorch"].append((out, per_group, kh, kw))
        shapes["ONNX"].append((out, per_group, kh, kw))
        shapes["MXNet"].append((out, per_group, kh, kw))
        shapes["Keras"].append((kh, kw, groups, out // groups) if depthwise
                               else (kh, kw, per_group, out))
        shapes["TFLite"].append((1, kh, kw, out) if depthwise else (out, kh, kw, per_group))
        shapes["TVM topi"].append((groups, out // groups, kh, kw) if depthwise
                                  else (out, per_group, kh, kw))
        weight = (out, per_group, kh, kw)
        cost = d2ldw.conv2d_cost(shape, weight, padding=(kh // 2, kw // 2), groups=groups)
        mult_adds, params = mult_adds + cost.mult_adds, params + cost.params
        shape = (1, out, size, size)
    return shapes, mult_adds, params


def check_table(rows):
    """The rendered table: the columns, one row per convolution linking to its section,
    and every shape and count as computed independently here."""
    assert [text for text, _ in rows[0]] == COLUMNS
    assert len(rows) == 1 + len(ROWS)
    for (name, page), row in zip(ROWS.items(), rows[1:]):
        text, links = row[0]
        assert text.startswith(name + ", Section "), text
        assert any(href.endswith(f"#{label_of(page)}") for href in links), (name, links)
        shapes, mult_adds, params = expected_row(name)
        for column, (cell, _) in zip(COLUMNS[1:7], row[1:7]):
            assert cell.split("\n") == [str(s).replace(" ", "") for s in shapes[column]], (
                name, column)
        assert int(row[7][0].replace(",", "")) == mult_adds
        assert int(row[8][0].replace(",", "")) == params
        assert float(row[9][0]) > 0


def test_check_table_catches_a_wrong_cell():
    header = [(c, []) for c in COLUMNS]
    rows = [header]
    for name, page in ROWS.items():
        shapes, mult_adds, params = expected_row(name)
        rows.append([(f"{name}, Section 1.1", [f"../x/y.html#{label_of(page)}"]),
                     *(("\n".join(str(s).replace(" ", "") for s in shapes[c]), [])
                       for c in COLUMNS[1:7]),
                     (f"{mult_adds:,}", []), (f"{params:,}", []), ("1.0", [])])
    check_table(rows)
    rows[3][2] = ("(64,1,3,3)", [])  # Keras's depthwise kernel typed in PyTorch's layout
    with pytest.raises(AssertionError):
        check_table(rows)


def test_the_built_page_shows_the_table_with_links(built_book):
    assert built_book.result.returncode == 0, built_book.result.stderr[-3000:]
    html = (built_book.html / f"{PAGE}.html").read_text()
    rows = rendered_table(html)
    check_table(rows)
    # the table's own cells: links and line breaks rendered, not shown as source (the code
    # that builds the table, shown above it, holds both strings)
    cells = [text for row in rows for text, _ in row]
    assert not [c for c in cells if "{numref}" in c or "<br>" in c], cells
