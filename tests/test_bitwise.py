"""Bitwise equality: the emulated summation orders, the probe that reveals an order, TE kernels
that follow a chosen order exactly, and F.conv2d reproduced wherever its order is known.

Which order F.conv2d(groups=C) follows depends on the kernel oneDNN picks for the shape and the
instruction set (numerics chapter, "Bitwise equality"), so no test here asserts one CPU's
answer. Each test either checks our own code (emulations, probe, TE kernels: the same on every
x86-64 CPU), or measures the CPU-dependent property first and asserts what must follow from it.
"""
import platform
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import d2ldw
from d2ldw import (SUMMATION_ORDERS, conv_error_bound, fma32, matching_order,
                   probe_depthwise_order, sequential_depthwise, summation_tree_sizes)
from d2ldw.torch import (DepthwiseConv2dUnfold, depthwise_conv2d_unfold, is_depthwise,
                         mobilenet_v1, replace_depthwise)

# TVM is optional: without it these tests are skipped, and the skip says which
# pip package to install (make test installs it).
te = pytest.importorskip("tvm.te")
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)

# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

CASES = [(1, 3, dict(padding=1)), (2, 3, dict(padding=1, stride=2)),
         (1, 5, dict(padding=2)), (3, 3, dict(padding=(0, 1), dilation=2))]
IDS = ["M1-3x3", "M2-3x3-stride2", "M1-5x5", "M3-3x3-dilation2"]
X86 = platform.machine().lower() in ("x86_64", "amd64")


# The orders a TE kernel can follow on this CPU: fused ones only where FMA exists.
RUNNABLE_ORDERS = [name for name, order in SUMMATION_ORDERS.items()
                   if d2l_tvm.cpu_has_fma() or not order["fma"]]


def data(multiplier, kernel, seed=0):
    return d2ldw.get_conv_data(8, 8 * multiplier, 14, kernel, batch=2, groups=8, seed=seed)[:2]


def torch_depthwise(x, w, **kwargs):
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=x.shape[1],
                    **kwargs).numpy()


def te_interleaved(x, w, order, kwargs):
    """depthwise_conv2d_interleaved built for one of SUMMATION_ORDERS; (output, assembly)."""
    settings = SUMMATION_ORDERS[order]
    X, K = te.placeholder(x.shape, name="X"), te.placeholder(w.shape, name="K")
    Y = d2l_tvm.depthwise_conv2d_interleaved(X, K, accumulators=settings["accumulators"],
                                             **kwargs)
    target = d2l_tvm.target_with_fma(settings["fma"])
    assembly = d2l_tvm.build([X, K, Y], target).mod.inspect_source("asm")
    return d2l_tvm.build_and_run([X, K, Y], [x, w], target), assembly


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
    for i in range(0, 2000, 50):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        r = fma32(a[i], b[i], c[i])
        # r is the nearest float32: no float32 neighbour is closer to the exact value
        for neighbour in (np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf))):
            assert abs(Fraction(float(r)) - exact) <= abs(Fraction(float(neighbour)) - exact)


def test_two_accumulators_follow_their_definition_on_one_output():
    """Pure NumPy: one 3x3 output, the emulation against the order written out by hand."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    p = [x.flat[t] * w.flat[t] for t in range(9)]  # float32 products, rounded
    even = ((p[0] + p[2]) + p[4]) + p[6]
    odd = ((p[1] + p[3]) + p[5]) + p[7]
    by_hand = (even + odd) + p[8]
    assert sequential_depthwise(x, w, fma=False, accumulators=2)[0, 0, 0, 0] == by_hand
    chain = np.float32(0)
    for t in range(9):
        chain = chain + p[t]
    assert sequential_depthwise(x, w, fma=False)[0, 0, 0, 0] == chain
    with pytest.raises(ValueError, match="accumulators must be a positive int, got 0"):
        sequential_depthwise(x, w, accumulators=0)
    with pytest.raises(ValueError, match="accumulators must be a positive int, got True"):
        sequential_depthwise(x, w, accumulators=True)


@pytest.mark.parametrize("accumulators", [1, 2, 3])
@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_probe_reveals_the_emulated_orders(accumulators, kernel):
    """Pure NumPy: the probe recovers the tree of each emulation, computed independently."""
    n = kernel * kernel
    interleaved = accumulators * (n // accumulators)

    def expected_size(a, b):  # terms in the smallest partial sum holding taps a and b
        per = n // accumulators
        if max(a, b) >= interleaved:
            return max(a, b) + 1  # a remaining tap, added after the combined partial sums
        if a % accumulators == b % accumulators:
            return max(a, b) // accumulators + 1  # the same partial sum, one by one
        # partial sums are combined left to right: 0 + 1, then + 2, ...
        return (max(a % accumulators, b % accumulators, 1) + 1) * per

    def conv(x, w):
        return sequential_depthwise(x, w, padding=1, accumulators=accumulators)
    sizes = probe_depthwise_order(conv, (1, 1, kernel + 2, kernel + 2), (1, 1, kernel, kernel),
                                  padding=1)
    for a in range(n):
        for b in range(n):
            assert sizes[a, b] == (0 if a == b else expected_size(a, b)), (a, b)


def test_probe_on_plain_python_sums():
    chain = summation_tree_sizes(lambda v: sum(v[1:], v[0]), 5)
    assert chain.tolist() == [[0, 2, 3, 4, 5], [2, 0, 3, 4, 5], [3, 3, 0, 4, 5],
                              [4, 4, 4, 0, 5], [5, 5, 5, 5, 0]]
    pairwise = summation_tree_sizes(lambda v: (v[0] + v[1]) + (v[2] + v[3]), 4)
    assert pairwise.tolist() == [[0, 2, 4, 4], [2, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]]
    with pytest.raises(ValueError, match="n must be an int from 2 to 64, got 65"):
        summation_tree_sizes(sum, 65)
    with pytest.raises(ValueError, match="window leaves the input"):
        probe_depthwise_order(lambda x, w: x, (1, 1, 3, 3), (1, 1, 3, 3), padding=1, stride=3)


@pytest.mark.parametrize("order", RUNNABLE_ORDERS)
@pytest.mark.parametrize("multiplier, kernel, kwargs", CASES, ids=IDS)
def test_te_kernel_follows_its_order_bit_for_bit(multiplier, kernel, kwargs, order):
    """Our TE kernel compiled for an order equals that order's emulation exactly.

    Property of our code and of LLVM, not of oneDNN: a TE reduction runs in the order of its
    axes, LLVM does not reassociate floating-point sums, and it contracts a*b + c into an FMA
    exactly where target_with_fma allows it. Fused orders are built only where the CPU has
    FMA (measured), so this holds on every x86-64 CPU.
    """
    x, w = data(multiplier, kernel, seed=1)
    result, assembly = te_interleaved(x, w, order, kwargs)
    assert np.array_equal(result, sequential_depthwise(x, w, **kwargs, **SUMMATION_ORDERS[order]))
    if X86:  # 'vfmadd' is x86's FMA mnemonic; the count means nothing on other CPUs
        assert ("vfmadd" in assembly) == SUMMATION_ORDERS[order]["fma"]


def test_fma_builds_are_refused_where_the_cpu_has_no_fma(measured_branch):
    """Measured first: only a CPU without FMA must refuse; one with FMA must build."""
    has_fma = d2l_tvm.cpu_has_fma()
    measured_branch("CPU has FMA: fused builds must succeed" if has_fma
                    else "CPU has no FMA: fused builds must be refused")
    if has_fma:
        assert "+fma" in str(d2l_tvm.target_with_fma(True))
    else:
        with pytest.raises(ValueError, match="no FMA instructions"):
            d2l_tvm.target_with_fma(True)
    assert "-fma" in str(d2l_tvm.target_with_fma(False))


@pytest.mark.parametrize("multiplier, kernel, kwargs", CASES, ids=IDS)
def test_F_conv2d_is_reproduced_wherever_its_order_is_known(multiplier, kernel, kwargs,
                                                            measured_branch):
    """Measures which emulated order F.conv2d follows on this CPU, then asserts the consequence.

    F.conv2d's order is oneDNN's choice (direct depthwise kernel or gemm fallback, per
    instruction set). If it equals an emulated order bit for bit, the TE kernel built for that
    order reproduces it bit for bit, and the probe shows the order's tree. If it follows none
    (a CPU whose kernels sum another way), only the bound can be asserted: both results within
    gamma_n * sum|x*w| of the exact sum (Higham eq. 3.5), so within twice it of each other.
    """
    x, w = data(multiplier, kernel)
    expected = torch_depthwise(x, w, **kwargs)
    bound = conv_error_bound(x, w, groups=8, **kwargs)
    order, fraction = matching_order(expected, x, w, **kwargs)
    reproducible = fraction == 1 and order in RUNNABLE_ORDERS
    measured_branch(f"F.conv2d follows {order!r}: TE reproduces it bit for bit" if reproducible
                    else f"F.conv2d follows no runnable order (best {order!r}, "
                         f"{fraction:.0%} of outputs): bound only")
    if reproducible:
        result, _ = te_interleaved(x, w, order, kwargs)
        assert np.array_equal(result, expected)
        def conv(a, b):
            return torch_depthwise(a, b, **kwargs)
        probed = probe_depthwise_order(conv, x.shape, w.shape, **kwargs)
        emulated = probe_depthwise_order(
            lambda a, b: sequential_depthwise(a, b, **kwargs, **SUMMATION_ORDERS[order]),
            x.shape, w.shape, **kwargs)
        np.testing.assert_array_equal(probed, emulated)
    for candidate in RUNNABLE_ORDERS:
        result, _ = te_interleaved(x, w, candidate, kwargs)
        assert (np.abs(result.astype(np.float64) - expected) <= 2 * bound).all(), candidate


def test_unfold_differs_from_F_conv2d_only_by_rounding(measured_branch):
    """Whether unfold's matmul follows oneDNN's order depends on the BLAS kernel and the CPU
    (measured by the numerics chapter's survey); what holds everywhere: each is within
    gamma_n * sum|x*w| of the exact sum (Higham eq. 3.5), so they differ by at most twice it,
    and where they are not bitwise equal they follow different orders."""
    x, w = data(1, 3, seed=3)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    result = depthwise_conv2d_unfold(tx, tw, padding=1).numpy()
    expected = F.conv2d(tx, tw, padding=1, groups=8).numpy()
    bound = conv_error_bound(x, w, padding=1, groups=8)
    assert (np.abs(result.astype(np.float64) - expected) <= 2 * bound).all()
    identical = np.array_equal(result, expected)
    measured_branch("unfold and F.conv2d bitwise identical" if identical
                    else "unfold and F.conv2d differ: checked they follow different orders")
    if not identical:  # then they cannot follow one order exactly
        (unfold_order, unfold_fraction), (conv_order, conv_fraction) = (
            matching_order(y, x, w, padding=1) for y in (result, expected))
        assert not (unfold_fraction == conv_fraction == 1 and unfold_order == conv_order)


def test_depthwise_conv_is_reproducible_across_thread_counts():
    """Every oneDNN convolution kernel computes each output as one sum in one thread (threads
    split the outputs, not the sums), so the result cannot depend on the thread count on any
    CPU; deterministic mode changes nothing for it."""
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


def test_swapped_mobilenet_layers_are_within_the_bound():
    """Each swapped layer and its original within gamma_n * sum|x*w| of the exact output
    (Higham eq. 3.5): true on every CPU, whichever order each kernel follows."""
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
    for conv, x in captured:
        layer = DepthwiseConv2dUnfold.from_conv(conv)
        with torch.no_grad():
            ours, theirs = layer(x), conv(x)
            exact = F.conv2d(x.double(), conv.weight.double(), stride=conv.stride,
                             padding=conv.padding, groups=conv.groups)
        bound = conv_error_bound(x.numpy(), conv.weight.detach().numpy(), stride=conv.stride,
                                 padding=conv.padding, groups=conv.groups)
        for y in (ours, theirs):
            assert ((y.double() - exact).abs().numpy() <= bound).all()
    assert replace_depthwise(model, DepthwiseConv2dUnfold.from_conv) == 13


def swapped_copy(model, build):
    copy = build().eval()
    copy.load_state_dict(model.state_dict())
    return copy


@pytest.mark.parametrize("channels, multiplier, stride, size", [(16, 1, 1, 14), (16, 2, 2, 15),
                                                                (8, 3, 1, 9)])
def test_te_layer_is_bit_identical_wherever_the_order_is_known(channels, multiplier, stride,
                                                               size, measured_branch):
    """Measures F.conv2d's order for the shape first (the layer's own order_for): where it is
    one of the emulated orders, the layer's output is torch.equal to nn.Conv2d's (same
    roundings, same order); where it is none, the layer refuses with a RuntimeError rather
    than returning an almost-equal result. Either way the assertion holds on any CPU."""
    from d2ldw.torch import TEDepthwiseConv2d
    torch.manual_seed(channels + multiplier)
    conv = torch.nn.Conv2d(channels, channels * multiplier, 3, stride=stride, padding=1,
                           groups=channels, bias=False)
    layer = TEDepthwiseConv2d.from_conv(conv)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
    order = layer.order_for(tuple(x.shape))
    measured_branch("F.conv2d follows no emulated order: the layer must refuse" if order is None
                    else f"F.conv2d follows {order!r}: outputs and gradients torch.equal")
    if order is None:
        with pytest.raises(RuntimeError, match="follows none of the emulated summation orders"):
            layer(x)
        return
    with torch.no_grad():
        assert torch.equal(layer(x), conv(x))
        assert torch.equal(layer(x[0]), conv(x[0]))  # unbatched input too
    x.requires_grad_(True)
    mine = torch.autograd.grad(layer(x).sin().sum(), (x, layer.weight))
    theirs = torch.autograd.grad(conv(x).sin().sum(), (x, conv.weight))
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_te_layer_swap_leaves_mobilenet_logits_bitwise_equal(measured_branch):
    """A calibrated MobileNet v1 (activations of order one, so a swap would show) with every
    depthwise layer replaced: where F.conv2d's order is known for every layer's shape (measured
    by each layer), the logits are torch.equal; otherwise the swapped network refuses."""
    from d2ldw.torch import TEDepthwiseConv2d, calibrate_batchnorm
    torch.manual_seed(0)
    def build():
        return mobilenet_v1(width_multiplier=0.25)
    model = calibrate_batchnorm(build(), torch.randn(4, 3, 64, 64,
                                                     generator=torch.Generator().manual_seed(2)))
    swapped = swapped_copy(model, build)
    assert replace_depthwise(swapped, TEDepthwiseConv2d.from_conv) == 13
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = model[:-1](image)
        assert features.abs().max() > 0.1  # calibrated: the swap is not hidden by tiny values
        try:
            logits = swapped(image)
        except RuntimeError as error:
            assert "follows none of the emulated summation orders" in str(error)
            measured_branch("a layer's order is unknown here: the swapped network refused")
            return
        measured_branch("every layer's order known: logits checked torch.equal")
        assert torch.equal(logits, model(image))


def test_te_layer_refuses_what_it_cannot_reproduce():
    from d2ldw.torch import TEDepthwiseConv2d
    with pytest.raises(ValueError, match="expected a depthwise nn.Conv2d"):
        TEDepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match="expected bias=False"):
        TEDepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(ValueError, match="expected bias=False"):
        TEDepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, groups=4, bias=False,
                                                    padding="same"))
    with pytest.raises(ValueError, match="float32 \\(C\\*M, 1, kH, kW\\)"):
        TEDepthwiseConv2d(torch.zeros(4, 1, 3, 3, dtype=torch.float64))
    layer = TEDepthwiseConv2d(torch.zeros(4, 1, 3, 3))
    with pytest.raises(ValueError, match="float32 CPU tensor, got torch.float64"):
        layer(torch.zeros(1, 4, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="groups=3 must divide both in_channels=3 and "
                                         "out_channels=4"):
        layer(torch.zeros(1, 3, 5, 5))
