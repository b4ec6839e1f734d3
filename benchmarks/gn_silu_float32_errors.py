"""float32 errors of the fused GroupNorm + SiLU in its two forms (fast.set_gnsilu "exact"
and "fast") against the float64 reference composition, on 400 random cases (shapes,
groups, mean offsets 0-10 standard deviations), in units of u = 2^-24 of each result's
natural scale (MATH.md (23.11)): prints the largest and median error per result (output,
dx, dgamma, dbeta) and the largest ratio fast / max(exact, 1).

    python benchmarks/gn_silu_float32_errors.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np
from refdiff.nn import fast, layers as L, fast_hwnc as hw
def _as(a,dt): return hw.to_nchw(np.ascontiguousarray(np.transpose(a,tuple(range(2,a.ndim))+(0,1)),dtype=dt))
fast.set_layout("hwnc")
rat=[]; E={"exact":[], "fast":[]}
rng=np.random.default_rng(1)
u=2.0**-24
for trial in range(400):
    n=int(rng.integers(1,4)); G=int(rng.choice([1,2,4])); k=int(rng.choice([1,2,3,8])); C=G*k
    h=int(rng.integers(1,9)); w=int(rng.integers(1,9)); shift=float(rng.choice([0,1,2,2.8,3,10]))
    x=rng.standard_normal((n,C,h,w))+shift; g=1+rng.standard_normal(C); b=rng.standard_normal(C); d=rng.standard_normal(x.shape)
    y,cn=L.groupnorm_forward(x,g,b,G); o,cs=L.silu_forward(y); dy=L.silu_backward(d,cs); want=(o,)+tuple(L.groupnorm_backward(dy,cn))
    xr=x.reshape(n,G,-1); xh=((xr-xr.mean(2,keepdims=True))/np.sqrt(xr.var(2,keepdims=True)+1e-5)).reshape(x.shape)
    rstd = 1 / np.sqrt(np.var(x.reshape(n, G, -1), axis=2) + 1e-5)
    scale=[np.linalg.norm(o), max(np.linalg.norm(want[1]), 0.1*max(1,rstd.max()*np.abs(g).max())*np.linalg.norm(d)),
           np.linalg.norm((np.abs(dy)*(1+np.abs(xh))).sum(axis=(0,2,3))), np.linalg.norm(np.abs(dy).sum(axis=(0,2,3)))]
    M=k*h*w; K=(M+n+8)
    for mode in ("exact","fast"):
        fast.set_gnsilu(mode)
        out,c=fast.groupnorm_silu_forward(_as(x,"float32"),g.astype("float32"),b.astype("float32"),G)
        got=(out,)+tuple(fast.groupnorm_silu_backward(_as(d,"float32"),c))
        E[mode].append([np.linalg.norm(np.asarray(a,np.float64)-wv)/s/u for a,wv,s in zip(got,want,scale)])
for m in E:
    a=np.array(E[m]); print(m, "max err/u", a.max(0).round(1), "median", np.median(a,0).round(2))
a=np.array(E["fast"])/np.maximum(np.array(E["exact"]),1); print("ratio max", a.max(0).round(1))
