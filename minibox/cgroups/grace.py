"""The RCU grace period a cgroup move waits for, paid early and in the background.

Any write to a `cgroup.procs` (v1 and v2 alike) takes the global percpu rwsem
cgroup_threadgroup_rwsem for writing (kernel/cgroup/cgroup.c: cgroup_procs_write_start ->
cgroup_attach_lock -> percpu_down_write). Its readers -- every fork(2), exit and exec -- take
a fast path with no lock at all while no writer is around, so a writer first switches them
to the slow path and waits until all have seen that: rcu_sync_enter() (kernel/rcu/sync.c) in
its idle state calls synchronize_rcu(), a full RCU grace period: most of a whole `runc run`
(bench/README.md has the figures). After the writer's rcu_sync_exit() the readers stay on the slow
path until an RCU callback, at least one more grace period later, puts them back (states
GP_EXIT and GP_REPLAY, then GP_IDLE); a writer that comes meanwhile does not wait at all.

So as soon as `run` knows it will start a container, a thread moves the runtime into the
cgroup it is already in (our own PID into our own `cgroup.procs`: the kernel changes
nothing, but takes the rwsem for writing all the same), and does it again every few
milliseconds, so the readers never get back to their fast path, until the real move of the
container's init is done (finish()). Meanwhile the main thread imports, makes the state
directory, the cgroup and the init. Only a head start: if a write fails, or the keep-warm
gives up (after MAX_SECONDS, say while --step waits for Enter), the real move simply waits
as it would have. `favordynmods` (a cgroup2 mount option, kernel 6.0+) would keep the readers
on the slow path for good; the runtime does not own the host's mounts.

The plain `_thread` module, not `threading`: this is all the thread does, and importing
`threading` would cost every start.
"""
import _thread
import os
import time

INTERVAL = 0.005  # between two writes: well inside the grace periods the readers stay slow
MAX_SECONDS = 2.0

_running = None  # (the PID that started it, the lock that stops it, the lock it frees at its end)


def running() -> bool:
    """Does this process's keep-warm thread run? A fork(2)ed child (the detached monitor)
    has none of its parent's, and starts its own."""
    return _running is not None and _running[0] == os.getpid() and _running[2].locked()


def start(own_procs: str) -> None:
    """Start the keep-warm thread writing our PID to `own_procs`, a `cgroup.procs` of a
    cgroup we are in (the caller checked running())."""
    global _running
    try:
        procs = os.open(own_procs, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return  # only a head start: the real move then pays the grace period itself
    begun, stop, stopped = (_thread.allocate_lock() for _ in range(3))
    for lock in (begun, stop, stopped):
        lock.acquire()
    _running = os.getpid(), stop, stopped
    _thread.start_new_thread(_keep_warm, (procs, begun, stop, stopped))
    # Until the thread is in its first write(2): a new thread needs the GIL to run at all,
    # and the main thread would hold it for a whole switch interval (5 ms) of imports first.
    begun.acquire()


def finish() -> None:
    """Stop the thread (after the real move) and wait for it: never two writers of ours."""
    global _running
    if _running is None or _running[0] != os.getpid():
        return
    _, stop, stopped = _running
    _running = None
    stop.release()
    stopped.acquire()


def _keep_warm(procs, begun, stop, stopped):
    pid = str(os.getpid()).encode()
    deadline = time.monotonic() + MAX_SECONDS
    begun.release()  # the main thread goes on once this thread blocks in write(2), GIL released
    try:
        while time.monotonic() < deadline:
            os.write(procs, pid)
            if stop.acquire(timeout=INTERVAL):
                break
    except OSError:
        pass  # only a head start: the real move then pays the grace period itself
    finally:
        os.close(procs)
        stopped.release()
