"""Publishing: the Pages workflow is valid and complete, and every link to the repository
(launch buttons, repository button, Colab setup cells) follows repository.url in _config.yml."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
import colab

ACTIONLINT = Path(sys.executable).parent / "actionlint"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())


def actionlint(*paths):
    return subprocess.run([str(ACTIONLINT), "-no-color", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow files"
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check above can fail: a misspelt key and an unknown action input are reported."""
    broken = tmp_path / ".github" / "workflows" / "book.yml"
    broken.parent.mkdir(parents=True)
    text = (REPO / ".github/workflows/book.yml").read_text()
    broken.write_text(text.replace("runs-on:", "run-on:", 1)
                      .replace("path: _build/html", "paht: _build/html"))
    result = actionlint(broken)
    assert result.returncode == 1
    assert '"run-on"' in result.stdout and '"paht"' in result.stdout, result.stdout


def steps(job):
    return job["steps"]


def test_book_workflow_builds_strictly_and_deploys_to_pages():
    workflow = yaml.safe_load((REPO / ".github/workflows/book.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "read", "pages": "write",
                                       "id-token": "write"}
    assert workflow["concurrency"]["group"] == "pages"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = [step.get("uses", "").split("@")[0] for step in steps(build)]
    runs = [step.get("run") for step in steps(build)]
    assert "make book" in runs  # -W -n --keep-going, set-up included (see the Makefile)
    for action in ("actions/setup-python", "actions/cache", "actions/configure-pages",
                   "actions/upload-pages-artifact"):
        assert action in uses, action
    by_action = {step.get("uses", "").split("@")[0]: step for step in steps(build)}
    assert by_action["actions/setup-python"]["with"]["cache"] == "pip"
    assert by_action["actions/cache"]["with"]["path"] == "_build/.jupyter_cache"
    assert by_action["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "hashFiles('package.json')" in by_action["actions/setup-node"]["if"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in steps(deploy)] == ["actions/deploy-pages"]


def test_tests_workflow_runs_the_whole_suite_on_pushes_and_pull_requests():
    workflow = yaml.safe_load((REPO / ".github/workflows/tests.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert workflow["permissions"] == {"contents": "read"}
    job = workflow["jobs"]["test"]
    runs = [step.get("run") for step in steps(job)]
    # the README's test command, then the reduced instruction set, as .ci/run does
    assert runs[-2:] == ["make test", "make test-reduced-isa"]
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "make test\n" in ci_run and "make test-reduced-isa" in ci_run
    by_action = {step.get("uses", "").split("@")[0]: step for step in steps(job)}
    assert by_action["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert "download.pytorch.org/whl/cpu" in job["env"]["PIP_EXTRA_INDEX_URL"]
    assert job["env"]["CHROMIUM"]  # test_browser.py drives the runner's own browser


def test_make_book_is_what_the_workflow_runs_and_it_checks_the_setup_cells():
    makefile = (REPO / "Makefile").read_text()
    book_recipe = makefile.split("\nbook:", 1)[1].split("\n\n", 1)[0]
    assert "tools/colab.py" in book_recipe
    # never a build against a stale package: the #@save cells and d2ldw/ must agree first
    assert book_recipe.index("extract.py --check") < book_recipe.index("jupyter-book build")
    assert "jupyter-book build . -W -n --keep-going" in book_recipe


def test_setup_cells_install_from_repository_url():
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    pages = colab.notebooks(REPO)
    assert pages
    for page in pages:
        first = "".join(json.loads(page.read_text())["cells"][0]["source"])
        assert f'"git+{url}@{branch}"' in first, page


@pytest.fixture()
def fork(tmp_path):
    for name in ("_config.yml", "_toc.yml", "pyproject.toml", "requirements.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("chapters", "d2ldw"):
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace(CONFIG["repository"]["url"],
                                                 "https://github.com/someone/fork"))
    return tmp_path


def test_a_fork_changes_one_line_and_regenerates(fork):
    assert colab.main(["--check", "--root", str(fork)]) == 1  # stale until regenerated
    assert colab.main(["--root", str(fork)]) == 0
    for page in colab.notebooks(fork):
        text = page.read_text()
        assert "git+https://github.com/someone/fork@" in text, page
        assert "github.com/d2ldw/d2ldw" not in text, page
