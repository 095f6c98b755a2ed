"""Chapter 4.1: SeparableConv2d, separable_conv2d, the Gluon block and the TE version all agree
with two F.conv2d calls; gradients reach external weights; bad shapes get clear errors."""
import copy
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import conv_tolerance
from d2ldw import separable_geometry
from d2ldw.torch import SeparableConv2d, replace_depthwise, separable_conv2d

# MXNet and TVM are optional: without them these tests are skipped, and
# the skip says which pip package to install (make test installs both).
d2l_mx = pytest.importorskip("d2ldw.mxnet", exc_type=ImportError)
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
te = pytest.importorskip("tvm.te")

SWEEP_SIZE = 120


def random_config(rng):
    """A valid separable configuration: channels, multiplier, kernel, stride, padding, ..."""
    kernel = (rng.randint(1, 4), rng.randint(1, 4))
    dilation = rng.choice([1, 2, (2, 1)])
    padding = rng.choice([0, 1, (1, 2), "valid", "same"])
    stride = 1 if padding == "same" else rng.choice([1, 2, (1, 2), 3])
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    size = tuple(dd * (k - 1) + 1 + rng.randint(0, 5) for dd, k in zip(d, kernel))
    return dict(batch=rng.choice([1, 2, 3]), channels=rng.randint(1, 4),
                multiplier=rng.randint(1, 3), out_channels=rng.randint(1, 5), kernel=kernel,
                size=size, stride=stride, padding=padding, dilation=dilation,
                depthwise_bias=rng.random() < 0.5, pointwise_bias=rng.random() < 0.5)


CONFIGS = [random_config(random.Random(seed)) for seed in range(SWEEP_SIZE)]


def make_data(config, dtype="float32", seed=0):
    """Seeded x, depthwise weight, pointwise weight and biases (None when off), as NumPy."""
    rng = np.random.default_rng(seed)
    c, m, o = config["channels"], config["multiplier"], config["out_channels"]
    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)
    return (draw(config["batch"], c, *config["size"]), draw(c * m, 1, *config["kernel"]),
            draw(o, c * m, 1, 1), draw(c * m) if config["depthwise_bias"] else None,
            draw(o) if config["pointwise_bias"] else None)


def arguments(config):
    return dict(stride=config["stride"], padding=config["padding"], dilation=config["dilation"])


def reference(x, dw, pw, db, pb, config):
    """The definition: two F.conv2d calls."""
    def t(a):
        return None if a is None else torch.from_numpy(a)
    hidden = F.conv2d(t(x), t(dw), t(db), groups=x.shape[1], **arguments(config))
    return F.conv2d(hidden, t(pw), t(pb)).numpy()


def separable_tolerance(x, dw, pw, db, pb, config):
    """Largest |difference| two correct implementations of the two stages may show.

    Stage 1: each implementation's hidden map is h + e1 with |e1| <= t1 / 2, where
    t1 = conv_tolerance(x, dw, db) is twice Higham's one-sided bound gamma_n * (|dw|*|x| + |db|)
    (conftest; Higham, eq. 3.5). Stage 2 is linear, so e1 reaches the output as pw * e1, at most
    |pw| * (t1 / 2); and its own rounding is at most gamma_m * (|pw| * |h + e1| + |pb|), with
    |h + e1| <= A + t1 / 2 and A = |dw|*|x| + |db|. Two implementations differ by at most twice
    the sum: |pw| * t1 + conv_tolerance(A + t1 / 2, pw, pb).
    """
    groups, kwargs = x.shape[1], arguments(config)
    t1 = torch.from_numpy(conv_tolerance(x, dw, db, groups=groups, **kwargs))
    def a(v):
        return None if v is None else torch.from_numpy(np.abs(v)).double()
    magnitude = F.conv2d(a(x), a(dw), a(db), groups=groups, **kwargs)
    # conv_tolerance takes the unit roundoff from its input's dtype, so the magnitude goes in
    # in the computation's dtype; rounded up by one ulp first, so the cast cannot lower it.
    bound_input = ((magnitude + t1 / 2) * (1 + 2.0**-20)).to(torch.from_numpy(x).dtype)
    propagated = F.conv2d(t1, a(pw)).numpy()
    return propagated + conv_tolerance(bound_input, pw, pb)


def run_module(x, dw, pw, pb, config):
    layer = SeparableConv2d(config["channels"], config["out_channels"], config["kernel"],
                            multiplier=config["multiplier"], bias=pb is not None,
                            **arguments(config))
    layer.load_weights(torch.from_numpy(dw), torch.from_numpy(pw),
                       None if pb is None else torch.from_numpy(pb))
    with torch.no_grad():
        return layer(torch.from_numpy(x)).numpy()


def run_functional(x, dw, pw, db, pb, config):
    def t(a):
        return None if a is None else torch.from_numpy(a)
    return separable_conv2d(t(x), t(dw), t(pw), t(db), t(pb), **arguments(config)).numpy()


def run_gluon(x, dw, pw, pb, config):
    g = separable_geometry(x.shape, dw.shape, pw.shape, **arguments(config))[0]
    (top, _), (left, _) = g.padding  # symmetric here: the caller checks
    block = d2l_mx.SeparableConv2D(config["channels"], config["out_channels"], config["kernel"],
                                   strides=g.stride, padding=(top, left), dilation=g.dilation,
                                   multiplier=config["multiplier"], use_bias=pb is not None)
    block.initialize()
    block.cast(str(x.dtype))
    block.load_weights(dw, pw, pb)
    block.hybridize()
    return block(d2l_mx.nd.array(x, dtype=x.dtype)).asnumpy()


def run_te(x, dw, pw, db, pb, config):

    arrays = {"X": x, "DW": dw, "PW": pw, "DB": db, "PB": pb}
    holders = {n: te.placeholder(a.shape, str(a.dtype), name=n)
               for n, a in arrays.items() if a is not None}
    Z = d2l_tvm.separable_conv2d(holders["X"], holders["DW"], holders["PW"],
                                 depthwise_bias=holders.get("DB"),
                                 pointwise_bias=holders.get("PB"), **arguments(config))
    return d2l_tvm.build_and_run([*holders.values(), Z],
                                 [a for a in arrays.values() if a is not None])


def symmetric_padding(config):
    g = separable_geometry((1, config["channels"], *config["size"]),
                           (config["channels"], 1, *config["kernel"]),
                           (1, config["channels"], 1, 1), **arguments(config))[0]
    return all(before == after for before, after in g.padding)


def test_the_sweep_covers_what_the_issue_asks_for():
    assert len(CONFIGS) >= 100
    def seen(key):
        return {str(c[key]) for c in CONFIGS}
    assert {"1", "2", "3"} <= seen("multiplier") and {"1", "2", "3"} <= seen("batch")
    assert {"1", "2"} <= seen("stride") and {"1", "2"} <= seen("dilation")
    assert seen("depthwise_bias") == seen("pointwise_bias") == {"True", "False"}
    assert not all(symmetric_padding(c) for c in CONFIGS)  # 'same' with an even extent


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index", range(SWEEP_SIZE))
def test_functional_and_te_match_two_conv2d_calls(index, dtype):
    config = CONFIGS[index]
    data = make_data(config, dtype, seed=index)
    expected = reference(*data, config)
    tolerance = separable_tolerance(*data, config)
    runs = [("separable_conv2d", run_functional)]
    if dtype == "float32" or index % 4 == 0:  # TE compiles per config: float64 on a quarter
        runs.append(("te", run_te))
    for name, run in runs:
        result = run(*data, config)
        assert result.shape == expected.shape, name
        assert np.all(np.abs(result - expected) <= tolerance), (name, config)


@pytest.mark.parametrize("index", range(SWEEP_SIZE))
def test_module_and_gluon_block_match_two_conv2d_calls(index):
    # Neither layer has a depthwise bias (see the chapter), so the reference has none either.
    config = CONFIGS[index]
    x, dw, pw, _, pb = make_data(config, "float32", seed=index)
    expected = reference(x, dw, pw, None, pb, config)
    tolerance = separable_tolerance(x, dw, pw, None, pb, config)
    runs = {"SeparableConv2d": run_module}
    if symmetric_padding(config):  # Gluon's Conv2D pads both sides alike
        runs["gluon"] = run_gluon
    for name, run in runs.items():
        result = run(x, dw, pw, pb, config)
        assert result.shape == expected.shape, name
        assert np.all(np.abs(result - expected) <= tolerance), (name, config)


def test_the_gluon_block_is_tested_on_most_of_the_sweep():
    assert sum(symmetric_padding(c) for c in CONFIGS) >= 100


def test_the_tolerance_catches_a_layout_bug():
    """A bound is only useful if a real mistake exceeds it: M > 1 with the depthwise filters
    in the wrong order (channel-major vs multiplier-major) must fail it."""
    config = dict(CONFIGS[0], channels=3, multiplier=2, batch=2, kernel=(3, 3), size=(8, 8),
                  stride=1, padding=1, dilation=1)
    x, dw, pw, db, pb = make_data(config, "float32", seed=1)
    shuffled = dw.reshape(3, 2, 1, 3, 3).transpose(1, 0, 2, 3, 4).reshape(6, 1, 3, 3)
    wrong = run_functional(x, shuffled, pw, db, pb, config)
    assert np.any(np.abs(wrong - reference(x, dw, pw, db, pb, config))
                  > separable_tolerance(x, dw, pw, db, pb, config))


def test_gradients_reach_external_weights():
    """gradcheck in float64 through separable_conv2d to every argument. The function is linear
    in each single entry, so gradcheck's central differences (eps=1e-6) are exact up to
    round-off of about u * |f| / eps ~ 1e-9, far inside its default atol=1e-5, rtol=1e-3."""
    g = torch.Generator().manual_seed(0)
    def make(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64,
                                          requires_grad=True)
    x, dw, pw = make(2, 3, 7, 6), make(6, 1, 3, 2), make(4, 6, 1, 1)
    db, pb = make(6), make(4)
    def function(*a):
        return separable_conv2d(*a, stride=(2, 1), padding=1, dilation=(1, 2))
    assert torch.autograd.gradcheck(function, (x, dw, pw, db, pb))


def test_gradients_reach_a_hypernetwork_that_makes_the_weights():
    """Weights computed by a linear 'hypernetwork' from a style vector, as in the chapter;
    gradcheck (same tolerance argument as above) through weights to the hypernetwork's input,
    and the hypernetwork's own parameters receive nonzero gradients."""
    torch.manual_seed(0)
    hyper = nn.Linear(5, 6 * 9 + 4 * 6).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def forward(style):
        weights = hyper(style)
        dw, pw = weights[:54].reshape(6, 1, 3, 3), weights[54:].reshape(4, 6, 1, 1)
        return separable_conv2d(x, dw, pw, padding=1)

    style = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(forward, (style,))
    forward(style).square().sum().backward()
    assert hyper.weight.grad is not None and hyper.weight.grad.abs().sum() > 0


def test_module_structure_and_replace_depthwise():
    layer = SeparableConv2d(4, 10, 3, padding=1, multiplier=2)
    assert isinstance(layer.depthwise, nn.Conv2d) and layer.depthwise.groups == 4
    assert layer.depthwise.weight.shape == (8, 1, 3, 3) and layer.depthwise.bias is None
    assert layer.pointwise.weight.shape == (10, 8, 1, 1) and layer.pointwise.bias is not None
    assert SeparableConv2d(4, 10, 3, bias=False).pointwise.bias is None
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = layer(x)
        # the layer returned unchanged is not counted as replaced (issue 24)
        assert replace_depthwise(layer, lambda conv: conv) == 0
        assert replace_depthwise(layer, copy.deepcopy) == 1
        assert torch.equal(layer(x), before)


def test_pointwise_shaped_depthwise_weight_is_named():
    """The reader's mistake: a (64, 3, 1, 1) weight on the depthwise layer."""
    layer = SeparableConv2d(3, 64, 3, padding=1)
    layer.depthwise.weight = nn.Parameter(torch.randn(64, 3, 1, 1))
    with pytest.raises(ValueError, match=r"depthwise.weight must have shape .*\(3, 1, 3, 3\).*"
                                         r"got \(64, 3, 1, 1\); that is the shape of "
                                         r"pointwise.weight"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="did you pass the pointwise weight as the depthwise"):
        separable_conv2d(torch.randn(1, 3, 8, 8), torch.randn(64, 3, 1, 1),
                         torch.randn(3, 1, 3, 3))


@pytest.mark.parametrize("weights, message", [
    (((6, 1, 3, 3), (4, 5, 1, 1), None, None), r"pointwise weight must have shape .*\(O, 6, 1, 1\)"),
    (((6, 1, 3, 3), (4, 6, 3, 3), None, None), r"pointwise weight must have shape"),
    (((5, 1, 3, 3), (4, 5, 1, 1), None, None), r"depthwise weight: .*\(3\*M, 1, 3, 3\)"),
    (((6, 3, 3, 3), (4, 6, 1, 1), None, None), r"depthwise weight"),
    (((6, 1, 3, 3), (4, 6, 1, 1), (3,), None), r"bias must have shape \(6,\)"),
    (((6, 1, 3, 3), (4, 6, 1, 1), None, (6,)), r"bias must have shape \(4,\)"),
])
def test_functional_shape_errors(weights, message):
    dw, pw, db, pb = (None if s is None else torch.zeros(s) for s in weights)
    with pytest.raises(ValueError, match=message):
        separable_conv2d(torch.zeros(1, 3, 8, 8), dw, pw, db, pb)


def test_functional_type_and_geometry_errors():
    with pytest.raises(TypeError, match="input must be a tensor, got ndarray"):
        separable_conv2d(np.zeros((1, 3, 8, 8)), torch.zeros(3, 1, 3, 3), torch.zeros(2, 3, 1, 1))
    with pytest.raises(ValueError, match="kernel extent 5"):
        separable_conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(3, 1, 3, 3),
                         torch.zeros(2, 3, 1, 1), dilation=2)


def test_load_weights_errors():
    layer = SeparableConv2d(3, 4, 3, bias=False)
    with pytest.raises(ValueError, match=r"pointwise.weight must have shape .*\(4, 3, 1, 1\) "
                                         r".*got \(4, 6, 1, 1\)"):
        layer.load_weights(torch.zeros(3, 1, 3, 3), torch.zeros(4, 6, 1, 1))
    with pytest.raises(ValueError, match="bias=False"):
        layer.load_weights(torch.zeros(3, 1, 3, 3), torch.zeros(4, 3, 1, 1), torch.zeros(4))
    block = d2l_mx.SeparableConv2D(3, 4, 3)
    block.initialize()
    with pytest.raises(ValueError, match=r"depthwise weight must have shape \(3, 1, 3, 3\), "
                                         r"got \(4, 3, 1, 1\)"):
        block.load_weights(np.zeros((4, 3, 1, 1)), np.zeros((4, 3, 1, 1)))


def test_te_errors():

    X = te.placeholder((1, 3, 8, 8), "float32", name="X")
    with pytest.raises(ValueError, match="did you pass the pointwise weight"):
        d2l_tvm.separable_conv2d(X, te.placeholder((4, 3, 1, 1), name="DW"),
                                 te.placeholder((3, 1, 3, 3), name="PW"))
    with pytest.raises(ValueError, match=r"X must be batched"):
        d2l_tvm.separable_conv2d(te.placeholder((3, 8, 8), name="X"),
                                 te.placeholder((3, 1, 3, 3), name="DW"),
                                 te.placeholder((4, 3, 1, 1), name="PW"))
    with pytest.raises(ValueError, match=r"K \(O, C, 1, 1\)"):
        d2l_tvm.pointwise_conv2d(X, te.placeholder((4, 3, 3, 3), name="K"))
