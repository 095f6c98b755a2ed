"""d2ldw: the helper package of the book "Dive into Depthwise".

Almost all of it is extracted from the book's chapters (see ``d2ldw.extract``).
``import d2ldw`` needs only NumPy and gives the framework-free helpers; the
implementations live in ``d2ldw.numpy``, ``d2ldw.torch``, ``d2ldw.mxnet`` and
``d2ldw.tvm``, and the figures in ``d2ldw.plotting``, each importing what it needs.
"""
from d2ldw.cost import *  # noqa: F401,F403
from d2ldw.data import *  # noqa: F401,F403
from d2ldw.numerics import *  # noqa: F401,F403
from d2ldw.shapes import *  # noqa: F401,F403
from d2ldw.timing import *  # noqa: F401,F403

__version__ = "0.1.0"
