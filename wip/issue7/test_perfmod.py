import sys, os, math; sys.path.insert(0, "/tmp/perf")
os.environ.setdefault("TVM_NUM_THREADS", "2")
import numpy as np, torch, tvm
from tvm import te
from torch.nn import functional as F
from perfmod import *
from d2ldw.tvm import _static_shape
from d2ldw import tvm as d2l_tvm
import d2ldw
L = host_vector_lanes(); print("lanes", L)
dev = tvm.cpu()
LAYERS = [(32,112,1),(64,112,2),(128,56,1),(128,56,2),(256,28,1),(256,28,2),(512,14,1),(512,14,2),(1024,7,1)]
for C, H, s in LAYERS:
    x = np.random.default_rng(0).standard_normal((1, C, H, H)).astype("float32")
    w = np.random.default_rng(1).standard_normal((C, 1, 3, 3)).astype("float32")
    X = te.placeholder((1, C // L, H, H, L), name="X"); K = te.placeholder((C // L, 3, 3, L), name="K")
    Y = depthwise_conv2d_nchwc(X, K, stride=s, padding=1)
    mod = d2l_tvm.prim_module([X, K, Y]); ow = int(Y.shape[3])
    res = []
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=s, padding=1, groups=C).numpy()
    for tile in [t for t in range(1, 9) if ow % t == 0]:
        lib = tvm.compile(schedule_depthwise_nchwc(mod, tile), target=d2l_tvm.host_target())
        a = [tvm.runtime.tensor(to_nchwc(x, L), dev), tvm.runtime.tensor(depthwise_weight_to_nchwc(w, L), dev),
             tvm.runtime.tensor(np.zeros(_static_shape(Y), "float32"), dev)]
        lib(*a)
        err = np.abs(from_nchwc(a[2].numpy()) - ref).max()
        t = lib.mod.time_evaluator("main", dev, number=100, repeat=5)(*a).median
        res.append(f"t{tile}:{t*1e6:.1f}({err:.0e})")
    print(C, H, s, " ".join(res))
