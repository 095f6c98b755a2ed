"""The arithmetic behind the book's live explorers, in NumPy only.

The widgets of ``d2ldw.widgets`` draw what these functions compute; their
JavaScript (``d2ldw/static/explorers_core.js``) repeats the same arithmetic so
that the explorers also run on the static HTML pages, with no Python behind
them. The tests check both against ``d2ldw.conv2d_geometry`` and
``d2ldw.conv2d_cost`` over every value the controls can take.

Hand-written (not extracted from a chapter): it is user-interface plumbing built
on the helpers the chapters define.
"""

from fractions import Fraction
from typing import NamedTuple, Optional, Tuple

import numpy as np

from d2ldw.cost import conv2d_cost
from d2ldw.shapes import conv2d_geometry, depthwise_multiplier

__all__ = [
    "CONV_CONTROLS",
    "COST_CONTROLS",
    "DEPTHWISE_CONTROLS",
    "BYTES_PER_ELEMENT",
    "ConvExploration",
    "LayerVariant",
    "DepthwiseFilter",
    "conv_layer_shapes",
    "explore_conv",
    "window_taps",
    "layer_variants",
    "separable_ratio",
    "depthwise_filters",
    "depthwise_memory_channels",
]

# Every value each explorer's controls can take; the widgets build their sliders
# from these dicts and the tests sweep them.
CONV_CONTROLS = {
    "size": range(1, 13),
    "kernel_size": range(1, 6),
    "stride": range(1, 4),
    "padding": range(0, 4),
    "dilation": range(1, 4),
    "in_channels": range(1, 9),
    "out_channels": range(1, 9),
    "groups": range(1, 9),
    "multiplier": range(1, 5),
}
_CHANNELS = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COST_CONTROLS = {
    "in_channels": _CHANNELS,
    "out_channels": _CHANNELS,
    "kernel_size": range(1, 8),
    "size": (1, 7, 14, 28, 56, 112, 224),
    "stride": (1, 2),
    "groups": tuple(2**i for i in range(11)),
}
DEPTHWISE_CONTROLS = {
    "in_channels": range(1, 9),
    "multiplier": range(1, 5),
    "kernel_size": range(1, 6),
}
BYTES_PER_ELEMENT = (
    4  # float32, as the roofline of the performance chapter counts
)


def _check_int(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class ConvExploration(NamedTuple):
    """What the convolution explorer shows for one setting of its controls."""

    input_shape: Tuple[int, int, int]  # (C, H, W), one unbatched image
    weight_shape: Tuple[
        int, int, int, int
    ]  # (O, C // G, k, k); C // G is 0 if G does not divide C
    groups: int
    output_shape: Optional[
        Tuple[int, ...]
    ]  # (O, H', W'); None when the arguments are impossible
    error: Optional[str]  # the message conv2d_geometry raises, or None
    mult_adds: Optional[int]
    params: Optional[int]  # weights only: the explorer's layer has no bias


def conv_layer_shapes(
    size: int,
    kernel_size: int,
    in_channels: int,
    out_channels: int,
    groups: int = 1,
    depthwise: bool = False,
    multiplier: int = 1,
) -> tuple[tuple[int, int, int], tuple[int, int, int, int], int]:
    """Input shape, weight shape and groups of the layer the explorer's controls
    describe.

    Parameters
    ----------
    size, kernel_size : int
        Side of the square input and of the square kernel.
    in_channels, out_channels, groups : int
        C, O and G of a grouped layer; ignored (except C) when ``depthwise``.
    depthwise : bool
        If True the layer is depthwise: ``groups = C`` and ``O = C *
        multiplier``.
    multiplier : int
        The channel multiplier M of a depthwise layer.

    Returns
    -------
    tuple
        ``((C, size, size), (O, C // G, k, k), G)``. When G does not divide C
        there is no valid weight; its second axis is then written as 0, so that
        ``conv2d_geometry`` reports the groups rule without guessing a weight
        the reader never chose.
    """
    for name, value in (
        ("size", size),
        ("kernel_size", kernel_size),
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("groups", groups),
        ("multiplier", multiplier),
    ):
        _check_int(name, value)
    if not isinstance(depthwise, bool):
        raise TypeError(f"depthwise must be True or False, got {depthwise!r}")
    if depthwise:
        out_channels, groups = in_channels * multiplier, in_channels
    per_group = in_channels // groups if in_channels % groups == 0 else 0
    return (
        (in_channels, size, size),
        (out_channels, per_group, kernel_size, kernel_size),
        groups,
    )


def explore_conv(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    in_channels: int = 1,
    out_channels: int = 1,
    groups: int = 1,
    depthwise: bool = False,
    multiplier: int = 1,
) -> ConvExploration:
    """Output shape and cost, or the error, of one convolution, as explored.

    Parameters
    ----------
    size, kernel_size, stride, padding, dilation : int
        The square layer's spatial arguments (``padding`` >= 0, the others >=
        1).
    in_channels, out_channels, groups, depthwise, multiplier
        As for :func:`conv_layer_shapes`.

    Returns
    -------
    ConvExploration
        ``error`` holds the message of the ValueError that
        ``d2ldw.conv2d_geometry`` raises for these arguments; then
        ``output_shape``, ``mult_adds`` and ``params`` are None.
    """
    _check_int("stride", stride)
    _check_int("padding", padding, low=0)
    _check_int("dilation", dilation)
    input_shape, weight_shape, groups = conv_layer_shapes(
        size,
        kernel_size,
        in_channels,
        out_channels,
        groups,
        depthwise,
        multiplier,
    )
    try:
        geometry = conv2d_geometry(
            input_shape, weight_shape, stride, padding, dilation, groups
        )
    except ValueError as error:
        return ConvExploration(
            input_shape, weight_shape, groups, None, str(error), None, None
        )
    cost = conv2d_cost(
        input_shape, weight_shape, stride, padding, dilation, groups
    )
    return ConvExploration(
        input_shape,
        weight_shape,
        groups,
        geometry.output_shape,
        None,
        cost.mult_adds,
        cost.params,
    )


def window_taps(
    position: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    padding: int = 0,
) -> np.ndarray:
    """Input indices one output position reads along one axis.

    Parameters
    ----------
    position : int
        Index of the output element along the axis (>= 0).
    kernel_size, stride, dilation, padding : int
        The axis' convolution arguments.

    Returns
    -------
    numpy.ndarray
        ``kernel_size`` indices into the *unpadded* input, ``position * stride -
        padding + dilation * a`` for tap ``a``; an index outside ``[0, size)``
        is a tap on padding.
    """
    _check_int("position", position, low=0)
    _check_int("kernel_size", kernel_size)
    _check_int("stride", stride)
    _check_int("dilation", dilation)
    _check_int("padding", padding, low=0)
    return position * stride - padding + dilation * np.arange(kernel_size)


class LayerVariant(NamedTuple):
    """Cost of one way to build a layer, for the cost explorer's bars."""

    mult_adds: Optional[int]
    params: Optional[int]
    bytes_moved: Optional[
        int
    ]  # input, weights and output once each, per stage, float32
    intensity: Optional[float]  # FLOPs (2 per mult-add) per byte moved
    error: Optional[
        str
    ]  # conv2d_geometry's message when the variant is impossible


def _stage(input_shape, weight_shape, stride, padding, groups):
    """Mult-adds, params and bytes of one convolution; the output shape for the
    next stage."""
    geometry = conv2d_geometry(
        input_shape, weight_shape, stride, padding, groups=groups
    )
    cost = conv2d_cost(
        input_shape, weight_shape, stride, padding, groups=groups
    )
    elements = (
        int(np.prod(input_shape))
        + int(np.prod(weight_shape))
        + int(np.prod(geometry.output_shape))
    )
    return (
        cost.mult_adds,
        cost.params,
        BYTES_PER_ELEMENT * elements,
        geometry.output_shape,
    )


def layer_variants(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    size: int,
    stride: int = 1,
    groups: int = 1,
) -> dict[str, LayerVariant]:
    """Full, grouped, depthwise and separable versions of one layer, counted.

    Parameters
    ----------
    in_channels, out_channels : int
        C and N of the layer.
    kernel_size, size, stride : int
        Square kernel, square input and stride; padding is ``kernel_size // 2``.
    groups : int
        G of the grouped variant.

    Returns
    -------
    dict
        ``{"full", "grouped", "depthwise", "separable": LayerVariant}``. The
        depthwise variant maps C channels to C (multiplier 1); the separable one
        follows it with a 1x1 convolution to N channels. A grouped variant whose
        G does not divide C and N carries ``conv2d_geometry``'s message in
        ``error`` and None elsewhere.
    """
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("kernel_size", kernel_size),
        ("size", size),
        ("stride", stride),
        ("groups", groups),
    ):
        _check_int(name, value)
    c, n, k, padding = in_channels, out_channels, kernel_size, kernel_size // 2
    image = (c, size, size)
    per_group = c // groups if c % groups == 0 else 0
    stages: dict[str, list[tuple]] = {
        "full": [(image, (n, c, k, k), stride, padding, 1)],
        "grouped": [(image, (n, per_group, k, k), stride, padding, groups)],
        "depthwise": [(image, (c, 1, k, k), stride, padding, c)],
        "separable": [
            (image, (c, 1, k, k), stride, padding, c),
            (None, (n, c, 1, 1), 1, 0, 1),
        ],
    }
    variants = {}
    for name, layers in stages.items():
        totals, shape = [0, 0, 0], None
        try:
            for input_shape, weight_shape, s, p, g in layers:
                *counts, shape = _stage(
                    input_shape or shape, weight_shape, s, p, g
                )
                totals = [a + b for a, b in zip(totals, counts)]
        except ValueError as error:
            variants[name] = LayerVariant(None, None, None, None, str(error))
            continue
        mult_adds, params, moved = totals
        variants[name] = LayerVariant(
            mult_adds, params, moved, 2 * mult_adds / moved, None
        )
    return variants


def separable_ratio(out_channels: int, kernel_size: int) -> Fraction:
    """``1/N + 1/k**2``: separable over full mult-adds (and parameters), as a
    Fraction."""
    _check_int("out_channels", out_channels)
    _check_int("kernel_size", kernel_size)
    return Fraction(1, out_channels) + Fraction(1, kernel_size**2)


class DepthwiseFilter(NamedTuple):
    """Row ``output_channel`` of a depthwise weight ``(C*M, 1, kH, kW)``."""

    output_channel: (
        int  # o, the row of the weight and the output channel it produces
    )
    input_channel: int  # c = o // M, the one input channel it reads
    index_in_channel: int  # m = o % M: it is w.reshape(C, M, kH, kW)[c, m]


def depthwise_filters(
    in_channels: int, multiplier: int, kernel_size: int = 3
) -> list[DepthwiseFilter]:
    """The filters of a depthwise weight in storage order, with the channel each
    reads.

    Parameters
    ----------
    in_channels, multiplier, kernel_size : int
        C, M and the square kernel's side of a ``(C*M, 1, k, k)`` weight.

    Returns
    -------
    list of DepthwiseFilter
        One per row ``o`` of the weight: it reads input channel ``o // M``
        (checked with ``d2ldw.depthwise_multiplier``, which names the expected
        shape on bad input).
    """
    for name, value in (
        ("in_channels", in_channels),
        ("multiplier", multiplier),
        ("kernel_size", kernel_size),
    ):
        _check_int(name, value)
    shape = (in_channels * multiplier, 1, kernel_size, kernel_size)
    m = depthwise_multiplier(in_channels, shape)
    return [DepthwiseFilter(o, o // m, o % m) for o in range(shape[0])]


def depthwise_memory_channels(
    in_channels: int, multiplier: int, kernel_size: int = 3
) -> np.ndarray:
    """Input channel of every element of a ``(C*M, 1, k, k)`` weight, in memory
    order.

    Returns a 1-D int array of ``C*M*k*k`` entries: row-major storage puts the
    ``M*k*k`` numbers of channel 0 first, then channel 1's, and so on.
    """
    filters = depthwise_filters(in_channels, multiplier, kernel_size)
    return np.repeat(
        [f.input_channel for f in filters], kernel_size * kernel_size
    )
