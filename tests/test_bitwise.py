"""Bitwise equality on this machine: which summation order F.conv2d(groups=C) uses, a TE kernel
that reproduces it exactly, and what the unfold version's difference is made of."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import d2ldw
from d2ldw import conv_error_bound, fma32, sequential_depthwise

import tvm
from tvm import te

from d2ldw import tvm as d2l_tvm
from d2ldw.torch import (DepthwiseConv2dUnfold, depthwise_conv2d_unfold, is_depthwise,
                         mobilenet_v1, replace_depthwise)

CASES = [(1, 3, dict(padding=1)), (2, 3, dict(padding=1, stride=2)),
         (1, 5, dict(padding=2)), (3, 3, dict(padding=(0, 1), dilation=2))]


def data(multiplier, kernel, seed=0):
    return d2ldw.get_conv_data(8, 8 * multiplier, 14, kernel, batch=2, groups=8, seed=seed)[:2]


def test_fma32_rounds_once():
    # (1 + 2**-23)**2 - 1 = 2**-22 + 2**-46 exactly, a float32 tie: one rounding, to even, gives
    # 2**-22; a separate multiply rounds the square to 1 + 2**-22 first, with the same result.
    a = np.float32(1 + 2**-23)
    assert fma32(a, a, np.float32(-1)) == np.float32(2**-22)
    assert np.float32(a * a) - np.float32(1) == np.float32(2**-22)
    # a case where the two differ: (1 + 2**-12)**2 - 1 = 2**-11 + 2**-24, exact in float32
    b = np.float32(1 + 2**-12)
    assert fma32(b, b, np.float32(-1)) == np.float32(2**-11 + 2**-24)
    assert np.float32(b * b) - np.float32(1) == np.float32(2**-11)
    with pytest.raises(TypeError, match="float32"):
        fma32(np.float64(1), b, b)


def test_fma32_matches_exact_rounding_on_random_data():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(2000).astype(np.float32) for _ in range(3))
    from fractions import Fraction
    for i in range(0, 2000, 50):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        r = fma32(a[i], b[i], c[i])
        # r is the nearest float32: no float32 neighbour is closer to the exact value
        for neighbour in (np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf))):
            assert abs(Fraction(float(r)) - exact) <= abs(Fraction(float(neighbour)) - exact)


@pytest.mark.parametrize("multiplier, kernel, kwargs", CASES)
def test_F_conv2d_depthwise_is_the_fused_row_major_chain(multiplier, kernel, kwargs):
    """What is true on this machine (PyTorch 2.13 CPU, oneDNN): bit for bit, every output is
    acc = fma(x, w, acc) over the taps in row-major order."""
    x, w = data(multiplier, kernel)
    result = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=8, **kwargs).numpy()
    assert np.array_equal(result, sequential_depthwise(x, w, fma=True, **kwargs))
    assert not np.array_equal(result, sequential_depthwise(x, w, fma=False, **kwargs))


@pytest.mark.parametrize("multiplier, kernel, kwargs", CASES)
def test_te_depthwise_with_fma_matches_F_conv2d_bit_for_bit(multiplier, kernel, kwargs):
    x, w = data(multiplier, kernel, seed=1)
    X, K = te.placeholder(x.shape, name="X"), te.placeholder(w.shape, name="K")
    Y = d2l_tvm.depthwise_conv2d(X, K, **kwargs)
    assembly = d2l_tvm.build([X, K, Y]).mod.inspect_source("asm")
    assert "vfmadd" in assembly, "the host target should let LLVM contract to FMA"
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=8, **kwargs).numpy()
    assert np.array_equal(d2l_tvm.build_and_run([X, K, Y], [x, w]), expected)


def test_te_depthwise_without_fma_cannot_match_and_why():
    x, w = data(1, 3, seed=2)
    X, K = te.placeholder(x.shape, name="X"), te.placeholder(w.shape, name="K")
    Y = d2l_tvm.depthwise_conv2d(X, K, padding=1)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                "mattr": ["-fma"]})
    assert "vfmadd" not in d2l_tvm.build([X, K, Y], target).mod.inspect_source("asm")
    result = d2l_tvm.build_and_run([X, K, Y], [x, w], target)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1, groups=8).numpy()
    assert not np.array_equal(result, expected)
    # The explanation: it is the same order with one more rounding per tap...
    assert np.array_equal(result, sequential_depthwise(x, w, padding=1, fma=False))
    # ...so both are within the dot-product bound gamma_n * sum|x*w| (Higham eq. 3.5) of the
    # exact result, and within twice it of each other.
    bound = conv_error_bound(x, w, padding=1, groups=8)
    assert (np.abs(result.astype(np.float64) - expected) <= 2 * bound).all()


def test_unfold_differs_from_F_conv2d_only_by_rounding():
    """Not bitwise equal here: the batched matmul behind unfold does not fuse (for most outputs
    it is exactly the unfused row-major chain); the difference stays within the bound."""
    x, w = data(1, 3, seed=3)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    result = depthwise_conv2d_unfold(tx, tw, padding=1).numpy()
    expected = F.conv2d(tx, tw, padding=1, groups=8).numpy()
    assert not np.array_equal(result, expected)
    unfused = sequential_depthwise(x, w, padding=1, fma=False)
    assert (result == unfused).mean() > (result == expected).mean()
    # two results each within gamma_n * sum|x*w| of the exact value (Higham eq. 3.5)
    bound = conv_error_bound(x, w, padding=1, groups=8)
    assert (np.abs(result.astype(np.float64) - expected) <= 2 * bound).all()


def test_depthwise_conv_is_reproducible_across_thread_counts():
    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(4, 32, 28, 28, generator=gen), torch.randn(32, 1, 3, 3, generator=gen)
    before = torch.get_num_threads()
    try:
        outputs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs.append(F.conv2d(x, w, padding=1, groups=32))
        torch.use_deterministic_algorithms(True)
        outputs.append(F.conv2d(x, w, padding=1, groups=32))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(before)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_swapped_mobilenet_layers_are_within_the_bound_but_not_bitwise():
    torch.manual_seed(0)
    model = mobilenet_v1(width_multiplier=0.25).eval()
    captured = []
    hooks = [m.register_forward_hook(lambda mod, args, out: captured.append((mod, args[0])))
             for m in model.modules() if is_depthwise(m)]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)))
    for hook in hooks:
        hook.remove()
    assert len(captured) == 13
    bitwise = []
    for conv, x in captured:
        layer = DepthwiseConv2dUnfold.from_conv(conv)
        with torch.no_grad():
            ours, theirs = layer(x), conv(x)
            exact = F.conv2d(x.double(), conv.weight.double(), stride=conv.stride,
                             padding=conv.padding, groups=conv.groups)
        # each within gamma_n * sum|x*w| of the exact output (Higham eq. 3.5)
        bound = conv_error_bound(x.numpy(), conv.weight.detach().numpy(), stride=conv.stride,
                                 padding=conv.padding, groups=conv.groups)
        for y in (ours, theirs):
            assert ((y.double() - exact).abs().numpy() <= bound).all()
        bitwise.append(torch.equal(ours, theirs))
    assert not all(bitwise)  # the unfold layers round differently (see above)
    assert replace_depthwise(model, DepthwiseConv2dUnfold.from_conv) == 13
