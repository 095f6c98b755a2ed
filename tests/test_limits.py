"""Huge sizes are refused up front; the command-line tools fail in one line.

Issue 15. The memory tests run in a subprocess whose address space is capped at
2 GiB: a function that started allocating its 5-12 GB before checking would die
there with a MemoryError (or be killed) instead of printing the refusal.
"""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

CAP_BYTES = 2 * 2**30


def run_capped(code):
    """Run ``code`` in a fresh Python limited to CAP_BYTES of address space."""
    program = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({CAP_BYTES}, {CAP_BYTES}))
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", program], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


HUGE_CALLS = {
    "numpy conv2d, padding=20000": """
        import numpy as np
        from d2ldw import numpy as d2l_np
        d2l_np.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)),
                      padding=20000)
    """,
    "get_conv_data, 40000 x 40000": """
        import d2ldw
        d2ldw.get_conv_data(3, 4, 40000, 3)
    """,
    "conv2d_unfold, padding=20000": """
        import torch
        from d2ldw import torch as d2l_torch
        d2l_torch.conv2d_unfold(torch.zeros(1, 3, 8, 8),
                                torch.zeros(4, 3, 3, 3), padding=20000)
    """,
    "count_cost, (3, 20000, 20000)": """
        from d2ldw import torch as d2l_torch
        d2l_torch.count_cost(d2l_torch.mobilenet_v1(), (3, 20000, 20000))
    """,
    "mobilenet_v2, width 100": """
        from d2ldw import torch as d2l_torch
        d2l_torch.mobilenet_v2(width_multiplier=100)
    """,
}


@pytest.mark.parametrize("name", HUGE_CALLS)
def test_huge_sizes_are_refused_before_allocating(name):
    result = run_capped(f"""
        try:
{textwrap.indent(textwrap.dedent(HUGE_CALLS[name]), " " * 12)}
        except ValueError as error:
            print("refused:", error)
        else:
            print("accepted")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "GiB" in result.stdout, result.stdout
    assert "pass max_bytes= to raise it" in result.stdout


def run_module(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("flags, says", [
    (["--layers", "0"], "--layers: expected a positive int, got 0"),
    (["--layers", "10"], "MobileNet v1 has 9 depthwise layers, got 10"),
    (["--batch", "1000000"], "--batch 1000000 would need"),
    (["--batch", "abc"], "--batch: expected a positive int, got 'abc'"),
    (["--threads", "-2"], "--threads: expected a positive int, got -2"),
    (["--repeat", "0"], "--repeat: expected a positive int, got 0"),
    (["--json", "/missing-folder/result.json"], "--json: cannot write"),
    (["--max-bytes", "0"], "--max-bytes: expected a positive int, got 0"),
    (["--model", "v1"], "unrecognized arguments: --model v1"),
])
def test_bench_refuses_bad_flags_in_one_line_before_running(flags, says):
    result = run_module("d2ldw.bench", "depthwise", *flags)
    assert result.returncode == 2
    assert says in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if "Warning" not in line and not line.startswith(" ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("command, flags, says", [
    ("kernels", ["--kernel", "3", "4"], "--kernel: odd sizes only ('same' padding), got [3, 4]"),
    ("kernels", ["--channels", "20"], "--channels: a multiple of 16 (vector lanes), got 20"),
    ("kernels", ["--kernel", "0"], "--kernel: expected a positive int, got 0"),
    ("mobilenet", ["--model", "v3"], "invalid choice: 'v3'"),
    ("mobilenet", ["--batch", "1000000"], "--batch 1000000 would need"),
])
def test_other_bench_commands_refuse_bad_flags_the_same_way(command, flags, says):
    result = run_module("d2ldw.bench", command, *flags)
    assert result.returncode == 2
    assert says in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if "Warning" not in line and not line.startswith(" ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


@pytest.fixture
def book(tmp_path):
    """A copy of the book's sources (chapters, TOC, package) to break."""
    shutil.copytree(REPO / "chapters", tmp_path / "chapters")
    shutil.copy(REPO / "_toc.yml", tmp_path / "_toc.yml")
    shutil.copytree(REPO / "d2ldw", tmp_path / "d2ldw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def extract(*args):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "extract.py"),
                             *map(str, args)], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def edit_save_cell(notebook, edit):
    """Apply ``edit`` to the source lines of the first #@save cell."""
    data = json.loads(notebook.read_text())
    index = next(i for i, cell in enumerate(data["cells"])
                 if "".join(cell["source"]).startswith("#@save"))
    data["cells"][index]["source"] = edit(data["cells"][index]["source"])
    notebook.write_text(json.dumps(data, indent=1))
    return index


def test_extract_check_on_a_missing_root_says_so():
    result = extract("--check", "--root", "/missing-book")
    assert result.returncode == 2
    assert result.stderr.strip() == ("python tools/extract.py: error: "
                                     "--root /missing-book is not a folder")


def test_extract_names_the_notebook_and_cell_of_a_syntax_error(book):
    notebook = book / "chapters" / "grouped" / "cost.ipynb"
    index = edit_save_cell(
        notebook, lambda lines: lines[:2] + ["def broken(:\n"] + lines[2:])
    result = extract("--check", "--root", book)
    assert result.returncode == 2
    assert "(chapters/grouped/cost.ipynb)" in result.stderr
    where = f"cell {index + 1} ('#@save cost'): syntax error on line 3"
    assert where in result.stderr
    before = (book / "d2ldw" / "cost.py").read_text()
    assert extract("--root", book).returncode == 2  # nothing regenerated
    assert (book / "d2ldw" / "cost.py").read_text() == before


def test_extract_names_a_broken_notebook(book):
    notebook = book / "chapters" / "separable" / "spatial.ipynb"
    notebook.write_text('{"cells": [')
    result = extract("--check", "--root", book)
    assert result.returncode == 2
    assert f"{notebook} is not a readable notebook" in result.stderr


def test_extract_refuses_to_regenerate_without_a_toc_page(book):
    (book / "chapters" / "separable" / "spatial.ipynb").unlink()
    before = (book / "d2ldw" / "numpy.py").read_text()
    result = extract("--root", book)
    assert result.returncode == 2
    assert "lists chapters/separable/spatial, but" in result.stderr
    assert "does not exist" in result.stderr
    assert (book / "d2ldw" / "numpy.py").read_text() == before  # code kept


def test_extract_check_fails_on_an_undefined_name(book):
    """A #@save cell that leans on a name only an earlier notebook cell defined
    runs in the book but breaks the module: the extractor refuses it."""
    notebook = book / "chapters" / "separable" / "spatial.ipynb"
    edit_save_cell(notebook, lambda lines: lines + [
        "\n", "\n", "def uses_a_notebook_global():\n",
        "    return rng.standard_normal(3)\n"])
    result = extract("--check", "--root", book)
    assert result.returncode == 2
    assert "would use undefined name(s) rng" in result.stderr, result.stderr


def test_undefined_names_follows_python_scoping():
    from extract import undefined_names
    source = ("import numpy as np\n"
              "LIMIT = 3\n"
              "def f(x, *, scale=LIMIT):\n"
              "    def g():\n"
              "        return x * scale + len(np.shape(x))\n"
              "    return g() + missing_helper(x)\n"
              "class C:\n"
              "    size = LIMIT\n"
              "    def method(self):\n"
              "        return [y for y in range(self.size)] + other\n")
    assert undefined_names(source) == ["missing_helper", "other"]
