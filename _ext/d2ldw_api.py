"""Sphinx extension for the API reference appendix: each documented function or class of
d2ldw ends with a link to the book section that defines it.

The generated modules say where each block comes from, in a comment above it:
``# From Section 1.3, "Convolution as matrix multiplication" (chapters/conv2d/as_matmul.ipynb)``;
the definition kept in the module (the last one, when a later section redefines a name) is
the one linked. The book's own checkout of d2ldw is documented, whatever is installed.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = re.compile(r'^# From Section ([\d.]+), "(.*)" \((\S+)\.ipynb\)$')
DEFINITION = re.compile(r"^(?:async\s+def|def|class)\s+(\w+)")


def definition_sections(module_file):
    """{name: (section number, title, docname)} for the top-level functions and classes."""
    sections, origin = {}, None
    for line in Path(module_file).read_text().splitlines():
        if match := ORIGIN.match(line):
            origin = match.groups()
        elif (match := DEFINITION.match(line)) and origin:
            sections[match.group(1)] = origin
    return sections


def section_of(qualified_name, root=ROOT):
    """(number, title, docname) of the section defining ``d2ldw.<module>.<name>``, or None."""
    parts = qualified_name.split(".")
    if len(parts) != 3 or parts[0] != "d2ldw":
        return None
    from d2ldw._layout import MODULES, module_files

    if parts[1] not in MODULES:
        return None
    # the module's file, or its __init__ and parts (d2ldw/torch/models.py, ...)
    for module_file in module_files(parts[1], Path(root) / "d2ldw").values():
        found = definition_sections(module_file).get(parts[2])
        if found:
            return found
    return None


def section_link(number, title, docname):
    """reST for a link to the section; the title is escaped for a role's text."""
    text = f'Section {number}, "{title}"'.replace("`", "").replace("<", r"\<")
    return f"*Defined in* :doc:`{text} </{docname}>`."


def add_section_link(app, what, name, obj, options, lines):
    if what in ("function", "class"):
        origin = section_of(name)
        if origin:
            lines.extend(["", section_link(*origin)])


def setup(app):
    sys.path.insert(0, str(ROOT))
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", add_section_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
