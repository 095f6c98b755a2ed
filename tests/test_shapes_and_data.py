"""Output-size arithmetic, argument normalisation, test data and the sliding-window figure."""
import itertools

import numpy as np
import pytest

import d2ldw
from d2ldw import conv2d_geometry, conv_out_size, get_conv_data


def brute_force_out_size(n, k, before, after, s, d):
    """Slide the window over an explicit padded row and count where all taps land inside."""
    padded = n + before + after
    starts = range(0, padded, s)
    return sum(all(start + tap * d < padded for tap in range(k)) for start in starts)


def test_conv_out_size_matches_brute_force_for_every_small_combination():
    checked = 0
    for n, k, before, after, s, d in itertools.product(range(0, 9), range(1, 5), range(3),
                                                       range(3), range(1, 4), range(1, 4)):
        expected = brute_force_out_size(n, k, before, after, s, d)
        if d * (k - 1) + 1 > n + before + after:
            assert expected == 0
            with pytest.raises(ValueError):
                conv_out_size(n, k, (before, after), s, d)
            continue
        assert conv_out_size(n, k, (before, after), s, d) == expected
        if before == after:
            assert conv_out_size(n, k, before, s, d) == expected
        checked += 1
    assert checked > 2000


@pytest.mark.parametrize("k, d", [(1, 1), (2, 1), (3, 1), (4, 1), (4, 2), (3, 3), (2, 5)])
def test_same_padding_keeps_the_size_and_puts_the_extra_pixel_after(k, d):
    g = conv2d_geometry((1, 1, 9, 10), (1, 1, k, k), padding="same", dilation=d)
    assert g.out_size == (9, 10)
    total = d * (k - 1)
    assert g.padding == ((total // 2, total - total // 2),) * 2
    assert g.padding[0][1] - g.padding[0][0] in (0, 1)


def test_geometry_normalises_every_argument_form():
    g = conv2d_geometry((3, 10, 12), [5, 3, 3, 2], stride=(2, 1), padding=[1, 0],
                        dilation=np.int64(2))
    assert g.batch is None and g.output_shape == (5, 4, 10)
    assert g.stride == (2, 1) and g.padding == ((1, 1), (0, 0)) and g.dilation == (2, 2)
    assert conv2d_geometry((0, 3, 5, 5), (2, 3, 3, 3), padding="valid").output_shape == (0, 2, 3, 3)


def test_get_conv_data_is_seeded_shaped_and_converted():
    x, w, b = get_conv_data(4, 6, (7, 5), (3, 1), batch=2, groups=2, bias=True, dtype="float64")
    assert (x.shape, w.shape, b.shape) == ((2, 4, 7, 5), (6, 2, 3, 1), (6,))
    assert x.dtype == w.dtype == b.dtype == np.float64
    again = get_conv_data(4, 6, (7, 5), (3, 1), batch=2, groups=2, bias=True, dtype="float64")
    assert all(np.array_equal(p, q) for p, q in zip((x, w, b), again))
    other = get_conv_data(4, 6, (7, 5), (3, 1), batch=2, groups=2, bias=True, seed=1)
    # Not a rounding comparison: other seeds give O(1) different data, far beyond allclose's
    # defaults (rtol=1e-5, atol=1e-8), whereas float32 rounding changes values by 2**-24.
    assert not np.allclose(x, other[0].astype(np.float64))
    converted = get_conv_data(2, 2, 4, 3, constructor=list)
    assert isinstance(converted[0], list) and converted[2] is None


def test_import_d2ldw_exposes_the_framework_free_helpers():
    for name in ("conv_out_size", "conv2d_geometry", "ConvGeometry", "get_conv_data"):
        assert callable(getattr(d2ldw, name))


@pytest.mark.parametrize("size, k, p, s, d, position", [
    (7, 3, 1, 2, 2, (1, 2)), (5, 2, 0, 1, 1, (3, 0)), (6, 3, 2, 3, 1, (2, 2))])
def test_sliding_window_figure_highlights_exactly_the_taps(size, k, p, s, d, position):
    import matplotlib
    matplotlib.use("Agg")
    from d2ldw.plotting import plot_sliding_window
    ax = plot_sliding_window(size, k, padding=p, stride=s, dilation=d, position=position)
    highlighted = {(int(r.get_y()), int(r.get_x())) for r in ax.patches if r.get_alpha() == 0.8}
    row, col = position
    assert highlighted == {(row * s + a * d, col * s + b * d) for a in range(k) for b in range(k)}
    grey = sum(r.get_facecolor()[0] < 0.9 and r.get_alpha() is None for r in ax.patches)
    assert grey == (size + 2 * p) ** 2 - size ** 2
    with pytest.raises(ValueError, match="outside the"):
        plot_sliding_window(size, k, padding=p, stride=s, dilation=d, position=(99, 0))
