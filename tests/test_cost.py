"""conv2d_cost against brute-force counts; channel connections against experiment; timing."""
import itertools
import random
import re

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import d2ldw
from d2ldw import channel_connections, conv2d_cost, conv2d_geometry, time_interleaved

matplotlib.use("Agg")


def counted_conv2d(x, w, b, stride, padding, dilation, groups):
    """A loop convolution that also counts its multiplications and additions.

    Returns (result, multiplications, additions). Every tap of every output is visited, taps
    on padding included, as a dense implementation does.
    """
    g = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups,
                        None if b is None else b.shape)
    x4 = x if g.batch is not None else x[np.newaxis]
    (top, bottom), (left, right) = g.padding
    padded = np.pad(x4, ((0, 0), (0, 0), (top, bottom), (left, right)))
    per_group, outputs_per_group = w.shape[1], w.shape[0] // groups
    y = np.zeros((x4.shape[0], *g.output_shape[-3:]))
    multiplications = additions = 0
    for n, o, i, j in np.ndindex(*y.shape):
        total = 0.0
        for c, a, k in np.ndindex(*w.shape[1:]):
            pixel = padded[n, o // outputs_per_group * per_group + c,
                           i * g.stride[0] + a * g.dilation[0], j * g.stride[1] + k * g.dilation[1]]
            total = total + pixel * w[o, c, a, k]
            multiplications, additions = multiplications + 1, additions + 1
        if b is not None:
            total, additions = total + b[o], additions + 1
        y[n, o, i, j] = total
    return (y if g.batch is not None else y[0]), multiplications, additions


def random_case(rng):
    groups = rng.choice([1, 1, 2, 3])
    in_channels, out_channels = groups * rng.randint(1, 2), groups * rng.randint(1, 3)
    kernel = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = rng.choice([1, (2, 1)])
    padding = rng.choice([0, 1, (0, 2), "same"])
    stride = 1 if padding == "same" else rng.choice([1, 2, (2, 1)])
    size = (rng.randint(4, 6), rng.randint(4, 6))
    batch = rng.choice([None, 1, 2])
    return dict(input_shape=(in_channels, *size) if batch is None else (batch, in_channels, *size),
                weight_shape=(out_channels, in_channels // groups, *kernel),
                bias=rng.random() < 0.5,
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


CASES = [random_case(random.Random(seed)) for seed in range(40)]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_conv2d_cost_matches_a_brute_force_count(case):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case["input_shape"])
    w = rng.standard_normal(case["weight_shape"])
    b = rng.standard_normal(case["weight_shape"][0]) if case["bias"] else None
    y, multiplications, additions = counted_conv2d(x, w, b, **case["kwargs"])
    t = torch.from_numpy
    expected = F.conv2d(t(x), t(w), None if b is None else t(b), **case["kwargs"]).numpy()
    # The loops must compute a real convolution for their counts to mean anything. float64
    # sums of at most 2*3*3+1 terms of size O(1): the gamma_n bound (conftest) is below 1e-14.
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    cost = conv2d_cost(case["input_shape"], case["weight_shape"], bias=case["bias"],
                       **case["kwargs"])
    assert cost.mult_adds == multiplications
    assert cost.flops == multiplications + additions
    layer = nn.Conv2d(case["input_shape"][-3], case["weight_shape"][0],
                      case["weight_shape"][2:], groups=case["kwargs"]["groups"],
                      bias=case["bias"])
    assert cost.params == sum(p.numel() for p in layer.parameters())


def test_cases_cover_groups_bias_batch_and_padding():
    assert {c["kwargs"]["groups"] for c in CASES} == {1, 2, 3}
    assert {c["bias"] for c in CASES} == {True, False}
    assert {len(c["input_shape"]) for c in CASES} == {3, 4}
    assert any(c["kwargs"]["padding"] == "same" for c in CASES)
    assert any(c["kwargs"]["stride"] != 1 for c in CASES)


def test_cost_falls_exactly_as_one_over_groups():
    costs = [conv2d_cost((2, 64, 9, 9), (32, 64 // g, 3, 3), padding=1, groups=g)
             for g in (1, 2, 4, 8, 16, 32)]
    for g, cost in zip((1, 2, 4, 8, 16, 32), costs):
        assert cost.mult_adds * g == costs[0].mult_adds
        assert cost.params * g == costs[0].params


def test_batch_zero_costs_nothing_but_keeps_its_parameters():
    cost = conv2d_cost((0, 3, 8, 8), (4, 3, 3, 3), bias=True)
    assert (cost.mult_adds, cost.flops, cost.params) == (0, 0, 4 * 3 * 9 + 4)


def test_conv2d_cost_refuses_bad_arguments_clearly():
    with pytest.raises(TypeError, match=re.escape("bias must be True or False, got (4,)")):
        conv2d_cost((1, 3, 8, 8), (4, 3, 3, 3), bias=(4,))
    with pytest.raises(ValueError, match=re.escape("with groups=3 the weight must have shape "
                                                   "(6, 1, 3, 3); got (6, 3, 3, 3)")):
        conv2d_cost((1, 3, 8, 8), (6, 3, 3, 3), groups=3)


def measured_connections(in_channels, out_channels, groups):
    """Which outputs of F.conv2d change when each input channel alone is changed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, in_channels, 4, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(out_channels, in_channels // groups, 3, 3, generator=gen, dtype=torch.float64)
    base = F.conv2d(x, w, groups=groups)
    matrix = np.zeros((out_channels, in_channels), dtype=bool)
    for c in range(in_channels):
        nudged = x.clone()
        nudged[0, c] += 1.0
        matrix[:, c] = (F.conv2d(nudged, w, groups=groups) != base)[0].flatten(1).any(1).numpy()
    return matrix


@pytest.mark.parametrize("in_channels, out_channels", [(1, 1), (4, 4), (6, 12), (12, 6), (8, 16)])
def test_channel_connections_match_what_conv2d_does(in_channels, out_channels):
    for groups in range(1, min(in_channels, out_channels) + 1):
        if in_channels % groups == 0 and out_channels % groups == 0:
            matrix = channel_connections(in_channels, out_channels, groups)
            assert matrix.shape == (out_channels, in_channels)
            assert matrix.sum() * groups == in_channels * out_channels
            np.testing.assert_array_equal(matrix, measured_connections(in_channels, out_channels,
                                                                       groups))


def test_plot_connections_draws_the_matrix():
    from d2ldw import plotting
    ax = plotting.plot_connections(6, 9, 3)
    drawn = ax.get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(drawn, dtype=bool), channel_connections(6, 9, 3))
    assert "18 of 54 pairs connected" in ax.get_title()


class FakeClock:
    """A timer that advances only when the candidates say so, to test the bookkeeping."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def costing(self, *durations):
        """A candidate whose successive calls take these durations, the last one repeating."""
        remaining = list(durations)

        def candidate():
            self.now += remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return candidate


def test_time_interleaved_reports_medians_per_call_and_calibrates():
    clock = FakeClock()
    order = []
    # durations are powers of two, so the fake clock's sums are exact
    slow = clock.costing(1.0, 2**-8)  # a slow first (warm-up) call, then 2**-8 s per call
    fast = clock.costing(2**-11)
    timings = time_interleaved({"slow": lambda: (order.append("slow"), slow()),
                                "fast": lambda: (order.append("fast"), fast())},
                               repeat=5, min_seconds=2**-6, timer=clock)
    assert timings["slow"].median == 2**-8
    assert timings["fast"].median == 2**-11
    assert timings["slow"].calls_per_sample == 4  # 2**-6 / 2**-8
    assert timings["fast"].calls_per_sample == 32
    assert len(timings["slow"].samples) == 5
    # after warm-up and calibration (2 calls each), the rounds alternate between candidates
    rounds = [name for name, _ in itertools.groupby(order[4:])]
    assert rounds == ["slow", "fast"] * 5


def test_time_interleaved_median_ignores_one_disturbed_round():
    clock = FakeClock()
    candidate = clock.costing(0.01, 0.01, 0.01, 0.5, 0.01, 0.01, 0.01)
    timing = time_interleaved({"f": candidate}, repeat=5, min_seconds=0.0, timer=clock)["f"]
    # The fake clock's times are sums and differences of a few float64 numbers, off by a few
    # units of u = 2**-53 relative (Higham eq. 3.5 for short sums); approx's default rel=1e-6
    # is far above that and far below the 0.01 vs 0.5 a wrong median would give.
    assert timing.median == pytest.approx(0.01)
    assert max(timing.samples) == pytest.approx(0.5)


def test_time_interleaved_refuses_bad_arguments():
    with pytest.raises(TypeError, match="candidates must be a non-empty dict of name: callable, "
                                        "got list"):
        time_interleaved([lambda: None])
    with pytest.raises(TypeError, match="got dict"):
        time_interleaved({"f": 3})
    with pytest.raises(ValueError, match=re.escape("repeat must be a positive int, got 0")):
        time_interleaved({"f": lambda: None}, repeat=0)


def test_core_helpers_are_reexported():
    for name in ("conv2d_cost", "ConvCost", "time_interleaved", "Timing", "channel_connections"):
        assert hasattr(d2ldw, name), name
