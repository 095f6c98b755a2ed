"""d2ldw: the helper package of the book "Dive into Depthwise".

Almost all of it is extracted from the book's chapters (by the repository's
``tools/extract.py``). ``import d2ldw`` needs only NumPy and gives the framework-free
helpers listed below (from ``d2ldw.shapes``, ``data``, ``cost``, ``timing``,
``numerics`` and ``quantization``); the implementations live in modules imported one
by one, each needing its framework:

===================  ==============================================================
task                 where
===================  ==============================================================
convolve             ``d2ldw.numpy.conv2d`` (reference), ``d2ldw.torch``,
                     ``d2ldw.mxnet``, ``d2ldw.tvm`` (TE definitions, build helpers)
count                ``d2ldw.conv2d_cost``, ``d2ldw.torch.count_cost`` (whole models)
bound the error      ``d2ldw.conv_error_bound``, ``d2ldw.gamma``,
                     ``d2ldw.separable_error_bound``, ``d2ldw.max_ulp_distance``
swap layers          ``d2ldw.torch.replace_depthwise`` with
                     ``DepthwiseConv2dUnfold.from_conv`` or ``TEDepthwiseConv2d``
quantize             ``d2ldw.quantization_params``, ``d2ldw.quantize``,
                     ``d2ldw.quantized_conv2d`` (PyTorch's x86 int8 convolution),
                     ``d2ldw.qlinear_conv`` (ONNX Runtime's ``QLinearConv``)
port weights         ``d2ldw.torch.keras_depthwise_to_torch``,
                     ``torch_depthwise_to_keras``, ``keras_conv2d_to_torch``
benchmark            ``python -m d2ldw.bench depthwise|mobilenet|kernels|int8``
===================  ==============================================================

The modules and their dependency order are listed in ``d2ldw._layout.MODULES``.
"""
from d2ldw import cost as _cost
from d2ldw import data as _data
from d2ldw import numerics as _numerics
from d2ldw import quantization as _quantization
from d2ldw import shapes as _shapes
from d2ldw import timing as _timing
from d2ldw.cost import *  # noqa: F401,F403
from d2ldw.data import *  # noqa: F401,F403
from d2ldw.numerics import *  # noqa: F401,F403
from d2ldw.quantization import *  # noqa: F401,F403
from d2ldw.shapes import *  # noqa: F401,F403
from d2ldw.timing import *  # noqa: F401,F403

# the one place of the version: pyproject.toml reads it, a release tag (v0.1.0) names it
__version__ = "0.1.0"
# the framework-free helpers: every public name of the core modules (d2ldw._layout)
__all__ = sorted({*_cost.__all__, *_data.__all__, *_numerics.__all__,
                  *_quantization.__all__, *_shapes.__all__, *_timing.__all__})
