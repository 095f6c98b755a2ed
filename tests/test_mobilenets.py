"""MobileNet v1/v2 (chapter 3.4): the papers' architectures, and replace_depthwise."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import UNIT_ROUNDOFF, conv_tolerance
from d2ldw import torch as d2l_torch
from d2ldw.torch import (MOBILENET_V1_TABLE, MOBILENET_V2_TABLE, DepthwiseConv2dUnfold,
                         mobilenet_v1, mobilenet_v2, replace_depthwise)

BUILDERS = {"v1": mobilenet_v1, "v2": mobilenet_v2}
# Depthwise layers implied by the tables: one per "dw" row of Table 1 (Howard et al. 2017),
# one per bottleneck of Table 2 (Sandler et al. 2018), counting each row n times.
FROM_TABLE = {"v1": sum(row[0] == "dw" for row in MOBILENET_V1_TABLE),
              "v2": sum(n for op, t, c, n, s in MOBILENET_V2_TABLE if op == "bottleneck")}
PAPER_DEPTHWISE = {"v1": 13, "v2": 17}  # literal facts of the papers
SIZE = 64  # small input keeps these tests fast; every layer still sees >= 2x2 pixels


def seeded(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return BUILDERS[name](**kwargs).eval()


def image(seed=0, dtype=torch.float32):
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def depthwise_convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)
            and m.groups == m.in_channels > 1 and m.weight.shape[1] == 1]


def test_tables_give_the_papers_depthwise_counts():
    assert FROM_TABLE == PAPER_DEPTHWISE


@pytest.mark.parametrize("name", BUILDERS)
def test_replace_counts_and_touches_only_depthwise_layers(name):
    model = seeded(name)
    others = [m for m in model.modules() if m not in depthwise_convs(model)]
    old = depthwise_convs(model)
    assert len(old) == PAPER_DEPTHWISE[name]
    count = replace_depthwise(model, DepthwiseConv2dUnfold.from_conv)
    assert count == FROM_TABLE[name] == PAPER_DEPTHWISE[name]
    assert depthwise_convs(model) == []
    new = [m for m in model.modules() if isinstance(m, DepthwiseConv2dUnfold)]
    assert len(new) == count
    remaining = list(model.modules())
    # Every non-depthwise module is still there, as the very same object.
    assert all(any(m is r for r in remaining) for m in others if m is not model)
    # The new layers hold copies of the old weights, not the same tensors.
    for conv, layer in zip(old, new):
        assert torch.equal(conv.weight, layer.weight) and layer.weight is not conv.weight


def network_tolerance(output, dtype, depthwise_layers):
    """Tolerance for |swapped - original| of a whole network.

    Per swapped layer, each output moves by at most 2 * gamma_{kH*kW+1} * sum|terms|
    (Higham's dot-product bound, as in conftest.conv_tolerance); for 3x3 kernels n + 1 = 10.
    How such a perturbation grows through the remaining layers has no cheap bound; we allow
    a gain of 2**10 per swapped layer's contribution, relative to the largest output. That
    is about 4e-11 relative in float64 and 2e-2 in float32: a documented, deliberately loose
    allowance; a layout or padding bug changes outputs by O(1) relative.
    """
    u = UNIT_ROUNDOFF[dtype]
    gamma = 10 * u / (1 - 10 * u)
    return 2 * gamma * 2**10 * depthwise_layers * output.abs().max().item()


def calibrated(name, seed=0):
    """A seeded network whose BatchNorm statistics come from one batch: activations of order
    one, as in a trained network. A fresh network's activations shrink to ~1e-10 before the
    classifier, and then any swap, right or wrong, leaves the logits (the bias) unchanged."""
    batch = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 100))
    return d2l_torch.calibrate_batchnorm(seeded(name, seed), batch)


@pytest.mark.parametrize("name", BUILDERS)
def test_calibration_gives_activations_of_order_one(name):
    with torch.no_grad():
        fresh = seeded(name)[:-1](image()).abs().max().item()
        features = calibrated(name)[:-1](image()).abs().max().item()
    # Not a rounding tolerance: orders of magnitude separating vanishing features (measured
    # ~1e-10 fresh) from the O(1) ones of a calibrated network.
    assert fresh < 1e-3 < 0.1 < features < 1e3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", BUILDERS)
def test_every_swapped_layer_is_within_the_bound(name, dtype):
    model = calibrated(name).to(dtype)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0], out)))
             for m in depthwise_convs(model)]
    with torch.no_grad():
        model(image(dtype=dtype))
        for hook in hooks:
            hook.remove()
        assert len(seen) == PAPER_DEPTHWISE[name]
        for conv, x, expected in seen:
            result = DepthwiseConv2dUnfold.from_conv(conv)(x)
            # Both results are within gamma_n * sum|x*w| of the exact one (Higham eq. 3.5), so
            # they differ by at most twice that: conftest.conv_tolerance.
            bound = conv_tolerance(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                   conv.dilation, conv.groups)
            assert ((result - expected).abs().double().numpy() - bound).max() <= 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", BUILDERS)
def test_swapped_network_matches_within_tolerance(name, dtype):
    original = calibrated(name).to(dtype)
    swapped = calibrated(name).to(dtype)
    count = replace_depthwise(swapped, DepthwiseConv2dUnfold.from_conv)
    with torch.no_grad():
        expected, result = original(image(dtype=dtype)), swapped(image(dtype=dtype))
    assert result.dtype == dtype
    assert (result - expected).abs().max().item() <= network_tolerance(expected, dtype, count)


class FlippedKernel(nn.Module):
    """A deliberately wrong replacement: correlation with the kernel rotated by 180 degrees."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        return F.conv2d(x, c.weight.flip(-1, -2), c.bias, c.stride, c.padding, c.dilation,
                        c.groups)


@pytest.mark.parametrize("name", BUILDERS)
def test_the_network_check_catches_a_wrong_layer(name):
    # The end-to-end tolerance above must have teeth: a plausible bug must exceed it.
    original = calibrated(name).double()
    broken = calibrated(name).double()
    count = replace_depthwise(broken, FlippedKernel)
    with torch.no_grad():
        expected, result = original(image(dtype=torch.float64)), broken(image(dtype=torch.float64))
    assert (result - expected).abs().max().item() > 1e6 * network_tolerance(
        expected, torch.float64, count)


@pytest.mark.parametrize("name", BUILDERS)
def test_gradients_reach_the_replaced_layers(name):
    model = seeded(name)
    model.train()
    replace_depthwise(model, DepthwiseConv2dUnfold.from_conv)
    model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))).sum().backward()
    layers = [m for m in model.modules() if isinstance(m, DepthwiseConv2dUnfold)]
    assert layers and all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
                          for m in layers)


@pytest.mark.parametrize("name", BUILDERS)
def test_state_dict_round_trip(name, tmp_path):
    model = seeded(name, seed=1)
    path = tmp_path / f"mobilenet_{name}.pt"
    torch.save(model.state_dict(), path)
    fresh = seeded(name, seed=2)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        assert torch.equal(model(image()), fresh(image()))
    # The swapped network keeps nn.Conv2d's parameter names: the same file loads into it.
    swapped = seeded(name, seed=3)
    replace_depthwise(swapped, DepthwiseConv2dUnfold.from_conv)
    swapped.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(swapped.state_dict()[k], v) for k, v in model.state_dict().items())


def test_parameter_counts_match_the_papers():
    def counts(model):
        total = sum(p.numel() for p in model.parameters())
        weights = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                      for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        return total, weights

    v1_total, v1_weights = counts(mobilenet_v1())
    v2_total, v2_weights = counts(mobilenet_v2())
    # Howard et al. print 4.2M: both counts round to it.
    assert round(v1_total / 1e6, 1) == round(v1_weights / 1e6, 1) == 4.2
    # Sandler et al. print 3.4M: the conv + classifier weights are 3.47M, so the paper cut to
    # one decimal; with BatchNorm's scale and shift the count is 3.50M (see the chapter).
    assert int(v2_weights / 1e5) == 34
    assert 3.4e6 <= v2_weights < 3.5e6 <= v2_total < 3.51e6


def conv_widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_width_multiplier_thins_channels_as_the_papers_say():
    # v1: alpha multiplies every layer's channels.
    full, half = conv_widths(mobilenet_v1()), conv_widths(mobilenet_v1(0.5))
    assert half == [c // 2 for c in full]
    assert mobilenet_v1(0.5)[-1].in_features == 512
    # v2: channels rounded to multiples of 8; the last conv stays 1280 for alpha < 1.
    for alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        widths = conv_widths(mobilenet_v2(alpha))
        assert all(w % 8 == 0 for w in widths), alpha
        assert widths[-1] == (1280 if alpha <= 1 else d2l_torch.make_divisible(1280 * alpha))
    assert conv_widths(mobilenet_v2(0.5))[0] == 16 and conv_widths(mobilenet_v2(1.4))[0] == 48
    assert mobilenet_v2(num_classes=10)[-1].out_features == 10


def test_bad_make_layer_raises_and_leaves_the_model_unchanged():
    model = seeded("v1")
    before = list(model.modules())
    with pytest.raises(TypeError, match="must return an nn.Module, got function"):
        replace_depthwise(model, lambda conv: (lambda x: x))
    assert list(model.modules()) == before


def test_from_conv_refuses_non_depthwise_layers():
    with pytest.raises(ValueError, match="depthwise"):
        DepthwiseConv2dUnfold.from_conv(nn.Conv2d(4, 8, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        DepthwiseConv2dUnfold.from_conv(nn.Conv2d(4, 4, 3, groups=4, padding_mode="reflect"))


def test_replace_finds_depthwise_with_multiplier_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, groups=3),
                          nn.Conv2d(12, 12, 1), nn.Conv2d(1, 1, 3), nn.Conv2d(4, 8, 3, groups=2))
    with torch.no_grad():
        x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        model.double()
        expected = model[:2](x)
        assert replace_depthwise(model, DepthwiseConv2dUnfold.from_conv) == 1
        assert isinstance(model[0], DepthwiseConv2dUnfold) and model[0].bias is not None
        # float64: the depthwise outputs differ by at most conftest.conv_tolerance (2 * gamma_10
        # * sum|x*w|, Higham eq. 3.5), below 1e-14 for these O(1) values; the 1x1 conv after it
        # (12 terms, |w| <= 1/sqrt(12) from nn.Conv2d's init) scales that by at most sqrt(12)
        # and adds its own gamma_13 round-off, so 1e-12 leaves room.
        torch.testing.assert_close(model[:2](x), expected, rtol=0, atol=1e-12)
