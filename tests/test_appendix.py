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


def test_harness_written_by_hand_links_to_the_section_it_serves():
    """A part written by hand (d2ldw/_layout.py's ``written``) names, above each public
    definition, the page it serves; number and title come from the TOC, so they follow the
    book. The link says it was written by hand, not defined there."""
    from d2ldw._layout import MODULES

    number, title, docname, written = d2ldw_api.origin_of("d2ldw.torch.check_network_args")
    assert (docname, title, written) == ("chapters/depthwise/mobilenets",
                                         "Swapping every depthwise layer", True)
    assert number == next(n for n, entry in numbered_pages(TOC)
                          if entry["file"] == docname)
    assert d2ldw_api.section_of("d2ldw.torch.check_network_args") == (number, title, docname)
    assert d2ldw_api.section_link(number, title, docname, True).startswith(
        "*Written by hand for* :doc:`Section")
    # the generated parts still link to the section that defines the name
    assert d2ldw_api.origin_of("d2ldw.torch.mobilenet_v1")[2:] == (
        "chapters/depthwise/mobilenets", False)
    for module, spec in MODULES.items():
        for part in spec.written:
            names = importlib.import_module(f"d2ldw.{module}.{part}").__all__
            assert names and all(d2ldw_api.origin_of(f"d2ldw.{module}.{name}")[3]
                                 for name in names), f"{module}.{part}"


def test_a_harness_comment_names_only_the_definition_under_it(tmp_path):
    module = tmp_path / "part.py"
    module.write_text("# Harness for chapters/a/b.ipynb\ndef first():\n    pass\n\n\n"
                      "def second():\n    pass\n")
    assert d2ldw_api.harness_pages(module) == {"first": "chapters/a/b"}
    assert d2ldw_api.page_section("chapters/no/such_page") is None
