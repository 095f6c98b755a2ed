"""The fixes of Section "Porting traps": TensorFlow's 'same' padding, BatchNorm's epsilon,
TFLite's depthwise layout, ONNX's group attribute and the fans of a grouped weight, each
checked against the real thing (Keras 3 on its PyTorch backend, ONNX Runtime, nn.init)."""
import math
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from d2ldw.torch import (  # noqa: E402
    conv_fans,
    kaiming_normal_conv_,
    keras_batch_norm_to_torch,
    keras_conv2d_to_torch,
    keras_depthwise_to_torch,
    onnx_conv_attributes,
    pad_like_tf_same,
    tf_same_padding,
    tflite_depthwise_to_torch,
    torch_conv2d_to_tflite,
    torch_depthwise_to_tflite,
)

from test_porting import nchw, nhwc, seeded_layer  # noqa: E402  (the layout helpers)


# --- TensorFlow's 'same' padding ---------------------------------------------------------

SAME_CASES = [  # height, width, kernel, stride, dilation
    (8, 8, 3, 2, 1), (9, 9, 3, 2, 1), (8, 7, (3, 5), (2, 3), 1), (10, 6, 5, 2, 1),
    (7, 8, 3, 1, 2), (12, 9, (4, 2), 2, 1), (5, 5, 1, 3, 1),
]


@pytest.mark.parametrize("height, width, kernel_size, stride, dilation", SAME_CASES)
def test_padding_like_tf_same_computes_the_keras_layer(height, width, kernel_size, stride,
                                                       dilation):
    rng = np.random.default_rng(height * 100 + width)
    x = rng.standard_normal((2, height, width, 3)).astype("float32")
    layer = seeded_layer(keras.layers.DepthwiseConv2D(
        kernel_size, strides=stride, padding="same", dilation_rate=dilation,
        depth_multiplier=2), x.shape, rng)
    kernel, bias = layer.get_weights()
    expected = keras.ops.convert_to_numpy(layer(x))
    padded = pad_like_tf_same(nchw(x), kernel_size, stride, dilation)
    got = F.conv2d(padded, keras_depthwise_to_torch(kernel), torch.from_numpy(bias),
                   stride=stride, dilation=dilation, groups=3)
    assert got.shape[2:] == (math.ceil(height / (stride if isinstance(stride, int)
                                                 else stride[0])),
                             expected.shape[2])
    np.testing.assert_allclose(nhwc(got), expected, rtol=1e-5, atol=1e-5)


def test_tf_same_padding_puts_the_odd_pixel_after_and_matches_the_formula():
    assert tf_same_padding(8, 3, 2) == ((0, 1), (0, 1))
    assert tf_same_padding(9, 3, 2) == ((1, 1), (1, 1))
    assert tf_same_padding((8, 9), (3, 3), 2) == ((0, 1), (1, 1))
    assert tf_same_padding(5, 1, 3) == ((0, 0), (0, 0))  # never negative
    assert tf_same_padding(7, 3, 1, dilation=2) == ((2, 2), (2, 2))
    for n in range(1, 20):
        for k in range(1, 6):
            for s in range(1, 4):
                (before, after), _ = tf_same_padding(n, k, s)
                out = -(-n // s)
                assert after - before in (0, 1)
                assert (n + before + after - k) // s + 1 == out


def test_the_symmetric_padding_pytorch_offers_is_the_trap():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 8, 2)).astype("float32")
    layer = seeded_layer(keras.layers.DepthwiseConv2D(3, strides=2, padding="same"),
                         x.shape, rng)
    kernel, bias = layer.get_weights()
    wrong = F.conv2d(nchw(x), keras_depthwise_to_torch(kernel), torch.from_numpy(bias),
                     stride=2, padding=1, groups=2)
    assert np.abs(nhwc(wrong) - keras.ops.convert_to_numpy(layer(x))).max() > 0.1
    with pytest.raises(RuntimeError, match="strided"):
        F.conv2d(nchw(x), keras_depthwise_to_torch(kernel), stride=2, padding="same",
                 groups=2)


@pytest.mark.parametrize("call, error, match", [
    (lambda: tf_same_padding(0, 3), ValueError, "input_size must be >= 1"),
    (lambda: tf_same_padding(8, 3, stride=True), TypeError, "bools are refused"),
    (lambda: tf_same_padding(8, (3, 3, 3)), ValueError, "int or a pair"),
    (lambda: tf_same_padding(8.0, 3), TypeError, "input_size must be an int"),
    (lambda: pad_like_tf_same(np.zeros((1, 1, 4, 4)), 3), TypeError, "torch.Tensor"),
    (lambda: pad_like_tf_same(torch.zeros(4, 4), 3), ValueError, r"\(N, C, H, W\)"),
    (lambda: pad_like_tf_same(torch.zeros(1, 4, 4), 3, stride=0), ValueError, "stride"),
])
def test_same_padding_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pad_like_tf_same_keeps_an_unbatched_input_unbatched():
    assert pad_like_tf_same(torch.zeros(3, 8, 6), 3, 2).shape == (3, 9, 7)


# --- BatchNorm's epsilon -----------------------------------------------------------------

@pytest.mark.parametrize("epsilon, momentum", [(1e-3, 0.99), (1e-5, 0.9), (0.1, 0.5)])
def test_keras_batch_norm_ported_computes_the_keras_layer(epsilon, momentum):
    rng = np.random.default_rng(int(epsilon * 1e5))
    channels = 6
    layer = keras.layers.BatchNormalization(epsilon=epsilon, momentum=momentum)
    layer.build((None, 4, 4, channels))
    variance = 10 ** rng.uniform(-5, 0, channels)
    layer.set_weights([a.astype("float32") for a in
                       (*rng.standard_normal((3, channels)), variance)])
    x = rng.standard_normal((2, 4, 4, channels)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x, training=False))
    ported = keras_batch_norm_to_torch(layer.get_weights(), layer.epsilon, layer.momentum)
    assert not ported.training and ported.eps == epsilon
    assert ported.momentum == pytest.approx(1 - momentum)
    with torch.no_grad():
        got = nhwc(ported(nchw(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_pytorch_default_eps_is_the_trap():
    rng = np.random.default_rng(1)
    weights = [np.ones(4, "float32"), np.zeros(4, "float32"), np.zeros(4, "float32"),
               np.full(4, 1e-4, "float32")]
    x = torch.from_numpy(rng.standard_normal((1, 4, 3, 3)).astype("float32"))
    with torch.no_grad():
        right = keras_batch_norm_to_torch(weights)(x)
        wrong = keras_batch_norm_to_torch(weights, epsilon=1e-5)(x)
    ratio = (wrong / right).flatten()
    np.testing.assert_allclose(ratio, math.sqrt((1e-4 + 1e-3) / (1e-4 + 1e-5)), rtol=1e-4)


@pytest.mark.parametrize("weights, kwargs, error, match", [
    (np.zeros((4, 3)), {}, TypeError, "list of four"),
    ([np.zeros(3)] * 2, {}, ValueError, "center=False"),
    ([np.zeros(3)] * 3 + [[1.0, 1.0, 1.0]], {}, TypeError, "NumPy arrays or tensors"),
    ([np.zeros(3)] * 3 + [np.zeros(4)], {}, ValueError, r"shape \(C,\)"),
    ([np.zeros((3, 1))] * 4, {}, ValueError, r"shape \(C,\)"),
    ([np.zeros(0)] * 4, {}, ValueError, "C >= 1"),
    ([np.zeros(3)] * 4, {"epsilon": 0.0}, ValueError, "epsilon must be > 0"),
    ([np.zeros(3)] * 4, {"momentum": 1.5}, ValueError, "momentum in"),
    ([np.zeros(3)] * 4, {"epsilon": "1e-3"}, TypeError, "epsilon must be a real"),
    ([np.zeros(3)] * 4, {"momentum": True}, TypeError, "momentum must be a real"),
])
def test_keras_batch_norm_to_torch_refuses_bad_arguments(weights, kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_batch_norm_to_torch(weights, **kwargs)


# --- TFLite's layouts --------------------------------------------------------------------

@pytest.mark.parametrize("channels, multiplier, kernel_size", [
    (3, 1, (3, 3)), (4, 2, (3, 3)), (2, 3, (5, 2)),
])
def test_tflite_depthwise_layout_is_the_keras_kernel_with_channels_merged(
        channels, multiplier, kernel_size):
    """TFLite's filter (1, kH, kW, C*M) is the Keras kernel (kH, kW, C, M) reshaped; its
    port computes the Keras layer, and a plain reshape (the trap) does not."""
    rng = np.random.default_rng(channels * 7 + multiplier)
    x = rng.standard_normal((2, 9, 8, channels)).astype("float32")
    layer = seeded_layer(keras.layers.DepthwiseConv2D(
        kernel_size, depth_multiplier=multiplier), x.shape, rng)
    kernel, bias = layer.get_weights()
    expected = keras.ops.convert_to_numpy(layer(x))
    tflite = kernel.reshape(1, *kernel_size, channels * multiplier)
    weight = tflite_depthwise_to_torch(tflite)
    assert torch.equal(weight, keras_depthwise_to_torch(kernel))
    got = F.conv2d(nchw(x), weight, torch.from_numpy(bias), groups=channels)
    np.testing.assert_allclose(nhwc(got), expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(torch_depthwise_to_tflite(weight).numpy(), tflite)
    assert np.array_equal(torch_depthwise_to_tflite(weight.numpy()).numpy(), tflite)
    reshaped = torch.from_numpy(tflite).reshape(weight.shape)
    if kernel_size != (1, 1):
        wrong = F.conv2d(nchw(x), reshaped, torch.from_numpy(bias), groups=channels)
        assert np.abs(nhwc(wrong) - expected).max() > 0.1


def test_tflite_conv2d_layout_is_ohwi():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 6, 4)).astype("float32")
    layer = seeded_layer(keras.layers.Conv2D(6, (3, 2), groups=2, use_bias=False),
                         x.shape, rng)
    weight = keras_conv2d_to_torch(layer.get_weights()[0])  # (6, 2, 3, 2)
    tflite = torch_conv2d_to_tflite(weight)
    assert tuple(tflite.shape) == (6, 3, 2, 2)
    assert torch.equal(tflite[5, 2, 1], weight[5, :, 2, 1])
    assert torch.equal(torch_conv2d_to_tflite(weight.numpy()), tflite)


@pytest.mark.parametrize("call, error, match", [
    (lambda: tflite_depthwise_to_torch([[1.0]]), TypeError, "tensor or a NumPy array"),
    (lambda: tflite_depthwise_to_torch(np.zeros((3, 3, 4, 1))), ValueError,
     "keras_depthwise_to_torch"),
    (lambda: tflite_depthwise_to_torch(np.zeros((1, 3, 4))), ValueError, "4-D"),
    (lambda: torch_depthwise_to_tflite(torch.zeros(4, 2, 3, 3)), ValueError, "depthwise"),
    (lambda: torch_depthwise_to_tflite(torch.zeros(4, 1, 0, 3)), ValueError, ">= 1"),
    (lambda: torch_conv2d_to_tflite(torch.zeros(4, 3, 3)), ValueError, "4-D"),
    (lambda: torch_conv2d_to_tflite("weight"), TypeError, "tensor or a NumPy array"),
])
def test_tflite_conversions_refuse_bad_weights(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- ONNX's attributes -------------------------------------------------------------------

def run_onnx(weight, x, attributes):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attributes)], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight.numpy(), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize("in_channels, out_channels, kernel_size, stride, padding, "
                         "dilation, groups", [
                             (4, 8, 3, 2, 1, 1, 4),
                             (6, 6, (3, 5), (1, 2), (1, 2), (2, 1), 3),
                             (4, 4, 1, 1, 0, 1, 1),
                             (3, 6, 3, 1, 2, 2, 3),
                         ])
def test_onnx_conv_attributes_make_onnx_runtime_compute_f_conv2d(
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups):
    torch.manual_seed(in_channels * 10 + groups)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                     groups, bias=False)
    x = torch.randn(2, in_channels, 11, 9)
    attributes = onnx_conv_attributes(conv.weight.shape, stride, padding, dilation, groups)
    assert attributes["group"] == groups
    with torch.no_grad():
        expected = conv(x).numpy()
    got = run_onnx(conv.weight.detach(), x, attributes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_onnx_pads_per_side_reproduce_keras_same_padding_at_stride_two():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 8, 10, 3)).astype("float32")
    layer = seeded_layer(keras.layers.DepthwiseConv2D(3, strides=2, padding="same",
                                                      use_bias=False), x.shape, rng)
    weight = keras_depthwise_to_torch(layer.get_weights()[0])
    attributes = onnx_conv_attributes(weight.shape, 2, tf_same_padding((8, 10), 3, 2),
                                      groups=3)
    assert attributes["pads"] == [0, 0, 1, 1]
    got = run_onnx(weight, nchw(x), attributes)
    np.testing.assert_allclose(got.transpose(0, 2, 3, 1),
                               keras.ops.convert_to_numpy(layer(x)), rtol=1e-5, atol=1e-5)


def test_onnx_without_group_is_refused_by_onnx_runtime():
    pytest.importorskip("onnxruntime")
    weight = torch.zeros(4, 1, 3, 3)
    attributes = onnx_conv_attributes(weight.shape, groups=4)
    del attributes["group"]
    with pytest.raises(Exception, match="group"):
        run_onnx(weight, torch.zeros(1, 4, 5, 5), attributes)


def test_onnx_pads_are_begins_then_ends():
    attributes = onnx_conv_attributes((8, 1, 3, 5), padding=((1, 2), (3, 4)), groups=8)
    assert attributes == {"kernel_shape": [3, 5], "strides": [1, 1], "pads": [1, 3, 2, 4],
                          "dilations": [1, 1], "group": 8}
    assert onnx_conv_attributes((8, 1, 3, 5), padding=(1, 2))["pads"] == [1, 2, 1, 2]


@pytest.mark.parametrize("args, kwargs, error, match", [
    (((8, 1, 3),), {}, ValueError, r"\(O, C/G, kH, kW\)"),
    (((8, 1, 3, 0),), {}, ValueError, "weight_shape entry must be >= 1"),
    (((8, 1, 3, 3.0),), {}, TypeError, "weight_shape entry must be an int"),
    (((8, 1, 3, 3),), {"groups": 3}, ValueError, "must divide"),
    (((8, 1, 3, 3),), {"padding": "same"}, ValueError, "tf_same_padding"),
    (((8, 1, 3, 3),), {"padding": -1}, ValueError, "padding must be >= 0"),
    (((8, 1, 3, 3),), {"padding": (1, 2, 3)}, ValueError, "a pair or two pairs"),
    (((8, 1, 3, 3),), {"padding": ((1, 2, 3), 1)}, ValueError, "per side"),
    (((8, 1, 3, 3),), {"stride": 0}, ValueError, "stride must be >= 1"),
    (((8, 1, 3, 3),), {"groups": True}, TypeError, "bools are refused"),
])
def test_onnx_conv_attributes_refuses_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        onnx_conv_attributes(*args, **kwargs)


# --- the fans of a grouped weight --------------------------------------------------------

def draw_std(init, shape):
    """The standard deviation ``init`` (a function of a tensor and a generator) chose:
    its weight over the same normal numbers drawn from the same seed."""
    drawn = init(torch.empty(shape), torch.Generator().manual_seed(3))
    normal = torch.empty(shape).normal_(generator=torch.Generator().manual_seed(3))
    ratio = drawn / normal
    assert torch.allclose(ratio, ratio.flatten()[0])
    return ratio.flatten()[0].item()


@pytest.mark.parametrize("shape, groups", [((32, 1, 3, 3), 32), ((64, 1, 5, 5), 32),
                                           ((16, 4, 3, 3), 4), ((8, 8, 3, 3), 1)])
def test_conv_fans_count_within_groups_where_nn_init_does_not(shape, groups):
    out, per_group, kh, kw = shape
    assert conv_fans(shape, groups) == (per_group * kh * kw, out // groups * kh * kw)
    pytorch = draw_std(lambda w, g: nn.init.kaiming_normal_(w, mode="fan_out",
                                                            generator=g), shape)
    ours = draw_std(lambda w, g: kaiming_normal_conv_(w, groups, generator=g), shape)
    assert pytorch == pytest.approx(math.sqrt(2 / (out * kh * kw)), rel=1e-6)
    assert ours == pytest.approx(pytorch * math.sqrt(groups), rel=1e-6)
    fan_in = draw_std(lambda w, g: kaiming_normal_conv_(w, groups, "fan_in", generator=g),
                      shape)
    assert fan_in == pytest.approx(draw_std(
        lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", generator=g), shape),
        rel=1e-6)  # nn.init counts the fan-in right


def test_kaiming_normal_conv_keeps_the_mean_square_of_a_depthwise_stack():
    """Averaged over seeds, one depthwise + ReLU layer initialised with the real fan-out
    keeps the mean square of unit noise (interior pixels, no padding); nn.init's fan
    divides it by C."""
    channels, squares = 16, {"ours": [], "nn.init": []}
    for seed in range(20):
        for name, init in (("ours", lambda w: kaiming_normal_conv_(w, channels)),
                           ("nn.init", lambda w: nn.init.kaiming_normal_(w, mode="fan_out"))):
            torch.manual_seed(seed)
            x = torch.randn(2, channels, 24, 24)
            w = init(torch.empty(channels, 1, 3, 3))
            squares[name].append(F.relu(F.conv2d(x, w, groups=channels)).pow(2).mean())
    ours, theirs = (float(np.mean(squares[n])) for n in ("ours", "nn.init"))
    assert 0.8 < ours < 1.2
    assert theirs == pytest.approx(ours / channels, rel=1e-5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: conv_fans((8, 1, 3)), ValueError, r"\(O, C/G, kH, kW\)"),
    (lambda: conv_fans((8, 1, 3, 3), groups=3), ValueError, "must divide"),
    (lambda: conv_fans((8, 1, 3, 3), groups=0), ValueError, "groups must be >= 1"),
    (lambda: conv_fans((8, 1, 3, 3.5)), TypeError, "must be an int"),
    (lambda: kaiming_normal_conv_(np.zeros((8, 1, 3, 3)), 8), TypeError, "tensor"),
    (lambda: kaiming_normal_conv_(torch.zeros(8, 1, 3, 3), 8, mode="fan"), ValueError,
     "fan_in' or 'fan_out"),
])
def test_fans_refuse_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
