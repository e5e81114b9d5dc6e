"""exec.fifo: a container created by one command and started by another (runc's trick).

Once everything but the execve(2) is done, the init opens <container dir>/exec.fifo for
writing (init._wait_for_start), and open(2) of a FIFO blocks until a reader comes (fifo(7)):
that is `created`. Whoever starts the container -- `minibox run` itself, or `minibox start`
when an engine calls it -- is that reader (release_init); the init writes one byte and goes
on to execve(2), and the fifo, opened close-on-exec, closes with it. Then the container is
running (mark_running), and its poststart hooks run.

A module of its own because both starters use it: container.py for `run`, and control.py
for an engine's `start`, a process of its own that must not import the create path.
"""
import os
import select
import time

from . import explain, hooks, state
from .errors import MiniboxError


@explain.step("Start: open exec.fifo for reading, which lets the init go on to execve(2)",
              syscall='open("exec.fifo", O_RDONLY); read(fd, buf, 1)', man="fifo(7)")
def release_init(directory, pid, confirm=False):
    """Release the init blocked in init._wait_for_start (`run`, and `minibox start` for OCI).
    With confirm (an init the caller reaps, which has no channel to us any more): read on
    until its execve(2) closes the fifo (close-on-exec) and return what it wrote first -- a
    failure report, or nothing."""
    gone = MiniboxError(f"container {directory.id[:12]} exited before it was started")
    # The pidfd first: once the fifo is open the init may exec, exit and be reaped before
    # our next line runs, and a reaped process has no pidfd to give any more.
    try:
        init = os.pidfd_open(pid)
    except ProcessLookupError:
        raise gone from None
    try:
        fifo = os.open(directory.file("exec.fifo"), os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        os.close(init)
        raise gone from None  # someone else started it
    try:
        # Poll both: an init killed while blocked would otherwise leave us waiting forever.
        readable, _, _ = select.select([fifo, init], [], [])
        if fifo not in readable or not os.read(fifo, 1):
            raise gone
        os.set_blocking(fifo, True)
        report = b"".join(iter(lambda: os.read(fifo, 4096), b"")) if confirm else b""
    finally:
        os.close(fifo)
        os.close(init)
    os.unlink(directory.file("exec.fifo"))
    return report


def mark_running(directory, configured_hooks):
    """Record that the command runs (from `created` only), then run the poststart hooks."""
    running = directory.update(only_from=("created",), status="running", started=time.time())
    if running and configured_hooks.get("poststart"):
        hooks.run(configured_hooks, ("poststart",), state.oci_state(directory.id, running),
                  fatal=False)
