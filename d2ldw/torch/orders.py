"""Which summation order PyTorch's depthwise kernels follow: a survey in a child process.

Written by hand (harness, not extracted from a chapter). The numerics chapter emulates the
orders a kernel can follow and probes the order of a sum it cannot see
(``d2ldw.sequential_depthwise``, ``d2ldw.matching_order``, ``d2ldw.probe_depthwise_order``);
this module applies them to ``F.conv2d(groups=C)`` and ``depthwise_conv2d_unfold`` in a fresh
process, because the variables that steer oneDNN (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``) act only before PyTorch loads, and reads oneDNN's log to name the
kernel that ran. The page shows the results; the plumbing lives here, with its tests.
"""
import functools
import json
import os
import subprocess
import sys

__all__ = ["survey_depthwise_orders"]


# seconds one survey may take before it counts as hung (four cases take a few seconds)
SURVEY_TIMEOUT = 600


# Harness for chapters/numerics/bitwise.ipynb
def survey_depthwise_orders(cases, environment=None, threads=2):
    """Which summation order ``F.conv2d(groups=C)`` and ``depthwise_conv2d_unfold`` follow.

    ``cases`` maps a name to ``(M, k, kwargs)``: a depthwise convolution of 16 channels with
    channel multiplier ``M``, a ``k x k`` kernel and the keyword arguments ``kwargs`` of
    ``F.conv2d`` (stride, padding, dilation), on seeded float32 data of batch 2 and size
    14x14 (``d2ldw.get_conv_data(..., seed=0)``). Each case runs in a fresh Python process
    with ``threads`` threads, oneDNN's log on (``ONEDNN_VERBOSE=1``) and ``environment``
    changing its variables (as ``ONEDNN_MAX_CPU_ISA``, which oneDNN reads once, at load).

    Returns one dict per case, in order: ``case`` (its name); ``kernel``, the name oneDNN's
    log gives the implementation that ran ``F.conv2d`` (None if it logged none);
    ``conv`` and ``unfold``, the ``(order, fraction)`` of ``d2ldw.matching_order`` for the
    two results; and ``probe``, row 0 of ``d2ldw.probe_depthwise_order`` for ``F.conv2d``
    (the size of the partial sum in which tap 0 meets each later tap).
    """
    if not isinstance(cases, dict) or not cases:
        raise TypeError(f"cases must be a non-empty dict name -> (M, k, kwargs), got "
                        f"{cases!r}")
    for name, case in cases.items():
        if not (isinstance(case, (tuple, list)) and len(case) == 3
                and isinstance(case[2], dict)):
            raise ValueError(f"case {name!r} must be (M, k, kwargs), got {case!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    changes = {name: str(value) for name, value in (environment or {}).items()}
    child = subprocess.run(
        [sys.executable, "-c", "from d2ldw.torch.orders import _survey; _survey()",
         json.dumps({"cases": cases, "threads": threads})],
        env={**os.environ, "ONEDNN_VERBOSE": "1", **changes}, capture_output=True,
        text=True, timeout=SURVEY_TIMEOUT)
    if child.returncode != 0:
        raise RuntimeError(f"the survey failed in its own process (exit "
                           f"{child.returncode}):\n{child.stderr[-3000:]}")
    return list(_survey_results(child.stdout))


def _survey_results(log):
    """The survey's results from the child's output, each with the first oneDNN kernel
    logged between its CASE and RESULT lines."""
    kernel = None
    for line in log.splitlines():
        if line.startswith("CASE"):
            kernel = None
        elif ",exec,cpu,convolution," in line and kernel is None:
            kernel = line.split(",")[6]  # oneDNN's name of the implementation
        elif line.startswith("RESULT"):
            name, conv, unfold, probe = json.loads(line[len("RESULT"):])
            yield {"case": name, "kernel": kernel, "conv": tuple(conv),
                   "unfold": tuple(unfold), "probe": probe}


def _survey():
    """The child of survey_depthwise_orders: one CASE line, oneDNN's log, one RESULT line
    per case, on standard output."""
    import torch
    from torch.nn import functional as F

    import d2ldw
    from d2ldw.torch.convolutions import depthwise_conv2d_unfold

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])

    def conv(x, w, **kwargs):
        return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=x.shape[1],
                        **kwargs).numpy()

    for name, (m, k, kwargs) in spec["cases"].items():
        x, w, _ = d2ldw.get_conv_data(16, 16 * m, 14, k, batch=2, groups=16, seed=0)
        print("CASE", flush=True)  # oneDNN's log line for F.conv2d follows
        y = conv(x, w, **kwargs)
        unfold = depthwise_conv2d_unfold(torch.from_numpy(x), torch.from_numpy(w), **kwargs)
        sizes = d2ldw.probe_depthwise_order(functools.partial(conv, **kwargs), x.shape,
                                            w.shape, **kwargs)
        print("RESULT", json.dumps([name, d2ldw.matching_order(y, x, w, **kwargs),
                                    d2ldw.matching_order(unfold.numpy(), x, w, **kwargs),
                                    sizes[0, 1:9].tolist()]), flush=True)
