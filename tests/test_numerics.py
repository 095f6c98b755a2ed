"""d2ldw.numerics on hand-made cases: ULP distances, error reports, the dot-product bound."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import d2ldw
from d2ldw import (conv_error_bound, error_report, gamma, max_ulp_distance, round_to_bfloat16,
                   ulp_distance, unit_roundoff)

# Results depend on the CPU's instruction set: `make test-reduced-isa` runs this file
# again with a smaller one.
pytestmark = pytest.mark.cpu_dependent

DTYPES = [np.float16, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("start", [1.0, -3.5, 1e-3, 0.0])
def test_adjacent_floats_are_one_ulp_apart(dtype, start):
    a = dtype(start)
    up, down = np.nextafter(a, dtype(np.inf)), np.nextafter(a, dtype(-np.inf))
    assert max_ulp_distance(a, up) == max_ulp_distance(up, a) == 1
    assert max_ulp_distance(down, up) == 2
    assert max_ulp_distance(a, a) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_signed_zeros_and_subnormals(dtype):
    zero, minus_zero = dtype(0.0), dtype(-0.0)
    tiny = np.nextafter(zero, dtype(1))  # smallest positive subnormal
    assert max_ulp_distance(zero, minus_zero) == 0
    assert max_ulp_distance(minus_zero, tiny) == max_ulp_distance(-tiny, zero) == 1
    assert max_ulp_distance(-tiny, tiny) == 2
    smallest_normal = np.finfo(dtype).tiny
    # every subnormal step is one ULP: 2**(p-1) of them from zero to the smallest normal
    assert max_ulp_distance(zero, smallest_normal) == 2 ** (np.finfo(dtype).nmant)


@pytest.mark.parametrize("dtype", DTYPES)
def test_distance_across_zero_and_to_the_largest_float(dtype):
    big = np.finfo(dtype).max
    bits = np.dtype(dtype).itemsize * 8
    # the positive finite floats are the bit patterns 1 .. 2**(bits-1) - 2**nmant - 1
    positives = 2 ** (bits - 1) - 2 ** np.finfo(dtype).nmant - 1
    assert max_ulp_distance(dtype(0), big) == positives
    assert max_ulp_distance(-big, big) == 2 * positives


def test_elementwise_distances_and_empty_arrays():
    a = np.array([1.0, 2.0, -1.0], dtype=np.float32)
    b = np.array([1.0, np.nextafter(np.float32(2), np.float32(3)), -1.0], dtype=np.float32)
    assert ulp_distance(a, b).tolist() == [0, 1, 0]
    assert max_ulp_distance(np.zeros(0, np.float32), np.zeros(0, np.float32)) == 0


def test_bfloat16_ulps_through_float32():
    one = np.float32(1.0)
    assert max_ulp_distance(one, np.float32(1 + 2**-7), dtype="bfloat16") == 1
    assert max_ulp_distance(np.float32(-0.0), np.float32(0.0), dtype="bfloat16") == 0
    # agrees with torch's bfloat16: the next bfloat16 after 1
    after_one = torch.nextafter(torch.tensor(1.0, dtype=torch.bfloat16),
                                torch.tensor(2.0, dtype=torch.bfloat16))
    assert max_ulp_distance(one, np.float32(after_one.float().item()), dtype="bfloat16") == 1
    with pytest.raises(ValueError, match="not all bfloat16 numbers"):
        max_ulp_distance(one, np.float32(1 + 2**-10), dtype="bfloat16")
    with pytest.raises(TypeError, match="needs float32 arrays"):
        max_ulp_distance(np.float64(1), np.float64(1), dtype="bfloat16")


def test_round_to_bfloat16_matches_torch():
    """PyTorch's float32 -> bfloat16 conversion rounds to nearest even in every kernel (scalar,
    AVX2, AVX-512 BF16 instructions alike), so this holds on every x86-64 CPU."""
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    values[:3] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)]  # ties: to even
    expected = torch.from_numpy(values).bfloat16().float().numpy()
    assert np.array_equal(round_to_bfloat16(values), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_with_counts(bad):
    a = np.array([1.0, bad, bad], dtype=np.float32)
    b = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"a has \d NaN and \d infinite values \(first at index "
                                         r"\(1,\)\)"):
        max_ulp_distance(a, b)
    with pytest.raises(ValueError, match=r"reference has"):
        error_report(b, a)
    with pytest.raises(ValueError, match=r"result has"):
        error_report(a, b)


def test_mismatched_dtypes_shapes_and_types():
    with pytest.raises(TypeError, match="same dtype, got float32 and float64"):
        max_ulp_distance(np.ones(2, np.float32), np.ones(2, np.float64))
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        max_ulp_distance(np.ones(2), np.ones(3))
    with pytest.raises(TypeError, match="float16, float32 or float64, got int64"):
        max_ulp_distance(np.ones(2, np.int64), np.ones(2, np.int64))
    with pytest.raises(TypeError, match="bfloat16, which NumPy cannot hold"):
        error_report(torch.ones(2, dtype=torch.bfloat16), np.ones(2))
    with pytest.raises(TypeError, match="must be convertible to a NumPy array"):
        error_report(torch.ones(2, requires_grad=True), np.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        error_report(np.ones(2), np.ones((2, 1)))
    with pytest.raises(TypeError, match="floating dtypes"):
        unit_roundoff("int8")


def test_error_report_on_a_hand_made_case():
    reference = np.array([1.0, -2.0, 0.0, 4.0])
    result = np.array([1.5, -2.0, 0.25, 3.0], dtype=np.float32)
    report = error_report(result, reference)
    assert report.max_abs == 1.0 and report.mean_abs == (0.5 + 0.25 + 1.0) / 4
    assert report.rel_excluded == 1  # the zero reference
    # a mean of three float64 numbers: within gamma_3 * u-scale of exact (Higham eq. 3.5);
    # approx's default rel=1e-6 is far above that
    assert report.max_rel == 0.5 and report.mean_rel == pytest.approx((0.5 + 0 + 0.25) / 3)
    # 1.5 is 2**22 float32 ULPs above 1.0 (one binade holds 2**23)
    assert report.max_ulps == max_ulp_distance(np.float32(0.0), np.float32(0.25))
    assert report.within_bound is None and "VIOLATES" not in str(report)
    assert "4 float32 values" in str(report) and "1 zero references left out" in str(report)


def test_bound_verdicts():
    reference = np.array([1.0, 2.0, 3.0])
    result = np.array([1.1, 2.0, 3.0])
    # 1.1 - 1.0 in float64 is 0.1 within a few u (Higham eq. 3.5 for one subtraction of rounded
    # inputs); approx's default rel=1e-6 covers that and nothing more
    inside = error_report(result, reference, bound=np.array([0.2, 0.0, 0.0]))
    assert inside.within_bound and inside.worst_ratio == pytest.approx(0.1 / 0.2)
    # built to violate: error 0.1 where the bound allows 0.05, and an error where it allows 0
    outside = error_report(result, reference, bound=0.05)
    assert not outside.within_bound and outside.worst_ratio == pytest.approx(2.0)
    assert "VIOLATES the bound" in str(outside)
    zero_bound = error_report(result, reference, bound=np.zeros(3))
    assert not zero_bound.within_bound and zero_bound.worst_ratio == np.inf
    with pytest.raises(ValueError, match="non-negative"):
        error_report(result, reference, bound=-1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        error_report(result, reference, bound=np.ones(2))


def test_gamma_and_unit_roundoff():
    assert unit_roundoff(np.float32) == unit_roundoff(torch.float32) == 2.0**-24
    assert unit_roundoff("bfloat16") == 2.0**-8 and unit_roundoff(np.float16) == 2.0**-11
    assert gamma(10, "float64") == 10 * 2.0**-53 / (1 - 10 * 2.0**-53)
    with pytest.raises(ValueError, match="n\\*u < 1"):
        gamma(256, "bfloat16")
    with pytest.raises(ValueError, match="non-negative int"):
        gamma(-1, "float32")


def test_conv_error_bound_matches_the_suite_tolerance_and_holds():
    x, w, b = d2ldw.get_conv_data(6, 4, 9, 3, groups=2, bias=True, seed=3)
    kwargs = dict(stride=2, padding=1, groups=2)
    bound = conv_error_bound(x, w, b, **kwargs)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    # conftest.conv_tolerance is twice the same bound (two implementations, each within it)
    from conftest import conv_tolerance
    # Both sum nonnegative float64 terms, in different orders: each is within gamma_m(float64)
    # relative of the exact sum (Higham eq. 3.5 with sum|terms| = sum), m = 3*3*3 + 1 = 28.
    np.testing.assert_allclose(2 * bound, conv_tolerance(tx, tw, tb, **kwargs),
                               rtol=2 * gamma(28, "float64"), atol=0)
    result = F.conv2d(tx, tw, tb, **kwargs).numpy()
    reference = F.conv2d(tx.double(), tw.double(), tb.double(), **kwargs).numpy()
    assert error_report(result, reference, bound).within_bound
    assert bound.shape == result.shape and bound.dtype == np.float64


def test_conv_error_bound_catches_a_bug_and_checks_arguments():
    x, w, _ = d2ldw.get_conv_data(3, 2, 8, 3, seed=4)
    reference = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double()).numpy()
    wrong = F.conv2d(torch.from_numpy(x), torch.from_numpy(w).transpose(2, 3)).numpy()
    assert not error_report(wrong, reference, conv_error_bound(x, w)).within_bound
    with pytest.raises(ValueError, match="weight must have shape"):
        conv_error_bound(x, w[:, :2])
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        conv_error_bound(x.astype(np.int32), w)


def test_error_report_counts_ulps_in_the_dtype_given():
    reference = np.array([1.0, 2.0])
    half_step = np.float32(1 + 2**-10)  # the next float16 after 1
    result = np.array([half_step, 2.0], dtype=np.float32)
    assert error_report(result, reference).max_ulps == 2**13  # float32 ULPs: 2**(23-10)
    assert error_report(result, reference, dtype="float16").max_ulps == 1
    with pytest.raises(ValueError, match="not float16 numbers"):
        error_report(np.array([1 + 2**-20, 2.0], dtype=np.float32), reference, dtype="float16")
    bf16 = np.array([1 + 2**-7, 2.0], dtype=np.float32)  # the next bfloat16 after 1
    assert error_report(bf16, reference, dtype=torch.bfloat16).max_ulps == 1
