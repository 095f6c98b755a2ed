"""The int8 benchmark's harness, d2ldw.bench.int8: correctness and errors, no timings.

Each int8 peer is built on the seeded MobileNets and its logits are compared with the float64
network's; the QDQ model is checked to be quantized and fused by ONNX Runtime into integer
convolutions; the runner and the table refuse bad arguments and read the results they are
given; the command line parses its flags.
"""
import os
import tempfile
from collections import Counter

import numpy as np
import pytest
import torch

from d2ldw import bench
from d2ldw.bench import int8, runs
from d2ldw.quantization import sqnr_db
from d2ldw.torch import seeded_image, seeded_mobilenet

# The logits' SQNR against the float64 network, measured on this machine's AVX-512 VNNI CPU
# with PyTorch 2.13, ONNX Runtime 1.31 and OpenVINO 2026.4 (dB):
#   v2: PyTorch 11.1, ONNX Runtime 13.4, OpenVINO 13.1
#   v1: PyTorch 11.6, ONNX Runtime 12.8, OpenVINO 12.8
# so the floor leaves 5 dB of margin.
# A seeded, untrained network amplifies rounding layer after layer (Section 8.2: "the logits'
# SQNR is modest either way"); a broken quantization (a wrong scale, a lost zero point, float
# weights read as int8) gives around 0 dB or less.
FLOOR_DB = 6.0

# PyTorch 2.13 warns that torch.ao.quantization and its quantized tensors are deprecated (the
# harness records it: test_the_runner_...); here the warnings would only bury the report.
pytestmark = [pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*deprecated:UserWarning")]


def _exact(version):
    with torch.no_grad():
        return seeded_mobilenet(version).double()(seeded_image(1).double()).numpy()


def test_the_calibration_images_are_seeded():
    first, again = int8.calibration_images(), int8.calibration_images()
    assert first.shape == (4, 3, 224, 224) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    expected = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(first, expected.numpy())  # what Section 8.2 calibrates on
    other = int8.calibration_images(2, seed=5)
    assert other.shape == (2, 3, 224, 224) and not np.array_equal(other, first[:2])
    with pytest.raises(ValueError, match="count"):
        int8.calibration_images(0)
    with pytest.raises(TypeError, match="seed"):
        int8.calibration_images(seed=1.5)


@pytest.mark.parametrize("version", ["v2", "v1"])
@pytest.mark.parametrize("peer", ["PyTorch int8", "ONNX Runtime int8", "OpenVINO int8"])
def test_every_int8_peer_computes_the_network_to_a_few_bits(peer, version):
    calibration = int8.calibration_images()
    call, logits = int8.int8_peer_call(peer, version, seeded_image(1), calibration, 1)
    logits = np.array(logits, dtype="float64")
    assert logits.shape == (1, 1000)
    sqnr = sqnr_db(_exact(version), logits)
    print(f"{peer}, MobileNet {version}: logits' SQNR {sqnr:.1f} dB")
    assert FLOOR_DB < sqnr < 40  # int8, not float32 under another name
    call()  # the call the benchmark times runs again


def test_pytorch_int8_in_channels_last_computes_what_nchw_computes():
    calibration = int8.calibration_images(2)
    image = seeded_image(1)
    _, nchw = int8.int8_peer_call("PyTorch int8", "v2", image, calibration, 1)
    _, last = int8.int8_peer_call("PyTorch int8 channels_last", "v2", image, calibration, 1)
    np.testing.assert_allclose(last, nchw, rtol=0, atol=1e-5)


def test_the_qdq_model_is_quantized_and_fused_into_integer_convolutions():
    import onnxruntime as ort

    model = int8.int8_onnx_model("v2", int8.calibration_images(2))
    ops = Counter(node.op_type for node in model.graph.node)
    convolutions = ops["Conv"]
    assert convolutions == 52  # MobileNet v2: 52 convolutions
    assert ops["QuantizeLinear"] >= convolutions and ops["DequantizeLinear"] >= convolutions
    weights = {i.name: i for i in model.graph.initializer}
    int8_weights = [w for w in weights.values() if w.data_type == 3]  # TensorProto.INT8
    assert len(int8_weights) >= convolutions + 1  # every convolution's and the classifier's
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        import onnx

        optimized = Counter(n.op_type for n in onnx.load(
            options.optimized_model_filepath).graph.node)
    assert optimized["QLinearConv"] == convolutions and "Conv" not in optimized
    assert optimized["QuantizeLinear"] == 1 and optimized["DequantizeLinear"] == 1


def test_openvino_runs_the_qdq_model_in_int8():
    compiled = bench.openvino_compiled(int8.int8_onnx_model("v1", int8.calibration_images(2)),
                                       1)
    precisions = Counter(
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    assert set(precisions) == {"u8"}, precisions


def test_the_book_int8_network_computes_the_network_to_a_few_bits():
    call, logits = int8.int8_peer_call("TVM int8", "v1", seeded_image(1),
                                       int8.calibration_images(), 1)
    sqnr = sqnr_db(_exact("v1"), np.asarray(logits, dtype="float64"))
    print(f"TVM int8, MobileNet v1: logits' SQNR {sqnr:.1f} dB")
    assert FLOOR_DB < sqnr < 40
    from d2ldw.torch import inference_layers

    network = call.__self__
    assert len(network.layer_seconds()) == len(inference_layers(seeded_mobilenet("v1")))


def test_an_engine_that_cannot_run_returns_its_error(monkeypatch):
    def broken(*args, **kwargs):
        raise ImportError("no such engine\nsecond line")

    monkeypatch.setattr(int8, "int8_peer_call", broken)
    assert int8.time_int8_peer("ONNX Runtime int8", "v1", 1, 1) == {
        "error": "ImportError: no such engine"}


# --- arguments checked before anything runs -------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda: int8.time_int8_peer("TensorRT int8"), ValueError,
     r"unknown peer 'TensorRT int8'; expected one of \('TVM int8', 'TVM fp32', "),
    (lambda: int8.time_int8_peer("PyTorch int8", version="v3"), ValueError,
     "version must be 'v1' or 'v2', got 'v3'"),
    (lambda: int8.time_int8_peer("PyTorch int8", threads=0), ValueError, "threads"),
    (lambda: int8.time_int8_peer("PyTorch int8", repeat="7"), TypeError, "repeat"),
    (lambda: int8.run_int8(version="v3"), ValueError, "version must be 'v1' or 'v2'"),
    (lambda: int8.run_int8(threads=0), ValueError, "threads"),
    (lambda: int8.run_int8(rounds=0), ValueError, "rounds"),
    (lambda: int8.run_int8(progress="yes"), TypeError, "progress must be a bool, got str"),
    (lambda: int8.int8_peer_call("PyTorch", "v2", seeded_image(1),
                                 int8.calibration_images(1), 1), ValueError,
     "unknown peer 'PyTorch'"),
    (lambda: int8.int8_peer_call("PyTorch int8", "v2", seeded_image(1),
                                 int8.calibration_images(1), 0), ValueError, "threads"),
    (lambda: int8.int8_peer_call("PyTorch int8", "v2", seeded_image(1).numpy(),
                                 int8.calibration_images(1), 1), TypeError,
     r"image must be a torch.Tensor of shape \(1, 3, 224, 224\), got ndarray"),
    (lambda: int8.int8_peer_call("PyTorch int8", "v2", seeded_image(2),
                                 int8.calibration_images(1), 1), ValueError,
     r"image must be a float32 array of shape \(1, 3, 224, 224\), got float32 "
     r"\(2, 3, 224, 224\)"),
    (lambda: int8.int8_peer_call("PyTorch int8", "v2", seeded_image(1),
                                 torch.zeros(1, 3, 224, 224), 1), TypeError,
     "calibration must be a float32 NumPy array"),
    (lambda: int8.int8_onnx_model("v2", np.zeros((1, 3, 32, 32), "float32")), ValueError,
     r"calibration must be a float32 array of shape \(N, 3, 224, 224\), got float32 "
     r"\(1, 3, 32, 32\)"),
    (lambda: int8.format_int8_table([]), TypeError, "result must be the dict run_int8"),
    (lambda: int8.format_int8_table({"ms": {}}), ValueError, "result lacks"),
])
def test_bad_arguments_are_refused_before_anything_runs(call, error, message, monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(runs, "run_isolated", no_process)
    with pytest.raises(error, match=message):
        call()


# --- the runner and the table, on results made by hand --------------------------------------

def _fake_time_int8_peer(peer, version, threads, repeat):
    """What time_int8_peer returns, with made-up numbers: TVM int8 at 2 ms, fastest with 2
    threads; PyTorch int8 channels_last fails."""
    if peer == "PyTorch int8 channels_last":
        return {"error": "RuntimeError: no channels_last here"}
    ms = {"TVM int8": 2.0, "TVM fp32": 5.0, "PyTorch int8": 8.0, "ONNX Runtime int8": 3.0,
          "OpenVINO int8": 2.5}[peer] * (1.0 if threads == 2 else 1.5)
    result = {"seconds": ms / 1e3, "setup_seconds": 1.0, "sqnr_db": 12.0}
    if peer.startswith("TVM"):
        result["seconds_by_kind"] = {"full": 1e-4, "depthwise": 5e-4, "pointwise": 1e-3,
                                     "pool": 1e-5, "linear": 5e-5}
    if peer == "PyTorch int8":
        result["deprecations"] = ["torch.ao.quantization is deprecated"]
    return result


def test_the_runner_times_every_engine_in_its_own_process_and_keeps_the_fastest(monkeypatch):
    started = []

    def fake_run(function, threads, /, on_progress=None, **kwargs):
        assert function is int8.time_int8_peer
        started.append((kwargs["peer"], threads))
        return _fake_time_int8_peer(threads=threads, **kwargs)

    monkeypatch.setattr(runs, "run_isolated", fake_run)
    result = int8.run_int8("v1", threads=2, repeat=3, rounds=2)
    assert len(started) == 2 * len(int8.INT8_ENGINES) * 2  # rounds x engines x (1, 2)
    assert [p for p, _ in started[:12:2]] == list(int8.INT8_ENGINES)
    assert [p for p, _ in started[12::2]] == list(int8.INT8_ENGINES[::-1])
    assert result["ms"]["TVM int8"] == pytest.approx(2.0)
    assert result["threads_used"]["TVM int8"] == 2
    assert result["best_peer"] == "OpenVINO int8"
    assert result["speedup_vs_best_peer"] == pytest.approx(1.25)
    assert result["speedup_vs_fp32"] == pytest.approx(2.5)
    assert result["speedup_vs_peer"]["PyTorch int8"] == pytest.approx(4.0)
    assert result["errors"] == {"PyTorch int8 channels_last":
                                "RuntimeError: no channels_last here"}
    assert result["tvm_int8_ms_by_group"] == pytest.approx(
        {"first conv": 0.1, "depthwise": 0.5, "pointwise": 1.0, "the rest": 0.06})
    assert result["deprecations"] == ["torch.ao.quantization is deprecated"]
    assert isinstance(result["vnni"], bool)
    assert isinstance(result["depthwise_vpdpbusd"], bool)
    assert result["vnni"] or not result["depthwise_vpdpbusd"]
    import json

    assert json.loads(json.dumps(result))["model"] == "v1"  # JSON-able
    text = int8.format_int8_table(result)
    assert "TVM int8 vs the best int8 peer (OpenVINO int8): 1.25x faster" in text
    assert "TVM int8 vs TVM fp32: 2.50x faster" in text
    assert "PyTorch warned: torch.ao.quantization is deprecated" in text


def test_the_runner_says_why_the_book_network_did_not_run(monkeypatch):
    monkeypatch.setattr(runs, "run_isolated", lambda function, threads, /, on_progress=None,
                        **kwargs: {"error": "ImportError: no CompiledInt8Network"}
                        if kwargs["peer"] == "TVM int8"
                        else _fake_time_int8_peer(threads=threads, **kwargs))
    with pytest.raises(RuntimeError, match="the TVM int8 network did not run: ImportError: "
                                           "no CompiledInt8Network"):
        int8.run_int8("v2", threads=1, repeat=1, rounds=1)


def _result(speedup_vs_best_peer, speedup_vs_fp32):
    return {
        "cpu_description": "CPU: a test\nsecond line", "vnni": True, "model": "v2",
        "depthwise_vpdpbusd": False,
        "batch": 1, "threads": 2, "thread_counts": [1, 2], "rounds": 2, "repeat": 7,
        "ms": {"TVM int8": 2.0, "TVM fp32": 2.0 * speedup_vs_fp32,
               "OpenVINO int8": 2.0 * speedup_vs_best_peer},
        "threads_used": {"TVM int8": 2, "TVM fp32": 1, "OpenVINO int8": 2},
        "sqnr_db": {"TVM int8": 14.25, "TVM fp32": 120.0, "OpenVINO int8": 13.0},
        "speedup_vs_peer": {"TVM fp32": speedup_vs_fp32, "OpenVINO int8": speedup_vs_best_peer},
        "errors": {"PyTorch int8": "RuntimeError: no quantized engine"},
        "best_peer": "OpenVINO int8", "speedup_vs_best_peer": speedup_vs_best_peer,
        "speedup_vs_fp32": speedup_vs_fp32,
        "tvm_int8_ms_by_group": {"first conv": 0.25, "depthwise": 0.5, "pointwise": 1.0,
                                 "the rest": 0.25},
        "tvm_fp32_ms_by_group": {"first conv": 0.5, "depthwise": 1.0, "pointwise": 4.0,
                                 "the rest": 0.25},
    }


def test_the_table_reads_its_result_and_words_the_verdict_by_the_numbers():
    lines = int8.format_int8_table(_result(1.5, 2.0)).splitlines()
    assert lines[:3] == ["CPU: a test", "second line", "AVX-512 VNNI: yes; depthwise "
                         "layers with vpdpbusd (VNNI and VBMI): no"]
    assert "int8 MobileNet v2, batch 1" in lines[3] and "1 and 2 threads" in lines[3]
    rows = [line for line in lines if line.endswith(" dB")]
    assert [row.split()[0:2] for row in rows] == [["TVM", "int8"], ["OpenVINO", "int8"],
                                                  ["TVM", "fp32"]]  # fastest first
    assert rows[0].split()[2:] == ["2.00", "2", "14.2", "dB"]
    assert rows[1].split()[2:] == ["3.00", "2", "1.50x", "13.0", "dB"]
    assert "PyTorch int8                did not run: RuntimeError: no quantized engine" in lines
    (pointwise,) = [line for line in lines if line.strip().startswith("pointwise")]
    assert pointwise.split() == ["pointwise", "1.00", "4.00", "4.00x"]
    assert lines[-2] == "TVM int8 vs the best int8 peer (OpenVINO int8): 1.50x faster"
    assert lines[-1] == "TVM int8 vs TVM fp32: 2.00x faster"
    slower = int8.format_int8_table(_result(0.8, 0.5)).splitlines()
    assert slower[-2] == "TVM int8 vs the best int8 peer (OpenVINO int8): 1.25x slower"
    assert slower[-1] == "TVM int8 vs TVM fp32: 2.00x slower"
    assert int8.format_int8_table(_result(1.0, 1.0)).splitlines()[-1] == (
        "TVM int8 vs TVM fp32: as fast")


def test_the_table_says_what_did_not_run():
    result = {**_result(1.5, 2.0), "best_peer": None, "speedup_vs_best_peer": None,
              "speedup_vs_fp32": None, "tvm_fp32_ms_by_group": {}, "thread_counts": [1],
              "rounds": 1}
    lines = int8.format_int8_table(result).splitlines()
    assert "the fastest of 1 thread in 1 round;" in lines[3]
    assert lines[-2:] == ["TVM int8 vs the best int8 peer: no int8 peer ran",
                          "TVM int8 vs TVM fp32: TVM fp32 did not run"]


# --- the command line -------------------------------------------------------------------------

def test_the_int8_command_gives_its_flags_and_defaults(capsys):
    from d2ldw import bench_cli

    with pytest.raises(SystemExit) as exit_:
        bench_cli.main(["int8", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--model {v1,v2}", "--threads", "--repeat", "--rounds", "--json",
                 "--progress"):
        assert flag in text
    assert "MobileNet v1 or v2 (default: v2)" in text
    assert bench_cli.REQUIREMENTS["int8"] == ("torch", "tvm", "onnx", "onnxruntime",
                                              "openvino")


@pytest.mark.parametrize("argv, message", [
    (["int8", "--model", "v3"], "argument --model: invalid choice: 'v3'"),
    (["int8", "--rounds"], "argument --rounds: expected one argument"),
    (["int8", "--rounds", "0"], "argument --rounds: expected a positive int, got 0"),
    (["int8", "--threads", "many"], "argument --threads: expected a positive int, got 'many'"),
    (["int8", "--json", "/no/such/folder/int8.json"], "--json: cannot write"),
])
def test_the_int8_command_refuses_bad_flags_before_anything_runs(argv, message, capsys,
                                                                 monkeypatch):
    from d2ldw import bench_cli

    monkeypatch.setattr(bench, "run_int8", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(SystemExit) as exit_:
        bench_cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_benchmark_runs_end_to_end(tmp_path):
    """A whole run_int8 (one round, one thread): every engine in its own process. Minutes:
    TVM compiles two networks."""
    result = int8.run_int8("v1", threads=1, repeat=1, rounds=1)
    print(int8.format_int8_table(result))
    assert set(result["ms"]) | set(result["errors"]) == set(int8.INT8_ENGINES)
    assert {"TVM int8", "TVM fp32", "ONNX Runtime int8", "OpenVINO int8"} <= set(result["ms"])
    assert all(FLOOR_DB < result["sqnr_db"][e] for e in result["ms"] if e != "TVM fp32")
