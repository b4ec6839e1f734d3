"""BatchProcesses: a network's forward / backward over slices of the batch, one slice per
worker PROCESS (issue 21; re-exported as ``refdiff.training.BatchProcesses``).

The same function as :class:`refdiff.training.BatchThreads` (the batch output is the
slices' outputs stacked, the parameter gradient the sum of the slices', MATH.md (14.1)),
with the slices beyond the first run by persistent worker processes instead of threads, so
that the many small NumPy calls of the tuned U-Net step, each holding the GIL, no longer
wait for one another.  Protocol (one socket pair per worker, pickled messages):

    start    the worker is a fresh interpreter (``sys.executable``; BLAS pinned to one
             thread by the environment before NumPy loads, and by threadpoolctl), sent
             the pickled network once
    layout   when the parameters' keys, shapes or dtypes change: a new shared buffer
             (``os.memfd_create``, its descriptor passed over the socket), laid out as one
             region of parameters and one gradient region per worker; the worker keeps
             fixed array views of it (so the U-Net's "checked once" memo keeps hitting)
    forward  the main process copies the parameters into the buffer, sends each worker
             its x / t / cond slice and a cache id, runs its own slice, receives the
             outputs; the worker keeps its slice's cache under that id
    backward the main process sends the dout slices, runs its own; each worker writes its
             gradients into its region and returns dx; the main process sums the regions
             into its own gradients (the same order of sums as BatchThreads)
    drop     a cache id whose token the main process no longer holds is dropped by the
             worker at the next request

Only x/t/cond slices, outputs, dout slices, dx (pickled) and parameters and gradients
(shared memory) cross the boundary.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping

import numpy as np

from ._batch_worker import _views
from ._validate import check_array, check_int

__all__ = ["BatchProcesses"]

_ALIGN = 64  # bytes: each array in the shared buffer starts on a cache line
_POLL_S = 0.2  # how often a wait checks that the worker is alive
_STOP_S = 5.0  # how long close() waits for a worker to exit before killing it


def _switches():
    """The tuned layers' process-wide switches (refdiff.nn.fast), sent with each forward so
    that a worker computes with the caller's settings."""
    from .nn import fast

    return fast.get_layout(), fast.get_conv3x3(), fast.get_gnsilu(), fast.get_shift_fold()


def _layout(params):
    """``(spec, region_bytes)``: spec = ((key, shape, dtype str, byte offset), ...)."""
    spec, off = [], 0
    for k, v in params.items():
        spec.append((k, tuple(v.shape), v.dtype.str, off))
        off += -(-v.nbytes // _ALIGN) * _ALIGN
    return tuple(spec), max(off, _ALIGN)


def _new_buffer(size):
    """A file descriptor of ``size`` bytes of shared memory, and its mapping."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("refdiff-batch", os.MFD_CLOEXEC)
    else:  # no memfd (macOS): an unlinked temporary file
        import tempfile

        f = tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        fd = os.dup(f.fileno())
        f.close()
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


class _Token:
    """What the main process holds for a worker's cache: dropping it drops the worker's."""

    __slots__ = ("id", "epoch", "gen", "__weakref__")


class _RemoteTraceback(Exception):
    def __str__(self):
        return self.args[0]


def _stop(procs, conns):
    """Stop every worker: ask, wait, then kill; close the sockets (also the finalizer)."""
    for c in conns:
        try:
            c.send(("stop",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + _STOP_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for c in conns:
        c.close()
    procs.clear()
    conns.clear()


class _Delegating:
    """Attributes not found on a batch-slicing wrapper (BatchProcesses, and
    :class:`refdiff.training.BatchThreads`) come from the wrapped ``model``."""

    def __getattr__(self, name):
        try:
            model = self.__dict__["model"]
        except KeyError:  # not initialised yet (copy, pickle)
            raise AttributeError(name) from None
        return getattr(model, name)


class BatchProcesses(_Delegating):
    """A network's ``forward`` / ``backward`` over ``parts`` slices of the batch, the first
    slice in the calling process, each other one in a persistent worker process: the same
    function as the whole-batch network (MATH.md (14.1); see
    :class:`refdiff.training.BatchThreads`, whose interface this shares), tested equal to it
    in tests/test_batch_processes.py.

    Why processes: with two Python threads the tuned U-Net step (batch 128, float32) waits
    on the GIL: each slice thread's forward takes 15.8 ms wall for 12.5 ms of CPU and its
    backward 22.6 for 18.5 (benchmarks/results/cpu-2026-12-01-r9-merged), the cost of the
    many small NumPy calls (~5.5 ms of fixed Python work per slice and step).  Processes
    share no GIL.  What crosses the boundary per step: the parameters, copied once per
    forward into a shared buffer (~1 MB for the default U-Net), the x / t / cond and dout
    slices and the outputs and dx (pickled, ~16 kB each at batch 128), and each worker's
    gradients through its own region of the buffer; a slice's forward cache stays in the
    worker (the main process holds an id).  Measured costs: benchmarks/README.md.

    Workers are fresh interpreters (not ``fork``: forking a process whose BLAS or other
    threads run is unsafe; not multiprocessing's ``spawn``, which would re-run the caller's
    ``__main__``); they start at the first forward (an import of NumPy and refdiff, about
    half a second) and stop at :meth:`close`, when the object is collected, or at exit.  The
    network is pickled to them once (its class must be importable: not defined in
    ``__main__``; the workers get the caller's ``sys.path``); the tuned layers' switches
    (``refdiff.nn.fast``) are sent with every forward.  NumPy arrays only (CuPy: use BatchThreads); POSIX only.
    BLAS is pinned to one thread in the workers; pin it in the calling process too
    (``OPENBLAS_NUM_THREADS=1`` or threadpoolctl), as for BatchThreads.

    Parameters
    ----------
    model : network
        A picklable refdiff network with ``forward(params, x, t, cond)`` and
        ``backward(params, cache, dout) -> (grads, dx)``.
    parts : int, default 2
        Number of batch slices (the calling process and ``parts - 1`` workers), >= 1; a
        batch smaller than ``parts`` runs in fewer slices.

    Attributes
    ----------
    startup_s : float or None
        Wall time of the last worker start (spawn, import, network unpickled), seconds.
    last_exchange : dict
        Timing of the last forward or backward exchange (for benchmarks), seconds:
        ``local_s`` (from sending the requests to the end of the main process's slice),
        ``local_cpu_s`` (that slice's thread CPU time), ``worker_s`` and ``worker_cpu_s``
        (each worker's wall and CPU time from receiving its request to replying) and
        ``wall_s`` (until every reply arrived).
    """

    def __init__(self, model, parts: int = 2):
        parts = check_int("parts", parts, 1)
        if not all(callable(getattr(model, m, None)) for m in ("forward", "backward")):
            raise TypeError(f"model must be a refdiff network with forward and backward methods, got "
                            f"{type(model).__name__}")
        if os.name != "posix":
            raise RuntimeError("BatchProcesses needs a POSIX system (descriptor passing); use BatchThreads")
        self.model, self.parts, self.startup_s = model, parts, None
        self._procs, self._conns = [], []  # shared with the finalizer, never replaced
        self._finalizer = weakref.finalize(self, _stop, self._procs, self._conns)
        self._ids, self._drops, self._epoch, self._gen = itertools.count(), [], 0, 0
        self._spec = self._buf = self._pviews = self._gviews = None
        self._closed = False
        self.last_exchange, self._worker_s = {}, None

    def __repr__(self):
        return f"BatchProcesses({type(self.model).__name__}, parts={self.parts}, workers={len(self._procs)})"

    @property
    def pids(self) -> list:
        """The process ids of the running workers (empty before the first forward)."""
        return [p.pid for p in self._procs]

    # ------------------------------------------------------------ workers
    def _start(self):
        """Start ``parts - 1`` workers and send them the network."""
        from multiprocessing import Pipe

        t0 = time.perf_counter()
        try:
            blob = pickle.dumps(self._model_state())
        except Exception as e:
            raise TypeError(f"model must be picklable for BatchProcesses (it is sent to the workers): {e}") from e
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        code = "import sys; from refdiff._batch_worker import _worker_main; _worker_main(int(sys.argv[1]))"
        self._epoch += 1
        self._spec = self._buf = self._pviews = self._gviews = None
        for _ in range(self.parts - 1):
            mine, theirs = Pipe()
            proc = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                    stdin=subprocess.DEVNULL, env=env)
            theirs.close()
            self._procs.append(proc)
            self._conns.append(mine)
        try:
            for i in range(len(self._procs)):
                self._send(i, ("init", list(sys.path), blob))
            for i in range(len(self._procs)):
                self._reply(i)  # a network that does not unpickle there raises here
        except BaseException:
            self._stop_workers()
            raise
        self.startup_s = time.perf_counter() - t0

    def _model_state(self):
        m = self.model
        if "_checked_params" in getattr(m, "__dict__", {}):  # the U-Net's memo holds the caller's arrays
            import copy

            m = copy.copy(m)
            del m.__dict__["_checked_params"]
        return m

    def _fail(self, i, what):
        code = self._procs[i].poll() if i < len(self._procs) else None
        self._stop_workers()
        raise RuntimeError(f"BatchProcesses: worker {i + 1} {what} (exit code {code}); the workers were stopped "
                           f"and start again at the next forward")

    def _send(self, i, msg):
        """Send ``msg`` (an object, or bytes already pickled) to worker i."""
        try:
            self._conns[i].send_bytes(msg if isinstance(msg, bytes) else pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            self._fail(i, "is gone: could not send to it")

    def _recv(self, i):
        conn, proc = self._conns[i], self._procs[i]
        try:
            while not conn.poll(_POLL_S):
                if proc.poll() is not None:
                    self._fail(i, "died")
            return conn.recv()
        except (EOFError, OSError):
            self._fail(i, "died")

    def _stop_workers(self):
        _stop(self._procs, self._conns)
        self._spec = self._buf = self._pviews = self._gviews = None

    def close(self):
        """Stop the worker processes (also done when the object is collected or at exit);
        using the object afterwards is a RuntimeError."""
        self._closed = True
        self._finalizer()
        self._spec = self._buf = self._pviews = self._gviews = None

    # ------------------------------------------------------------ the exchange
    def _ensure(self, params):
        """Workers running and the parameters in the shared buffer (laid out anew when their
        keys, shapes or dtypes change).  Returns the parameters' generation."""
        if self._closed:
            raise RuntimeError("BatchProcesses is closed")
        if not all(isinstance(v, np.ndarray) for v in params.values()):
            bad = next(k for k, v in params.items() if not isinstance(v, np.ndarray))
            raise TypeError(f"BatchProcesses runs NumPy arrays only; params[{bad!r}] is "
                            f"{type(params[bad]).__module__}.{type(params[bad]).__name__} (use BatchThreads)")
        if not self._procs:
            self._start()
        spec, size = _layout(params)
        if spec != self._spec:
            from multiprocessing.reduction import send_handle

            fd, buf = _new_buffer(size * self.parts)
            try:
                for i, p in enumerate(self._procs):
                    self._send(i, ("layout", spec, size, i))
                    send_handle(self._conns[i], fd, p.pid)
                for i in range(len(self._procs)):
                    self._reply(i)
            finally:
                os.close(fd)
            self._spec, self._buf, self._pviews = spec, buf, _views(buf, spec, 0)
            self._gviews = [_views(buf, spec, size * (i + 1)) for i in range(len(self._procs))]
        for k, v in params.items():
            np.copyto(self._pviews[k], v)
        self._gen += 1
        return self._gen

    def _reply(self, i):
        msg = self._recv(i)
        if msg[0] == "ok":
            self._worker_s = msg[2]  # (wall, CPU)
            return msg[1]
        _, blob, tb = msg
        try:
            exc = pickle.loads(blob) if blob is not None else None
        except Exception:
            exc = None
        if not isinstance(exc, BaseException):
            exc = RuntimeError(f"BatchProcesses: worker {i + 1} raised (its traceback follows)")
        exc.add_note(f"in BatchProcesses worker {i + 1} (pid {self._procs[i].pid}):\n{tb}")
        exc.__cause__ = _RemoteTraceback(tb)
        raise exc

    def _exchange(self, msgs, local):
        """Send ``msgs[i]`` to worker i, run ``local()`` here, collect every reply (even when
        ``local`` raises, so the workers stay in step); the first error is raised."""
        n, w0 = len(msgs), time.perf_counter()
        self.last_exchange = {"local_s": None, "local_cpu_s": None, "worker_s": [], "worker_cpu_s": [], "wall_s": None}
        c0 = time.thread_time()
        blobs = [pickle.dumps(m, pickle.HIGHEST_PROTOCOL) for m in msgs]  # all or none are sent
        try:
            for i, b in enumerate(blobs):
                self._send(i, b)
            try:
                mine, err = local(), None
            except Exception as e:
                mine, err = None, e
            self.last_exchange["local_s"] = time.perf_counter() - w0
            self.last_exchange["local_cpu_s"] = time.thread_time() - c0
            replies, rerr = [], None
            for i in range(n):
                try:
                    replies.append(self._reply(i))
                    self.last_exchange["worker_s"].append(self._worker_s[0])
                    self.last_exchange["worker_cpu_s"].append(self._worker_s[1])
                except RuntimeError as e:
                    if not self._procs:  # a dead worker: everything was stopped
                        raise
                    rerr = rerr or e
                except Exception as e:
                    rerr = rerr or e
        except BaseException as e:
            if not isinstance(e, Exception) and self._procs:  # interrupted mid-exchange: out of step
                self._stop_workers()
            raise
        self.last_exchange["wall_s"] = time.perf_counter() - w0
        if err is not None:
            raise err
        if rerr is not None:
            raise rerr
        return mine, replies

    def _take_drops(self):
        """The ids of the caches whose tokens were collected since the last request."""
        drops = []
        while self._drops:  # in place: the tokens' finalizers hold this very list
            drops.append(self._drops.pop())
        return drops

    def _worker_caches(self):
        """The cache ids each worker holds (for tests: dropped tokens' caches are freed)."""
        msgs = [("caches", self._take_drops())] * len(self._procs)
        return self._exchange(msgs, lambda: None)[1]

    def _slices(self, n):
        k = max(1, min(self.parts, n))
        b = [(i * n) // k for i in range(k + 1)]
        return [slice(b[i], b[i + 1]) for i in range(k)]

    # ------------------------------------------------------------ the network's interface
    def forward(self, params, x, t, cond=None, **kw):
        """The wrapped ``forward`` on each slice, outputs concatenated (as
        :meth:`refdiff.training.BatchThreads.forward`); the cache holds the main process's
        slice cache and an id of the workers'.  NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            The network's parameters, NumPy arrays (copied to the workers' shared buffer).
        x : numpy.ndarray, shape (N, ...)
            The batch.
        t : array of shape (N,) or scalar
            Times, sliced with the batch when an array.
        cond : mapping, array or None, optional
            The condition; arrays (and a mapping's array values with a batch axis) are sliced.
        **kw
            Passed to the wrapped ``forward`` (pickled to the workers).

        Returns
        -------
        out : numpy.ndarray
            The slices' outputs, concatenated along the batch axis.
        cache : tuple
            The slices, the first slice's cache and the workers' cache token.
        """
        check_array("x", x, min_ndim=1)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"BatchProcesses runs NumPy arrays only; x is {type(x).__module__}.{type(x).__name__} "
                            f"(use BatchThreads)")
        if getattr(t, "ndim", 0) and (t.ndim != 1 or t.shape[0] != x.shape[0]):
            raise ValueError(f"t must be a scalar or of shape (N,) = ({x.shape[0]},) (x's batch), x has shape "
                             f"{tuple(x.shape)}, t has shape {tuple(t.shape)}")
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping name -> NumPy array, got {type(params).__name__}")
        if self._closed:
            raise RuntimeError("BatchProcesses is closed")
        sls = self._slices(x.shape[0])

        def part(sl):
            cs = cond
            if isinstance(cond, dict):
                cs = {k: (v[sl] if getattr(v, "ndim", 0) else v) for k, v in cond.items()}
            elif cond is not None:
                cs = cond[sl]
            return x[sl], (t[sl] if getattr(t, "ndim", 0) else t), cs

        if len(sls) == 1:
            out, c0 = self.model.forward(params, x, t, cond, **kw)
            return out, (sls, c0, None)
        gen = self._ensure(params)
        tok = _Token()
        tok.id, tok.epoch, tok.gen = next(self._ids), self._epoch, gen
        drops = self._take_drops()
        sw = _switches()
        msgs = [("forward", tok.id, sw, drops, part(sl), kw) for sl in sls[1:]]
        weakref.finalize(tok, self._drops.append, tok.id)  # also when the exchange fails: the workers drop it
        (out0, c0), outs = self._exchange(msgs, lambda: self.model.forward(params, *part(sls[0]), **kw))
        out = np.concatenate([out0] + outs, axis=0)
        return out, (sls, c0, tok)

    def backward(self, params, cache, dout):
        """``(grads, dx)``: the slices' parameter gradients summed (the main process's slice
        first, then each worker's), their input gradients concatenated.  NaN and inf in
        ``dout`` propagate: not checked (per step).

        Parameters
        ----------
        params : dict
            The parameters of the forward pass.
        cache : tuple
            The cache returned by :meth:`forward`.
        dout : numpy.ndarray
            Gradient with respect to the whole batch's output.

        Returns
        -------
        grads : dict
            Gradient of every parameter (the sum over slices).
        dx : numpy.ndarray
            Gradient with respect to the input, the whole batch.
        """
        if not (isinstance(cache, tuple) and len(cache) == 3 and isinstance(cache[0], list)
                and (cache[2] is None or isinstance(cache[2], _Token))):
            raise TypeError(f"cache must be the cache returned by BatchProcesses.forward, got {type(cache).__name__}")
        sls, c0, tok = cache
        check_array("dout", dout, min_ndim=1)
        if dout.shape[0] != sls[-1].stop:
            raise ValueError(f"dout must have the forward output's batch {sls[-1].stop}, got shape {tuple(dout.shape)}")
        if tok is None:
            return self.model.backward(params, c0, dout)
        if self._closed:
            raise RuntimeError("BatchProcesses is closed")
        if tok.epoch != self._epoch or not self._procs:
            raise RuntimeError("BatchProcesses: this cache's workers were stopped (a worker died or was "
                               "interrupted); run the forward again")
        if tok.gen != self._gen:  # another forward wrote its parameters since: these again
            self._ensure(params)
        msgs = [("backward", tok.id, dout[sl]) for sl in sls[1:]]
        (g0, dx0), replies = self._exchange(msgs, lambda: self.model.backward(params, c0, dout[sls[0]]))
        grads = dict(g0)
        for i, (dxi, gi) in enumerate(replies):
            gi = self._gviews[i] if gi is None else gi
            for k in grads:
                grads[k] = grads[k] + gi[k]
        dx = np.concatenate([dx0] + [r[0] for r in replies], axis=0)
        return grads, dx
