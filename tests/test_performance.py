"""The performance chapter's kernels compute the right thing; the benchmark command works."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import REPO, conv_tolerance
from d2ldw import bench

# TVM is optional: without it these tests are skipped, and the skip says which
# pip package to install (make test installs it).
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")

# The nine distinct depthwise layers of MobileNet v1 at 224x224 (Howard et al. 2017, Table 1,
# with the last depthwise layer at stride 1 as its sizes say): (channels, input size, stride).
# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

PAPER_DEPTHWISE = [(32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1),
                   (256, 28, 2), (512, 14, 1), (512, 14, 2), (1024, 7, 1)]
LANES = d2l_tvm.host_vector_lanes()


def test_benchmark_layers_are_the_papers():
    assert bench.depthwise_layers() == PAPER_DEPTHWISE


def run_tuned(x, w, stride, tile):
    batch, channels, size, _ = x.shape
    X = te.placeholder((batch, channels // LANES, size, size, LANES), name="X")
    K = te.placeholder((channels // LANES, 3, 3, LANES), name="K")
    Y = d2l_tvm.depthwise_conv2d_nchwc(X, K, stride=stride, padding=1)
    module = d2l_tvm.schedule_depthwise_nchwc(d2l_tvm.prim_module([X, K, Y]), tile=tile)
    import tvm
    device = tvm.cpu()
    arrays = [tvm.runtime.tensor(d2l_tvm.to_nchwc(x, LANES), device),
              tvm.runtime.tensor(d2l_tvm.depthwise_weight_to_nchwc(w, LANES), device),
              tvm.runtime.tensor(np.zeros([int(d) for d in Y.shape], "float32"), device)]
    d2l_tvm.build(module)(*arrays)
    return d2l_tvm.from_nchwc(arrays[-1].numpy())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels, size, stride", PAPER_DEPTHWISE)
def test_tuned_kernel_agrees_with_conv2d(channels, size, stride, batch):
    """CPU-dependent in two ways, both measured: the blocking (LANES, read off the target TVM
    builds for) and the order oneDNN sums in. The assertion uses neither: any order is within
    the dot-product bound of the exact sum (Higham eq. 3.5), on every x86-64 CPU."""
    rng = np.random.default_rng(channels + size + stride)
    x = rng.standard_normal((batch, channels, size, size)).astype("float32")
    w = rng.standard_normal((channels, 1, 3, 3)).astype("float32")
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=1,
                        groups=channels).numpy()
    out_width = expected.shape[-1]
    # every tile the chapter tries; tolerance: twice the dot-product bound (conftest, Higham
    # eq. 3.5), since both results are within it of the exact sum
    bound = conv_tolerance(x, w, None, stride, 1, 1, channels)
    for tile in [t for t in (1, 2, 4, 7) if out_width % t == 0]:
        result = run_tuned(x, w, stride, tile)
        assert result.shape == expected.shape
        assert (np.abs(result - expected) - bound).max() <= 0, tile


def test_layout_helpers_round_trip_and_refuse_bad_shapes():
    x = np.arange(2 * 32 * 3 * 5, dtype="float32").reshape(2, 32, 3, 5)
    blocked = d2l_tvm.to_nchwc(x, 16)
    assert blocked.shape == (2, 2, 3, 5, 16) and blocked[1, 1, 2, 4, 3] == x[1, 19, 2, 4]
    np.testing.assert_array_equal(d2l_tvm.from_nchwc(blocked), x)
    with pytest.raises(ValueError, match=r"channels \(24\) must be a multiple of lanes \(16\)"):
        d2l_tvm.to_nchwc(np.zeros((1, 24, 2, 2)), 16)
    with pytest.raises(ValueError, match=r"expected a depthwise weight \(C, 1, kH, kW\)"):
        d2l_tvm.depthwise_weight_to_nchwc(np.zeros((32, 2, 3, 3)), 16)


def test_nchwc_definition_checks_its_weight():
    with pytest.raises(ValueError, match=r"K must have shape \(2, kH, kW, 16\)"):
        d2l_tvm.depthwise_conv2d_nchwc(te.placeholder((1, 2, 8, 8, 16)),
                                       te.placeholder((2, 3, 3, 8)))


@pytest.mark.parametrize("padding", [1, 0, (0, 1)])
def test_cuda_schedule_binds_blocks_and_threads(padding):
    """padding=0 makes no PaddedX stage; the schedule must not assume one."""
    X = te.placeholder((1, 32, 14, 14), name="X")
    K = te.placeholder((32, 1, 3, 3), name="K")
    Y = d2l_tvm.depthwise_conv2d(X, K, padding=padding)
    script = d2l_tvm.schedule_depthwise_cuda(d2l_tvm.prim_module([X, K, Y])).script()
    assert "blockIdx.x" in script and "threadIdx.x" in script
    assert "PaddedX" not in script  # padding inlined, or never there


@pytest.mark.parametrize("mcpu, lanes", [("x86-64", 4), ("haswell", 8),
                                         ("skylake-avx512", 16)])
def test_vector_lanes_come_from_the_target(mcpu, lanes):
    """Lanes are read off the target TVM compiles for, not off this machine."""
    import tvm
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    assert d2l_tvm.host_vector_lanes(target) == lanes


def test_host_target_follows_D2LDW_LLVM_MCPU(monkeypatch):
    import tvm
    monkeypatch.setenv("D2LDW_LLVM_MCPU", "x86-64")
    assert str(d2l_tvm.host_target().attrs["mcpu"]) == "x86-64"
    assert d2l_tvm.host_vector_lanes() == 4 and "fma" not in d2l_tvm.target_features()
    from d2ldw.hardware import describe_cpu
    assert "building for mcpu=x86-64: SSE2, FMA no" in str(describe_cpu())
    monkeypatch.setenv("D2LDW_LLVM_MCPU", "no-such-cpu")
    with pytest.raises(ValueError, match="D2LDW_LLVM_MCPU must name a CPU that LLVM knows"):
        d2l_tvm.host_target()
    monkeypatch.delenv("D2LDW_LLVM_MCPU")
    assert str(d2l_tvm.host_target().attrs["mcpu"]) == tvm.target.codegen.llvm_get_system_cpu()


def test_available_cpus_without_sched_getaffinity(monkeypatch):
    import os
    from d2ldw.hardware import available_cpus, describe_cpu
    assert available_cpus() >= 1
    monkeypatch.delattr(os, "sched_getaffinity")
    assert available_cpus() == (os.cpu_count() or 1)
    assert "available to this process" in str(describe_cpu())


def test_geometric_mean():
    assert bench.geometric_mean([1, 4]) == 2
    assert math.isclose(bench.geometric_mean([2, 2, 2]), 2, rel_tol=2**-50)  # exp(log 2): ~u
    with pytest.raises(ValueError, match="positive numbers"):
        bench.geometric_mean([1, 0])
    with pytest.raises(ValueError, match="positive numbers"):
        bench.geometric_mean([])


@pytest.mark.slow  # the whole benchmark command end to end: peers in child processes, ~30 s
def test_benchmark_command_prints_and_writes_json(tmp_path):
    path = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "-m", "d2ldw.bench", "depthwise", "--layers", "2",
                          "--repeat", "1", "--batch", "2", "--json", str(path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(path.read_text())
    assert {"layers", "geomean_speedup_vs_best_peer", "geomean_tuned_vs_channels_last",
            "onnx_call_overhead_us", "threads", "batch", "repeat"} <= set(result)
    assert result["batch"] == 2 and len(result["layers"]) == 2
    assert result["vector_lanes"] == LANES  # the child process targets what we do
    peers = set(bench.PEERS)
    for row in result["layers"]:
        assert set(row["median_us"]) == peers | {"TE default", "TE tuned", "to NCHWc",
                                                 "from NCHWc", "TE tuned + conversions"}
        assert row["best_peer"] in peers
        best = min(row["median_us"][p] for p in peers)
        assert math.isclose(row["speedup_vs_best_peer"]["TE tuned"],
                            best / row["median_us"]["TE tuned"], rel_tol=1e-9)
        # float32 sums of 9 O(1) products: the bound is ~1e-6 for every implementation
        assert max(row["max_error"].values()) < 1e-4
    speedups = [row["speedup_vs_best_peer"]["TE tuned"] for row in result["layers"]]
    assert math.isclose(result["geomean_speedup_vs_best_peer"], bench.geometric_mean(speedups))
    assert "geometric mean of TE tuned vs the best peer" in run.stdout
    assert result["onnx_call_overhead_us"] > 0


def test_unknown_benchmark_peers_are_refused():
    with pytest.raises(ValueError, match="unknown peer"):
        bench.time_depthwise_peer("cuDNN", first_layers=1)


def test_benchmark_command_refuses_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "d2ldw.bench", "depthwise", "--batch", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "--batch: expected a positive int, got 0" in run.stderr


def test_every_library_is_timed_with_the_threads_asked_for_and_with_one():
    assert bench.thread_counts(2) == [1, 2] and bench.thread_counts(1) == [1]


def test_library_timers_refuse_unknown_libraries():
    with pytest.raises(ValueError, match="library must be 'PyTorch' or 'MXNet'"):
        bench.time_convolutions("JAX", {"a": ((1, 8, 4, 4), (8, 1, 3, 3), 1, 1, 8)})
    with pytest.raises(ValueError, match="library must be 'PyTorch' or 'MXNet'"):
        bench.time_separable("JAX")


def test_convolution_timer_runs_in_its_own_process():
    from d2ldw.isolated import run_isolated
    convolutions = {"dw": ((1, 8, 6, 6), (8, 1, 3, 3), 1, 1, 8),
                    "pw": ((1, 8, 6, 6), (16, 8, 1, 1), 1, 0, 1)}
    seconds = run_isolated(bench.time_convolutions, 1, library="PyTorch",
                           convolutions=convolutions, repeat=1)
    assert set(seconds) == {"dw", "pw"} and min(seconds.values()) > 0
