"""The figures of the depthwise and separable chapters draw what they claim to draw."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from d2ldw.plotting import (  # noqa: E402
    _unfold_columns,
    plot_depthwise_weight,
    plot_separable_factorisation,
    plot_unfold,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("channels, size, k", [(1, 3, 1), (2, 4, 2), (3, 5, 3), (2, 6, 4)])
def test_unfold_picture_holds_the_columns_of_f_unfold(channels, size, k):
    numbered, columns = _unfold_columns(channels, size, k)
    assert numbered.shape == (channels, size, size)
    expected = F.unfold(torch.from_numpy(numbered)[None].double(), kernel_size=k)[0]
    assert torch.equal(expected.long(), torch.from_numpy(columns))


def test_unfold_picture_outlines_one_window_and_refuses_a_missing_one():
    left, right = plot_unfold(channels=2, size=4, kernel_size=2, position=4)
    # the outlined window in each channel starts at row 1, column 1 (position 4 of 3x3)
    outlines = [p for p in left.patches if not p.get_fill()]
    assert [(p.get_x(), p.get_y(), p.get_width()) for p in outlines] == [(1, 1, 2), (6, 1, 2)]
    numbers = sorted(int(t.get_text()) for t in right.texts if t.get_text().isdigit())
    assert numbers == sorted(_unfold_columns(2, 4, 2)[1].ravel().tolist())
    with pytest.raises(ValueError, match=r"position must be in \[0, 9\)"):
        plot_unfold(channels=2, size=4, kernel_size=2, position=9)


def test_depthwise_weight_picture_frames_each_filter_in_its_channels_colour():
    weight = np.random.default_rng(0).standard_normal((6, 1, 3, 3))
    ax = plot_depthwise_weight(weight, in_channels=3)
    assert len(ax.images) == 6
    for o, image in enumerate(ax.images):
        np.testing.assert_array_equal(image.get_array(), weight[o, 0])
    frames = [p for p in ax.patches if not p.get_fill()]
    colours = [tuple(p.get_edgecolor()) for p in frames]
    assert colours[0] == colours[1] != colours[2] == colours[3] != colours[4] == colours[5]
    labels = [t.get_text() for t in ax.texts if t.get_text().startswith("filter")]
    assert labels[5] == "filter 5: c = 5 // 2 = 2"


def test_depthwise_weight_picture_refuses_a_weight_that_is_not_depthwise():
    with pytest.raises(ValueError, match="depthwise weight"):
        plot_depthwise_weight(np.zeros((6, 3, 3, 3)), in_channels=3)


def test_factorisation_picture_shows_the_full_weight_of_the_pair():
    gen = torch.Generator().manual_seed(0)
    depthwise = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
    pointwise = torch.randn(5, 4, 1, 1, generator=gen, dtype=torch.float64)
    fig = plot_separable_factorisation(depthwise, pointwise)
    [ax] = fig.axes
    full_image = np.asarray(ax.images[2].get_array())
    # the full weight whose convolution equals the pair's, read back from the picture
    tiles = np.stack([np.stack([full_image[o * 4:o * 4 + 3, c * 4:c * 4 + 3]
                                for c in range(4)]) for o in range(5)])
    x = torch.randn(2, 4, 7, 7, generator=gen, dtype=torch.float64)
    pair = F.conv2d(F.conv2d(x, depthwise, groups=4), pointwise)
    assert torch.allclose(F.conv2d(x, torch.from_numpy(tiles)), pair, atol=1e-12)


def test_factorisation_picture_refuses_other_shapes():
    with pytest.raises(ValueError, match="depthwise weight"):
        plot_separable_factorisation(np.zeros((4, 2, 3, 3)), np.zeros((5, 4, 1, 1)))
    with pytest.raises(ValueError, match=r"pointwise weight must be \(O, 4, 1, 1\)"):
        plot_separable_factorisation(np.zeros((4, 1, 3, 3)), np.zeros((5, 3, 1, 1)))
