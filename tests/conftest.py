"""Shared helpers: the repository root, the tolerance every agreement test uses,
the strict build of the book that test_book.py and test_browser.py share, the test
tiers (markers) and the check that no test leaves a process behind."""
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parent.parent
# the book's tools (extract, colab) are scripts outside the package; the tests import them
sys.path.insert(0, str(REPO / "tools"))

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11,
                 torch.bfloat16: 2.0**-8, torch.complex64: 2.0**-24, torch.complex128: 2.0**-53}


def conv_tolerance(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Largest |difference| two correct convolutions of x, w, b may show, element by element.

    Bound: each output is a sum of n = C_in/groups * kH * kW products plus a bias (n is read
    off the weight, whose second axis is C_in/groups), and a
    computed sum of m terms satisfies |fl(s) - s| <= gamma_m * sum|terms|, with
    gamma_m = m*u / (1 - m*u) and u the unit roundoff of the dtype (Higham, "Accuracy and
    Stability of Numerical Algorithms", 2nd ed., eq. 3.5; any summation order, FMA or not).
    A complex product is two real products per component, so m = 2n + 1 there. Two
    implementations each within the bound differ by at most twice it. Accepts NumPy arrays
    or tensors of any floating or complex dtype; integer dtypes are exact (tolerance 0).

    This mirrors the derivation of the numerics chapter ("An error bound for convolutions"):
    for real dtypes with a bias it is ``2 * d2ldw.conv_error_bound(x, w, b, ...)``; without a
    bias it counts one term more, so it is slightly larger (tests/test_numerics.py checks the
    two against each other).
    """
    x, w = torch.as_tensor(x), torch.as_tensor(w)
    if not (x.is_floating_point() or x.is_complex()):
        return np.zeros(F.conv2d(x.double(), w.double(), stride=stride, padding=padding,
                                 dilation=dilation, groups=groups).shape)
    u = UNIT_ROUNDOFF[x.dtype]
    n = w.shape[1] * w.shape[2] * w.shape[3]
    m = (2 * n if x.is_complex() else n) + 1
    gamma = m * u / (1 - m * u)
    magnitude = F.conv2d(x.abs().double(), w.abs().double(),
                         None if b is None else torch.as_tensor(b).abs().double(),
                         stride=stride, padding=padding, dilation=dilation, groups=groups)
    return 2 * gamma * magnitude.numpy()


def copy_installable(destination):
    """What pip needs to build d2ldw (pyproject.toml, README.md, the package) copied into
    the new folder ``destination``: builds from it leave nothing in the checkout."""
    destination.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, destination / name)
    shutil.copytree(REPO / "d2ldw", destination / "d2ldw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def random_conv_data(input_shape, weight_shape, bias, dtype, seed):
    """Seeded standard-normal input, weight and (when ``bias``) bias, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    b = rng.standard_normal(weight_shape[0]).astype(dtype) if bias else None
    return x, w, b


def torch_conv2d(x, w, b, kwargs):
    """F.conv2d on NumPy arrays: the reference every implementation is compared with."""
    t = torch.from_numpy
    return F.conv2d(t(x), t(w), None if b is None else t(b), **kwargs).numpy()


def run_te(definition, x, w, b, kwargs):
    """Build and run a d2ldw.tvm definition (X, K, **kwargs) on NumPy arrays, bias added.

    TE definitions take batched input only, so an unbatched ``x`` gets a batch axis of 1.
    """
    from tvm import te
    from d2ldw import tvm as d2l_tvm

    x4 = x if x.ndim == 4 else x[np.newaxis]
    X = te.placeholder(x4.shape, str(x.dtype), name="X")
    K = te.placeholder(w.shape, str(w.dtype), name="K")
    Y = definition(X, K, **kwargs)
    if b is None:
        y = d2l_tvm.build_and_run([X, K, Y], [x4, w])
    else:
        B = te.placeholder(b.shape, str(b.dtype), name="B")
        y = d2l_tvm.build_and_run([X, K, B, d2l_tvm.add_bias(Y, B)], [x4, w, b])
    return y if x.ndim == 4 else y[0]


def assert_gradients_match(ours, theirs, inputs, loss=lambda y: y.sin().sum()):
    """Gradients of loss(ours(*inputs)) and loss(theirs(*inputs)) w.r.t. every input agree.

    For float64 inputs of size O(1) and convolutions of a few hundred products: the gamma_n
    bound (conv_tolerance) is below 1e-13 per unit of magnitude; 1e-12 leaves room.
    """
    mine = torch.autograd.grad(loss(ours(*inputs)), inputs)
    reference = torch.autograd.grad(loss(theirs(*inputs)), inputs)
    for a, e in zip(mine, reference):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="session")
def repo():
    return REPO


def _install_node_modules():
    """npm ci when node_modules is missing or older than package-lock.json, as
    `make` does: the book serves the widget manager and require.js from there.
    Without npm the build itself then fails with a message saying what to
    install."""
    stamp = REPO / "node_modules" / ".package-lock.json"
    lockfile = REPO / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lockfile.stat().st_mtime:
        return
    try:
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        pass  # no npm: the build reports what is missing


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book, built once per session and strictly (jupyter-book build -W -n
    --keep-going) into a fresh folder. ``.result`` is the finished process,
    ``.html`` the HTML folder. Used by test_book.py and test_browser.py."""
    _install_node_modules()
    output = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO),
         "--path-output", str(output), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=3600)
    return SimpleNamespace(result=result, html=output / "_build" / "html")


# --- tiers -------------------------------------------------------------------------------
# Markers are declared in pyproject.toml. A test that uses one of these fixtures builds the
# whole book, drives a browser or runs chapters in the Colab stand-in: minutes, not seconds.
# The Colab runs are slow too, but time nothing the book shows: `make test` runs them on both
# cores together with the fast tier, after the strict build has had the machine to itself.
SLOW_FIXTURES = {"built_book", "site", "browser", "colab_world"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if "colab_world" in fixtures:
            item.add_marker(pytest.mark.colab)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: see colab_first
        items[:] = colab_first(items)


def colab_first(items):
    """The Colab runs first, their largest groups (notebooks sharing one environment) first,
    then the rest in collection order: pytest-xdist hands out groups in this order, so both
    workers take minutes-long Colab groups while they last and the seconds-long tests fill
    in around them (in collection order, one worker ended up with every Colab run)."""
    def group(item):
        marker = item.get_closest_marker("xdist_group")
        if marker is None:
            return None
        return marker.args[0] if marker.args else marker.kwargs.get("name")

    sizes = {}
    for item in items:
        if item.get_closest_marker("colab"):
            sizes[group(item)] = sizes.get(group(item), 0) + 1
    order = {item: index for index, item in enumerate(items)}

    def rank(item):
        if item.get_closest_marker("colab"):
            return 0, -sizes[group(item)], order[item]
        return 1, 0, order[item]

    return sorted(items, key=rank)


# --- measured branches ---------------------------------------------------------------------
# A test that measures a property of this CPU before asserting what follows from it says
# which branch it took, so that a run shows what it actually checked. The branch travels in
# the test's report (user_properties), so it reaches the summary from pytest-xdist's workers.
MEASURED_BRANCHES = []


@pytest.fixture()
def measured_branch(record_property):
    """Call with a short description of the branch the test took on this machine."""
    def record(description):
        record_property("measured_branch", description)
    return record


def pytest_runtest_logreport(report):
    if report.when == "call":
        MEASURED_BRANCHES.extend((report.nodeid, value)
                                 for key, value in report.user_properties
                                 if key == "measured_branch")


def pytest_terminal_summary(terminalreporter):
    if MEASURED_BRANCHES:
        terminalreporter.section("what the CPU-dependent tests measured, and so checked")
        for nodeid, description in MEASURED_BRANCHES:
            terminalreporter.write_line(f"{nodeid}: {description}")


# --- no process left behind ----------------------------------------------------------------
# The check lives in process_guard.py, a plugin of its own, so that a test can run it on a
# test that leaks (tests/test_harness.py); importing its hook here turns it on.
from process_guard import descendant_processes, pytest_sessionfinish  # noqa: E402, F401
