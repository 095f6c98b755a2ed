"""Chapter 8.4, fast int8 kernels: every TE and TVMScript int8 kernel, and the whole int8
network, against the NumPy reference of d2ldw.quantization, integer for integer.

Integer arithmetic has no rounding excuse, so every comparison is ``np.array_equal``. What
the CPU decides is measured first: the ``vpdpbusd`` kernels run only where the target has
AVX-512 VNNI (``target_has_vnni``), and the fallback, compiled from the TE definitions, runs
everywhere, so under ``make test-reduced-isa`` (a generic x86-64 target) the same tests check
the fallback alone.
"""
import numpy as np
import pytest

from d2ldw import quantization as q
from d2ldw.tvm import (
    CompiledInt8Network,
    build,
    conv2d_int8_vnni,
    instruction_counts,
    int8_layer_call,
    depthwise_conv2d_int8_vnni,
    depthwise_vnni_applies,
    int8_layer_kernel,
    pointwise_conv2d_int8,
    requantized_vector,
    target_features,
    target_has_vnni,
)

pytestmark = pytest.mark.cpu_dependent

# the kernels this CPU (or the reduced target) can run: the fallback always
MODES = [False, *([True] if target_has_vnni() else [])]


def _layer(rng, kind, channels, out, stride=1, kernel=3, activation="relu",
           residual=False):
    """A seeded quantized layer as quantize_network makes it, with random scales and zero
    points; ``residual`` adds one (a uint8 tensor of the output's shape, index 0)."""
    groups = channels if kind == "depthwise" else 1
    k = 1 if kind == "pointwise" else kernel
    weight = rng.integers(-127, 128, (out, channels // groups, k, k)).astype(np.int8)
    x_scale = np.float32(rng.uniform(0.01, 0.05))
    w_scale = rng.uniform(0.002, 0.02, out).astype(np.float32)
    y_scale = np.float32(rng.uniform(0.05, 0.4))
    y_zero = int(rng.integers(0, 40)) if activation is None else 0
    low, high = q.activation_bounds(activation, y_scale, y_zero)
    layer = dict(kind=kind, stride=stride, padding=k // 2, activation=activation,
                 residual=0 if residual else None, weight=weight, w_scale=w_scale,
                 x_scale=x_scale, x_zero=int(rng.integers(0, 256)),
                 bias=rng.integers(-30_000, 30_000, out).astype(np.int32),
                 multiplier=(x_scale * w_scale) / y_scale, y_scale=y_scale,
                 y_zero=y_zero, low=low, high=high)
    if residual:
        layer.update(r_zero=int(rng.integers(0, 256)),
                     r_multiplier=np.float32(rng.uniform(0.2, 2.0)))
    return layer


def _reference(layer, x, residual=None):
    groups = x.shape[1] if layer["kind"] == "depthwise" else 1
    acc = q.conv2d_int32(x, layer["x_zero"], layer["weight"], 0, layer["stride"],
                         layer["padding"], groups).astype(np.int64)
    acc = (acc + layer["bias"].reshape(-1, 1, 1)).astype(np.int32)
    return q.requantize_sum(acc, layer["multiplier"], layer["y_zero"], layer["low"],
                            layer["high"], residual, layer.get("r_zero", 0),
                            layer.get("r_multiplier"))


CASES = [  # kind, channels, out, stride, kernel, activation, residual, size
    ("depthwise", 32, 32, 1, 3, "relu6", False, 9),
    ("depthwise", 48, 48, 2, 3, "relu", False, 11),
    ("depthwise", 16, 16, 1, 5, None, False, 8),
    ("depthwise", 24, 24, 2, 3, "relu6", False, 10),  # blocks of 8
    ("depthwise", 16, 16, 1, 3, "relu", False, 4),  # the narrowest row vpermb takes
    ("depthwise", 32, 32, 2, 3, None, False, 4),
    ("depthwise", 16, 16, 2, 3, "relu6", False, 5),
    ("pointwise", 32, 64, 1, 1, "relu", False, 7),
    ("pointwise", 64, 24, 1, 1, None, True, 6),  # 8-lane output, a residual sum
    ("pointwise", 24, 48, 1, 1, "relu6", False, 5),  # 8-lane input
    ("pointwise", 96, 32, 1, 1, None, True, 4),
    ("full", 3, 32, 2, 3, "relu6", False, 12),
    ("full", 3, 16, 1, 3, None, False, 7),
]


@pytest.mark.parametrize("vnni", MODES, ids=lambda v: "vpdpbusd" if v else "fallback")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-s{c[3]}-"
                         f"k{c[4]}-{c[5]}{'-residual' if c[6] else ''}")
def test_every_int8_kernel_equals_the_reference(case, vnni):
    kind, channels, out, stride, kernel, activation, residual, size = case
    rng = np.random.default_rng(sum(map(ord, str(case))))
    layer = _layer(rng, kind, channels, out, stride, kernel, activation, residual)
    x = rng.integers(0, 256, (2, channels, size, size)).astype(np.uint8)
    r = None
    if residual:
        r = rng.integers(0, 256, (2, out, size, size)).astype(np.uint8)
    expected = _reference(layer, x, r)
    run, output = int8_layer_call(layer, x, r, vnni=vnni)
    run()
    got = output()
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), f"{np.count_nonzero(got != expected)} outputs differ"
    if activation:  # the clip is the activation: some outputs sit on it
        assert got.min() >= layer["low"] and got.max() <= layer["high"]


def _tiny_network(seed=0, size=16):
    """inference_layers-style float layers of a small inverted-residual network, and their
    float outputs on a seeded calibration batch (NumPy only)."""
    from d2ldw.numpy import conv2d

    rng = np.random.default_rng(seed)

    def conv(kind, c, o, stride, activation, residual=None):
        groups = c if kind == "depthwise" else 1
        k = 1 if kind == "pointwise" else 3
        w = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
        w /= np.sqrt(w[0].size)
        return dict(kind=kind, weight=w, bias=0.1 * rng.standard_normal(o).astype(
            np.float32), stride=stride, padding=k // 2, activation=activation,
            residual=residual)

    layers = [conv("full", 3, 16, 2, "relu6"), conv("depthwise", 16, 16, 1, "relu6"),
              conv("pointwise", 16, 24, 1, None), conv("pointwise", 24, 48, 1, "relu6"),
              conv("depthwise", 48, 48, 1, "relu6"), conv("pointwise", 48, 24, 1, None, 3),
              conv("pointwise", 24, 32, 1, "relu"), {"kind": "pool"},
              {"kind": "linear", "weight": rng.standard_normal((10, 32)).astype(np.float32),
               "bias": rng.standard_normal(10).astype(np.float32)}]

    def run(image):
        values = [image]
        for layer in layers:
            x = values[-1]
            if layer["kind"] == "pool":
                y = x.mean(axis=(2, 3))
            elif layer["kind"] == "linear":
                y = x @ layer["weight"].T + layer["bias"]
            else:
                groups = x.shape[1] if layer["kind"] == "depthwise" else 1
                y = conv2d(x, layer["weight"], layer["bias"], layer["stride"],
                           layer["padding"], groups=groups)
                if layer["residual"] is not None:
                    y = y + values[layer["residual"]]
                if layer["activation"]:
                    y = np.clip(y, 0, 6 if layer["activation"] == "relu6" else None)
            values.append(y.astype(np.float32))
        return values[1:]

    calibration = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    image = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    return layers, calibration, run(calibration), image


@pytest.mark.parametrize("vnni", MODES, ids=lambda v: "vpdpbusd" if v else "fallback")
def test_the_compiled_int8_network_equals_the_reference_layer_for_layer(vnni):
    layers, calibration, outputs, image = _tiny_network()
    qlayers = q.quantize_network(layers, calibration, outputs)
    reference = q.run_quantized_layers(qlayers, image)
    network = CompiledInt8Network(qlayers, image.shape, vnni=vnni)
    logits = network(image)
    got = network.layer_outputs()
    assert len(got) == len(qlayers) == len(network.layer_seconds())
    for k, layer in enumerate(qlayers):
        if "multiplier" in layer:
            assert np.array_equal(got[k], reference[k]), f"layer {k} ({layer['kind']})"
    # the float32 head adds in another order: float32 rounding only
    np.testing.assert_allclose(logits, reference[-1], rtol=1e-5, atol=1e-5)


def test_quantize_network_records_what_the_kernels_need():
    layers, calibration, outputs, _ = _tiny_network()
    qlayers = q.quantize_network(layers, calibration, outputs)
    first, projection = qlayers[0], qlayers[5]
    assert first["weight"].dtype == np.int8 and first["bias"].dtype == np.int32
    assert first["multiplier"].dtype == np.float32
    assert 0 <= first["x_zero"] <= 255 and first["low"] == first["y_zero"] == 0
    # ReLU6 with a calibrated range inside [0, 6] clips at the top of uint8 or below
    assert first["high"] <= 255
    assert projection["residual"] == 3 and projection["r_multiplier"].dtype == np.float32
    assert qlayers[-1]["weight"].dtype == np.int8 and "x_scale" not in qlayers[-1]
    with pytest.raises(ValueError, match="one output per layer"):
        q.quantize_network(layers, calibration, outputs[:-1])
    with pytest.raises(TypeError, match="list of dicts"):
        q.quantize_network("layers", calibration, outputs)


def test_quantize_image_rounds_half_to_even_in_float32():
    image = np.array([[[[0.5, 1.5, 2.5, -0.5, 300.0, -300.0]]]], np.float32)
    assert q.quantize_image(image, 1.0, 10).tolist() == [[[[10, 12, 12, 10, 255, 0]]]]
    with pytest.raises(TypeError, match="float32"):
        q.quantize_image(image.astype(np.float64), 1.0, 0)
    with pytest.raises(ValueError, match="positive"):
        q.quantize_image(image, 0.0, 0)
    with pytest.raises(ValueError, match="0 to 255"):
        q.quantize_image(image, 1.0, 256)


def test_activation_bounds_are_the_clips_of_relu_and_relu6():
    assert q.activation_bounds(None, 0.1, 7) == (0, 255)
    assert q.activation_bounds("relu", 0.1, 7) == (7, 255)
    assert q.activation_bounds("relu6", 0.1, 7) == (7, 67)
    assert q.activation_bounds("relu6", 6 / 255, 0) == (0, 255)
    with pytest.raises(ValueError, match="activation must be one of"):
        q.activation_bounds("gelu", 0.1, 0)


def test_requantize_sum_rounds_each_product_then_adds():
    acc = np.array([5, 15, -5, 25], np.int32).reshape(1, 4, 1, 1)
    m = np.full(4, 0.1, np.float32)
    # float32(5 * 0.1) rounds to 0.5 (up from 0.4999...), then half to even: 0
    expected = np.clip(np.rint(acc.astype(np.float32) * m.reshape(-1, 1, 1)) + 3, 0, 255)
    assert np.array_equal(q.requantize_sum(acc, m, 3, 0, 255), expected.astype(np.uint8))
    residual = np.full((1, 4, 1, 1), 12, np.uint8)
    summed = q.requantize_sum(acc, m, 3, 0, 255, residual, 10, np.float32(1.5))
    assert np.array_equal(summed, expected.astype(np.uint8) + 3)  # rint(2 * 1.5) = 3
    with pytest.raises(TypeError, match="int32"):
        q.requantize_sum(acc.astype(np.int64), m, 0, 0, 255)
    with pytest.raises(ValueError, match="residual must be uint8"):
        q.requantize_sum(acc, m, 0, 0, 255, residual[:, :2])


def _requantize_kernel(size, lanes, zero, low, high, residual, r_zero, r_multiplier):
    """A module applying ``requantized_vector`` to ``size`` sums, ``lanes`` at a time."""
    import tvm
    from tvm.script import tirx as T

    v32, f32, u8 = f"int32x{lanes}", f"float32x{lanes}", f"uint8x{lanes}"

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((size,), "int32"), M: T.Buffer((size,), "float32"),
             R: T.Buffer((size,), "uint8"), Z: T.Buffer((size,), "uint8")):
        for i in range(size // lanes):
            Z[T.ramp(i * lanes, 1, lanes)] = requantized_vector(
                A.vload([i * lanes], v32), M.vload([i * lanes], f32), zero, low, high,
                lanes, R.vload([i * lanes], u8) if residual else None, r_zero,
                r_multiplier)

    return tvm.IRModule({"main": main})


# 16 lanes take the AVX-512 conversion with its own rounding: only where the target has it
VECTOR_LANES = [8, *([16] if "avx512f" in target_features() else [])]


@pytest.mark.parametrize("lanes", VECTOR_LANES)
@pytest.mark.parametrize("residual", [False, True])
def test_the_vector_epilogue_equals_requantize_sum_at_ties_and_extremes(lanes, residual):
    """The shorter epilogue clips before it rounds and converts with vcvtps2dq {rn-sae}:
    exact ties (odd sums times 0.5 or 1.5), sums that overflow int32 once multiplied, and
    both clips must come out as NumPy's ``requantize_sum``."""
    import tvm

    rng = np.random.default_rng(7)
    size = 64 * 16
    ties = 2 * rng.integers(-400, 400, size // 4) + 1
    acc = np.concatenate([ties, rng.integers(-2**31 + 1, 2**31 - 1, size // 4),
                          rng.integers(-3000, 3000, size // 2)]).astype(np.int32)
    m = np.concatenate([rng.choice([0.5, 1.5], size // 4),
                        rng.uniform(1e-3, 4.0, size // 4),
                        rng.uniform(1e-3, 0.3, size // 2)]).astype(np.float32)
    r = rng.integers(0, 256, size).astype(np.uint8)
    zero, low, high, r_zero, r_multiplier = 7, 7, 200, 131, np.float32(0.75)
    expected = q.requantize_sum(acc.reshape(1, -1, 1, 1), m, zero, low, high,
                                r.reshape(1, -1, 1, 1) if residual else None, r_zero,
                                r_multiplier).ravel()
    function = build(_requantize_kernel(size, lanes, zero, low, high, residual, r_zero,
                                        r_multiplier))
    arrays = [tvm.runtime.tensor(a) for a in (acc, m, r, np.zeros(size, np.uint8))]
    function(*arrays)
    got = arrays[-1].numpy()
    assert (expected == low).any() and (expected == high).any()  # both clips taken
    assert np.array_equal(got, expected), np.flatnonzero(got != expected)[:10]


def test_instruction_counts_reads_the_kernels_assembly():
    rng = np.random.default_rng(3)
    layer = _layer(rng, "pointwise", 32, 32, activation="relu6")
    module, _ = int8_layer_kernel(layer, (1, 2, 4, 4, 16))
    counts = instruction_counts(module, ["vpdpbusd", "retq"])  # AT&T syntax
    assert counts["retq"] >= 1
    assert (counts["vpdpbusd"] > 0) == target_has_vnni()
    # the depthwise kernel calls vpdpbusd exactly where it applies: VNNI and VBMI
    depthwise = _layer(rng, "depthwise", 32, 32, kernel=3)
    shape = (1, 2, 6, 6, 16)
    applies = depthwise_vnni_applies(depthwise, shape)
    assert applies == ({"avx512vnni", "avx512vbmi"} <= target_features())
    module, _ = int8_layer_kernel(depthwise, shape)
    counts = instruction_counts(module, ["vpdpbusd", "vpermb"])
    assert (counts["vpdpbusd"] > 0) == applies and (counts["vpermb"] > 0) == applies
    assert not depthwise_vnni_applies(depthwise, (1, 2, 6, 3, 16))  # too narrow
    assert not depthwise_vnni_applies(_layer(rng, "depthwise", 16, 16, kernel=5),
                                      (1, 1, 6, 6, 16))
    with pytest.raises(TypeError, match="list of instruction names"):
        instruction_counts(module, "vpdpbusd")


def test_the_int8_kernels_refuse_what_they_cannot_compute():
    from tvm import te

    X = te.placeholder((1, 2, 4, 4, 16), "float32", name="X")
    K = te.placeholder((4, 32, 16), "int8", name="K")
    with pytest.raises(TypeError, match="uint8 input and int8 weights"):
        pointwise_conv2d_int8(X, K)
    with pytest.raises(ValueError, match="lanes 8 or 16"):
        conv2d_int8_vnni((1, 2, 4, 4, 16), 2, 4, 0, 0, 255, 4, 1)
    with pytest.raises(ValueError, match="tile"):
        conv2d_int8_vnni((1, 2, 5, 5, 16), 2, 16, 0, 0, 255, 4, 1)
    with pytest.raises(ValueError, match="at least 4 columns"):
        depthwise_conv2d_int8_vnni((1, 2, 5, 3, 16), 0, 1, 0, 0, 255)
    with pytest.raises(ValueError, match="blocks of 16"):
        depthwise_conv2d_int8_vnni((1, 2, 5, 5, 8), 0, 1, 0, 0, 255)
    rng = np.random.default_rng(0)
    layer = _layer(rng, "pointwise", 32, 32)
    x = np.zeros((1, 32, 4, 4), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        int8_layer_call(layer, x.astype(np.int8))
    with pytest.raises(ValueError, match="residual"):
        int8_layer_call(layer, x, residual=x)
    with pytest.raises(ValueError, match="convolution"):
        int8_layer_call({"kind": "pool", "residual": None}, x)
    with pytest.raises(TypeError, match="quantize_network"):
        CompiledInt8Network([1, 2], (1, 3, 8, 8))
    with pytest.raises(ValueError, match="quantize_network"):
        CompiledInt8Network([{"kind": "pool"}], (1, 3, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_int8_mobilenets_equal_the_reference_layer_for_layer(version):
    import torch

    from d2ldw.torch import inference_layers, run_layers, seeded_image, seeded_mobilenet

    layers = inference_layers(seeded_mobilenet(version))
    calibration = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    qlayers = q.quantize_network(layers, calibration.numpy(), run_layers(layers, calibration))
    image = seeded_image().numpy()
    reference = q.run_quantized_layers(qlayers, image)
    for vnni in MODES:
        outputs = CompiledInt8Network(qlayers, image.shape, vnni=vnni)
        outputs(image)
        got = outputs.layer_outputs()
        differ = [k for k, layer in enumerate(qlayers)
                  if "multiplier" in layer and not np.array_equal(got[k], reference[k])]
        assert differ == [], f"vnni={vnni}: layers {differ} differ"
