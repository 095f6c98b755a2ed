# ---- tvm part ----
import numpy as np
import tvm
from tvm import te
from d2ldw import conv2d_geometry
from d2ldw.tvm import _static_shape


def host_vector_lanes():
    """float32 lanes of this CPU's widest vector registers: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as info:
            return 16 if " avx512f" in info.read() else 8
    except OSError:
        return 8


def to_nchwc(x, lanes):
    """NumPy NCHW array -> NCHW[lanes]c: (N, C/lanes, H, W, lanes)."""
    n, c, h, w = x.shape
    if c % lanes:
        raise ValueError(f"channels ({c}) must be a multiple of lanes ({lanes})")
    return np.ascontiguousarray(x.reshape(n, c // lanes, lanes, h, w).transpose(0, 1, 3, 4, 2))


def from_nchwc(x):
    """NCHW[x]c NumPy array -> NCHW."""
    n, blocks, h, w, lanes = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, blocks * lanes, h, w))


def depthwise_weight_to_nchwc(w, lanes):
    """PyTorch depthwise weight (C, 1, kH, kW) (multiplier 1) -> (C/lanes, kH, kW, lanes)."""
    c, one, kh, kw = w.shape
    if one != 1 or c % lanes:
        raise ValueError(f"expected a (C, 1, kH, kW) weight with C a multiple of {lanes}, got {w.shape}")
    return np.ascontiguousarray(w.reshape(c // lanes, lanes, kh, kw).transpose(0, 2, 3, 1))


def depthwise_conv2d_nchwc(X, K, stride=1, padding=0, dilation=1):
    """TE depthwise convolution (multiplier 1) on NCHW[x]c data."""
    n, blocks, h, w, lanes = _static_shape(X)
    kblocks, kh, kw, klanes = _static_shape(K)
    if (kblocks, klanes) != (blocks, lanes):
        raise ValueError(f"K must have shape ({blocks}, kH, kW, {lanes}) for X of shape "
                         f"{_static_shape(X)}, got {_static_shape(K)}")
    g = conv2d_geometry((n, blocks * lanes, h, w), (blocks * lanes, 1, kh, kw), stride, padding,
                        dilation, groups=blocks * lanes)
    (top, bottom), (left, right) = g.padding
    (sh, sw), (dh, dw), (oh, ow) = g.stride, g.dilation, g.out_size
    P = te.compute((n, blocks, h + top + bottom, w + left + right, lanes),
                   lambda b_, c_, i, j, l: te.if_then_else(
                       tvm.tirx.all(i >= top, i < h + top, j >= left, j < w + left),
                       X[b_, c_, i - top, j - left, l], tvm.tirx.const(0.0, X.dtype)),
                   name="PaddedX")
    ri = te.reduce_axis((0, kh), name="ri")
    rj = te.reduce_axis((0, kw), name="rj")
    return te.compute((n, blocks, oh, ow, lanes), lambda b_, c_, i, j, l: te.sum(
        P[b_, c_, i * sh + ri * dh, j * sw + rj * dw, l] * K[c_, ri, rj, l], axis=[ri, rj]),
        name="Y")


def schedule_depthwise_nchwc(module, tile=1):
    """Parallel over (batch, channel block, row); `tile` output columns accumulated in
    registers; lanes vectorised; kernel loops unrolled; padding inlined."""
    sch = tvm.s_tir.Schedule(module)
    sch.compute_inline(sch.get_sblock("PaddedX"))
    y = sch.get_sblock("Y")
    n, b, i, j, c, ri, rj = sch.get_loops(y)
    rows = sch.fuse(n, b, i)
    sch.parallel(rows)
    if tile > 1:
        jo, ji = sch.split(j, [None, tile])
        sch.reorder(rows, jo, ri, rj, ji, c)
        sch.unroll(ji)
    else:
        jo = j
        sch.reorder(rows, jo, ri, rj, c)
    sch.vectorize(c)
    sch.unroll(ri)
    sch.unroll(rj)
    if tile > 1:
        local = sch.cache_write(y, 0, "local")
        sch.reverse_compute_at(local, jo)
        sch.vectorize(sch.get_loops(local)[-1])
        init = sch.decompose_reduction(y, ri)
        sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod
