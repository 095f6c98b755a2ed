"""One validation boundary (issue 15): public functions refuse bad input.

A table of bad calls over the whole public API: each must raise the ValueError
or TypeError of its row, whose message names the argument and shows what came.
No framework error, no assert, no silent acceptance. Plus the wrong answers the
issue found, now right, and valid values the old checks refused.
"""
import re

import numpy as np
import pytest
import torch

import d2ldw
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")

nd = d2l_mx.nd


def zeros(*shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


def tzeros(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def placeholder(*shape, dtype="float32", name="X"):
    return te.placeholder(shape, dtype, name=name)


def bias_stage(y_shape, b_shape, b_dtype="float32"):
    return d2l_tvm.add_bias(placeholder(*y_shape, name="Y"),
                            placeholder(*b_shape, dtype=b_dtype, name="B"))


def te_run(inputs, x_shape=(1, 3, 8, 8), w_shape=(4, 3, 3, 3), **kwargs):
    X, K = placeholder(*x_shape), placeholder(*w_shape, name="K")
    return d2l_tvm.build_and_run([X, K, d2l_tvm.conv2d(X, K, **kwargs)], inputs)


_NETWORKS = {}


def network(name="v1"):
    """MobileNets built once for the table (building one takes a while)."""
    if name not in _NETWORKS:
        _NETWORKS[name] = getattr(d2l_torch, f"mobilenet_{name}")()
    return _NETWORKS[name]


def separable(input):
    return d2l_torch.SeparableConv2d(4, 6, 3)(input)


X, W = (1, 3, 8, 8), (4, 3, 3, 3)
geometry = d2ldw.conv2d_geometry

# (id, call, exception, what the message must hold: the argument, what came)
BAD_CALLS = [
    # conv_out_size and conv2d_geometry: types, bools, signs, zero sizes
    ("conv_out_size bool padding",
     lambda: d2ldw.conv_out_size(224, 7, p=True),
     TypeError, ["padding", "True"]),
    ("conv_out_size float kernel",
     lambda: d2ldw.conv_out_size(224, 7.0),
     TypeError, ["kernel size k", "7.0"]),
    ("conv_out_size padding triple",
     lambda: d2ldw.conv_out_size(224, 7, p=(1, 2, 3)),
     ValueError, ["padding p", "(1, 2, 3)"]),
    ("conv_out_size negative length",
     lambda: d2ldw.conv_out_size(-1, 3),
     ValueError, ["input length n", "-1"]),
    ("conv_out_size bool stride",
     lambda: d2ldw.conv_out_size(9, 3, s=True),
     TypeError, ["stride s", "True"]),
    ("geometry zero input channels",
     lambda: geometry((1, 0, 5, 5), (4, 2, 3, 3)),
     ValueError, ["input sizes", "(1, 0, 5, 5)"]),
    ("geometry zero output channels",
     lambda: geometry(X, (0, 3, 3, 3)),
     ValueError, ["weight sizes", "(0, 3, 3, 3)"]),
    ("geometry zero height",
     lambda: geometry((1, 3, 0, 5), (4, 3, 1, 1), padding=1),
     ValueError, ["input sizes", "(1, 3, 0, 5)"]),
    ("geometry zero kernel",
     lambda: geometry(X, (4, 3, 0, 3)),
     ValueError, ["weight sizes", "(4, 3, 0, 3)"]),
    ("geometry negative batch",
     lambda: geometry((-1, 3, 8, 8), W),
     ValueError, ["input sizes", "(-1, 3, 8, 8)"]),
    ("geometry float size",
     lambda: geometry((1, 3, 8.0, 8), W),
     TypeError, ["input shape", "8.0"]),
    ("geometry bool size",
     lambda: geometry((1, True, 8, 8), (4, 1, 3, 3)),
     TypeError, ["input shape", "True"]),
    ("geometry stride=True",
     lambda: geometry(X, W, stride=True),
     TypeError, ["stride", "True"]),
    ("geometry padding=True",
     lambda: geometry(X, W, padding=True),
     TypeError, ["padding", "True"]),
    ("geometry dilation with a bool",
     lambda: geometry(X, W, dilation=(1, False)),
     TypeError, ["dilation", "False"]),
    ("geometry groups=True",
     lambda: geometry(X, W, groups=True),
     ValueError, ["groups", "True"]),
    ("geometry padding string",
     lambda: geometry(X, W, padding="full"),
     ValueError, ["padding", "'full'"]),
    ("geometry bias length",
     lambda: geometry(X, W, bias_shape=(3,)),
     ValueError, ["bias", "(3,)"]),
    ("conv2d_cost negative channels",
     lambda: d2ldw.conv2d_cost(X, (-4, 3, 3, 3)),
     ValueError, ["weight sizes", "-4"]),
    ("conv2d_cost negative size",
     lambda: d2ldw.conv2d_cost((1, 3, -8, 8), W),
     ValueError, ["input sizes", "-8"]),
    ("conv2d_cost bias=1",
     lambda: d2ldw.conv2d_cost(X, W, bias=1),
     TypeError, ["bias", "1"]),
    ("depthwise_multiplier negative",
     lambda: d2ldw.depthwise_multiplier(3, (-3, 1, 3, 3)),
     ValueError, ["depthwise weight", "(-3, 1, 3, 3)"]),
    ("depthwise_multiplier bool channels",
     lambda: d2ldw.depthwise_multiplier(True, (3, 1, 3, 3)),
     TypeError, ["in_channels", "True"]),
    ("depthwise_multiplier float channels",
     lambda: d2ldw.depthwise_multiplier(3.0, (3, 1, 3, 3)),
     TypeError, ["in_channels", "3.0"]),
    ("separable_geometry pointwise",
     lambda: d2ldw.separable_geometry(X, (3, 1, 3, 3), (4, 2, 1, 1)),
     ValueError, ["pointwise weight", "(4, 2, 1, 1)"]),
    ("channel_connections groups=True",
     lambda: d2ldw.channel_connections(4, 4, True),
     ValueError, ["groups", "True"]),
    ("check_memory max_bytes=0",
     lambda: d2ldw.check_memory(10, "x", max_bytes=0),
     ValueError, ["max_bytes", "0"]),
    ("check_memory max_bytes=1.5",
     lambda: d2ldw.check_memory(10, "x", max_bytes=1.5),
     TypeError, ["max_bytes", "1.5"]),
    ("gamma n=True",
     lambda: d2ldw.gamma(True, "float32"),
     ValueError, ["n", "True"]),
    ("ulp_distance mixed dtypes",
     lambda: d2ldw.ulp_distance(zeros(2), zeros(2, dtype="float64")),
     TypeError, ["a and b", "float32 and float64"]),
    ("get_conv_data negative batch",
     lambda: d2ldw.get_conv_data(3, 4, 8, 3, batch=-1),
     ValueError, ["batch", "-1"]),
    ("get_conv_data bool size", lambda: d2ldw.get_conv_data(3, 4, True, 3),
     TypeError, ["height", "True"]),
    ("get_conv_data size triple",
     lambda: d2ldw.get_conv_data(3, 4, (8, 8, 8), 3),
     ValueError, ["size", "(8, 8, 8)"]),
    ("get_conv_data zero channels", lambda: d2ldw.get_conv_data(0, 4, 8, 3),
     ValueError, ["in_channels", "got 0"]),
    ("get_conv_data huge", lambda: d2ldw.get_conv_data(3, 4, 40000, 3),
     ValueError, ["the arrays would need", "GiB"]),
    # d2ldw.numpy.conv2d
    ("numpy zero channels",
     lambda: d2l_np.conv2d(zeros(1, 0, 7, 8), zeros(6, 0, 3, 3)),
     ValueError, ["input sizes", "(1, 0, 7, 8)"]),
    ("numpy torch input",
     lambda: d2l_np.conv2d(tzeros(*X), zeros(*W)),
     TypeError, ["x must be a NumPy array", "torch.Tensor"]),
    ("numpy MXNet weight",
     lambda: d2l_np.conv2d(zeros(*X), nd.zeros(W)),
     TypeError, ["w must be a NumPy array", "MXNet NDArray"]),
    ("numpy bool input",
     lambda: d2l_np.conv2d(zeros(*X, dtype=bool), zeros(*W)),
     TypeError, ["x must hold real numbers", "bool"]),
    ("numpy object bias",
     lambda: d2l_np.conv2d(zeros(*X), zeros(*W), np.array([None] * 4)),
     TypeError, ["b must hold real numbers", "object"]),
    ("numpy bias length",
     lambda: d2l_np.conv2d(zeros(*X), zeros(*W), zeros(3)),
     ValueError, ["bias", "(3,)"]),
    ("numpy stride=True",
     lambda: d2l_np.conv2d(zeros(*X), zeros(*W), stride=True),
     TypeError, ["stride", "True"]),
    ("numpy padding=20000",
     lambda: d2l_np.conv2d(zeros(*X), zeros(*W), padding=20000),
     ValueError, ["the padded input and the output would need", "GiB",
                  "max_bytes"]),
    ("numpy max_bytes=-1",
     lambda: d2l_np.conv2d(zeros(*X), zeros(*W), max_bytes=-1),
     ValueError, ["max_bytes", "-1"]),
    # d2ldw.torch
    ("unfold NumPy input",
     lambda: d2l_torch.conv2d_unfold(zeros(*X), tzeros(*W)),
     TypeError, ["input and weight must be tensors", "ndarray"]),
    ("unfold NumPy bias",
     lambda: d2l_torch.conv2d_unfold(tzeros(*X), tzeros(*W), zeros(4)),
     TypeError, ["bias must be a torch.Tensor", "NumPy array"]),
    ("unfold mixed dtypes",
     lambda: d2l_torch.conv2d_unfold(tzeros(*X),
                                     tzeros(*W, dtype=torch.float64)),
     TypeError, ["one dtype", "torch.float32", "torch.float64"]),
    ("unfold zero channels",
     lambda: d2l_torch.conv2d_unfold(tzeros(1, 0, 7, 8), tzeros(6, 0, 3, 3)),
     ValueError, ["input sizes", "(1, 0, 7, 8)"]),
    ("unfold padding=20000",
     lambda: d2l_torch.conv2d_unfold(tzeros(*X), tzeros(*W), padding=20000),
     ValueError, ["its windows", "GiB", "max_bytes"]),
    ("depthwise unfold padding=20000",
     lambda: d2l_torch.depthwise_conv2d_unfold(tzeros(*X), tzeros(3, 1, 3, 3),
                                               padding=20000),
     ValueError, ["its windows", "GiB", "max_bytes"]),
    ("depthwise unfold zero channels",
     lambda: d2l_torch.depthwise_conv2d_unfold(tzeros(1, 0, 7, 8),
                                               tzeros(0, 1, 3, 3)),
     ValueError, ["input channel", "got 0"]),
    ("SeparableConv2d wrong channels",
     lambda: separable(tzeros(1, 5, 8, 8)),
     ValueError, ["input must be (N, 4, H, W)", "(1, 5, 8, 8)"]),
    ("SeparableConv2d wrong dtype",
     lambda: separable(tzeros(1, 4, 8, 8, dtype=torch.float64)),
     TypeError, ["input float64", "weights float32"]),
    ("SeparableConv2d NumPy input",
     lambda: separable(zeros(1, 4, 8, 8)),
     TypeError, ["input must be a torch.Tensor", "NumPy array"]),
    ("SeparableConv2d input too small",
     lambda: separable(tzeros(1, 4, 2, 2)),
     ValueError, ["along the height", "padded input 2"]),
    ("count_cost wrong channels",
     lambda: d2l_torch.count_cost(network(), (4, 32, 32)),
     ValueError, ["input_size (4, 32, 32)", "4 channels"]),
    ("count_cost huge input",
     lambda: d2l_torch.count_cost(network(), (3, 20000, 20000)),
     ValueError, ["(3, 20000, 20000)", "GiB", "max_bytes"]),
    ("count_cost bool size",
     lambda: d2l_torch.count_cost(network(), (3, True, 32)),
     ValueError, ["input_size", "(3, True, 32)"]),
    ("count_cost no model",
     lambda: d2l_torch.count_cost("net", (3, 32, 32)),
     TypeError, ["model", "str"]),
    ("calibrate_batchnorm empty batch",
     lambda: d2l_torch.calibrate_batchnorm(network(), tzeros(0, 3, 32, 32)),
     ValueError, ["images", "(0, 3, 32, 32)"]),
    ("calibrate_batchnorm NumPy images",
     lambda: d2l_torch.calibrate_batchnorm(network(), zeros(2, 3, 32, 32)),
     TypeError, ["images must be a torch.Tensor", "NumPy array"]),
    ("calibrate_batchnorm wrong channels",
     lambda: d2l_torch.calibrate_batchnorm(network(), tzeros(2, 4, 32, 32)),
     ValueError, ["images of shape (2, 4, 32, 32)", "4 channels"]),
    ("calibrate_batchnorm float64 images",
     lambda: d2l_torch.calibrate_batchnorm(
         network(), tzeros(2, 3, 32, 32, dtype=torch.float64)),
     TypeError, ["images float64", "float32"]),
    ("mobilenet_v1 width 0",
     lambda: d2l_torch.mobilenet_v1(width_multiplier=0),
     ValueError, ["width_multiplier", "got 0"]),
    ("mobilenet_v1 width NaN",
     lambda: d2l_torch.mobilenet_v1(width_multiplier=float("nan")),
     ValueError, ["width_multiplier", "nan"]),
    ("mobilenet_v1 huge width",
     lambda: d2l_torch.mobilenet_v1(width_multiplier=100),
     ValueError, ["width 100", "GiB"]),
    ("mobilenet_v1 num_classes 0",
     lambda: d2l_torch.mobilenet_v1(num_classes=0),
     ValueError, ["num_classes", "got 0"]),
    ("mobilenet_v2 width True",
     lambda: d2l_torch.mobilenet_v2(width_multiplier=True),
     ValueError, ["width_multiplier", "True"]),
    ("mobilenet_v2 num_classes 2.5",
     lambda: d2l_torch.mobilenet_v2(num_classes=2.5),
     TypeError, ["num_classes", "2.5"]),
    ("mobilenet_v1_full_conv width -1",
     lambda: d2l_torch.mobilenet_v1_full_conv(width_multiplier=-1),
     ValueError, ["width_multiplier", "-1"]),
    # d2ldw.mxnet
    ("mxnet mixed dtypes",
     lambda: d2l_mx.conv2d(nd.zeros(X), nd.zeros(W, dtype="float64")),
     TypeError, ["one dtype", "x float32", "w float64"]),
    ("mxnet NumPy input",
     lambda: d2l_mx.conv2d(zeros(*X), nd.zeros(W)),
     TypeError, ["x must be a MXNet NDArray", "NumPy array"]),
    ("mxnet torch bias",
     lambda: d2l_mx.conv2d(nd.zeros(X), nd.zeros(W), tzeros(4)),
     TypeError, ["b must be a MXNet NDArray", "torch.Tensor"]),
    ("mxnet integer dtype",
     lambda: d2l_mx.conv2d(nd.zeros(X, dtype="int32"),
                           nd.zeros(W, dtype="int32")),
     TypeError, ["floating dtype", "int32"]),
    ("mxnet bias length",
     lambda: d2l_mx.conv2d(nd.zeros(X), nd.zeros(W), nd.zeros(3)),
     ValueError, ["bias", "(3,)"]),
    ("mxnet padding=20000",
     lambda: d2l_mx.conv2d(nd.zeros(X), nd.zeros(W), padding=20000),
     ValueError, ["the padded input and the output would need", "GiB"]),
    ("mxnet zero channels",
     lambda: d2l_mx.conv2d(nd.array(zeros(1, 0, 7, 8)),
                           nd.array(zeros(6, 0, 3, 3))),
     ValueError, ["input sizes", "(1, 0, 7, 8)"]),
    # d2ldw.tvm
    ("te conv2d on NumPy arrays",
     lambda: d2l_tvm.conv2d(zeros(*X), zeros(*W)),
     TypeError, ["X must be a TVM te.Tensor", "NumPy array"]),
    ("te group_conv2d on a torch weight",
     lambda: d2l_tvm.group_conv2d(placeholder(*X), tzeros(*W)),
     TypeError, ["K must be a TVM te.Tensor", "torch.Tensor"]),
    ("te conv2d mixed dtypes",
     lambda: d2l_tvm.conv2d(placeholder(*X),
                            placeholder(*W, dtype="float64", name="K")),
     TypeError, ["X float32", "K float64"]),
    ("te depthwise integer dtype",
     lambda: d2l_tvm.depthwise_conv2d(
         placeholder(*X, dtype="int32"),
         placeholder(3, 1, 3, 3, dtype="int32", name="K")),
     TypeError, ["floating dtype", "int32"]),
    ("te conv2d zero channels",
     lambda: d2l_tvm.conv2d(placeholder(1, 0, 7, 8),
                            placeholder(6, 0, 3, 3, name="K")),
     ValueError, ["input sizes", "(1, 0, 7, 8)"]),
    ("te add_bias short B",
     lambda: bias_stage((1, 4, 5, 5), (3,)),
     ValueError, ["B must have shape (O,) = (4,)", "got (3,)"]),
    ("te add_bias 2-D B",
     lambda: bias_stage((1, 4, 5, 5), (4, 1)),
     ValueError, ["B must have shape", "got (4, 1)"]),
    ("te add_bias float64 B",
     lambda: bias_stage((1, 4, 5, 5), (4,), "float64"),
     TypeError, ["Y float32", "B float64"]),
    ("te add_bias 3-D Y",
     lambda: bias_stage((4, 5, 5), (4,)),
     ValueError, ["Y must be 4-D", "(4, 5, 5)"]),
    ("te add_bias NumPy B",
     lambda: d2l_tvm.add_bias(placeholder(1, 4, 5, 5), zeros(4)),
     TypeError, ["B must be a TVM te.Tensor", "NumPy array"]),
    ("build_and_run torch input",
     lambda: te_run([zeros(*X), tzeros(*W)]),
     TypeError, ["input 1 (K)", "torch.Tensor"]),
    ("build_and_run wrong shape",
     lambda: te_run([zeros(1, 3, 8, 9), zeros(*W)]),
     ValueError, ["input 0 (X)", "(1, 3, 8, 9)"]),
    ("build_and_run wrong dtype",
     lambda: te_run([zeros(*X, dtype="float64"), zeros(*W)]),
     ValueError, ["input 0 (X)", "float64"]),
    ("build_and_run huge output",
     lambda: te_run([zeros(*X), zeros(*W)], padding=20000),
     ValueError, ["its windows", "GiB", "max_bytes"]),
    ("build_and_run too few inputs",
     lambda: te_run([zeros(*X)]),
     ValueError, ["expected 2 input arrays", "got 1"]),
    ("build_and_run NumPy as a tensor",
     lambda: d2l_tvm.build_and_run([zeros(*X), placeholder(*X)], []),
     TypeError, ["tensors[0]", "NumPy array"]),
    ("te interleaved accumulators=True",
     lambda: d2l_tvm.depthwise_conv2d_interleaved(
         placeholder(*X), placeholder(3, 1, 3, 3, name="K"), accumulators=True),
     ValueError, ["accumulators", "True"]),
    ("to_nchwc channels",
     lambda: d2l_tvm.to_nchwc(zeros(1, 5, 4, 4), 4),
     ValueError, ["channels (5)", "lanes (4)"]),
    # issue 24: the secondary API
    ("to_nchwc torch input",
     lambda: d2l_tvm.to_nchwc(tzeros(1, 8, 4, 4), 4),
     TypeError, ["x must be a NumPy array", "torch.Tensor"]),
    ("to_nchwc 3-D input",
     lambda: d2l_tvm.to_nchwc(zeros(8, 4, 4), 4),
     ValueError, ["x must be 4-D (N, C, H, W)", "(8, 4, 4)"]),
    ("from_nchwc NCHW input",
     lambda: d2l_tvm.from_nchwc(zeros(1, 8, 4, 4)),
     ValueError, ["y must be 5-D (N, C/x, H, W, x)", "(1, 8, 4, 4)"]),
    ("depthwise_weight_to_nchwc lanes True",
     lambda: d2l_tvm.depthwise_weight_to_nchwc(zeros(8, 1, 3, 3), True),
     TypeError, ["lanes", "True"]),
    ("depthwise_conv2d_nchwc NumPy X",
     lambda: d2l_tvm.depthwise_conv2d_nchwc(zeros(1, 2, 6, 6, 4),
                                            placeholder(2, 3, 3, 4, name="K")),
     TypeError, ["X must be a TVM te.Tensor", "NumPy array"]),
    ("time_interleaved settle NaN",
     lambda: d2ldw.time_interleaved({"f": lambda: None},
                                    settle_seconds=float("nan")),
     ValueError, ["settle_seconds", "nan"]),
    ("time_interleaved min_seconds True",
     lambda: d2ldw.time_interleaved({"f": lambda: None}, min_seconds=True),
     TypeError, ["min_seconds", "True"]),
    ("time_interleaved timer None",
     lambda: d2ldw.time_interleaved({"f": lambda: None}, timer=None),
     TypeError, ["timer", "NoneType"]),
    ("SeparableConv2d stride 0",
     lambda: d2l_torch.SeparableConv2d(4, 6, 3, stride=0),
     ValueError, ["stride", "got 0"]),
    ("SeparableConv2d kernel 2.5",
     lambda: d2l_torch.SeparableConv2d(4, 6, 2.5),
     TypeError, ["kernel_size", "2.5"]),
    ("mxnet SeparableConv2D padding 'same'",
     lambda: d2l_mx.SeparableConv2D(4, 6, 3, padding="same"),
     ValueError, ["padding", "'same'"]),
    ("mxnet SeparableConv2D dilation -1",
     lambda: d2l_mx.SeparableConv2D(4, 6, 3, dilation=-1),
     ValueError, ["dilation", "-1"]),
    ("DepthwiseConv2dUnfold pointwise weight",
     lambda: d2l_torch.DepthwiseConv2dUnfold(tzeros(6, 4, 1, 1)),
     ValueError, ["(C*M, 1, kH, kW)", "(6, 4, 1, 1)"]),
    ("DepthwiseConv2dUnfold stride 0",
     lambda: d2l_torch.DepthwiseConv2dUnfold(tzeros(3, 1, 3, 3), stride=0),
     ValueError, ["stride", "got 0"]),
    ("replace_depthwise no model",
     lambda: d2l_torch.replace_depthwise("net", lambda conv: conv),
     TypeError, ["model must be an nn.Module", "str"]),
    ("replace_depthwise make_layer None",
     lambda: d2l_torch.replace_depthwise(network(), None),
     TypeError, ["make_layer", "NoneType"]),
    ("calibrate_batchnorm infinite images",
     lambda: d2l_torch.calibrate_batchnorm(
         network(), torch.full((2, 3, 32, 32), float("inf"))),
     ValueError, ["images must be finite", "6144 infinite"]),
    ("conv_error_bound infinite w",
     lambda: d2ldw.conv_error_bound(zeros(*X), np.full(W, np.inf, "float32")),
     ValueError, ["w has 0 NaN and 108 infinite", "finite inputs"]),
    ("separable_error_bound NaN x",
     lambda: d2ldw.separable_error_bound(
         np.full(X, np.nan, "float32"), zeros(*W), zeros(3, 1, 3, 3),
         zeros(4, 3, 1, 1)),
     ValueError, ["x has 192 NaN", "finite inputs"]),
    ("make_divisible NaN",
     lambda: d2l_torch.make_divisible(float("nan")),
     ValueError, ["value must be finite", "nan"]),
    ("make_divisible divisor 2.5",
     lambda: d2l_torch.make_divisible(37, 2.5),
     TypeError, ["divisor", "2.5"]),
    ("LayerScale init NaN",
     lambda: d2l_torch.LayerScale(4, init=float("nan")),
     ValueError, ["init must be finite", "nan"]),
    ("LayerNorm2d eps -1",
     lambda: d2l_torch.LayerNorm2d(4, eps=-1.0),
     ValueError, ["eps must be finite and >= 0", "-1.0"]),
    ("ConvNeXtBlock expansion 0",
     lambda: d2l_torch.ConvNeXtBlock(4, expansion=0),
     ValueError, ["expansion must be >= 1", "got 0"]),
    ("ReparamLargeKernel stride 0",
     lambda: d2l_torch.ReparamLargeKernel(4, 7, 3, stride=0),
     ValueError, ["stride must be >= 1", "got 0"]),
    ("count_cost elementwise not types",
     lambda: d2l_torch.count_cost(network(), (3, 32, 32), elementwise=3),
     TypeError, ["elementwise must be a tuple of module types", "3"]),
]


@pytest.mark.parametrize("name, call, error, fragments", BAD_CALLS,
                         ids=[row[0] for row in BAD_CALLS])
def test_bad_call_is_refused_naming_the_argument_and_what_came(
        name, call, error, fragments):
    with pytest.raises(Exception) as caught:
        call()
    # exactly the documented type: a framework's RuntimeError, an IndexError,
    # an assert or a ZeroDivisionError reaching the user fails here
    got = caught.value
    assert type(got) is error, f"{type(got).__name__}: {got}"
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message.strip() or "Traceback" not in message


def test_the_table_covers_every_implementation_and_every_kind_of_bad_input():
    names = " ".join(row[0] for row in BAD_CALLS)
    for part in ("numpy", "unfold", "mxnet", "te ", "build_and_run",
                 "add_bias", "SeparableConv2d", "count_cost",
                 "calibrate_batchnorm", "mobilenet"):
        assert part in names
    assert len(BAD_CALLS) >= 80


# Issue 24: each case the new user met, with the exact message it now gives.
ISSUE_24 = [
    (lambda: d2l_torch.DepthwiseConv2dUnfold(zeros(3, 1, 3, 3)),
     TypeError, "weight must be a torch.Tensor, got a NumPy array"),
    (lambda: d2l_torch.replace_depthwise(network(),
                                         d2l_torch.DepthwiseConv2dUnfold),
     TypeError, "make_layer must be a function taking the depthwise nn.Conv2d "
     "and returning its replacement, got the class DepthwiseConv2dUnfold; pass "
     "DepthwiseConv2dUnfold.from_conv"),
    (lambda: d2l_tvm.depthwise_conv2d_nchwc(placeholder(1, 8, 6, 6),
                                            placeholder(8, 1, 3, 3, name="K")),
     ValueError, "X must be 5-D (N, C/x, H, W, x), got shape (1, 8, 6, 6)"),
    (lambda: d2l_tvm.to_nchwc(zeros(1, 8, 4, 4), lanes=0),
     ValueError, "lanes must be >= 1, got 0"),
    (lambda: d2l_torch.make_divisible(37, divisor=0),
     ValueError, "divisor must be >= 1, got 0"),
    (lambda: d2ldw.time_interleaved({"f": lambda: None},
                                    min_seconds=float("inf")),
     ValueError, "min_seconds must be finite and >= 0, got inf"),
    (lambda: d2l_torch.SeparableConv2d(4, 6, 3, multiplier=-1),
     ValueError, "multiplier must be >= 1, got -1"),
    (lambda: d2l_mx.SeparableConv2D(4, 6, 3, multiplier=0),
     ValueError, "multiplier must be >= 1, got 0"),
    (lambda: d2ldw.conv_error_bound(np.full((1, 2, 4, 4), np.nan, "float32"),
                                    np.ones((2, 2, 3, 3), "float32")),
     ValueError, "x has 32 NaN and 0 infinite values (first at index "
     "(0, 0, 0, 0)); a rounding-error bound needs finite inputs"),
    (lambda: d2l_torch.calibrate_batchnorm(
        d2l_torch.mobilenet_v1(), torch.full((2, 3, 32, 32), float("nan"))),
     ValueError, "images must be finite, got 6144 NaN and 0 infinite values: "
     "BatchNorm statistics of them would be NaN"),
    (lambda: pytest.importorskip("d2ldw.widgets").ConvExplorer(kernel=5),
     TypeError, "ConvExplorer got an unexpected keyword 'kernel' (did you mean "
     "kernel_size?); its keywords are size, kernel_size, stride, padding, "
     "dilation, in_channels, out_channels, groups, multiplier, depthwise"),
]


@pytest.mark.parametrize("call, error, message", ISSUE_24,
                         ids=[f"issue24-{i}" for i in range(len(ISSUE_24))])
def test_the_issue_24_cases_give_their_exact_message(call, error, message):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error and str(caught.value) == message


def test_convnext_is_counted_without_being_told_about_layer_scale():
    """Issue 24: count_cost counted every model but the package's own ConvNeXt-T."""
    model = d2l_torch.convnext_tiny()
    cost = d2l_torch.count_cost(model, (3, 32, 32))
    assert cost.params + cost.bn_params == sum(p.numel() for p in model.parameters())


def test_replace_depthwise_counts_only_layers_it_changed():
    """Issue 24: a make_layer that returns the layer unchanged replaced nothing."""
    model = d2l_torch.mobilenet_v1(0.25)
    assert d2l_torch.replace_depthwise(model, lambda conv: conv) == 0
    swap = d2l_torch.DepthwiseConv2dUnfold.from_conv
    assert d2l_torch.replace_depthwise(model, swap) == 13
    assert d2l_torch.replace_depthwise(model, swap) == 0  # none left to swap


def test_the_new_checkers_accept_what_they_should():
    assert d2l_torch.make_divisible(np.float32(37.5), np.int64(8)) == 40
    assert d2l_torch.make_divisible(0) == 8
    t = d2ldw.time_interleaved({"f": lambda: None}, repeat=1, min_seconds=0,
                               settle_seconds=np.float64(0))
    assert t["f"].calls_per_sample == 1
    assert d2l_tvm.to_nchwc(zeros(1, 8, 2, 2), np.int64(4)).shape == (1, 2, 2, 2, 4)
    layer = d2l_torch.SeparableConv2d(4, 6, (3, 1), padding="same", multiplier=2)
    assert layer(tzeros(1, 4, 5, 5)).shape == (1, 6, 5, 5)


# Wrong answers and refused valid inputs the issue found, now right.

def test_round_to_bfloat16_keeps_nan_and_inf():
    patterns = np.array([0x7F800001, 0xFFFFFFFF, 0x7FC00000, 0xFF800001,
                         0x7F800000, 0xFF800000, 0x3F800000, 0x7F7FFFFF],
                        dtype=np.uint32)
    rounded = d2ldw.round_to_bfloat16(patterns.view(np.float32))
    assert np.isnan(rounded[:4]).all()
    assert (np.signbit(rounded[:4]) == [False, True, False, True]).all()
    assert (rounded.view(np.uint32)[:4] & 0xFFFF == 0).all()  # bfloat16 numbers
    assert rounded[4] == np.inf and rounded[5] == -np.inf and rounded[6] == 1.0
    assert rounded[7] == np.inf  # the largest float32 rounds up to inf
    finite = torch.from_numpy(patterns[4:].view(np.float32))
    expected = finite.bfloat16().float().numpy()
    np.testing.assert_array_equal(rounded[4:], expected)


def test_numpy_integers_are_accepted_where_ints_are():
    assert d2ldw.conv_out_size(224, 7, p=np.int64(3), s=2) == 112
    assert d2ldw.conv_out_size(np.int32(224), np.int64(7), (np.int64(3), 3),
                               np.int8(2)) == 112
    g = d2ldw.conv2d_geometry(np.array(X), np.array(W), stride=np.int64(2),
                              padding=(np.int32(1), 1), groups=np.int64(1))
    assert g.output_shape == (1, 4, 4, 4) and type(g.out_size[0]) is int
    size = (3, np.int64(32), np.int64(32))
    assert d2l_torch.count_cost(network(), size) == d2l_torch.count_cost(
        network(), (3, 32, 32))


def test_an_empty_batch_is_answered_as_pytorch_does():
    x, w = zeros(0, 3, 7, 8), np.ones((6, 3, 3, 3), dtype=np.float32)
    expected = tuple(torch.nn.functional.conv2d(torch.from_numpy(x),
                                                torch.from_numpy(w)).shape)
    assert expected == (0, 6, 5, 6)
    assert d2l_np.conv2d(x, w).shape == expected
    unfolded = d2l_torch.conv2d_unfold(torch.from_numpy(x), torch.from_numpy(w))
    assert tuple(unfolded.shape) == expected
    assert d2l_mx.conv2d(nd.array(x), nd.array(w)).shape == expected


def test_the_memory_limit_can_be_raised_by_an_argument():
    x, w = zeros(1, 1, 4, 4), zeros(1, 1, 3, 3)
    limit = "more than the limit of 100 bytes"
    with pytest.raises(ValueError, match="would need .* " + limit):
        d2l_np.conv2d(x, w, padding=1, max_bytes=100)
    y = d2l_np.conv2d(x, w, padding=1, max_bytes=10_000)
    assert y.shape == (1, 1, 4, 4)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    with pytest.raises(ValueError, match=limit):
        d2l_torch.conv2d_unfold(xt, wt, max_bytes=100)
    cost = d2l_torch.count_cost(network(), (3, 64, 64), max_bytes=10**6)
    assert cost.mult_adds > 0
    with pytest.raises(ValueError, match="more than the limit of 1000 bytes"):
        d2l_torch.count_cost(network(), (3, 64, 64), max_bytes=1000)


def test_messages_for_positive_ints_are_unchanged():
    """The browser explorers reproduce these texts: the new checks keep them."""
    cases = [
        (lambda: d2ldw.conv_out_size(4, 5),
         "kernel extent 5 (kernel 5, dilation 1) is larger than the padded "
         "input 4 (length 4 + padding 0 + 0)"),
        (lambda: d2ldw.conv_out_size(9, 3, s=0),
         "stride s must be >= 1, got 0"),
        (lambda: geometry(X, W, stride=0),
         "stride must be >= 1 along both axes, got 0"),
        (lambda: geometry(X, (4, 2, 3, 3)),
         "input has 3 channels, so with groups=1 the weight must have shape "
         "(4, 3, 3, 3); got (4, 2, 3, 3)"),
        (lambda: geometry((1, 4, 8, 8), (6, 2, 3, 3), groups=4),
         "groups=4 must divide both in_channels=4 and out_channels=6 "
         "(valid: 1, 2)")]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
