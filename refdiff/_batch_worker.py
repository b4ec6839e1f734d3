"""The worker side of :class:`refdiff.batch_procs.BatchProcesses`: a fresh interpreter that
holds a copy of the network, reads the parameters from the shared buffer through fixed
views, keeps its slices' forward caches between forward and backward, and writes its
gradients into its own region of the buffer (the protocol: refdiff/batch_procs.py)."""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import time

import numpy as np

__all__: list = []


def _views(buf, spec, base):
    return {k: np.frombuffer(buf, dtype=np.dtype(dt), count=int(np.prod(shape, dtype=np.int64)),
                             offset=base + off).reshape(shape) for k, shape, dt, off in spec}


def _apply_switches(sw):
    from .nn import fast

    for setter, value in zip((fast.set_layout, fast.set_conv3x3, fast.set_gnsilu, fast.set_shift_fold), sw):
        setter(value)


def _put_grads(g, views):
    """Write the gradients ``g`` into the worker's region ``views`` and return None, or
    return ``g`` itself (pickled back) when its keys, shapes or dtypes do not fit."""
    if g.keys() != views.keys() or any(getattr(g[k], "shape", None) != v.shape or getattr(g[k], "dtype", None) != v.dtype
                                       for k, v in views.items()):
        return g
    for k, v in views.items():
        np.copyto(v, g[k])
    return None


class _Worker:
    """A worker's state and its answer to each request (``do_<kind>``)."""

    def __init__(self, conn):
        self.conn, self.model, self.params, self.grads, self.caches = conn, None, None, None, {}
        self.switches = None

    def do_init(self, path, blob):
        sys.path[:] = path + [p for p in sys.path if p not in path]  # the caller's, as spawn does
        self.model = pickle.loads(blob)
        return os.getpid()

    def do_layout(self, spec, size, slot):
        from multiprocessing.reduction import recv_handle

        fd = recv_handle(self.conn)
        buf = mmap.mmap(fd, size * (slot + 2))  # the parameters and this worker's gradient region
        os.close(fd)
        self.params, self.grads = _views(buf, spec, 0), _views(buf, spec, size * (slot + 1))

    def do_caches(self, drops):  # for tests: the ids of the caches this worker holds
        for d in drops:
            self.caches.pop(d, None)
        return sorted(self.caches)

    def do_forward(self, tid, switches, drops, args, kw):
        for d in drops:
            self.caches.pop(d, None)
        if switches != self.switches:
            _apply_switches(switches)
            self.switches = switches
        out, self.caches[tid] = self.model.forward(self.params, *args, **kw)
        return out

    def do_backward(self, tid, dout):
        if tid not in self.caches:
            raise KeyError(f"no forward cache {tid} in this worker (dropped, or made by other workers)")
        g, dx = self.model.backward(self.params, self.caches[tid], dout)
        return dx, _put_grads(g, self.grads)


def _worker_main(fd: int):
    """A worker's loop: serve requests on the socket ``fd`` until "stop" or end of file;
    each answer is ("ok", result, (wall, CPU seconds)) or ("err", pickled exception or None, traceback)."""
    import signal
    import traceback
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        from threadpoolctl import threadpool_limits

        _limits = threadpool_limits(limits=1, user_api="blas")  # noqa: F841  (kept for the process's life)
    except ImportError:  # the environment variables already pinned BLAS
        pass
    conn = Connection(fd)
    worker = _Worker(conn)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the main process is gone
            return
        if msg[0] == "stop":
            return
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            result = getattr(worker, "do_" + msg[0])(*msg[1:])
            answer = ("ok", result, (time.perf_counter() - t0, time.thread_time() - c0))
        except Exception as e:
            try:
                blob = pickle.dumps(e)
            except Exception:
                blob = None
            answer = ("err", blob, traceback.format_exc())
        try:
            conn.send(answer)
        except OSError:  # the main process is gone
            return
