"""Waiting for a container's PID 1: what its monitor does for nearly all of its life.

A process that only waits needs very little: waitpid(2) for its child, and a handler per
signal that passes the signal on with kill(2). So this module imports nothing but os and
signal (the terminal relay of `-t`, terminal.py, only when there is one), and a monitor
(supervisor.py) runs it in a fresh interpreter of its own: daemon.exec_python replaces the
monitor's memory -- the runtime, pyroute2, click -- with a bare `python -I -S`, and
replaces it back with the runtime once PID 1 has ended, to record the exit, restart or tear
down (the sizes: bench/README.md, "Container memory"). execve(2) keeps what matters here:
the PID (so state.json's monitor and the port proxy's pidfd still name it), the children
(PID 1 stays ours to reap), the session, the namespaces, the signal mask and every fd
opened without O_CLOEXEC.
"""
import os
import signal

from .daemon import exec_python

# Signals the runtime passes on to the container instead of dying of them.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


def wait_for(pid, console=None, interactive=False, timeout=None):
    """Wait for a child, passing signals and terminal traffic on; return its exit code the
    way a shell reports it: the code, or 128+N when killed by signal N. With `timeout`
    (seconds): None if it still runs by then, not reaped."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    # Blocked by whoever exec'd this interpreter (exec_blocked): delivered now, to `forward`.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    try:
        if console is not None:
            from . import terminal
            terminal.relay(console, interactive)
        if timeout is not None and not _ends_within(pid, timeout):
            return None
        _, status = os.waitpid(pid, 0)  # a signal handled meanwhile: retried (PEP 475)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    exit_code = os.waitstatus_to_exitcode(status)
    return 128 - exit_code if exit_code < 0 else exit_code


def _ends_within(pid, timeout):
    """poll(2) a pidfd (pidfd_open(2)): it turns readable when the process exits."""
    import select
    pidfd = os.pidfd_open(pid)  # still ours to reap, so there even if it has just exited
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def exec_blocked(function, args, lean=True):
    """daemon.exec_python with the forwarded signals blocked: the mask survives execve(2),
    so a Ctrl-C or a `kill` that comes while the new interpreter starts waits for it
    (wait_for, supervisor.resume) instead of killing a monitor that has no handler yet."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    exec_python(function, args, lean)


def wait_then_resume(args):
    """The lean monitor: `ROOT ID PID MODE` (supervisor.py). Wait for PID 1, then become the
    runtime again, which carries on with its exit code (supervisor.resume)."""
    root, container_id, pid, mode = args
    exit_code = wait_for(int(pid))
    exec_blocked("supervisor.resume", [root, container_id, str(exit_code), mode], lean=False)
