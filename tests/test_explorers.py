"""d2ldw.explorers over every value its explorers' controls can take, against
oracles that do not share its code: PyTorch's convolution, one-hot inputs, delta
filters, brute-force counts."""

import itertools
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import d2ldw
from d2ldw import explorers
from d2ldw.explorers import (
    CONV_CONTROLS,
    COST_CONTROLS,
    DEPTHWISE_CONTROLS,
    explore_conv,
    layer_variants,
)

SPATIAL = ("size", "kernel_size", "stride", "padding", "dilation")
SPATIAL_GRID = list(
    itertools.product(*(CONV_CONTROLS[name] for name in SPATIAL))
)
GROUPED_GRID = list(
    itertools.product(
        *(
            CONV_CONTROLS[name]
            for name in ("in_channels", "out_channels", "groups")
        )
    )
)
DEPTHWISE_GRID = list(
    itertools.product(CONV_CONTROLS["in_channels"], CONV_CONTROLS["multiplier"])
)


def torch_size(size, k, s, p, d):
    """Output side PyTorch gives a square input of this size, or None if it
    refuses."""
    try:
        return F.conv1d(
            torch.zeros(1, 1, size),
            torch.zeros(1, 1, k),
            stride=s,
            padding=p,
            dilation=d,
        ).shape[-1]
    except RuntimeError:
        return None


TORCH_SIZES = {spatial: torch_size(*spatial) for spatial in SPATIAL_GRID}


def check_against_torch(spatial, c_in, c_out, groups, result):
    side = TORCH_SIZES[spatial]
    # nn.Conv2d refuses groups that do not divide both channel counts; F.conv2d
    # a kernel larger than the padded input
    refused = side is None or c_in % groups or c_out % groups
    expected = None if refused else (c_out, side, side)
    assert result.output_shape == expected, (
        spatial,
        c_in,
        c_out,
        groups,
        result,
    )
    if expected is None:
        with pytest.raises(ValueError) as error:
            d2ldw.conv2d_geometry(
                result.input_shape,
                result.weight_shape,
                *spatial[2:],
                groups=groups,
            )
        assert result.error == str(error.value) and result.mult_adds is None
        return
    k = spatial[1]
    # independent count: every output element multiplies C/G * k * k inputs with
    # weights
    assert result.mult_adds == c_out * side * side * (c_in // groups) * k * k
    assert result.params == c_out * (c_in // groups) * k * k
    assert result.error is None


@pytest.mark.parametrize(
    "channels", [(4, 6, 2), (3, 8, 1), (6, 8, 4), (5, 5, 5)]
)
def test_every_spatial_setting_agrees_with_pytorch(channels):
    for spatial in SPATIAL_GRID:
        result = explore_conv(*spatial, *channels)
        check_against_torch(spatial, *channels, result)


@pytest.mark.parametrize(
    "spatial", [(7, 3, 2, 1, 2), (1, 5, 1, 0, 1), (12, 5, 3, 3, 3)]
)
def test_every_channel_setting_agrees_with_pytorch(spatial):
    for c_in, c_out, groups in GROUPED_GRID:
        check_against_torch(
            spatial,
            c_in,
            c_out,
            groups,
            explore_conv(*spatial, c_in, c_out, groups),
        )
    for c_in, m in DEPTHWISE_GRID:
        # depthwise mode: O and G come from C and M, whatever the O and G
        # sliders say
        result = explore_conv(
            *spatial, c_in, 7, 3, depthwise=True, multiplier=m
        )
        assert (
            result.weight_shape[:2] == (c_in * m, 1) and result.groups == c_in
        )
        check_against_torch(spatial, c_in, c_in * m, c_in, result)


def test_pytorch_really_refuses_what_the_rule_above_says():
    x = torch.zeros(1, 6, 5, 5)
    with pytest.raises(RuntimeError):
        F.conv2d(x, torch.zeros(8, 1, 3, 3), groups=4)  # 4 does not divide 6
    with pytest.raises(ValueError, match="divisible by groups"):
        torch.nn.Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="divisible by groups"):
        torch.nn.Conv2d(4, 6, 3, groups=4)


def test_the_groups_error_names_no_weight_the_reader_did_not_choose():
    result = explore_conv(7, 3, in_channels=6, out_channels=12, groups=4)
    assert result.weight_shape == (12, 0, 3, 3)
    assert result.error == (
        "groups=4 must divide both in_channels=6 and out_channels=12 "
        "(valid: 1, 2, 3, 6); with groups=G the weight has shape "
        "(12, 6/G, 3, 3)"
    )
    spatial = explore_conv(3, 4, padding=0, dilation=2)
    assert spatial.error == (
        "along the height: kernel extent 7 (kernel 4, dilation 2) is "
        "larger than the padded input 3 (length 3 + padding 0 + 0)"
    )


@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(size=0), ValueError),
        (dict(stride=1.5), TypeError),
        (dict(padding=-1), ValueError),
        (dict(depthwise=1), TypeError),
        (dict(groups=True), TypeError),
    ],
)
def test_bad_arguments_are_refused(bad, error):
    arguments = dict(size=5, kernel_size=3) | bad
    with pytest.raises(error, match=next(iter(bad))):
        explore_conv(**arguments)


def test_window_taps_are_the_pixels_each_output_reads():
    """One-hot inputs through PyTorch: output i responds to input j iff j is
    one of i's taps."""
    for size, k, s, p, d in SPATIAL_GRID:
        try:
            out = d2ldw.conv_out_size(size, k, p, s, d)
        except ValueError:
            continue
        one_hot = torch.eye(size, dtype=torch.float64).reshape(size, 1, 1, size)
        reads = (
            F.conv1d(
                one_hot[:, :, 0],
                torch.ones(1, 1, k, dtype=torch.float64),
                stride=s,
                padding=p,
                dilation=d,
            )[:, 0]
            != 0
        )  # (input j, output i)
        for i in range(out):
            taps = explorers.window_taps(i, k, s, d, p)
            assert len(taps) == k and np.all(np.diff(taps) == d)
            inside = taps[(taps >= 0) & (taps < size)]
            assert set(inside.tolist()) == set(
                np.flatnonzero(reads[:, i]).tolist()
            )


def test_window_taps_refuse_negative_positions():
    with pytest.raises(ValueError, match="position must be >= 0, got -1"):
        explorers.window_taps(-1, 3)


def test_every_cost_setting_is_counted_as_the_chapters_count():
    """All channel/groups combinations with each spatial value, against
    stage-by-stage conv2d_cost, F.conv2d shapes for the bytes, and 1/N + 1/k^2
    for the ratio."""
    base = dict(kernel_size=3, size=14, stride=1)
    settings = [
        dict(base, in_channels=c, out_channels=n, groups=g)
        for c in COST_CONTROLS["in_channels"]
        for n in COST_CONTROLS["out_channels"]
        for g in COST_CONTROLS["groups"]
    ]
    for name in ("kernel_size", "size", "stride"):
        settings += [
            dict(base, in_channels=32, out_channels=64, groups=4, **{name: v})
            for v in COST_CONTROLS[name]
        ]
    for setting in settings:
        check_costs(**setting)


def check_costs(in_channels, out_channels, kernel_size, size, stride, groups):
    c, n, k = in_channels, out_channels, kernel_size
    variants = layer_variants(c, n, k, size, stride, groups)
    side = (
        size + 2 * (k // 2) - k
    ) // stride + 1  # the chapter's formula, padding k // 2

    def counted(
        weight_shape, g, channels_in, side_in, side_out, s=stride, p=k // 2
    ):
        cost = d2ldw.conv2d_cost(
            (channels_in, side_in, side_in), weight_shape, s, p, groups=g
        )
        moved = 4 * (
            channels_in * side_in**2
            + int(np.prod(weight_shape))
            + weight_shape[0] * side_out**2
        )
        return cost.mult_adds, cost.params, moved

    full = counted((n, c, k, k), 1, c, size, side)
    depthwise = counted((c, 1, k, k), c, c, size, side)
    pointwise = counted((n, c, 1, 1), 1, c, side, side, s=1, p=0)
    expected = {
        "full": full,
        "depthwise": depthwise,
        "separable": tuple(a + b for a, b in zip(depthwise, pointwise)),
    }
    if c % groups == 0 and n % groups == 0:
        expected["grouped"] = counted(
            (n, c // groups, k, k), groups, c, size, side
        )
    else:
        assert variants["grouped"].mult_adds is None
        assert variants["grouped"].error.startswith(
            f"groups={groups} must divide both"
        )
    for name, (mult_adds, params, moved) in expected.items():
        variant = variants[name]
        assert (variant.mult_adds, variant.params, variant.bytes_moved) == (
            mult_adds,
            params,
            moved,
        ), (name, c, n, k, size, stride, groups)
        assert (
            variant.intensity == 2 * mult_adds / moved and variant.error is None
        )
    ratio = Fraction(
        variants["separable"].mult_adds, variants["full"].mult_adds
    )
    assert (
        ratio
        == explorers.separable_ratio(n, k)
        == Fraction(1, n) + Fraction(1, k * k)
    )


def test_depthwise_filters_read_the_channel_a_delta_filter_copies():
    """For every C, M and k of the explorer: make filter o a delta; output o
    must copy exactly the input channel depthwise_filters says it reads."""
    generator = torch.Generator().manual_seed(0)
    for c, m, k in itertools.product(*DEPTHWISE_CONTROLS.values()):
        filters = explorers.depthwise_filters(c, m, k)
        assert [f.output_channel for f in filters] == list(range(c * m))
        x = torch.randn(1, c, 5, 5, generator=generator, dtype=torch.float64)
        for f in filters:
            w = torch.zeros(c * m, 1, k, k, dtype=torch.float64)
            w[f.output_channel, 0, 0, 0] = (
                1.0  # output (i, j) = input (i, j) of its channel
            )
            y = F.conv2d(x, w, groups=c)[0, f.output_channel]
            side = 6 - k
            assert [
                ch for ch in range(c) if torch.equal(y, x[0, ch, :side, :side])
            ] == [f.input_channel]
            # and it is w.reshape(C, M, k, k)[c, m]
            assert torch.equal(
                w.reshape(c, m, k, k)[f.input_channel, f.index_in_channel],
                w[f.output_channel, 0],
            )
        memory = explorers.depthwise_memory_channels(c, m, k)
        owner = torch.arange(c * m).repeat_interleave(k * k) // m
        assert memory.tolist() == owner.tolist()


def test_depthwise_filters_refuse_bad_input():
    with pytest.raises(ValueError, match="multiplier must be >= 1, got 0"):
        explorers.depthwise_filters(3, 0)
    with pytest.raises(TypeError, match="in_channels must be an int"):
        explorers.depthwise_filters(3.0, 2)


# ---- the widgets (d2ldw.widgets): Python side -----------------------------


def test_widgets_show_what_explorers_compute_and_refuse_bad_values():
    from d2ldw import widgets

    conv = widgets.ConvExplorer(size=7, kernel_size=3, padding=1, groups=3,
                                in_channels=6, out_channels=8)
    assert conv.summary() == explore_conv(7, 3, 1, 1, 1, 6, 8, 3)
    assert conv.summary().error.startswith("groups=3 must divide both")
    assert repr(conv).startswith("ConvExplorer(size=7, kernel_size=3, stride=1")
    cost = widgets.CostExplorer(in_channels=32, out_channels=64)
    assert cost.summary() == layer_variants(32, 64, 3, 56, 1, 4)
    weight = widgets.DepthwiseWeightExplorer(in_channels=2, multiplier=3)
    assert weight.summary() == explorers.depthwise_filters(2, 3, 3)
    assert weight.controls == {name: list(values) for name, values
                               in DEPTHWISE_CONTROLS.items()}
    with pytest.raises(ValueError, match=r"size must be one of \[1, 2"):
        widgets.ConvExplorer(size=13)
    with pytest.raises(Exception, match="expected any of"):
        conv.kernel_size = 9  # later assignments are checked too (TraitError)


def test_widget_ids_and_state_are_deterministic():
    """A rebuild writes the same page: model ids come from a counter, the
    module and style from the package, nothing from the clock."""
    from d2ldw import widgets

    first, second = widgets.CostExplorer(), widgets.CostExplorer()
    number = int(first.model_id.rsplit("-", 1)[1])
    assert first.model_id == f"d2ldw-CostExplorer-{number}"
    assert second.model_id == f"d2ldw-CostExplorer-{number + 1}"
    assert first.layout.model_id == f"{first.model_id}-layout"
    state, again = first.get_state(), second.get_state()
    assert "renderCostExplorer" in state["_esm"]
    assert state["layout"] == f"IPY_MODEL_{first.layout.model_id}"
    assert {k: v for k, v in state.items() if k != "layout"} == \
        {k: v for k, v in again.items() if k != "layout"}


def test_widgets_without_anywidget_name_the_pip_package():
    code = "import sys; sys.modules['anywidget'] = None\nimport d2ldw.widgets"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "d2ldw.widgets needs the Python package 'anywidget'" in result.stderr
    assert "pip install 'd2ldw[book]'   (that is: anywidget>=0.11.0)" in result.stderr
