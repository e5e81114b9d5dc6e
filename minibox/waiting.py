"""Waiting for a container's PID 1: what its monitor does for nearly all of its life.

A process that only waits needs very little: a pidfd (pidfd_open(2)) of its child that
poll(2) reports readable when the child exits, waitpid(2) to reap it, and a handler per
signal that passes the signal on with kill(2). Meanwhile the same poll(2) serves what the
container published (`-p`, portproxy.py: the listening sockets and the connections relayed)
and, with `-t`, its terminal (terminal.py): one loop (`Loop`), one process. So this module
imports nothing but os, select, _signal, time and daemon.py, and a monitor (supervisor.py) runs
it in a fresh interpreter of its own: daemon.exec_python replaces the monitor's memory -- the
runtime, pyroute2 -- with a bare `python -I -S`, and replaces it back with the runtime once PID
1 has ended, to record the exit, restart or tear down (the sizes: bench/README.md, "Container
memory"). execve(2) keeps what matters here: the PID (so state.json's monitor still names it),
the children (PID 1 stays ours to reap), the session, the namespaces, the signal mask and every
fd opened without O_CLOEXEC -- the published ports' listening sockets.
"""
# _signal, not signal: signal.py wraps it in enums, whose import (enum, functools,
# collections) would weigh on each container's monitor (bench/README.md). Nor contextlib
# (functools, collections) here or in what the lean monitor imports: try/finally instead.
import _signal
import os
import select
import time

from .daemon import exec_python

# Signals the runtime passes on to the container instead of dying of them.
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
                     _signal.SIGUSR1, _signal.SIGUSR2)


class Loop:
    """One poll(2) over every fd the monitor serves. Each fd has a handler, called with the
    events poll(2) reported for it, or with 0 once its deadline (time.monotonic()) passed."""

    def __init__(self):
        self._poll = select.poll()
        self._handlers = {}
        self._deadlines = {}
        self._stale = set()  # forgotten while a batch of poll(2)'s events is handled

    def watch(self, fd, events, handler, deadline=None):
        """Watch `fd` for `events` (select.POLLIN, POLLOUT), or for others than before."""
        if fd in self._handlers:
            self._poll.modify(fd, events)
        else:
            self._poll.register(fd, events)
        self._handlers[fd] = handler
        self._deadlines.pop(fd, None)
        if deadline is not None:
            self._deadlines[fd] = deadline

    def forget(self, fd):
        """Stop watching `fd`: before it is closed, since poll(2) can't tell a reused number.
        What poll(2) reported for it in the batch being handled is dropped too: by its turn
        the number may be a new file's (accept(2) and pipe(2) take the lowest free one)."""
        if self._handlers.pop(fd, None) is not None:
            self._poll.unregister(fd)
        self._deadlines.pop(fd, None)
        self._stale.add(fd)

    def turn(self, until=None):
        """Wait until something happens (or the monotonic time `until`), and handle it."""
        ends = [*self._deadlines.values(), *([until] if until is not None else [])]
        timeout = None
        if ends:  # in ms, rounded up: rounded down, a deadline 0.4 ms away would spin
            timeout = max(0, int((min(ends) - time.monotonic()) * 1000) + 1)
        self._stale.clear()
        for fd, events in self._poll.poll(timeout):  # a signal handled meanwhile: retried
            if fd not in self._stale:
                self._handlers[fd](events)
        now = time.monotonic()
        for fd, deadline in list(self._deadlines.items()):
            if deadline <= now and self._deadlines.get(fd) == deadline:
                del self._deadlines[fd]
                self._handlers[fd](0)


def serve_until_exit(pid, ports=None, console=None, interactive=False, timeout=None):
    """Serve the published `ports` (portproxy.Published) and the terminal `console` (the pty
    master) until the process `pid` has exited, and the terminal has closed too; return
    True then, or False after `timeout` seconds. The process is not reaped."""
    loop = Loop()
    pidfd = os.pidfd_open(pid)  # a child of ours, not reaped: there even if it has exited
    ended = []

    def exited(_events):
        ended.append(pid)
        loop.forget(pidfd)  # readable for good now: still watched, it would spin the loop
    loop.watch(pidfd, select.POLLIN, exited)
    if ports is not None:
        ports.serve(loop)
    until = None if timeout is None else time.monotonic() + timeout
    try:
        if console is None:
            return _turn_until_ended(loop, ended, until)
        from . import terminal
        with terminal.Relay(loop, console, interactive) as relay:
            return _turn_until_ended(loop, ended, until, relay)
    finally:
        if ports is not None:
            ports.stop_serving(loop)  # the connections relayed; the listeners stay open
        os.close(pidfd)


def _turn_until_ended(loop, ended, until, relay=None):
    """The loop: until the process ended (and the terminal closed: the container's last
    output is still in the pty when PID 1 exits) -> True, or the time `until` came -> False."""
    while not ended or (relay is not None and not relay.done):
        if until is not None and time.monotonic() >= until:
            return False
        loop.turn(until)
    return True


def wait_for(pid, console=None, interactive=False, timeout=None, ports=None):
    """Wait for a child, passing signals, terminal traffic and published ports on; return
    its exit code the way a shell reports it: the code, or 128+N when killed by signal N.
    With `timeout` (seconds): None if it still runs by then, not reaped."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    previous = {signum: _signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    # Blocked by whoever exec'd this interpreter (exec_blocked): delivered now, to `forward`.
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    try:
        if not serve_until_exit(pid, ports, console, interactive, timeout):
            return None
        _, status = os.waitpid(pid, 0)  # a signal handled meanwhile: retried (PEP 475)
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)
    exit_code = os.waitstatus_to_exitcode(status)
    return 128 - exit_code if exit_code < 0 else exit_code


def exec_blocked(function, args, lean=True):
    """daemon.exec_python with the forwarded signals blocked (pthread_sigmask(3),
    sigprocmask(2)): the mask survives execve(2), so a Ctrl-C or a `kill` that comes while
    the new interpreter starts waits for it (wait_for, supervisor.resume) instead of killing
    a monitor that has no handler yet."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, FORWARDED_SIGNALS)
    exec_python(function, args, lean)


def terminal_arg(console, interactive):
    """The -t terminal on wait_then_resume's command line: `-` (none), `FD` (the pty
    master's, made to survive execve(2)) or `FD+stdin` (-i: the caller's stdin relayed)."""
    if console is None:
        return "-"
    os.set_inheritable(console, True)
    return f"{console}+stdin" if interactive else str(console)


def wait_then_resume(args):
    """The lean monitor: `ROOT ID PID MODE TERMINAL [PORTS...]` (supervisor.py; TERMINAL:
    terminal_arg; PORTS: portproxy.Published.to_args). Wait for PID 1, relaying the terminal
    and serving the ports, then become the runtime again, which carries on with its exit
    code (supervisor.resume)."""
    root, container_id, pid, mode, terminal, *ports = args
    console, interactive = None, False
    if terminal != "-":
        fd, _, stdin = terminal.partition("+")
        console, interactive = int(fd), stdin == "stdin"
    published = None
    if ports:
        from .portproxy import Published
        published = Published.from_args(ports)
    exit_code = wait_for(int(pid), console, interactive, ports=published)
    exec_blocked("supervisor.resume", [root, container_id, str(exit_code), mode, *ports],
                 lean=False)
