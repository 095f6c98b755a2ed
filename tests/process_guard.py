"""No process left behind: a pytest plugin (tests/conftest.py turns it on).

Every kernel, server, browser and child process a test starts must be stopped by that test
or its fixture. At the end of the run, once every fixture is torn down, this plugin lists
the descendants of the pytest process that are still alive; any left fails the run, and is
killed so that it cannot hold memory after it (43 leaked Jupyter kernels once held 19.5 GB).
"""
import os
import signal
import sys
import time

import pytest

def descendant_processes(pid=None):
    """{pid: command line} of every living descendant of ``pid`` (default: this process),
    read from /proc; zombies (already dead, not yet reaped) do not count."""
    root = os.getpid() if pid is None else pid
    children, commands = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                commands[int(entry.name)] = cmdline.read().replace(b"\0", b" ").decode(
                    errors="replace").strip()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # ended while we looked
    found, todo = {}, list(children.get(root, []))
    while todo:
        child = todo.pop()
        if child in commands:
            found[child] = commands[child]
            todo.extend(children.get(child, []))
    return found


def wait_for_no_descendants(seconds=10.0, pid=None):
    """The descendants still alive after up to ``seconds``: a process that was told to stop
    may need a moment to exit."""
    deadline = time.monotonic() + seconds
    while (left := descendant_processes(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def pytest_sessionfinish(session, exitstatus):
    """Every kernel, server, browser and child a test started must be stopped by it: at the
    end of the run (fixtures torn down) nothing may be left. Leftovers fail the run, and
    are killed so that they cannot hold memory after it."""
    # a process told to stop may take a moment to exit; the harness's own test shortens it
    left = wait_for_no_descendants(float(os.environ.get("PROCESS_GUARD_GRACE_S", "10")))
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  {pid}: {command[:200]}" for pid, command in sorted(left.items())]
    message = "tests left processes behind (now killed):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message, file=sys.stderr)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
