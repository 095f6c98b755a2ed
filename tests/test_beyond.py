"""Chapter 7, depthwise beyond MobileNet: gradients, transposed convolution, large
kernels, causal 1-D convolution, MobileNetV3 counts and the exact factorisation.

Every tolerance is a rounding bound (Higham, eq. 3.5, as d2ldw.gamma): each
compared value is a sum of m terms, computed correctly in any order, so two
correct computations differ by at most 2 * gamma_m * sum|terms|, evaluated in
float64 with the magnitudes of the terms.
"""
import itertools
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import d2ldw
from d2ldw import bench, conv2d_geometry
from d2ldw import numpy as d2l_np
from d2ldw import torch as d2l_torch

d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")
nd, autograd = d2l_mx.nd, d2l_mx.mx.autograd


def bound(terms, magnitude, dtype):
    """2 * gamma_terms * magnitude: two correct sums of ``terms`` terms."""
    return 2 * d2ldw.gamma(terms, dtype) * np.asarray(magnitude, np.float64)


def assert_within(result, reference, tolerance, what=""):
    error = np.abs(np.asarray(result, np.float64) - np.asarray(reference, np.float64))
    assert np.all(error <= tolerance), (
        f"{what}: max error {error.max():.3g}, worst error/bound "
        f"{(error / np.maximum(tolerance, 1e-300)).max():.3g}")


# ---------------------------------------------------------------- backward

GRADIENT_SWEEP = list(itertools.product(
    [1, 2, (2, 1)],          # stride
    [1, 2],                  # dilation
    [0, 1, (2, 0)],          # padding
    [1, 2],                  # multiplier
    [1, 3],                  # batch
))


def gradient_case(stride, dilation, padding, multiplier, batch, seed, dtype="float64"):
    rng = np.random.default_rng(seed)
    channels, kernel = 3, (3, 2)
    x = rng.standard_normal((batch, channels, 9, 8)).astype(dtype)
    w = rng.standard_normal((channels * multiplier, 1, *kernel)).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    g = conv2d_geometry(x.shape, w.shape, groups=channels, **kwargs)
    grad = rng.standard_normal(g.output_shape).astype(dtype)
    return x, w, grad, kwargs


def autograd_gradients(x, w, grad, kwargs):
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    F.conv2d(xt, wt, groups=x.shape[1], **kwargs).backward(torch.from_numpy(grad))
    return xt.grad.numpy(), wt.grad.numpy()


def gradient_bounds(x, w, grad, kwargs, dtype):
    """Bounds of dx (M*kH*kW terms) and dw (N*H_out*W_out terms)."""
    x64, w64, g64 = (np.abs(a.astype(np.float64)) for a in (x, w, grad))
    dx_mag = d2l_np.depthwise_conv2d_grad_input(g64, w64, x.shape, **kwargs)
    dw_mag = d2l_np.depthwise_conv2d_grad_weight(x64, g64, w.shape, **kwargs)
    multiplier = w.shape[0] // x.shape[1]
    return (bound(multiplier * w.shape[2] * w.shape[3], dx_mag, dtype),
            bound(grad.shape[0] * grad.shape[2] * grad.shape[3], dw_mag, dtype))


@pytest.mark.parametrize("stride, dilation, padding, multiplier, batch", GRADIENT_SWEEP)
def test_numpy_gradients_match_autograd(stride, dilation, padding, multiplier, batch):
    seed = GRADIENT_SWEEP.index((stride, dilation, padding, multiplier, batch))
    x, w, grad, kwargs = gradient_case(stride, dilation, padding, multiplier, batch, seed)
    dx_ref, dw_ref = autograd_gradients(x, w, grad, kwargs)
    dx_bound, dw_bound = gradient_bounds(x, w, grad, kwargs, "float64")
    dx = d2l_np.depthwise_conv2d_grad_input(grad, w, x.shape, **kwargs)
    dw = d2l_np.depthwise_conv2d_grad_weight(x, grad, w.shape, **kwargs)
    assert dx.shape == x.shape and dw.shape == w.shape
    assert_within(dx, dx_ref, dx_bound, "dx")
    assert_within(dw, dw_ref, dw_bound, "dw")


def test_gradients_with_same_padding_and_an_even_kernel():
    """Asymmetric 'same' padding: the spread gradient follows the top/left side."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((4, 1, 4, 2))
    kwargs = dict(padding="same", dilation=(1, 2))
    grad = rng.standard_normal(conv2d_geometry(x.shape, w.shape, groups=2,
                                               **kwargs).output_shape)
    dx_ref, dw_ref = autograd_gradients(x, w, grad, kwargs)
    dx_bound, dw_bound = gradient_bounds(x, w, grad, kwargs, "float64")
    assert_within(d2l_np.depthwise_conv2d_grad_input(grad, w, x.shape, **kwargs),
                  dx_ref, dx_bound)
    assert_within(d2l_np.depthwise_conv2d_grad_weight(x, grad, w.shape, **kwargs),
                  dw_ref, dw_bound)


TE_GRADIENT_CASES = random.Random(0).sample(GRADIENT_SWEEP, 6)


@pytest.mark.parametrize("stride, dilation, padding, multiplier, batch", TE_GRADIENT_CASES)
def test_te_gradients_match_autograd(stride, dilation, padding, multiplier, batch):
    x, w, grad, kwargs = gradient_case(stride, dilation, padding, multiplier, batch,
                                       seed=batch, dtype="float32")
    X = te.placeholder(x.shape, name="X")
    K = te.placeholder(w.shape, name="K")
    G = te.placeholder(grad.shape, name="G")
    dx = d2l_tvm.build_and_run(
        [G, K, d2l_tvm.depthwise_conv2d_grad_input(G, K, x.shape, **kwargs)], [grad, w])
    dw = d2l_tvm.build_and_run(
        [X, G, d2l_tvm.depthwise_conv2d_grad_weight(X, G, w.shape, **kwargs)], [x, grad])
    dx_ref, dw_ref = autograd_gradients(x, w, grad, kwargs)
    dx_bound, dw_bound = gradient_bounds(x, w, grad, kwargs, "float32")
    assert_within(dx, dx_ref, dx_bound, "TE dx")
    assert_within(dw, dw_ref, dw_bound, "TE dw")


@pytest.mark.parametrize("stride, dilation, multiplier", [(1, 1, 1), (2, 2, 3), (2, 1, 2)])
def test_mxnet_autograd_matches_the_numpy_gradients(stride, dilation, multiplier):
    x, w, grad, kwargs = gradient_case(stride, dilation, 1, multiplier, 2, seed=3,
                                       dtype="float32")
    x_nd, w_nd = nd.array(x), nd.array(w)
    x_nd.attach_grad()
    w_nd.attach_grad()
    with autograd.record():
        y = nd.Convolution(x_nd, w_nd, kernel=w.shape[2:], stride=(stride, stride),
                           dilate=(dilation, dilation), pad=(1, 1), num_filter=w.shape[0],
                           num_group=x.shape[1], no_bias=True)
    y.backward(nd.array(grad))
    as64 = [a.astype(np.float64) for a in (x, w, grad)]
    dx = d2l_np.depthwise_conv2d_grad_input(as64[2], as64[1], x.shape, **kwargs)
    dw = d2l_np.depthwise_conv2d_grad_weight(as64[0], as64[2], w.shape, **kwargs)
    dx_bound, dw_bound = gradient_bounds(x, w, grad, kwargs, "float32")
    assert_within(x_nd.grad.asnumpy(), dx, dx_bound, "MXNet dx")
    assert_within(w_nd.grad.asnumpy(), dw, dw_bound, "MXNet dw")


# -------------------------------------------------------------- transposed

TRANSPOSE_CASES = [  # (x shape, w shape, arguments)
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 6, 4, 4), (6, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0), groups=3,
                                      dilation=(2, 1))),
    ((1, 8, 5, 5), (8, 1, 5, 5), dict(stride=3, padding=2, groups=8, output_padding=2)),
    ((3, 4, 3, 7), (4, 2, 2, 4), dict(stride=(1, 2), groups=2, dilation=(3, 1),
                                      output_padding=(2, 1))),
    ((1, 2, 6, 6), (2, 5, 1, 1), dict(stride=2)),
]


def transposed_tolerance(x, w, b, kwargs, dtype):
    """Each output sums C_in/G * kH * kW products at most, plus the bias."""
    magnitude = F.conv_transpose2d(
        torch.from_numpy(np.abs(x).astype(np.float64)),
        torch.from_numpy(np.abs(w).astype(np.float64)),
        None if b is None else torch.from_numpy(np.abs(b).astype(np.float64)),
        **kwargs).numpy()
    terms = x.shape[1] // kwargs.get("groups", 1) * w.shape[2] * w.shape[3] + (b is not None)
    return bound(terms, magnitude, dtype)


@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
@pytest.mark.parametrize("with_bias", [False, True])
def test_numpy_conv_transpose2d_matches_torch(case, with_bias):
    xs, ws, kwargs = TRANSPOSE_CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * kwargs.get("groups", 1)) if with_bias else None
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                  None if b is None else torch.from_numpy(b),
                                  **kwargs).numpy()
    ours = d2l_np.conv_transpose2d(x, w, b, **kwargs)
    assert ours.shape == expected.shape
    assert_within(ours, expected, transposed_tolerance(x, w, b, kwargs, "float64"))


@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
def test_te_conv_transpose2d_matches_torch(case):
    xs, ws, kwargs = TRANSPOSE_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(xs).astype("float32")
    w = rng.standard_normal(ws).astype("float32")
    X, K = te.placeholder(xs, name="X"), te.placeholder(ws, name="K")
    ours = d2l_tvm.build_and_run([X, K, d2l_tvm.conv_transpose2d(X, K, **kwargs)], [x, w])
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).numpy()
    assert_within(ours, expected, transposed_tolerance(x, w, None, kwargs, "float32"))


def stride_and_dilation_share_an_axis(kwargs):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return any(s > 1 and d > 1 for s, d in zip(pair(kwargs.get("stride", 1)),
                                               pair(kwargs.get("dilation", 1))))


def mxnet_deconvolution(x, w, kwargs):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    groups = kwargs.get("groups", 1)
    return nd.Deconvolution(
        nd.array(x, dtype=x.dtype), nd.array(w, dtype=w.dtype), kernel=w.shape[2:],
        stride=pair(kwargs.get("stride", 1)), pad=pair(kwargs.get("padding", 0)),
        adj=pair(kwargs.get("output_padding", 0)), dilate=pair(kwargs.get("dilation", 1)),
        num_filter=w.shape[1] * groups, num_group=groups, no_bias=True).asnumpy()


@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
def test_mxnet_deconvolution_matches_unless_stride_and_dilation_share_an_axis(case):
    """The page's finding: MXNet 1.9.1's Deconvolution is right except when one axis
    has both stride and dilation above one; there it differs by far more than the bound."""
    xs, ws, kwargs = TRANSPOSE_CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).numpy()
    tolerance = transposed_tolerance(x, w, None, kwargs, "float64")
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    if any(a >= s for a, s in zip(pair(kwargs.get("output_padding", 0)),
                                  pair(kwargs.get("stride", 1)))):
        # MXNet wants output padding below the stride, PyTorch below max(stride, dilation)
        with pytest.raises(d2l_mx.mx.base.MXNetError, match="must be samller than stride"):
            mxnet_deconvolution(x, w, kwargs)
        return
    error = np.abs(mxnet_deconvolution(x, w, kwargs) - expected)
    if stride_and_dilation_share_an_axis(kwargs):
        assert np.any(error > tolerance)
    else:
        assert np.all(error <= tolerance)


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (3, 0, 2), (2, 2, 1)])
def test_input_gradient_is_a_transposed_convolution(stride, padding, dilation):
    rng = np.random.default_rng(stride)
    x, w = rng.standard_normal((2, 3, 11, 10)), rng.standard_normal((6, 1, 3, 3))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    g = conv2d_geometry(x.shape, w.shape, groups=3, **kwargs)
    grad = rng.standard_normal(g.output_shape)
    dropped = tuple((n + 2 * padding - dilation * 2 - 1) % stride for n in g.in_size)
    dx = d2l_np.depthwise_conv2d_grad_input(grad, w, x.shape, **kwargs)
    transposed = d2l_np.conv_transpose2d(grad, w, groups=3, output_padding=dropped, **kwargs)
    expected = F.conv_transpose2d(torch.from_numpy(grad), torch.from_numpy(w), groups=3,
                                  output_padding=dropped, **kwargs).numpy()
    tolerance = transposed_tolerance(grad, w, None, dict(kwargs, groups=3,
                                                         output_padding=dropped), "float64")
    assert dx.shape == x.shape
    assert_within(dx, expected, tolerance)
    assert_within(transposed, expected, tolerance)


@pytest.mark.parametrize("n, k, p, s, d, op", [(4, 3, 1, 2, 1, 1), (7, 4, 1, 2, 1, 0),
                                               (5, 3, 0, 1, 3, 2), (1, 1, 0, 1, 1, 0)])
def test_conv_transpose_out_size_is_torchs(n, k, p, s, d, op):
    y = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s,
                           padding=p, dilation=d, output_padding=op)
    size = d2ldw.conv_transpose_out_size(n, k, p, s, d, op)
    assert y.shape[-1] == size
    if op < s:  # then the forward conv maps the output back to n
        assert d2ldw.conv_out_size(size, k, p, s, d) == n


# ------------------------------------------------------------ large kernels

def randomise_batchnorm(module, generator):
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=generator))
            bn.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            bn.weight.data.copy_(torch.randn(c, generator=generator))
            bn.bias.data.copy_(torch.randn(c, generator=generator))


@pytest.mark.parametrize("kernel, small, stride", [(31, 5, 1), (13, 3, 2), (7, 7, 1),
                                                   (9, 1, 1)])
def test_merged_reparameterised_kernel_equals_the_two_branch_sum(kernel, small, stride):
    """Each output of either computation has at most k^2 + 6 roundings per term
    (the chapter's count: k^2 products and sums, the bias, and the folding)."""
    generator = torch.Generator().manual_seed(kernel)
    layer = d2l_torch.ReparamLargeKernel(8, kernel, small, stride).eval()
    randomise_batchnorm(layer, generator)
    x = torch.randn(2, 8, 35, 35, generator=generator)
    merged = layer.merged()
    assert merged.weight.shape == (8, 1, kernel, kernel) and merged.bias.shape == (8,)
    with torch.no_grad():
        two, one = layer(x), merged(x)
        magnitude = 0
        for conv, bn in layer.branches:
            w, b = d2l_torch.fuse_conv_bn(conv.double(), bn.double())
            magnitude = magnitude + F.conv2d(x.double().abs(), w.abs(), b.abs(),
                                             conv.stride, conv.padding,
                                             groups=conv.groups)
            conv.float(), bn.float()
    assert_within(one.numpy(), two.numpy(),
                  bound(kernel * kernel + 6, magnitude.numpy(), "float32"))


def test_fuse_conv_bn_keeps_the_convolution_bias():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=True).double(), nn.BatchNorm2d(4).double()
    randomise_batchnorm(bn, torch.Generator().manual_seed(1))
    bn.eval()
    w, b = d2l_torch.fuse_conv_bn(conv, bn)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, w, b), bn(conv(x)), rtol=1e-12, atol=1e-12)


def test_convnext_block_keeps_the_shape_and_counts_its_parameters():
    block = d2l_torch.ConvNeXtBlock(16, kernel_size=7)
    x = torch.randn(2, 16, 9, 9)
    assert block(x).shape == x.shape
    expected = 16 * 49 + 16 + 2 * 16 + (16 * 64 + 64) + (64 * 16 + 16) + 16
    assert sum(p.numel() for p in block.parameters()) == expected
    # the layer scale starts tiny: the block is nearly the identity
    assert (block(x) - x).abs().max() < 1e-3


@pytest.mark.parametrize("library", ["PyTorch", "TE"])
def test_kernel_sweep_children_time_and_check(library):
    """One library's sweep, in a process of its own as run_kernel_sweep runs it."""
    from d2ldw.isolated import run_isolated

    result = run_isolated(bench.time_kernel_sweep, 1, library=library, kernels=[3, 5],
                          batch=1, channels=16, size=8, repeat=1)
    assert set(result["seconds"]) == {"3", "5"}  # JSON keys
    assert all(s > 0 for s in result["seconds"].values())
    if library == "TE":  # float32 sums of k^2 terms against F.conv2d
        for k, error in ((int(k), e) for k, e in result["max_error"].items()):
            x, w, _ = d2ldw.get_conv_data(16, 16, 8, k, batch=1, groups=16, seed=k)
            magnitude = d2l_np.conv2d(np.abs(x.astype(np.float64)), np.abs(w), padding=k // 2,
                                      groups=16)
            assert error <= bound(k * k, magnitude, "float32").max()


@pytest.mark.slow  # measures the roofs and times each library in a child process
def test_run_kernel_sweep_runs_each_library_in_a_child_and_formats():
    result = bench.run_kernel_sweep([3, 5], batch=1, channels=16, size=8, threads=1,
                                    repeat=1)
    assert [row["kernel"] for row in result["kernels"]] == [3, 5]
    for row in result["kernels"]:
        flops = 2 * 16 * 8 * 8 * row["kernel"] ** 2
        assert math.isclose(row["gflop"] * 1e9, flops)
        assert math.isclose(row["intensity"], flops / row["bytes"])
        assert set(row["gflops"]) == {"PyTorch", "TE"}
        assert row["roof_gflops"] <= result["peak_gflops"] * (1 + 1e-12)
    import json
    assert json.loads(json.dumps(result)) == result
    text = bench.format_kernel_sweep(result)
    assert "each library timed in its own child process" in text
    assert len([line for line in text.splitlines() if line.lstrip().startswith(("3 ", "5 "))]) == 2


# ---------------------------------------------------------------- causal 1-D

@pytest.mark.parametrize("k, with_bias", [(1, False), (4, True), (7, True)])
def test_causal_conv1d_agrees_in_numpy_torch_and_te(k, with_bias):
    rng = np.random.default_rng(k)
    x, w = rng.standard_normal((2, 5, 13)), rng.standard_normal((5, 1, k))
    b = rng.standard_normal(5) if with_bias else None
    ours = d2l_np.causal_depthwise_conv1d(x, w, b)
    theirs = d2l_torch.causal_depthwise_conv1d(
        *[torch.from_numpy(a) for a in (x, w)],
        None if b is None else torch.from_numpy(b)).numpy()
    magnitude = d2l_np.causal_depthwise_conv1d(np.abs(x), np.abs(w),
                                               None if b is None else np.abs(b))
    assert ours.shape == x.shape
    assert_within(ours, theirs, bound(k + with_bias, magnitude, "float64"))
    X, K = te.placeholder(x.shape, "float64", "X"), te.placeholder(w.shape, "float64", "K")
    y_te = d2l_tvm.build_and_run([X, K, d2l_tvm.causal_depthwise_conv1d(X, K)], [x, w])
    no_bias = d2l_np.causal_depthwise_conv1d(x, w)
    assert_within(y_te, no_bias, bound(k, d2l_np.causal_depthwise_conv1d(np.abs(x), np.abs(w)),
                                       "float64"))


def test_causal_conv1d_never_reads_the_future():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 3, 12)), rng.standard_normal((3, 1, 4))
    for t0 in range(12):
        changed = x.copy()
        changed[..., t0] += 1.0
        diff = d2l_np.causal_depthwise_conv1d(changed, w) - d2l_np.causal_depthwise_conv1d(x, w)
        assert np.all(diff[..., :t0] == 0)
        assert np.all(diff[..., t0:t0 + 4] != 0)


@pytest.mark.parametrize("k, dtype", [(4, "float64"), (3, "float32"), (1, "float64")])
def test_streaming_equals_the_full_convolution_step_by_step(k, dtype):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 6, 31)).astype(dtype)
    w = rng.standard_normal((6, 1, k)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    full = d2l_np.causal_depthwise_conv1d(*(a.astype(np.float64) for a in (x, w, b)))
    magnitude = d2l_np.causal_depthwise_conv1d(*(np.abs(a.astype(np.float64))
                                                 for a in (x, w, b)))
    tolerance = bound(k + 1, magnitude, dtype)
    stream = d2l_np.StreamingCausalConv1d(w, b, batch=2)
    for t in range(x.shape[2]):
        y_t = stream.step(x[:, :, t])
        assert y_t.dtype == np.dtype(dtype)
        assert_within(y_t, full[:, :, t], tolerance[:, :, t], f"step {t}")


# ------------------------------------------------------------- MobileNetV3

def table_mult_adds_and_params(table, resolution=224, num_classes=1000):
    """Mult-adds and conv/linear parameters read off a MobileNetV3 table alone."""
    madds = params = 0
    size, channels = resolution, 3
    for operator, k, exp, out, se, _, stride in table:
        if operator == "pool":
            size = 1
            continue
        out_size = math.ceil(size / stride)
        if operator == "bneck":
            if exp != channels:
                madds += channels * exp * size * size
                params += channels * exp
            madds += exp * k * k * out_size * out_size
            params += exp * k * k
            if se:
                squeeze = d2l_torch.make_divisible(exp // 4)
                madds += 2 * exp * squeeze
                params += 2 * exp * squeeze + exp + squeeze
            madds += exp * out * out_size * out_size
            params += exp * out
        elif operator == "conv2d":
            out = out if channels == 3 else 6 * channels
            madds += channels * out * k * k * out_size * out_size
            params += channels * out * k * k
        else:  # NBN 1x1 convs on the pooled vector: Linear layers with bias
            out = num_classes if out == "k" else out
            madds += channels * out
            params += channels * out + out
        channels, size = out, out_size
    return madds, params


@pytest.mark.parametrize("name", ["large", "small"])
def test_mobilenet_v3_counts_follow_the_table(name):
    model = getattr(d2l_torch, f"mobilenet_v3_{name}")()
    table = getattr(d2l_torch, f"MOBILENET_V3_{name.upper()}_TABLE")
    cost = d2l_torch.count_cost(model, (3, 224, 224))
    assert cost.params + cost.bn_params == sum(p.numel() for p in model.parameters())
    assert (cost.mult_adds, cost.params) == table_mult_adds_and_params(table)
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("name, paper_madds, paper_params", [("large", 219, 5.4),
                                                             ("small", 56, 2.5)])
def test_mobilenet_v3_against_the_papers_numbers(name, paper_madds, paper_params):
    """Howard et al. 2019, Table 3: the parameters, truncated to the paper's digits,
    match; the mult-adds within the 1.1% the page explains for Large."""
    cost = d2l_torch.count_cost(getattr(d2l_torch, f"mobilenet_v3_{name}")(), (3, 224, 224))
    assert int(cost.params / 1e5) / 10 == paper_params
    assert int((cost.params + cost.bn_params) / 1e5) / 10 == paper_params
    assert abs(cost.mult_adds / 1e6 - paper_madds) / paper_madds < 0.012


def test_the_se_mark_of_table_2_would_break_the_papers_parameter_count():
    printed = d2l_torch.count_cost(d2l_torch.mobilenet_v3_small(se_on_last_conv=True),
                                   (3, 224, 224))
    assert int(printed.params / 1e5) / 10 != 2.5


def test_efficientnet_b0_and_convnext_tiny_counts():
    b0 = d2l_torch.count_cost(d2l_torch.efficientnet_b0(), (3, 224, 224))
    assert round(b0.mult_adds / 1e7) / 100 == 0.39 and round(
        (b0.params + b0.bn_params) / 1e5) / 10 == 5.3  # Tan and Le 2019, Table 2
    model = d2l_torch.convnext_tiny()  # LayerScale needs no elementwise= (issue 24)
    cost = d2l_torch.count_cost(model, (3, 224, 224))
    assert cost.params + cost.bn_params == sum(p.numel() for p in model.parameters())
    assert cost.by_type["elementwise"].mult_adds == 0
    assert cost.by_type["elementwise"].params == 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768
    assert cost.by_type["depthwise 7x7"].layers == 18
    assert round(cost.mult_adds / 1e8) / 10 == 4.5 and int(cost.params / 1e6) == 28


# -------------------------------------------------------- exact factorisation

@pytest.mark.parametrize("out_channels, channels, kernel, kwargs", [
    (16, 8, 5, dict(stride=2, padding=2)),
    (4, 3, 3, dict(padding=1, dilation=2)),   # O < k^2: rank O
    (12, 2, (3, 2), dict(stride=(1, 2))),
    (5, 1, 1, {}),
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exact_factorisation_reproduces_the_full_convolution(out_channels, channels, kernel,
                                                             kwargs, dtype):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rng = np.random.default_rng(out_channels)
    w = rng.standard_normal((out_channels, channels, kh, kw)).astype(dtype)
    x = rng.standard_normal((2, channels, 11, 10)).astype(dtype)
    depthwise, pointwise, singular = d2l_np.factorise_conv_weight(w)
    rank = min(out_channels, kh * kw)
    assert depthwise.shape == (channels * rank, 1, kh, kw)
    assert pointwise.shape == (out_channels, channels * rank, 1, 1)
    assert singular.shape == (channels, rank)
    depthwise, pointwise = depthwise.astype(dtype), pointwise.astype(dtype)
    full = d2l_np.conv2d(x, w, **kwargs)
    separable = d2l_np.conv2d(d2l_np.conv2d(x, depthwise, groups=channels, **kwargs),
                              pointwise)
    assert_within(separable, full, d2ldw.separable_error_bound(x, w, depthwise, pointwise,
                                                                **kwargs))


def test_separable_from_conv_matches_the_layer_in_its_dtype():
    torch.manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1).to(dtype)
        pair = d2l_torch.separable_from_conv(conv)
        assert all(p.dtype == dtype for p in pair.parameters())
        x = torch.randn(2, 6, 12, 12, dtype=dtype)
        with torch.no_grad():
            ours, theirs = pair(x).numpy(), conv(x).numpy()
        tolerance = d2ldw.separable_error_bound(
            x.numpy(), conv.weight.detach().numpy(), pair[0].weight.detach().numpy(),
            pair[1].weight.detach().numpy(), conv.bias.detach().numpy(), stride=2, padding=1)
        assert_within(ours, theirs, tolerance, str(dtype))


def test_truncation_error_is_the_discarded_singular_values():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 3, 3, 3))
    _, _, s = d2l_np.factorise_conv_weight(w)
    previous = np.inf
    for rank in range(1, 9):
        d, p, _ = d2l_np.factorise_conv_weight(w, rank)
        rebuilt = np.einsum("ocj,cjt->oct", p.reshape(8, 3, rank), d.reshape(3, rank, 9))
        error = np.linalg.norm(w.reshape(8, 3, 9) - rebuilt)
        # Eckart-Young; both sides are float64 sums of a few dozen terms
        assert math.isclose(error, np.sqrt((s[:, rank:] ** 2).sum()), abs_tol=1e-12)
        assert error <= previous
        previous = error
    assert previous < 1e-12  # full rank: exact


# ------------------------------------------------------------ bad input

def te_placeholder(*shape, dtype="float32", name="X"):
    return te.placeholder(shape, dtype, name=name)


BAD_CALLS = [
    ("grad_input wrong grad shape",
     lambda: d2l_np.depthwise_conv2d_grad_input(np.zeros((1, 2, 5, 5)), np.zeros((2, 1, 3, 3)),
                                                (1, 2, 8, 8)),
     ValueError, ["grad_output must have the output's shape (1, 2, 6, 6)", "(1, 2, 5, 5)"]),
    ("grad_input unbatched shape",
     lambda: d2l_np.depthwise_conv2d_grad_input(np.zeros((2, 6, 6)), np.zeros((2, 1, 3, 3)),
                                                (2, 8, 8)),
     ValueError, ["input_shape must be (N, C, H, W)", "(2, 8, 8)"]),
    ("grad_input torch tensor",
     lambda: d2l_np.depthwise_conv2d_grad_input(torch.zeros(1, 2, 6, 6), np.zeros((2, 1, 3, 3)),
                                                (1, 2, 8, 8)),
     TypeError, ["grad_output must be a NumPy array", "torch.Tensor"]),
    ("grad_weight not depthwise",
     lambda: d2l_np.depthwise_conv2d_grad_weight(np.zeros((1, 2, 8, 8)), np.zeros((1, 4, 6, 6)),
                                                 (4, 2, 3, 3)),
     ValueError, ["(4, 2, 3, 3)"]),
    ("te grad_input wrong G",
     lambda: d2l_tvm.depthwise_conv2d_grad_input(te_placeholder(1, 2, 5, 5, name="G"),
                                                 te_placeholder(2, 1, 3, 3, name="K"),
                                                 (1, 2, 8, 8)),
     ValueError, ["G must have the output's shape (1, 2, 6, 6)"]),
    ("te grad_weight mixed dtypes",
     lambda: d2l_tvm.depthwise_conv2d_grad_weight(te_placeholder(1, 2, 8, 8),
                                                  te_placeholder(1, 2, 6, 6, dtype="float64",
                                                                 name="G"), (2, 1, 3, 3)),
     TypeError, ["one dtype", "float64"]),
    ("conv_transpose2d output_padding",
     lambda: d2l_np.conv_transpose2d(np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3)), stride=2,
                                     output_padding=2),
     ValueError, ["output_padding must be smaller than max(stride, dilation) = 2", "got 2"]),
    ("conv_transpose2d groups",
     lambda: d2l_np.conv_transpose2d(np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3)), groups=3),
     ValueError, ["divisible by groups=3", "(4, 2, 3, 3)"]),
    ("conv_transpose2d channels",
     lambda: d2l_np.conv_transpose2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3))),
     ValueError, ["C_in = 3", "(4, 2, 3, 3)"]),
    ("conv_transpose2d 3-D input",
     lambda: d2l_np.conv_transpose2d(np.zeros((4, 5, 5)), np.zeros((4, 2, 3, 3))),
     ValueError, ["x must be (N, C_in, H, W)", "(4, 5, 5)"]),
    ("conv_transpose2d strings",
     lambda: d2l_np.conv_transpose2d(np.zeros((1, 4, 5, 5), dtype=str), np.zeros((4, 2, 3, 3))),
     TypeError, ["x must hold real numbers"]),
    ("te conv_transpose2d padding",
     lambda: d2l_tvm.conv_transpose2d(te_placeholder(1, 4, 5, 5),
                                      te_placeholder(4, 2, 3, 3, name="K"), padding=4),
     ValueError, ["padding 4 removes the whole output"]),
    ("te conv_transpose2d numpy input",
     lambda: d2l_tvm.conv_transpose2d(np.zeros((1, 4, 5, 5)), te_placeholder(4, 2, 3, 3)),
     TypeError, ["X must be a TVM te.Tensor", "NumPy array"]),
    ("conv_transpose_out_size bool",
     lambda: d2ldw.conv_transpose_out_size(True, 3), TypeError, ["n"]),
    ("conv_transpose_out_size negative padding",
     lambda: d2ldw.conv_transpose_out_size(5, 3, -1), ValueError, ["p", "-1"]),
    ("causal numpy weight",
     lambda: d2l_np.causal_depthwise_conv1d(np.zeros((1, 4, 9)), np.zeros((4, 2, 3))),
     ValueError, ["w must be (D, 1, k) = (4, 1, k)", "(4, 2, 3)"]),
    ("causal numpy 2-D input",
     lambda: d2l_np.causal_depthwise_conv1d(np.zeros((4, 9)), np.zeros((4, 1, 3))),
     ValueError, ["x must be (N, D, L)", "(4, 9)"]),
    ("causal numpy bias",
     lambda: d2l_np.causal_depthwise_conv1d(np.zeros((1, 4, 9)), np.zeros((4, 1, 3)),
                                            np.zeros(3)),
     ValueError, ["b must be (4,)", "(3,)"]),
    ("causal torch numpy input",
     lambda: d2l_torch.causal_depthwise_conv1d(np.zeros((1, 4, 9)), torch.zeros(4, 1, 3)),
     TypeError, ["x must be a torch.Tensor", "NumPy array"]),
    ("causal torch weight",
     lambda: d2l_torch.causal_depthwise_conv1d(torch.zeros(1, 4, 9), torch.zeros(2, 1, 3)),
     ValueError, ["w (D, 1, k)", "(2, 1, 3)"]),
    ("causal te weight",
     lambda: d2l_tvm.causal_depthwise_conv1d(te_placeholder(1, 4, 9),
                                             te_placeholder(4, 1, 3, 1, name="K")),
     ValueError, ["K must be (D, 1, k) = (4, 1, k)", "(4, 1, 3, 1)"]),
    ("streaming step shape",
     lambda: d2l_np.StreamingCausalConv1d(np.zeros((4, 1, 3)), batch=2).step(np.zeros((1, 4))),
     ValueError, ["x_t must have shape (2, 4)", "(1, 4)"]),
    ("streaming batch",
     lambda: d2l_np.StreamingCausalConv1d(np.zeros((4, 1, 3)), batch=0),
     ValueError, ["batch", "0"]),
    ("fuse_conv_bn types",
     lambda: d2l_torch.fuse_conv_bn(nn.Linear(2, 2), nn.BatchNorm2d(2)),
     TypeError, ["expected an nn.Conv2d and an nn.BatchNorm2d", "Linear"]),
    ("fuse_conv_bn features",
     lambda: d2l_torch.fuse_conv_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4)),
     ValueError, ["4 features", "3 output channels"]),
    ("reparam even kernel",
     lambda: d2l_torch.ReparamLargeKernel(4, 30, 5), ValueError, ["odd", "30"]),
    ("reparam small larger",
     lambda: d2l_torch.ReparamLargeKernel(4, 5, 7), ValueError, ["small_kernel <= kernel_size"]),
    ("convnext block even kernel",
     lambda: d2l_torch.ConvNeXtBlock(8, 6), ValueError, ["kernel_size must be odd", "6"]),
    ("convnext block channels",
     lambda: d2l_torch.ConvNeXtBlock(0), ValueError, ["channels", "0"]),
    ("squeeze excite",
     lambda: d2l_torch.SqueezeExcite(8, 0), ValueError, ["squeeze", "0"]),
    ("mobilenet_v3 width",
     lambda: d2l_torch.mobilenet_v3_large(width_multiplier=-1), ValueError,
     ["width_multiplier must be a positive finite number", "-1"]),
    ("mobilenet_v3 classes",
     lambda: d2l_torch.mobilenet_v3_small(num_classes=1.5), TypeError, ["num_classes"]),
    ("efficientnet classes",
     lambda: d2l_torch.efficientnet_b0(num_classes=0), ValueError, ["num_classes", "0"]),
    ("convnext classes",
     lambda: d2l_torch.convnext_tiny(num_classes="1000"), TypeError, ["num_classes"]),
    ("count_cost elementwise",
     lambda: d2l_torch.count_cost(nn.Conv2d(3, 4, 1), (3, 8, 8), elementwise=("scale",)),
     TypeError, ["elementwise must be a tuple of module types", "'scale'"]),
    ("factorise rank",
     lambda: d2l_np.factorise_conv_weight(np.zeros((4, 2, 3, 3)), rank=5),
     ValueError, ["rank must be at most min(O, kH*kW) = 4", "5"]),
    ("factorise shape",
     lambda: d2l_np.factorise_conv_weight(np.zeros((4, 3, 3))),
     ValueError, ["w must be (O, C, kH, kW)", "(4, 3, 3)"]),
    ("separable_from_conv grouped",
     lambda: d2l_torch.separable_from_conv(nn.Conv2d(4, 4, 3, groups=2)),
     ValueError, ["groups=1", "groups=2"]),
    ("separable_from_conv not a conv",
     lambda: d2l_torch.separable_from_conv(nn.Linear(3, 3)),
     TypeError, ["conv must be an nn.Conv2d", "Linear"]),
    ("kernel sweep even kernel",
     lambda: bench.run_kernel_sweep([3, 4]), ValueError, ["odd", "[3, 4]"]),
    ("kernel sweep string",
     lambda: bench.run_kernel_sweep("3"), TypeError, ["kernels must be a list", "str"]),
    ("kernel sweep channels",
     lambda: bench.run_kernel_sweep([3], channels=24), ValueError,
     ["channels must be a multiple of 16", "24"]),
    ("kernel sweep threads",
     lambda: bench.run_kernel_sweep([3], threads=0), ValueError, ["threads", "0"]),
]


@pytest.mark.parametrize("name, call, error, fragments", BAD_CALLS,
                         ids=[row[0] for row in BAD_CALLS])
def test_bad_input_to_chapter_7_functions_is_refused_clearly(name, call, error, fragments):
    with pytest.raises(Exception) as caught:
        call()
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    for fragment in fragments:
        assert fragment in str(caught.value), f"{fragment!r} not in {caught.value!s}"
