"""Shared helpers: the repository root and the tolerance every agreement test uses."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parent.parent

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11,
                 torch.bfloat16: 2.0**-8, torch.complex64: 2.0**-24, torch.complex128: 2.0**-53}


def conv_tolerance(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Largest |difference| two correct convolutions of x, w, b may show, element by element.

    Bound: each output is a sum of n = C_in/groups * kH * kW products plus a bias (n is read
    off the weight, whose second axis is C_in/groups), and a
    computed sum of m terms satisfies |fl(s) - s| <= gamma_m * sum|terms|, with
    gamma_m = m*u / (1 - m*u) and u the unit roundoff of the dtype (Higham, "Accuracy and
    Stability of Numerical Algorithms", 2nd ed., eq. 3.5; any summation order, FMA or not).
    A complex product is two real products per component, so m = 2n + 1 there. Two
    implementations each within the bound differ by at most twice it. Accepts NumPy arrays
    or tensors of any floating or complex dtype; integer dtypes are exact (tolerance 0).

    This mirrors the derivation of the numerics chapter ("Measuring error properly"):
    for real dtypes with a bias it is ``2 * d2ldw.conv_error_bound(x, w, b, ...)``; without a
    bias it counts one term more, so it is slightly larger (tests/test_numerics.py checks the
    two against each other).
    """
    x, w = torch.as_tensor(x), torch.as_tensor(w)
    if not (x.is_floating_point() or x.is_complex()):
        return np.zeros(F.conv2d(x.double(), w.double(), stride=stride, padding=padding,
                                 dilation=dilation, groups=groups).shape)
    u = UNIT_ROUNDOFF[x.dtype]
    n = w.shape[1] * w.shape[2] * w.shape[3]
    m = (2 * n if x.is_complex() else n) + 1
    gamma = m * u / (1 - m * u)
    magnitude = F.conv2d(x.abs().double(), w.abs().double(),
                         None if b is None else torch.as_tensor(b).abs().double(),
                         stride=stride, padding=padding, dilation=dilation, groups=groups)
    return 2 * gamma * magnitude.numpy()


@pytest.fixture(scope="session")
def repo():
    return REPO
