"""Differential fuzzing against F.conv2d (issue 15), seeded and bounded in time.

``hypothesis`` draws argument sets, valid and invalid: shapes with zero or
mismatched sizes, bools, negative or odd strides, paddings and dilations, 'same'
and 'valid', unbatched and empty batches, mixed dtypes. Each goes through
d2ldw's NumPy, unfold, MXNet and TE implementations and through ``F.conv2d``.
Either both refuse (ours with a ValueError or TypeError, never a framework's
error), or both accept and agree within the rounding bound of tests/conftest.py.
Where d2ldw is documented to be stricter than PyTorch (``stricter``), it must
refuse, clearly.

``derandomize=True`` makes the examples a function of the test alone, so every
run (and CI) draws the same ones; the example counts keep the file at about a
minute on 2 cores.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from conftest import conv_tolerance
import d2ldw
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                print_blob=False, suppress_health_check=[
                    HealthCheck.too_slow, HealthCheck.data_too_large])
RUNS = {}  # implementation -> {"agreed": n, "both refused": n, ...}

EXAMPLES, TE_EXAMPLES = 1000, 300
ints = st.integers
# One call in two is valid; the other breaks one argument in one of these ways.
FAULTS = [None] * 12 + ["zero channels", "zero out", "channels", "groups",
                        "kernel too big", "stride", "padding", "dilation",
                        "bias", "dtype", "2-D input"]
BAD_VALUES = {"groups": [0, -1, True, 1.0, "divides"],
              "stride": [0, -1, 1.5, True, (1, 2, 3), (0, 1)],
              "padding": [-1, (1, -1), "full", True, (1, 2, 3),
                          "same with stride 2"],
              "dilation": [0, -2, True, 2.0, (1, 0)]}


def pair(draw, low, high):
    """An int or an (int, int) pair, as users pass stride and dilation."""
    return draw(st.one_of(ints(low, high),
                          st.tuples(ints(low, high), ints(low, high))))


@st.composite
def conv_calls(draw, batched_only=False):
    """(x, w, b, kwargs): arrays and keyword arguments for one call."""
    fault = draw(st.sampled_from(FAULTS))
    groups = draw(ints(1, 3))
    channels = groups * draw(ints(1, 2))
    out_channels = groups * draw(ints(1, 3))
    batches = [1, 2, 0] if batched_only else [None, 1, 2, 0]
    batch = draw(st.sampled_from(batches))
    kernel = (draw(ints(1, 3)), draw(ints(1, 3)))
    stride, dilation = pair(draw, 1, 2), pair(draw, 1, 2)
    padding = draw(st.one_of(st.just(0), ints(0, 2),
                             st.tuples(ints(0, 2), ints(0, 2)),
                             st.sampled_from(["valid", "same"])))
    if padding == "same":
        stride = 1
    as_pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    pads = (0, 0) if isinstance(padding, str) else as_pair(padding)
    extents = [d * (k - 1) + 1 for k, d in zip(kernel, as_pair(dilation))]
    height, width = (max(1, e - 2 * p) + draw(ints(0, 3))
                     for e, p in zip(extents, pads))
    per_group, bias = channels // groups, draw(st.booleans())
    dtype = draw(st.sampled_from(["float32", "float64"]))
    w_dtype, b_length = dtype, out_channels
    if fault == "zero channels":
        channels = per_group = 0
    elif fault == "zero out":
        out_channels = b_length = 0
    elif fault == "channels":
        per_group += 1
    elif fault == "kernel too big":
        height = max(1, extents[0] - 2 * pads[0] - 1)
        kernel = (kernel[0] + (extents[0] - 2 * pads[0] <= 1) * 3, kernel[1])
    elif fault == "bias":
        bias, b_length = True, out_channels + draw(st.sampled_from([-1, 1]))
    elif fault == "dtype":
        w_dtype = "float64" if dtype == "float32" else "float32"
    elif fault in BAD_VALUES:
        bad = draw(st.sampled_from(BAD_VALUES[fault]))
        if bad == "divides":
            bad = groups + 1 if channels % (groups + 1) else groups + 2
        if bad == "same with stride 2":
            bad, stride = "same", 2
        arguments = dict(groups=groups, stride=stride, padding=padding,
                         dilation=dilation)
        arguments[fault] = bad
        groups, stride, padding, dilation = arguments.values()
    x_shape = (channels, height, width)
    if batch is not None:
        x_shape = (batch, *x_shape)
    if fault == "2-D input":
        x_shape = (height, width)
    rng = np.random.default_rng(draw(ints(0, 2**16)))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_channels, per_group, *kernel)).astype(w_dtype)
    b = rng.standard_normal(b_length).astype(dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation,
                         groups=groups)


def pytorch(x, w, b, kwargs):
    """F.conv2d's answer in float64 (the reference), or None if it refuses."""
    t = torch.from_numpy
    try:
        F.conv2d(t(x), t(w), None if b is None else t(b), **kwargs)  # dtypes
        return F.conv2d(t(x).double(), t(w).double(),
                        None if b is None else t(b).double(), **kwargs).numpy()
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None


def stricter(x, w, kwargs):
    """Inputs d2ldw refuses although PyTorch answers: zero channels (PyTorch
    returns an output whose channels do not match the weight's), kernels of
    size 0, and bools as sizes (PyTorch takes ``groups=True`` as 1)."""
    return x.shape[-3] == 0 or 0 in w.shape or any(
        isinstance(value, bool) for value in kwargs.values())


def empty_batch(x):
    """PyTorch skips most of its checks for an empty batch (it accepts
    dilation 0 or mixed dtypes there); d2ldw checks the arguments all the
    same, so it may refuse these."""
    return x.ndim == 4 and x.shape[0] == 0


def check(name, implementation, x, w, b, kwargs, reference):
    """Both refuse, or both accept and agree within the bound."""
    counts = RUNS.setdefault(name, dict.fromkeys(
        ["agreed", "both refused", "d2ldw stricter"], 0))
    try:
        y = implementation(x, w, b, kwargs)
    except (ValueError, TypeError) as error:
        assert reference is None or stricter(x, w, kwargs) \
            or empty_batch(x), (f"{name} refused what F.conv2d accepts: "
                                f"{type(error).__name__}: {error}")
        assert str(error), "an empty message"
        counts["both refused" if reference is None else "d2ldw stricter"] += 1
        return
    except Exception as error:  # a framework's error, an assert, ...
        pytest.fail(f"{name} raised {type(error).__name__}: {error}")
    assert reference is not None and not stricter(x, w, kwargs), \
        f"{name} accepted what F.conv2d refuses: {x.shape} {w.shape} " \
        f"{kwargs}"
    y = np.asarray(y, dtype=np.float64)
    assert y.shape == reference.shape, f"{name}: {y.shape} != {reference.shape}"
    bound = conv_tolerance(x.astype(w.dtype) if x.dtype != w.dtype else x, w,
                           b, **kwargs)
    assert (np.abs(y - reference) <= bound).all(), f"{name} disagrees"
    counts["agreed"] += 1


def numpy_conv(x, w, b, kwargs):
    return d2l_np.conv2d(x, w, b, **kwargs)


def unfold_conv(x, w, b, kwargs):
    t = torch.from_numpy
    return d2l_torch.conv2d_unfold(t(x), t(w), None if b is None else t(b),
                                   **kwargs)


def mxnet_conv(x, w, b, kwargs):
    nd = d2l_mx.nd
    def array(a):
        return (nd.array(a, dtype=a.dtype))
    return d2l_mx.conv2d(array(x), array(w), None if b is None else array(b),
                         **kwargs).asnumpy()


def te_conv(x, w, b, kwargs):
    X = te.placeholder(x.shape, str(x.dtype), name="X")
    K = te.placeholder(w.shape, str(w.dtype), name="K")
    Y = d2l_tvm.group_conv2d(X, K, **kwargs)
    if b is None:
        return d2l_tvm.build_and_run([X, K, Y], [x, w])
    B = te.placeholder(b.shape, str(b.dtype), name="B")
    return d2l_tvm.build_and_run([X, K, B, d2l_tvm.add_bias(Y, B)], [x, w, b])


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv_calls())
def test_numpy_unfold_and_mxnet_agree_with_f_conv2d_or_refuse_clearly(call):
    x, w, b, kwargs = call
    reference = pytorch(x, w, b, kwargs)
    # The NumPy reference promotes mixed dtypes (np.result_type, documented),
    # where F.conv2d refuses them: compare with F.conv2d on promoted arrays.
    promoted = np.result_type(*[a for a in (x, w, b) if a is not None])
    cast = [None if a is None else a.astype(promoted) for a in (x, w, b)]
    check("numpy", numpy_conv, x, w, b, kwargs, pytorch(*cast, kwargs))
    check("unfold", unfold_conv, x, w, b, kwargs, reference)
    check("mxnet", mxnet_conv, x, w, b, kwargs, reference)


@settings(max_examples=TE_EXAMPLES, **SETTINGS)
@given(conv_calls(batched_only=True))
def test_te_agrees_with_f_conv2d_or_refuses_clearly(call):
    """TE definitions take batched inputs only (documented): only those."""
    x, w, b, kwargs = call
    check("te", te_conv, x, w, b, kwargs, pytorch(x, w, b, kwargs))


def test_the_fuzzer_ran_every_implementation():
    """Prints the counts; runs the fuzzers first if they have not run."""
    if not RUNS:
        test_numpy_unfold_and_mxnet_agree_with_f_conv2d_or_refuse_clearly()
        test_te_agrees_with_f_conv2d_or_refuses_clearly()
    print(f"fuzz examples run: {RUNS}")
    totals = {name: sum(counts.values()) for name, counts in RUNS.items()}
    assert totals["numpy"] == totals["unfold"] == totals["mxnet"] >= EXAMPLES
    assert totals["te"] >= TE_EXAMPLES
    for counts in RUNS.values():  # both outcomes exercised, not only one
        assert counts["agreed"] >= 0.2 * sum(counts.values())
        assert counts["both refused"] >= 0.2 * sum(counts.values())


# --- the secondary API (issue 24): layout helpers, rounding, timing, separable layers ----
# Each draws from valid values and from every kind of bad one (bools, floats, NaN, inf,
# negative and zero sizes, strings, None, the wrong library or layout). A call either
# answers correctly or raises a ValueError or TypeError with a message; nothing else.

SECONDARY = {}  # function -> {"accepted": n, "refused": n}
SIZES = st.one_of(ints(1, 9), st.sampled_from(
    [0, -1, True, False, 2.5, float("nan"), float("inf"), "4", None, np.int64(4)]))
MOSTLY = st.one_of(ints(1, 4), ints(1, 4), ints(1, 4), SIZES)  # valid 4 in 5
REALS = st.one_of(st.floats(0, 1e3), st.sampled_from(
    [-1.0, float("nan"), float("inf"), -float("inf"), True, "1", None, np.float32(2.5)]))


def answers_or_refuses(name, call, check):
    counts = SECONDARY.setdefault(name, {"accepted": 0, "refused": 0})
    try:
        result = call()
    except (ValueError, TypeError) as error:
        assert str(error), f"{name}: an empty message"
        counts["refused"] += 1
        return
    except Exception as error:  # a framework's error, ZeroDivisionError, ...
        pytest.fail(f"{name} raised {type(error).__name__}: {error}")
    check(result)
    counts["accepted"] += 1


def is_size(value, low=1):
    return (not isinstance(value, bool) and hasattr(value, "__index__")
            and value >= low)


@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_nchwc_helpers_round_trip_or_refuse_clearly(data):
    n, blocks, h, w = (data.draw(ints(1, 3)) for _ in range(4))
    lanes = data.draw(SIZES)
    c = blocks * (lanes if is_size(lanes) and lanes < 10 else 4)
    layout = data.draw(st.sampled_from(["NCHW", "NCHW", "CHW", "torch", "list"]))
    x = np.random.default_rng(c).standard_normal((n, c, h, w)).astype("float32")
    given = {"NCHW": x, "CHW": x[0], "torch": torch.from_numpy(x),
             "list": x.tolist()}[layout]

    def round_trip(y):
        assert layout == "NCHW" and is_size(lanes) and c % lanes == 0
        np.testing.assert_array_equal(d2l_tvm.from_nchwc(y), x)

    answers_or_refuses("to_nchwc", lambda: d2l_tvm.to_nchwc(given, lanes),
                       round_trip)
    weight = np.ones((c, 1, 3, 3), "float32")
    answers_or_refuses(
        "depthwise_weight_to_nchwc",
        lambda: d2l_tvm.depthwise_weight_to_nchwc(weight, lanes),
        lambda k: k.shape == (c // lanes, 3, 3, lanes))


@settings(max_examples=300, **SETTINGS)
@given(REALS, SIZES)
def test_make_divisible_rounds_or_refuses_clearly(value, divisor):
    def rounded(r):
        assert is_size(divisor) and r % divisor == 0 and r >= divisor
        assert r >= 0.9 * value and not (isinstance(value, bool))
    answers_or_refuses("make_divisible",
                       lambda: d2l_torch.make_divisible(value, divisor), rounded)


@settings(max_examples=100, **SETTINGS)
@given(REALS, REALS, SIZES)
def test_time_interleaved_times_or_refuses_clearly(min_seconds, settle, repeat):
    clock = iter(range(10**6)).__next__  # a fake clock: one second per reading
    small = [v if isinstance(v, bool) or not isinstance(v, float) or v != v
             else v / 1e6 for v in (min_seconds, settle)]  # keep sleeps short

    def timed(result):
        assert is_size(repeat) and len(result["f"].samples) == repeat
    answers_or_refuses(
        "time_interleaved",
        lambda: d2ldw.time_interleaved({"f": lambda: None}, repeat,
                                       small[0], clock, small[1]),
        timed)


@settings(max_examples=200, **SETTINGS)
@given(MOSTLY, MOSTLY, st.one_of(MOSTLY, st.tuples(ints(1, 3), ints(1, 3))),
       st.sampled_from([1, 1, 1, 2, (1, 2), 0, -1, True, 1.5]),
       st.sampled_from([0, 1, "same", "valid", (1, 0), -1, "full", True]),
       MOSTLY)
def test_separable_layers_build_or_refuse_clearly(channels, out, kernel, stride,
                                                  padding, multiplier):
    arguments = (channels, out, kernel, stride, padding, 1, multiplier)

    def runs(layer):
        x = torch.zeros(1, channels, 10, 10)  # fits any kernel drawn
        reference = F.conv2d(F.conv2d(x, layer.depthwise.weight, None, stride,
                                      padding, groups=channels),
                             layer.pointwise.weight, layer.pointwise.bias)
        assert layer(x).shape == reference.shape

    answers_or_refuses("SeparableConv2d",
                       lambda: d2l_torch.SeparableConv2d(*arguments), runs)

    def builds(block):
        assert not isinstance(padding, str) and is_size(multiplier)
    answers_or_refuses("mxnet.SeparableConv2D",
                       lambda: d2l_mx.SeparableConv2D(*arguments), builds)


def test_the_secondary_fuzzers_saw_both_outcomes():
    if not SECONDARY:
        test_nchwc_helpers_round_trip_or_refuse_clearly()
        test_make_divisible_rounds_or_refuses_clearly()
        test_time_interleaved_times_or_refuses_clearly()
        test_separable_layers_build_or_refuse_clearly()
    print(f"secondary fuzz examples: {SECONDARY}")
    for name, counts in SECONDARY.items():
        assert counts["accepted"] >= 10 and counts["refused"] >= 10, name
