"""Port publishing (`-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]`): a userspace TCP proxy.

A container on the bridge has an address only the host can reach. To publish one of its
ports, the container's monitor acts as a small proxy (like Docker's `docker-proxy`): it
listens on HOSTIP:HOSTPORT in the host's network namespace and, for each connection it
accepts, opens a connection to CONTAINER_IP:CONTAINERPORT and copies bytes both ways.

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
busy port fails the run before anything exists. Then the container's monitor serves them
(`Published`) for the container's whole life, restarts included (a restarted container
keeps its address): not a proxy process of its own but the monitor's own poll(2) loop
(waiting.Loop), which waits for PID 1 anyway, in a bare interpreter (supervisor.py) that
imports nothing of the runtime. One process per container, so a monitor killed with SIGKILL
can't leave a proxy behind: the kernel closes the ports with it. The sockets outlive the
monitor's execve(2)s into its lean and runtime lives (made inheritable, their numbers on
the next command line: `to_args`); a connection relayed is closed at such an exec, which
comes only once PID 1 has ended: there is nobody left to relay to.

The serving side uses `_socket` and `_signal`, the C halves of the socket and signal modules:
their .py wrappers' enums would weigh on each container's monitor (bench/README.md,
"Container memory").
"""
import _signal
import _socket
import errno
import os
import select
import time

from .errors import MiniboxError

DEFAULT_HOST_IP = "127.0.0.1"
PUBLISH_HELP = (
    "Publish a container port on the host (bridge network only). "
    f"HOSTIP defaults to {DEFAULT_HOST_IP} (loopback only); use 0.0.0.0 for all "
    "interfaces. Served by a userspace TCP proxy in the container's monitor. Repeatable."
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
    """What the ledger records of the process serving a container's ports, its monitor: its
    PID and start time (`shared.process_start_time`)."""

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


class Published:
    """The ports a container publishes, as its monitor serves them: the listening sockets
    bind_ports() returned, and the container's address their connections go to."""

    def __init__(self, container_ip, bound):
        self.container_ip = str(container_ip)
        self.bound = bound  # [(listening socket, container port), ...]
        self.connections = set()

    def to_args(self):
        """For the command line of the monitor's next interpreter: `IP FD:PORT...`. The
        sockets are made to survive execve(2) (Python opens them O_CLOEXEC)."""
        for listener, _ in self.bound:
            os.set_inheritable(listener.fileno(), True)
        return [self.container_ip,
                *(f"{listener.fileno()}:{port}" for listener, port in self.bound)]

    @classmethod
    def from_args(cls, args):
        container_ip, *served = args
        return cls(container_ip, [(_socket.socket(fileno=int(fd)), int(port))
                                  for fd, port in (text.split(":") for text in served)])

    def serve(self, loop):
        """Accept and relay connections on `loop` (waiting.Loop) from now on."""
        for listener, container_port in self.bound:
            # A client that gives up between poll(2) and accept(2) must not block the loop.
            listener.setblocking(False)
            loop.watch(listener.fileno(), select.POLLIN,
                       lambda _events, listener=listener, port=container_port:
                       self._accept(loop, listener, port))

    def stop_serving(self, loop):
        """Close the connections relayed; the listening sockets stay open, for the next
        life of the monitor."""
        for listener, _ in self.bound:
            loop.forget(listener.fileno())
        for connection in list(self.connections):
            connection.close()

    def close(self):
        close_ports(self.bound)

    def _accept(self, loop, listener, container_port):
        try:
            # _accept: socket.py's accept() less the wrapping in a socket.socket (see above)
            client = _socket.socket(fileno=listener._accept()[0])
        except OSError:  # EAGAIN: the client left; EMFILE: it waits in the backlog
            return
        _Connection(loop, client, (self.container_ip, container_port), self.connections)


# How long the container may take to answer a connection; then the client's is closed, as
# when nothing listens there (a refused connection is closed at once).
CONNECT_TIMEOUT = 5


class _Connection:
    """One client's connection and ours to the container, relayed both ways until each side
    has closed its half; a reset on either side closes both."""

    def __init__(self, loop, client, upstream_address, connections):
        self.loop, self.client, self.connections = loop, client, connections
        self.upstream = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        connections.add(self)
        for sock in (client, self.upstream):
            sock.setblocking(False)
        # Non-blocking connect(2): EINPROGRESS now, POLLOUT once it succeeded or failed.
        if self.upstream.connect_ex(upstream_address) not in (0, errno.EINPROGRESS):
            self.close()
            return
        self.flows = [_Flow(client, self.upstream), _Flow(self.upstream, client)]
        loop.watch(self.upstream.fileno(), select.POLLOUT, self._connected,
                   deadline=time.monotonic() + CONNECT_TIMEOUT)

    def _connected(self, events):
        if not events or self.upstream.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR):
            self.close()  # timed out, or refused (nothing listens in the container)
            return
        self._watch()

    def _handle(self, sock, events):
        try:
            for flow in self.flows:
                if flow.source is sock and flow.wants_to_read() and events & (
                        select.POLLIN | select.POLLHUP | select.POLLERR):
                    flow.read()
                if flow.sink is sock and events & select.POLLOUT:
                    flow.write()
        except BlockingIOError:
            pass  # a stale event: the fd was reused since poll(2) reported it
        except OSError:
            self.close()
            return
        self._watch()

    def _watch(self):
        if all(flow.ended for flow in self.flows):
            self.close()
            return
        for sock in (self.client, self.upstream):
            events = 0
            for flow in self.flows:
                if flow.source is sock and flow.wants_to_read():
                    events |= select.POLLIN
                if flow.sink is sock and flow.pending:
                    events |= select.POLLOUT
            if events:
                self.loop.watch(sock.fileno(), events,
                                lambda events, sock=sock: self._handle(sock, events))
            else:  # poll(2) reports POLLHUP even unasked: watched, a hung-up peer would spin
                self.loop.forget(sock.fileno())

    def close(self):
        self.connections.discard(self)
        for sock in (self.client, self.upstream):
            self.loop.forget(sock.fileno())
            sock.close()


class _Flow:
    """One direction of a connection: what `source` sent that `sink` has not taken yet."""

    def __init__(self, source, sink):
        self.source, self.sink = source, sink
        self.pending = b""
        self.ended = False  # the source closed its half, and the sink was told so

    def wants_to_read(self):
        return not self.pending and not self.ended

    def read(self):
        self.pending = self.source.recv(65536)
        if not self.pending:
            self.ended = True
            self.sink.shutdown(_socket.SHUT_WR)  # the half-close, as HTTP/1.0 clients expect

    def write(self):
        self.pending = self.pending[self.sink.send(self.pending):]


def stop(proxy):
    """Kill the process serving the ports (SIGKILL), unless it is this one, and reap it: a
    monitor that outlived `rm -f`'s wait would keep them bound. A monitor's own teardown
    leaves the ports to container.release."""
    from . import shared
    # (PID, start time) names one process for all time; a PID alone may have been reused
    # by an unrelated process since the proxy exited.
    if proxy.pid == os.getpid() or not shared.process_alive(proxy.pid, proxy.started):
        return
    try:
        os.kill(proxy.pid, _signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(proxy.pid, 0)
    except ChildProcessError:
        pass  # forked by another runtime process: whoever inherited it reaps it
