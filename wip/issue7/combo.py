import sys, math; sys.path.insert(0, "/tmp/perf")
import numpy as np, torch, tvm
from torch.nn import functional as F
from nchwc import define, pick_tile, LANES
from variants import v_tile, v_inline_par_vec
import d2ldw
from d2ldw import tvm as d2l_tvm
dev = tvm.cpu(); target = d2l_tvm.host_target()
LAYERS = [(32,112,1),(64,112,2),(128,56,1),(128,56,2),(256,28,1),(256,28,2),(512,14,1),(512,14,2),(1024,7,1)]
cands, info = {}, {}
for C, H, s in LAYERS:
    X, K, Y, Ho = define(C, H, s)
    mod = d2l_tvm.prim_module([X, K, Y])
    lib = tvm.compile(v_tile(mod, Ho, pick_tile(Ho)), target=target)
    x = torch.randn(1, C, H, H); w = torch.randn(C, 1, 3, 3)
    xc = x.reshape(1, C // LANES, LANES, H, H).permute(0, 1, 3, 4, 2).contiguous().numpy()
    wc = w.reshape(C // LANES, LANES, 3, 3).permute(0, 2, 3, 1).contiguous().numpy()
    a = [tvm.runtime.tensor(xc, dev), tvm.runtime.tensor(wc, dev), tvm.runtime.tensor(np.zeros((1, C//LANES, Ho, Ho, LANES), "float32"), dev)]
    lib(*a)
    yt = a[2].numpy().transpose(0, 1, 4, 2, 3).reshape(1, C, Ho, Ho)
    err = np.abs(yt - F.conv2d(x, w, stride=s, padding=1, groups=C).numpy()).max()
    cands[(C, H, s, "tvm")] = lambda lib=lib, a=a: lib(*a)
    cands[(C, H, s, "torch")] = lambda x=x, w=w, s=s, C=C: F.conv2d(x, w, stride=s, padding=1, groups=C)
    xl = x.contiguous(memory_format=torch.channels_last); wl = w.contiguous(memory_format=torch.channels_last)
    cands[(C, H, s, "torch_cl")] = lambda x=xl, w=wl, s=s, C=C: F.conv2d(x, w, stride=s, padding=1, groups=C)
    info[(C, H, s)] = (err, Ho)
t = d2ldw.time_interleaved(cands, repeat=9)
logs, logs_cl = [], []
print("torch threads", torch.get_num_threads())
for C, H, s in LAYERS:
    err, Ho = info[(C, H, s)]; fl = 2 * C * 9 * Ho * Ho
    a, b, c = (t[(C, H, s, k)].median for k in ("torch", "tvm", "torch_cl"))
    logs.append(math.log(a / b)); logs_cl.append(math.log(c / b))
    print(f"{C:5d} {H:4d} s{s} err {err:.0e} torch {a*1e6:6.1f}us {fl/a/1e9:5.1f} | cl {c*1e6:6.1f} | tvm {b*1e6:6.1f}us {fl/b/1e9:6.1f} GF/s  x{a/b:4.2f} (vs cl x{c/b:4.2f})")
print("geomean vs torch", math.exp(sum(logs)/len(logs)), "vs channels_last", math.exp(sum(logs_cl)/len(logs_cl)))
