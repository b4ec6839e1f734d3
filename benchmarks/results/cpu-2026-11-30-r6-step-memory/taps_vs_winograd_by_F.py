import numpy as np, time
from refdiff.nn import fast_hwnc as hw
hw.keep_freed_memory()
rng=np.random.default_rng(0)
def t(f,k=150):
    f(); best=1e9
    for r in range(3):
        t0=time.process_time()
        for _ in range(k): f()
        best=min(best,(time.process_time()-t0)/k*1e6)
    return best
for S,C in ((8,32),(4,32),(8,64),(16,32)):
  for F in (1,2,3):
    N=128 if S<16 else 32
    x=rng.standard_normal((S,S,N,C)).astype(np.float32); w=rng.standard_normal((F,C,3,3)).astype(np.float32); b=np.zeros(F,np.float32)
    d=rng.standard_normal((S,S,N,F)).astype(np.float32)
    _,cw=hw.winograd_forward(x,w,b); _,ct=hw.taps_forward(x,w,b)
    a=t(lambda: hw.winograd_forward(x,w,b))+t(lambda: hw.winograd_backward(d,cw))
    bb=t(lambda: hw.taps_forward(x,w,b))+t(lambda: hw.taps_backward(d,ct))
    print(f"S={S} C={C} N={N} F={F}: winograd {a:.0f} us, taps {bb:.0f} us")
