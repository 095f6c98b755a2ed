"""A MobileNet's depthwise + pointwise pairs, fused and not, timed side by side.

Hand-written harness of the section "Fusing the depthwise layer into the next one"
(``chapters/performance/fusion.ipynb``): it finds every depthwise layer that a pointwise layer
follows, builds each pair as the network builds it (two kernels, the depthwise result written
to memory between them) and as one fused kernel (``d2ldw.tvm.depthwise_pointwise_nchwc``),
checks both against the pair evaluated in float64, and times them interleaved. Run
``time_fusion`` in a process of its own (``d2ldw.isolated.run_isolated``), which gives TVM its
threads.
"""
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from d2ldw.bench.peers import check_tvm_threads
from d2ldw.hardware import cpu_caches, describe_cpu
from d2ldw.shapes import checked_int
from d2ldw.timing import time_interleaved

__all__ = ["depthwise_pointwise_pairs", "pair_reference", "PairKernels", "time_fusion",
           "format_fusion_table"]


# Harness for chapters/performance/fusion.ipynb
def depthwise_pointwise_pairs(layers: Sequence[Mapping[str, Any]]) -> list[int]:
    """The indices ``k`` of ``inference_layers``' list where layer ``k`` is a depthwise
    convolution and layer ``k + 1`` a pointwise one: the pairs a fused kernel can take."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not all(
            isinstance(layer, Mapping) and "kind" in layer for layer in layers):
        raise TypeError("layers must be inference_layers' list of dicts with a 'kind', got "
                        f"{type(layers).__name__}")
    return [k for k in range(len(layers) - 1)
            if layers[k]["kind"] == "depthwise" and layers[k + 1]["kind"] == "pointwise"]


def _activate(y, activation):
    if activation is None:
        return y
    y = np.maximum(y, 0.0)
    return np.minimum(y, 6.0) if activation == "relu6" else y


# Harness for chapters/performance/fusion.ipynb
def pair_reference(depthwise: Mapping[str, Any], pointwise: Mapping[str, Any],
                   x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    """The pair applied to the NCHW input ``x`` in float64 (PyTorch's ``F.conv2d``), with the
    pointwise layer's ``residual`` input added before its activation."""
    import torch
    from torch.nn import functional as F

    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise TypeError(f"x must be an NCHW NumPy array, got {type(x).__name__} "
                        f"{getattr(x, 'shape', '')}")
    w = torch.from_numpy(depthwise["weight"]).double()
    y = F.conv2d(torch.from_numpy(x).double(), w,
                 torch.from_numpy(depthwise["bias"]).double(), depthwise["stride"],
                 depthwise["padding"], groups=w.shape[0]).numpy()
    y = _activate(y, depthwise["activation"])
    z = F.conv2d(torch.from_numpy(y), torch.from_numpy(pointwise["weight"]).double(),
                 torch.from_numpy(pointwise["bias"]).double()).numpy()
    if residual is not None:
        z = z + residual
    return _activate(z, pointwise["activation"])


# Harness for chapters/performance/fusion.ipynb
class PairKernels:
    """One depthwise + pointwise pair compiled both ways, on the same arrays.

    ``separate()`` runs the network's two kernels (``schedule_conv_nchwc``, the pointwise
    one with ``register_tile``), ``fused()`` the one kernel of
    ``schedule_depthwise_pointwise``; each leaves its output in NCHW[x]c, which
    ``outputs()`` returns as NCHW: ``{"separate": ..., "fused": ...}``. Kernels of the same
    shapes are built once: pass the same ``cache`` dict to every pair."""

    def __init__(self, depthwise: Mapping[str, Any], pointwise: Mapping[str, Any],
                 x: np.ndarray, residual: np.ndarray | None = None,
                 cache: dict | None = None):
        import tvm
        from tvm import te

        from d2ldw import tvm as d2l_tvm

        if depthwise.get("kind") != "depthwise" or pointwise.get("kind") != "pointwise":
            raise ValueError(f"expected a depthwise then a pointwise layer, got "
                             f"{depthwise.get('kind')!r} then {pointwise.get('kind')!r}")
        cache = {} if cache is None else cache
        lanes = d2l_tvm.host_vector_lanes()
        n, c, h, w = x.shape
        o = pointwise["weight"].shape[0]
        xb, yb = d2l_tvm.channel_block(c, lanes), d2l_tvm.channel_block(o, lanes)
        X = te.placeholder((n, c // xb, h, w, xb), name="X")
        Kd = te.placeholder((c // xb, *depthwise["weight"].shape[2:], xb), name="Kd")
        Bd = te.placeholder((c // xb, xb), name="Bd")
        Kp = te.placeholder((o // yb, c, yb), name="Kp")
        Bp = te.placeholder((o // yb, yb), name="Bp")
        stride, padding = depthwise["stride"], depthwise["padding"]
        Y = d2l_tvm.depthwise_conv2d_nchwc(X, Kd, stride, padding)
        M = te.placeholder(Y.shape, name="M")  # the depthwise result, in memory
        R = te.placeholder((n, o // yb, *Y.shape[2:4], yb), name="R") \
            if residual is not None else None
        extra = [R] if R is not None else []
        key = (X.shape, Kd.shape, Kp.shape, stride, padding, depthwise["activation"],
               pointwise["activation"], R is not None)
        if key not in cache:
            first = d2l_tvm.bias_activation_nchwc(Y, Bd, depthwise["activation"])
            second = d2l_tvm.bias_activation_nchwc(
                d2l_tvm.pointwise_conv2d_nchwc(M, Kp), Bp, pointwise["activation"], R)
            registers = d2l_tvm.vector_registers()
            _, out_blocks, _, width, _ = (int(d) for d in second.shape)
            tile = d2l_tvm.register_tile(width, out_blocks, registers)
            fused = d2l_tvm.bias_activation_nchwc(
                d2l_tvm.depthwise_pointwise_nchwc(X, Kd, Bd, Kp, stride, padding,
                                                  depthwise["activation"]),
                Bp, pointwise["activation"], R)
            cache[key] = (
                d2l_tvm.build(d2l_tvm.schedule_conv_nchwc(
                    d2l_tvm.prim_module([X, Kd, Bd, first]))),
                d2l_tvm.build(d2l_tvm.schedule_conv_nchwc(
                    d2l_tvm.prim_module([M, Kp, Bp, *extra, second]), *tile)),
                d2l_tvm.build(d2l_tvm.schedule_depthwise_pointwise(
                    d2l_tvm.prim_module([X, Kd, Bd, Kp, Bp, *extra, fused]), *tile)))
        self._depthwise, self._pointwise, self._fused = cache[key]
        device = tvm.cpu()

        def array(a):
            return tvm.runtime.tensor(np.ascontiguousarray(a, dtype="float32"), device)

        weight = pointwise["weight"][:, :, 0, 0]
        self._x = array(d2l_tvm.to_nchwc(x, xb))
        self._kd = array(d2l_tvm.depthwise_weight_to_nchwc(depthwise["weight"], xb))
        self._bd = array(depthwise["bias"].reshape(c // xb, xb))
        self._kp = array(weight.reshape(o // yb, yb, c).transpose(0, 2, 1))
        self._bp = array(pointwise["bias"].reshape(o // yb, yb))
        self._r = [array(d2l_tvm.to_nchwc(residual, yb))] if residual is not None else []
        self._middle = array(np.zeros([int(d) for d in Y.shape], "float32"))
        out_shape = (n, o // yb, int(Y.shape[2]), int(Y.shape[3]), yb)
        self._out = {name: array(np.zeros(out_shape, "float32"))
                     for name in ("separate", "fused")}
        self.intermediate_bytes = 4 * int(np.prod([int(d) for d in Y.shape]))
        self.row_bytes = self.intermediate_bytes // (n * int(Y.shape[2]))

    def separate(self) -> None:
        self._depthwise(self._x, self._kd, self._bd, self._middle)
        self._pointwise(self._middle, self._kp, self._bp, *self._r, self._out["separate"])

    def fused(self) -> None:
        self._fused(self._x, self._kd, self._bd, self._kp, self._bp, *self._r,
                    self._out["fused"])

    def outputs(self) -> dict[str, np.ndarray]:
        from d2ldw import tvm as d2l_tvm

        return {name: d2l_tvm.from_nchwc(out.numpy()) for name, out in self._out.items()}


# Harness for chapters/performance/fusion.ipynb
def time_fusion(version: str = "v2", repeat: int = 7, threads: int = 1) -> dict[str, Any]:
    """Every depthwise + pointwise pair of MobileNet ``version`` (``seeded_mobilenet``, on
    ``seeded_image``), separate and fused: per pair the median microseconds of each, their
    largest difference from the pair in float64 (relative to the largest value), and the size
    of the depthwise result that fusion keeps out of memory. JSON-able. Run it with
    ``run_isolated``, which gives the process ``threads``."""
    import torch

    from d2ldw import torch as d2l_torch
    from d2ldw.torch import seeded_image, seeded_mobilenet

    repeat = checked_int(repeat, "repeat", 1)
    # PyTorch only sets up and checks here; with one thread, no OpenMP worker of its own
    # waits on a CPU that TVM's threads need
    torch.set_num_threads(1)
    cpu = str(describe_cpu())  # before check_tvm_threads binds this thread beside TVM's
    check_tvm_threads(threads)
    layers = d2l_torch.inference_layers(seeded_mobilenet(version))
    image = seeded_image().numpy()
    outputs = d2l_torch.run_layers(layers, image)
    inputs = [image, *outputs]  # inputs[k]: the input of layer k
    cache: dict = {}
    rows = []
    for k in depthwise_pointwise_pairs(layers):
        dw, pw = layers[k], layers[k + 1]
        residual = inputs[pw["residual"]] if pw["residual"] is not None else None
        pair = PairKernels(dw, pw, inputs[k], residual, cache)
        pair.separate()
        pair.fused()
        exact = pair_reference(dw, pw, inputs[k], residual)
        scale = float(np.abs(exact).max()) or 1.0
        errors = {name: float(np.abs(out - exact).max()) / scale
                  for name, out in pair.outputs().items()}
        timings = time_interleaved({"separate": pair.separate, "fused": pair.fused},
                                   repeat=repeat)
        n, c, h, w = inputs[k].shape
        rows.append({
            "layer": k, "input": [c, h, w], "output_channels": int(pw["weight"].shape[0]),
            "stride": dw["stride"], "residual": residual is not None,
            "separate_us": timings["separate"].median * 1e6,
            "fused_us": timings["fused"].median * 1e6,
            "relative_error": errors,
            "intermediate_kib": pair.intermediate_bytes / 1024,
            "row_kib": pair.row_bytes / 1024})
    return {"version": version, "threads": threads, "repeat": repeat, "pairs": rows,
            "kernels_built": 3 * len(cache), "caches": cpu_caches(),
            "cpu_description": cpu}


# Harness for chapters/performance/fusion.ipynb
def format_fusion_table(result: Mapping[str, Any]) -> str:
    """``time_fusion``'s result as a table, a pair per line, and the totals."""
    lines = [*result["cpu_description"].splitlines(),
             "caches: " + ", ".join(f"{name} {size // 1024} KiB" for name, size in
                                    result["caches"].items()),
             f"MobileNet {result['version']}, {result['threads']} threads; medians of "
             f"{result['repeat']}, the two variants interleaved",
             f"{'layer':>5} {'input C x H x W':>16} {'out':>4} {'s':>2} "
             f"{'D (KiB)':>8} {'row':>5} {'separate':>9} {'fused':>7} {'ratio':>6} "
             f"{'rel. error':>10}"]
    for row in result["pairs"]:
        c, h, w = row["input"]
        lines.append(
            f"{row['layer']:>5} {f'{c} x {h} x {w}':>16} {row['output_channels']:>4} "
            f"{row['stride']:>2} {row['intermediate_kib']:>8.0f} {row['row_kib']:>5.0f} "
            f"{row['separate_us']:>7.1f}us {row['fused_us']:>5.1f}us "
            f"{row['separate_us'] / row['fused_us']:>5.2f}x "
            f"{max(row['relative_error'].values()):>10.1e}")
    separate = sum(row["separate_us"] for row in result["pairs"])
    fused = sum(row["fused_us"] for row in result["pairs"])
    lines.append(f"all pairs: separate {separate:.0f} us, fused {fused:.0f} us "
                 f"({separate / fused:.2f}x)")
    return "\n".join(lines)
