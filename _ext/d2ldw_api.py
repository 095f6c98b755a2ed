"""Sphinx extension for the API reference appendix: each documented function or class of
d2ldw ends with a link to the book section that defines it.

The generated modules say where each block comes from, in a comment above it:
``# From Section 1.3, "Convolution as matrix multiplication" (chapters/conv2d/as_matmul.ipynb)``;
the definition kept in the module (the last one, when a later section redefines a name) is
the one linked. A part written by hand (harness: argument checkers and the like, listed as
``written`` in ``d2ldw/_layout.py``) says instead which section each definition serves:
``# Harness for chapters/depthwise/mobilenets.ipynb``; its number and title are read from the
TOC and the notebook, so they follow the book as it changes. The book's own checkout of d2ldw
is documented, whatever is installed.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = re.compile(r'^# From Section ([\d.]+), "(.*)" \((\S+)\.ipynb\)$')
HARNESS = re.compile(r"^# Harness for (\S+)\.ipynb$")
# a function, a class or a constant (PEERS = ...)
DEFINITION = re.compile(r"^(?:(?:async\s+def|def|class)\s+(\w+)|([A-Z][A-Z0-9_]*)\s*=)")


def definition_sections(module_file):
    """{name: (section number, title, docname)} for the top-level functions and classes."""
    sections, origin = {}, None
    for line in Path(module_file).read_text().splitlines():
        if match := ORIGIN.match(line):
            origin = match.groups()
        elif (match := DEFINITION.match(line)) and origin:
            sections[match.group(1) or match.group(2)] = origin
    return sections


def harness_pages(module_file):
    """{name: docname} for the top-level functions and classes of a part written by hand."""
    pages, page = {}, None
    for line in Path(module_file).read_text().splitlines():
        if match := HARNESS.match(line):
            page = match.group(1)
        elif (match := DEFINITION.match(line)) and page:
            pages[match.group(1) or match.group(2)] = page
            page = None  # each definition names its own page
    return pages


def page_section(docname, root=ROOT):
    """(number, title, docname) of a page of the book, from the TOC and its heading; None
    for a page the TOC does not list."""
    import yaml

    sys.path.insert(0, str(Path(root) / "tools"))
    try:
        from extract import numbered_pages
    finally:
        sys.path.remove(str(Path(root) / "tools"))
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    for number, entry in numbered_pages(toc):
        if entry["file"] == docname:
            cells = json.loads((Path(root) / f"{docname}.ipynb").read_text())["cells"]
            headings = [line[2:].strip() for cell in cells if cell["cell_type"] == "markdown"
                        for line in "".join(cell["source"]).splitlines()
                        if line.startswith("# ")]
            return number, headings[0] if headings else docname, docname
    return None


def origin_of(qualified_name, root=ROOT):
    """``(number, title, docname, written)`` for ``d2ldw.<module>.<name>``: the section
    that defines it (``written`` False), or, for a part written by hand, the section it
    serves (``written`` True); None for a name outside the generated modules."""
    parts = qualified_name.split(".")
    if len(parts) != 3 or parts[0] != "d2ldw":
        return None
    from d2ldw._layout import MODULES, module_files

    if parts[1] not in MODULES:
        return None
    spec = MODULES[parts[1]]
    # the module's file, or its __init__ and parts (d2ldw/torch/models.py, ...)
    for dotted, module_file in module_files(parts[1], Path(root) / "d2ldw").items():
        if dotted.partition(".")[2] in spec.written:
            page = harness_pages(module_file).get(parts[2])
            found = page and page_section(page, root)
            if found:
                return (*found, True)
            continue
        found = definition_sections(module_file).get(parts[2])
        if found:
            return (*found, False)
    return None


def section_of(qualified_name, root=ROOT):
    """(number, title, docname) of the section defining ``d2ldw.<module>.<name>``, or
    served by it (a part written by hand); None for a name outside the generated modules."""
    origin = origin_of(qualified_name, root)
    return origin and origin[:3]


def section_link(number, title, docname, written=False):
    """reST for a link to the section; the title is escaped for a role's text."""
    text = f'Section {number}, "{title}"'.replace("`", "").replace("<", r"\<")
    if written:
        return f"*Written by hand for* :doc:`{text} </{docname}>`."
    return f"*Defined in* :doc:`{text} </{docname}>`."


def add_section_link(app, what, name, obj, options, lines):
    if what in ("function", "class"):
        origin = origin_of(name)
        if origin:
            lines.extend(["", section_link(*origin)])


def setup(app):
    sys.path.insert(0, str(ROOT))
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", add_section_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
