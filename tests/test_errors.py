"""Bad arguments get a clear error naming what was expected and what came, everywhere."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from d2ldw import channel_connections, conv2d_geometry, conv_out_size, get_conv_data
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")


def call_numpy(x_shape, w_shape, **kwargs):
    return d2l_np.conv2d(np.zeros(x_shape), np.zeros(w_shape), **kwargs)


def call_unfold(x_shape, w_shape, **kwargs):
    return d2l_torch.conv2d_unfold(torch.zeros(x_shape), torch.zeros(w_shape), **kwargs)


def call_te(x_shape, w_shape, **kwargs):
    return d2l_tvm.conv2d(te.placeholder(x_shape), te.placeholder(w_shape), **kwargs)


def call_te_grouped(x_shape, w_shape, **kwargs):
    return d2l_tvm.group_conv2d(te.placeholder(x_shape), te.placeholder(w_shape), **kwargs)


def call_mxnet(x_shape, w_shape, **kwargs):
    return d2l_mx.conv2d(d2l_mx.nd.zeros(x_shape), d2l_mx.nd.zeros(w_shape), **kwargs)


IMPLEMENTATIONS = [call_numpy, call_unfold, call_te, call_te_grouped, call_mxnet]

BAD_INPUTS = [
    ("channel mismatch", (1, 3, 8, 8), (4, 2, 3, 3), {},
     ValueError, "input has 3 channels, so with groups=1 the weight must have shape (4, 3, 3, 3); "
                 "got (4, 2, 3, 3)"),
    ("3-D weight", (1, 3, 8, 8), (4, 3, 3), {},
     ValueError, "weight must be 4-D (out_channels, in_channels/groups, kH, kW), got shape (4, 3, 3)"),
    ("stride 0", (1, 3, 8, 8), (4, 3, 3, 3), dict(stride=0),
     ValueError, "stride must be >= 1 along both axes, got 0"),
    ("negative padding", (1, 3, 8, 8), (4, 3, 3, 3), dict(padding=(1, -1)),
     ValueError, "padding must be >= 0 along both axes, got (1, -1)"),
    ("'same' with stride 2", (1, 3, 8, 8), (4, 3, 3, 3), dict(padding="same", stride=2),
     ValueError, "padding='same' needs stride 1, got stride (2, 2)"),
    ("kernel larger than padded input", (1, 3, 4, 8), (4, 3, 5, 3), dict(padding=(0, 1)),
     ValueError, "along the height: kernel extent 5 (kernel 5, dilation 1) is larger than the "
                 "padded input 4 (length 4 + padding 0 + 0)"),
    ("dilated kernel larger than padded input", (1, 3, 8, 4), (4, 3, 3, 3), dict(dilation=(1, 2)),
     ValueError, "along the width: kernel extent 5 (kernel 3, dilation 2)"),
    ("unknown padding string", (1, 3, 8, 8), (4, 3, 3, 3), dict(padding="full"),
     ValueError, "padding must be 'valid', 'same', an int or a pair, got 'full'"),
    ("fractional stride", (1, 3, 8, 8), (4, 3, 3, 3), dict(stride=1.5),
     TypeError, "stride must be an int or a pair of ints, got 1.5"),
    ("stride of three values", (1, 3, 8, 8), (4, 3, 3, 3), dict(stride=(1, 1, 1)),
     ValueError, "stride must be an int or a pair of ints, got (1, 1, 1)"),
    ("2-D input", (8, 8), (4, 3, 3, 3), {},
     ValueError, "input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape (8, 8)"),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs, error, message", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_clearly(implementation, name, x_shape, w_shape, kwargs, error,
                                      message):
    with pytest.raises(error, match=re.escape(message)):
        implementation(x_shape, w_shape, **kwargs)


@pytest.mark.parametrize("implementation", [call_te, call_te_grouped], ids=lambda f: f.__name__)
def test_te_definitions_need_a_batched_input(implementation):
    with pytest.raises(ValueError, match=re.escape("X must be batched (N, C, H, W), got shape (3, 8, 8)")):
        implementation((3, 8, 8), (4, 3, 3, 3))


GROUPED_IMPLEMENTATIONS = [call_numpy, call_unfold, call_te_grouped, call_mxnet]

# Input (1, 4, 8, 8) throughout: 4 input channels.
BAD_GROUPS = [
    ("groups does not divide C_in", 3, (6, 2, 3, 3),
     "groups=3 must divide both in_channels=4 and out_channels=6 (valid: 1, 2); with groups=G "
     "the weight has shape (6, 4/G, 3, 3); the weight given, (6, 2, 3, 3), is the one for "
     "groups=2"),
    ("groups does not divide C_out", 4, (6, 1, 3, 3),
     "groups=4 must divide both in_channels=4 and out_channels=6 (valid: 1, 2); with groups=G "
     "the weight has shape (6, 4/G, 3, 3)"),
    ("zero groups", 0, (6, 2, 3, 3),
     "groups must be a positive int, got 0; with groups=G the weight has shape (6, 4/G, 3, 3); "
     "the weight given, (6, 2, 3, 3), is the one for groups=2"),
    ("negative groups", -2, (6, 2, 3, 3), "groups must be a positive int, got -2"),
    ("pair as groups", (1, 2), (6, 4, 3, 3), "groups must be a positive int, got (1, 2)"),
    ("float groups", 2.0, (6, 2, 3, 3), "groups must be a positive int, got 2.0"),
    ("weight made for groups=1", 2, (6, 4, 3, 3),
     "input has 4 channels, so with groups=2 the weight must have shape (6, 2, 3, 3); "
     "got (6, 4, 3, 3), the weight for groups=1"),
    ("depthwise weight, groups=1", 1, (8, 1, 3, 3),
     "input has 4 channels, so with groups=1 the weight must have shape (8, 4, 3, 3); "
     "got (8, 1, 3, 3), the weight for groups=4"),
    ("weight fits no groups", 2, (6, 3, 3, 3),
     "with groups=2 the weight must have shape (6, 2, 3, 3); got (6, 3, 3, 3)"),
]


@pytest.mark.parametrize("implementation", GROUPED_IMPLEMENTATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, groups, w_shape, message", BAD_GROUPS,
                         ids=[case[0] for case in BAD_GROUPS])
def test_bad_groups_name_the_expected_weight_shape(implementation, name, groups, w_shape,
                                                    message):
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        implementation((1, 4, 8, 8), w_shape, groups=groups)
    if name == "weight fits no groups":
        assert "the weight for groups" not in str(raised.value)


def test_many_valid_groups_are_abbreviated():
    with pytest.raises(ValueError, match=re.escape("(valid: 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, "
                                                   "16, 20, ...)")):
        conv2d_geometry((1, 960, 7, 7), (960, 1, 3, 3), groups=7)


def test_mxnet_groups_zero_is_an_exception_not_a_crash():
    # nd.Convolution(num_group=0) divides by zero in C++ and kills the process (Section 2.1);
    # run in a child so that a regression fails this test instead of the whole session.
    code = ("from d2ldw import mxnet as m\n"
            "try:\n"
            "    m.conv2d(m.nd.zeros((1, 4, 8, 8)), m.nd.zeros((6, 2, 3, 3)), groups=0)\n"
            "except ValueError as error:\n"
            "    print('ValueError:', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.returncode
    assert result.stdout.startswith("ValueError: groups must be a positive int, got 0")


def test_channel_connections_checks_groups():
    with pytest.raises(ValueError, match=re.escape(
            "groups must be a positive int dividing in_channels=4 and out_channels=6, got 3")):
        channel_connections(4, 6, 3)
    with pytest.raises(ValueError, match="got 0"):
        channel_connections(4, 6, 0)


def test_bias_shape_is_checked():
    message = "bias must have shape (4,) to match the weight's 4 output channels, got (3,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        d2l_np.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), b=np.zeros(3))
    with pytest.raises(ValueError, match=re.escape(message)):
        d2l_torch.conv2d_unfold(torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3), torch.zeros(3))


def test_unfold_refuses_mixed_dtypes_integers_and_non_tensors():
    with pytest.raises(TypeError, match=re.escape(
            "must share one dtype, got input torch.float32, weight torch.float64")):
        d2l_torch.conv2d_unfold(torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3,
                                                                     dtype=torch.float64))
    with pytest.raises(TypeError, match=re.escape(
            "needs a floating or complex dtype, got torch.int32: F.unfold has no integer kernel")):
        d2l_torch.conv2d_unfold(torch.zeros(1, 3, 8, 8, dtype=torch.int32),
                                torch.zeros(4, 3, 3, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="input and weight must be tensors, got ndarray"):
        d2l_torch.conv2d_unfold(np.zeros((1, 3, 8, 8)), torch.zeros(4, 3, 3, 3))


@pytest.mark.parametrize("args, message", [
    ((5, 0), "kernel size k must be >= 1, got 0"),
    ((5, 3, 0, 0), "stride s must be >= 1, got 0"),
    ((5, 3, -1), "padding must be >= 0, got -1"),
    ((2, 3), "kernel extent 3 (kernel 3, dilation 1) is larger than the padded input 2"),
])
def test_conv_out_size_refuses_impossible_windows(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        conv_out_size(*args)


def test_get_conv_data_checks_groups():
    with pytest.raises(ValueError, match="groups=4 must divide in_channels=6 and out_channels=8"):
        get_conv_data(6, 8, 5, 3, groups=4)


def test_te_build_and_run_checks_its_inputs():
    X = te.placeholder((1, 2, 5, 5), name="X")
    K = te.placeholder((3, 2, 3, 3), name="K")
    Y = d2l_tvm.conv2d(X, K)
    with pytest.raises(ValueError, match=re.escape("expected 2 input arrays, got 1")):
        d2l_tvm.build_and_run([X, K, Y], [np.zeros((1, 2, 5, 5), np.float32)])
    with pytest.raises(ValueError, match=re.escape(
            "input 1 (K) must have shape (3, 2, 3, 3) and dtype float32, got (3, 2, 3, 3) float64")):
        d2l_tvm.build_and_run([X, K, Y], [np.zeros((1, 2, 5, 5), np.float32),
                                          np.zeros((3, 2, 3, 3))])
