"""Issue 24, items 3 and 4: the TE layer behaves like a PyTorch layer, and one memory guard
serves every path.

3. ``TEDepthwiseConv2d`` survives ``copy.deepcopy``, pickling, ``torch.save``/``torch.load`` and
   ``state_dict`` round trips after a forward pass (its compiled kernels are a cache that
   copies leave out and compile again), and so does a MobileNet swapped to TE layers.
4. ``d2ldw.check_conv_memory`` (Python ints, no int64 wrap-around) is called by the unfold
   layer, the TE layer, the TE builders; ``build_and_run`` adds up every TE buffer with
   ``check_te_memory``. The same call is refused everywhere with the same message, in well
   under a second, and ``max_bytes=`` raises the limit everywhere.

Whether the TE layer can reproduce ``F.conv2d`` depends on the CPU (tests/test_bitwise.py); the
copies here are compared with the original layer, so every assertion holds on any CPU: where the
original refuses (no emulated order matches), the copy must refuse with the same message.
"""
import copy
import functools
import io
import pickle
import time

import numpy as np
import pytest
import torch

import d2ldw
from d2ldw.torch import (DepthwiseConv2dUnfold, depthwise_conv2d_unfold, mobilenet_v1,
                         replace_depthwise)

te = pytest.importorskip("tvm.te")
d2l_tvm = pytest.importorskip("d2ldw.tvm", exc_type=ImportError)
from d2ldw.torch import TEDepthwiseConv2d  # noqa: E402  (needs TVM at first use only)

LIMIT = d2ldw.MEMORY_LIMIT


def seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def outcome(module, x):
    """('output', tensor) or ('refused', message): what a forward pass gives on this CPU."""
    try:
        with torch.no_grad():
            return "output", module(x)
    except RuntimeError as error:
        assert "follows none of the emulated summation orders" in str(error)
        return "refused", str(error)


def same_outcome(a, b):
    return a[0] == b[0] and (torch.equal(a[1], b[1]) if a[0] == "output" else a[1] == b[1])


def used_layer():
    """A TE layer after a forward pass, its input, and what that pass gave."""
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8, bias=False)
    with torch.no_grad():
        conv.weight.copy_(seeded(16, 1, 3, 3, seed=1))
    layer = TEDepthwiseConv2d.from_conv(conv)
    x = seeded(2, 8, 9, 9, seed=2)
    return layer, x, outcome(layer, x)


def saved_and_loaded(obj, **load):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, **load)


# --- 3. a layer that behaves like PyTorch's --------------------------------------------------

def test_te_layer_survives_deepcopy_after_a_forward_pass():
    layer, x, first = used_layer()
    if first[0] == "output":
        assert len(layer.kernels) == 1  # compiled: the case that used to fail
    twin = copy.deepcopy(layer)
    assert twin.kernels == {} and len(layer.kernels) == (first[0] == "output")
    assert twin.weight is not layer.weight and torch.equal(twin.weight, layer.weight)
    assert (twin.stride, twin.padding, twin.dilation) == (layer.stride, layer.padding,
                                                          layer.dilation)
    assert same_outcome(outcome(twin, x), first)
    with torch.no_grad():
        twin.weight.mul_(2)  # a deep copy: the original keeps its weights
    assert same_outcome(outcome(layer, x), first)


def test_te_layer_survives_pickle():
    layer, x, first = used_layer()
    restored = pickle.loads(pickle.dumps(layer))
    assert isinstance(restored, TEDepthwiseConv2d) and restored.kernels == {}
    assert same_outcome(outcome(restored, x), first)
    assert len(layer.kernels) == (first[0] == "output")  # pickling took nothing away


def test_te_layer_survives_torch_save_of_the_whole_module():
    layer, x, first = used_layer()
    loaded = saved_and_loaded(layer, weights_only=False)  # PyTorch 2.6+: modules need this
    assert isinstance(loaded, TEDepthwiseConv2d) and loaded.kernels == {}
    assert same_outcome(outcome(loaded, x), first)


def test_te_layer_state_dict_round_trip():
    layer, x, first = used_layer()
    state = saved_and_loaded(layer.state_dict(), weights_only=True)
    assert list(state) == ["weight"]  # compiled kernels are not state
    other = TEDepthwiseConv2d(torch.zeros(16, 1, 3, 3), stride=2, padding=1)
    assert outcome(other, x)[0] == first[0]  # compiled for zeros first: kernels take weights
    other.load_state_dict(state)
    assert same_outcome(outcome(other, x), first)


def test_te_swapped_mobilenet_copies_give_equal_logits(measured_branch):
    """Acceptance: a MobileNet v1 swapped to TE layers, after a forward pass, deep-copied and
    saved whole; both copies give torch.equal logits (or, where F.conv2d follows no emulated
    order on this CPU, refuse as the original does)."""
    torch.manual_seed(0)
    model = mobilenet_v1(width_multiplier=0.25).eval()
    assert replace_depthwise(model, TEDepthwiseConv2d.from_conv) == 13
    image = seeded(1, 3, 64, 64, seed=3)
    first = outcome(model, image)
    measured_branch("logits compared torch.equal" if first[0] == "output"
                    else "a layer's order is unknown here: copies must refuse alike")
    for twin in (copy.deepcopy(model), saved_and_loaded(model, weights_only=False)):
        assert same_outcome(outcome(twin, image), first)


# --- 4. one memory guard for every path ------------------------------------------------------

def refusal(call):
    """The ValueError message of ``call``, which must come in well under a second."""
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        call()
    assert time.perf_counter() - start < 1.0
    return str(error.value)


HUGE = {  # padding -> the message every path gives for a (1, 4, 16, 16) input, 3x3 kernel
    3000: "the padded input (1, 4, 6016, 6016), its windows (1, 36, 36168196) and the output "
          "(1, 4, 6014, 6014) would need 5.93 GiB (6365987456 bytes), more than the limit of "
          "2147483648 bytes; pass max_bytes= to raise it",
    10**6: "the padded input (1, 4, 2000016, 2000016), its windows (1, 36, 4000056000196) and "
           "the output (1, 4, 2000014, 2000014) would need 6.56e+05 GiB (704009984035456 "
           "bytes), more than the limit of 2147483648 bytes; pass max_bytes= to raise it",
}


def te_placeholders(x_shape=(1, 4, 16, 16), w_shape=(4, 1, 3, 3)):
    return te.placeholder(x_shape, name="X"), te.placeholder(w_shape, name="K")


@pytest.mark.parametrize("padding", sorted(HUGE))
def test_every_path_refuses_a_huge_padding_fast_with_one_message(padding):
    x, w = torch.zeros(1, 4, 16, 16), torch.zeros(4, 1, 3, 3)
    X, K = te_placeholders()
    dense = te.placeholder((4, 4, 3, 3), name="K")
    paths = {
        "TEDepthwiseConv2d": lambda: TEDepthwiseConv2d(w, padding=padding)(x),
        "TEDepthwiseConv2d.compiled": lambda: TEDepthwiseConv2d(
            w, padding=padding).compiled((1, 4, 16, 16)),
        "DepthwiseConv2dUnfold": lambda: DepthwiseConv2dUnfold(w, padding=padding)(x),
        "depthwise_conv2d_unfold": lambda: depthwise_conv2d_unfold(x, w, padding=padding),
        "tvm depthwise_conv2d": lambda: d2l_tvm.depthwise_conv2d(X, K, padding=padding),
        "tvm group_conv2d": lambda: d2l_tvm.group_conv2d(X, K, padding=padding, groups=4),
    }
    messages = {name: refusal(call) for name, call in paths.items()}
    assert messages == {name: HUGE[padding] for name in paths}
    # a dense 4 -> 4 convolution reads 36 values per output too: the same sizes
    assert refusal(lambda: d2l_tvm.conv2d(X, dense, padding=padding)) == HUGE[padding]


def test_the_te_layer_refuses_before_measuring_or_compiling():
    layer = TEDepthwiseConv2d(torch.zeros(4, 1, 3, 3), padding=3000)
    refusal(lambda: layer(torch.zeros(1, 4, 16, 16)))
    assert layer.kernels == {}


def test_build_and_run_counts_in_python_ints():
    """padding=(2**31-6)//2 makes an 8x8 input's output 2**31 x 2**31: 2**64 elements in all,
    which NumPy's int64 product wraps to 0 (the old check let it pass). The builder refuses
    it; built with its limit raised, build_and_run refuses it too."""
    padding = (2**31 - 6) // 2
    X, K = te_placeholders((1, 3, 8, 8), (4, 3, 3, 3))
    assert refusal(lambda: d2l_tvm.conv2d(X, K, padding=padding)) == (
        "the padded input (1, 3, 2147483650, 2147483650), its windows (1, 27, "
        "4611686018427387904) and the output (1, 4, 2147483648, 2147483648) would need "
        "5.84e+11 GiB (627189298609203970096 bytes), more than the limit of 2147483648 "
        "bytes; pass max_bytes= to raise it")
    Y = d2l_tvm.conv2d(X, K, padding=padding, max_bytes=2**80)
    assert int(np.prod(d2l_tvm.static_shape(Y))) == 0  # the wrap-around the old check hit
    inputs = [np.zeros((1, 3, 8, 8), "float32"), np.zeros((4, 3, 3, 3), "float32")]
    assert refusal(lambda: d2l_tvm.build_and_run([X, K, Y], inputs)) == (
        "the TE buffers Y (1, 4, 2147483648, 2147483648), PaddedX (1, 3, 2147483650, "
        "2147483650), X (1, 3, 8, 8) and 1 more would need 1.2e+11 GiB "
        "(129127208619046077664 bytes), more than the limit of 2147483648 bytes; "
        "pass max_bytes= to raise it")


def test_build_and_run_counts_every_stage():
    """The stages count, not only the output: a padded input of 400 bytes and an output of
    64 bytes are refused at a limit of 400."""
    X, K = te_placeholders((1, 1, 4, 4), (1, 1, 3, 3))
    Y = d2l_tvm.conv2d(X, K, padding=3)  # PaddedX (1, 1, 10, 10), Y (1, 1, 8, 8)
    inputs = [np.ones((1, 1, 4, 4), "float32"), np.ones((1, 1, 3, 3), "float32")]
    message = refusal(lambda: d2l_tvm.build_and_run([X, K, Y], inputs, max_bytes=400))
    assert message.startswith("the TE buffers PaddedX (1, 1, 10, 10), Y (1, 1, 8, 8), X (1, 1, "
                              "4, 4) and 1 more would need ")
    assert "(756 bytes)" in message  # (100 + 64 + 16 + 9) * 4
    y = d2l_tvm.build_and_run([X, K, Y], inputs, max_bytes=756)
    assert y.shape == (1, 1, 8, 8) and y.sum() == 144  # each input pixel read by 9 outputs


def test_max_bytes_raises_the_limit_the_same_everywhere():
    """One small convolution needs (4*10*10 + 36*64 + 4*8*8) * 4 = 11,840 bytes: refused at
    11,839 and accepted at 11,840 by every path."""
    torch.manual_seed(0)  # the from_conv layer's initial weights
    x, w = seeded(1, 4, 8, 8, seed=4), seeded(4, 1, 3, 3, seed=5)
    X, K = te_placeholders((1, 4, 8, 8))
    needed, limit = 11_840, "more than the limit of 11839 bytes"
    paths = {
        "TEDepthwiseConv2d": lambda m: TEDepthwiseConv2d(w, padding=1, max_bytes=m)(x),
        "TEDepthwiseConv2d.from_conv": lambda m: TEDepthwiseConv2d.from_conv(
            torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), max_bytes=m)(x),
        "depthwise_conv2d_unfold": lambda m: depthwise_conv2d_unfold(x, w, padding=1,
                                                                     max_bytes=m),
        "tvm depthwise_conv2d": lambda m: d2l_tvm.depthwise_conv2d(X, K, padding=1,
                                                                   max_bytes=m),
        "tvm group_conv2d": lambda m: d2l_tvm.group_conv2d(X, K, padding=1, groups=4,
                                                           max_bytes=m),
    }
    for name, call in paths.items():
        message = refusal(functools.partial(call, needed - 1))
        assert f"({needed} bytes), {limit}" in message, name
        try:
            call(needed)
        except RuntimeError as error:  # the TE layer, where no emulated order matches
            assert "follows none of the emulated summation orders" in str(error), name
    with pytest.raises(ValueError, match="max_bytes must be >= 1, got 0"):
        TEDepthwiseConv2d(w, max_bytes=0)
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        TEDepthwiseConv2d(w, max_bytes=1.5)


def test_check_conv_memory_counts_in_python_ints_and_checks_itemsize():
    g = d2ldw.conv2d_geometry((1, 3, 8, 8), (4, 3, 3, 3), padding=(2**31 - 6) // 2)
    needed = (3 * (2**31 + 2) ** 2 + (27 + 4) * 2**62) * 4  # padded, windows, output
    assert needed == 627189298609203970096
    with pytest.raises(ValueError, match=rf"\({needed} bytes\)"):
        d2ldw.check_conv_memory(g, 4)
    d2ldw.check_conv_memory(g, 4, max_bytes=needed)  # exactly enough
    small = d2ldw.conv2d_geometry((3, 8, 8), (4, 3, 3, 3))  # unbatched: shapes say so
    with pytest.raises(ValueError, match=r"padded input \(3, 8, 8\), its windows \(27, 36\) "
                                         r"and the output \(4, 6, 6\)"):
        d2ldw.check_conv_memory(small, 8, max_bytes=100)
    with pytest.raises(ValueError, match="itemsize must be >= 1, got 0"):
        d2ldw.check_conv_memory(small, 0)
    with pytest.raises(TypeError, match="itemsize must be an int"):
        d2ldw.check_conv_memory(small, 4.0)
    assert LIMIT == 2**31
