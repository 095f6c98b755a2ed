"""Run a command and report its wall time and peak memory: `python3 .ci/measure.py CMD...`.

Peak memory is sampled every second, two ways: the summed resident set (RSS) of the command
and all its descendants (an upper bound: pages shared between processes count once per
process), and the machine's memory in use (MemTotal - MemAvailable) above what it was at the
start. The report goes to stderr after the command ends; the exit status is the command's.
Standard library only: it runs before any virtual environment exists.
"""
import os
import subprocess
import sys
import threading
import time


def meminfo_kib(field):
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def in_use_kib():
    return meminfo_kib("MemTotal") - meminfo_kib("MemAvailable")


def tree_rss_kib(root):
    """Summed VmRSS of ``root`` and its descendants, from /proc."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        pid = int(entry)
        parents[pid] = int(fields["PPid"])
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    children = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def main(argv):
    if not argv:
        sys.exit("usage: python3 .ci/measure.py COMMAND [ARGUMENTS...]")
    baseline = in_use_kib()
    peak = {"tree": 0, "machine": 0}
    start = time.monotonic()
    process = subprocess.Popen(argv)
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["tree"] = max(peak["tree"], tree_rss_kib(process.pid))
            peak["machine"] = max(peak["machine"], in_use_kib() - baseline)
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status = process.wait()
    done.set()
    sampler.join()
    gib = 1024 * 1024
    print(f"measure: `{' '.join(argv)}` took {time.monotonic() - start:.0f} s; peak memory "
          f"{peak['tree'] / gib:.1f} GiB summed RSS of its processes, "
          f"{peak['machine'] / gib:.1f} GiB more in use on the machine; exit status {status}",
          file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
