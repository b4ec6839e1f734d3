import os, sys, time, statistics, importlib.util
os.environ["OPENBLAS_NUM_THREADS"]="1"
import numpy as np
from refdiff.nn import UNet, UNetConfig, fast_hwnc as HW
from refdiff.nn.optim import FlatAdam, adam_init
spec=importlib.util.spec_from_file_location("refdiff.nn.fast_hwnc_base","/tmp/base/refdiff/nn/fast_hwnc.py")
BASE=importlib.util.module_from_spec(spec); spec.loader.exec_module(BASE)
model=UNet(UNetConfig()); rng=np.random.default_rng(0)
P=model.init_params(rng)
P["out.conv.w"]=(0.01*rng.standard_normal(P["out.conv.w"].shape)).astype(np.float32)
N=128
x=rng.standard_normal((N,1,8,8)).astype(np.float32); eps=rng.standard_normal(x.shape).astype(np.float32); t=rng.integers(0,1000,N)
st={"P":P,"S":adam_init(P)}; fl=FlatAdam(inplace=True)
def step():
    out,c=model.forward(st["P"],x,t)
    d=(2.0/out.size)*(out-eps); G,_=model.backward(st["P"],c,d)
    st["P"],st["S"]=fl.update(st["P"],G,st["S"],lr=1e-4)
new=(HW._input_transform, HW.winograd_backward)
def use(k):
    HW._input_transform, HW.winograd_backward = (BASE._input_transform, BASE.winograd_backward) if k=="A" else new
res={"A":[],"B":[]}
for k in res: use(k); [step() for _ in range(3)]
l0=os.getloadavg()
for r in range(16):
    for k in res:
        use(k); step(); ts=[]
        for _ in range(5):
            t0=time.process_time(); step(); ts.append(time.process_time()-t0)
        res[k].append(statistics.median(ts)*1e3)
rat=[b/a for a,b in zip(res["A"],res["B"])]
print(f"A = round-5 input transform and Winograd backward (padded copy, 6-row tiles everywhere), B = this branch (tiles read image rows only, one-tile adjoint); batch 128, 1 thread, CPU time, 16 rounds, load {l0[0]:.1f} -> {os.getloadavg()[0]:.1f}")
for k,v in res.items(): print(k, f"median {statistics.median(v):.2f} ms/step (rounds {min(v):.2f}-{max(v):.2f})")
print("B/A per round:", " ".join(f"{r:.3f}" for r in rat), f"; median {statistics.median(rat):.3f}")
