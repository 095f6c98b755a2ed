"""The benchmarks' runners and tables: every library in a process of its own, the fastest
configuration counting, and the verdicts as JSON-able dicts and text.

Written by hand (not from the chapters): this is harness. ``run_depthwise`` and
``run_mobilenet`` are what ``python -m d2ldw.bench depthwise|mobilenet`` runs and what the
performance chapter's pages show; each calls one timing function per library through
``d2ldw.isolated.run_isolated`` (a fresh process with the given threads) and compares every
peer at its fastest thread count.
"""
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from d2ldw.bench.depthwise import depthwise_layers, depthwise_te_candidates
from d2ldw.bench.kernels import time_kernel_sweep
from d2ldw.bench.mobilenet import MOBILENET_PEERS, mobilenet_peer_call
from d2ldw.bench.peers import (
    PEERS,
    check_tvm_threads,
    depthwise_layer_data,
    depthwise_peer_call,
    onnx_caller,
    onnx_layer_seconds,
    onnx_model,
    onnx_session,
    openvino_caller,
    openvino_compiled,
    openvino_layer_seconds,
)
from d2ldw.bench.roofline import best_roofs, thread_counts
from d2ldw.cost import conv2d_cost
from d2ldw.hardware import available_cpus, describe_cpu
from d2ldw.isolated import report_progress, run_isolated
from d2ldw.shapes import check_memory, checked_int
from d2ldw.timing import Timing, time_interleaved

__all__ = ["GRAPH_ENGINES", "TVM_CONFIGURATIONS", "time_depthwise_peer", "time_depthwise_te", "geometric_mean", "run_depthwise",
           "format_table", "LAYER_GROUPS", "layer_costs", "seconds_by_kind",
           "time_mobilenet_peer", "run_mobilenet", "format_mobilenet_table",
           "KERNEL_SWEEP_LIBRARIES", "run_kernel_sweep", "format_kernel_sweep"]


# Harness for chapters/performance/results.ipynb
# Engines that run a graph, and pay a fixed cost per call for it
GRAPH_ENGINES = ("ONNX Runtime", "OpenVINO")


class _Progress:
    """One line on stderr while a benchmark runs (``tqdm``): how many of its processes are
    done, which library runs now with how many threads, and what that process last
    reported (``d2ldw.isolated.report_progress``). Silent unless ``enabled``."""

    def __init__(self, total, title, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=title, unit="process", file=sys.stderr,
                            dynamic_ncols=True)

    def run(self, function, threads, label, **kwargs):
        """``run_isolated(function, threads, **kwargs)``, shown as ``label``."""
        if self.bar is None:
            return run_isolated(function, threads, **kwargs)
        where = f"{label}, {threads} thread{'s' if threads > 1 else ''}"
        self.bar.set_postfix_str(where)
        result = run_isolated(function, threads, on_progress=lambda message:
                              self.bar.set_postfix_str(f"{where}: {message}"), **kwargs)
        self.bar.update()
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if self.bar is not None:
            self.bar.close()


def _checked_run_args(batch, threads, repeat, first_layers=None):
    """The arguments every runner shares, checked once; ``threads=None``: every CPU this
    process may use."""
    batch = checked_int(batch, "batch", 1)
    repeat = checked_int(repeat, "repeat", 1)
    threads = available_cpus() if threads is None else checked_int(threads, "threads", 1)
    if first_layers is not None:
        first_layers = checked_int(first_layers, "first_layers", 1)
    return batch, threads, repeat, first_layers


def _torch_depthwise(x, w, stride):
    """The reference every depthwise timing is checked against: ``F.conv2d``."""
    import torch
    from torch.nn import functional as F

    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=1,
                    groups=x.shape[1]).numpy()


# --- the nine depthwise layers of MobileNet v1 -------------------------------------------

# Harness for chapters/performance/results.ipynb
def time_depthwise_peer(peer: str, batch: int = 1, threads: int = 1, repeat: int = 7,
                        first_layers: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Median seconds per call of one of ``PEERS`` on each depthwise layer, in this process
    alone, and its largest difference from ``F.conv2d``. For ONNX Runtime also
    ``call_overhead``, and so for OpenVINO: the seconds of a graph that copies one number."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    batch, threads, repeat, first_layers = _checked_run_args(batch, threads, repeat,
                                                             first_layers)
    import torch

    torch.set_num_threads(threads)
    calls, errors = {}, {}
    layers = depthwise_layers()[:first_layers]
    for k, (name, x, w, stride) in enumerate(depthwise_layer_data(layers, batch, seed)):
        report_progress(f"setting up layer {k + 1}/{len(layers)} ({name})")
        call, output = depthwise_peer_call(peer, x, w, stride, threads)
        call()
        errors[name] = float(np.abs(output() - _torch_depthwise(x, w, stride)).max())
        calls[name] = call
    report_progress(f"timing {len(calls)} layers, {repeat} rounds")
    result: dict[str, Any] = {"seconds": {k: t.median for k, t in
                          time_interleaved(calls, repeat=repeat).items()},
              "max_error": errors}
    if peer in GRAPH_ENGINES:  # the fixed cost of one call: a graph that copies one number
        result["call_overhead"] = time_interleaved(
            {"o": _nothing_call(peer, threads)}, repeat)["o"].median
    return result


def _nothing_call(engine, threads):
    """A call of ``engine`` on a graph that copies one number."""
    from onnx import helper

    one = np.ones(1, "float32")
    model = onnx_model([helper.make_node("Identity", ["X"], ["Y"])], [("X", [1])],
                       [("Y", [1])], {})
    if engine == "OpenVINO":
        return openvino_caller(openvino_compiled(model, threads), one)[0]
    return onnx_caller(onnx_session(model, threads), {"X": one})[0]


# Harness for chapters/performance/results.ipynb
def time_depthwise_te(batch: int = 1, threads: int = 1, repeat: int = 7,
                      first_layers: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Median seconds per call of the TE kernels (unscheduled, tuned) and of the
    conversions to and from NCHW[x]c on each depthwise layer, in this process alone, and
    the tuned kernel's largest difference from ``F.conv2d``."""
    batch, threads, repeat, first_layers = _checked_run_args(batch, threads, repeat,
                                                             first_layers)
    from d2ldw import tvm as d2l_tvm

    check_tvm_threads(threads)
    lanes = d2l_tvm.host_vector_lanes()
    calls: dict[Any, Callable[[], object]] = {}  # (layer, part): call
    errors = {}
    layers = depthwise_layers()[:first_layers]
    for k, (name, x, w, stride) in enumerate(depthwise_layer_data(layers, batch, seed)):
        report_progress(f"compiling layer {k + 1}/{len(layers)} ({name})")
        candidates, result = depthwise_te_candidates(x, w, stride, lanes)
        calls.update({(name, part): f for part, f in candidates.items()})
        errors[name] = float(np.abs(d2l_tvm.from_nchwc(result.numpy())
                                    - _torch_depthwise(x, w, stride)).max())
    seconds: dict[str, dict[str, float]] = {}
    report_progress(f"timing {len(layers)} layers, {repeat} rounds")
    timings: dict[Any, Timing] = time_interleaved(calls, repeat=repeat)
    for (name, part), timing in timings.items():
        seconds.setdefault(name, {})[part] = timing.median
    return {"seconds": seconds, "max_error": errors, "lanes": lanes}


# Harness for chapters/performance/results.ipynb
def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean of positive numbers: the mean of ratios that treats a 2x gain and a
    2x loss as cancelling."""
    values = list(values)
    if not values or min(values) <= 0:
        raise ValueError(f"geometric_mean needs positive numbers, got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _faster(runs):
    """Per layer (and part), the faster of the runs with each thread count:
    {(name, part): (seconds, threads)}."""
    best = {}
    for count, run in runs.items():
        for name, value in run["seconds"].items():
            parts = value if isinstance(value, dict) else {None: value}
            for part, seconds in parts.items():
                if seconds < best.get((name, part), (math.inf,))[0]:
                    best[name, part] = (seconds, count)
    return best


def _depthwise_row(name, batch, peers, te, faster, faster_te, threads):
    te_seconds = {part: faster_te[name, part][0] for part in te["seconds"][name]}
    channels, size, stride = map(int, name.split("/"))
    seconds = {p: faster[p][name, None][0] for p in PEERS}
    seconds.update(te_seconds)
    seconds["TE tuned + conversions"] = sum(
        te_seconds[k] for k in ("TE tuned", "to NCHWc", "from NCHWc"))
    best = min(PEERS, key=seconds.get)
    flops = conv2d_cost((batch, channels, size, size), (channels, 1, 3, 3), stride, 1,
                        groups=channels).flops
    tuned = ("TE tuned", "TE tuned + conversions")
    return {
        "channels": channels, "size": size, "stride": stride, "gflop": flops / 1e9,
        "best_peer": best,
        "max_error": {"TE tuned": te["max_error"][name],
                      **{p: peers[p][threads]["max_error"][name] for p in PEERS}},
        "threads": {**{p: faster[p][name, None][1] for p in PEERS},
                    "TE tuned": faster_te[name, "TE tuned"][1]},
        "median_us": {k: v * 1e6 for k, v in seconds.items()},
        "gflops": {k: flops / v / 1e9 for k, v in seconds.items()},
        "speedup_vs_best_peer": {k: seconds[best] / seconds[k] for k in tuned},
        "speedup_vs_torch": {k: seconds["PyTorch"] / seconds[k]
                             for k in (*PEERS, "TE default", *tuned)},
        "tuned_vs_channels_last": seconds["PyTorch channels_last"] / seconds["TE tuned"],
    }


# Harness for chapters/performance/results.ipynb
def run_depthwise(batch: int = 1, threads: int | None = None, repeat: int = 7,
                  first_layers: int | None = None, progress: bool = False
                  ) -> dict[str, Any]:
    """The per-layer benchmark: every peer and the TE kernels, each library in a process of
    its own, each with ``thread_counts(threads)``, the faster counting. Speedups are
    against the best peer of each layer. Returns a JSON-able dict. ``progress``: a line on
    stderr that says which process runs and how far it got."""
    batch, threads, repeat, first_layers = _checked_run_args(batch, threads, repeat,
                                                             first_layers)
    common = dict(batch=batch, repeat=repeat, first_layers=first_layers)
    counts = thread_counts(threads)
    with _Progress((len(PEERS) + 1) * len(counts), f"depthwise, batch {batch}",
                   progress) as runner:
        peers = {p: {t: runner.run(time_depthwise_peer, t, p, peer=p, **common)
                     for t in counts} for p in PEERS}
        te_runs = {t: runner.run(time_depthwise_te, t, "TE", **common) for t in counts}
    te = te_runs[threads]
    faster = {p: _faster(runs) for p, runs in peers.items()}
    faster_te = _faster(te_runs)
    rows = [_depthwise_row(name, batch, peers, te, faster, faster_te, threads)
            for name in te["seconds"]]

    def mean(key, part):
        return geometric_mean(r[key][part] for r in rows)

    return {
        "layers": rows, "batch": batch, "threads": threads, "repeat": repeat,
        "vector_lanes": te["lanes"], "thread_counts": counts,
        "onnx_call_overhead_us": min(
            r["call_overhead"] for r in peers["ONNX Runtime"].values()) * 1e6,
        "call_overhead_us": {engine: min(r["call_overhead"] for r in peers[engine].values())
                             * 1e6 for engine in GRAPH_ENGINES},
        "geomean_speedup_vs_best_peer": mean("speedup_vs_best_peer", "TE tuned"),
        "geomean_speedup_vs_best_peer_with_conversions": mean(
            "speedup_vs_best_peer", "TE tuned + conversions"),
        "geomean_speedup_vs_torch": mean("speedup_vs_torch", "TE tuned"),
        "geomean_tuned_vs_channels_last": geometric_mean(
            r["tuned_vs_channels_last"] for r in rows),
        "cpu_description": str(describe_cpu()),
    }


# Harness for chapters/performance/results.ipynb
def format_table(result: Mapping[str, Any]) -> str:
    """``run_depthwise``'s result as text: microseconds per call of each configuration,
    and the tuned kernel's speedup over the best peer of each layer."""
    short = {"PyTorch": "torch", "PyTorch channels_last": "torch CL", "MXNet": "MXNet",
             "ONNX Runtime": "ORT", "OpenVINO": "OV", "TE default": "TE dflt",
             "TE tuned": "TE tuned", "TE tuned + conversions": "TE+conv"}
    short = {k: v for k, v in short.items() if k in result["layers"][0]["median_us"]}
    counts = " and ".join(map(str, result["thread_counts"]))
    lines = [
        *result["cpu_description"].splitlines(),
        f"depthwise 3x3, MobileNet v1, batch {result['batch']}, each library in its own "
        f"process with {counts} threads, the faster counting; microseconds per call, "
        f"medians of {result['repeat']} rounds",
        f"TE+conv: TE tuned with NCHW -> NCHW{result['vector_lanes']}c -> NCHW conversions",
        f"{'layer':>11} | " + " ".join(f"{s:>8}" for s in short.values())
        + " | best peer   tuned   +conv",
    ]
    for row in result["layers"]:
        times = " ".join(f"{row['median_us'][k]:>8.1f}" for k in short)
        speedup = row["speedup_vs_best_peer"]
        lines.append(
            f"{row['channels']:>4}/{row['size']:>3}/{row['stride']} | {times} "
            f"| {short[row['best_peer']]:>9} {speedup['TE tuned']:>6.2f}x "
            f"{speedup['TE tuned + conversions']:>6.2f}x")
    lines += [
        f"geometric mean of TE tuned vs the best peer: "
        f"{result['geomean_speedup_vs_best_peer']:.2f}x "
        f"({result['geomean_speedup_vs_best_peer_with_conversions']:.2f}x with both "
        f"conversions)",
        f"vs PyTorch channels_last: {result['geomean_tuned_vs_channels_last']:.2f}x; vs "
        f"PyTorch NCHW: {result['geomean_speedup_vs_torch']:.2f}x; the cost of one call "
        "that does nothing: " + ", ".join(
            f"{engine} {us:.1f} us" for engine, us in result.get(
                "call_overhead_us", {"ONNX Runtime": result["onnx_call_overhead_us"]}).items()),
    ]
    return "\n".join(lines)


# --- a whole MobileNet -------------------------------------------------------------------

# Harness for chapters/performance/mobilenet_peers.ipynb
# How the tables group the kinds of layer of inference_layers.
LAYER_GROUPS = {"full": "first conv", "depthwise": "depthwise", "pointwise": "pointwise",
                "pool": "the rest", "linear": "the rest", "other": "the rest"}


# Harness for chapters/performance/mobilenet_peers.ipynb
def layer_costs(layers: Sequence[Mapping[str, Any]], input_shape: Sequence[int]
                ) -> list[dict[str, Any]]:
    """FLOPs and the least bytes moved (float32 input, weights and output once each) of
    every layer of ``inference_layers``, with its kind; sizes follow the layers."""
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    n, c, h, w = (checked_int(v, "input_shape", 1) for v in input_shape)
    costs = []
    for layer in layers:
        if layer["kind"] == "pool":
            flops, moved, (c, h, w) = n * c * h * w, n * c * (h * w + 1), (c, 1, 1)
        elif layer["kind"] == "linear":
            k = layer["weight"].shape[0]
            flops, moved, c = 2 * n * c * k, n * c + c * k + k + n * k, k
        else:
            weight, s, p = layer["weight"], layer["stride"], layer["padding"]
            size = (h + 2 * p - weight.shape[-1]) // s + 1
            flops = 2 * n * weight.shape[0] * size * size * weight[0].size
            moved = n * c * h * w + weight.size + n * weight.shape[0] * size * size
            c, h, w = weight.shape[0], size, size
        costs.append({"kind": layer["kind"], "flops": flops, "bytes": 4 * moved})
    return costs


def _tvm_layer_seconds(network, passes):
    """Median seconds of every layer over ``passes`` forward passes, each kernel timed
    inside the network by the virtual machine's hook."""
    samples = [network.layer_seconds() for _ in range(passes)]
    return dict(enumerate(np.median(samples, axis=0)))


# Harness for chapters/performance/mobilenet_peers.ipynb
def seconds_by_kind(layers: Sequence[Mapping[str, Any]],
                    per_layer: Mapping[int | None, float]) -> dict[str, float]:
    """Sum per kind of layer of ``per_layer`` (layer index: seconds); the seconds of no
    layer (index ``None``) count as "other"."""
    by_kind: dict[str, float] = {}
    for index, seconds in per_layer.items():
        kind = layers[index]["kind"] if index is not None else "other"
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    return by_kind


# Harness for chapters/performance/mobilenet_peers.ipynb
# The TVM network's two configurations, timed side by side in its process: every layer its
# own kernel (what the split by kind of layer times), and each depthwise layer fused with the
# pointwise layer after it (chapters/performance/fusion.ipynb)
TVM_CONFIGURATIONS = ("separate kernels", "depthwise + pointwise fused")


# Harness for chapters/performance/mobilenet_peers.ipynb
def time_mobilenet_peer(peer: str, version: str = "v1", batch: int = 1, threads: int = 1,
                        repeat: int = 7) -> dict[str, Any]:
    """Median seconds of one forward pass of one peer ("TVM" or one of
    ``MOBILENET_PEERS``) in this process alone, its logits' largest difference from the
    float64 PyTorch network's, and for TVM and the graph engines (ONNX Runtime, OpenVINO)
    the seconds per kind of layer,
    each layer timed inside the network (medians of ten times ``repeat`` passes). TVM runs
    both ``TVM_CONFIGURATIONS`` interleaved, the faster counting, and reports each
    (``configurations_ms``); its split by kind of layer is the separate kernels'. A peer
    that cannot run here returns ``{"error": message}``."""
    if peer not in ("TVM", *MOBILENET_PEERS):
        raise ValueError(f"unknown peer {peer!r}; expected 'TVM' or one of "
                         f"{MOBILENET_PEERS}")
    batch, threads, repeat, _ = _checked_run_args(batch, threads, repeat)
    import torch

    from d2ldw.torch import inference_layers, seeded_image, seeded_mobilenet

    # in TVM's process PyTorch only builds and checks the network: with one thread, no
    # OpenMP worker of its own waits on a CPU that TVM's threads need
    torch.set_num_threads(1 if peer == "TVM" else threads)
    if peer == "TVM":
        check_tvm_threads(threads)
    image = seeded_image(batch)
    layers = inference_layers(seeded_mobilenet(version))
    start = time.perf_counter()
    try:
        call, logits = mobilenet_peer_call(peer, version, image, threads)
    except Exception as error:  # e.g. torch.compile without a working compiler
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    calls, outputs = {TVM_CONFIGURATIONS[0]: call}, [logits]
    if peer == "TVM":  # the book's network in both configurations; the faster counts
        from d2ldw import tvm as d2l_tvm

        fused = d2l_tvm.CompiledNetwork(layers, tuple(image.shape), fuse=True)
        outputs.append(fused(image.numpy()))
        calls[TVM_CONFIGURATIONS[1]] = fused.run
    setup = time.perf_counter() - start
    report_progress(f"set up in {setup:.1f} s; timing {repeat} passes")
    with torch.no_grad():
        exact = seeded_mobilenet(version).double()(image.double()).numpy()
    timings = time_interleaved(calls, repeat=repeat)
    result: dict[str, Any] = {
        "seconds": min(timing.median for timing in timings.values()),
        "setup_seconds": setup,
        "max_error": max(float(np.abs(np.asarray(out) - exact).max()) for out in outputs),
        "largest_logit": float(np.abs(exact).max())}
    if peer == "TVM":
        result["configurations_ms"] = {name: timing.median * 1e3
                                       for name, timing in timings.items()}
    if peer in ("TVM", *GRAPH_ENGINES):  # each layer, inside the network
        report_progress(f"timing each layer inside the network, {10 * repeat} passes")
        if peer == "TVM":
            per_layer = _tvm_layer_seconds(call.__self__, 10 * repeat)
        else:
            profile = (onnx_layer_seconds if peer == "ONNX Runtime"
                       else openvino_layer_seconds)
            per_layer = profile(layers, image.numpy(), threads, 10 * repeat)
        result["seconds_by_kind"] = seconds_by_kind(layers, per_layer)
    return result


def _fastest_runs(tries, threads):
    """Per peer, its fastest run and the threads it had, and its best milliseconds per
    thread count; a peer that never ran keeps its last error."""
    runs, ms_by_threads = {}, {}
    for peer, peer_tries in tries.items():
        ran = [(t, r) for t, r in peer_tries if "seconds" in r]
        ms_by_threads[peer] = {t: min(r["seconds"] for u, r in ran if u == t) * 1e3
                               for t in sorted({t for t, _ in ran})}
        t, fastest = (min(ran, key=lambda run: run[1]["seconds"]) if ran
                      else (threads, peer_tries[-1][1]))
        runs[peer] = {**fastest, "threads": t}
    return runs, ms_by_threads


def _groups(costs, by_kind):
    """Milliseconds, GFLOP and MB per layer group, from seconds per kind of layer."""
    groups = {}
    for cost in costs:
        group = groups.setdefault(LAYER_GROUPS[cost["kind"]],
                                  {"ms": 0.0, "gflop": 0.0, "mbytes": 0.0})
        group["gflop"] += cost["flops"] / 1e9
        group["mbytes"] += cost["bytes"] / 1e6
    for kind, seconds in by_kind.items():
        groups[LAYER_GROUPS[kind]]["ms"] += seconds * 1e3
    return groups


# Harness for chapters/performance/mobilenet_peers.ipynb
def run_mobilenet(version: str = "v1", batch: int = 1, threads: int | None = None,
                  repeat: int = 7, rounds: int = 2, progress: bool = False
                  ) -> dict[str, Any]:
    """The whole-network benchmark: the book's TVM network and every peer of
    ``MOBILENET_PEERS``, each in a process of its own, each with every count of
    ``thread_counts(threads)``, in ``rounds`` rounds (the peers in turn, the order reversed
    every other round); per peer the fastest run counts, as a load that comes and goes on a
    shared machine only ever slows a run down. Returns a JSON-able dict with milliseconds
    per peer, the TVM network's milliseconds and FLOPs per layer group, and
    ``speedup_vs_best_peer``. ``progress``: a line on stderr while it runs."""
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    batch, threads, repeat, _ = _checked_run_args(batch, threads, repeat)
    rounds = checked_int(rounds, "rounds", 1)
    from d2ldw.torch import inference_layers, seeded_mobilenet

    peers = ("TVM", *MOBILENET_PEERS)
    tries: dict[str, list[tuple[int, dict[str, Any]]]] = {
        peer: [] for peer in peers}  # (threads, result) of every run
    counts = thread_counts(threads)
    with _Progress(rounds * len(peers) * len(counts), f"MobileNet {version}, batch {batch}",
                   progress) as runner:
        for round_ in range(rounds):
            for peer in peers if round_ % 2 == 0 else peers[::-1]:
                for t in counts:
                    tries[peer].append((t, runner.run(
                        time_mobilenet_peer, t, f"round {round_ + 1}, {peer}", peer=peer,
                        version=version, batch=batch, repeat=repeat)))
    runs, ms_by_threads = _fastest_runs(tries, threads)
    if "seconds" not in runs["TVM"]:
        raise RuntimeError(f"the TVM network did not run: {runs['TVM'].get('error')}")
    costs = layer_costs(inference_layers(seeded_mobilenet(version)), (batch, 3, 224, 224))
    groups = _groups(costs, runs["TVM"]["seconds_by_kind"])
    engine_groups = {engine: {g: row["ms"] for g, row in _groups(
        costs, runs[engine].get("seconds_by_kind", {})).items()} for engine in GRAPH_ENGINES}
    ran = {p: r for p, r in runs.items() if "seconds" in r}
    best = min((p for p in ran if p != "TVM"), key=lambda p: ran[p]["seconds"])
    return {
        "model": version, "batch": batch, "threads": threads, "repeat": repeat,
        "rounds": rounds,
        "ms": {p: r["seconds"] * 1e3 for p, r in ran.items()},
        "threads_used": {p: r["threads"] for p, r in ran.items()},
        "ms_by_threads": ms_by_threads, "thread_counts": thread_counts(threads),
        "setup_s": {p: r["setup_seconds"] for p, r in ran.items()},
        "max_error": {p: r["max_error"] for p, r in ran.items()},
        "largest_logit": runs["TVM"]["largest_logit"],
        "errors": {p: r["error"] for p, r in runs.items() if "error" in r},
        "best_peer": best,
        "speedup_vs_best_peer": ran[best]["seconds"] / ran["TVM"]["seconds"],
        "speedup_vs_peer": {p: r["seconds"] / ran["TVM"]["seconds"]
                            for p, r in ran.items() if p != "TVM"},
        "tvm_configurations_ms": runs["TVM"]["configurations_ms"],
        "tvm_by_group": groups, "onnx_ms_by_group": engine_groups["ONNX Runtime"],
        "engine_ms_by_group": engine_groups,
        "roofs": best_roofs(threads), "cpu_description": str(describe_cpu()),
    }


# Harness for chapters/performance/mobilenet_peers.ipynb
def format_mobilenet_table(result: Mapping[str, Any]) -> str:
    """``run_mobilenet``'s result as text."""
    counts = " and ".join(map(str, result["thread_counts"]))
    lines = [
        *result["cpu_description"].splitlines(),
        f"MobileNet {result['model']}, batch {result['batch']}, each in its own process, "
        f"the fastest of {counts} threads in {result['rounds']} rounds; median ms of "
        f"{result['repeat']} samples",
        f"{'':22} {'ms':>8} {'threads':>7} {'TVM speedup':>12} {'max |error|':>12}",
    ]
    for peer, ms in sorted(result["ms"].items(), key=lambda item: item[1]):
        speedup = result["speedup_vs_peer"].get(peer)
        lines.append(f"{peer:22} {ms:>8.2f} {result['threads_used'][peer]:>7} "
                     f"{f'{speedup:.2f}x' if speedup else '':>12} "
                     f"{result['max_error'][peer]:>12.1e}")
    for peer, error in result["errors"].items():
        lines.append(f"{peer:22} did not run: {error[:50]}")
    lines.append(f"TVM vs the best peer ({result['best_peer']}): "
                 f"{result['speedup_vs_best_peer']:.2f}x")
    if "tvm_configurations_ms" in result:
        lines.append("TVM's network, the two configurations interleaved in its fastest run: "
                     + ", ".join(f"{name} {ms:.2f} ms" for name, ms in
                                 result["tvm_configurations_ms"].items()))
    lines.append("by kind of layer, each layer timed inside the network (TVM's with separate "
                 "kernels): ms (GFLOP/s), and each engine's ms over TVM's")
    engines = result.get("engine_ms_by_group",
                         {"ONNX Runtime": result["onnx_ms_by_group"]})
    lines.append(f"  {'':11} {'TVM':>16} " + " ".join(
        f"{engine:>16} {'ratio':>6}" for engine in engines))

    def cell(ms, gflop):
        rate = f"({gflop / ms * 1e3:.1f})" if ms else ""
        return f"{ms:>7.2f} {rate:>8}"

    for group, row in result["tvm_by_group"].items():
        cells = []
        for by_group in engines.values():
            ms = by_group.get(group, 0.0)
            ratio = f"{ms / row['ms']:.2f}x" if ms and row["ms"] else ""
            cells.append(f"{cell(ms, row['gflop'])} {ratio:>6}")
        lines.append(f"  {group:11} {cell(row['ms'], row['gflop'])} " + " ".join(cells))
    return "\n".join(lines)


# --- large depthwise kernels against the roofline -----------------------------------------

def _kernel_sweep_shapes(kernel, batch, channels, size):
    """(FLOPs, minimum bytes) of a float32 depthwise kxk layer, 'same'."""
    pixels = batch * channels * size * size
    return 2 * pixels * kernel * kernel, 4 * (2 * pixels
                                              + channels * kernel * kernel)


# Harness for chapters/beyond/large_kernels.ipynb
KERNEL_SWEEP_LIBRARIES = ("PyTorch", "TE")


def _checked_sweep_args(kernels, batch, channels, size, threads, repeat):
    if isinstance(kernels, (str, bytes)) or not hasattr(kernels, "__iter__"):
        raise TypeError(f"kernels must be a list of odd ints, got "
                        f"{type(kernels).__name__}")
    kernels = [checked_int(k, "kernels", 1) for k in kernels]
    if not kernels or any(k % 2 == 0 for k in kernels):
        raise ValueError(f"kernels must be a non-empty list of odd sizes "
                         f"('same' padding), got {kernels}")
    batch, size, repeat = (checked_int(v, name, 1) for v, name in
                           [(batch, "batch"), (size, "size"),
                            (repeat, "repeat")])
    channels = checked_int(channels, "channels", 1)
    if channels % 16:
        raise ValueError(f"channels must be a multiple of 16 (the TE kernel "
                         f"blocks channels by vector lanes), got {channels}")
    threads = available_cpus() if threads is None else checked_int(
        threads, "threads", 1)
    check_memory(8 * batch * channels * size * size, f"batch {batch} of "
                 f"{channels}x{size}x{size}", None)
    return kernels, batch, channels, size, threads, repeat


# Harness for chapters/beyond/large_kernels.ipynb
def run_kernel_sweep(kernels: Iterable[int], batch: int = 1, channels: int = 64,
                     size: int = 28, threads: int | None = None, repeat: int = 5,
                     progress: bool = False) -> dict[str, Any]:
    """Depthwise kxk ('same', stride 1, float32) for each of ``kernels``:
    PyTorch and the tuned TE kernel, each timed in its own process
    (``run_isolated``), against this CPU's roofs (``best_roofs``). Returns a
    JSON-able dict. ``progress``: a line on stderr while it runs."""
    kernels, batch, channels, size, threads, repeat = _checked_sweep_args(
        kernels, batch, channels, size, threads, repeat)
    roofs = best_roofs(threads)
    peak, bandwidth = roofs["flops"], roofs["bytes"]
    with _Progress(len(KERNEL_SWEEP_LIBRARIES), "kernel sweep", progress) as runner:
        timed = {library: runner.run(
            time_kernel_sweep, threads, library, library=library, kernels=kernels,
            batch=batch, channels=channels, size=size, repeat=repeat)
            for library in KERNEL_SWEEP_LIBRARIES}
    rows = []
    for k in kernels:
        flops, nbytes = _kernel_sweep_shapes(k, batch, channels, size)
        seconds = {lib: timed[lib]["seconds"][str(k)] for lib in timed}
        rows.append({
            "kernel": k, "gflop": flops / 1e9, "bytes": nbytes,
            "intensity": flops / nbytes,
            "roof_gflops": min(peak, flops / nbytes * bandwidth) / 1e9,
            "median_us": {lib: s * 1e6 for lib, s in seconds.items()},
            "gflops": {lib: flops / s / 1e9 for lib, s in seconds.items()},
            "max_error_te": timed["TE"]["max_error"][str(k)]})
    return {"kernels": rows, "batch": batch, "channels": channels,
            "size": size, "threads": threads, "repeat": repeat,
            "peak_gflops": peak / 1e9, "bandwidth_gbs": bandwidth / 1e9,
            "ridge_flop_per_byte": peak / bandwidth,
            "processes": "each library timed in its own child process",
            "cpu_description": str(describe_cpu())}


# Harness for chapters/beyond/large_kernels.ipynb
def format_kernel_sweep(result: Mapping[str, Any]) -> str:
    """run_kernel_sweep's result as a table: GFLOP/s against the roof."""
    lines = [
        *result["cpu_description"].splitlines(),
        f"depthwise kxk, C={result['channels']}, {result['size']}x"
        f"{result['size']}, batch {result['batch']}, {result['threads']} "
        f"threads; medians of {result['repeat']}, {result['processes']}",
        f"roofs: {result['peak_gflops']:.0f} GFLOP/s, "
        f"{result['bandwidth_gbs']:.1f} GB/s, ridge "
        f"{result['ridge_flop_per_byte']:.1f} FLOP/B",
        f"{'k':>3} {'FLOP/B':>7} {'roof':>7} {'PyTorch':>8} {'TE':>8} "
        f"{'TE err':>8}  (GFLOP/s)"]
    for row in result["kernels"]:
        lines.append(
            f"{row['kernel']:>3} {row['intensity']:>7.1f} "
            f"{row['roof_gflops']:>7.1f} {row['gflops']['PyTorch']:>8.1f} "
            f"{row['gflops']['TE']:>8.1f} {row['max_error_te']:>8.1e}")
    return "\n".join(lines)