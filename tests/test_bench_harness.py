"""The benchmarks' hand-written harness: d2ldw.bench.peers and d2ldw.bench.runs.

What the pages time is tested with the pages' code (test_performance.py, test_mobilenet_tvm.py);
here, that every peer computes the same layer, that the runners refuse bad arguments before
they start a process, and that the tables are read off the results they are given.
"""
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from d2ldw import conv2d_cost, get_conv_data
from d2ldw import bench
from d2ldw.bench import runs
from d2ldw.torch import inference_layers, seeded_image, seeded_mobilenet


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("peer", bench.PEERS)
def test_every_peer_computes_the_depthwise_layer_of_f_conv2d(peer, stride):
    x, w, _ = get_conv_data(16, 16, 9, 3, batch=2, groups=16, seed=3)
    call, output = bench.depthwise_peer_call(peer, x, w, stride, threads=1)
    call()
    first = output().copy()
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                        padding=1, groups=16).numpy()
    assert first.shape == expected.shape
    # nine products per output: a few float32 roundings of terms of order one
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-5)
    call()  # the call writes into the same memory again, with the same result
    np.testing.assert_array_equal(output(), first)


def test_a_peer_call_refuses_what_it_does_not_know():
    x, w, _ = get_conv_data(16, 16, 9, 3, groups=16, seed=0)
    with pytest.raises(ValueError, match="unknown peer 'cuDNN'; expected one of"):
        bench.depthwise_peer_call("cuDNN", x, w, 1, 1)
    with pytest.raises(ValueError, match=r"weight \(C, 1, 3, 3\), got \(1, 16, 9, 9\) and "
                                         r"\(16, 1, 5, 5\)"):
        bench.depthwise_onnx_session((1, 16, 9, 9), np.zeros((16, 1, 5, 5), "float32"), 1, 1)
    with pytest.raises(ValueError, match="stride"):
        bench.depthwise_onnx_session((1, 16, 9, 9), w, 0, 1)


@pytest.mark.parametrize("threads, error", [(0, ValueError), ("2", TypeError),
                                            (True, TypeError), (1.5, TypeError)])
def test_sessions_refuse_a_bad_thread_count(threads, error):
    _, w, _ = get_conv_data(16, 16, 9, 3, groups=16, seed=0)
    with pytest.raises(error, match="threads"):
        bench.depthwise_onnx_session((1, 16, 9, 9), w, 1, threads)
    with pytest.raises(error, match="threads"):
        bench.check_tvm_threads(threads)


def test_a_caller_binds_exactly_the_inputs_of_its_session():
    x, w, _ = get_conv_data(16, 16, 9, 3, groups=16, seed=0)
    session = bench.depthwise_onnx_session(list(x.shape), w, 1, 1)
    with pytest.raises(ValueError, match=r"the session's inputs are \['X'\], got arrays "
                                         r"for \['Y'\]"):
        bench.onnx_caller(session, {"Y": x})
    with pytest.raises(TypeError, match="arrays must be a dict of input name: array, got "
                                        "ndarray"):
        bench.onnx_caller(session, x)
    call, result = bench.onnx_caller(session, {"X": x})
    assert not result.any()  # written by the call, not before
    call()
    assert result.any()


def test_tvm_refuses_a_pool_of_another_size_than_the_peers():
    import tvm

    running = tvm.get_global_func("runtime.NumThreads")()
    bench.check_tvm_threads(running)
    with pytest.raises(RuntimeError, match=f"runs {running} threads, not {running + 1}: "
                                           f"set TVM_NUM_THREADS={running + 1}"):
        bench.check_tvm_threads(running + 1)


def test_the_onnx_network_computes_the_folded_pytorch_network():
    model = seeded_mobilenet("v2")
    image = seeded_image()
    session = bench.mobilenet_onnx_session(inference_layers(model), image.shape, 1)
    call, logits = bench.onnx_caller(session, {"X": image.numpy()})
    call()
    with torch.no_grad():
        exact = model.double()(image.double()).numpy()
    assert logits.shape == exact.shape == (1, 1000)
    # float32 through 50-odd layers: the same logits to a few units in the fourth digit
    assert np.abs(logits - exact).max() < 1e-3 * np.abs(exact).max()


def test_the_onnx_network_refuses_what_is_not_a_list_of_layers():
    layers = inference_layers(seeded_mobilenet("v1"))
    with pytest.raises(TypeError, match="list of dicts inference_layers returns"):
        bench.mobilenet_onnx_session("v1", (1, 3, 224, 224), 1)
    with pytest.raises(ValueError, match="the last layer must be the classifier"):
        bench.mobilenet_onnx_session(layers[:-1], (1, 3, 224, 224), 1)


def test_layer_data_is_seeded_and_named_by_its_layer():
    layers = [(32, 14, 1), (64, 14, 2)]
    first = list(bench.depthwise_layer_data(layers, 2, seed=5))
    again = list(bench.depthwise_layer_data(layers, 2, seed=5))
    assert [name for name, *_ in first] == ["32/14/1", "64/14/2"]
    for (_, x, w, stride), (_, x2, w2, _), (c, size, s) in zip(first, again, layers):
        assert x.shape == (2, c, size, size) and w.shape == (c, 1, 3, 3) and stride == s
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(w, w2)


# --- the runners: arguments checked before any process starts ----------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: bench.run_depthwise(batch=0), "batch"),
    (lambda: bench.run_depthwise(threads=0), "threads"),
    (lambda: bench.run_depthwise(repeat="7"), "repeat"),
    (lambda: bench.run_depthwise(first_layers=0), "first_layers"),
    (lambda: bench.run_mobilenet(version="v3"), "version must be 'v1' or 'v2', got 'v3'"),
    (lambda: bench.run_mobilenet(rounds=0), "rounds"),
    (lambda: bench.time_mobilenet_peer("JAX"), "unknown peer 'JAX'; expected 'TVM' or one"),
    (lambda: bench.time_depthwise_te(batch=-1), "batch"),
    (lambda: bench.layer_costs([], (1, 3, 224)), r"input_shape must be \(N, C, H, W\)"),
])
def test_runners_refuse_bad_arguments_before_they_start(call, message, monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(runs, "run_isolated", no_process)
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_layer_costs_count_each_convolution_as_conv2d_cost_does():
    layers = inference_layers(seeded_mobilenet("v2"))
    costs = bench.layer_costs(layers, (2, 3, 224, 224))
    assert [c["kind"] for c in costs] == [layer["kind"] for layer in layers]
    size, channels = 224, 3
    for layer, cost in zip(layers, costs):
        if layer["kind"] in ("pool", "linear"):
            continue
        w = layer["weight"]
        groups = w.shape[0] if layer["kind"] == "depthwise" else 1
        expected = conv2d_cost((2, channels, size, size), w.shape, layer["stride"],
                               layer["padding"], groups=groups)
        # conv2d_cost counts the bias too; layer_costs counts the products and sums
        assert cost["flops"] == 2 * expected.mult_adds, layer
        size = (size + 2 * layer["padding"] - w.shape[-1]) // layer["stride"] + 1
        channels = w.shape[0]
    linear = costs[-1]
    assert linear["flops"] == 2 * 2 * 1280 * 1000


def test_seconds_by_kind_and_the_fastest_run_of_every_peer():
    layers = [{"kind": "full"}, {"kind": "depthwise"}, {"kind": "depthwise"}]
    by_kind = bench.seconds_by_kind(layers, {0: 1.0, 1: 2.0, 2: 0.5, None: 0.25})
    assert by_kind == {"full": 1.0, "depthwise": 2.5, "other": 0.25}
    tries = {"A": [(1, {"seconds": 3.0}), (2, {"seconds": 2.0}), (1, {"seconds": 2.5})],
             "B": [(1, {"error": "RuntimeError: no compiler"})]}
    fastest, ms = runs._fastest_runs(tries, 2)
    assert fastest["A"] == {"seconds": 2.0, "threads": 2}
    assert ms["A"] == {1: 2500.0, 2: 2000.0}
    assert fastest["B"]["error"].startswith("RuntimeError") and ms["B"] == {}


def test_the_faster_thread_count_counts_per_layer():
    faster = runs._faster({1: {"seconds": {"a": 2.0, "b": 1.0}},
                           4: {"seconds": {"a": 1.0, "b": 3.0}}})
    assert faster == {("a", None): (1.0, 4), ("b", None): (1.0, 1)}


def _depthwise_result():
    names = ("PyTorch", "PyTorch channels_last", "MXNet", "ONNX Runtime", "OpenVINO",
             "TE default", "TE tuned", "TE tuned + conversions")
    row = {"channels": 32, "size": 112, "stride": 1, "best_peer": "PyTorch channels_last",
           "median_us": {n: 10.0 * (k + 1) for k, n in enumerate(names)},
           "speedup_vs_best_peer": {"TE tuned": 1.25, "TE tuned + conversions": 0.5}}
    return {"cpu_description": "CPU: a test", "batch": 1, "thread_counts": [1, 2],
            "repeat": 7, "vector_lanes": 16, "layers": [row],
            "geomean_speedup_vs_best_peer": 1.25,
            "geomean_speedup_vs_best_peer_with_conversions": 0.5,
            "geomean_tuned_vs_channels_last": 1.25, "geomean_speedup_vs_torch": 3.0,
            "onnx_call_overhead_us": 4.5,
            "call_overhead_us": {"ONNX Runtime": 4.5, "OpenVINO": 6.25}}


def test_the_depthwise_table_reads_its_result():
    lines = bench.format_table(_depthwise_result()).splitlines()
    assert lines[0] == "CPU: a test"
    assert "with 1 and 2 threads" in lines[1] and "NCHW16c" in lines[2]
    (row,) = [line for line in lines if line.lstrip().startswith("32/112/1")]
    assert row.split("|")[1].split() == ["10.0", "20.0", "30.0", "40.0", "50.0", "60.0",
                                          "70.0", "80.0"]
    assert row.split("|")[2].split() == ["torch", "CL", "1.25x", "0.50x"]
    assert "1.25x (0.50x with both conversions)" in lines[-2]
    assert lines[-1].endswith("does nothing: ONNX Runtime 4.5 us, OpenVINO 6.2 us")


def test_the_mobilenet_table_reads_its_result():
    result = {
        "cpu_description": "CPU: a test", "model": "v2", "batch": 1,
        "thread_counts": [1, 2], "rounds": 2, "repeat": 7,
        "ms": {"TVM": 2.0, "ONNX Runtime": 3.0}, "threads_used": {"TVM": 2,
                                                                 "ONNX Runtime": 1},
        "speedup_vs_peer": {"ONNX Runtime": 1.5}, "max_error": {"TVM": 1e-5,
                                                                "ONNX Runtime": 2e-5},
        "errors": {"torch.compile": "RuntimeError: no compiler"},
        "best_peer": "ONNX Runtime", "speedup_vs_best_peer": 1.5,
        "tvm_by_group": {"pointwise": {"ms": 1.0, "gflop": 0.5, "mbytes": 4.0}},
        "onnx_ms_by_group": {"pointwise": 2.0},
        "tvm_configurations_ms": {"separate kernels": 2.5, "depthwise + pointwise fused": 2.0},
    }
    text = bench.format_mobilenet_table(result)
    assert ("two configurations interleaved in its fastest run: separate kernels 2.50 ms, "
            "depthwise + pointwise fused 2.00 ms") in text
    assert "MobileNet v2, batch 1" in text
    assert "TVM vs the best peer (ONNX Runtime): 1.50x" in text
    assert "torch.compile          did not run: RuntimeError: no compiler" in text
    (pointwise,) = [line for line in text.splitlines() if line.startswith("  pointwise")]
    assert pointwise.split() == ["pointwise", "1.00", "(500.0)", "2.00", "(250.0)", "2.00x"]
    rows = [line.split()[0] for line in text.splitlines()[3:5]]
    assert rows == ["TVM", "ONNX"]  # fastest first


def test_geometric_mean_of_ratios_treats_gain_and_loss_alike():
    assert math.isclose(bench.geometric_mean([2.0, 0.5]), 1.0)


# --- the command line: what is missing is said first, progress while it runs -------------

def test_a_child_reports_how_far_it_got_while_it_runs():
    from d2ldw.isolated import run_isolated

    messages = []
    result = run_isolated(bench.time_depthwise_peer, 1, on_progress=messages.append,
                          peer="PyTorch", first_layers=2, repeat=1)
    assert set(result["seconds"]) == {"32/112/1", "64/112/2"}
    assert messages == ["setting up layer 1/2 (32/112/1)", "setting up layer 2/2 (64/112/2)",
                        "timing 2 layers, 1 rounds"]
    with pytest.raises(TypeError, match="on_progress must be callable or None, got int"):
        run_isolated(bench.time_depthwise_peer, 1, on_progress=3)


def test_progress_outside_a_child_is_silent(capsys):
    from d2ldw.isolated import report_progress

    report_progress("layer 1/9")
    assert capsys.readouterr() == ("", "")


def test_a_missing_package_is_named_with_its_pip_line_before_anything_runs(monkeypatch,
                                                                            capsys):
    import importlib.util

    from d2ldw import bench_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "mxnet") else real(name, *a))
    with pytest.raises(SystemExit) as exit_:
        bench_cli.main(["depthwise", "--layers", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "python -m d2ldw.bench depthwise: error: needs mxnet, onnx, not installed: "
        "pip install 'd2ldw[bench,mxnet]'\n")
    assert bench_cli.missing_packages("kernels") is None


def test_help_gives_every_flag_its_default_and_unit(capsys):
    from d2ldw import bench_cli
    from d2ldw.hardware import available_cpus

    with pytest.raises(SystemExit):
        bench_cli.main(["kernels", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--batch", "--threads", "--repeat", "--json", "--progress", "--kernel",
                 "--channels", "--size"):
        assert flag in text
    assert text.count("(default:") == 8
    assert f"(default: the {available_cpus()} CPUs available here)" in text
    assert "in pixels (default: 28)" in text and "(default: [3, 7, 15, 31])" in text


def test_the_command_shows_its_progress_on_stderr(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "sweep.json"
    run = subprocess.run(
        [sys.executable, "-m", "d2ldw.bench", "kernels", "--kernel", "3", "--channels", "16",
         "--size", "8", "--threads", "1", "--repeat", "1", "--progress", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "kernel sweep" in run.stderr and "2/2" in run.stderr
    assert "TE, 1 thread" in run.stderr
    assert "kernel sweep" not in run.stdout  # the table alone on stdout
    assert json.loads(out.read_text())["kernels"][0]["kernel"] == 3


# --- OpenVINO, and the hardware's own roof --------------------------------------------------

def test_openvino_runs_the_folded_network_and_names_its_layers():
    layers = inference_layers(seeded_mobilenet("v1"))
    image = seeded_image().numpy()
    compiled = bench.openvino_compiled(bench.mobilenet_onnx_model(layers, image.shape), 1)
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    call, request = bench.openvino_caller(compiled, image)
    call()
    model = seeded_mobilenet("v1")
    with torch.no_grad():
        exact = model.double()(torch.from_numpy(image).double()).numpy()
    logits = request.get_output_tensor().data
    assert np.abs(logits - exact).max() < 1e-3 * np.abs(exact).max()
    seconds = bench.openvino_layer_seconds(layers, image, 1, 2)
    # every convolution and the classifier is a node of its own, named after its layer
    kinds = {layers[k]["kind"] for k in seconds if k is not None}
    assert {"full", "depthwise", "pointwise", "linear"} <= kinds
    assert all(s > 0 for s in seconds.values())
    with pytest.raises(ValueError, match=r"the model's input is \(1, 3, 224, 224\), got an "
                                         r"array of shape \(1, 3, 32, 32\)"):
        bench.openvino_caller(compiled, np.zeros((1, 3, 32, 32), "float32"))


@pytest.mark.parametrize("accumulators, iterations", [(1, 1), (4, 5), (12, 24)])
def test_the_fma_loop_computes_its_recurrence(accumulators, iterations):
    """a <- a/2 + 1 from 0: 2 - 2**(1 - n) after n steps, exact in float32 for n <= 24, so
    any build (fused or not) must give it bit for bit."""
    import tvm

    from d2ldw import tvm as d2l_tvm

    lanes = d2l_tvm.host_vector_lanes()
    library = d2l_tvm.build(bench.fma_loop(2, accumulators, lanes, iterations))
    a = tvm.runtime.tensor(np.zeros((2, accumulators, lanes), "float32"), tvm.cpu())
    library(a, tvm.runtime.tensor(np.full(lanes, 0.5, "float32"), tvm.cpu()),
            tvm.runtime.tensor(np.ones(lanes, "float32"), tvm.cpu()))
    assert (a.numpy() == np.float32(2 - 2.0 ** (1 - iterations))).all()


def test_the_fma_roof_is_measured_in_a_process_with_its_threads():
    from d2ldw.isolated import run_isolated

    flops = run_isolated(bench.measure_fma_roof, 1, iterations=20_000, repeat=2)
    # a vector unit does at least one multiply-add per cycle on any x86-64 CPU: 8 FLOP per
    # cycle with SSE2's 4 lanes, over 0.5 GHz at the least
    assert flops > 4e9
    with pytest.raises(RuntimeError, match="TVM's thread pool runs"):
        run_isolated(bench.measure_fma_roof, 1, {"TVM_NUM_THREADS": "2"}, iterations=10)
