"""The package's type hints hold: mypy, configured in pyproject.toml ([tool.mypy]), finds
nothing in d2ldw. The hints are the public API's signatures, written in the chapters'
#@save cells and in the hand-written modules; a hint that contradicts the code (or a call
that contradicts a hint) fails here, with mypy's report."""
import subprocess
import sys

import pytest

from conftest import REPO

# A cold run (a fresh clone: no .mypy_cache) takes about 20 s on two cores, a warm one 2 s:
# slow, so `make test` runs it in its first phase and `make test-fast` leaves it out.
TIMEOUT = 300


@pytest.mark.slow
def test_mypy_finds_nothing_in_the_package():
    try:
        run = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                             text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        raise AssertionError(f"mypy took more than {TIMEOUT} s") from None
    report = run.stdout + run.stderr
    print(report)
    assert run.returncode == 0 and "Success: no issues found" in report, report

