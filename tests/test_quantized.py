"""Chapter 8, quantized depthwise: the NumPy references of d2ldw.quantization against exact
arithmetic, PyTorch's x86 engine and ONNX Runtime's QLinearConv, and their argument checks.

What holds on any x86-64 CPU is asserted outright: with activations that use seven bits (as
PyTorch's x86 observers quantize them, ``reduce_range=True``) no pair of uint8 x int8 products
can saturate an int16, so the FBGEMM-ordered reference equals FBGEMM and ONNX Runtime output for
output, whatever the kernels' instruction set. What depends on the CPU is measured first and
recorded (``measured_branch``): oneDNN, which PyTorch picks only on CPUs with AVX-512 VNNI,
rounds in another order and may differ by one step on near-ties; full-range activations can
saturate ``vpmaddubsw`` where a kernel uses it.
"""
import math
import os
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

import d2ldw
from d2ldw import quantization as q
from d2ldw import torch as d2l_torch

pytestmark = pytest.mark.cpu_dependent

SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow])
VNNI = d2l_torch.has_avx512_vnni() and not os.environ.get("ONEDNN_MAX_CPU_ISA")


@pytest.fixture(autouse=True)
def x86_engine():
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield
    torch.backends.quantized.engine = previous


# --- affine quantization ------------------------------------------------------------------

def test_import_d2ldw_exports_the_quantization_helpers():
    assert d2ldw.quantize is q.quantize and d2ldw.sqnr_db is q.sqnr_db


def test_quantization_params_keep_zero_exact_and_cover_the_range():
    for low, high, dtype in [(-1.0, 3.0, "uint8"), (0.5, 2.0, "uint8"), (-7.0, -1.0, "int8"),
                             (-1.0, 3.0, "int8")]:
        scale, zero = q.quantization_params(low, high, dtype)
        qmin, qmax = q.quantized_range(dtype)
        assert qmin <= zero <= qmax
        assert q.dequantize(np.array([zero]), scale, zero)[0] == 0.0
        back = q.dequantize(q.quantize(np.array([min(low, 0), max(high, 0)]), scale, zero,
                                       dtype), scale, zero)
        assert np.allclose(back, [min(low, 0), max(high, 0)], atol=scale / 2 + 1e-12)
    scale, zero = q.quantization_params(-2.0, 1.0, "int8", symmetric=True)
    assert zero == 0 and scale == 2.0 / 127
    assert q.quantization_params(0.0, 0.0) == (1.0, 0)


def test_quantize_rounds_half_to_even_and_clips():
    got = q.quantize(np.array([0.5, 1.5, 2.5, -3.0, 300.0]), 1.0, 0, "uint8")
    assert got.tolist() == [0, 2, 2, 0, 255] and got.dtype == np.uint8
    assert q.quantize(np.array([-200.0, 7.0]), 1.0, 0, "int8", bits=4).tolist() == [-8, 7]


def test_rounding_error_is_at_most_half_a_step_inside_the_range():
    x = np.random.default_rng(0).standard_normal(10_000)
    scale, zero = q.quantization_params(x.min(), x.max(), "uint8")
    error = np.abs(q.dequantize(q.quantize(x, scale, zero), scale, zero) - x)
    assert error.max() <= scale / 2 * (1 + 1e-12)


def test_per_channel_scales_follow_the_axis():
    w = np.array([[1.0, -0.5], [100.0, 50.0]])
    wq, scale = q.quantize_weight(w, per_channel=True)
    assert np.allclose(scale, [1 / 127, 100 / 127]) and wq[:, 0].tolist() == [127, 127]
    wt, s = q.quantize_weight(w, per_channel=False)
    assert np.ndim(s) == 0 and wt[0].tolist() == [1, -1]
    assert q.channel_ranges(w).tolist() == [1.0, 100.0]


def test_sqnr_gains_about_six_db_per_bit_and_is_infinite_without_error():
    x = np.random.default_rng(1).uniform(-1, 1, 200_000)
    sqnr = []
    for bits in (6, 7, 8):
        s, z = q.quantization_params(-1, 1, "uint8", bits=bits)
        sqnr.append(q.sqnr_db(x, q.dequantize(q.quantize(x, s, z, bits=bits), s, z)))
    assert np.allclose(np.diff(sqnr), 20 * math.log10(2), atol=0.1)
    assert q.sqnr_db(x, x) == float("inf")


def test_quantize_layer_weights_changes_only_the_weights():
    layers = [{"kind": "depthwise", "weight": np.random.default_rng(2).standard_normal(
        (4, 1, 3, 3)).astype(np.float32), "bias": np.ones(4, np.float32), "stride": 1},
              {"kind": "pool"}]
    out = q.quantize_layer_weights(layers, per_channel=True)
    assert out[1] == {"kind": "pool"} and out[0]["bias"] is layers[0]["bias"]
    assert out[0]["weight"].dtype == np.float32 and out[0]["weight"] is not layers[0]["weight"]
    assert q.sqnr_db(layers[0]["weight"], out[0]["weight"]) > 40


# --- the integer pipeline -----------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), depthwise=st.booleans(), stride=st.integers(1, 2),
       kernel=st.sampled_from([1, 3, 5]), signed=st.booleans())
def test_int32_sums_equal_the_float64_convolution_of_the_integers(seed, depthwise, stride,
                                                                    kernel, signed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 9))
    o, groups = (c * int(rng.integers(1, 3)), c) if depthwise else (int(rng.integers(1, 9)), 1)
    dtype, low = (np.int8, -128) if signed else (np.uint8, 0)
    xq = rng.integers(low, low + 256, (2, c, 7, 7)).astype(dtype)
    wq = rng.integers(-128, 128, (o, c // groups, kernel, kernel)).astype(np.int8)
    zx, zw = int(rng.integers(low, low + 256)), rng.integers(-5, 6, o)
    padding = kernel // 2
    acc = q.conv2d_int32(xq, zx, wq, zw, stride, padding, groups)
    x = torch.tensor(xq.astype(np.float64) - zx)
    w = torch.tensor(wq.astype(np.float64) - zw.reshape(-1, 1, 1, 1))
    assert acc.dtype == np.int32
    assert np.array_equal(acc, F.conv2d(x, w, stride=stride, padding=padding,
                                        groups=groups).numpy())


def tflite_requantize(acc, m0, shift, zero, qmin, qmax):
    """TensorFlow Lite's MultiplyByQuantizedMultiplier on Python ints, written apart."""
    ab = acc * m0
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = (abs(ab + nudge) >> 31) * (1 if ab + nudge >= 0 else -1)  # truncate toward zero
    exponent = -shift
    mask = (1 << exponent) - 1
    remainder, threshold = high & mask, (mask >> 1) + (1 if high < 0 else 0)
    return min(qmax, max(qmin, (high >> exponent) + (1 if remainder > threshold else 0) + zero))


def test_fixed_point_requantization_is_tflites_and_rounds_halves_away_from_zero():
    rng = np.random.default_rng(3)
    multipliers = 10 ** rng.uniform(-5, -0.01, 50)
    m0, shift = q.quantize_multiplier(multipliers)
    assert np.all((m0 >= 2**30) & (m0 < 2**31))
    assert np.all(np.abs(m0 * 2.0 ** (shift - 31) / multipliers - 1) <= 2.0**-31)
    for k in range(50):
        acc = rng.integers(-2**31, 2**31, (1, 1, 8, 8)).astype(np.int32)
        acc.flat[:3] = [0, 2**31 - 1, -2**31]
        got = q.requantize_fixed_point(acc, int(m0[k]), int(shift[k]), 3, "int8")
        want = [tflite_requantize(int(a), int(m0[k]), int(shift[k]), 3, -128, 127)
                for a in acc.ravel()]
        assert got.ravel().tolist() == want
    ties = np.array([20, -20, 12, -12, 4, -4], np.int32).reshape(1, 6, 1, 1)
    assert q.requantize_fixed_point(ties, 2**30, -2, 0, "int8").ravel().tolist() == \
        [3, -3, 2, -2, 1, -1]


def test_fixed_point_is_within_one_step_of_the_exact_product():
    rng = np.random.default_rng(4)
    acc = rng.integers(-10**6, 10**6, (1, 1, 40, 40)).astype(np.int32)
    m = 0.000731
    m0, shift = q.quantize_multiplier(m)
    got = q.requantize_fixed_point(acc, m0, shift, 0, "int8").astype(int)
    exact = np.array([float(Fraction(int(a)) * Fraction(m)) for a in acc.ravel()])
    assert np.abs(got.ravel() - np.clip(exact, -128, 127)).max() <= 0.5 + 1e-6


def test_float32_requantization_rounds_half_to_even():
    acc = np.array([20, -20, 12, 4], np.int32).reshape(1, 4, 1, 1)
    assert q.requantize_float32(acc, 0.125, 0, "int8").ravel().tolist() == [2, -2, 2, 0]
    assert q.requantize_float32(acc, 0.125, 0, "int8", offset=0.5).ravel().tolist() == \
        [3, -2, 2, 1]


# --- PyTorch's x86 engine -----------------------------------------------------------------

@st.composite
def quantized_layers(draw, x_bits=7):
    """One quantized layer, depthwise (multiplier 1 or 2) or pointwise, as keyword arguments
    of quantized_conv2d and torch_quantized_conv2d."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    depthwise = draw(st.booleans())
    c = draw(st.sampled_from([1, 8, 32, 100, 101, 144]))
    kernel = draw(st.sampled_from([3, 5])) if depthwise else 1
    o, groups = ((c * draw(st.integers(1, 2)), c) if depthwise
                 else (draw(st.sampled_from([1, 16, 64])), 1))
    per_channel, symmetric = draw(st.booleans()), draw(st.booleans())
    zw = rng.integers(-4, 5, o if per_channel else ())
    size = draw(st.integers(kernel, 10))
    return dict(
        xq=rng.integers(0, 2**x_bits, (draw(st.integers(1, 2)), c, size, size)).astype(np.uint8),
        x_scale=float(10 ** rng.uniform(-4, 0)), x_zero_point=int(rng.integers(0, 2**x_bits)),
        wq=rng.integers(-128, 128, (o, c // groups, kernel, kernel)).astype(np.int8),
        w_scale=10 ** rng.uniform(-4, -1, o if per_channel else ()),
        w_zero_point=0 * zw if symmetric else zw,
        bias=rng.standard_normal(o) * 10 ** rng.uniform(-2, 1) if draw(st.booleans()) else None,
        y_scale=float(10 ** rng.uniform(-3, 0.5)), y_zero_point=int(rng.integers(0, 256)),
        stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, kernel // 2)),
        groups=groups)


BRANCHES = {}


@settings(max_examples=120, **SETTINGS)
@given(layer=quantized_layers())
def test_the_reference_equals_pytorchs_x86_engine_with_seven_bit_activations(layer):
    """Any x86-64: FBGEMM (every layer on a CPU without AVX-512 VNNI; else those with more
    than 100 groups or nonzero weight zero points) bit for bit. oneDNN (the rest, on VNNI
    CPUs) rounds its float32 scale products in another order: one step at most, rarely."""
    library = d2l_torch.x86_engine_library(layer["groups"], not np.any(layer["w_zero_point"]))
    differ = d2l_torch.torch_quantized_conv2d(**layer).astype(int) - q.quantized_conv2d(**layer)
    counts = BRANCHES.setdefault(library, [0, 0])
    counts[0], counts[1] = counts[0] + differ.size, counts[1] + np.count_nonzero(differ)
    if library == "FBGEMM":
        assert not differ.any()
    else:
        assert np.abs(differ).max() <= 1 and np.count_nonzero(differ) <= max(1, differ.size // 1000)


def test_record_which_libraries_the_sweep_met(measured_branch):
    if not BRANCHES:
        pytest.skip("records the sweep above, which did not run")
    measured_branch("x86 engine, 7-bit activations: " + "; ".join(
        f"{library}: {bad} of {total} outputs differ" for library, (total, bad)
        in sorted(BRANCHES.items())) + f" (AVX-512 VNNI in use: {VNNI})")


@settings(max_examples=60, **SETTINGS)
@given(layer=quantized_layers())
def test_the_reference_equals_the_fbgemm_engine_on_any_x86_64(layer):
    """The fbgemm engine runs FBGEMM for every layer, symmetric weights included."""
    torch.backends.quantized.engine = "fbgemm"
    assert np.array_equal(d2l_torch.torch_quantized_conv2d(**layer), q.quantized_conv2d(**layer))


def test_full_range_activations_saturate_only_where_measured(measured_branch):
    """Measured: with eight-bit activations, which libraries differ on this CPU. Asserted only
    where the CPU has VNNI (oneDNN's vpdpbusd cannot saturate): oneDNN stays within a step."""
    found = {}
    for seed in range(16):
        rng = np.random.default_rng(seed)
        c = [32, 144][seed % 2]
        layer = dict(xq=rng.integers(0, 256, (1, c, 9, 9)).astype(np.uint8), x_scale=0.02,
                     x_zero_point=int(rng.integers(0, 256)),
                     wq=rng.integers(-128, 128, (c, 1, 3, 3)).astype(np.int8),
                     w_scale=rng.uniform(1e-3, 1e-2, c), w_zero_point=0,
                     bias=rng.standard_normal(c), y_scale=0.5, y_zero_point=128, stride=1,
                     padding=1, groups=c)
        library = d2l_torch.x86_engine_library(c, True)
        differ = d2l_torch.torch_quantized_conv2d(**layer).astype(int) - \
            q.quantized_conv2d(**layer)
        found.setdefault(library, []).append(int(np.abs(differ).max()))
    if VNNI and "oneDNN" in found:
        assert max(found["oneDNN"]) <= 1
    measured_branch("x86 engine, 8-bit activations, depthwise: largest difference per "
                    "library " + ", ".join(f"{k} {max(v)}" for k, v in sorted(found.items())))


# --- ONNX Runtime's QLinearConv -----------------------------------------------------------

def run_qlinearconv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
                    y_zero_point, bias, stride, padding, groups, y_dtype):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    kind = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    const = [("xs", x_scale, np.float32), ("xz", x_zero_point, x.dtype), ("w", w, w.dtype),
             ("ws", w_scale, np.float32), ("wz", w_zero_point, w.dtype),
             ("ys", y_scale, np.float32), ("yz", y_zero_point, y_dtype)]
    if bias is not None:
        const.append(("b", bias, np.int32))
    node = helper.make_node("QLinearConv", ["x"] + [n for n, _, _ in const], ["y"],
                            strides=[stride] * 2, pads=[padding] * 4, group=groups)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", kind[x.dtype.name], x.shape)],
        [helper.make_tensor_value_info("y", kind[y_dtype], None)],
        [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def onnx_layer(layer, signed, rng):
    args = dict(x=layer["xq"], x_scale=layer["x_scale"], x_zero_point=layer["x_zero_point"],
                w=layer["wq"], w_scale=layer["w_scale"],
                w_zero_point=np.zeros(np.shape(layer["w_scale"]), np.int8),
                y_scale=layer["y_scale"], y_zero_point=layer["y_zero_point"],
                bias=rng.integers(-30_000, 30_000, len(layer["wq"])).astype(np.int32)
                if layer["bias"] is not None else None,
                stride=layer["stride"], padding=layer["padding"], groups=layer["groups"],
                y_dtype="uint8")
    if signed:
        args.update(x=(args["x"].astype(np.int16) - 128).astype(np.int8),
                    x_zero_point=args["x_zero_point"] - 128,
                    y_zero_point=args["y_zero_point"] - 128, y_dtype="int8")
    return args


@settings(max_examples=60, **SETTINGS)
@given(layer=quantized_layers(), seed=st.integers(0, 1000))
def test_the_reference_equals_qlinearconv_with_seven_bit_activations(layer, seed):
    """Any x86-64: uint8 activations below 128 cannot saturate an int16 pair."""
    args = onnx_layer(layer, False, np.random.default_rng(seed))
    assert np.array_equal(run_qlinearconv(**args), q.qlinear_conv(**args))


@settings(max_examples=40, **SETTINGS)
@given(layer=quantized_layers(x_bits=8), signed=st.booleans(), seed=st.integers(0, 1000))
def test_the_reference_equals_qlinearconv_full_range_where_the_cpu_has_vnni(layer, signed,
                                                                          seed):
    """Measured: full-range uint8 or int8 activations are exact on a CPU with AVX-512 VNNI;
    without it ONNX Runtime's u8s8 matrix kernels may saturate, and nothing is asserted."""
    args = onnx_layer(layer, signed, np.random.default_rng(seed))
    same = np.array_equal(run_qlinearconv(**args), q.qlinear_conv(**args))
    if d2l_torch.has_avx512_vnni():
        assert same


def test_int8_activations_are_uint8_ones_shifted():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (8, 1, 3, 3)).astype(np.int8)
    unsigned = q.qlinear_conv(x, 0.02, 100, w, 0.01, 0, 0.3, 120, None, 1, 1, 8)
    signed = q.qlinear_conv((x.astype(np.int16) - 128).astype(np.int8), 0.02, -28, w, 0.01,
                            0, 0.3, -8, None, 1, 1, 8, y_dtype="int8")
    assert np.array_equal(signed.astype(int) + 128, unsigned)


# --- dead channels ------------------------------------------------------------------------

def test_a_dead_channel_multiplies_its_folded_filter_by_one_over_sqrt_eps():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
                      nn.ReLU()))
    d2l_torch.silence_channels(model, fraction=0.25, seed=0)
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    d2l_torch.calibrate_batchnorm(model, images)
    dead = (model[0][1].weight == 0).nonzero().ravel()
    assert len(dead) == 2
    assert torch.all(model[1][1].running_var[dead] == 0)
    folded = d2l_torch.fold_batchnorm(model[1][0], model[1][1]).weight
    ratio = folded[dead] / model[1][0].weight[dead]
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / math.sqrt(1e-5)), rtol=1e-5)


def test_x86_engine_library_follows_pytorchs_rule():
    assert d2l_torch.x86_engine_library(101, True) == "FBGEMM"
    assert d2l_torch.x86_engine_library(8, False) == "FBGEMM"
    expected = "oneDNN" if d2l_torch.has_avx512_vnni() and os.uname().sysname == "Linux" \
        else "FBGEMM"
    assert d2l_torch.x86_engine_library(100, True) == expected


# --- bad input ----------------------------------------------------------------------------

U8 = np.zeros((1, 2, 4, 4), np.uint8)
I8 = np.zeros((2, 1, 3, 3), np.int8)
BAD_CALLS = [
    (q.quantized_range, ("float32",), ValueError, "'uint8' or 'int8'"),
    (q.quantized_range, ("uint8", 9), ValueError, "2 to 8"),
    (q.quantized_range, ("uint8", True), TypeError, "bools are refused"),
    (q.quantization_params, (1.0, 0.0), ValueError, "low must not exceed high"),
    (q.quantization_params, (True, 1.0), TypeError, "got a bool"),
    (q.quantization_params, (float("nan"), 1.0), ValueError, "finite"),
    (q.quantization_params, ("a", 1.0), TypeError, "numbers"),
    (q.quantize, (np.ones(3), 0.0, 0), ValueError, "scale must be positive"),
    (q.quantize, (np.ones(3), np.ones(3), 0), ValueError, "per-tensor"),
    (q.quantize, (np.ones((2, 3)), np.ones(2), 0, "int8", 1), ValueError, "3 entries"),
    (q.quantize, (np.ones((2, 3)), 1.0, 0, "int8", 2), ValueError, "out of range"),
    (q.dequantize, (np.ones(3), 1.0, 0), TypeError, "integer array"),
    (q.sqnr_db, (np.ones(3), np.ones(4)), ValueError, "one shape"),
    (q.quantize_weight, (np.ones(3),), ValueError, "output-channel axis"),
    (q.channel_ranges, (np.ones(3),), ValueError, "at least 2-D"),
    (q.quantize_layer_weights, ([{"weight": 1}],), TypeError, "'kind'"),
    (q.conv2d_int32, (U8.astype(np.float32), 0, I8), TypeError, "uint8 or int8"),
    (q.conv2d_int32, (U8[0], 0, I8), ValueError, "4-D"),
    (q.conv2d_int32, (U8, 0, I8, 0, 1, 0, 3), ValueError, "groups"),
    (q.conv2d_int32, (U8, 1.5, I8, 0, 1, 0, 2), TypeError, "x_zero_point"),
    (q.conv2d_int32, (U8, 0, I8, np.zeros(3), 1, 0, 2), ValueError, "w_zero_point"),
    (q.quantize_multiplier, (0.0,), ValueError, "positive"),
    (q.requantize_fixed_point, (np.zeros((1, 1, 1, 1), np.int64), 2**30, -1, 0), TypeError,
     "int32"),
    (q.requantize_fixed_point, (np.zeros((1, 1, 1, 1), np.int32), 2**30, 1, 0), ValueError,
     "below 1"),
    (q.requantize_float32, (np.zeros((1, 1, 1, 1), np.int32), 0.5, 0, "int16"), ValueError,
     "'uint8' or 'int8'"),
    (q.quantized_conv2d, (U8.view(np.int8), 1.0, 0, I8, 1.0, 0, None, 1.0, 0, 1, 0, 2),
     TypeError, "uint8"),
    (q.quantized_conv2d, (U8, 1.0, 0, I8, -1.0, 0, None, 1.0, 0, 1, 0, 2), ValueError,
     "w_scale must be positive"),
    (q.quantized_conv2d, (U8, 1.0, 0, I8, 1.0, 0, np.ones(3), 1.0, 0, 1, 0, 2), ValueError,
     "bias must have shape (2,)"),
    (q.qlinear_conv, (U8, 1.0, 0, I8, 1.0, 0, 1.0, 0, np.ones(2), 1, 0, 2), TypeError,
     "int32"),
    (d2l_torch.torch_quantized_conv2d, (U8, 1.0, 0, I8.view(np.uint8), 1.0, 0, None, 1.0, 0,
                                        1, 0, 2), TypeError, "wq int8"),
    (d2l_torch.torch_quantized_conv2d, (U8, 1.0, 0, I8, 1.0, 0, None, 1.0, 0, (1, 1), 0, 2),
     TypeError, "stride"),
    (d2l_torch.silence_channels, ("model",), TypeError, "nn.Module"),
    (d2l_torch.silence_channels, (torch.nn.Sequential(), 1.5), ValueError, "between 0 and 1"),
]


@pytest.mark.parametrize("function, args, error, words", BAD_CALLS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_gets_a_clear_error(function, args, error, words):
    with pytest.raises(error, match=None) as caught:
        function(*args)
    assert words in str(caught.value), str(caught.value)
