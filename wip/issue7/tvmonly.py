import sys; sys.path.insert(0, "/tmp/perf")
import numpy as np, tvm, time
from nchwc import define, schedule, pick_tile, LANES
from d2ldw import tvm as d2l_tvm
dev = tvm.cpu()
target = d2l_tvm.host_target()
C, H, s = 128, 56, 1
X, K, Y, Ho = define(C, H, s)
mod = d2l_tvm.prim_module([X, K, Y])
smod = schedule(mod, Ho, pick_tile(Ho))
print(smod.script()[:3000])
for name, m in (("default", mod), ("tuned", smod)):
    lib = tvm.compile(m, target=target)
    a = [tvm.runtime.tensor(np.random.rand(1, C//LANES, H, H, LANES).astype("float32"), dev),
         tvm.runtime.tensor(np.random.rand(C//LANES, 3, 3, LANES).astype("float32"), dev),
         tvm.runtime.tensor(np.zeros((1, C//LANES, Ho, Ho, LANES), "float32"), dev)]
    f = lib.mod.time_evaluator("main", dev, number=200, repeat=5)
    print(name, f(*a).median * 1e6, "us")
