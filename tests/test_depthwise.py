"""Depthwise convolution (chapter 3): every implementation agrees with F.conv2d(groups=C)."""
import random

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import (assert_gradients_match, conv_tolerance, random_conv_data, run_te,
                      torch_conv2d)
from d2ldw import depthwise_multiplier
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")

# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

SWEEP_SIZE = 160


def depthwise_tolerance(x, w, b=None, stride=1, padding=0, dilation=1):
    """The dot-product bound of conftest.conv_tolerance, with groups = C (Higham, eq. 3.5)."""
    return conv_tolerance(x, w, b, stride, padding, dilation, groups=np.shape(x)[-3])


def random_config(rng):
    """One random, valid depthwise configuration of F.conv2d's arguments and shapes."""
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    dilation = rng.choice([1, 2, (1, 2), (2, 1)])
    padding = rng.choice([0, 1, (2, 0), (0, 1), "valid", "same"])
    stride = 1 if padding == "same" else rng.choice([1, 2, (1, 2), (2, 1)])
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    extent = [dd * (k - 1) + 1 for dd, k in zip(d, kernel)]
    size = tuple(e + rng.randint(0, 6) for e in extent)  # fits even without padding
    batch = rng.choice([0, 1, 2, 3, None])  # None: unbatched (C, H, W) input
    channels, multiplier = rng.randint(1, 5), rng.randint(1, 4)
    return dict(input_shape=(channels, *size) if batch is None else (batch, channels, *size),
                weight_shape=(channels * multiplier, 1, *kernel),
                bias=rng.random() < 0.5,
                dtype=rng.choice([np.float32, np.float64]),
                kwargs=dict(stride=stride, padding=padding, dilation=dilation))


CONFIGS = [random_config(random.Random(seed)) for seed in range(SWEEP_SIZE)]


def make_data(config, seed):
    return random_conv_data(config["input_shape"], config["weight_shape"], config["bias"],
                            config["dtype"], seed)


def torch_reference(x, w, b, kwargs):
    return torch_conv2d(x, w, b, dict(kwargs, groups=x.shape[-3]))


def te_depthwise(x, w, b, kwargs):
    return run_te(d2l_tvm.depthwise_conv2d, x, w, b, kwargs)


def unfold_depthwise(x, w, b, kwargs):
    t = torch.from_numpy
    return d2l_torch.depthwise_conv2d_unfold(t(x), t(w), None if b is None else t(b),
                                             **kwargs).numpy()


def numpy_depthwise(x, w, b, kwargs):
    return d2l_np.conv2d(x, w, b, groups=x.shape[-3], **kwargs)


def mxnet_depthwise(x, w, b, kwargs):
    def to_nd(a):
        return d2l_mx.nd.array(a, dtype=a.dtype)
    return d2l_mx.conv2d(to_nd(x), to_nd(w), None if b is None else to_nd(b),
                         groups=x.shape[-3], **kwargs).asnumpy()


# name -> callable(x, w, b, kwargs) on NumPy arrays, returning a NumPy array.
IMPLEMENTATIONS = {"te": te_depthwise, "unfold": unfold_depthwise, "numpy": numpy_depthwise,
                   "mxnet": mxnet_depthwise}
# Input kinds an implementation does not take: TE builds batched, non-empty kernels only, and
# MXNet 1.9 cannot create zero-size arrays (Section 1.2).
SKIP = {"te": {"batch 0"}, "mxnet": {"batch 0"}}


def input_kind(config):
    shape = config["input_shape"]
    if len(shape) == 3:
        return "unbatched"
    return "batch 0" if shape[0] == 0 else "batched"


def test_sweep_covers_the_acceptance_cases():
    c = CONFIGS
    multipliers = {w[0] // i[-3] for i, w in ((x["input_shape"], x["weight_shape"]) for x in c)}
    def pad(x):
        return x["kwargs"]["padding"]
    kinds = {
        "multipliers 1-4": multipliers == {1, 2, 3, 4},
        "stride 2": any(x["kwargs"]["stride"] == 2 for x in c),
        "per-axis stride": any(isinstance(x["kwargs"]["stride"], tuple) for x in c),
        "dilation 2": any(x["kwargs"]["dilation"] == 2 for x in c),
        "per-axis dilation": any(isinstance(x["kwargs"]["dilation"], tuple) for x in c),
        "rectangular kernel": any(x["weight_shape"][2] != x["weight_shape"][3] for x in c),
        "int padding > 0": any(pad(x) == 1 for x in c),
        "pair padding, one axis zero": any(pad(x) in ((2, 0), (0, 1)) for x in c),
        "'same', even kernel": any(pad(x) == "same" and x["weight_shape"][2] % 2 == 0 for x in c),
        "'valid'": any(pad(x) == "valid" for x in c),
        "batch > 1": any(len(x["input_shape"]) == 4 and x["input_shape"][0] > 1 for x in c),
        "batch 0": any(input_kind(x) == "batch 0" for x in c),
        "unbatched": any(input_kind(x) == "unbatched" for x in c),
        "bias on and off": len({x["bias"] for x in c}) == 2,
        "float32 and float64": len({x["dtype"] for x in c}) == 2,
    }
    assert all(kinds.values()), [k for k, present in kinds.items() if not present]
    assert len(CONFIGS) >= 150


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_agrees_with_torch_over_sweep(implementation):
    """Every implementation sums in its own order, and F.conv2d's order depends on the CPU's
    instruction set (oneDNN's kernel choice); the tolerance is the dot-product bound, which
    holds for any order and any use of FMA (Higham eq. 3.5), so on every x86-64 CPU."""
    compute = IMPLEMENTATIONS[implementation]
    checked = 0
    for seed, config in enumerate(CONFIGS):
        if input_kind(config) in SKIP.get(implementation, ()):
            continue
        x, w, b = make_data(config, seed)
        expected = torch_reference(x, w, b, config["kwargs"])
        result = compute(x, w, b, config["kwargs"])
        assert result.shape == expected.shape, config
        assert result.dtype == expected.dtype, config
        excess = np.abs(result - expected) - depthwise_tolerance(x, w, b, **config["kwargs"])
        assert excess.size == 0 or excess.max() <= 0, (config, excess.max())
        checked += 1
    assert checked >= 150 * 0.75


def test_te_pads_when_only_one_axis_is_padded():
    # The bug of the older d2l-tvm book: padding only when both axes' paddings are nonzero.
    config = dict(input_shape=(1, 2, 5, 6), weight_shape=(4, 1, 3, 3), bias=False,
                  dtype=np.float64, kwargs=dict(padding=(0, 1)))
    x, w, b = make_data(config, seed=1)
    result = te_depthwise(x, w, b, config["kwargs"])
    assert result.shape == (1, 4, 3, 6)
    # the dot-product bound (Higham eq. 3.5) of conftest.conv_tolerance, groups = C
    excess = np.abs(result - torch_reference(x, w, b, config["kwargs"])) \
        - depthwise_tolerance(x, w, b, **config["kwargs"])
    assert excess.max() <= 0


def test_unfold_gradients_match_conv2d():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 1, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    kwargs = dict(stride=(2, 1), padding="valid", dilation=(1, 2))
    assert_gradients_match(lambda *a: d2l_torch.depthwise_conv2d_unfold(*a, **kwargs),
                           lambda *a: F.conv2d(*a, groups=3, **kwargs), (x, w, b))


def test_unfold_gradients_with_same_padding_and_unbatched_input():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(8, 1, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert_gradients_match(lambda *a: d2l_torch.depthwise_conv2d_unfold(*a, padding="same"),
                           lambda *a: F.conv2d(*a, padding="same", groups=2), (x, w),
                           loss=lambda y: y.square().sum())


BAD_WEIGHTS = [
    ((6, 3, 3, 3), r"\(3\*M, 1, 3, 3\).*got \(6, 3, 3, 3\)"),   # a groups=1 weight
    ((5, 1, 3, 3), r"\(3\*M, 1, 3, 3\).*got \(5, 1, 3, 3\)"),   # C*M not a multiple of C
    ((0, 1, 3, 3), r"\(3\*M, 1, 3, 3\)"),                       # M = 0
    ((6, 1, 3), r"4-D"),
]


@pytest.mark.parametrize("weight_shape, message", BAD_WEIGHTS)
def test_unfold_names_the_expected_weight_shape(weight_shape, message):
    with pytest.raises(ValueError, match=message):
        d2l_torch.depthwise_conv2d_unfold(torch.zeros(2, 3, 8, 8), torch.zeros(weight_shape))


@pytest.mark.parametrize("weight_shape, message", BAD_WEIGHTS)
def test_te_names_the_expected_weight_shape(weight_shape, message):

    with pytest.raises(ValueError, match=message):
        d2l_tvm.depthwise_conv2d(te.placeholder((2, 3, 8, 8), name="X"),
                                 te.placeholder(weight_shape, name="K"))


def test_te_refuses_unbatched_input():

    with pytest.raises(ValueError, match=r"batched \(N, C, H, W\)"):
        d2l_tvm.depthwise_conv2d(te.placeholder((3, 8, 8), name="X"),
                                 te.placeholder((3, 1, 3, 3), name="K"))


def test_unfold_type_errors():
    x, w = torch.zeros(1, 3, 5, 5), torch.zeros(3, 1, 3, 3)
    with pytest.raises(TypeError, match="must be tensors"):
        d2l_torch.depthwise_conv2d_unfold(x.numpy(), w)
    with pytest.raises(TypeError, match="must be tensors"):
        d2l_torch.depthwise_conv2d_unfold(x, w.tolist())
    with pytest.raises(TypeError, match="floating or complex dtype, got torch.int64"):
        d2l_torch.depthwise_conv2d_unfold(x.long(), w.long())
    with pytest.raises(TypeError, match="share one dtype"):
        d2l_torch.depthwise_conv2d_unfold(x, w.double())
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        d2l_torch.depthwise_conv2d_unfold(x, w, torch.zeros(4))


def test_depthwise_multiplier():
    assert depthwise_multiplier(3, (12, 1, 3, 3)) == 4
    assert depthwise_multiplier(1, (5, 1, 1, 2)) == 5
    with pytest.raises(ValueError, match=r"\(4\*M, 1, 3, 3\)"):
        depthwise_multiplier(4, (6, 1, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_unfold_accepts_other_dtypes_like_conv2d(dtype):
    x = (torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    w = (torch.randn(6, 1, 3, 2, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    result = d2l_torch.depthwise_conv2d_unfold(x, w, padding=1)
    expected = F.conv2d(x, w, padding=1, groups=3)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    # Half precision: F.conv2d may accumulate in float32, we in the dtype itself; the bound
    # is for the dtype's own unit roundoff, which covers both.
    tolerance = depthwise_tolerance(x, w, padding=1)
    assert ((result - expected).abs().double().numpy() - tolerance).max() <= 0
