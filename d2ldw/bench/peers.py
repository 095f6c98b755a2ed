"""The peers, set up and called the same way: ONNX Runtime and OpenVINO sessions and their
profilers, PyTorch and MXNet calls on one depthwise layer, and TVM's thread-pool check.

Written by hand (not from the chapters): this is the benchmarks' harness. The pages of the
performance chapter show what is timed; this module holds how each library is made to run
it. Every call returned here is a zero-argument function that writes into memory allocated
once, as TVM's compiled kernels do, so that the timings compare kernels, not allocators.
"""
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from d2ldw.isolated import bind_beside_pinned_threads
from d2ldw.data import get_conv_data
from d2ldw.shapes import checked_int

if TYPE_CHECKING:  # the peers are imported lazily, when a function needs one
    import onnx
    import onnxruntime
    import openvino

__all__ = ["PEERS", "OPENVINO_CONFIG", "check_tvm_threads", "onnx_model", "onnx_session",
           "onnx_caller", "depthwise_onnx_model", "depthwise_onnx_session",
           "mobilenet_onnx_model", "mobilenet_onnx_session", "onnx_layer_seconds",
           "openvino_compiled", "openvino_caller", "openvino_layer_seconds",
           "depthwise_layer_data", "depthwise_peer_call"]

# Harness for chapters/performance/results.ipynb
# Every library that computes the same depthwise layer, each timed in a process of its own.
PEERS = ("PyTorch", "PyTorch channels_last", "MXNet", "ONNX Runtime", "OpenVINO")

# The ONNX opset the graphs use, and the IR version ONNX Runtime 1.31 reads for it.
OPSET, IR_VERSION = 17, 8

# Harness for chapters/performance/results.ipynb
# OpenVINO's CPU plugin at its fastest for one request at a time, in float32 (its default on
# a CPU with AMX or AVX512-BF16 would be bf16: a different computation, not a faster one).
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                   "NUM_STREAMS": 1}


# Harness for chapters/performance/results.ipynb
def check_tvm_threads(threads: int) -> None:
    """Refuse to time TVM with a thread pool of another size than the peers'; then, in a
    process of ``run_isolated`` (never in a notebook or a test runner, whose later threads and
    child processes would inherit it), bind the calling thread beside TVM's workers
    (``bind_beside_pinned_threads``).

    TVM sizes its pool once, from ``TVM_NUM_THREADS``, when it first runs a parallel
    kernel; ``d2ldw.isolated.run_isolated`` sets that variable for the child process. TVM
    binds each worker to a CPU but not the calling thread, which runs the first share of
    every parallel loop: left free, it can share a worker's CPU.
    """
    threads = checked_int(threads, "threads", 1)
    import tvm

    isolated = os.environ.get("D2LDW_ISOLATED") == "1"  # a process of run_isolated's
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    running = tvm.get_global_func("runtime.NumThreads")()  # starts the pool
    if allowed is not None and not isolated:
        # started without TVM_NUM_THREADS, the pool binds this thread to CPU 0 (measured):
        # undone, so that a notebook or a test runner keeps its CPUs for what it starts later
        os.sched_setaffinity(0, allowed)
    if running != threads:
        raise RuntimeError(
            f"TVM's thread pool runs {running} threads, not {threads}: set "
            f"TVM_NUM_THREADS={threads} before using TVM (run_isolated does)")
    if isolated:
        bind_beside_pinned_threads()


# Harness for chapters/performance/results.ipynb
def onnx_model(nodes: Sequence[Any], inputs: Sequence[tuple[str, Sequence[int]]],
               outputs: Sequence[tuple[str, Sequence[int]]],
               initializers: dict[str, Any]) -> "onnx.ModelProto":
    """A checked ONNX model (opset 17) of a graph built with ``onnx.helper``:
    ``nodes`` (``onnx.NodeProto``), the graph's float32 ``inputs`` and ``outputs`` as
    (name, shape) pairs, and ``initializers``, a dict of name: NumPy array (the weights)."""
    if not isinstance(initializers, dict):
        raise TypeError(f"initializers must be a dict of name: array, got "
                        f"{type(initializers).__name__}")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def value(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes, "d2ldw", [value(n, s) for n, s in inputs],
        [value(n, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


# Harness for chapters/performance/results.ipynb
def onnx_session(model: "onnx.ModelProto", threads: int,
                 profile_prefix: str | os.PathLike[str] | None = None
                 ) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session of ``model`` (``onnx_model``) with every graph optimisation
    on, on the CPU, with ``threads`` threads inside operators and one between them (the
    graphs are chains). ``profile_prefix`` turns the session's profiler on;
    ``session.end_profiling()`` writes its JSON there."""
    threads = checked_int(threads, "threads", 1)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


# Harness for chapters/performance/results.ipynb
def openvino_compiled(model: "onnx.ModelProto", threads: int,
                      profile: bool = False) -> "openvino.CompiledModel":
    """``model`` (``onnx_model``) compiled by OpenVINO's CPU plugin with ``threads``
    threads and ``OPENVINO_CONFIG``; ``profile`` turns on its per-node counters
    (``request.get_profiling_info()``)."""
    threads = checked_int(threads, "threads", 1)
    import openvino as ov

    core = ov.Core()
    network = core.read_model(model.SerializeToString(), b"")
    return core.compile_model(network, "CPU", {
        **OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": bool(profile)})


# Harness for chapters/performance/results.ipynb
def openvino_caller(compiled: "openvino.CompiledModel", array: np.ndarray
                    ) -> tuple[Callable[[], object], "openvino.InferRequest"]:
    """A zero-argument call of ``compiled`` (one input, one output) on ``array``, shared
    with OpenVINO rather than copied; returns (call, request). After a call,
    ``request.get_output_tensor().data`` holds the output."""
    import openvino as ov

    array = np.ascontiguousarray(array, dtype="float32")
    (expected,) = [tuple(i.get_shape()) for i in compiled.inputs]
    if array.shape != expected:
        raise ValueError(f"the model's input is {expected}, got an array of shape "
                         f"{array.shape}")
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(array, shared_memory=True))
    return request.infer, request


# Harness for chapters/performance/results.ipynb
def onnx_caller(session: "onnxruntime.InferenceSession", arrays: dict[str, np.ndarray]
                ) -> tuple[Callable[[], object], np.ndarray]:
    """A zero-argument call of ``session`` on ``arrays`` (input name: NumPy array) that
    writes into a preallocated output; returns (call, output)."""
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of input name: array, got "
                        f"{type(arrays).__name__}")
    import onnxruntime as ort

    expected = sorted(i.name for i in session.get_inputs())
    if sorted(arrays) != expected:
        raise ValueError(f"the session's inputs are {expected}, got arrays for "
                         f"{sorted(arrays)}")
    binding = session.io_binding()
    for name, array in arrays.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
    (out,) = session.get_outputs()
    result = np.zeros(out.shape, "float32")
    binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(result))
    return (lambda: session.run_with_iobinding(binding)), result


# Harness for chapters/performance/results.ipynb
def depthwise_onnx_model(x_shape: Sequence[int], w: np.ndarray,
                         stride: int) -> "onnx.ModelProto":
    """A graph of one ONNX ``Conv`` node: depthwise 3x3, padding 1, weight ``w`` of shape
    (C, 1, 3, 3), on an input of shape ``x_shape`` (N, C, H, W)."""
    if len(x_shape) != 4 or np.shape(w) != (x_shape[1], 1, 3, 3):
        raise ValueError(f"expected an input shape (N, C, H, W) and a weight (C, 1, 3, 3), "
                         f"got {tuple(x_shape)} and {np.shape(w)}")
    stride = checked_int(stride, "stride", 1)
    from onnx import helper

    (n, c, _, _), out = x_shape, (x_shape[2] + 2 - 3) // stride + 1
    node = helper.make_node("Conv", ["X", "W"], ["Y"], group=c, strides=[stride, stride],
                            pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    return onnx_model([node], [("X", list(x_shape))], [("Y", [n, c, out, out])], {"W": w})


# Harness for chapters/performance/results.ipynb
def depthwise_onnx_session(x_shape: Sequence[int], w: np.ndarray, stride: int,
                           threads: int) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session of ``depthwise_onnx_model(x_shape, w, stride)``."""
    return onnx_session(depthwise_onnx_model(x_shape, w, stride), threads)


def _activation_nodes(kind, value, output):
    from onnx import helper

    if kind == "relu":
        return [helper.make_node("Relu", [value], [output])]
    if kind == "relu6":
        return [helper.make_node("Clip", [value, "zero", "six"], [output])]
    return [helper.make_node("Identity", [value], [output])]


# Harness for chapters/performance/mobilenet_peers.ipynb
def mobilenet_onnx_model(layers: Sequence[dict[str, Any]],
                         input_shape: Sequence[int]) -> "onnx.ModelProto":
    """The ONNX graph of ``d2ldw.torch.inference_layers``.

    Conv (with the folded bias), Add, Relu or Clip, GlobalAveragePool, Flatten and Gemm
    nodes, each named after its output, whose number is its layer's index (what
    ``onnx_layer_seconds`` and ``openvino_layer_seconds`` read back from the profilers).
    """
    if not isinstance(layers, (list, tuple)) or not layers or not all(
            isinstance(layer, dict) and "kind" in layer for layer in layers):
        raise TypeError("layers must be the list of dicts inference_layers returns")
    if layers[-1]["kind"] != "linear":
        raise ValueError(f"the last layer must be the classifier ('linear'), got "
                         f"{layers[-1]['kind']!r}")
    from onnx import helper

    nodes, weights, names = [], {}, ["X"]  # names[k]: the input of layer k
    weights["zero"], weights["six"] = np.float32(0), np.float32(6)
    for k, layer in enumerate(layers):
        x, y = names[-1], f"y{k}"
        if layer["kind"] == "pool":
            nodes += [helper.make_node("GlobalAveragePool", [x], [f"p{k}"]),
                      helper.make_node("Flatten", [f"p{k}"], [y])]
        elif layer["kind"] == "linear":
            weights[f"w{k}"], weights[f"b{k}"] = layer["weight"], layer["bias"]
            nodes.append(helper.make_node("Gemm", [x, f"w{k}", f"b{k}"], [y], transB=1))
        else:
            w, pad, s = layer["weight"], layer["padding"], layer["stride"]
            weights[f"w{k}"], weights[f"b{k}"] = w, layer["bias"]
            value = f"c{k}"
            nodes.append(helper.make_node(
                "Conv", [x, f"w{k}", f"b{k}"], [value], strides=[s, s], pads=[pad] * 4,
                kernel_shape=list(w.shape[2:]),
                group=w.shape[0] if layer["kind"] == "depthwise" else 1))
            if layer["residual"] is not None:
                nodes.append(helper.make_node("Add", [value, names[layer["residual"]]],
                                              [f"a{k}"]))
                value = f"a{k}"
            nodes += _activation_nodes(layer["activation"], value, y)
        names.append(y)
    for node in nodes:
        node.name = node.output[0]
    classes = layers[-1]["weight"].shape[0]
    return onnx_model(nodes, [("X", list(input_shape))],
                      [(names[-1], [input_shape[0], classes])], weights)


# Harness for chapters/performance/mobilenet_peers.ipynb
def mobilenet_onnx_session(layers: Sequence[dict[str, Any]], input_shape: Sequence[int],
                           threads: int,
                           profile_prefix: str | os.PathLike[str] | None = None
                           ) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session of ``mobilenet_onnx_model(layers, input_shape)``."""
    return onnx_session(mobilenet_onnx_model(layers, input_shape), threads, profile_prefix)


def _layer_of(node: str) -> int | None:
    """The layer a profiled node computes, from the value names ``mobilenet_onnx_model``
    gives (``c5``, ``y5_...``, OpenVINO's ``c5/WithoutBiases``), or None for a node of no
    layer (a layout conversion the engine inserted, such as ``X_abcd_acdb_c0``)."""
    match = re.match(r"[a-z](\d+)(?:[_/]|$)", node)
    return int(match.group(1)) if match else None


# Harness for chapters/performance/mobilenet_peers.ipynb
def onnx_layer_seconds(layers: Sequence[dict[str, Any]], image: np.ndarray, threads: int,
                       passes: int) -> dict[int | None, float]:
    """Median seconds of ONNX Runtime's nodes over ``passes`` forward passes of
    ``mobilenet_onnx_session``, from its own profiler, by the layer they compute.

    After its graph optimisations a node is a convolution with its activation and residual
    fused, named after the layer's output, or a layout conversion ONNX Runtime inserted:
    those count under the key ``None``.
    """
    passes = checked_int(passes, "passes", 1)
    image = np.asarray(image, dtype="float32")
    with tempfile.TemporaryDirectory() as folder:
        session = mobilenet_onnx_session(layers, image.shape, threads,
                                         profile_prefix=os.path.join(folder, "profile"))
        call, _ = onnx_caller(session, {"X": image})
        for _ in range(passes):
            call()
        with open(session.end_profiling()) as file:
            events = json.load(file)
    runs: dict[tuple[str, int | None], list[float]] = {}  # (node, layer): a duration a pass
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            runs.setdefault((node, _layer_of(node)), []).append(event["dur"] * 1e-6)
    seconds: dict[int | None, float] = {}
    for (_, layer), durations in runs.items():
        seconds[layer] = seconds.get(layer, 0.0) + float(np.median(durations))
    return seconds


# Harness for chapters/performance/mobilenet_peers.ipynb
def openvino_layer_seconds(layers: Sequence[dict[str, Any]], image: np.ndarray,
                           threads: int, passes: int) -> dict[int | None, float]:
    """Median seconds of OpenVINO's executed nodes over ``passes`` forward passes of
    ``mobilenet_onnx_model``, from its own counters (``PERF_COUNT``), by the layer they
    compute; a node of no layer (a reorder it inserted) counts under ``None``."""
    passes = checked_int(passes, "passes", 1)
    image = np.asarray(image, dtype="float32")
    compiled = openvino_compiled(mobilenet_onnx_model(layers, image.shape), threads,
                                 profile=True)
    call, request = openvino_caller(compiled, image)
    runs: dict[tuple[str, int | None], list[float]] = {}
    for _ in range(passes):
        call()
        for info in request.get_profiling_info():
            if info.status.name == "EXECUTED":
                runs.setdefault((info.node_name, _layer_of(info.node_name)), []).append(
                    info.real_time.total_seconds())
    seconds: dict[int | None, float] = {}
    for (_, layer), durations in runs.items():
        seconds[layer] = seconds.get(layer, 0.0) + float(np.median(durations))
    return seconds


# Harness for chapters/performance/results.ipynb
def depthwise_layer_data(layers: Iterable[tuple[int, int, int]], batch: int, seed: int
                         ) -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
    """(name, x, w, stride) per layer of ``layers`` ((channels, size, stride) triples):
    a seeded NCHW input of ``batch`` images and a depthwise 3x3 weight. The name,
    ``"channels/size/stride"``, keys every table of the depthwise benchmark."""
    batch = checked_int(batch, "batch", 1)
    for channels, size, stride in layers:
        x, w, _ = get_conv_data(channels, channels, size, 3, batch=batch,
                                groups=channels, seed=seed)
        yield f"{channels}/{size}/{stride}", x, w, stride


# Harness for chapters/performance/results.ipynb
def depthwise_peer_call(peer: str, x: np.ndarray, w: np.ndarray, stride: int, threads: int
                        ) -> tuple[Callable[[], object], Callable[[], np.ndarray]]:
    """A zero-argument call of one of ``PEERS`` on one depthwise 3x3 layer (padding 1), and
    a function that gives its output as an NCHW NumPy array.

    PyTorch channels_last keeps NCHW shapes with NHWC memory; ONNX Runtime and OpenVINO run
    a one-node graph with the input bound once.
    """
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    x, w = np.asarray(x), np.asarray(w)
    channels = x.shape[1]
    if peer in ("PyTorch", "PyTorch channels_last"):
        import torch
        from torch.nn import functional as F

        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        if peer == "PyTorch channels_last":  # NHWC in memory, NCHW in shape
            xt = xt.contiguous(memory_format=torch.channels_last)
            wt = wt.contiguous(memory_format=torch.channels_last)
        out: dict[str, Any] = {}  # the output of the latest call

        def call():
            out["y"] = F.conv2d(xt, wt, stride=stride, padding=1, groups=channels)

        return call, lambda: out["y"].contiguous().numpy()
    if peer == "MXNet":
        from d2ldw import mxnet as d2l_mx

        xm, wm = d2l_mx.nd.array(x), d2l_mx.nd.array(w)
        out = {}

        def call():
            out["y"] = d2l_mx.conv2d(xm, wm, stride=stride, padding=1, groups=channels)
            out["y"].wait_to_read()  # MXNet runs asynchronously

        return call, lambda: out["y"].asnumpy()
    model = depthwise_onnx_model(list(x.shape), w, stride)
    if peer == "OpenVINO":
        call, request = openvino_caller(openvino_compiled(model, threads), x)
        return call, lambda: request.get_output_tensor().data
    call, result = onnx_caller(onnx_session(model, threads), {"X": x})
    return call, lambda: result
