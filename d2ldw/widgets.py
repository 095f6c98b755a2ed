"""The book's live explorers, as anywidget widgets.

One implementation for three places: in Jupyter and Colab they are ordinary
widgets (their controls sync with the Python object); on the book's static HTML
pages they run from the widget state embedded in the page, because an anywidget
carries its JavaScript module in its state. The arithmetic lives in
``d2ldw.explorers`` (Python, tested) and is mirrored by
``d2ldw/static/explorers_core.js``; tests/test_browser.py checks that the two
agree.

    from d2ldw.widgets import ConvExplorer
    ConvExplorer(size=7, kernel_size=3, stride=2, padding=1, dilation=2)
"""

import difflib
import itertools
from importlib import resources

from d2ldw._requires import require

require("anywidget", "anywidget>=0.11.0", module="d2ldw.widgets", extra="book")

import anywidget  # noqa: E402
import traitlets  # noqa: E402
from ipywidgets import Layout  # noqa: E402

from d2ldw import explorers  # noqa: E402

__all__ = ["ConvExplorer", "CostExplorer", "DepthwiseWeightExplorer"]


def _static(name):
    return (
        resources.files("d2ldw")
        .joinpath("static", name)
        .read_text(encoding="utf-8")
    )


def _module(script, render):
    """One self-contained ES module: the shared arithmetic and helpers, then the
    widget."""
    parts = [
        _static("explorers_core.js"),
        _static("explorers_ui.js"),
        _static(script),
    ]
    entry = (
        "export default { render({ model, el }) { "
        f"return {render}(model, el); }} }};\n"
    )
    return "\n".join(parts) + "\n" + entry


def _choices(controls):
    """``{name: [every value]}`` from a ``d2ldw.explorers`` *_CONTROLS dict."""
    return {name: list(values) for name, values in controls.items()}


def _control(controls, name, default):
    """A synced trait accepting exactly the values of the explorer's slider."""
    return traitlets.Enum(list(controls[name]), default_value=default).tag(
        sync=True
    )


# Model ids from a counter instead of random UUIDs: a rebuild of the book writes
# the same widget state, so the same page. Unique within a kernel, which is all
# Jupyter needs.
_serial = itertools.count(1)


class _Explorer(anywidget.AnyWidget):
    """Base: deterministic model ids, checked controls, a readable repr."""

    _CONTROLS: dict = {}  # set by each explorer

    controls = traitlets.Dict().tag(sync=True)

    def __init__(self, **values):
        choices = _choices(self._CONTROLS)
        own = [n for n in type(self).class_own_traits() if not n.startswith("_")]
        known = [*choices, *(n for n in own if n not in choices)]
        for name, value in values.items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise TypeError(
                    f"{type(self).__name__} got an unexpected keyword "
                    f"{name!r}{hint}; its keywords are {', '.join(known)}"
                )
            if name in choices and (
                isinstance(value, bool) or not hasattr(value, "__index__")
                or value not in choices[name]
            ):
                raise ValueError(
                    f"{name} must be one of {choices[name]}, got {value!r}"
                )
            trait = self.class_traits()[name]
            if isinstance(trait, traitlets.Bool) and not isinstance(value, bool):
                raise TypeError(
                    f"{name} must be True or False, got {value!r}"
                )
        kind = type(self).__name__
        number = next(_serial)
        super().__init__(
            model_id=f"d2ldw-{kind}-{number}",
            controls=choices,
            layout=Layout(model_id=f"d2ldw-{kind}-{number}-layout"),
            **values,
        )

    def __repr__(self):
        values = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._CONTROLS
        )
        return f"{type(self).__name__}({values})"


class ConvExplorer(_Explorer):
    """Output shape, sliding window, channel connections and cost of one
    convolution.

    Controls (ranges in ``d2ldw.explorers.CONV_CONTROLS``): input size, kernel,
    stride, padding, dilation, in/out channels, groups, and a depthwise mode
    with multiplier M. ``summary()`` is what the widget shows, computed in
    Python.
    """

    _CONTROLS = explorers.CONV_CONTROLS
    _esm = _module("conv_explorer.js", "renderConvExplorer")
    _css = _static("explorers.css")

    size = _control(explorers.CONV_CONTROLS, "size", 7)
    kernel_size = _control(explorers.CONV_CONTROLS, "kernel_size", 3)
    stride = _control(explorers.CONV_CONTROLS, "stride", 1)
    padding = _control(explorers.CONV_CONTROLS, "padding", 0)
    dilation = _control(explorers.CONV_CONTROLS, "dilation", 1)
    in_channels = _control(explorers.CONV_CONTROLS, "in_channels", 4)
    out_channels = _control(explorers.CONV_CONTROLS, "out_channels", 6)
    groups = _control(explorers.CONV_CONTROLS, "groups", 2)
    depthwise = traitlets.Bool(False).tag(sync=True)
    multiplier = _control(explorers.CONV_CONTROLS, "multiplier", 2)

    def __repr__(self):
        return super().__repr__()[:-1] + f", depthwise={self.depthwise})"

    def summary(self):
        """``d2ldw.explorers.explore_conv`` for the current controls."""
        return explorers.explore_conv(
            self.size,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.in_channels,
            self.out_channels,
            self.groups,
            self.depthwise,
            self.multiplier,
        )


class CostExplorer(_Explorer):
    """Mult-adds, parameters, bytes moved and arithmetic intensity of one layer
    built four ways: full, grouped, depthwise and depthwise-separable, with the
    ratio 1/N + 1/k^2."""

    _CONTROLS = explorers.COST_CONTROLS
    _esm = _module("cost_explorer.js", "renderCostExplorer")
    _css = _static("explorers.css")

    in_channels = _control(explorers.COST_CONTROLS, "in_channels", 64)
    out_channels = _control(explorers.COST_CONTROLS, "out_channels", 128)
    kernel_size = _control(explorers.COST_CONTROLS, "kernel_size", 3)
    size = _control(explorers.COST_CONTROLS, "size", 56)
    stride = _control(explorers.COST_CONTROLS, "stride", 1)
    groups = _control(explorers.COST_CONTROLS, "groups", 4)

    def summary(self):
        """``d2ldw.explorers.layer_variants`` for the current controls."""
        return explorers.layer_variants(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.size,
            self.stride,
            self.groups,
        )


class DepthwiseWeightExplorer(_Explorer):
    """A depthwise weight (C*M, 1, k, k) drawn filter by filter, coloured by the
    input channel each filter reads, as stored and as ``w.reshape(C, M, k,
    k)``."""

    _CONTROLS = explorers.DEPTHWISE_CONTROLS
    _esm = _module("depthwise_explorer.js", "renderDepthwiseExplorer")
    _css = _static("explorers.css")

    in_channels = _control(explorers.DEPTHWISE_CONTROLS, "in_channels", 3)
    multiplier = _control(explorers.DEPTHWISE_CONTROLS, "multiplier", 4)
    kernel_size = _control(explorers.DEPTHWISE_CONTROLS, "kernel_size", 3)

    def summary(self):
        """``d2ldw.explorers.depthwise_filters`` for the current controls."""
        return explorers.depthwise_filters(
            self.in_channels, self.multiplier, self.kernel_size
        )
