"""The whole MobileNet in TVM (Section "A whole MobileNet, fast"): BatchNorm folding, every
scheduled kernel against F.conv2d, and the networks' logits against the float64 network, all
within rounding-error bounds that hold on any x86-64 CPU. The blocking (lanes) is read off the
target TVM builds for (d2ldw.tvm.host_vector_lanes), so D2LDW_LLVM_MCPU=x86-64 runs the same
assertions with 4 lanes. Timing lives in the benchmark, not here."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import REPO, conv_tolerance
from d2ldw import isolated
from d2ldw import torch as d2l_torch

tvm = pytest.importorskip("tvm")
from tvm import te  # noqa: E402

from d2ldw import tvm as d2l_tvm  # noqa: E402

# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

LANES = d2l_tvm.host_vector_lanes()
DEVICE = tvm.cpu()


def run(tensors, arrays, blocks=1):
    """Build ``tensors`` with the book's schedule (``blocks`` output channel blocks per
    register tile) and run on ``arrays``; the output."""
    module = d2l_tvm.schedule_conv_nchwc(d2l_tvm.prim_module(tensors), blocks=blocks)
    bound = [tvm.runtime.tensor(a, DEVICE) for a in arrays]
    shape = [int(d) for d in tensors[-1].shape]
    bound.append(tvm.runtime.tensor(np.zeros(shape, "float32"), DEVICE))
    d2l_tvm.build(module)(*bound)
    return bound[-1].numpy()


def reference(x, w, b, stride=1, padding=0, groups=1, activation=None, residual=None):
    y = F.conv2d(*map(torch.from_numpy, (x, w, b)), stride=stride, padding=padding,
                 groups=groups)
    if residual is not None:
        y = y + torch.from_numpy(residual)
    if activation:
        y = y.clamp(0, 6 if activation == "relu6" else None)
    return y.numpy()


def tolerance(x, w, b, stride=1, padding=0, groups=1, residual=None):
    """Twice the dot-product bound (conftest), one term more for the residual."""
    bound = conv_tolerance(x, w, b, stride, padding, 1, groups)
    if residual is not None:
        bound = bound + 4 * np.finfo(np.float32).eps * np.abs(residual)
    return bound


@pytest.mark.parametrize("channels, out_channels, size", [
    (32, 64, 16), (24, 144, 8), (144, 24, 8), (64, 64, 7)])
@pytest.mark.parametrize("activation", [None, "relu6"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_pointwise_kernel_agrees_with_conv2d(channels, out_channels, size, activation,
                                             blocks):
    rng = np.random.default_rng(channels + out_channels)
    x = rng.standard_normal((1, channels, size, size)).astype("float32")
    w = rng.standard_normal((out_channels, channels, 1, 1)).astype("float32")
    b = rng.standard_normal(out_channels).astype("float32")
    bi = d2l_tvm.channel_block(channels, LANES)
    bo = d2l_tvm.channel_block(out_channels, LANES)
    X = te.placeholder((1, channels // bi, size, size, bi), name="X")
    K = te.placeholder((out_channels // bo, channels, bo), name="K")
    B = te.placeholder((out_channels // bo, bo), name="B")
    residual = rng.standard_normal((1, out_channels, size, size)).astype("float32") \
        if channels == out_channels else None
    R = te.placeholder((1, out_channels // bo, size, size, bo), name="R")
    Z = d2l_tvm.bias_activation_nchwc(d2l_tvm.pointwise_conv2d_nchwc(X, K), B, activation,
                                      R if residual is not None else None)
    weight = w[:, :, 0, 0].reshape(out_channels // bo, bo, channels).transpose(0, 2, 1)
    arrays = [d2l_tvm.to_nchwc(x, bi), np.ascontiguousarray(weight),
              b.reshape(-1, bo)]
    tensors = [X, K, B, Z]
    if residual is not None:
        arrays.append(d2l_tvm.to_nchwc(residual, bo))
        tensors = [X, K, B, R, Z]
    if (out_channels // bo) % blocks:  # (144 = 9 blocks of 16): refused, checked below
        with pytest.raises(ValueError, match=f"blocks \\({blocks}\\) must divide"):
            run(tensors, arrays, blocks)
        return
    result = d2l_tvm.from_nchwc(run(tensors, arrays, blocks))
    expected = reference(x, w, b, activation=activation, residual=residual)
    assert result.shape == expected.shape
    assert np.all(np.abs(result - expected) <= tolerance(x, w, b, residual=residual))


@pytest.mark.parametrize("channels, size, stride", [(32, 16, 1), (24, 9, 2), (144, 8, 2)])
def test_fused_depthwise_kernel_agrees_with_conv2d(channels, size, stride):
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((1, channels, size, size)).astype("float32")
    w = rng.standard_normal((channels, 1, 3, 3)).astype("float32")
    b = rng.standard_normal(channels).astype("float32")
    block = d2l_tvm.channel_block(channels, LANES)
    X = te.placeholder((1, channels // block, size, size, block), name="X")
    K = te.placeholder((channels // block, 3, 3, block), name="K")
    B = te.placeholder((channels // block, block), name="B")
    Z = d2l_tvm.bias_activation_nchwc(d2l_tvm.depthwise_conv2d_nchwc(X, K, stride, 1), B,
                                      "relu")
    result = d2l_tvm.from_nchwc(run([X, K, B, Z], [
        d2l_tvm.to_nchwc(x, block), d2l_tvm.depthwise_weight_to_nchwc(w, block),
        b.reshape(-1, block)]))
    expected = reference(x, w, b, stride, 1, channels, "relu")
    assert np.all(np.abs(result - expected) <= tolerance(x, w, b, stride, 1, channels))


def test_first_convolution_reads_nchw_and_writes_nchwc():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 18, 18)).astype("float32")
    w = rng.standard_normal((32, 3, 3, 3)).astype("float32")
    b = rng.standard_normal(32).astype("float32")
    X = te.placeholder(x.shape, name="X")
    K = te.placeholder((32 // LANES, 3, 3, 3, LANES), name="K")
    B = te.placeholder((32 // LANES, LANES), name="B")
    Z = d2l_tvm.bias_activation_nchwc(d2l_tvm.first_conv2d_nchwc(X, K, 2, 1), B, "relu6")
    weight = np.ascontiguousarray(w.reshape(32 // LANES, LANES, 3, 3, 3)
                                  .transpose(0, 2, 3, 4, 1))
    result = d2l_tvm.from_nchwc(run([X, K, B, Z], [x, weight, b.reshape(-1, LANES)]))
    expected = reference(x, w, b, 2, 1, activation="relu6")
    assert np.all(np.abs(result - expected) <= tolerance(x, w, b, 2, 1))


def test_bad_kernel_arguments_are_refused():
    X = te.placeholder((1, 2, 4, 4, 8), name="X")
    with pytest.raises(ValueError, match="K must have shape"):
        d2l_tvm.pointwise_conv2d_nchwc(X, te.placeholder((2, 8, 8), name="K"))
    with pytest.raises(ValueError, match="activation must be one of"):
        d2l_tvm.bias_activation_nchwc(X, te.placeholder((2, 8), name="B"), "gelu")
    with pytest.raises(ValueError, match=r"W must have shape \(K/x, 64, x\)"):
        d2l_tvm.linear(te.placeholder((1, 64), name="P"),
                       te.placeholder((2, 32, 8), name="W"), te.placeholder((16,), name="B"))
    assert d2l_tvm.channel_block(24, 16) == 8 and d2l_tvm.channel_block(96, 16) == 16
    assert d2l_tvm.column_tile(14) == 7 and d2l_tvm.column_tile(112) == 8


@pytest.mark.parametrize("width", [7, 12, 14, 28, 56, 112])
@pytest.mark.parametrize("out_blocks", [1, 2, 3, 4, 9, 64])
@pytest.mark.parametrize("registers", [16, 32])
def test_register_tile_divides_the_layer_and_fits_the_registers(width, out_blocks,
                                                               registers):
    columns, blocks = d2l_tvm.register_tile(width, out_blocks, registers)
    assert width % columns == 0 and out_blocks % blocks == 0
    assert 2 * columns * blocks <= registers and columns <= 8 and blocks <= 4
    # no other such tile needs fewer loads per multiply-add
    loads = 1 / columns + 1 / blocks
    assert all(1 / c + 1 / b >= loads for c in range(1, 9) for b in range(1, 5)
               if width % c == 0 and out_blocks % b == 0 and 2 * c * b <= registers)


def test_register_tile_examples():
    # 32 registers (AVX-512): four blocks of four columns, or two of seven on 7x7 and 14x14
    assert d2l_tvm.register_tile(112, 4, 32) == (4, 4)
    assert d2l_tvm.register_tile(14, 32, 32) == (7, 2)
    assert d2l_tvm.register_tile(56, 3, 32) == (4, 3)  # MobileNet v2's 24 channels, 8 lanes
    # 16 registers: at most 8 accumulators
    assert d2l_tvm.register_tile(28, 4, 16) == (4, 2)
    assert d2l_tvm.register_tile(7, 1, 16) == (7, 1)
    assert d2l_tvm.vector_registers() in (16, 32)
    assert (d2l_tvm.vector_registers() == 32) == (LANES == 16)


def test_folding_a_batchnorm_is_exact_within_the_bound():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(8, 16, 3, padding=1, bias=True), nn.BatchNorm2d(16)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    norm.eval()
    folded = d2l_torch.fold_batchnorm(conv, norm)
    x = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(1))
    exact = norm.double()(conv.double()(x.double()))
    with torch.no_grad():
        error = (folded(x).double() - exact).abs()
        # the folded layer is a convolution of 72 products and a bias, with rounded weights
        bound = d2ldw_gamma(72 + 2) * F.conv2d(x.double().abs(), folded.weight.double().abs(),
                                               folded.bias.double().abs(), padding=1)
    assert torch.all(error <= bound)
    with pytest.raises(TypeError, match="nn.Conv2d and an nn.BatchNorm2d"):
        d2l_torch.fold_batchnorm(norm, conv)
    with pytest.raises(ValueError, match="channels"):
        d2l_torch.fold_batchnorm(conv, nn.BatchNorm2d(8).eval())


def d2ldw_gamma(n):
    from d2ldw.numerics import gamma
    return gamma(n, "float32")


def test_inference_layers_describe_the_networks():
    v1 = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v1"))
    kinds = [layer["kind"] for layer in v1]
    assert kinds.count("full") == 1 and kinds.count("depthwise") == 13
    assert kinds.count("pointwise") == 13 and kinds[-2:] == ["pool", "linear"]
    v2 = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v2"))
    residual = [layer for layer in v2 if layer.get("residual") is not None]
    assert len(residual) == 10  # Sandler et al., Table 2: rows with n > 1, repeats at stride 1
    for layer in residual:  # a linear projection whose input block starts with a pointwise
        assert layer["kind"] == "pointwise" and layer["activation"] is None
        assert v2[layer["residual"]]["kind"] == "pointwise"
    with pytest.raises(ValueError, match="version must be one of"):
        d2l_torch.seeded_mobilenet("v3")


@pytest.fixture(scope="module", params=["v1", "v2"])
def network(request):
    model = d2l_torch.seeded_mobilenet(request.param)
    layers = d2l_torch.inference_layers(model)
    image = d2l_torch.seeded_image()
    return model, layers, image, d2l_tvm.CompiledNetwork(layers, tuple(image.shape))


def within_layer_bounds(layers, image, outputs):
    """Every layer's computed output within its rounding bound of the exact layer applied to
    the same computed input (d2ldw.torch.layer_error_bounds)."""
    checked = d2l_torch.layer_error_bounds(layers, image, outputs)
    assert len(checked) == len(outputs) == len(layers)
    return all(out.shape == exact.shape and np.all(np.abs(out - exact) <= bound)
               for out, (exact, bound) in zip(outputs, checked))


def test_tvm_network_is_within_every_layers_bound(network):
    model, layers, image, compiled = network
    logits = compiled(image.numpy())
    assert logits.shape == (1, 1000)
    outputs = compiled.layer_outputs()
    assert within_layer_bounds(layers, image, outputs)
    # the same check holds for PyTorch's float32 evaluation of the folded layers ...
    assert within_layer_bounds(layers, image, d2l_torch.run_layers(layers, image))
    # ... and fails for a kernel that is off by a little more than rounding
    broken = [o.copy() for o in outputs]
    broken[5] = broken[5] + 1e-3 * np.abs(broken[5]).max()
    assert not within_layer_bounds(layers, image, broken)
    with torch.no_grad():
        reference, exact = model(image).numpy(), model.double()(image.double()).numpy()
        model.float()
    assert logits.argmax() == reference.argmax()
    # logits: TVM as close to the float64 network as PyTorch's float32 network, within 10x
    assert np.abs(logits - exact).max() <= 10 * np.abs(reference - exact).max()
    with pytest.raises(ValueError, match="expected an image batch of shape"):
        compiled(np.zeros((1, 3, 32, 32), "float32"))


def test_the_network_is_one_module_whose_kernels_can_be_watched(network):
    _, layers, image, compiled = network
    module, calls = d2l_tvm.network_module(layers, tuple(image.shape))
    kernels = {gv.name_hint for gv, f in module.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc)}
    assert len(calls) == len(layers) and set(calls) == kernels
    assert compiled.kernels == len(kernels) < len(layers)  # identical layers share one
    logits = compiled(image.numpy())
    seconds = compiled.layer_seconds()
    assert len(seconds) == len(layers) and all(0 < s < 1 for s in seconds)
    # watching a pass does not change it: the last layer's output is the logits
    assert np.array_equal(compiled.layer_outputs()[-1], logits)
    assert np.array_equal(compiled.run().numpy(), logits)


def test_folding_is_exact_in_float64(network):
    model, layers, image, _ = network
    with torch.no_grad():
        original = model.double()(image.double()).numpy()
        model.float()
    folded = d2l_torch.run_layers(layers, image, torch.float64)[-1]
    # the folded float32 weights differ from w * s by one rounding: relative 2**-24
    assert np.abs(folded - original).max() <= 1e-5 * np.abs(original).max()


def test_onnx_graph_of_the_folded_layers_agrees(network):
    pytest.importorskip("onnxruntime")
    from d2ldw import bench
    _, layers, image, compiled = network
    session = bench.mobilenet_onnx_session(layers, list(image.shape), 1)
    call, logits = bench.onnx_caller(session, {"X": image.numpy()})
    call()
    exact, bound = d2l_torch.layer_error_bounds(layers, image, compiled.layer_outputs())[-1]
    reference = d2l_torch.run_layers(layers, image)[-1]
    # ONNX Runtime computes the same function: as close to TVM's logits as PyTorch's are
    assert np.abs(logits - reference).max() <= 10 * np.abs(compiled.layer_outputs()[-1]
                                                           - reference).max() + 1e-6


def test_run_isolated_runs_in_a_fresh_process_with_the_threads():
    import os
    child = isolated.run_isolated(isolated.describe_process, 3)
    assert child["pid"] != os.getpid()
    assert child["environment"]["TVM_NUM_THREADS"] == "3"
    assert child["environment"]["TVM_BIND_THREADS"] == "1"  # explicit, not inherited
    assert child["environment"]["OMP_NUM_THREADS"] == "3"
    assert child["environment"]["MALLOC_MMAP_THRESHOLD_"] == \
        isolated.ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]
    removed = isolated.run_isolated(isolated.describe_process, 1,
                                    {"MALLOC_MMAP_THRESHOLD_": None})
    assert removed["environment"]["MALLOC_MMAP_THRESHOLD_"] is None
    with pytest.raises(RuntimeError, match="failed in its own process"):
        isolated.run_isolated("d2ldw.isolated:thread_environment", 1, unknown=1)
    with pytest.raises(TypeError, match="module-level function"):
        isolated.run_isolated(lambda threads: 0, 1)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        isolated.run_isolated(isolated.describe_process, 0)


def test_mobilenet_command_refuses_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "d2ldw.bench", "mobilenet", "--model", "v3"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 2 and "invalid choice: 'v3'" in run.stderr


def test_tvm_peer_reports_its_logits_error_and_a_breakdown():
    from d2ldw import bench
    result = isolated.run_isolated(bench.time_mobilenet_peer, 1, peer="TVM", version="v1",
                                   repeat=1)
    assert result["max_error"] < 1e-3 * result["largest_logit"]
    # both configurations of the network timed, the faster counting
    configurations = result["configurations_ms"]
    assert set(configurations) == set(bench.TVM_CONFIGURATIONS)
    assert result["seconds"] * 1e3 == min(configurations.values())
    assert set(result["seconds_by_kind"]) == {"full", "depthwise", "pointwise", "pool",
                                              "linear"}
    assert 0 < sum(result["seconds_by_kind"].values())


def test_onnx_runtime_profile_is_split_by_the_layers_it_computes():
    pytest.importorskip("onnxruntime")
    from d2ldw import bench
    layers = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v1"))
    seconds = bench.onnx_layer_seconds(layers, d2l_torch.seeded_image(), 1, 2)
    # every convolution, the pooling and the classifier are found by their node's name
    assert set(range(len(layers))) <= set(seconds)
    assert set(seconds) - set(range(len(layers))) <= {None}
    by_kind = bench.seconds_by_kind(layers, seconds)
    assert {"full", "depthwise", "pointwise", "pool", "linear"} <= set(by_kind)
    assert sum(by_kind.values()) == pytest.approx(sum(seconds.values()))
    assert bench.seconds_by_kind(layers, {0: 1.0, None: 2.0}) == {"full": 1.0, "other": 2.0}
