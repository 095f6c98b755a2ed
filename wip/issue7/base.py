import numpy as np, torch, tvm, time, statistics
from tvm import te
from torch.nn import functional as F
import d2ldw
from d2ldw import tvm as d2l_tvm
LAYERS = [(32,112,1),(64,112,2),(128,56,1),(128,56,2),(256,28,1),(256,28,2),(512,14,1),(512,14,2),(1024,7,1)]
torch.set_num_threads(2)
rows = []
cands = {}
for C, H, s in LAYERS:
    x = torch.randn(1, C, H, H); w = torch.randn(C, 1, 3, 3)
    xc = x.contiguous(memory_format=torch.channels_last); wc = w.contiguous(memory_format=torch.channels_last)
    cands[(C,H,s,"nchw")] = (lambda x=x, w=w, s=s, C=C: F.conv2d(x, w, stride=s, padding=1, groups=C))
    cands[(C,H,s,"nhwc")] = (lambda x=xc, w=wc, s=s, C=C: F.conv2d(x, w, stride=s, padding=1, groups=C))
t = d2ldw.time_interleaved(cands, repeat=7)
for C, H, s in LAYERS:
    Ho = (H + 2 - 3)//s + 1
    fl = 2*C*9*Ho*Ho
    a, b = t[(C,H,s,"nchw")].median, t[(C,H,s,"nhwc")].median
    print(C, H, s, f"nchw {a*1e6:8.1f}us {fl/a/1e9:6.1f} GF/s   nhwc {b*1e6:8.1f}us {fl/b/1e9:6.1f} GF/s")
