"""The bridge's netlink work in a helper process, so that importing pyroute2 overlaps the start.

Importing pyroute2 takes longer than all the rest of a `minibox run --network none`: its
package __init__ loads every netlink family it knows, asyncio, multiprocessing and more,
and any `from pyroute2.x import y` runs that __init__ first (bench/README.md has the
figures). A container on the bridge needs it for a few netlink requests only, between its
init's "ready" and "go" (container.py). So container.create forks a helper first thing
(network.prepare), which imports pyroute2 on the machine's other core while the runtime
makes the cgroup, the container's directories and the init; a plain `minibox run` forks
it sooner still, from __main__.py before the command line's imports (start_for_run), since
the import is what the whole run waits for. When the init is ready the runtime sends one
request over a socketpair (SOCK_SEQPACKET: one message each way); the helper connects the
init to the bridge (bridge.connect), answers with the address or a failure report, and
exits.

                runtime                              helper
    fork  ---------------------------------->  import pyroute2, bridge.py
    parse the command line, cgroup, directories, fork the init ...
    "connect ID PID IP REPLACE"  ----------->  bridge.connect: veth, address, route
                                 <-----------  "ok 10.199.0.2"  (or "error 125 ...")
    SIGKILL + reap the helper                   _exit

minivm asks the same of it for a VM's tap (`attach OWNER IFNAME`: bridge.connect_interface),
forking it as soon as minivm/runcall.py has read `--network bridge`.

The runtime never loads pyroute2 itself (teardown needs none either: bridge.disconnect),
so a monitor that waits for days does not keep it resident.

Nothing of the helper's outlives the runtime. It dies with it (PR_SET_PDEATHSIG), and the
runtime kills and reaps it before returning from connect() or leaving the run, so the
helper never makes a thing after the runtime started undoing. It makes nothing unasked, and
is asked only once the ledger's `network` entry is written, so whatever it made half-way
has teardown or `gc` undo it. Ctrl-C reaches the runtime only (the helper ignores SIGINT,
blocked from before the fork until then): one process decides. `--explain` narrates the
connection in the runtime itself, where its steps print and pause.
"""
import _signal  # not signal.py: every `minibox run` imports this module, on the bridge or not
import _socket
import os

from . import explain

_helper = None  # (the PID that forked it, the helper's PID and pidfd, our end of the socketpair)

# What pyroute2 imports and a `minibox run` imports too (click, ctypes for the syscalls):
# start_for_run imports them before the fork, so that the helper inherits them instead of
# importing them a second time: CPU a busy machine pays in wall time (bench/README.md,
# issue 19). The helper ends its import no later for that: it had them to do.
# Only speed depends on this list: a module missing from it is imported twice.
SHARED_IMPORTS = ("ctypes", "datetime", "gettext", "inspect", "signal", "threading", "typing",
                  "uuid")


def start():
    """Fork the helper, unless this process has one already."""
    global _helper
    if _ours() or explain.enabled():
        return
    channel, helper_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    parent = os.getpid()
    # A Ctrl-C between fork(2) and the helper's SIG_IGN would raise KeyboardInterrupt in
    # the helper, a copy of the runtime that would then run the runtime's handlers.
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGINT])
    pid = os.fork()
    if pid == 0:
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # a pending one is discarded
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
        channel.close()
        _serve(helper_end, parent)  # never returns
    _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
    helper_end.close()
    _helper = parent, pid, os.pidfd_open(pid), channel


def start_for_run(run_args):
    """From __main__.py, before the command line and the runtime are imported: start the
    helper now if `minibox run RUN_ARGS` looks headed for the bridge, its default.

    A glance at the raw words, not a parse (click parses them later): the first
    `--network MODE` or `--network=MODE` is read, and runs that connect elsewhere or later
    are left alone: without root (no bridge), with -d (the detached monitor connects, with
    a helper of its own) and with --explain or --step (connect() narrates in the runtime).
    A wrong guess costs time only: a helper not started here is started by connect(), and
    one started for a run that needs none is stopped by network.prepare."""
    words = run_args[:run_args.index("--")] if "--" in run_args else run_args
    if os.geteuid() != 0 or any(_elsewhere(word) for word in words):
        return
    mode = "bridge"
    for index, word in enumerate(words):
        if word.startswith("--network="):
            mode = word.partition("=")[2]
            break
        if word == "--network":
            mode = words[index + 1] if index + 1 < len(words) else ""
            break
    if mode == "bridge":
        for name in SHARED_IMPORTS:
            __import__(name)
        start()


def _elsewhere(word):
    """-d, --detach, --explain, --step, or -d among short flags (-dit)."""
    if word in ("--detach", "--explain", "--step"):
        return True
    return word[:1] == "-" and "d" in word[1:] and set(word[1:]) <= set("dit")


def connect(container_id, pid, requested_ip=None, replace=False):
    """Connect the network namespace of `pid` to the bridge (bridge.connect) through the
    helper, started now if it is not yet; return the address. `replace`: first delete the
    veth pair of the container's previous init (a restart)."""
    if explain.enabled():
        stop()
        return _connect_here(container_id, pid, requested_ip, replace)
    return _ask(f"connect {container_id} {pid} {requested_ip or '-'} {int(replace)}",
                f"connecting container {container_id[:12]}")


def attach(owner, ifname):
    """Attach the interface `ifname` -- a VM's tap, minivm/nic.py -- to the bridge and lease
    an address to `owner` (bridge.connect_interface), through the helper as connect() does;
    return the address, the subnet and the gateway, as text."""
    if explain.enabled():
        stop()
        return _attach_here(owner, ifname)
    return _ask(f"attach {owner} {ifname}", f"attaching {ifname}").split()


def _ask(request, doing):
    """Send the helper its one request and return its answer; the helper is gone after."""
    start()
    _, helper, _, channel = _helper
    try:
        channel.send(request.encode())
        reply = channel.recv(4096)
    except OSError:  # EPIPE, ECONNRESET: it died (said below)
        reply = b""
    finally:
        stop()  # answered or not, interrupted or not: the helper is gone before we go on
    from .errors import read_failure_report
    failure = read_failure_report(reply)
    if failure:
        raise failure
    if not reply.startswith(b"ok "):
        from .bridge import NetworkError
        raise NetworkError(f"the network helper (PID {helper}) died before {doing}")
    return reply[3:].decode()


def stop():
    """Kill and reap this process's helper, if it has one: before the network is undone,
    and when it was started for nothing."""
    global _helper
    if _ours():
        _, _, pidfd, channel = _helper
        _end(pidfd)
        os.close(pidfd)
        channel.close()
        _helper = None  # last: a Ctrl-C before this line leaves it for teardown's stop()


def _ours():
    return _helper is not None and _helper[0] == os.getpid()


def _end(pidfd):
    """SIGKILL, then reap: whether it answered or not, the helper is gone on return. By
    pidfd (pidfd_send_signal(2), waitid(P_PIDFD)): a stop() that a Ctrl-C cut short may
    have reaped it already, and its PID may be another process's by now."""
    try:
        _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
    except ProcessLookupError:
        pass  # reaped already
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        pass  # reaped already


def _connect_here(container_id, pid, requested_ip, replace):
    from . import bridge
    if replace:
        # The last init's pair: the kernel deletes it with that init's netns, but
        # asynchronously, and the name is the container's.
        bridge.delete_veth(container_id)
    return str(bridge.connect(container_id, pid, requested_ip))


def _attach_here(owner, ifname):
    from . import bridge
    return [str(value) for value in bridge.connect_interface(owner, ifname)]


def _serve(channel, parent):
    """The helper's whole life: import, take one request, answer, _exit. Never returns."""
    from .errors import RUNTIME_ERROR, MiniboxError, bug_line, failure_report
    reply = b""
    try:
        from . import syscalls
        syscalls.set_parent_death_signal(_signal.SIGKILL)
        if os.getppid() == parent:  # else the runtime died before the line above
            # The import this process is for, and bridge.py's own: all the request needs
            # is loaded before it comes.
            import pyroute2.iproute.linux  # noqa: F401
            from . import bridge, ipam  # noqa: F401
            request = channel.recv(4096).decode().split()
            if request and request[0] == "attach":
                reply = f"ok {' '.join(_attach_here(*request[1:]))}".encode()
            elif request:
                _, container_id, pid, requested_ip, replace = request
                address = _connect_here(container_id, int(pid),
                                        None if requested_ip == "-" else requested_ip,
                                        replace == "1")
                reply = f"ok {address}".encode()
    except MiniboxError as error:
        reply = failure_report(error.exit_code, error)
    except BaseException as error:  # a bug: still one line, in the runtime
        reply = failure_report(RUNTIME_ERROR, bug_line(error))
    try:
        if reply:
            channel.send(reply)
    finally:
        os._exit(0)
