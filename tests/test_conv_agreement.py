"""Every conv2d in d2ldw agrees with torch.nn.functional.conv2d over a seeded sweep."""
import random

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import (assert_gradients_match, conv_tolerance, random_conv_data, run_te,
                      torch_conv2d)
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)

SWEEP_SIZE = 300


def random_config(rng):
    """One random but valid configuration of F.conv2d's arguments and shapes."""
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    dilation = rng.choice([1, 2, (1, 3), (2, 1)])
    padding = rng.choice([0, 1, (2, 0), (0, 3), "valid", "same"])
    stride = 1 if padding == "same" else rng.choice([1, 2, 3, (1, 2), (3, 1)])
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    extent = [dd * (k - 1) + 1 for dd, k in zip(d, kernel)]
    size = tuple(e + rng.randint(0, 6) for e in extent)  # fits even without padding
    batch = rng.choice([0, 1, 1, 3, None])  # None: unbatched (C, H, W) input
    kind = rng.choice(["dense", "grouped", "depthwise"])
    if kind == "dense":
        groups, in_channels, out_channels = 1, rng.randint(1, 4), rng.randint(1, 5)
    elif kind == "grouped":  # 1 < groups < in_channels
        groups = rng.choice([2, 3])
        in_channels, out_channels = groups * rng.randint(2, 3), groups * rng.randint(1, 3)
    else:  # groups == in_channels, with a channel multiplier of 1 to 3
        groups = in_channels = rng.randint(1, 5)
        out_channels = in_channels * rng.randint(1, 3)
    return dict(input_shape=((in_channels, *size) if batch is None
                             else (batch, in_channels, *size)),
                weight_shape=(out_channels, in_channels // groups, *kernel),
                bias=rng.random() < 0.5,
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


CONFIGS = [random_config(random.Random(seed)) for seed in range(SWEEP_SIZE)]


def make_data(config, dtype, seed):
    return random_conv_data(config["input_shape"], config["weight_shape"], config["bias"], dtype,
                            seed)


torch_reference = torch_conv2d


def te_conv2d(x, w, b, kwargs):
    # Chapter 1's conv2d has no groups argument
    return run_te(d2l_tvm.conv2d, x, w, b, {k: v for k, v in kwargs.items() if k != "groups"})


def mxnet_conv2d(x, w, b, kwargs):
    nd = d2l_mx.nd
    def to_nd(a):
        return nd.array(a, dtype=a.dtype)
    y = d2l_mx.conv2d(to_nd(x), to_nd(w), None if b is None else to_nd(b), **kwargs)
    return y.asnumpy()


IMPLEMENTATIONS = {
    "numpy": lambda x, w, b, kw: d2l_np.conv2d(x, w, b, **kw),
    "unfold": lambda x, w, b, kw: d2l_torch.conv2d_unfold(
        torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
        **kw).numpy(),
    "te": te_conv2d,
    "te_grouped": lambda x, w, b, kw: run_te(d2l_tvm.group_conv2d, x, w, b, kw),
    "mxnet": mxnet_conv2d,
}


def groups_of(config):
    return config["kwargs"]["groups"]


def in_channels_of(config):
    return config["input_shape"][-3]


def test_sweep_covers_the_acceptance_cases():
    kinds = {
        "unbatched": any(len(c["input_shape"]) == 3 for c in CONFIGS),
        "batch 0": any(c["input_shape"][0] == 0 for c in CONFIGS if len(c["input_shape"]) == 4),
        "batch > 1": any(c["input_shape"][0] > 1 for c in CONFIGS if len(c["input_shape"]) == 4),
        "same, even kernel": any(c["kwargs"]["padding"] == "same"
                                 and c["weight_shape"][2] % 2 == 0 for c in CONFIGS),
        "dilation > 1": any(c["kwargs"]["dilation"] != 1 for c in CONFIGS),
        "rectangular kernel": any(c["weight_shape"][2] != c["weight_shape"][3] for c in CONFIGS),
        "stride > 1": any(c["kwargs"]["stride"] != 1 for c in CONFIGS),
        "bias": any(c["bias"] for c in CONFIGS) and not all(c["bias"] for c in CONFIGS),
        "groups=1": any(groups_of(c) == 1 for c in CONFIGS),
        "1 < groups < C_in": any(1 < groups_of(c) < in_channels_of(c) for c in CONFIGS),
    }
    for multiplier in (1, 2, 3):
        kinds[f"groups == C_in > 1, multiplier {multiplier}"] = any(
            groups_of(c) == in_channels_of(c) > 1
            and c["weight_shape"][0] == multiplier * in_channels_of(c) for c in CONFIGS)
    assert all(kinds.values()), [k for k, present in kinds.items() if not present]


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_agrees_with_torch_over_sweep(implementation, dtype):
    compute = IMPLEMENTATIONS[implementation]
    checked = 0
    for seed, config in enumerate(CONFIGS):
        batch = config["input_shape"][0] if len(config["input_shape"]) == 4 else None
        if implementation == "mxnet" and batch == 0:
            continue  # MXNet 1.9 cannot create zero-size arrays at all (see Section 1.2)
        if implementation == "te" and groups_of(config) != 1:
            continue  # Chapter 1's TE conv2d has no groups; te_grouped covers them
        x, w, b = make_data(config, dtype, seed)
        expected = torch_reference(x, w, b, config["kwargs"])
        result = compute(x, w, b, config["kwargs"])
        assert result.shape == expected.shape, config
        assert result.dtype == expected.dtype, config
        tolerance = conv_tolerance(x, w, b, **config["kwargs"])  # the dot-product bound
        excess = np.abs(result - expected) - tolerance
        assert excess.size == 0 or excess.max() <= 0, (config, excess.max())
        checked += 1
    assert checked >= SWEEP_SIZE * (0.25 if implementation == "te" else 0.75)


def test_float32_differences_are_roundoff_not_bugs():
    # If the float32 gap were a bug it would not shrink in float64; for round-off it shrinks
    # by about u32/u64 = 2**29. Require at least 2**20 to leave room for cancellation.
    config = dict(input_shape=(2, 8, 17, 15), weight_shape=(6, 8, 3, 3), bias=True,
                  kwargs=dict(stride=2, padding=1))
    gaps = {}
    for dtype in (np.float32, np.float64):
        x, w, b = make_data(config, dtype, seed=7)
        t = torch.from_numpy
        gaps[dtype] = np.abs(d2l_torch.conv2d_unfold(t(x), t(w), t(b), **config["kwargs"]).numpy()
                             - torch_reference(x, w, b, config["kwargs"])).max()
    assert gaps[np.float32] > 0
    assert gaps[np.float64] < gaps[np.float32] / 2**20


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64, torch.float64])
def test_unfold_accepts_other_dtypes_like_conv2d(dtype):
    x = (torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    w = (torch.randn(4, 3, 3, 2, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    result = d2l_torch.conv2d_unfold(x, w, padding=1)
    expected = F.conv2d(x, w, padding=1)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    tolerance = conv_tolerance(x, w, padding=1)  # the dot-product bound, see conftest
    excess = (result - expected).abs().double().numpy() - tolerance
    assert excess.max() <= 0


def test_unfold_gradients_match_conv2d():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    kwargs = dict(stride=(2, 1), padding="valid", dilation=(1, 2))
    assert_gradients_match(lambda *a: d2l_torch.conv2d_unfold(*a, **kwargs),
                           lambda *a: F.conv2d(*a, **kwargs), (x, w, b))


def test_numpy_reference_keeps_dtype_and_matches_definition():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 4, 5)), rng.standard_normal((3, 2, 2, 3))
    expected = np.zeros((1, 3, 3, 3))
    for o in range(3):
        for i in range(3):
            for j in range(3):
                expected[0, o, i, j] = np.sum(x[0, :, i:i + 2, j:j + 3] * w[o])
    # float64 sums of 12 standard-normal products: gamma_13 * sum|terms| < 13 * 2**-53 * 40,
    # about 6e-14 (the dot-product bound of conftest.conv_tolerance).
    np.testing.assert_allclose(d2l_np.conv2d(x, w), expected, rtol=0, atol=1e-13)
    assert d2l_np.conv2d(x.astype(np.float32), w.astype(np.float32)).dtype == np.float32
