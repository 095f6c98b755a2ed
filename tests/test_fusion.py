"""The fused depthwise + pointwise kernel (d2ldw.tvm.fused), the network that uses it, and
the harness that times it (d2ldw.bench.fusion)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import REPO
from d2ldw import isolated
from d2ldw import torch as d2l_torch
from d2ldw.hardware import cpu_caches

tvm = pytest.importorskip("tvm")
from tvm import te  # noqa: E402

from d2ldw import tvm as d2l_tvm  # noqa: E402
from d2ldw.bench import fusion  # noqa: E402

# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

LANES = d2l_tvm.host_vector_lanes()
U = np.finfo(np.float32).eps / 2


def pair_and_bound(x, wd, bd, wp, bp, stride, act_d, act_p, residual):
    """The pair in float64 and a bound on any float32 evaluation's error: each depthwise
    output errs by at most gamma_10 times the sum of its terms' magnitudes, which the
    pointwise sum carries through with its weights' magnitudes, plus its own gamma_(C+2)."""
    def conv(x, w, b, groups=1, s=1, p=0):
        return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                        s, p, groups=groups).numpy()

    def act(y, a):
        return y if a is None else np.minimum(np.maximum(y, 0), 6 if a == "relu6" else np.inf)

    c = x.shape[1]
    d = act(conv(x, wd, bd, c, stride, 1), act_d)
    d_abs = conv(np.abs(x), np.abs(wd), np.abs(bd), c, stride, 1)
    z = conv(d, wp, bp) + (residual if residual is not None else 0)
    g = lambda m: m * U / (1 - m * U)  # noqa: E731
    d_err = g(10) * d_abs
    z_abs = conv(np.abs(d) + d_err, np.abs(wp), np.abs(bp)) + (
        np.abs(residual) if residual is not None else 0)
    bound = g(c + 2) * z_abs + conv(d_err, np.abs(wp), np.zeros_like(bp))
    return act(z, act_p), 2 * bound


CASES = [  # channels, out channels, size, stride, depthwise / pointwise activation, residual
    (32, 16, 16, 1, "relu6", None, False),
    (24, 24, 9, 1, "relu6", None, True),
    (24, 40, 9, 2, "relu6", None, False),
    (144, 24, 8, 2, "relu6", None, False),
    (64, 64, 7, 1, "relu", "relu", False),
]


@pytest.mark.parametrize("c, o, size, stride, act_d, act_p, residual", CASES)
@pytest.mark.parametrize("blocks", [1, None])
def test_the_fused_pair_is_within_the_bound_of_the_two_convolutions(c, o, size, stride,
                                                                      act_d, act_p, residual,
                                                                      blocks):
    rng = np.random.default_rng(c + o + size)
    x = rng.standard_normal((1, c, size, size))
    wd, bd = rng.standard_normal((c, 1, 3, 3)), rng.standard_normal(c)
    wp, bp = rng.standard_normal((o, c, 1, 1)), rng.standard_normal(o)
    out = (size - 1) // stride + 1
    r = rng.standard_normal((1, o, out, out)) if residual else None
    x, wd, bd, wp, bp = (a.astype("float32") for a in (x, wd, bd, wp, bp))
    r = r.astype("float32") if r is not None else None
    xb, yb = d2l_tvm.channel_block(c, LANES), d2l_tvm.channel_block(o, LANES)
    X = te.placeholder((1, c // xb, size, size, xb), name="X")
    Kd = te.placeholder((c // xb, 3, 3, xb), name="Kd")
    Bd = te.placeholder((c // xb, xb), name="Bd")
    Kp = te.placeholder((o // yb, c, yb), name="Kp")
    Bp = te.placeholder((o // yb, yb), name="Bp")
    R = te.placeholder((1, o // yb, out, out, yb), name="R") if residual else None
    Y = d2l_tvm.depthwise_pointwise_nchwc(X, Kd, Bd, Kp, stride, 1, act_d)
    Z = d2l_tvm.bias_activation_nchwc(Y, Bp, act_p, R)
    tile = (None, 1) if blocks else d2l_tvm.register_tile(out, o // yb,
                                                          d2l_tvm.vector_registers())
    tensors = [X, Kd, Bd, Kp, Bp, *([R] if R is not None else []), Z]
    module = d2l_tvm.schedule_depthwise_pointwise(d2l_tvm.prim_module(tensors), *tile)
    arrays = [d2l_tvm.to_nchwc(x, xb), d2l_tvm.depthwise_weight_to_nchwc(wd, xb),
              bd.reshape(-1, xb),
              np.ascontiguousarray(wp[:, :, 0, 0].reshape(o // yb, yb, c).transpose(0, 2, 1)),
              bp.reshape(-1, yb), *([d2l_tvm.to_nchwc(r, yb)] if r is not None else []),
              np.zeros((1, o // yb, out, out, yb), "float32")]
    bound = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]
    d2l_tvm.build(module)(*bound)
    result = d2l_tvm.from_nchwc(bound[-1].numpy())
    exact, tolerance = pair_and_bound(*(a.astype("float64") for a in (x, wd, bd, wp, bp)),
                                      stride, act_d, act_p,
                                      r.astype("float64") if r is not None else None)
    assert result.shape == exact.shape
    assert np.all(np.abs(result - exact) <= tolerance)
    # the bound is tight enough to catch a kernel that drops one window tap
    assert not np.all(np.abs(result - exact + 1e-3 * np.abs(exact).max()) <= tolerance)


def test_the_fused_definition_and_schedule_refuse_bad_inputs():
    X = te.placeholder((1, 2, 8, 8, 8), name="X")
    Kd = te.placeholder((2, 3, 3, 8), name="Kd")
    Bd = te.placeholder((2, 8), name="Bd")
    Kp = te.placeholder((3, 16, 8), name="Kp")
    with pytest.raises(ValueError, match=r"Kd must have shape \(2, kH, kW, 8\) to match X"):
        d2l_tvm.depthwise_pointwise_nchwc(X, te.placeholder((2, 3, 3, 4), name="Kd"), Bd, Kp)
    with pytest.raises(ValueError, match=r"Bd must have shape \(2, 8\), got \(8, 2\)"):
        d2l_tvm.depthwise_pointwise_nchwc(X, Kd, te.placeholder((8, 2), name="Bd"), Kp)
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'gelu'"):
        d2l_tvm.depthwise_pointwise_nchwc(X, Kd, Bd, Kp, activation="gelu")
    with pytest.raises(ValueError, match=r"K must have shape \(O/y, 16, y\)"):
        d2l_tvm.depthwise_pointwise_nchwc(X, Kd, Bd, te.placeholder((3, 8, 8), name="Kp"))
    with pytest.raises(ValueError, match="X must"):
        d2l_tvm.depthwise_pointwise_nchwc(te.placeholder((2, 8, 8, 8), name="X"), Kd, Bd, Kp)
    Bp = te.placeholder((3, 8), name="Bp")
    Z = d2l_tvm.bias_activation_nchwc(d2l_tvm.depthwise_pointwise_nchwc(X, Kd, Bd, Kp), Bp)
    module = d2l_tvm.prim_module([X, Kd, Bd, Kp, Bp, Z])
    with pytest.raises(ValueError, match=r"blocks \(2\) must divide the 3 output"):
        d2l_tvm.schedule_depthwise_pointwise(module, blocks=2)


@pytest.fixture(scope="module", params=["v1", "v2"])
def networks(request):
    layers = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet(request.param))
    image = d2l_torch.seeded_image().numpy()
    return (layers, image, d2l_tvm.CompiledNetwork(layers, image.shape),
            d2l_tvm.CompiledNetwork(layers, image.shape, fuse=True))


def test_the_fused_network_computes_the_same_logits(networks):
    layers, image, separate, fused = networks
    exact = d2l_torch.run_layers(layers, torch.from_numpy(image), torch.float64)[-1]
    logits, fused_logits = separate(image), fused(image)
    assert fused_logits.argmax() == logits.argmax()
    # within 10x the separate kernels' distance to the float64 network
    assert np.abs(fused_logits - exact).max() <= 10 * np.abs(logits - exact).max()
    pairs = fusion.depthwise_pointwise_pairs(layers)
    assert fused.fused and not separate.fused
    assert fused.kernels < separate.kernels
    with pytest.raises(ValueError, match="compile it with fuse=False to look inside"):
        fused.layer_seconds()
    with pytest.raises(ValueError, match="keeps no depthwise results"):
        fused.layer_outputs()
    module, calls = d2l_tvm.network_module(layers, image.shape, fuse=True)
    assert len(calls) == len(layers)
    assert all(calls[k] == calls[k + 1] and calls[k].startswith("depthwise")
               for k in pairs)
    with pytest.raises(TypeError, match="fuse must be a bool, got str"):
        d2l_tvm.CompiledNetwork(layers, image.shape, fuse="yes")


def test_the_pairs_of_both_networks_are_found():
    v1 = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v1"))
    v2 = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v2"))
    for layers in (v1, v2):
        pairs = fusion.depthwise_pointwise_pairs(layers)
        assert pairs == [k for k, layer in enumerate(layers)
                         if layer["kind"] == "depthwise"]  # each followed by a pointwise
        assert all(layers[k + 1]["kind"] == "pointwise" for k in pairs)
    assert len(fusion.depthwise_pointwise_pairs(v1)) == sum(
        layer["kind"] == "depthwise" for layer in v1)
    assert fusion.depthwise_pointwise_pairs([{"kind": "depthwise"}]) == []
    with pytest.raises(TypeError, match="layers must be inference_layers' list"):
        fusion.depthwise_pointwise_pairs("depthwise")
    with pytest.raises(TypeError, match="layers must be inference_layers' list"):
        fusion.depthwise_pointwise_pairs([{"weight": 1}])


def test_pair_kernels_compute_the_reference_both_ways():
    layers = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v2"))
    image = d2l_torch.seeded_image().numpy()
    inputs = [image, *d2l_torch.run_layers(layers, image)]
    k = fusion.depthwise_pointwise_pairs(layers)[2]  # a residual block
    dw, pw = layers[k], layers[k + 1]
    assert pw["residual"] is not None
    residual = inputs[pw["residual"]]
    pair = fusion.PairKernels(dw, pw, inputs[k], residual)
    outputs = pair.outputs()
    assert not outputs["fused"].any()  # nothing written before a call
    pair.separate()
    pair.fused()
    exact = fusion.pair_reference(dw, pw, inputs[k], residual)
    # the reference is the network's own next-but-one output, in float64
    assert np.abs(exact - inputs[k + 2]).max() <= 1e-5 * np.abs(exact).max()
    for out in pair.outputs().values():
        assert np.abs(out - exact).max() <= 1e-5 * np.abs(exact).max()
    with pytest.raises(ValueError, match="expected a depthwise then a pointwise layer"):
        fusion.PairKernels(pw, dw, inputs[k], residual)
    with pytest.raises(TypeError, match="x must be an NCHW NumPy array"):
        fusion.pair_reference(dw, pw, inputs[k][0], residual)


def test_time_fusion_times_every_pair_in_its_own_process():
    result = isolated.run_isolated(fusion.time_fusion, 1, version="v1", repeat=1)
    layers = d2l_torch.inference_layers(d2l_torch.seeded_mobilenet("v1"))
    pairs = fusion.depthwise_pointwise_pairs(layers)
    assert [row["layer"] for row in result["pairs"]] == pairs
    for row in result["pairs"]:
        assert row["separate_us"] > 0 and row["fused_us"] > 0
        assert max(row["relative_error"].values()) < 1e-5
        c, h, w = row["input"]
        out = -(-h // row["stride"])
        assert row["intermediate_kib"] == pytest.approx(4 * c * out * out / 1024)
    assert result["kernels_built"] < 3 * len(pairs)  # equal shapes built once
    table = fusion.format_fusion_table(result).splitlines()
    assert len(table) == len(pairs) + len(result["cpu_description"].splitlines()) + 4
    assert table[-1].startswith("all pairs: separate")
    with pytest.raises(RuntimeError, match="repeat must be"):
        isolated.run_isolated(fusion.time_fusion, 1, version="v1", repeat=0)


def test_cpu_caches_reads_the_data_caches():
    caches = cpu_caches()
    if os.path.isdir("/sys/devices/system/cpu/cpu0/cache"):
        assert "L1d" in caches and all(size > 0 for size in caches.values())
        sizes = [caches[name] for name in ("L1d", "L2", "L3") if name in caches]
        assert sizes == sorted(sizes)  # each level larger than the one before
    assert cpu_caches(10 ** 6) == {}  # no such CPU
    with pytest.raises(ValueError, match="cpu must be a CPU number"):
        cpu_caches(-1)


BIND = """
import os, threading
from d2ldw.isolated import bind_beside_pinned_threads
cpus = sorted(os.sched_getaffinity(0))
ready, done = threading.Event(), threading.Event()
def worker():
    os.sched_setaffinity(0, {cpus[-1]})
    ready.set()
    done.wait(60)
t = threading.Thread(target=worker)
t.start()
ready.wait(60)
print(sorted(bind_beside_pinned_threads()), cpus)
done.set()
t.join()
"""


def test_the_calling_thread_is_bound_beside_a_pinned_worker():
    run = subprocess.run([sys.executable, "-c", BIND], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    bound, cpus = (eval(part + "]") for part in run.stdout.strip()[:-1].split("] "))
    if len(cpus) == 1:  # every CPU taken by the worker: nothing changes
        assert bound == cpus
    else:
        assert bound == cpus[:-1]


CHECK = """
import os
from d2ldw.bench import check_tvm_threads
before = sorted(os.sched_getaffinity(0))
try:  # the pool starts here, with its default size
    check_tvm_threads(len(before))
except RuntimeError:  # another size than this machine's CPUs: refused, as it should be
    pass
print(before == sorted(os.sched_getaffinity(0)))
"""


def test_checking_the_pool_outside_run_isolated_leaves_the_cpus_alone():
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("D2LDW_ISOLATED", "TVM_NUM_THREADS", "TVM_BIND_THREADS")}
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=environment)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True"]
