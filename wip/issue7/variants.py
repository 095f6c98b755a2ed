import sys; sys.path.insert(0, "/tmp/perf")
import numpy as np, tvm
from nchwc import define, pick_tile, LANES
from d2ldw import tvm as d2l_tvm
dev = tvm.cpu(); target = d2l_tvm.host_target()

def v_parallel_only(mod, Ho, tile):
    sch = tvm.s_tir.Schedule(mod)
    y = sch.get_sblock("Y")
    n, b, i, j, c, ri, rj = sch.get_loops(y)
    sch.parallel(sch.fuse(n, b))
    return sch.mod

def v_inline_par_vec(mod, Ho, tile):
    sch = tvm.s_tir.Schedule(mod)
    sch.compute_inline(sch.get_sblock("P"))
    y = sch.get_sblock("Y")
    n, b, i, j, c, ri, rj = sch.get_loops(y)
    nbi = sch.fuse(n, b, i)
    sch.parallel(nbi)
    sch.reorder(j, ri, rj, c)
    sch.vectorize(c)
    return sch.mod

def v_tile(mod, Ho, tile, inline=True):
    sch = tvm.s_tir.Schedule(mod)
    if inline: sch.compute_inline(sch.get_sblock("P"))
    y = sch.get_sblock("Y")
    n, b, i, j, c, ri, rj = sch.get_loops(y)
    nbi = sch.fuse(n, b, i)
    jo, ji = sch.split(j, [None, tile])
    sch.reorder(nbi, jo, ri, rj, ji, c)
    sch.parallel(nbi)
    sch.vectorize(c); sch.unroll(ji); sch.unroll(ri); sch.unroll(rj)
    yl = sch.cache_write(y, 0, "local")
    sch.reverse_compute_at(yl, jo)
    sch.vectorize(sch.get_loops(yl)[-1])
    init = sch.decompose_reduction(y, ri)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod

def v_tile_pad_at(mod, Ho, tile):
    # padding computed per (b) plane, but parallel over b only
    sch = tvm.s_tir.Schedule(mod)
    y = sch.get_sblock("Y")
    n, b, i, j, c, ri, rj = sch.get_loops(y)
    nb = sch.fuse(n, b)
    jo, ji = sch.split(j, [None, tile])
    sch.reorder(nb, i, jo, ri, rj, ji, c)
    sch.parallel(nb)
    sch.vectorize(c); sch.unroll(ji); sch.unroll(ri); sch.unroll(rj)
    p = sch.get_sblock("P"); sch.compute_at(p, nb); sch.vectorize(sch.get_loops(p)[-1])
    return sch.mod

LAYERS = [(32,112,1),(64,112,2),(128,56,1),(128,56,2),(256,28,1),(256,28,2),(512,14,1),(512,14,2),(1024,7,1)]
for C, H, s in LAYERS:
    X, K, Y, Ho = define(C, H, s)
    mod = d2l_tvm.prim_module([X, K, Y])
    a = [tvm.runtime.tensor(np.random.rand(1, C//LANES, H, H, LANES).astype("float32"), dev),
         tvm.runtime.tensor(np.random.rand(C//LANES, 3, 3, LANES).astype("float32"), dev),
         tvm.runtime.tensor(np.zeros((1, C//LANES, Ho, Ho, LANES), "float32"), dev)]
    ref = None; out = []
    for name, f in (("default", None), ("par", v_parallel_only), ("inl_par_vec", v_inline_par_vec), ("tile", v_tile), ("tile_pad_at", v_tile_pad_at)):
        m = mod if f is None else f(mod, Ho, pick_tile(Ho))
        lib = tvm.compile(m, target=target)
        lib(*a); r = a[2].numpy().copy()
        if ref is None: ref = r
        assert np.abs(r - ref).max() < 1e-4, name
        t = lib.mod.time_evaluator("main", dev, number=100, repeat=5)(*a).median
        out.append(f"{name} {t*1e6:6.1f}")
    print(C, H, s, " | ".join(out))
