"""The modules of d2ldw, in dependency order: the one list every other list is derived from.

The extractor (``tools/extract.py``) writes the generated modules named here, the API
reference and the tests read their names from here, and the README's layout table is
checked against it. The order is the dependency order: a module imports (at module level
or inside a function) only modules listed before it. The extractor refuses a generated
module that breaks the rule, and ``tests/test_package.py`` checks the whole package,
hand-written modules included, so there is no import cycle.

Standard library only: the extractor reads this file without importing the package (which
may be half-generated while it runs).
"""
import ast
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Module", "MODULES", "PACKAGE", "module_path", "d2ldw_imports",
           "import_order_problems"]

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Module:
    doc: str
    generated: bool = True  # from the chapters' #@save cells; else written by hand
    core: bool = False  # framework-free: re-exported by `import d2ldw`
    requires: tuple = ()  # (import name, pip requirement, d2ldw extra)
    package: bool = False  # a folder, d2ldw/<name>/__init__.py, with hand-written files beside
    public: bool = True  # documented in the API reference and listed by help(d2ldw)


MODULES = {
    "_layout": Module("This list: the modules of d2ldw in dependency order.", generated=False,
                      public=False),
    "_requires": Module("The message that names the pip package a framework module needs.",
                        generated=False, public=False),
    "shapes": Module("Output sizes and argument checking for convolutions.", core=True),
    "data": Module("Seeded test data for convolutions, as NumPy arrays.", core=True),
    "cost": Module("Multiply-adds, FLOPs and parameters of convolutions.", core=True),
    "timing": Module("Timing candidates side by side, with medians.", core=True),
    "numpy": Module("Reference implementations in NumPy."),
    "numerics": Module("Rounding-error bounds, ULP distances and error reports.", core=True),
    "plotting": Module("The book's figures.", requires=("matplotlib", "matplotlib", "book")),
    "tvm": Module("TVM tensor-expression definitions and build helpers.",
                  requires=("tvm", "apache-tvm==0.27.0.post1", "tvm")),
    "torch": Module("PyTorch implementations.", requires=("torch", "torch==2.13.0", "torch")),
    "hardware": Module("What CPU a measurement ran on, and what decides its outcome.",
                       generated=False),
    "mxnet": Module("MXNet implementations.", requires=("mxnet", "mxnet==1.9.1", "mxnet")),
    "isolated": Module("Run a function in a process of its own, with given threads.",
                       generated=False),
    "bench": Module("Benchmarks of the book's kernels: python -m d2ldw.bench "
                    "depthwise|mobilenet|kernels.", package=True),
    "bench_cli": Module("The command line of python -m d2ldw.bench.", generated=False),
    "explorers": Module("The arithmetic of the live explorers, in Python.", generated=False),
    "widgets": Module("The live explorers: anywidget widgets for the book's pages.",
                      generated=False),
}


def module_path(name, package=PACKAGE):
    """The file of module ``name``: ``d2ldw/<name>.py``, or its folder's ``__init__.py``."""
    spec = MODULES[name]
    return Path(package) / name / "__init__.py" if spec.package else Path(package) / f"{name}.py"


def d2ldw_imports(source):
    """{module: line} of the d2ldw modules ``source`` imports, anywhere in it (inside
    functions too, ``try`` blocks included), or names as ``"d2ldw.module:function"`` in a
    string (a child process imports that); the line is the first such import."""
    found = {}

    def add(dotted, line):
        parts = dotted.split(".")
        if parts[0] == "d2ldw" and len(parts) > 1 and parts[1] in MODULES:
            found.setdefault(parts[1], line)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            add(node.module, node.lineno)
            if node.module == "d2ldw":  # from d2ldw import torch
                for alias in node.names:
                    add(f"d2ldw.{alias.name}", node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for dotted in re.findall(r"\b(d2ldw\.\w+):\w", node.value):
                add(dotted, node.lineno)
    return found


def import_order_problems(name, source):
    """Lines that break the dependency order in module ``name``'s ``source``: imports of
    itself or of a module listed after it."""
    order = list(MODULES)
    return [f"d2ldw.{name} imports d2ldw.{imported} (line {line}), which is not listed "
            f"before it in d2ldw/_layout.py"
            for imported, line in sorted(d2ldw_imports(source).items(), key=lambda i: i[1])
            if order.index(imported) >= order.index(name)]
