"""Argument checkers of the networks, layers and counters of ``d2ldw.torch``.

Written by hand (harness, not extracted from a chapter). The pages show the code that
expresses an idea, a network built from its paper's table or a counter made of forward
hooks; what such a function must refuse before PyTorch sees its arguments lives here, so
that the page calls one checker instead of spelling out every test. The messages are the
package's contract (the tests match them): each names the argument, what was expected and
what came.

Each definition says which section it serves (``# Harness for <page>.ipynb``); the API
reference links it there.
"""
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from d2ldw.shapes import check_array_kind, check_memory, checked_dtype, checked_int, \
    conv2d_geometry
from d2ldw.timing import checked_float

__all__ = ["check_network_args", "check_calibration_args", "forward_or_refuse",
           "checked_divisible_args", "check_surgery_args", "check_new_layers",
           "check_depthwise_layer_args",
           "checked_count_args",
           "separable_weight_shapes", "check_separable_weights", "check_separable_call"]


# Harness for chapters/depthwise/mobilenets.ipynb
def check_network_args(width_multiplier: float, num_classes: int) -> None:
    """Refuse a width or class count that would build a broken or huge net.

    ``width_multiplier`` must be a positive finite real number (not a bool) and
    ``num_classes`` a positive int; a network whose parameters would exceed
    ``d2ldw.MEMORY_LIMIT`` is refused before it is built (ValueError).
    """
    alpha = width_multiplier
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
            or not 0 < alpha < math.inf:
        raise ValueError(f"width_multiplier must be a positive finite number, got "
                         f"{width_multiplier!r}")
    num_classes = checked_int(num_classes, "num_classes", 1)
    # about 4.3M parameters at width 1 (float32), growing with its square: an estimate
    # good enough to refuse width 1e4 before PyTorch tries to allocate it
    width = max(1.0, float(width_multiplier))
    check_memory(int(4 * (4.3e6 * width**2 + 1280 * width * num_classes)),
                 f"a MobileNet of width {width_multiplier} with {num_classes} classes", None)


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# Harness for chapters/depthwise/mobilenets.ipynb
def check_calibration_args(model: nn.Module, images: torch.Tensor) -> None:
    """Refuse what ``calibrate_batchnorm(model, images)`` cannot calibrate.

    ``model`` must be an ``nn.Module`` with at least one BatchNorm layer; ``images``
    a non-empty ``torch.Tensor`` batch ``(N, C, H, W)`` with ``N >= 2`` (a variance
    needs two samples) and the dtype of the model's parameters. Whether the images
    fit the network is found by running it, so that is left to the caller.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not _batch_norms(model):
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers to calibrate")
    check_array_kind(images, "images", "torch")
    if images.dim() != 4 or images.shape[0] < 2 or images.numel() == 0:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W) with N >= 2 "
                         f"(BatchNorm needs two samples for a variance), got shape "
                         f"{tuple(images.shape)}")
    parameter = next(model.parameters(), None)
    if parameter is not None:
        checked_dtype({"images": images, "the model's parameters": parameter})
    if not torch.isfinite(images).all():
        nan = int(images.isnan().sum())
        infinite = int((~torch.isfinite(images)).sum()) - nan
        raise ValueError(f"images must be finite, got {nan} NaN and {infinite} infinite "
                         "values: BatchNorm statistics of them would be NaN")


# Harness for chapters/depthwise/mobilenets.ipynb
def checked_divisible_args(value: float, divisor: int) -> tuple[float, int]:
    """``(value, divisor)`` of ``make_divisible``, checked: a finite real number
    ``value >= 0`` (as a float) and an int ``divisor >= 1``; else ValueError or
    TypeError naming the argument and what came."""
    return checked_float(value, "value", 0), checked_int(divisor, "divisor", 1)


# Harness for chapters/depthwise/mobilenets.ipynb
def check_surgery_args(model: nn.Module,
                       make_layer: Callable[[nn.Conv2d], nn.Module]) -> None:
    """Refuse what ``replace_depthwise(model, make_layer)`` cannot work with.

    ``model`` must be an ``nn.Module``; ``make_layer`` a function of one depthwise
    ``nn.Conv2d`` returning the layer to put in its place (a class whose constructor
    takes the convolution will do). A layer class that is built from a convolution
    by its ``from_conv`` (``DepthwiseConv2dUnfold``), passed itself, would be called
    with the convolution as its weight: TypeError, naming the ``from_conv`` to pass.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(make_layer, type) and hasattr(make_layer, "from_conv"):
        name = make_layer.__name__
        raise TypeError(f"make_layer must be a function taking the depthwise nn.Conv2d "
                        f"and returning its replacement, got the class {name}; pass "
                        f"{name}.from_conv")
    if not callable(make_layer):
        raise TypeError(f"make_layer must be a function taking the depthwise nn.Conv2d "
                        f"and returning its replacement, got {type(make_layer).__name__}")


# Harness for chapters/depthwise/mobilenets.ipynb
def check_new_layers(names: Iterable[str], layers: Iterable[object]) -> None:
    """Refuse, before any is put in, a replacement that is not an ``nn.Module``:
    TypeError naming the layer (``names[i]`` is the one ``layers[i]`` replaces)."""
    for name, layer in zip(names, layers):
        if not isinstance(layer, nn.Module):
            raise TypeError(f"make_layer must return an nn.Module, got "
                            f"{type(layer).__name__} for layer '{name}'")


# Harness for chapters/depthwise/mobilenets.ipynb
def check_depthwise_layer_args(weight: torch.Tensor, bias: torch.Tensor | None,
                               stride: int | Sequence[int],
                               padding: int | Sequence[int] | str,
                               dilation: int | Sequence[int]) -> None:
    """Refuse the arguments of a depthwise layer built from tensors.

    ``weight`` must be a floating ``torch.Tensor`` ``(C*M, 1, kH, kW)``, ``bias``
    None or a tensor ``(C*M,)`` of its dtype; stride, padding and dilation as
    ``F.conv2d`` takes them (checked by ``conv2d_geometry``, on an input large
    enough for any kernel: the input comes later).
    """
    check_array_kind(weight, "weight", "torch")
    if bias is not None:
        check_array_kind(bias, "bias", "torch")
    checked_dtype({"weight": weight, "bias": bias})
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight must be a depthwise weight (C*M, 1, kH, kW), got shape "
                         f"{tuple(weight.shape)}")
    channels = weight.shape[0]
    conv2d_geometry((1, channels, 2**31, 2**31), weight.shape, stride, padding, dilation,
                    groups=channels, bias_shape=None if bias is None else bias.shape)


# Harness for chapters/depthwise/mobilenets.ipynb
def forward_or_refuse(model: nn.Module, inputs: torch.Tensor, refusal: str) -> torch.Tensor:
    """``model(inputs)`` without gradients; a failure becomes a ValueError.

    Whether inputs fit a network (the right channels, a large enough image) is
    known only once it runs: PyTorch then raises a RuntimeError deep inside some
    layer. That becomes ``ValueError(f"{refusal} {model class}: {first line of
    PyTorch's message}")``, so ``refusal`` names the argument, as in ``"images of
    shape (2, 4, 32, 32) do not fit"``. Returns the output.
    """
    with torch.no_grad():
        try:
            return model(inputs)
        except RuntimeError as error:  # e.g. the wrong number of channels
            reason = str(error).splitlines()[0]
            raise ValueError(f"{refusal} {type(model).__name__}: {reason}") from None


# Harness for chapters/separable/counting.ipynb
def checked_count_args(model: nn.Module, input_size: Sequence[int], max_bytes: int | None = None,
                       elementwise: Sequence[type[nn.Module]] = (),
                       known: Sequence[type[nn.Module]] = ()
                       ) -> tuple[tuple[int, ...], torch.dtype, tuple[type[nn.Module], ...]]:
    """The arguments of ``count_cost``, checked: ``(size, dtype, elementwise)``.

    ``size`` is ``input_size`` as a tuple of 3 or 4 positive ints (ValueError
    otherwise); ``dtype`` that of the model's parameters (float32 without any);
    ``elementwise`` a tuple of module types (TypeError otherwise), returned after
    the types in ``known`` (the package's own elementwise layers, which the counter
    knows without being told). Refuses, before anything is allocated, an input over
    ``max_bytes`` (default ``d2ldw.MEMORY_LIMIT``), and with TypeError a module with
    parameters that the counter has no rule for (an attention layer, say), rather
    than skip it silently.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else ()
    try:  # ints or NumPy integers, no bools
        size = tuple(checked_int(n, "input_size", 1) for n in size)
    except (TypeError, ValueError):
        size = ()
    if len(size) not in (3, 4):
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W), positive ints, got "
                         f"{input_size!r}")
    parameter = next(model.parameters(), None)
    dtype = torch.float32 if parameter is None else parameter.dtype
    check_memory(math.prod(size) * dtype.itemsize, f"an input of size {size}", max_bytes)
    given = tuple(elementwise) if isinstance(elementwise, (tuple, list)) else None
    if given is None or not all(isinstance(t, type) and issubclass(t, nn.Module)
                                for t in given):
        raise TypeError(f"elementwise must be a tuple of module types, got {elementwise!r}")
    elementwise = (*known, *(t for t in given if t not in known))
    counted = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm,
               *elementwise)
    for name, module in model.named_modules():
        if not isinstance(module, counted) \
                and next(module.parameters(recurse=False), None) is not None:
            raise TypeError(f"count_cost cannot count {type(module).__name__} '{name}', "
                            "which has parameters; it counts nn.Conv2d, nn.Linear, "
                            "BatchNorm, LayerNorm and the types in elementwise")
    return size, dtype, elementwise


# ``layer`` below: a SeparableConv2d, unannotated since convolutions imports this module
# Harness for chapters/separable/depthwise_pointwise.ipynb
def separable_weight_shapes(layer) -> tuple[dict[str, tuple[tuple[int, ...], str]], int, int]:
    """The shapes a ``SeparableConv2d``'s weights were built with.

    Returns ``({name: (shape, what it is)}, C, M)``: the parameter names
    ``depthwise.weight``, ``pointwise.weight`` (and ``pointwise.bias`` if the layer
    has one), their shapes with the formula they follow, the input channels and the
    channel multiplier.
    """
    depthwise, pointwise = layer.depthwise, layer.pointwise
    c, hidden = depthwise.in_channels, depthwise.out_channels
    shapes = {
        "depthwise.weight": ((hidden, 1, *depthwise.kernel_size), "(C*M, 1, kH, kW)"),
        "pointwise.weight": ((pointwise.out_channels, hidden, 1, 1), "(O, C*M, 1, 1)"),
    }
    if pointwise.bias is not None:
        shapes["pointwise.bias"] = ((pointwise.out_channels,), "(O,)")
    return shapes, c, hidden // c


# Harness for chapters/separable/depthwise_pointwise.ipynb
def check_separable_weights(layer,
                            tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights ``{parameter name: tensor}`` that do not fit ``layer``.

    ValueError names the parameter, the formula and shape it must have, and, when
    the shape that came is that of another of the layer's weights (the pointwise
    weight given as the depthwise one), says so. A pointwise bias for a layer built
    with ``bias=False`` is refused too.
    """
    expected, c, m = separable_weight_shapes(layer)
    if "pointwise.bias" in tensors and "pointwise.bias" not in expected:
        raise ValueError("this layer was built with bias=False; got a pointwise bias")
    for name, tensor in tensors.items():
        shape, form = expected[name]
        if tuple(tensor.shape) != shape:
            others = [n for n, (s, _) in expected.items() if s == tuple(tensor.shape)]
            hint = f"; that is the shape of {others[0]}" if others else ""
            raise ValueError(f"{name} must have shape {form} = {shape} for C={c} input "
                             f"channels and multiplier M={m}, got {tuple(tensor.shape)}{hint}")


# Harness for chapters/separable/depthwise_pointwise.ipynb
def check_separable_call(layer, input: torch.Tensor) -> None:
    """Refuse a forward pass of ``layer`` (a ``SeparableConv2d``) that would fail.

    The parameters are checked too, since they can be reassigned from outside
    (``layer.depthwise.weight = ...``), where ``F.conv2d`` would fail with a message
    about ``groups``. ``input`` must be a ``torch.Tensor`` ``(N, C, H, W)`` or
    ``(C, H, W)`` with the layer's ``C`` channels and the weights' dtype, and its
    spatial size must fit the depthwise kernel.
    """
    check_separable_weights(layer, {name: layer.get_parameter(name)
                                    for name in separable_weight_shapes(layer)[0]})
    depthwise = layer.depthwise
    check_array_kind(input, "input", "torch")
    checked_dtype({"input": input, "weights": depthwise.weight})
    c = depthwise.in_channels
    if input.dim() not in (3, 4) or input.shape[-3] != c:
        raise ValueError(f"input must be (N, {c}, H, W) or ({c}, H, W) for this layer's {c} "
                         f"input channels, got shape {tuple(input.shape)}")
    conv2d_geometry(input.shape, depthwise.weight.shape, depthwise.stride, depthwise.padding,
                    depthwise.dilation, groups=c)
