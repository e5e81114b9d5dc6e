"""The bridge's netlink work in a helper process, so that importing pyroute2 overlaps the start.

Importing pyroute2 takes longer than all the rest of a `minibox run --network none`: its
package __init__ loads every netlink family it knows, asyncio, multiprocessing and more,
and any `from pyroute2.x import y` runs that __init__ first (bench/README.md has the
figures). A container on the bridge needs it for a few netlink requests only, between its
init's "ready" and "go" (container.py). So container.create forks a helper first thing
(network.prepare), which imports pyroute2 on the machine's other core while the runtime
makes the cgroup, the container's directories and the init. When the init is ready the
runtime sends one request over a socketpair (SOCK_SEQPACKET: one message each way); the
helper connects the init to the bridge (bridge.connect), answers with the address or a
failure report, and exits.

                runtime                              helper
    fork  ---------------------------------->  import pyroute2
    cgroup, directories, fork the init ...
    "connect ID PID IP REPLACE"  ----------->  bridge.connect: veth, address, route
                                 <-----------  "ok 10.199.0.2"  (or "error 125 ...")
    SIGKILL + reap the helper                   _exit

minivm asks the same of it for a VM's tap (`attach OWNER IFNAME`: bridge.connect_interface),
forking it as soon as minivm/runcall.py has read `--network bridge`.

The runtime never loads pyroute2 itself (teardown needs none either: bridge.disconnect),
so a monitor that waits for days does not keep it resident.

Nothing of the helper's outlives the runtime. It dies with it (PR_SET_PDEATHSIG), and the
runtime kills and reaps it before returning from connect() or leaving the run, so the
helper never makes a thing after the runtime started undoing: whatever it made half-way,
the ledger's `network` entry -- written before the helper is forked -- has teardown or
`gc` undo. Ctrl-C reaches the runtime only (the helper ignores SIGINT): one process
decides. `--explain` narrates the connection in the runtime itself, where its steps print
and pause.
"""
import _socket
import os
import signal

from . import explain

_helper = None  # (the PID that forked it, the helper's PID and pidfd, our end of the socketpair)


def start():
    """Fork the helper, unless this process has one already."""
    global _helper
    if _ours() or explain.enabled():
        return
    channel, helper_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        channel.close()
        _serve(helper_end, parent)  # never returns
    helper_end.close()
    _helper = parent, pid, os.pidfd_open(pid), channel


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
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply = b""
    try:
        from . import syscalls
        syscalls.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() == parent:  # else the runtime died before the line above
            import pyroute2.iproute.linux  # noqa: F401  (the import this process is for)
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
