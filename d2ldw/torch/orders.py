"""Which summation order PyTorch's depthwise kernels follow: a survey in a child process.

Written by hand (harness, not extracted from a chapter). The numerics chapter emulates the
orders a kernel can follow and probes the order of a sum it cannot see
(``d2ldw.sequential_depthwise``, ``d2ldw.matching_order``, ``d2ldw.probe_depthwise_order``);
this module applies them to ``F.conv2d(groups=C)`` and ``depthwise_conv2d_unfold`` in a fresh
process, because the variables that steer oneDNN (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``) act only before PyTorch loads, and reads oneDNN's log to name the
kernel that ran. The page shows the results; the plumbing lives here, with its tests.
``depthwise_dispatch`` reads the same log to name every oneDNN primitive one ``F.conv2d`` runs.
"""
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["depthwise_dispatch", "survey_depthwise_orders"]


# seconds one survey may take before it counts as hung (four cases take a few seconds)
SURVEY_TIMEOUT = 600


# Harness for chapters/numerics/bitwise.ipynb
def survey_depthwise_orders(cases: Mapping[str, Sequence[Any]],
                            environment: Mapping[str, object] | None = None,
                            threads: int = 2) -> list[dict[str, Any]]:
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


def _onednn_exec(line: str) -> dict[str, str] | None:
    """One primitive oneDNN ran, from a line of its log (``ONEDNN_VERBOSE=1``), or None.

    A line reads ``onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,
    <propagation>,<memory descriptors>,...``; a descriptor reads ``src:f32::blocked:abcd::f0``.
    Returns ``primitive`` (convolution, reorder, ...), ``implementation`` (as
    ``jit_dw:avx512_core``: kernel, then the instruction set it was compiled for) and, for
    each of ``src``, ``wei`` and ``dst`` present, its memory format (``aBcd16b``: blocks of
    16 channels).
    """
    fields = line.strip().split(",")
    if len(fields) < 9 or fields[0] != "onednn_verbose" or "exec" not in fields[2:4]:
        return None
    start = fields.index("exec") + 1  # the engine (cpu), then the primitive
    found = {"primitive": fields[start + 1], "implementation": fields[start + 2]}
    for descriptor in fields[start + 4].split():
        name, _, rest = descriptor.partition(":")
        parts = rest.split(":")
        if name in ("src", "wei", "dst") and "blocked" in parts:
            found[name] = parts[parts.index("blocked") + 1]
    return found


def _survey_results(log: str) -> Iterator[dict[str, Any]]:
    """The survey's results from the child's output, each with the first oneDNN kernel
    logged between its CASE and RESULT lines."""
    kernel = None
    for line in log.splitlines():
        ran = _onednn_exec(line)
        if line.startswith("CASE"):
            kernel = None
        elif ran and ran["primitive"] == "convolution" and kernel is None:
            kernel = ran["implementation"]
        elif line.startswith("RESULT"):
            name, conv, unfold, probe = json.loads(line[len("RESULT"):])
            yield {"case": name, "kernel": kernel, "conv": tuple(conv),
                   "unfold": tuple(unfold), "probe": probe}


def _survey() -> None:
    """The child of survey_depthwise_orders: one CASE line, oneDNN's log, one RESULT line
    per case, on standard output."""
    import torch
    from torch.nn import functional as F

    import d2ldw
    from d2ldw.torch.convolutions import depthwise_conv2d_unfold

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])

    def conv(x: "np.ndarray", w: "np.ndarray", **kwargs: Any) -> "np.ndarray":
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


# Harness for chapters/performance/results.ipynb
def depthwise_dispatch(channels: int, size: int, stride: int = 1, threads: int = 1,
                       environment: Mapping[str, object] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """What PyTorch runs for one float32 depthwise 3x3 layer (padding 1) on this CPU.

    In a fresh process with oneDNN's log on (``ONEDNN_VERBOSE=1``, ``environment`` changing
    further variables, as ``ONEDNN_MAX_CPU_ISA``) and ``threads`` threads, the layer of
    ``channels`` channels on a ``size x size`` image (seeded data, batch 1) is called once in
    NCHW and once in channels_last. Returns ``{"NCHW": ..., "channels_last": ...}``, each a
    dict with ``backend``, ATen's choice (``torch._C._select_conv_backend``: ``Mkldnn`` is
    oneDNN), and ``primitives``, what oneDNN logged during that call, in order (see
    ``_onednn_exec``: reorders between layouts and the convolution, each with its
    implementation and memory formats).
    """
    for name, value in (("channels", channels), ("size", size), ("stride", stride),
                        ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    changes = {name: str(value) for name, value in (environment or {}).items()}
    child = subprocess.run(
        [sys.executable, "-c", "from d2ldw.torch.orders import _dispatch; _dispatch()",
         json.dumps([channels, size, stride, threads])],
        env={**os.environ, "ONEDNN_VERBOSE": "1", **changes}, capture_output=True,
        text=True, timeout=SURVEY_TIMEOUT)
    if child.returncode != 0:
        raise RuntimeError(f"the dispatch probe failed in its own process (exit "
                           f"{child.returncode}):\n{child.stderr[-3000:]}")
    return _dispatch_results(child.stdout)


def _dispatch_results(log: str) -> dict[str, dict[str, Any]]:
    """The probe's results: each LAYOUT line opens a layout, oneDNN's lines follow."""
    results: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in log.splitlines():
        if line.startswith("LAYOUT"):
            name, backend = json.loads(line[len("LAYOUT"):])
            current = results[name] = {"backend": backend, "primitives": []}
        elif current is not None and (ran := _onednn_exec(line)):
            current["primitives"].append(ran)
    return results


def _dispatch() -> None:
    """The child of depthwise_dispatch: per layout one LAYOUT line, then oneDNN's log."""
    import torch
    from torch.nn import functional as F

    import d2ldw

    channels, size, stride, threads = json.loads(sys.argv[1])
    torch.set_num_threads(threads)
    x, w, _ = d2ldw.get_conv_data(channels, channels, size, 3, groups=channels, seed=0)
    x, w = torch.from_numpy(x), torch.from_numpy(w)
    for name, layout in (("NCHW", torch.contiguous_format),
                         ("channels_last", torch.channels_last)):
        xl, wl = (t.contiguous(memory_format=layout) for t in (x, w))
        backend = torch._C._select_conv_backend(
            xl, wl, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], channels, None)
        print("LAYOUT", json.dumps([name, backend.name]), flush=True)
        F.conv2d(xl, wl, stride=stride, padding=1, groups=channels)
