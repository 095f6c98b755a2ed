"""The parts of d2ldw.torch written by hand: the argument checkers the pages call
(d2ldw/torch/checks.py) and the survey of summation orders (d2ldw/torch/orders.py).

The public functions that use the checkers are tested through their callers too
(tests/test_validation.py, tests/test_count_cost.py, tests/test_separable.py); here each
checker is tested on its own, and shown to be what its caller runs.
"""
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import d2ldw
from d2ldw.torch import checks, orders
from d2ldw.torch import (SeparableConv2d, calibrate_batchnorm, check_calibration_args,
                         check_network_args, check_separable_call, check_separable_weights,
                         checked_count_args, count_cost, forward_or_refuse, mobilenet_v1,
                         separable_weight_shapes, survey_depthwise_orders)


# --- check_network_args --------------------------------------------------------------------

@pytest.mark.parametrize("width", [1.0, 0.25, 2, np.float32(0.5)])
def test_network_args_accept_positive_finite_widths(width):
    assert check_network_args(width, 10) is None


@pytest.mark.parametrize("width", [0, -1, math.inf, math.nan, True, "1.0", None])
def test_network_args_refuse_other_widths_naming_what_came(width):
    with pytest.raises(ValueError, match=f"width_multiplier must be a positive finite "
                                         f"number, got {width!r}"):
        check_network_args(width, 10)


def test_network_args_refuse_bad_class_counts_and_huge_networks():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        check_network_args(1.0, 0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        check_network_args(1.0, 10.0)
    with pytest.raises(ValueError, match="a MobileNet of width 10000 with 10 classes would "
                                         "need"):
        check_network_args(10_000, 10)
    # the network builders call it before building anything
    with pytest.raises(ValueError, match="width_multiplier must be a positive finite"):
        mobilenet_v1(-1.0)


# --- calibration ---------------------------------------------------------------------------

def small_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_calibration_args_accept_a_network_with_batchnorm_and_a_batch():
    assert check_calibration_args(small_network(), torch.zeros(2, 3, 8, 8)) is None


@pytest.mark.parametrize("model, images, error, message", [
    ("not a module", torch.zeros(2, 3, 8, 8), TypeError, "model must be an nn.Module, got str"),
    (nn.Conv2d(3, 4, 3), torch.zeros(2, 3, 8, 8), ValueError,
     "Conv2d has no BatchNorm layers to calibrate"),
    (None, np.zeros((2, 3, 8, 8), np.float32), TypeError, "images must be a torch.Tensor"),
    (None, torch.zeros(1, 3, 8, 8), ValueError, r"N >= 2 .* got shape \(1, 3, 8, 8\)"),
    (None, torch.zeros(2, 3, 8), ValueError, r"got shape \(2, 3, 8\)"),
    (None, torch.zeros(2, 3, 8, 8, dtype=torch.float64), TypeError, "images float64"),
])
def test_calibration_args_refuse_naming_what_came(model, images, error, message):
    with pytest.raises(error, match=message):
        check_calibration_args(small_network() if model is None else model, images)


def test_forward_or_refuse_runs_the_model_without_gradients_or_explains():
    model = small_network()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = forward_or_refuse(model, x, "x does not fit")
    assert torch.equal(out, model(x)) and not out.requires_grad
    with pytest.raises(ValueError, match=r"^images of shape \(2, 5, 8, 8\) do not fit "
                                         r"Sequential: .*channels") as caught:
        forward_or_refuse(model, torch.zeros(2, 5, 8, 8),
                          "images of shape (2, 5, 8, 8) do not fit")
    assert "\n" not in str(caught.value)
    # calibrate_batchnorm says the same, through the checker
    with pytest.raises(ValueError, match=r"images of shape \(2, 5, 8, 8\) do not fit"):
        calibrate_batchnorm(small_network(), torch.zeros(2, 5, 8, 8))


# --- count_cost ----------------------------------------------------------------------------

def test_count_args_return_the_size_dtype_and_types_checked():
    model = small_network().double()
    size, dtype, elementwise = checked_count_args(model, [3, np.int64(8), 8])
    assert size == (3, 8, 8) and type(size[1]) is int
    assert dtype == torch.float64 and elementwise == ()
    assert checked_count_args(nn.ReLU(), (1, 3, 8, 8))[1] == torch.float32  # no parameters
    assert checked_count_args(model, (3, 8, 8), elementwise=[nn.Conv2d])[2] == (nn.Conv2d,)


@pytest.mark.parametrize("size", [(8, 8), (1, 1, 3, 8, 8), (3, 0, 8), (3, True, 8), "3x8x8",
                                  (3, 8.0, 8)])
def test_count_args_refuse_sizes_that_are_not_three_or_four_positive_ints(size):
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\) or \(N, C, H, W\), "
                                         r"positive ints, got"):
        checked_count_args(small_network(), size)


def test_count_args_refuse_huge_inputs_unknown_parameters_and_bad_types():
    with pytest.raises(ValueError, match="an input of size"):
        checked_count_args(small_network(), (3, 8, 8), max_bytes=100)
    with pytest.raises(TypeError, match="model must be an nn.Module, got int"):
        checked_count_args(3, (3, 8, 8))
    with pytest.raises(TypeError, match="elementwise must be a tuple of module types"):
        checked_count_args(small_network(), (3, 8, 8), elementwise=("scale",))
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.PReLU())
    with pytest.raises(TypeError, match="count_cost cannot count PReLU '1', which has "
                                        "parameters"):
        checked_count_args(model, (3, 8, 8))
    assert checked_count_args(model, (3, 8, 8), elementwise=(nn.PReLU,))[0] == (3, 8, 8)
    with pytest.raises(TypeError, match="count_cost cannot count PReLU"):  # its caller
        count_cost(model, (3, 8, 8))


# --- SeparableConv2d -----------------------------------------------------------------------

def test_separable_weight_shapes_follow_the_layer():
    shapes, c, m = separable_weight_shapes(SeparableConv2d(3, 5, 3, multiplier=2))
    assert (c, m) == (3, 2)
    assert shapes == {"depthwise.weight": ((6, 1, 3, 3), "(C*M, 1, kH, kW)"),
                      "pointwise.weight": ((5, 6, 1, 1), "(O, C*M, 1, 1)"),
                      "pointwise.bias": ((5,), "(O,)")}
    shapes, _, _ = separable_weight_shapes(SeparableConv2d(3, 5, 3, bias=False))
    assert "pointwise.bias" not in shapes


def test_separable_weights_are_refused_naming_the_weight_and_a_swap():
    layer = SeparableConv2d(3, 64, 3)
    check_separable_weights(layer, {"depthwise.weight": torch.zeros(3, 1, 3, 3)})
    with pytest.raises(ValueError, match=r"depthwise.weight must have shape \(C\*M, 1, kH, kW\) "
                                         r"= \(3, 1, 3, 3\) for C=3 input channels and "
                                         r"multiplier M=1, got \(64, 3, 1, 1\); that is the "
                                         r"shape of pointwise.weight"):
        check_separable_weights(layer, {"depthwise.weight": torch.zeros(64, 3, 1, 1)})
    with pytest.raises(ValueError, match=r"got \(7,\)$"):
        check_separable_weights(layer, {"pointwise.bias": torch.zeros(7)})
    with pytest.raises(ValueError, match="built with bias=False; got a pointwise bias"):
        check_separable_weights(SeparableConv2d(3, 64, 3, bias=False),
                                {"pointwise.bias": torch.zeros(64)})


def test_separable_call_checks_the_input_and_the_current_weights():
    layer = SeparableConv2d(3, 4, 3)
    check_separable_call(layer, torch.zeros(1, 3, 8, 8))
    check_separable_call(layer, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"input must be \(N, 3, H, W\) or \(3, H, W\) for "
                                         r"this layer's 3 input channels, got shape "
                                         r"\(1, 4, 8, 8\)"):
        check_separable_call(layer, torch.zeros(1, 4, 8, 8))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        check_separable_call(layer, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="input float64"):
        check_separable_call(layer, torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError):  # too small for the 3x3 kernel
        check_separable_call(layer, torch.zeros(1, 3, 2, 2))
    layer.depthwise.weight = nn.Parameter(torch.zeros(4, 3, 1, 1))
    with pytest.raises(ValueError, match="depthwise.weight must have shape"):
        check_separable_call(layer, torch.zeros(1, 3, 8, 8))


def test_the_checkers_live_in_the_written_part_and_are_re_exported():
    for name in checks.__all__:
        assert getattr(d2ldw.torch, name) is getattr(checks, name)
        assert getattr(checks, name).__doc__
    assert d2ldw.torch.check_network_args.__module__ == "d2ldw.torch.checks"
    # still importable from the generated part that uses it
    from d2ldw.torch.models import check_network_args as from_models
    assert from_models is check_network_args


# --- the survey of summation orders --------------------------------------------------------

def test_survey_results_pair_each_case_with_the_first_kernel_logged():
    log = "\n".join([
        "CASE",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx2,forward,...",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,other,forward,...",
        'RESULT ["a", ["chain, FMA", 1.0], ["chain, no FMA", 0.5], [2, 3]]',
        "CASE",
        'RESULT ["b", ["chain, FMA", 0.9], ["chain, FMA", 1.0], [9, 9]]',
    ])
    results = list(orders._survey_results(log))
    assert results == [
        {"case": "a", "kernel": "jit_dw:avx2", "conv": ("chain, FMA", 1.0),
         "unfold": ("chain, no FMA", 0.5), "probe": [2, 3]},
        {"case": "b", "kernel": None, "conv": ("chain, FMA", 0.9),
         "unfold": ("chain, FMA", 1.0), "probe": [9, 9]},
    ]


@pytest.mark.parametrize("cases, error, message", [
    ({}, TypeError, "cases must be a non-empty dict"),
    ([(1, 3, {})], TypeError, "cases must be a non-empty dict"),
    ({"a": (1, 3)}, ValueError, r"case 'a' must be \(M, k, kwargs\), got \(1, 3\)"),
    ({"a": (1, 3, "padding=1")}, ValueError, "case 'a' must be"),
])
def test_survey_refuses_malformed_cases_before_starting_a_process(cases, error, message):
    with pytest.raises(error, match=message):
        survey_depthwise_orders(cases)
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        survey_depthwise_orders({"a": (1, 3, {})}, threads=0)


def test_survey_reports_what_F_conv2d_does_as_this_process_would_measure_it():
    """Runs one case in a child process. What the child reports is checked against the
    same measurement made here: the order F.conv2d follows (and how closely) and the probe
    row; which order that is depends on the CPU, so no particular one is asserted."""
    (result,) = survey_depthwise_orders({"3x3": (1, 3, {"padding": 1})})
    assert result["case"] == "3x3"
    assert result["kernel"] is None or isinstance(result["kernel"], str)
    assert result["conv"][0] in d2ldw.SUMMATION_ORDERS and 0 <= result["conv"][1] <= 1
    assert result["unfold"][0] in d2ldw.SUMMATION_ORDERS
    assert len(result["probe"]) == 8 and all(2 <= s <= 9 for s in result["probe"])

    from torch.nn import functional as F

    torch.set_num_threads(2)
    x, w, _ = d2ldw.get_conv_data(16, 16, 14, 3, batch=2, groups=16, seed=0)

    def conv(a, b, **kwargs):
        return F.conv2d(torch.from_numpy(a), torch.from_numpy(b), groups=16,
                        **kwargs).numpy()

    here = d2ldw.matching_order(conv(x, w, padding=1), x, w, padding=1)
    assert tuple(result["conv"]) == here
    probe = d2ldw.probe_depthwise_order(lambda a, b: conv(a, b, padding=1), x.shape,
                                        w.shape, padding=1)
    assert result["probe"] == probe[0, 1:9].tolist()


# --- issue 24: surgery, rounding and layer arguments ---------------------------------------

def test_surgery_args_refuse_a_class_a_non_callable_and_a_non_module():
    with pytest.raises(TypeError, match=r"got the class DepthwiseConv2dUnfold; pass "
                                        r"DepthwiseConv2dUnfold\.from_conv$"):
        checks.check_surgery_args(nn.Sequential(), d2ldw.torch.DepthwiseConv2dUnfold)
    checks.check_surgery_args(nn.Sequential(), nn.Identity)  # a class built from the conv
    with pytest.raises(TypeError, match="make_layer must be a function .* got int"):
        checks.check_surgery_args(nn.Sequential(), 3)
    with pytest.raises(TypeError, match="model must be an nn.Module, got list"):
        checks.check_surgery_args([], lambda conv: conv)
    checks.check_surgery_args(nn.Sequential(), lambda conv: conv)
    with pytest.raises(TypeError, match="make_layer must return an nn.Module, got str for "
                                        "layer 'b'"):
        checks.check_new_layers(["a", "b"], [nn.ReLU(), "relu"])


def test_depthwise_layer_args():
    weight = torch.zeros(6, 1, 3, 3)
    checks.check_depthwise_layer_args(weight, torch.zeros(6), 2, "valid", (1, 2))
    for bad, error, message in [
            ((weight.numpy(), None), TypeError, "weight must be a torch.Tensor"),
            ((weight, np.zeros(6)), TypeError, "bias must be a torch.Tensor"),
            ((weight.double(), torch.zeros(6)), TypeError, "weight float64, bias float32"),
            ((torch.zeros(6, 2, 3, 3), None), ValueError, r"\(C\*M, 1, kH, kW\)"),
            ((weight, torch.zeros(5)), ValueError, r"bias must have shape \(6,\)")]:
        with pytest.raises(error, match=message):
            checks.check_depthwise_layer_args(*bad, 1, 0, 1)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        checks.check_depthwise_layer_args(weight, None, 2, "same", 1)


@pytest.mark.parametrize("value, divisor, error, message", [
    (float("nan"), 8, ValueError, "value must be finite and >= 0, got nan"),
    (-1, 8, ValueError, "value must be finite and >= 0, got -1"),
    ("32", 8, TypeError, "value must be a real number, got '32' of type str"),
    (32, 0, ValueError, "divisor must be >= 1, got 0"),
    (32, True, TypeError, "divisor must be an int (bools are refused)")])
def test_divisible_args(value, divisor, error, message):
    with pytest.raises(error, match=re.escape(message)):
        checks.checked_divisible_args(value, divisor)
    assert checks.checked_divisible_args(np.float32(2.5), np.int64(4)) == (2.5, 4)


def test_calibration_refuses_non_finite_images_and_count_args_add_known_types():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    images = torch.zeros(2, 3, 4, 4)
    images[0, 0, 0, :2] = float("nan")
    images[1, 1, 1, 1] = -float("inf")
    with pytest.raises(ValueError, match="got 2 NaN and 1 infinite values"):
        check_calibration_args(model, images)
    scale = d2ldw.torch.LayerScale
    assert checked_count_args(model, (3, 4, 4), known=(scale,))[2] == (scale,)
    assert checked_count_args(model, (3, 4, 4), elementwise=[nn.PReLU, scale],
                              known=(scale,))[2] == (scale, nn.PReLU)
    with pytest.raises(TypeError, match="elementwise must be a tuple of module types"):
        checked_count_args(model, (3, 4, 4), elementwise=(int,))


# --- which kernel F.conv2d runs: oneDNN's log ----------------------------------------------

def test_onednn_exec_reads_primitive_implementation_and_formats():
    line = ("onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx2,forward_training,"
            "src:f32:a:blocked:aBcd8b::f0 wei:f32:a:blocked:Abcde8a::f0 bia:undef::undef::: "
            "dst:f32:a:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,"
            "g32mb1_ic32oc32_ih112oh112kh3sh1dh0ph1_iw112ow112kw3sw1dw0pw1,0.47")
    assert orders._onednn_exec(line) == {
        "primitive": "convolution", "implementation": "jit_dw:avx2",
        "src": "aBcd8b", "wei": "Abcde8a", "dst": "aBcd8b"}
    reorder = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,"
               "src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd16b::f0,"
               "attr-scratchpad:user,,1x32x112x112,10.4")
    assert orders._onednn_exec(reorder) == {
        "primitive": "reorder", "implementation": "jit:blk", "src": "abcd", "dst": "aBcd16b"}
    for other in ("onednn_verbose,v1,info,cpu,isa:Intel AVX2", "RESULT [1]", ""):
        assert orders._onednn_exec(other) is None


def test_dispatch_results_group_the_primitives_by_layout():
    log = "\n".join([
        "onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2",
        'LAYOUT ["NCHW", "Mkldnn"]',
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx2,forward,"
        "src:f32::blocked:aBcd8b::f0 dst:f32::blocked:aBcd8b::f0,,,x,1",
        'LAYOUT ["channels_last", "Slow2d"]',
    ])
    assert orders._dispatch_results(log) == {
        "NCHW": {"backend": "Mkldnn", "primitives": [
            {"primitive": "convolution", "implementation": "jit_dw:avx2",
             "src": "aBcd8b", "dst": "aBcd8b"}]},
        "channels_last": {"backend": "Slow2d", "primitives": []},
    }


@pytest.mark.parametrize("arguments, message", [
    ((0, 14), "channels must be a positive int, got 0"),
    ((16, True), "size must be a positive int, got True"),
    ((16, 14, 1.5), "stride must be a positive int, got 1.5"),
])
def test_depthwise_dispatch_refuses_bad_arguments_before_starting_a_process(arguments,
                                                                            message):
    with pytest.raises(ValueError, match=message):
        orders.depthwise_dispatch(*arguments)


def test_depthwise_dispatch_reports_the_backend_and_what_onednn_ran():
    """Runs one child. Holds on any CPU: when ATen picks oneDNN (Mkldnn), oneDNN logs one
    convolution for the call, in a layout it reports; any other backend logs nothing."""
    found = orders.depthwise_dispatch(16, 14)
    assert set(found) == {"NCHW", "channels_last"}
    for layout in found.values():
        convolutions = [p for p in layout["primitives"] if p["primitive"] == "convolution"]
        if layout["backend"] == "Mkldnn":
            assert len(convolutions) == 1 and convolutions[0]["src"]
        else:
            assert not layout["primitives"]
