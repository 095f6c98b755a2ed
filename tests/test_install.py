"""d2ldw as a library people depend on: a real sdist and wheel, and dependencies that install
beside the frameworks a project (or Colab) already has.

pyproject.toml gives ranges (the oldest version tested as the lower bound, an upper bound only
with its reason beside it); requirements.txt keeps the book's exact stack. The last test
installs the built wheel, not an editable checkout, into a fresh virtual environment that
already has the newest torch and NumPy 2, checks that pip replaced nothing, and runs the
NumPy, PyTorch and TVM tests there. What the wheel holds is checked by
tests/test_package.py (test_the_wheel_holds_only_what_users_import); the sdist here.
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from conftest import REPO

# one pytest-xdist worker runs them all, so that the sdist and the wheel are built once
pytestmark = pytest.mark.xdist_group("install")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RELEASE = REPO / ".github" / "workflows" / "release.yml"


def requirements_txt():
    """{name: Requirement} of requirements.txt, the book's stack."""
    found = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def book_pin(name):
    """The version requirements.txt pins ``name`` to (``name==X``)."""
    (specifier,) = requirements_txt()[name].specifier
    assert specifier.operator == "==", f"requirements.txt should pin {name} exactly"
    return Version(specifier.version)


def source_version():
    """``__version__`` of d2ldw/__init__.py, read without importing it."""
    module = ast.parse((REPO / "d2ldw" / "__init__.py").read_text())
    (value,) = [node.value.value for node in module.body if isinstance(node, ast.Assign)
                and [target.id for target in node.targets] == ["__version__"]]
    return value


# --- the ranges ------------------------------------------------------------------------

def library_requirements():
    """(where, Requirement) of d2ldw's dependencies and of every extra."""
    project = PYPROJECT["project"]
    found = [("dependencies", Requirement(text)) for text in project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        found += [(f"[{extra}]", Requirement(text)) for text in requirements]
    return found


def test_extras_are_ranges_whose_lower_bound_is_the_book_pin():
    """No exact pin in the library: each requirement is a range whose lower bound is the
    oldest version tested, the one requirements.txt pins for the book (when it pins one)."""
    book = requirements_txt()
    checked = []
    for where, requirement in library_requirements():
        operators = {spec.operator: spec for spec in requirement.specifier}
        assert not operators.keys() & {"==", "===", "~="}, f"{where} {requirement}: a pin"
        assert ">=" in operators, f"{where} {requirement}: no lower bound"
        pinned = book.get(requirement.name.lower())
        if pinned is not None and [s.operator for s in pinned.specifier] == ["=="]:
            tested = book_pin(requirement.name.lower())
            assert Version(operators[">="].version) == tested, (
                f"{where} {requirement}: the lower bound is not the tested version, "
                f"requirements.txt's {requirement.name}=={tested}")
            checked.append(requirement.name)
    assert {"torch", "apache-tvm", "mxnet", "onnx", "onnxruntime"} <= set(checked), checked


def test_every_upper_bound_says_why():
    """An upper bound keeps users from versions that may well work: each names itself
    (``# <0.28: ...``) in the comment just above it, or at the end of its line."""
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    start = lines.index("[project]")
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("[tool."))
    bounded = []
    for number in range(start, end):
        code, _, comment = lines[number].partition("#")
        above = number - 1
        while lines[above].lstrip().startswith("#"):
            comment = lines[above].lstrip() + "\n" + comment
            above -= 1
        for text in re.findall(r'"([^"]+)"', code):
            try:
                requirement = Requirement(text)
            except InvalidRequirement:  # a description, a classifier
                continue
            for spec in requirement.specifier:
                if spec.operator in ("<", "<="):
                    assert f"<{spec.version}:" in comment, (
                        f"{requirement}: no reason for the upper bound beside it")
                    bounded.append(requirement.name)
    assert "apache-tvm" in bounded  # the check sees the upper bounds


# --- the sdist and the wheel --------------------------------------------------------------

@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel ``python -m build`` makes (the wheel built from the sdist, as
    the release workflow does) of a copy of this checkout: every file git tracks or would
    track, so tools/, _ext/, tests/ and chapters/ lie beside the package, as in a release."""
    root = tmp_path_factory.mktemp("dists")
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=REPO, capture_output=True,
                                check=True, timeout=60).stdout
    except FileNotFoundError:
        pytest.fail("git is needed to copy the checkout (git ls-files): install git")
    source = root / "source"
    for name in filter(None, listed.decode().split("\0")):
        path = REPO / name
        if path.is_file():  # a file deleted but not yet committed is listed too
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(root / "dist"),
                             str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    print(f"python -m build: {time.perf_counter() - start:.0f} s")
    (sdist,) = (root / "dist").glob("d2ldw-*.tar.gz")
    (wheel,) = (root / "dist").glob("d2ldw-*.whl")
    yield {"sdist": sdist, "wheel": wheel, "log": result.stdout + result.stderr}
    shutil.rmtree(root, ignore_errors=True)


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dists):
    # setuptools says what it will stop accepting (a license table, a data folder that is
    # not a package) in warnings; a release must not depend on anything deprecated
    assert not re.search(r"(?i)deprecat|SetuptoolsWarning|is absent from the `packages`",
                         dists["log"]), dists["log"][-4000:]
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                             str(dists["sdist"]), str(dists["wheel"])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_version_lives_in_one_place(dists):
    """d2ldw/__init__.py's ``__version__``; pyproject.toml reads it (dynamic), and the files
    built carry it in their names and metadata."""
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "d2ldw.__version__"}
    version = source_version()
    assert Version(version) == Version(version.lstrip("v"))  # a valid version, no 'v'
    assert dists["wheel"].name.startswith(f"d2ldw-{version}-")
    assert dists["sdist"].name == f"d2ldw-{version}.tar.gz"
    metadata = zipfile.ZipFile(dists["wheel"]).read(
        f"d2ldw-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nRequires-Dist: torch>=2.13; extra == \"torch\"\n" in metadata


def test_the_sdist_holds_the_package_and_what_builds_it_only(dists):
    """The same package files as the wheel (so a wheel built from the sdist is complete),
    its marker of type hints (py.typed) and the explorers' JavaScript included; no tests,
    tools, chapters or book configuration."""
    prefix = dists["sdist"].name[:-len(".tar.gz")] + "/"
    with tarfile.open(dists["sdist"]) as archive:
        names = {member.name[len(prefix):] for member in archive.getmembers()
                 if member.isfile()}
    package = {name for name in names if name.startswith("d2ldw/")}
    wheel = {name for name in zipfile.ZipFile(dists["wheel"]).namelist()
             if name.startswith("d2ldw/")}
    assert package == wheel
    assert {"d2ldw/py.typed", "d2ldw/__init__.py", "d2ldw/static/explorers.css"} <= wheel
    rest = names - package
    assert {name for name in rest if not name.startswith("d2ldw.egg-info/")} == {
        "PKG-INFO", "pyproject.toml", "README.md", "MANIFEST.in", "setup.cfg"}


# --- the release workflow -------------------------------------------------------------------
# (tests/test_publishing.py runs actionlint on every workflow, this one included)

def release_workflow():
    return yaml.safe_load(RELEASE.read_text())


def test_a_version_tag_builds_checks_and_publishes_with_trusted_publishing():
    workflow = release_workflow()
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads `on` as True
    assert workflow["permissions"] == {"contents": "read"}
    build, publish = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert "python -m build" in runs and "twine check --strict dist/*" in runs
    assert "grep -E '^(build|twine)==' requirements.txt" in runs  # the pinned tools
    assert build["steps"][-1]["uses"].startswith("actions/upload-artifact@")
    # only the publishing job may ask for an OpenID Connect token, and only in `pypi`
    assert "permissions" not in build
    assert publish["needs"] == "build" and publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step["uses"] for step in publish["steps"]]
    assert uses[0].startswith("actions/download-artifact@")
    assert uses[-1] == "pypa/gh-action-pypi-publish@release/v1"
    assert not any("password" in step.get("with", {}) for step in publish["steps"])


@pytest.mark.parametrize("tag, passes", [("v{version}", True), ("v0.0.0", False),
                                         ("{version}", False)])
def test_the_release_refuses_a_tag_that_is_not_the_version(tmp_path, tag, passes):
    """The workflow's own check, run on a wheel's name: the tag must be v<__version__>."""
    (script,) = [step["run"] for step in release_workflow()["jobs"]["build"]["steps"]
                 if step.get("name") == "The tag names the version built"]
    version = source_version()
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / f"d2ldw-{version}-py3-none-any.whl").touch()
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60,
                            env={**os.environ, "GITHUB_REF_NAME": tag.format(version=version)})
    assert (result.returncode == 0) == passes, result.stdout + result.stderr
    if not passes:
        assert f"the package is d2ldw {version}" in result.stdout


def test_make_dist_builds_and_checks_what_the_release_publishes():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ndist:", 1)[1].split("\n\n", 1)[0]
    assert "-m build" in recipe and "twine check --strict dist/*" in recipe
    assert re.search(r"^\.PHONY:.*\bdist\b", makefile, flags=re.M)


# --- the wheel beside the newest torch -------------------------------------------------------
# The wheel's extras installed into an environment that already has the newest torch and
# NumPy 2 (what a project, or Colab, has): pip must keep both. Then these tests run there,
# against the installed wheel: the NumPy references, the PyTorch modules and, with the
# newest torch in the same process, TVM. (MXNet needs NumPy < 2, and the explorers' widgets
# the book's anywidget: their tests stay with the book's stack.)
WHEEL_EXTRAS = "torch,tvm,bench"
WHEEL_TESTS = ["test_shapes_and_data.py", "test_numerics.py", "test_spatial.py",
               "test_cost.py", "test_timing.py", "test_count_cost.py", "test_mobilenets.py",
               "test_torch_harness.py", "test_mobilenet_tvm.py"]
# skips that hold wherever these tests run: test_timing.py has one test for machines with
# a GPU and one for machines without
ALLOWED_SKIPS = ("needs a CUDA GPU", "this machine has a GPU")
# A pytest plugin, run in the fresh environment: what the tests actually imported.
REPORT_PLUGIN = '''\
import json, os, sys

def pytest_sessionfinish(session):
    import importlib.metadata as metadata
    import d2ldw
    found = {"d2ldw": d2ldw.__file__, "imported": sorted(
        name for name in ("torch", "tvm", "onnxruntime", "mxnet") if name in sys.modules)}
    for name in ("torch", "numpy", "apache-tvm", "onnxruntime"):
        found[name] = metadata.version(name)
    with open(os.environ["D2LDW_WHEEL_REPORT"], "w") as file:
        json.dump(found, file)
'''


def installed(python, env):
    result = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, env=env, timeout=120, check=True)
    return {item["name"].lower(): item["version"] for item in json.loads(result.stdout)}


def pip_install(python, env, *requirements):
    start = time.perf_counter()
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-cache-dir",
                             "--progress-bar", "off", *requirements],
                            capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return time.perf_counter() - start, result.stdout


@pytest.mark.slow
def test_the_wheel_installs_beside_the_newest_torch_and_its_tests_pass_there(dists, tmp_path):
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "D2LDW_FULL_STACK")}
    # No constraint file: a machine's pip configuration may cap torch below the newest
    # (this project's machines do); a user's project has no such cap.
    env.update(PIP_CONSTRAINT=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        seconds, _ = pip_install(python, env, "torch", "numpy")
        before = installed(python, env)
        torch, numpy = Version(before["torch"]), Version(before["numpy"])
        print(f"fresh venv: torch {torch}, numpy {numpy} ({seconds:.0f} s)")
        assert torch.release > book_pin("torch").release, (
            f"the newest torch the index offers, {torch}, is the book's pin: nothing to check")
        assert numpy.major >= 2, numpy

        seconds, log = pip_install(
            python, env, f"d2ldw[{WHEEL_EXTRAS}] @ {dists['wheel'].as_uri()}",
            *(str(requirements_txt()[name]) for name in ("pytest", "matplotlib")))
        after = installed(python, env)
        replaced = {name: f"{version} -> {after.get(name, 'removed')}"
                    for name, version in before.items() if after.get(name) != version}
        assert not replaced, f"installing d2ldw[{WHEEL_EXTRAS}] replaced {replaced}:\n{log}"
        print(f"d2ldw[{WHEEL_EXTRAS}] installed in {seconds:.0f} s, torch {after['torch']} and "
              f"numpy {after['numpy']} kept, apache-tvm {after['apache-tvm']} added")

        report = tmp_path / "report.json"
        (tmp_path / "plugins").mkdir()
        (tmp_path / "plugins" / "wheel_report.py").write_text(REPORT_PLUGIN)
        start = time.perf_counter()
        # -P and a folder of its own as cwd: nothing puts the checkout's d2ldw on sys.path
        result = subprocess.run(
            [str(python), "-P", "-m", "pytest", "-p", "no:cacheprovider", "-p", "wheel_report",
             "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-q", "-rs",
             "-m", "not slow",
             *(str(REPO / "tests" / name) for name in WHEEL_TESTS)],
            capture_output=True, text=True, cwd=tmp_path, timeout=1500,
            env={**env, "PYTHONPATH": str(tmp_path / "plugins"),
                 "D2LDW_WHEEL_REPORT": str(report), "MPLBACKEND": "agg"})
        seconds = time.perf_counter() - start
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
        found = json.loads(report.read_text())
        assert Path(found["d2ldw"]).is_relative_to(venv), found["d2ldw"]
        assert (found["torch"], found["numpy"]) == (before["torch"], before["numpy"])
        assert {"torch", "tvm"} <= set(found["imported"]), found["imported"]
        assert "mxnet" not in found["imported"], found["imported"]
        skips = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", result.stdout, flags=re.M)
        assert all(reason.startswith(ALLOWED_SKIPS) for reason in skips), skips
        print(f"the wheel's tests with torch {found['torch']}, numpy {found['numpy']}, "
              f"apache-tvm {found['apache-tvm']}, onnxruntime {found['onnxruntime']}: "
              f"{summary} ({seconds:.0f} s)")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 6 GB with a CUDA build of torch
