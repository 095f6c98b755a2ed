"""The Colab setup cells: generated, up to date, inert outside Colab, and enough in Colab.

The last tests run every chapter notebook the way Colab would: in a fresh virtual
environment without d2ldw, where ``google.colab`` is importable and NumPy 2 is loaded
before the first cell runs, with the setup cell installing from a copy of this checkout
(``D2LDW_COLAB_SOURCE``). When the cell restarts the runtime, the notebook is run again
from the top, as the cell asks the reader to.

Notebooks whose setup cells ask for exactly the same requirements share one fresh
environment (43 notebooks, 14 distinct requirement lists): the first of them installs, and
for the others the cell finds its record of that very install and only says so. Each
notebook still runs in a kernel of its own, which is shut down when it ends; a test checks
that no kernel is left alive.
"""
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from packaging.version import Version

from conftest import REPO, copy_installable, descendant_processes
import colab

NOTEBOOKS = [str(p.relative_to(REPO)) for p in colab.notebooks(REPO)]
# What the fresh environment has before the setup cell runs, standing in for what Colab
# ships: NumPy 2 (Colab's version), and a torch other than the book's pin, as Colab's own
# (a newer CUDA build) is, which the setup cell must keep: d2ldw[torch] asks for a range.
# 2.14.1 rather than the newest: its CUDA build lies on this project's machines' disk (where
# pip's configuration caps torch there), and each pytest-xdist worker installs its own
# (5.5 GB; the CPU build, where pip reads PyTorch's CPU index as the CI workflow does).
COLAB_TORCH = "2.14.1"
PREINSTALLED = ["numpy==2.0.2", f"torch=={COLAB_TORCH}", "matplotlib==3.11.2",
                "ipykernel==7.4.0"]


def setup_source(path):
    cells = json.loads(Path(path).read_text())["cells"]
    return "".join(cells[0]["source"])


def test_the_colab_stand_in_has_another_torch_than_the_book_and_d2ldw_accepts_it():
    """Else the runs below could not tell a setup cell that keeps Colab's torch from one that
    replaces it with the book's."""
    import tomllib

    from packaging.requirements import Requirement

    book = [Requirement(line) for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.startswith("torch==")]
    assert len(book) == 1 and not book[0].specifier.contains(COLAB_TORCH), book
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (torch,) = [Requirement(text) for text in extras["torch"]]
    assert torch.name == "torch" and torch.specifier.contains(COLAB_TORCH), torch


def test_every_notebook_with_code_starts_with_its_generated_setup_cell():
    assert len(NOTEBOOKS) >= 20
    for page in NOTEBOOKS:
        first = json.loads((REPO / page).read_text())["cells"][0]
        assert colab.is_setup_cell(first), page
        assert first["metadata"].get("tags") == ["remove-cell"], page
    assert colab.out_of_date(REPO) == [], "run: python tools/colab.py"


def setup_arguments(path):
    """(extras, packages) of the notebook's ``_colab_setup(...)`` call."""
    module = ast.parse(setup_source(path))
    calls = [node.value for node in module.body if isinstance(node, ast.Expr)
             and isinstance(node.value, ast.Call)
             and node.value.func.id == "_colab_setup"]
    assert len(calls) == 1, path
    return tuple(ast.literal_eval(arg) for arg in calls[0].args)


def test_setup_cells_install_exactly_the_frameworks_each_page_imports():
    def call(page):
        return setup_arguments(REPO / page)

    # the live explorer (d2ldw.widgets) needs anywidget and ipywidgets 8
    widgets = ["anywidget==0.11.0", "ipywidgets>=8,<9", "matplotlib==3.11.2"]
    assert call("chapters/conv2d/from_scratch.ipynb") == ("", widgets)
    assert call("chapters/conv2d/as_matmul.ipynb") == ("torch", [])
    assert call("chapters/conv2d/frameworks.ipynb") == ("mxnet,torch", [])
    assert call("chapters/conv2d/tvm_te.ipynb") == ("torch,tvm", [])
    assert call("chapters/depthwise/depthwise_as_groups.ipynb") == (
        "mxnet,torch,tvm", widgets)


def test_long_setup_calls_fit_the_text_column():
    assert colab.setup_call("torch", []) == "_colab_setup('torch', [])"
    wide = colab.setup_call("mxnet,torch,tvm", ["anywidget==0.11.0"] * 4)
    assert max(map(len, wide.splitlines())) <= 80
    assert ast.literal_eval(wide.replace("_colab_setup", "", 1)) == (
        "mxnet,torch,tvm", ["anywidget==0.11.0"] * 4)


def test_setup_cell_lines_fit_80_columns():
    for page in NOTEBOOKS:
        for line in setup_source(REPO / page).splitlines():
            assert len(line) <= 80, (page, line)


@pytest.fixture()
def book_copy(tmp_path):
    for name in ("_config.yml", "_toc.yml", "pyproject.toml", "requirements.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("chapters", "d2ldw"):
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return tmp_path


def add_code_cell(notebook, source):
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "metadata": {},
                        "outputs": [], "source": [source]})
    notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def test_a_new_import_makes_the_cell_stale_until_regenerated(book_copy):
    page = book_copy / "chapters/separable/spatial.ipynb"
    assert "'torch'" in setup_source(page)
    add_code_cell(page, "from d2ldw import tvm as d2l_tvm")
    assert colab.out_of_date(book_copy) == [page]
    assert colab.main(["--check", "--root", str(book_copy)]) == 1
    assert colab.main(["--root", str(book_copy)]) == 0
    assert colab.out_of_date(book_copy) == []
    assert "_colab_setup('torch,tvm', [])" in setup_source(page)


def test_a_cell_from_an_older_generator_is_replaced_not_kept(book_copy):
    """The generator has moved (python -m d2ldw.colab became tools/colab.py): cells whose mark
    names the old command are still setup cells, replaced rather than left beside new ones."""
    page = book_copy / "chapters/separable/spatial.ipynb"
    page.write_text(page.read_text().replace(colab.MARK, colab.MARK.replace(
        "python tools/colab.py", "python -m d2ldw.colab"), 1))
    assert colab.out_of_date(book_copy) == [page]
    assert colab.main(["--root", str(book_copy)]) == 0
    cells = json.loads(page.read_text())["cells"]
    assert sum(colab.is_setup_cell(cell) for cell in cells) == 1
    assert "".join(cells[0]["source"]).startswith(colab.MARK)


def test_an_import_nothing_pins_is_an_error(book_copy):
    add_code_cell(book_copy / "chapters/separable/spatial.ipynb", "import pandas")
    with pytest.raises(ValueError, match="'pandas'.*pin it"):
        colab.out_of_date(book_copy)


def test_the_cell_installs_from_the_configured_repository(book_copy):
    config = book_copy / "_config.yml"
    config.write_text(config.read_text()
                      .replace("url: https://github.com/d2ldw/d2ldw",
                               "url: https://github.com/a-fork/d2ldw")
                      .replace("branch: main", "branch: colab"))
    assert colab.main(["--root", str(book_copy)]) == 0
    for path in colab.notebooks(book_copy):
        assert '"git+https://github.com/a-fork/d2ldw@colab"' in setup_source(path)


def test_outside_colab_the_cell_does_nothing(tmp_path):
    """No google.colab: no output, no pip, and nothing left in the namespace."""
    script = (setup_source(REPO / NOTEBOOKS[0])
              + "\nprint(sorted(n for n in globals() if not n.startswith('__')))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # a google package without colab
    (tmp_path / "google").mkdir()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


# --- every chapter, the way Colab runs it ------------------------------------------------

@pytest.fixture(scope="module")
def colab_world(tmp_path_factory):
    """A Python environment standing in for Colab's, a kernelspec to run notebooks in a
    fresh environment layered on it, and a copy of this checkout to install d2ldw from."""
    root = tmp_path_factory.mktemp("colab")
    base = root / "colab-python"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
    subprocess.run([str(base / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--progress-bar", "off", *PREINSTALLED], check=True)
    site = next((base / "lib").glob("python3*/site-packages"))
    stub = site / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Stands in for Colab\'s own module."""\n')
    source = copy_installable(root / "checkout")
    book = root / "book"
    shutil.copytree(REPO / "chapters", book / "chapters",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    yield {"root": root, "site": site, "source": source, "book": book, "environments": {}}
    shutil.rmtree(root, ignore_errors=True)  # over a GB: torch, and what the cells installed


def fresh_environment(world, name):
    """A new venv, without d2ldw, that sees the Colab-like packages through a .pth file
    (so pip installs into it and leaves the shared ones alone), and its kernelspec."""
    env_dir = world["root"] / "envs" / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "colab_python.pth").write_text(f"{world['site']}\n")
    spec = world["root"] / "kernels" / name / "colab"
    spec.mkdir(parents=True)
    # Colab's kernel has google.colab and NumPy loaded before the first cell runs.
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(env_dir / "bin" / "python"), "-m", "ipykernel_launcher",
                 "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=import google.colab, numpy"],
        "display_name": "Colab stand-in", "language": "python"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}",
               D2LDW_COLAB_SOURCE=str(world["source"]), MPLBACKEND="agg")
    return spec.parent, env


def environment_for(world, requirements):
    """(kernels, env, env_dir, fresh) of the environment for one requirement list: made on
    first use (``fresh``), shared by later notebooks with the same list."""
    key = repr(requirements)
    fresh = key not in world["environments"]
    if fresh:
        name = f"env-{len(world['environments'])}"
        kernels, env = fresh_environment(world, name)
        world["environments"][key] = (kernels, env, world["root"] / "envs" / name)
    return (*world["environments"][key], fresh)


def kernels_alive(folder, wait=0.0):
    """{pid: command} of this test process's kernels whose Python lies in ``folder``, after
    up to ``wait`` seconds for them to exit (a kernel told to stop takes a moment)."""
    deadline = time.monotonic() + wait
    while True:
        alive = {pid: command for pid, command in descendant_processes().items()
                 if "ipykernel_launcher" in command and f"{folder}{os.sep}" in command}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


def run_all(path, kernels, env):
    """Runtime > Run all: the notebook as far as it ran, and whether the runtime died.

    nbclient shuts down only the kernels whose manager it created, so ``cleanup_kc=True``
    asks it to shut down this one too, however the run ends."""
    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name="colab",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=900, allow_errors=False,
                            shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=env, cleanup_kc=True)
    except DeadKernelError:
        return nb, True
    return nb, False


def torch_seen(env_dir, env):
    """(version, folder) of the torch a Python of the environment imports, the first on its
    sys.path, as the notebook's kernel does."""
    code = ("import importlib.metadata as m; d = m.distribution('torch'); "
            "print(d.version); print(d.locate_file(''))")
    result = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version, folder = result.stdout.splitlines()
    return version, Path(folder)


def outputs_text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


# Notebooks with the same requirements share an environment: with pytest-xdist they go to one
# worker (each worker has its own Colab stand-in).
@pytest.mark.parametrize("page", [
    pytest.param(page, marks=pytest.mark.xdist_group(repr(setup_arguments(REPO / page))))
    for page in NOTEBOOKS])
def test_chapter_runs_in_colab_from_its_setup_cell_alone(colab_world, page):
    path = colab_world["book"] / page
    requirements = setup_arguments(path)
    kernels, env, env_dir, fresh = environment_for(colab_world, requirements)
    needs_numpy_1 = "mxnet" in requirements[0].split(",")
    start = time.perf_counter()
    try:
        nb, restarted = run_all(path, kernels, env)
        first_setup = outputs_text(nb.cells[0])  # what the first run installed or replaced
        if restarted:  # it must be the setup cell that ended the runtime, nothing after it
            assert nb.cells[0].execution_count is not None, page
            assert all(cell.get("execution_count") is None for cell in nb.cells[1:]), page
            nb, died_again = run_all(path, kernels, env)  # the reader runs it again
            assert not died_again, f"{page}: the runtime died again"
    finally:
        # the kernel is gone however the run ended (19.5 GB of kernels were left alive once)
        assert not kernels_alive(env_dir, wait=10), f"{page}: its kernel is still alive"
    print(f"{page}: {time.perf_counter() - start:.0f} s, restarted: {restarted}, "
          f"fresh environment: {fresh}")
    # Only a page with MXNet replaces NumPy 2, which is loaded, so only it restarts, and
    # only where it installs: in an environment its requirements already made, it finds
    # the record of the install and restarts nothing.
    assert restarted == (needs_numpy_1 and fresh), (page, first_setup)
    setup_output = outputs_text(nb.cells[0])
    expected = "installing" if fresh and not restarted else "already installed"
    assert f"Colab setup: {expected}" in setup_output, setup_output
    # what the pages imported was installed into the fresh environment by the cell
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    assert list(site.glob("d2ldw-*.dist-info")), page
    assert bool(list(site.glob("numpy-1.*.dist-info"))) == needs_numpy_1, page
    # Colab's torch is kept: the cell installed no torch of its own, and the kernel's is
    # the one the runtime came with
    installed = [path.name for path in site.glob("torch-*.dist-info")]
    assert not installed, f"{page}: the setup cell replaced Colab's torch with {installed}"
    version, folder = torch_seen(env_dir, env)
    assert (Version(version).public, folder) == (COLAB_TORCH, colab_world["site"]), page
    print(f"{page}: Colab's torch {version} kept")


def test_the_colab_runs_left_no_kernel_alive(colab_world):
    """After the chapters ran (this test comes after them in the file), none of their
    kernels, in any of the environments, is still running."""
    assert not kernels_alive(colab_world["root"] / "envs")


def test_imports_a_module_can_do_without_are_not_installed():
    """An import inside try/except ImportError (and its else branch) is optional: d2ldw.hardware
    asks TVM about the CPU only where TVM is installed, so it must not make pages install it."""
    from colab import _imports
    code = ("import torch\n"
            "try:\n    import tvm\nexcept ImportError:\n    pass\n"
            "else:\n    from d2ldw import tvm as d2l_tvm\n"
            "try:\n    import mxnet\nexcept ValueError:\n    pass\n")
    assert _imports(code) == {"torch", "mxnet"}
