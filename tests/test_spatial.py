"""Chapter 4.2: rank-1 (spatially separable) kernels and the best rank-r approximation."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import conv_tolerance
from d2ldw.numpy import low_rank_kernels, rank1_factors

U64 = 2.0**-53


def svd_tolerance(kernel):
    """Backward stability of the SVD (Golub & Van Loan, Matrix Computations, 4th ed., 8.6.3):
    the computed factors are exact for kernel + E with ||E||_2 <= p(m, n) * u * ||kernel||_2, p a
    modest polynomial in the sizes; we allow p(m, n) = 10 * m * n, plus the same again for
    forming the outer products (each entry one product, summed over at most m*n terms)."""
    m, n = kernel.shape
    return 2 * 10 * m * n * U64 * np.linalg.norm(kernel, 2)


def gaussian(k, sigma):
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-t**2 / (2 * sigma**2))
    return np.outer(g, g)


SEPARABLE = {"sobel": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]),
             "sobel_y": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]),
             "gaussian 5x5": gaussian(5, 1.0),
             "gaussian 7x3": np.outer(gaussian(7, 2.0)[3], gaussian(3, 0.7)[1]),
             "box 3x4": np.ones((3, 4))}


@pytest.mark.parametrize("name", SEPARABLE)
def test_separable_kernels_split_exactly(name):
    kernel = SEPARABLE[name]
    column, row, residual = rank1_factors(kernel)
    assert column.shape == (kernel.shape[0],) and row.shape == (kernel.shape[1],)
    assert column.dtype == np.float64
    tolerance = svd_tolerance(kernel.astype(float))
    assert residual <= tolerance
    assert np.abs(np.outer(column, row) - kernel).max() <= tolerance


def test_sobel_factors_are_smoothing_and_difference():
    column, row, _ = rank1_factors(SEPARABLE["sobel"])
    # Up to scale, (1, 2, 1) down and (1, 0, -1) across; sign fixed by the largest entry.
    tolerance = svd_tolerance(SEPARABLE["sobel"].astype(float))
    assert np.abs(column / column[0] - [1, 2, 1]).max() <= tolerance
    assert np.abs(row * column[0] - [1, 0, -1]).max() <= tolerance
    assert column[1] > 0


def two_pass(x, column, row):
    vertical = F.conv2d(x, torch.from_numpy(column).reshape(1, 1, -1, 1))
    return F.conv2d(vertical, torch.from_numpy(row).reshape(1, 1, 1, -1))


@pytest.mark.parametrize("name", SEPARABLE)
def test_two_passes_equal_the_square_kernel(name):
    kernel = SEPARABLE[name].astype(float)
    column, row, _ = rank1_factors(kernel)
    x = torch.randn(2, 1, 12, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = F.conv2d(x, torch.from_numpy(kernel)[None, None]).numpy()
    result = two_pass(x, column, row).numpy()
    vertical, horizontal = column.reshape(1, 1, -1, 1), row.reshape(1, 1, 1, -1)
    # Bound: the square conv and each pass within conv_tolerance (Higham, via conftest); the
    # second pass's input errs by the first pass's bound, carried through |row|; and the
    # factors themselves differ from the kernel by at most the SVD bound per entry, which
    # changes each output by at most that times the sum of |x| under the kernel.
    first = conv_tolerance(x, vertical)
    magnitude = F.conv2d(x.abs(), torch.from_numpy(np.abs(vertical))).numpy()
    tolerance = (conv_tolerance(x, kernel[None, None])
                 + F.conv2d(torch.from_numpy(first), torch.from_numpy(np.abs(horizontal))).numpy()
                 + conv_tolerance(magnitude + first, horizontal)
                 + svd_tolerance(kernel) * F.conv2d(x.abs(), torch.ones(1, 1, *kernel.shape,
                                                                     dtype=torch.float64)).numpy())
    assert np.all(np.abs(result - expected) <= tolerance)


def test_a_non_separable_kernel_is_reported_as_such():
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    _, _, residual = rank1_factors(laplacian)
    singular = np.linalg.svd(laplacian.astype(float), compute_uv=False)
    assert residual > 0.1 * np.linalg.norm(laplacian)
    assert abs(residual - singular[1]) <= svd_tolerance(laplacian.astype(float))


KERNEL_SHAPES = [(3, 3), (5, 5), (7, 7), (3, 5), (7, 4), (1, 6)]


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_best_rank_r_error_is_the_svd_tail(shape):
    """Eckart-Young: ||K - K_r||_F = sqrt(sigma_{r+1}^2 + ...), with K_r the sum of the r
    returned separable pairs; the singular values come from a separate np.linalg.svd call."""
    rng = np.random.default_rng(sum(shape))
    for _ in range(10):
        kernel = rng.standard_normal(shape)
        singular = np.linalg.svd(kernel, compute_uv=False)
        for r in range(1, min(shape) + 1):
            columns, rows = low_rank_kernels(kernel, r)
            assert columns.shape == (r, shape[0]) and rows.shape == (r, shape[1])
            approximation = columns.T @ rows
            error = np.linalg.norm(kernel - approximation)
            assert abs(error - np.sqrt((singular[r:] ** 2).sum())) <= svd_tolerance(kernel)
            assert np.linalg.matrix_rank(approximation) <= r


@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (7, 7)])
def test_no_other_rank_r_approximation_does_better(shape):
    """The optimality half of Eckart-Young, tested against rivals: least-squares fits of the
    kernel onto r random row patterns have rank <= r and never a smaller error (allowing the
    SVD's backward error, svd_tolerance)."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal(shape)
    for r in range(1, min(shape)):
        columns, rows = low_rank_kernels(kernel, r)
        best = np.linalg.norm(kernel - columns.T @ rows)
        for _ in range(200):
            basis = rng.standard_normal((r, shape[1]))
            rival = kernel @ np.linalg.pinv(basis) @ basis
            assert np.linalg.norm(kernel - rival) >= best - svd_tolerance(kernel)


def test_dtypes():
    kernel32 = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    assert low_rank_kernels(kernel32, 2)[0].dtype == np.float32
    assert low_rank_kernels(np.eye(3, dtype=np.int64), 1)[0].dtype == np.float64


@pytest.mark.parametrize("kernel, rank, error, message", [
    (np.ones((3, 3)), 0, ValueError, r"rank must be an int from 1 to min\(kH, kW\) = 3, got 0"),
    (np.ones((3, 5)), 4, ValueError, r"= 3, got 4"),
    (np.ones((3, 3)), True, ValueError, "got True"),
    (np.ones((3, 3)), 1.0, ValueError, "got 1.0"),
    (np.ones((2, 3, 3)), 1, ValueError, r"2-D array \(kH, kW\), got shape \(2, 3, 3\)"),
    (np.ones((0, 3)), 1, ValueError, "non-empty"),
    (np.ones((3, 3), dtype=complex), 1, TypeError, "real numeric dtype, got complex128"),
])
def test_errors(kernel, rank, error, message):
    with pytest.raises(error, match=message):
        low_rank_kernels(kernel, rank)
