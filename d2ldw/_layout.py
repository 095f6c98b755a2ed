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

__all__ = ["Module", "MODULES", "PACKAGE", "module_path", "part_path", "module_files",
           "generated_files", "d2ldw_imports", "import_order_problems"]

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Module:
    doc: str
    generated: bool = True  # from the chapters' #@save cells; else written by hand
    core: bool = False  # framework-free: re-exported by `import d2ldw`
    requires: tuple = ()  # (import name, pip requirement, d2ldw extra)
    package: bool = False  # a folder, d2ldw/<name>/__init__.py, with hand-written files beside
    public: bool = True  # documented in the API reference and listed by help(d2ldw)
    # A module split by concern: ((part, what it holds), ...) in dependency order. Each part is
    # d2ldw/<name>/<part>.py, written from the cells marked `#@save <name>.<part>`; the
    # package's __init__ re-exports every public name, so `from d2ldw.<name> import X` works.
    parts: tuple = ()
    # Parts written by hand (harness code: peer sessions, profilers, runners, tables), not
    # from #@save cells; they take their place in the dependency order like the others.
    written: tuple = ()


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
    "quantization": Module("Affine quantization and integer-only convolution in NumPy.",
                           core=True),
    "plotting": Module("The book's figures.", requires=("matplotlib", "matplotlib", "book")),
    "tvm": Module("TVM tensor-expression definitions and build helpers.",
                  requires=("tvm", "apache-tvm>=0.27.0.post1,<0.28", "tvm"), parts=(
                      ("operators", "Convolutions as tensor expressions: the definitions."),
                      ("targets", "Targets, building and running, and what the CPU offers."),
                      ("nchwc", "The NCHW[x]c layout and the schedules of the fast kernels."),
                      ("fused", "A depthwise layer fused with the pointwise layer after "
                                "it, one output row at a time."),
                      ("network", "A whole MobileNet as one Relax module."),
                      ("int8", "int8 kernels (VNNI where the CPU has it) and the int8 "
                               "MobileNet as one module."),
                  )),
    "torch": Module("PyTorch implementations.", requires=("torch", "torch>=2.13", "torch"),
                    parts=(
                        ("checks", "Argument checkers of the networks, layers and "
                                   "counters (written by hand)."),
                        ("convolutions", "Convolutions by unfold and matrix product, "
                                         "separable and causal ones."),
                        ("surgery", "Layer surgery: swapping, folding and calibrating layers."),
                        ("models", "The model families: MobileNet v1 to v3, EfficientNet-B0, "
                                   "ConvNeXt-T, and their blocks."),
                        ("counting", "Counting a model's mult-adds and parameters."),
                        ("porting", "Weights between Keras (and TensorFlow) and PyTorch."),
                        ("inference", "Seeded networks and their layers, run one by one."),
                        ("te_layer", "A depthwise layer that runs the book's TVM kernel."),
                        ("orders", "Which summation order PyTorch's depthwise kernels "
                                   "follow, surveyed in a child process (written by hand)."),
                        ("quantized", "Quantized depthwise networks and PyTorch's int8 "
                                      "convolutions."),
                    ), written=("checks", "orders")),
    "hardware": Module("What CPU a measurement ran on, and what decides its outcome.",
                       generated=False),
    "mxnet": Module("MXNet implementations.", requires=("mxnet", "mxnet>=1.9.1", "mxnet")),
    "isolated": Module("Run a function in a process of its own, with given threads.",
                       generated=False),
    "bench": Module("Benchmarks of the book's kernels: python -m d2ldw.bench "
                    "depthwise|mobilenet|kernels|int8.", package=True, parts=(
                        ("separable", "Timing a separable layer in each framework."),
                        ("peers", "The peers set up and called alike: ONNX Runtime and "
                                  "OpenVINO sessions and profilers, PyTorch and MXNet "
                                  "calls."),
                        ("roofline", "This CPU's compute and memory roofs (the hardware's "
                                     "FMA rate and a library's), and the MobileNet layers "
                                     "on them."),
                        ("depthwise", "MobileNet v1's depthwise layers and the TE kernels "
                                      "timed on them."),
                        ("mobilenet", "A whole MobileNet: every peer in its fastest "
                                      "configuration."),
                        ("kernels", "Large depthwise kernels swept against the roofline."),
                        ("runs", "The runners and tables: each library in its own process, "
                                 "the fastest counting."),
                        ("int8", "The int8 MobileNet against PyTorch's, ONNX Runtime's and "
                                 "OpenVINO's int8 paths."),
                        ("fusion", "A MobileNet's depthwise + pointwise pairs, fused and not, "
                                   "timed side by side."),
                    ), written=("peers", "runs", "int8", "fusion")),
    "bench_cli": Module("The command line of python -m d2ldw.bench.", generated=False),
    "explorers": Module("The arithmetic of the live explorers, in Python.", generated=False),
    "widgets": Module("The live explorers: anywidget widgets for the book's pages.",
                      generated=False),
}


def is_package(name):
    return MODULES[name].package or bool(MODULES[name].parts)


def module_path(name, package=PACKAGE):
    """The file of module ``name``: ``d2ldw/<name>.py``, or its folder's ``__init__.py``."""
    return Path(package) / name / "__init__.py" if is_package(name) else Path(package) / f"{name}.py"


def part_path(name, part, package=PACKAGE):
    """The file of part ``part`` of module ``name``: ``d2ldw/<name>/<part>.py``."""
    return Path(package) / name / f"{part}.py"


def generated_files(name, package=PACKAGE):
    """{dotted name: file} of what the extractor writes for module ``name``: nothing for a
    hand-written module, and not the parts written by hand."""
    if not MODULES[name].generated:
        return {}
    return {dotted: path for dotted, path in module_files(name, package).items()
            if dotted.partition(".")[2] not in MODULES[name].written}


def module_files(name, package=PACKAGE):
    """{dotted name: file} of module ``name`` and of its parts."""
    files = {name: module_path(name, package)}
    for part, _ in MODULES[name].parts:
        files[f"{name}.{part}"] = part_path(name, part, package)
    return files


def _rank(dotted):
    """Where a module or part stands in the dependency order: (module index, part index),
    with a package's own __init__ after its parts (it imports them all)."""
    name, _, part = dotted.partition(".")
    parts = [p for p, _ in MODULES[name].parts]
    return list(MODULES).index(name), parts.index(part) if part else len(parts)


def d2ldw_imports(source):
    """{module: line} of the d2ldw modules ``source`` imports, anywhere in it (inside
    functions too, ``try`` blocks included), or names as ``"d2ldw.module:function"`` in a
    string (a child process imports that); the line is the first such import. A part of a
    module is named ``module.part``."""
    found: dict[str, int] = {}

    def add(dotted, line):
        parts = dotted.split(".")
        if parts[0] != "d2ldw" or len(parts) < 2 or parts[1] not in MODULES:
            return
        known = [p for p, _ in MODULES[parts[1]].parts]
        name = f"{parts[1]}.{parts[2]}" if len(parts) > 2 and parts[2] in known else parts[1]
        found.setdefault(name, line)

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
    """Lines that break the dependency order in ``source``, the code of module or part
    ``name`` (``"torch.models"``): imports of itself or of what is listed after it (a part
    may import earlier parts of its module, but not the module itself)."""
    here = _rank(name)
    return [f"d2ldw.{name} imports d2ldw.{imported} (line {line}), which is not listed "
            f"before it in d2ldw/_layout.py"
            for imported, line in sorted(d2ldw_imports(source).items(), key=lambda i: i[1])
            if _rank(imported) >= here]
