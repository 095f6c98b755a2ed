"""d2ldw.time_cuda: the one way the GPU page times both kernels."""
import pytest
import torch

import d2ldw


def test_time_cuda_checks_its_arguments_first():
    with pytest.raises(ValueError, match="number must be >= 1, got 0"):
        d2ldw.time_cuda(lambda: None, number=0)
    with pytest.raises(TypeError, match="repeat must be an int"):
        d2ldw.time_cuda(lambda: None, repeat=1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_time_cuda_says_it_needs_a_gpu():
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*is_available\(\) is False"):
        d2ldw.time_cuda(lambda: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_time_cuda_measures_device_time():
    x = torch.randn(1 << 20, device="cuda")
    seconds = d2ldw.time_cuda(lambda: x.mul_(1.0), number=10, repeat=3)
    assert 0 < seconds < 1
