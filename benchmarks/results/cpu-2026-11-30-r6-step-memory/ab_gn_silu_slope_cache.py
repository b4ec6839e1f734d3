import os, sys, time, statistics, importlib.util
os.environ["OPENBLAS_NUM_THREADS"]="1"
import numpy as np
import refdiff.nn.fast as F
from refdiff.nn import UNet, UNetConfig, blocks
from refdiff.nn.optim import FlatAdam, adam_init
def load(name, path):
    spec=importlib.util.spec_from_file_location(name, path); m=importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old_norm=load("refdiff.nn._old_norm","/tmp/old_norm.py")
old_fast=load("refdiff.nn._old_fast","/tmp/old_fast.py"); old_fast._hwn=old_norm
N=int(sys.argv[1]) if len(sys.argv)>1 else 128
model=UNet(UNetConfig()); rng=np.random.default_rng(0)
P=model.init_params(rng)
P["out.conv.w"]=(0.01*rng.standard_normal(P["out.conv.w"].shape)).astype(np.float32)
x=rng.standard_normal((N,1,8,8)).astype(np.float32); eps=rng.standard_normal(x.shape).astype(np.float32); t=rng.integers(0,1000,N)
st={"P":P,"S":adam_init(P)}; fl=FlatAdam(inplace=True)
def step():
    out,c=model.forward(st["P"],x,t)
    d=(2.0/out.size)*(out-eps); G,_=model.backward(st["P"],c,d)
    st["P"],st["S"]=fl.update(st["P"],G,st["S"],lr=1e-4)
new=(blocks.groupnorm_silu_forward, blocks.groupnorm_silu_backward)
def use(k):
    blocks.groupnorm_silu_forward, blocks.groupnorm_silu_backward = (old_fast.groupnorm_silu_forward, old_fast.groupnorm_silu_backward) if k=="A" else new
# check same results
use("A"); o1,c1=model.forward(P,x,t); g1,_=model.backward(P,c1,eps)
use("B"); o2,c2=model.forward(P,x,t); g2,_=model.backward(P,c2,eps)
print("bitwise equal:", np.array_equal(o1,o2) and all(np.array_equal(g1[k],g2[k]) for k in g1))
res={"A":[],"B":[]}
for k in res: use(k); [step() for _ in range(3)]
l0=os.getloadavg()
for r in range(int(sys.argv[2]) if len(sys.argv)>2 else 16):
    for k in res:
        use(k); step(); ts=[]
        for _ in range(5):
            t0=time.process_time(); step(); ts.append(time.process_time()-t0)
        res[k].append(statistics.median(ts)*1e3)
rat=[b/a for a,b in zip(res["A"],res["B"])]
print(f"A = fused GroupNorm+SiLU caching xc, h, u (commit 6b5a12e), B = caching xc and the slope v; batch {N}, 1 thread, CPU time, load {l0[0]:.1f} -> {os.getloadavg()[0]:.1f}")
for k,v in res.items(): print(k, f"median {statistics.median(v):.2f} ms/step (rounds {min(v):.2f}-{max(v):.2f})")
print("B/A per round:", " ".join(f"{r:.3f}" for r in rat), f"; median {statistics.median(rat):.3f}")
