import sys, os, math; sys.path.insert(0, "/tmp/perf")
os.environ.setdefault("TVM_NUM_THREADS", "2")
import numpy as np, torch, tvm
from tvm import te
from torch.nn import functional as F
from perfmod import *
from d2ldw.tvm import _static_shape
from d2ldw import tvm as d2l_tvm
MX = sys.argv[2] if len(sys.argv) > 2 else 'mx'
if MX != 'noimport':
    from d2ldw import mxnet as d2l_mx
import d2ldw
settle = float(sys.argv[1])
L = host_vector_lanes(); dev = tvm.cpu()
LAYERS = [(32,112,1),(64,112,2),(128,56,1),(128,56,2),(256,28,1),(256,28,2),(512,14,1),(512,14,2),(1024,7,1)]
cands = {}
for C, H, s in LAYERS:
    x = np.random.default_rng(0).standard_normal((1, C, H, H)).astype("float32")
    w = np.random.default_rng(1).standard_normal((C, 1, 3, 3)).astype("float32")
    X = te.placeholder((1, C // L, H, H, L), name="X"); K = te.placeholder((C // L, 3, 3, L), name="K")
    Y = depthwise_conv2d_nchwc(X, K, stride=s, padding=1)
    lib = tvm.compile(schedule_depthwise_nchwc(d2l_tvm.prim_module([X, K, Y]), 1), target=d2l_tvm.host_target())
    a = [tvm.runtime.tensor(to_nchwc(x, L), dev), tvm.runtime.tensor(depthwise_weight_to_nchwc(w, L), dev),
         tvm.runtime.tensor(np.zeros(_static_shape(Y), "float32"), dev)]
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    if MX == 'mx':
        xm, wm = d2l_mx.nd.array(x), d2l_mx.nd.array(w)
    cands[(C,H,s,"torch")] = lambda xt=xt, wt=wt, s=s, C=C: F.conv2d(xt, wt, stride=s, padding=1, groups=C)
    if MX == 'mx': cands[(C,H,s,"mxnet")] = lambda xm=xm, wm=wm, s=s, C=C: d2l_mx.conv2d(xm, wm, stride=s, padding=1, groups=C).wait_to_read()
    cands[(C,H,s,"tvm")] = lambda lib=lib, a=a: lib(*a)
t = d2ldw.time_interleaved(cands, repeat=7, settle_seconds=settle)
lt, lm = [], []
for C, H, s in LAYERS:
    a, b = (t[(C,H,s,k)].median for k in ("torch", "tvm")); m = t[(C,H,s,"mxnet")].median if MX == 'mx' else float('nan')
    lt.append(math.log(a/b)); lm.append(math.log(m/b) if m == m else 0)
    print(f"{C:5d} {H:4d} s{s} torch {a*1e6:6.1f} mxnet {m*1e6:6.1f} tvm {b*1e6:6.1f}  x{a/b:5.2f}")
print("settle", settle, "torch threads", torch.get_num_threads(), "geomean vs torch", round(math.exp(sum(lt)/9), 2), "vs mxnet", round(math.exp(sum(lm)/9), 2))
