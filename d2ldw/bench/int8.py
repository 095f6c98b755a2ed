"""The book's int8 MobileNet against PyTorch's, ONNX Runtime's and OpenVINO's int8 paths.

Written by hand (not from the chapters): this is harness. ``run_int8`` is what
``python -m d2ldw.bench int8`` runs: one MobileNet (v1 or v2, batch 1), seeded, quantized by
each engine from the same calibration images, each engine timed in a process of its own with
the same threads (``d2ldw.isolated.run_isolated``), the fastest run counting. Every engine's
logits are compared with the float64 PyTorch network's, as a signal-to-noise ratio in dB.
"""
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from d2ldw.bench.mobilenet import mobilenet_peer_call
from d2ldw.bench.peers import (
    check_tvm_threads,
    mobilenet_onnx_model,
    onnx_caller,
    onnx_session,
    openvino_caller,
    openvino_compiled,
)
from d2ldw.bench.roofline import thread_counts
from d2ldw.bench.runs import (
    LAYER_GROUPS,
    _checked_run_args,
    _fastest_runs,
    _Progress,
    _tvm_layer_seconds,
    seconds_by_kind,
)
from d2ldw.hardware import describe_cpu
from d2ldw.isolated import report_progress
from d2ldw.shapes import checked_int
from d2ldw.timing import time_interleaved

if TYPE_CHECKING:  # imported lazily, when a function needs them
    import onnx
    import torch

__all__ = ["INT8_PEERS", "INT8_ENGINES", "calibration_images", "int8_onnx_model",
           "int8_peer_call", "time_int8_peer", "run_int8", "format_int8_table"]

# Harness for chapters/quantized/int8_engines.ipynb
# The int8 paths of the peers, each quantized post-training from the same calibration images;
# every one is timed, and the fastest counts as the best peer.
INT8_PEERS = ("PyTorch int8", "PyTorch int8 channels_last", "ONNX Runtime int8",
              "OpenVINO int8")

# Harness for chapters/quantized/int8_engines.ipynb
# Every engine the int8 benchmark times: the book's int8 and float32 TVM networks, then the peers.
INT8_ENGINES = ("TVM int8", "TVM fp32", *INT8_PEERS)

_VERSIONS = ("v1", "v2")
_SHAPE = (1, 3, 224, 224)


def _checked_version(version: object) -> str:
    if version not in _VERSIONS:
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    return str(version)


def _checked_images(array: object, name: str, count: int | None = None) -> np.ndarray:
    """A float32 NumPy batch of (N, 3, 224, 224) images (N = ``count`` when given)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a float32 NumPy array of shape (N, 3, 224, 224), "
                        f"got {type(array).__name__}")
    if array.dtype != np.float32 or array.ndim != 4 or array.shape[1:] != _SHAPE[1:] or (
            count is not None and array.shape[0] != count) or not array.shape[0]:
        expected = f"({count if count is not None else 'N'}, 3, 224, 224)"
        raise ValueError(f"{name} must be a float32 array of shape {expected}, got "
                         f"{array.dtype} {array.shape}")
    return array


# Harness for chapters/quantized/int8_engines.ipynb
def calibration_images(count: int = 4, seed: int = 1) -> np.ndarray:
    """The images every int8 engine calibrates its activation ranges on: ``count`` seeded
    normal float32 NCHW 224x224 images (``torch.randn`` with a generator seeded ``seed``, as
    Section 8.2 calibrates), as a NumPy array of shape (count, 3, 224, 224)."""
    count = checked_int(count, "count", 1)
    seed = checked_int(seed, "seed", 0)
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, *_SHAPE[1:], generator=generator).numpy()


class _Reader:
    """ONNX Runtime's calibration data reader: one image at a time, as input ``X``."""

    def __init__(self, calibration: np.ndarray):
        self._batches = iter([{"X": calibration[k:k + 1]} for k in range(len(calibration))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


# Harness for chapters/quantized/int8_engines.ipynb
def int8_onnx_model(version: str, calibration: np.ndarray) -> "onnx.ModelProto":
    """The seeded MobileNet ``version``'s float32 ONNX graph (``mobilenet_onnx_model``, batch
    1) quantized by ONNX Runtime's post-training static quantization: QuantizeLinear and
    DequantizeLinear pairs (QDQ) around every convolution, int8 weights per output channel,
    uint8 activations whose ranges are the extremes seen on ``calibration`` (MinMax). ONNX
    Runtime fuses each pair into a QLinearConv; OpenVINO runs the same file in int8."""
    version = _checked_version(version)
    calibration = _checked_images(calibration, "calibration")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from d2ldw.torch import inference_layers, seeded_mobilenet

    class Reader(_Reader, CalibrationDataReader):
        pass

    graph = mobilenet_onnx_model(inference_layers(seeded_mobilenet(version)), _SHAPE)
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
        onnx.save(graph, fp32)
        quantize_static(fp32, int8, Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(int8)


def _torch_int8(version, calibration, channels_last):
    """PyTorch's FX graph-mode post-training static quantization on the x86 engine, of the
    seeded network ``version``, calibrated on ``calibration``. PyTorch 2.13 warns on the way
    that its quantized tensors are deprecated (``time_int8_peer`` records it)."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from d2ldw.torch import seeded_mobilenet

    torch.backends.quantized.engine = "x86"
    model = seeded_mobilenet(version).eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"),
                          (torch.from_numpy(calibration[:1]),))
    with torch.no_grad():
        for k in range(len(calibration)):
            prepared(torch.from_numpy(calibration[k:k + 1]))
    quantized = convert_fx(prepared)
    if channels_last:
        # (Module.to takes memory_format, which torch's type stubs do not say)
        quantized = quantized.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return quantized


def _tvm_int8_network(version, calibration):
    """The book's int8 network (Chapter 8): quantized from the float outputs of every layer
    on ``calibration``, compiled by TVM."""
    import torch

    from d2ldw.quantization import quantize_network
    from d2ldw.torch import inference_layers, run_layers, seeded_mobilenet
    from d2ldw.tvm import CompiledInt8Network

    layers = inference_layers(seeded_mobilenet(version))
    outputs = run_layers(layers, torch.from_numpy(calibration))
    qlayers = quantize_network(layers, calibration, outputs)
    return CompiledInt8Network(qlayers, _SHAPE)


# Harness for chapters/quantized/int8_engines.ipynb
def int8_peer_call(peer: str, version: str, image: "torch.Tensor", calibration: np.ndarray,
                   threads: int) -> tuple[Callable[[], object], np.ndarray]:
    """A zero-argument call of one engine of ``INT8_ENGINES`` on the seeded network
    ``version`` (``"v1"`` or ``"v2"``), quantized from ``calibration``
    (``calibration_images``), on ``image`` (a (1, 3, 224, 224) float32 tensor), with
    ``threads`` threads; and the float32 logits of one call. For "TVM int8" and "TVM fp32"
    the call is the network's ``run`` (``call.__self__`` is the network)."""
    if peer not in INT8_ENGINES:
        raise ValueError(f"unknown peer {peer!r}; expected one of {INT8_ENGINES}")
    version = _checked_version(version)
    threads = checked_int(threads, "threads", 1)
    calibration = _checked_images(calibration, "calibration")
    import torch

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor of shape (1, 3, 224, 224), got "
                        f"{type(image).__name__}")
    array = _checked_images(image.detach().cpu().numpy(), "image", 1)
    if peer == "TVM fp32":
        return mobilenet_peer_call("TVM", version, image, threads)
    if peer == "TVM int8":
        network = _tvm_int8_network(version, calibration)
        logits = network(array)
        return network.run, np.asarray(logits)
    if peer in ("ONNX Runtime int8", "OpenVINO int8"):
        model = int8_onnx_model(version, calibration)
        if peer == "OpenVINO int8":
            call, request = openvino_caller(openvino_compiled(model, threads), array)
            call()
            return call, request.get_output_tensor().data
        call, result = onnx_caller(onnx_session(model, threads), {"X": array})
        call()
        return call, result
    model = _torch_int8(version, calibration, peer == "PyTorch int8 channels_last")
    if peer == "PyTorch int8 channels_last":
        image = image.contiguous(memory_format=torch.channels_last)
    out: dict[str, Any] = {}

    def forward() -> None:
        with torch.inference_mode():
            out["logits"] = model(image)

    forward()
    return forward, out["logits"].numpy()


def _deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    """The first sentence of each warning in ``caught`` that says something is deprecated
    (PyTorch 2.13: ``torch.ao.quantization``, and its quantized tensors), once each; not
    its notice that an observer's ``reduce_range`` will be."""
    found = []
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if "deprecated" in text and "will be deprecated" not in text:
            found.append(text.split(". ")[0].split(" (Triggered")[0])
    return list(dict.fromkeys(found))


def _error_message(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# Harness for chapters/quantized/int8_engines.ipynb
def time_int8_peer(peer: str, version: str = "v2", threads: int = 1, repeat: int = 7
                   ) -> dict[str, Any]:
    """Median seconds of one forward pass of one engine of ``INT8_ENGINES`` (batch 1) in
    this process alone, the seconds its setup took (quantization and compilation), and its
    logits' SQNR in dB against the float64 PyTorch network's (``sqnr_db``). For the TVM
    networks also the seconds per kind of layer, each layer timed inside the network
    (medians of ten times ``repeat`` passes); for PyTorch the deprecation warnings it gave.
    An engine that cannot run here returns ``{"error": message}``."""
    if peer not in INT8_ENGINES:
        raise ValueError(f"unknown peer {peer!r}; expected one of {INT8_ENGINES}")
    version = _checked_version(version)
    _, threads, repeat, _ = _checked_run_args(1, threads, repeat)
    import torch

    from d2ldw.quantization import sqnr_db
    from d2ldw.torch import inference_layers, seeded_image, seeded_mobilenet

    torch.set_num_threads(threads)
    if peer.startswith("TVM"):
        check_tvm_threads(threads)
    image, calibration = seeded_image(1), calibration_images()
    report_progress("quantizing and compiling")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:  # PyTorch's deprecation
            warnings.simplefilter("always")
            call, logits = int8_peer_call(peer, version, image, calibration, threads)
    except Exception as error:  # e.g. an engine that is not installed or not written yet
        return {"error": _error_message(error)}
    setup = time.perf_counter() - start
    report_progress(f"set up in {setup:.1f} s; timing {repeat} passes")
    with torch.no_grad():
        exact = seeded_mobilenet(version).double()(image.double()).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = time_interleaved({"network": call}, repeat=repeat)["network"].median
    result: dict[str, Any] = {
        "seconds": seconds, "setup_seconds": setup,
        "sqnr_db": sqnr_db(exact, np.asarray(logits, dtype="float64"))}
    if peer.startswith("PyTorch"):
        result["deprecations"] = _deprecations(caught)
    if peer.startswith("TVM"):  # each layer, inside the network
        report_progress(f"timing each layer inside the network, {10 * repeat} passes")
        layers = inference_layers(seeded_mobilenet(version))
        per_layer = _tvm_layer_seconds(getattr(call, "__self__", None), 10 * repeat)
        result["seconds_by_kind"] = seconds_by_kind(layers, per_layer)
    return result


def _ms_by_group(by_kind: Mapping[str, float]) -> dict[str, float]:
    """Milliseconds per layer group (``LAYER_GROUPS``), from seconds per kind of layer, in
    the order of the network."""
    groups: dict[str, float] = dict.fromkeys(dict.fromkeys(LAYER_GROUPS.values()), 0.0)
    for kind, seconds in by_kind.items():
        groups[LAYER_GROUPS[kind]] += seconds * 1e3
    return groups


# Harness for chapters/quantized/int8_engines.ipynb
def run_int8(version: str = "v2", threads: int | None = None, repeat: int = 7,
             rounds: int = 2, progress: bool = False) -> dict[str, Any]:
    """The int8 benchmark: every engine of ``INT8_ENGINES`` on the seeded MobileNet
    ``version``, batch 1, each in a process of its own with every count of
    ``thread_counts(threads)``, in ``rounds`` rounds (the order reversed every other round);
    per engine the fastest run counts. Returns a JSON-able dict: milliseconds and logits'
    SQNR per engine, the best peer, TVM int8's speedups over it, over every peer and over
    TVM fp32, and TVM int8's milliseconds per layer group. ``progress``: a line on stderr
    while it runs. Raises RuntimeError when TVM int8 did not run."""
    version = _checked_version(version)
    _, threads, repeat, _ = _checked_run_args(1, threads, repeat)
    rounds = checked_int(rounds, "rounds", 1)
    from d2ldw.tvm import target_features, target_has_vnni
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    engines = INT8_ENGINES
    tries: dict[str, list[tuple[int, dict[str, Any]]]] = {engine: [] for engine in engines}
    counts = thread_counts(threads)
    with _Progress(rounds * len(engines) * len(counts), f"int8 MobileNet {version}",
                   progress) as runner:
        for round_ in range(rounds):
            for engine in engines if round_ % 2 == 0 else engines[::-1]:
                for t in counts:
                    tries[engine].append((t, runner.run(
                        time_int8_peer, t, f"round {round_ + 1}, {engine}", peer=engine,
                        version=version, repeat=repeat)))
    runs, ms_by_threads = _fastest_runs(tries, threads)
    if "seconds" not in runs["TVM int8"]:
        raise RuntimeError(f"the TVM int8 network did not run: "
                           f"{runs['TVM int8'].get('error')}")
    ran = {p: r for p, r in runs.items() if "seconds" in r}
    int8 = ran["TVM int8"]["seconds"]
    peers = [p for p in INT8_PEERS if p in ran]
    best = min(peers, key=lambda p: ran[p]["seconds"]) if peers else None
    deprecations = sorted({message for p in ran for message in ran[p].get("deprecations", ())})
    return {
        "model": version, "batch": 1, "threads": threads, "repeat": repeat,
        "rounds": rounds, "thread_counts": counts,
        "ms": {p: r["seconds"] * 1e3 for p, r in ran.items()},
        "threads_used": {p: r["threads"] for p, r in ran.items()},
        "ms_by_threads": ms_by_threads,
        "setup_s": {p: r["setup_seconds"] for p, r in ran.items()},
        "sqnr_db": {p: r["sqnr_db"] for p, r in ran.items()},
        "errors": {p: r["error"] for p, r in runs.items() if "error" in r},
        "best_peer": best,
        "speedup_vs_best_peer": ran[best]["seconds"] / int8 if best else None,
        "speedup_vs_peer": {p: r["seconds"] / int8 for p, r in ran.items()
                            if p != "TVM int8"},
        "speedup_vs_fp32": (ran["TVM fp32"]["seconds"] / int8 if "TVM fp32" in ran
                            else None),
        "tvm_int8_ms_by_group": _ms_by_group(ran["TVM int8"]["seconds_by_kind"]),
        "tvm_fp32_ms_by_group": (_ms_by_group(ran["TVM fp32"]["seconds_by_kind"])
                                 if "TVM fp32" in ran else {}),
        "deprecations": deprecations,
        "vnni": bool(target_has_vnni()),  # what the book's int8 build used
        # VNNI and VBMI's vpermb: the 3x3 depthwise layers ran vpdpbusd too
        "depthwise_vpdpbusd": bool(target_has_vnni()
                                   and "avx512vbmi" in target_features()),
        "cpu_description": str(describe_cpu()),
    }


def _verdict(speedup: float) -> str:
    """How a speedup of TVM int8 reads: "1.50x faster", "1.25x slower" (the ratio inverted),
    or "as fast"."""
    if speedup > 1:
        return f"{speedup:.2f}x faster"
    if speedup < 1:
        return f"{1 / speedup:.2f}x slower"
    return "as fast"


# Harness for chapters/quantized/int8_engines.ipynb
def format_int8_table(result: Mapping[str, Any]) -> str:
    """``run_int8``'s result as text: the CPU, each engine's milliseconds, TVM int8's
    speedup over it and its logits' SQNR, TVM int8's milliseconds per layer group (and TVM
    fp32's), then TVM int8 against the best peer and against TVM fp32, in words chosen by
    the numbers."""
    if not isinstance(result, Mapping):
        raise TypeError(f"result must be the dict run_int8 returns, got "
                        f"{type(result).__name__}")
    missing = [key for key in ("cpu_description", "model", "ms", "threads_used", "sqnr_db",
                               "speedup_vs_peer", "errors", "tvm_int8_ms_by_group")
               if key not in result]
    if missing:
        raise ValueError(f"result lacks {missing}: expected the dict run_int8 returns")
    thread_list = list(result.get("thread_counts", [result.get("threads")]))
    counts = " and ".join(map(str, thread_list))
    rounds = result.get("rounds", 1)
    lines = [
        *str(result["cpu_description"]).splitlines(),
        f"AVX-512 VNNI: {'yes' if result.get('vnni') else 'no'}; depthwise layers with "
        f"vpdpbusd (VNNI and VBMI): {'yes' if result.get('depthwise_vpdpbusd') else 'no'}",
        f"int8 MobileNet {result['model']}, batch {result.get('batch', 1)}, each engine in "
        f"its own process, the fastest of {counts} thread{'s' if thread_list != [1] else ''} "
        f"in {rounds} round{'s' if rounds != 1 else ''}; median ms of "
        f"{result.get('repeat', 1)} samples; logits' SQNR against the float64 network",
        f"{'':27} {'ms':>8} {'threads':>7} {'TVM int8 speedup':>16} {'SQNR':>9}",
    ]
    for engine, ms in sorted(result["ms"].items(), key=lambda item: item[1]):
        speedup = result["speedup_vs_peer"].get(engine)
        lines.append(f"{engine:27} {ms:>8.2f} {result['threads_used'][engine]:>7} "
                     f"{f'{speedup:.2f}x' if speedup else '':>16} "
                     f"{result['sqnr_db'][engine]:>6.1f} dB")
    for engine, error in result["errors"].items():
        lines.append(f"{engine:27} did not run: {error[:60]}")
    fp32 = result.get("tvm_fp32_ms_by_group") or {}
    lines.append("TVM int8 by layer group, each layer timed inside the network: ms"
                 + (", and TVM fp32's ms and its ratio to int8's" if fp32 else ""))
    for group, ms in result["tvm_int8_ms_by_group"].items():
        if group in fp32:
            ratio = f"{fp32[group] / ms:.2f}x" if ms else ""
            lines.append(f"  {group:11} {ms:>8.2f} {fp32[group]:>8.2f} {ratio:>7}")
        else:
            lines.append(f"  {group:11} {ms:>8.2f}")
    if result.get("best_peer"):
        lines.append(f"TVM int8 vs the best int8 peer ({result['best_peer']}): "
                     f"{_verdict(result['speedup_vs_best_peer'])}")
    else:
        lines.append("TVM int8 vs the best int8 peer: no int8 peer ran")
    if result.get("speedup_vs_fp32"):
        lines.append(f"TVM int8 vs TVM fp32: {_verdict(result['speedup_vs_fp32'])}")
    else:
        lines.append("TVM int8 vs TVM fp32: TVM fp32 did not run")
    for message in result.get("deprecations", ()):
        lines.append(f"PyTorch warned: {message[:80]}{'...' if len(message) > 80 else ''}")
    return "\n".join(lines)
