"""Weight-layout conversions of Section "Porting depthwise and transposed weights":
checked against the real Keras layers (Keras 3 on its PyTorch backend), against a NumPy
reference of the semantics TensorFlow documents, and against nn.ConvTranspose2d."""
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from conftest import conv_tolerance  # noqa: E402
from d2ldw.torch import (  # noqa: E402
    SeparableConv2d,
    conv_transpose_to_conv_weight,
    keras_conv2d_to_torch,
    keras_conv2d_transpose_to_torch,
    keras_depthwise_to_torch,
    torch_depthwise_to_keras,
)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def seeded_layer(layer, input_shape, rng):
    """Build a Keras layer and give it seeded standard-normal weights."""
    layer.build(input_shape)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer


def keras_output(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def depthwise_reference(x, kernel, stride):
    """TensorFlow's documented depthwise_conv2d, 'valid' padding, in NumPy float64:
    out[n, i, j, c*M + m] = sum_{a, b} x[n, s*i + a, s*j + b, c] * kernel[a, b, c, m]."""
    kh, kw, channels, multiplier = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, channels * multiplier))
    for c in range(channels):
        for m in range(multiplier):
            for a in range(kh):
                for b in range(kw):
                    window = x[:, a:a + stride * oh:stride, b:b + stride * ow:stride, c]
                    out[..., c * multiplier + m] += window * float(kernel[a, b, c, m])
    return out


DEPTHWISE_CASES = [  # channels, multiplier, kernel, stride, padding
    (3, 1, (3, 3), 1, "valid"),
    (4, 2, (3, 3), 2, "valid"),
    (2, 3, (5, 2), 1, "same"),
    (5, 4, (1, 3), 2, "valid"),
]


@pytest.mark.parametrize("channels, multiplier, kernel_size, stride, padding",
                         DEPTHWISE_CASES)
def test_keras_depthwise_kernel_ported_to_torch_computes_the_keras_layer(
        channels, multiplier, kernel_size, stride, padding):
    rng = np.random.default_rng(channels * 10 + multiplier)
    x = rng.standard_normal((2, 9, 8, channels)).astype("float32")
    layer = seeded_layer(keras.layers.DepthwiseConv2D(
        kernel_size, strides=stride, padding=padding, depth_multiplier=multiplier),
        x.shape, rng)
    kernel, bias = layer.get_weights()
    weight = keras_depthwise_to_torch(kernel)
    assert weight.shape == (channels * multiplier, 1, *kernel_size)
    assert weight.is_contiguous()
    y = F.conv2d(nchw(x), weight, torch.from_numpy(bias), stride=stride,
                 padding=padding, groups=channels)
    tolerance = conv_tolerance(nchw(x), weight, torch.from_numpy(bias), stride=stride,
                               padding=padding, groups=channels)
    assert np.all(np.abs(nhwc(y) - keras_output(layer, x)) <= nhwc(torch.from_numpy(tolerance)))


def test_depthwise_conversion_follows_tensorflows_documented_channel_order():
    """Independent of Keras's code: output channel c*M + m uses kernel[:, :, c, m]."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 7, 3))
    kernel = rng.standard_normal((3, 2, 3, 4))
    y = F.conv2d(nchw(x), keras_depthwise_to_torch(kernel), stride=2, groups=3)
    np.testing.assert_allclose(nhwc(y), depthwise_reference(x, kernel, 2), rtol=0, atol=1e-12)


def test_depthwise_round_trip_is_exact_both_ways():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((5, 3, 4, 3)).astype("float32")
    assert np.array_equal(torch_depthwise_to_keras(keras_depthwise_to_torch(kernel), 4), kernel)
    weight = torch.from_numpy(rng.standard_normal((12, 1, 3, 5)))
    assert torch.equal(keras_depthwise_to_torch(torch_depthwise_to_keras(weight, 4)), weight)


@pytest.mark.parametrize("groups, out_channels, kernel_size", [(1, 5, 3), (2, 6, (3, 2)),
                                                                (4, 4, 1)])
def test_keras_conv2d_kernel_ported_to_torch(groups, out_channels, kernel_size):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, 7, 6, 4)).astype("float32")
    layer = seeded_layer(keras.layers.Conv2D(out_channels, kernel_size, groups=groups,
                                             padding="same"), x.shape, rng)
    kernel, bias = layer.get_weights()
    weight = keras_conv2d_to_torch(kernel)
    assert weight.shape[:2] == (out_channels, 4 // groups)
    y = F.conv2d(nchw(x), weight, torch.from_numpy(bias), padding="same", groups=groups)
    tolerance = conv_tolerance(nchw(x), weight, torch.from_numpy(bias), padding="same",
                               groups=groups)
    assert np.all(np.abs(nhwc(y) - keras_output(layer, x)) <= nhwc(torch.from_numpy(tolerance)))


def test_keras_separable_layer_loads_into_d2ldw_separable_conv2d():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 11, 9, 3)).astype("float32")
    layer = seeded_layer(keras.layers.SeparableConv2D(5, 3, strides=2, depth_multiplier=2),
                         x.shape, rng)
    depthwise, pointwise, bias = layer.get_weights()
    ported = SeparableConv2d(3, 5, 3, stride=2, multiplier=2).load_weights(
        keras_depthwise_to_torch(depthwise), keras_conv2d_to_torch(pointwise),
        torch.from_numpy(bias))
    # two convolutions in a row: the first's error is carried by the second (a loose bound)
    np.testing.assert_allclose(nhwc(ported(nchw(x))), keras_output(layer, x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel_size, stride", [((3, 2), 2), (3, 1), ((1, 4), 3)])
def test_keras_conv2d_transpose_kernel_ported_to_torch(kernel_size, stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 5, 4, 3)).astype("float32")
    layer = seeded_layer(keras.layers.Conv2DTranspose(4, kernel_size, strides=stride),
                         x.shape, rng)
    kernel, bias = layer.get_weights()
    weight = keras_conv2d_transpose_to_torch(kernel)
    assert weight.shape[:2] == (3, 4)
    # Keras's 'valid' makes H*s + max(k - s, 0) rows, PyTorch (H-1)*s + k: they differ
    # by s - k when the kernel is smaller than the stride, which output_padding adds
    kh, kw = nn.modules.utils._pair(kernel_size)
    extra = (max(stride - kh, 0), max(stride - kw, 0))
    y = F.conv_transpose2d(nchw(x), weight, torch.from_numpy(bias), stride=stride,
                           output_padding=extra)
    np.testing.assert_allclose(nhwc(y), keras_output(layer, x), rtol=0, atol=1e-5)


TRANSPOSE_CASES = [  # in, out, groups, kernel, stride, padding, output_padding, dilation
    (4, 6, 2, (3, 2), 1, (1, 0), 0, (2, 1)),
    (3, 3, 3, 3, 2, 1, 1, 1),
    (6, 4, 2, 4, 3, 2, (1, 2), 1),
    (2, 5, 1, (2, 3), (2, 1), (0, 1), 0, (1, 2)),
]


@pytest.mark.parametrize("c_in, c_out, groups, k, stride, padding, output_padding, dilation",
                         TRANSPOSE_CASES)
def test_conv_transpose_equals_conv2d_with_converted_weight(
        c_in, c_out, groups, k, stride, padding, output_padding, dilation):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(c_in, c_out, k, stride, padding, output_padding, groups,
                               bias=False, dilation=dilation).double()
    x = torch.randn(2, c_in, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
    pair = nn.modules.utils._pair
    (kh, kw), (sh, sw), (ph, pw), (oh, ow), (dh, dw) = map(
        pair, (k, stride, padding, output_padding, dilation))
    # stride - 1 zeros between neighbouring pixels, per axis
    spread_x = x.new_zeros(2, c_in, (x.shape[2] - 1) * sh + 1, (x.shape[3] - 1) * sw + 1)
    spread_x[:, :, ::sh, ::sw] = x
    top, left = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    padded = F.pad(spread_x, (left, left + ow, top, top + oh))
    weight = conv_transpose_to_conv_weight(layer.weight.detach(), groups)
    assert weight.shape == (c_out, c_in // groups, kh, kw)
    y = F.conv2d(padded, weight, dilation=(dh, dw), groups=groups)
    assert y.shape == expected.shape
    assert np.all((y - expected).abs().numpy()
                  <= conv_tolerance(padded, weight, dilation=(dh, dw), groups=groups))


def test_conv_transpose_conversion_is_its_own_inverse_and_not_the_identity():
    weight = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    converted = conv_transpose_to_conv_weight(weight, groups=3)
    assert converted.shape == (6, 2, 3, 3) and not torch.equal(converted, weight)
    assert torch.equal(conv_transpose_to_conv_weight(converted, groups=3), weight)


def test_depthwise_conv_transpose_conversion_is_a_flip():
    weight = torch.randn(5, 1, 3, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(conv_transpose_to_conv_weight(weight, groups=5), weight.flip(-2, -1))


@pytest.mark.parametrize("call, error, message", [
    (lambda: keras_depthwise_to_torch(np.zeros((3, 3, 4))), ValueError,
     r"4-D shape \(kH, kW, C, M\).*got shape \(3, 3, 4\)"),
    (lambda: keras_depthwise_to_torch(np.zeros((3, 3, 0, 2))), ValueError, "size >= 1"),
    (lambda: keras_depthwise_to_torch([[1.0]]), TypeError, "tensor or a NumPy array, got list"),
    (lambda: torch_depthwise_to_keras(torch.zeros(8, 2, 3, 3), 4), ValueError,
     r"\(C\*M, 1, kH, kW\)"),
    (lambda: torch_depthwise_to_keras(torch.zeros(6, 1, 3, 3), 4), ValueError, "C=4"),
    (lambda: keras_conv2d_to_torch(np.zeros((3, 3, 4))), ValueError, r"\(kH, kW, C/G, O\)"),
    (lambda: keras_conv2d_transpose_to_torch(np.zeros((3, 4))), ValueError,
     r"\(kH, kW, O, C\)"),
    (lambda: conv_transpose_to_conv_weight(torch.zeros(6, 2, 3, 3), groups=4), ValueError,
     "groups=4 must divide the weight's first axis"),
    (lambda: conv_transpose_to_conv_weight(torch.zeros(6, 2, 3, 3), groups=0), ValueError,
     "groups"),
    (lambda: conv_transpose_to_conv_weight(torch.zeros(6, 2, 3), groups=1), ValueError,
     r"\(C, O/G, kH, kW\)"),
])
def test_wrong_layouts_are_refused_with_the_expected_layout(call, error, message):
    with pytest.raises(error, match=message):
        call()
