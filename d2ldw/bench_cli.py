"""The command line of ``python -m d2ldw.bench``: hand-written plumbing, not generated.

The measuring code lives in the book (``#@save bench`` cells, package :mod:`d2ldw.bench`,
whose ``__main__`` calls :func:`main`);
this module only parses and checks flags, runs one subcommand and writes its JSON.
A subcommand is an entry of :data:`SUBCOMMANDS`: ``name: (help, add_arguments, run)``, where
``add_arguments(parser)`` declares its flags and ``run(args)`` returns the JSON-able result
after printing its table. Flags are checked before anything is timed: a bad one ends the
run with one line on stderr and exit status 2.
"""
import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from d2ldw.hardware import available_cpus
from d2ldw.shapes import check_memory

__all__ = ["SUBCOMMANDS", "REQUIREMENTS", "main", "positive_int", "check_json_path",
           "check_threads", "missing_packages", "cached_run", "bench_cache_folder",
           "measurement_modules", "CACHE_VARIABLE"]

# import name: (pip package, the d2ldw extra that brings it)
PACKAGES = {"torch": ("torch", "torch"), "tvm": ("apache-tvm", "tvm"),
            "mxnet": ("mxnet", "mxnet"), "onnx": ("onnx", "bench"),
            "onnxruntime": ("onnxruntime", "bench"), "openvino": ("openvino", "bench"),
            "tqdm": ("tqdm", "bench")}
# what each subcommand imports, in its own process or in this one
REQUIREMENTS = {"depthwise": ("torch", "tvm", "mxnet", "onnx", "onnxruntime", "openvino"),
                "mobilenet": ("torch", "tvm", "onnx", "onnxruntime", "openvino"),
                "kernels": ("torch", "tvm"),
                "int8": ("torch", "tvm", "onnx", "onnxruntime", "openvino")}


class _Parser(argparse.ArgumentParser):
    """Bad command lines end with one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def check_json_path(path: str) -> str | None:
    """Why ``--json path`` cannot be written, or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        return f"--json: cannot write {path!r} (its folder must exist and be writable)"
    return None


def check_threads(threads: int) -> str | None:
    """Why ``--threads`` is unreasonable here, or None."""
    if threads > 4 * available_cpus():
        return f"--threads: at most 4 x the {available_cpus()} available CPUs, got {threads}"
    return None


def missing_packages(command: str, progress: bool = False) -> str | None:
    """Why ``command`` cannot run here (the packages it needs that are not installed, and
    the pip line that installs them), or None. Looked up without importing them."""
    import importlib.util

    needed = [*REQUIREMENTS[command], *(["tqdm"] if progress else [])]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    extras = sorted({PACKAGES[name][1] for name in missing})
    return (f"needs {', '.join(PACKAGES[name][0] for name in missing)}, not installed: "
            f"pip install 'd2ldw[{','.join(extras)}]'")


def _common_arguments(parser, batch=True):
    if batch:  # the int8 benchmark times one image
        parser.add_argument("--batch", type=positive_int, default=1, help="images per call")
    parser.add_argument("--threads", type=positive_int, default=available_cpus(),
                        help="threads per library; each also runs with one thread, and the "
                             f"faster counts (default: the {available_cpus()} CPUs available "
                             "here)")
    parser.add_argument("--repeat", type=positive_int, default=7,
                        help="timed rounds per candidate; the median counts")
    parser.add_argument("--json", type=str, default=None,
                        help="also write the result to this file, as JSON (default: only print it)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        default=sys.stderr.isatty(),
                        help="show on stderr which process runs and how far it got "
                             "(default: when stderr is a terminal)")


# depthwise: MobileNet v1's depthwise layers against every peer

def _depthwise_arguments(parser):
    _common_arguments(parser)
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="only the first N layers, for a quick check (default: all)")
    parser.add_argument("--max-bytes", type=positive_int, default=None,
                        help="refuse a batch whose input and output need more bytes "
                             "(default: d2ldw.MEMORY_LIMIT, 2 GiB)")


def _depthwise_check(args):
    from d2ldw import bench

    layers = bench.depthwise_layers()
    if args.layers is not None and args.layers > len(layers):
        return f"--layers: MobileNet v1 has {len(layers)} depthwise layers, got {args.layers}"
    largest = max(c * size * size for c, size, _ in layers)  # float32 input and output
    try:
        check_memory(8 * args.batch * largest, f"--batch {args.batch}", args.max_bytes)
    except ValueError as message:
        return f"{message} (--max-bytes)"
    return None


def _depthwise_run(args):
    from d2ldw import bench

    result = bench.run_depthwise(args.batch, args.threads, args.repeat, args.layers,
                                 progress=args.progress)
    print(bench.format_table(result))
    return result


# mobilenet: the whole network in TVM against every peer

def _mobilenet_arguments(parser):
    _common_arguments(parser)
    parser.add_argument("--model", choices=("v1", "v2"), default="v1",
                        help="MobileNet v1 or v2")


def _mobilenet_check(args):
    try:
        check_memory(4 * args.batch * 96 * 112 * 112 * 6, f"--batch {args.batch}", None)
    except ValueError as message:
        return str(message)
    return None


def _mobilenet_run(args):
    from d2ldw import bench

    result = bench.run_mobilenet(args.model, args.batch, args.threads, args.repeat,
                                 progress=args.progress)
    print(bench.format_mobilenet_table(result))
    return result


# int8: the book's int8 MobileNet against PyTorch's, ONNX Runtime's and OpenVINO's int8 paths

def _int8_arguments(parser):
    _common_arguments(parser, batch=False)
    parser.add_argument("--model", choices=("v1", "v2"), default="v2",
                        help="MobileNet v1 or v2")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="rounds over every engine, the order reversed every other "
                             "round; the fastest run counts")


def _int8_check(args):
    return None  # batch 1, one image: nothing to size


def _int8_run(args):
    from d2ldw import bench

    result = bench.run_int8(args.model, args.threads, args.repeat, args.rounds,
                            progress=args.progress)
    print(bench.format_int8_table(result))
    return result


# kernels: one depthwise layer over kernel sizes, PyTorch and the TE kernel (Chapter 7)

def _kernels_arguments(parser):
    _common_arguments(parser)
    parser.add_argument("--kernel", type=positive_int, nargs="+", default=[3, 7, 15, 31],
                        help="odd kernel sizes k of the k x k depthwise layer")
    parser.add_argument("--channels", type=positive_int, default=64,
                        help="channels, a multiple of 16")
    parser.add_argument("--size", type=positive_int, default=28,
                        help="input height = width, in pixels")


def _kernels_check(args):
    if any(k % 2 == 0 for k in args.kernel):
        return f"--kernel: odd sizes only ('same' padding), got {args.kernel}"
    if args.channels % 16:
        return f"--channels: a multiple of 16 (vector lanes), got {args.channels}"
    try:
        check_memory(8 * args.batch * args.channels * args.size**2,
                     f"--batch {args.batch}", None)
    except ValueError as message:
        return str(message)
    return None


def _kernels_run(args):
    from d2ldw import bench

    result = bench.run_kernel_sweep(args.kernel, args.batch, args.channels, args.size,
                                    args.threads, args.repeat, progress=args.progress)
    print(bench.format_kernel_sweep(result))
    return result


# name: (help, add_arguments, check -> message or None, run -> JSON-able result)
SUBCOMMANDS = {
    "depthwise": ("MobileNet v1's depthwise layers against PyTorch (NCHW and "
                  "channels_last), MXNet, ONNX Runtime and OpenVINO",
                  _depthwise_arguments, _depthwise_check, _depthwise_run),
    "mobilenet": ("MobileNet v1 or v2 in TVM against PyTorch eager, torch.compile, "
                  "ONNX Runtime and OpenVINO", _mobilenet_arguments, _mobilenet_check, _mobilenet_run),
    "kernels": ("one depthwise layer over kernel sizes k = 3..31: PyTorch and the book's "
                "TE kernel against the roofline", _kernels_arguments, _kernels_check,
                _kernels_run),
    "int8": ("the book's int8 MobileNet (v1 or v2, batch 1) in TVM against PyTorch's, "
             "ONNX Runtime's and OpenVINO's int8 paths, and against TVM's float32 network",
             _int8_arguments, _int8_check, _int8_run),
}


# The one folder that holds the benchmarks' results, for `make book`, `make test` and the
# Colab runs alike (see cached_run).
CACHE_VARIABLE = "D2LDW_BENCH_CACHE"


def bench_cache_folder() -> Path:
    """Where :func:`cached_run` keeps its results: ``$D2LDW_BENCH_CACHE`` when set, else the
    checkout's ``_build/bench``, or ``~/.cache/d2ldw/bench`` for an installed package."""
    named = os.environ.get(CACHE_VARIABLE)
    if named:
        return Path(named).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "_toc.yml").exists():
        return checkout / "_build" / "bench"
    return Path.home() / ".cache" / "d2ldw" / "bench"


def measurement_modules(start: Iterable[str] = ("bench", "bench_cli")) -> list[str]:
    """Every d2ldw module a benchmark run can execute: the closure of ``start`` under
    imports (d2ldw._layout.d2ldw_imports: anywhere in a module, inside functions too).
    A change to any of them changes :func:`cached_run`'s key."""
    from d2ldw._layout import d2ldw_imports, module_files

    found, todo = set(), list(start)
    while todo:
        name = todo.pop().partition(".")[0]  # a part of a module: the whole module
        if name not in found:
            found.add(name)
            for path in module_files(name).values():
                todo.extend(set(d2ldw_imports(path.read_text())) - found)
    return sorted(found)


def cached_run(*arguments: str, folder: str | os.PathLike[str] | None = None
               ) -> Any:
    """The JSON result of ``python -m d2ldw.bench <arguments> --json FILE``, run only when
    FILE is missing: the book's pages use it so that a rebuild reuses a measurement.

    FILE lies in ``folder`` (default: :func:`bench_cache_folder`, which the environment
    variable ``D2LDW_BENCH_CACHE`` names: `make test` points the strict build and the Colab
    runs at one folder, so each benchmark is measured once per test run). Its name holds the
    arguments and a hash of every module the run depends on (:func:`measurement_modules`),
    so changed code measures anew. The command's table is printed either way."""
    import hashlib
    import subprocess

    if not all(isinstance(a, str) for a in arguments):
        raise TypeError(f"cached_run: expected command-line strings, got {arguments!r}")
    from d2ldw._layout import module_files

    folder = bench_cache_folder() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    for name in measurement_modules():
        for dotted, path in module_files(name).items():
            digest.update(dotted.encode() + b"\0" + path.read_bytes())
    stem = "_".join(a.lstrip("-") for a in arguments)
    path = folder / f"{stem}-{digest.hexdigest()[:12]}.json"
    table = path.with_suffix(".txt")
    if not path.exists():
        # written under a temporary name and renamed: a run that dies leaves no half file
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        run = subprocess.run([sys.executable, "-m", "d2ldw.bench", *arguments,
                              "--json", str(partial)], capture_output=True, text=True)
        if run.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"python -m d2ldw.bench {' '.join(arguments)} failed:\n"
                               f"{run.stderr[-3000:]}")
        table.write_text(run.stdout)
        os.replace(partial, path)
    print(table.read_text() if table.exists() else "", end="")
    return json.loads(path.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m d2ldw.bench",
                     description="Benchmarks of the book's kernels. Each library runs in a "
                                 "process of its own with the same threads; times are "
                                 "medians. The table goes to stdout, progress to stderr.")
    commands = parser.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, (help_text, add_arguments, _, _) in SUBCOMMANDS.items():
        parsers[name] = commands.add_parser(
            name, help=help_text, description=help_text,
            formatter_class=_DefaultsFormatter)
        add_arguments(parsers[name])
    args = parser.parse_args(argv)
    _, _, check, run = SUBCOMMANDS[args.command]
    missing = missing_packages(args.command, args.progress)
    if missing:  # before the checks below, which import the frameworks
        parsers[args.command].error(missing)
    for problem in (check_threads(getattr(args, "threads", 1)),
                    args.json and check_json_path(args.json), check(args)):
        if problem:
            parsers[args.command].error(problem)
    result = run(args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
