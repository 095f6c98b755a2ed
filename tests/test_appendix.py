"""The appendix: the API reference links every public function and class to its section."""
import importlib
import inspect
import sys

import yaml

from conftest import REPO
from extract import numbered_pages

sys.path.insert(0, str(REPO / "_ext"))
import d2ldw_api  # noqa: E402  (the Sphinx extension, a plain module)

from d2ldw._layout import MODULES  # noqa: E402

# the modules generated from the chapters, each documented by an automodule directive
DOCUMENTED = [name for name, spec in MODULES.items() if spec.generated and spec.public]
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
TOC_PAGES = {entry["file"] for _, entry in numbered_pages(TOC)}


def public_definitions(module):
    imported = importlib.import_module(f"d2ldw.{module}")
    for name in imported.__all__:
        value = getattr(imported, name)
        # defined there, or in one of its parts (d2ldw.torch.models for d2ldw.torch)
        if (inspect.isfunction(value) or inspect.isclass(value)) and (
                value.__module__ == imported.__name__
                or value.__module__.startswith(imported.__name__ + ".")):
            yield name, value


def test_the_reference_page_documents_every_module():
    text = (REPO / "chapters/appendix/api.md").read_text()
    for module in DOCUMENTED:
        assert f".. automodule:: d2ldw.{module}\n" in text, module


def test_every_public_function_and_class_has_a_docstring_and_a_defining_section():
    count = 0
    for module in DOCUMENTED:
        for name, value in public_definitions(module):
            count += 1
            part = value.__module__.split(".")[2:3]
            if part and part[0] in MODULES[module].written:  # harness, written by hand
                assert d2ldw_api.section_of(f"d2ldw.{module}.{name}") is None
                assert inspect.getdoc(value), f"{value.__module__}.{name} has no docstring"
                continue
            origin = d2ldw_api.section_of(f"d2ldw.{module}.{name}")
            assert origin, f"d2ldw.{module}.{name} has no '# From Section' comment"
            number, title, docname = origin
            assert docname in TOC_PAGES, (name, docname)
            if name != "main":  # the benchmark's command-line entry point
                assert inspect.getdoc(value), f"d2ldw.{module}.{name} has no docstring"
    assert count >= 60


def test_a_redefined_function_links_to_the_section_of_the_kept_definition():
    # Chapter 2 generalises Chapter 1's NumPy convolution to groups (see test_package.py)
    number, title, docname = d2ldw_api.section_of("d2ldw.numpy.conv2d")
    assert docname == "chapters/grouped/implementations" and number.startswith("2.")


def test_links_are_valid_roles_whatever_the_title():
    link = d2ldw_api.section_link("3.1", "Depthwise as `groups == C`",
                                  "chapters/depthwise/depthwise_as_groups")
    assert link == ('*Defined in* :doc:`Section 3.1, "Depthwise as groups == C" '
                    '</chapters/depthwise/depthwise_as_groups>`.')


def test_names_outside_the_generated_modules_get_no_link():
    assert d2ldw_api.section_of("d2ldw.torch.DepthwiseConv2dUnfold.forward") is None
    assert d2ldw_api.section_of("d2ldw.extract.render") is None
    assert d2ldw_api.section_of("numpy.zeros") is None
