"""Port publishing (`-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]`): a userspace TCP proxy.

A container on the bridge has an address only the host can reach. To publish one of its
ports, the runtime forks a small proxy process (like Docker's `docker-proxy`) that listens
on HOSTIP:HOSTPORT in the host's network namespace and, for each connection it accepts,
opens a connection to CONTAINER_IP:CONTAINERPORT and copies bytes both ways.

Why a proxy and not DNAT (an iptables/nftables rule rewriting the destination)?
  * It needs no firewall tooling and leaves the host's rule set untouched.
  * The default host address is loopback (127.0.0.1, safer than Docker's 0.0.0.0), and
    DNAT of locally generated traffic to 127.0.0.1 needs the OUTPUT chain plus the
    `route_localnet` sysctl, a known foot-gun (CVE-2020-8558 in kube-proxy).
  * A busy port is found the honest way: `bind(2)` fails with EADDRINUSE, before the
    container starts, and the user gets one clear line.
The cost: the container sees connections coming from the bridge's gateway, not from the
real client, and every byte is copied through userspace.

The listening sockets are bound by the runtime before it creates the container, so a
busy port fails the run before anything exists; the proxy, forked once the container has
an address, inherits them. It serves the container for its whole life, restarts included
(a restarted container keeps its address), so it holds a pidfd (`pidfd_open(2)`) of the
container's monitor, not of one init, and exits when the monitor does: a monitor killed
with SIGKILL can't leave a proxy behind. Teardown and `gc` kill it by PID as well.

The proxy serves for as long as the container lives, so it does not serve as a fork of the
runtime, with all it imported: it execs a bare interpreter (daemon.exec_python) that runs
`serve_fds`. Hence this module's imports: only what that interpreter needs at the top, the
rest of minibox inside the functions of the runtime's side.
"""
import errno
import os
import signal

from . import daemon
from .errors import MiniboxError

DEFAULT_HOST_IP = "127.0.0.1"
PUBLISH_HELP = (
    "Publish a container port on the host (bridge network only). "
    f"HOSTIP defaults to {DEFAULT_HOST_IP} (loopback only); use 0.0.0.0 for all "
    "interfaces. Served by a userspace TCP proxy process. Repeatable."
)


class PublishError(MiniboxError):
    """A `-p` value that can't be parsed or a host port that can't be bound."""


def parse_mapping(text):
    """`[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]`, the syntax of `docker run -p`, as a
    spec.PortMapping."""
    spec, _, protocol = text.partition("/")
    if protocol not in ("", "tcp"):
        raise PublishError(f"bad -p {text!r}: only tcp can be published")
    parts = spec.split(":")
    if len(parts) == 2:
        parts.insert(0, DEFAULT_HOST_IP)
    if len(parts) != 3:
        raise PublishError(f"bad -p {text!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]")
    host_ip, host_port, container_port = parts
    from .spec import PortMapping
    import ipaddress  # here, not above: `run` without -p must not pay for it (~1.5 ms)
    try:
        ipaddress.IPv4Address(host_ip)
    except ValueError:
        raise PublishError(f"bad -p {text!r}: {host_ip!r} is not an IPv4 address") from None
    return PortMapping(host_ip, _port(host_port, text), _port(container_port, text))


def _port(text, whole):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PublishError(f"bad -p {whole!r}: {text!r} is not a port number (1-65535)")
    return int(text)


class ProxyProcess:
    """What the ledger records of a proxy: its PID and start time (`shared.process_start_time`)."""

    def __init__(self, pid, started):
        self.pid = pid
        self.started = started


def bind_ports(mappings):
    """Bind and listen on every host port; return [(socket, container port), ...].

    Called before the container is created, so a busy port fails the run before anything
    exists. All-or-nothing: if one port can't be bound, those bound so far are closed.
    """
    bound = []
    try:
        for mapping in mappings:
            bound.append((_listen(mapping), mapping.container_port))
    except BaseException:
        close_ports(bound)
        raise
    return bound


def close_ports(bound):
    for listener, _ in bound:
        listener.close()


def start_proxy(bound, container_ip, watched_pid):
    """Fork the proxy serving the sockets bind_ports() returned; return its ProxyProcess. The
    proxy exits when the process `watched_pid` does.

    The sockets now belong to the proxy: this process closes its copies.
    """
    from . import shared
    try:
        watched_exit = os.pidfd_open(watched_pid)
        pid = os.fork()
        if pid == 0:
            _become_proxy(bound, str(container_ip), watched_exit)
        os.close(watched_exit)
    finally:
        close_ports(bound)
    return ProxyProcess(pid, shared.process_start_time(pid))


def _listen(mapping):
    import socket  # here and below, not above: `run` without -p must not pay for it (~3 ms)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers of a previous proxy; a
    # port that somebody is actively listening on still fails with EADDRINUSE.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((mapping.host_ip, mapping.host_port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise PublishError(f"cannot publish {mapping}: host port "
                               f"{mapping.host_ip}:{mapping.host_port} is already in use") from None
        raise PublishError(f"cannot publish {mapping}: {error.strerror}") from None
    return listener


def _become_proxy(listeners, container_ip, watched_exit):
    """The proxy process: never returns. Detached from the runtime's session and stdio,
    it execs the bare interpreter that serves (`serve_fds`)."""
    try:
        os.setsid()  # Ctrl-C on the terminal of `minibox run` is not meant for us
        daemon.stdio_to_dev_null()
        # Not the runtime's sync pipes, nor a test's stdout pipe: only what it serves.
        kept = [watched_exit, *(sock.fileno() for sock, _ in listeners)]
        daemon.close_fds_except(*kept)
        for fd in kept:
            os.set_inheritable(fd, True)  # pidfd_open(2) and Python's sockets: O_CLOEXEC
        daemon.exec_python("portproxy.serve_fds", [container_ip, str(watched_exit), *(
            f"{sock.fileno()}:{port}" for sock, port in listeners)])
    finally:
        os._exit(0)


def serve_fds(args):
    """The proxy's bare interpreter: `CONTAINER_IP WATCHED_PIDFD LISTENER_FD:PORT...`."""
    import socket
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's own would raise in _serve
        container_ip, watched_exit, *served = args
        listeners = [(socket.socket(fileno=int(fd)), int(port))
                     for fd, port in (text.split(":") for text in served)]
        _serve(listeners, container_ip, int(watched_exit))
    finally:
        os._exit(0)


def _serve(listeners, container_ip, watched_exit):
    import selectors
    import threading
    events = selectors.DefaultSelector()
    events.register(watched_exit, selectors.EVENT_READ)
    for listener, container_port in listeners:
        events.register(listener, selectors.EVENT_READ, container_port)
    while True:
        for key, _ in events.select():
            if key.fileobj == watched_exit:
                return  # the container's monitor exited: nothing left to forward to
            client, _ = key.fileobj.accept()
            threading.Thread(target=_relay, args=(client, (container_ip, key.data)),
                             daemon=True).start()


def _relay(client, upstream_address):
    """Copy one connection both ways until each side has closed its half."""
    import socket
    import threading
    with client:
        try:
            upstream = socket.create_connection(upstream_address, timeout=5)
        except OSError:
            return  # nothing listens in the container: the client sees a closed connection
        with upstream:
            upstream.settimeout(None)
            backwards = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            backwards.start()
            _pump(client, upstream)
            backwards.join()


def _pump(source, sink):
    import socket
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)  # pass the half-close on, as HTTP/1.0 clients expect
    except OSError:
        # A reset on one side: tear both sockets down so the other direction's recv()
        # returns too, instead of waiting for a peer that will never write again.
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def stop(proxy):
    """Kill the proxy (SIGKILL: it holds no state worth a clean exit) and reap it."""
    from . import shared
    # (PID, start time) names one process for all time; a PID alone may have been reused
    # by an unrelated process since the proxy exited.
    if not shared.process_alive(proxy.pid, proxy.started):
        return
    try:
        os.kill(proxy.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(proxy.pid, 0)
    except ChildProcessError:
        pass  # forked by another runtime process: whoever inherited it reaps it
