"""One library per process: the book's rule for timing libraries against each other.

Hand-written plumbing (not generated from the chapters). Two thread pools in one process
slow each other down (the performance chapter measures it for MXNet and PyTorch), so every
comparison in the book calls each library's timing function through :func:`run_isolated`:
a fresh Python process, the same thread count for every library, glibc's allocator told to
reuse freed memory, and the result handed back as JSON.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ENVIRONMENT", "bind_beside_pinned_threads", "thread_environment", "isolated_environment", "run_isolated",
           "report_progress", "describe_process"]

# Freed memory is reused instead of returned to the system: without this, the page faults of
# fresh mappings can dominate a framework's timings on a virtual machine.
ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "1000000000",
}

# seconds one child may take before it counts as hung
TIMEOUT = 1200

# A line a child writes to stderr to say how far it got (report_progress); run_isolated hands
# its text to on_progress and keeps every other line for the error message.
PROGRESS_MARK = "\x1ed2ldw-progress\x1f"

_CHILD = """
import importlib, json, sys
spec = json.load(sys.stdin)
module, name = spec["function"].split(":")
result = getattr(importlib.import_module(module), name)(**spec["kwargs"])
with open(spec["out"], "w") as out:
    json.dump(result, out)
"""


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that give PyTorch, TVM, MXNet, OpenMP and oneDNN ``threads`` threads."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TVM_NUM_THREADS": str(threads),
        # TVM pins its workers to cores (its default, stated here so that no inherited
        # setting changes it): measured on a loaded 2-core machine, unpinned workers were
        # slower and varied more
        "TVM_BIND_THREADS": "1",
        "MXNET_OMP_MAX_THREADS": str(threads),
        "D2LDW_THREADS": str(threads),
    }


def isolated_environment(threads: int,
                         changes: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a child process of :func:`run_isolated`; ``changes`` maps
    variables to new values, or to None to remove them."""
    environment = {**os.environ, **ENVIRONMENT, **thread_environment(threads)}
    for name, value in (changes or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = str(value)
    return environment


def _function_path(function):
    if isinstance(function, str):
        if function.count(":") != 1:
            raise ValueError(f"function must be 'module:name', got {function!r}")
        return function
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not callable(function) or not module or module == "__main__" or "." in name \
            or "<" in name:
        raise TypeError(f"function must be a module-level function of an importable module "
                        f"or 'module:name', got {function!r}")
    return f"{module}:{name}"


def report_progress(message: str) -> None:
    """Tell the parent :func:`run_isolated` how far this child got (``"layer 3/9"``); a
    no-op outside a child of :func:`run_isolated`."""
    if os.environ.get("D2LDW_ISOLATED") == "1":
        print(f"{PROGRESS_MARK}{message}", file=sys.stderr, flush=True)


def _read_stderr(stream, kept, on_progress):
    """Hand progress lines to ``on_progress``, keep the others (the end of them is what a
    failure reports)."""
    for line in stream:
        if line.startswith(PROGRESS_MARK):
            if on_progress is not None:
                on_progress(line[len(PROGRESS_MARK):].rstrip("\n"))
        else:
            kept.append(line)
            del kept[:-200]


def run_isolated(function: Callable[..., Any], threads: int,
                 environment: Mapping[str, str | None] | None = None, /,
                 on_progress: Callable[[str], object] | None = None, **kwargs: Any) -> Any:
    """``function(threads=threads, **kwargs)`` in a fresh Python process; its result.

    ``function`` is a module-level function (or ``"module:name"``) whose arguments and result
    are JSON-able; it is told ``threads`` and should use that many. ``environment``
    changes the child's variables (None removes one), for experiments on them. The child gets
    :data:`ENVIRONMENT` and :func:`thread_environment`, so no other library shares its cores
    or its process. ``on_progress``, if given, is called with each message the child passes
    to :func:`report_progress`, while it runs. A failure raises RuntimeError with the end of
    the child's error output.
    """
    thread_environment(threads)  # checks threads
    if on_progress is not None and not callable(on_progress):
        raise TypeError(f"on_progress must be callable or None, got "
                        f"{type(on_progress).__name__}")
    path = _function_path(function)
    module, name = path.split(":")
    if not callable(getattr(importlib.import_module(module), name, None)):
        raise ValueError(f"{module} has no function {name!r}")
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        spec = json.dumps({"function": path, "kwargs": {"threads": threads, **kwargs},
                           "out": out})
        child_environment = isolated_environment(threads, environment)
        child_environment["D2LDW_ISOLATED"] = "1"
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=child_environment)
        kept: list[str] = []
        reader = threading.Thread(target=_read_stderr, args=(child.stderr, kept, on_progress),
                                  daemon=True)
        reader.start()
        try:
            child.stdin.write(spec)  # type: ignore[union-attr]  # stdin=PIPE: not None
            child.stdin.close()  # type: ignore[union-attr]
            returncode = child.wait(timeout=TIMEOUT)
        except BaseException:  # a timeout, or Ctrl-C: the child goes with it
            child.kill()
            child.wait()
            raise
        finally:
            reader.join(timeout=10)
            child.stderr.close()  # type: ignore[union-attr]  # stderr=PIPE: not None
        if returncode != 0:
            raise RuntimeError(f"{path} failed in its own process (exit {returncode}):\n"
                               f"{''.join(kept)[-3000:]}")
        with open(out) as result:
            return json.load(result)


def _pinned_cpus() -> set[int]:
    """The CPUs that some other thread of this process is bound to alone (Linux)."""
    pinned = set()
    me = threading.get_native_id()
    for task in os.listdir("/proc/self/task"):
        if int(task) == me:
            continue
        try:
            cpus = os.sched_getaffinity(int(task))
        except OSError:  # the thread ended meanwhile
            continue
        if len(cpus) == 1:
            pinned |= cpus
    return pinned


def bind_beside_pinned_threads() -> frozenset[int]:
    """Bind the calling thread to this process's CPUs that no other of its threads is bound
    to alone; return the CPUs it may now run on.

    TVM's thread pool (``TVM_BIND_THREADS=1``) binds each worker to one CPU and leaves the
    thread that launches the kernels, which does the first share of every parallel loop
    itself, free to move: measured on a 2-core VM, that thread sometimes landed on the
    worker's CPU, and two kernels run back to back took twice as long as in other processes.
    Call this after the pool has started, in a process that only times (``check_tvm_threads``
    does, in the processes of ``run_isolated``): threads and processes created later inherit
    the binding. Where every CPU is taken, or off Linux, nothing changes."""
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else frozenset()
    allowed = os.sched_getaffinity(0)
    free = allowed - _pinned_cpus()
    if free and free != allowed:
        os.sched_setaffinity(0, free)
    return frozenset(os.sched_getaffinity(0))


def describe_process(threads: int) -> dict[str, Any]:
    """This process's id and the variables :func:`run_isolated` sets: a check that a child
    got what it was promised (``run_isolated(describe_process, threads)``)."""
    names = [*thread_environment(threads), *ENVIRONMENT]
    return {"pid": os.getpid(), "environment": {n: os.environ.get(n) for n in names}}
