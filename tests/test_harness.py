"""The test harness itself: the process guard (tests/process_guard.py) and the tiers."""
import os
import re
import subprocess
import sys
import time

from conftest import REPO
from process_guard import descendant_processes, wait_for_no_descendants


def test_descendants_are_found_down_the_tree_and_gone_once_stopped():
    # a shell whose child sleeps: both are descendants of this process
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        deadline = time.monotonic() + 10
        while (found := descendant_processes()) and time.monotonic() < deadline:
            if any(command == "sleep 60" for command in found.values()):
                break
            time.sleep(0.05)
        assert shell.pid in found
        assert "sleep 60" in found.values()
    finally:
        shell.kill()
        shell.wait()
    sleeper = [pid for pid, command in found.items() if command == "sleep 60"][0]
    os.kill(sleeper, 9)
    assert shell.pid not in wait_for_no_descendants(5)
    assert sleeper not in wait_for_no_descendants(5)


def run_inner_pytest(tmp_path, test_source):
    (tmp_path / "test_inner.py").write_text(test_source)
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "PROCESS_GUARD_GRACE_S": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "process_guard", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_a_test_that_leaves_a_process_behind_fails_the_run(tmp_path):
    run = run_inner_pytest(tmp_path, (
        "import subprocess\n"
        "def test_leaks():\n"
        "    subprocess.Popen(['sleep', '61'])\n"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed" in run.stdout  # the test itself passed; the leak fails the run
    assert "tests left processes behind (now killed)" in run.stdout
    pid = int(re.search(r"^\s+(\d+): sleep 61$", run.stdout, flags=re.M).group(1))
    # killed, not orphaned: gone (or at most a zombie that init reaps)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{pid}")


def test_a_test_that_stops_its_process_passes(tmp_path):
    run = run_inner_pytest(tmp_path, (
        "import subprocess\n"
        "def test_stops():\n"
        "    p = subprocess.Popen(['sleep', '61'])\n"
        "    p.kill()\n"
        "    p.wait()\n"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "left processes behind" not in run.stdout


def test_tests_that_need_the_book_the_browser_or_colab_are_slow():
    """The fast tier leaves out exactly what takes minutes: checked on the collected suite."""
    files = ["tests/test_book.py", "tests/test_browser.py", "tests/test_colab.py",
             "tests/test_prose_numbers.py", "tests/test_numerics.py",
             "tests/test_shapes_and_data.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow",
         "-p", "no:cacheprovider", *files],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    slow = [line for line in run.stdout.splitlines() if "::" in line]
    assert any("test_strict_build_executes_every_chapter" in t for t in slow)
    assert any(t.startswith("tests/test_browser.py::") for t in slow)
    assert any("test_chapter_runs_in_colab_from_its_setup_cell_alone" in t for t in slow)
    assert any("test_every_number_in_the_prose_is_printed" in t for t in slow)
    # the reader-facing unit tests stay in the fast tier
    assert not any(t.startswith(("tests/test_numerics.py", "tests/test_shapes_and_data.py"))
                   for t in slow)


def test_colab_runs_come_first_largest_group_first(tmp_path):
    """Under pytest-xdist the Colab runs are handed out first, their largest groups first."""
    import pytest

    from conftest import colab_first

    class Item:
        def __init__(self, name, colab=False, group=None):
            self.name, self.marks = name, {}
            if colab:
                self.marks["colab"] = pytest.mark.colab.mark
            if group:
                self.marks["xdist_group"] = pytest.mark.xdist_group(group).mark

        def get_closest_marker(self, name):
            return self.marks.get(name)

    items = [Item("fast1"), Item("small", True, "B"), Item("fast2"),
             Item("big1", True, "A"), Item("big2", True, "A"), Item("last", True)]
    assert [i.name for i in colab_first(items)] == [
        "big1", "big2", "small", "last", "fast1", "fast2"]
