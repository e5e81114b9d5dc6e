"""Container networking: four modes, set up on the host's side of each container.

A new network namespace (network_namespaces(7), CLONE_NEWNET) holds one device, `lo`, and
even that is down. What a container can reach depends on what the runtime puts there:

    --network none           loopback only (`bring_up_loopback`)
    --network host           no new namespace: the host's interfaces, ports and routes
    --network container:ID   setns(2) into the network namespace of another container
    --network bridge         (the default of `run`) a veth pair to the bridge minibox0
                             (bridge.py: the bridge, veth pairs and addresses, over netlink)

Every `minibox run` imports this module (parse_mode, /etc/hosts), so it loads only what every
mode needs: pyroute2, slow to import, only in bridge.py, inside the functions that talk
netlink, and for a container on the bridge in a helper process that imports it while the
runtime sets up the rest (nethelper.py); containers with `--network none` or `host` never
load it.

When, in a container's life (container.py): the runtime records the network in the
ledger and starts that helper before the first init exists (`prepare`), binds the -p ports,
connects each new init's netns between its "ready" and "go" (`set_up`)
and hands the ports to the monitor, which serves them, once the container is created
(`publish`). A restart's fresh init, in a fresh netns, gets a new veth pair but keeps the
container's address and ports. Teardown, `minibox stop` and `gc` release the ledger's
`network` (veth and lease) and `proxy` (the monitor, if it outlived `rm -f`) entries.
OCI `create` gets none of this: a new netns from config.json holds lo only, as with runc,
which makes no bridges either. Published ports: portproxy.py.
"""
import fcntl
import os
import struct

from . import namespaces, nethelper, portproxy, rootless, shared, state
from .bridge import SUBNET_HELP, NetworkError, disconnect
from .explain import step
from .spec import NetworkMode

# Written into the container's directory, bind-mounted at /etc/<name> (docker.docker_mounts).
ETC_FILES = ("hosts", "hostname")
MODES = ("bridge", "none", "host", "container:ID")
NETWORK_HELP = ("bridge (default; without root: none), none (loopback only), host (the "
                "host's network) or "
                "container:ID (share that container's network). " + SUBNET_HELP)


def parse_mode(text=None):
    """--network's text as a spec.NetworkMode; without it the default: bridge, or none
    without root (a bridge and veth pairs need the host's root: check_rootless)."""
    if text is None:
        text = "none" if rootless.ENABLED else "bridge"
    if text in ("bridge", "none", "host"):
        return NetworkMode(text)
    kind, _, container = text.partition(":")
    if kind == "container" and container:
        return NetworkMode("container", container)
    raise NetworkError(f"bad --network {text!r}: expected one of {', '.join(MODES)}")


def check_options(mode, requested_ip, publish):
    """--ip and -p only make sense on the bridge: refuse them elsewhere, before anything runs."""
    if rootless.ENABLED:
        check_rootless(mode, requested_ip, publish)
    if requested_ip is not None:
        if mode.kind != "bridge":
            raise NetworkError(f"--ip needs --network bridge, not {mode}")
        import ipaddress
        try:
            ipaddress.IPv4Address(requested_ip)
        except ValueError:
            raise NetworkError(f"bad --ip {requested_ip!r}: not an IPv4 address") from None
    if publish and mode.kind != "bridge":
        raise NetworkError(f"-p needs --network bridge, not {mode}")


def check_rootless(mode, requested_ip, publish):
    """Without root (rootless.py) only `none` and `host` work. A bridge, a veth pair and the
    port proxy's way in are the host's network, which only the host's root may change;
    rootless podman gets around it with a user-mode network stack (slirp4netns or pasta),
    which this host doesn't have. container:ID: a rootless container's network namespace
    belongs to that container's user namespace, where another runtime holds no capability."""
    if mode.kind == "bridge" or publish or requested_ip:
        what = "-p" if publish else "--ip" if requested_ip else "--network bridge"
        raise NetworkError(f"{what} needs root: a bridge and veth pairs change the host's "
                           "network (rootless networking needs slirp4netns or pasta, which "
                           "minibox does not use); use --network none or host")
    if mode.kind == "container":
        raise NetworkError(f"--network {mode} needs root: a rootless container's network "
                           "namespace belongs to its own user namespace, where this run "
                           "holds no capability")


# -- the runtime's side: before the fork, and between the init's "ready" and "go" ----------

def open_shared_netns(mode):
    """For container:ID: an fd of that container's netns and its address, else (None, None).

    Opened by the runtime before each fork of an init, while it can still check that the
    PID is the init it recorded (not a reused PID); the init inherits the fd and setns(2)s
    into it. So a restart joins the other container's netns as it is then.
    """
    if mode is None or mode.kind != "container":
        return None, None
    current = state.find(mode.container).load() or {}
    pid = current.get("pid")
    if state.live_status(current) not in ("created", "running"):
        raise NetworkError(f"container {mode.container} is not running")
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if not shared.process_alive(pid, current.get("pid_start")):  # it died as we opened it
        os.close(netns)
        raise NetworkError(f"container {mode.container} is not running")
    return netns, (current.get("network") or {}).get("address")


@step("Join the network namespace of another container",
      syscall="setns(fd, CLONE_NEWNET)", man="setns(2), network_namespaces(7)")
def join_netns(netns_fd):
    namespaces.join_fd(netns_fd, "network")


def prepare(spec, directory):
    """Before the first init is forked, for a container on the bridge: record its network
    in the ledger -- older than the init's `process` entry, so teardown kills the init
    first and the kernel takes the veth pair away with its netns (bridge.disconnect) --
    and start the helper that imports pyroute2 meanwhile (nethelper.py), unless __main__.py
    did already. Any other network: stop a helper that __main__.py's guess started."""
    if spec.network is not None and spec.network.kind == "bridge":
        directory.record("network", container=directory.id)
        nethelper.start()
    else:
        nethelper.stop()


def set_up(spec, directory, pid, shared_address=None):
    """Host side, while the init waits in its new namespaces: connect it to the bridge and
    write its /etc/hosts and /etc/hostname. Nothing at all for an OCI bundle (spec.network
    None): its new netns keeps lo only, as with runc.

    Again for each restart (container.spawn), whose fresh init has a fresh netns: the
    container keeps its address -- the lease lives as long as the container, like the
    proxy of its published ports (`publish`) -- and only the veth pair is made anew, by
    the helper (nethelper.connect). The ledger's `network` entry (`prepare`) has teardown
    and `gc` undo it.
    Returns what state.json keeps of it ({mode, address, ports}), for the caller to write
    with the container's status: one update of state.json per start, not two.
    """
    mode = spec.network
    if mode is None:
        return None
    address = shared_address
    if mode.kind == "bridge":
        # Teardown gives the lease back with ipam.py, whose ipaddress and pathlib imports
        # would otherwise load after the container's exit: loaded now, while the helper is
        # still importing pyroute2 and the runtime would only wait for it.
        from . import ipam  # noqa: F401
        previous = (directory.load() or {}).get("network")
        address = nethelper.connect(directory.id, pid,
                                    previous["address"] if previous else spec.ip,
                                    replace=previous is not None)
    if mode.kind == "host":
        hosts = _host_etc_hosts()
    else:
        hosts = etc_hosts(spec.hostname, address)
    write_etc_files(directory, spec.hostname, hosts)
    return {"mode": str(mode), "address": address,
            "ports": [str(mapping) for mapping in spec.publish]}


def publish(directory, bound_ports):
    """The -p ports `portproxy.bind_ports` bound before the container was made, as this
    process -- the container's monitor, which outlives every restart -- will serve them
    (portproxy.Published; None without -p). Once per container, not per init: they lead
    to the container's address, which restarts keep. The ledger names the monitor as
    their proxy: `rm -f` kills a monitor that outlived its wait (portproxy.stop)."""
    if not bound_ports:
        return None
    address = directory.load()["network"]["address"]
    directory.record("proxy", pid=os.getpid(), start_time=shared.process_start_time(os.getpid()))
    return portproxy.Published(address, bound_ports)


# -- /etc/hosts and /etc/hostname ---------------------------------------------------------

def etc_hosts(hostname, address=None):
    """/etc/hosts of a container: localhost, and its hostname on its own address.

    Without an address (`--network none`) the hostname maps to 127.0.1.1, as Debian does,
    so programs that resolve their own name still work.
    """
    return ("127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{address or '127.0.1.1'}\t{hostname}\n")


def _host_etc_hosts():
    """--network host shares the host's addresses, so it gets the host's /etc/hosts (as Docker)."""
    try:
        with open("/etc/hosts") as hosts:
            return hosts.read()
    except FileNotFoundError:
        return etc_hosts("localhost")


@step("Write the container's /etc/hosts and /etc/hostname beside its state; the init "
      "bind-mounts them over the image's",
      syscall='write("<container dir>/hosts", ...); write("<container dir>/hostname", ...)',
      man="hosts(5), hostname(5)")
def write_etc_files(directory, hostname, hosts):
    for name, text in zip(ETC_FILES, (hosts, f"{hostname}\n")):
        with open(directory.file(name), "w") as out:
            out.write(text)


# -- teardown: the ledger kinds this module adds -----------------------------------------

def _release_network(entry):
    nethelper.stop()  # nothing may still be connecting what we undo
    disconnect(entry["container"])


def _release_proxy(entry):
    portproxy.stop(portproxy.ProxyProcess(entry["pid"], entry["start_time"]))


state.RELEASE.update(network=_release_network, proxy=_release_proxy)


# -- loopback -----------------------------------------------------------------------------

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


@step("Bring up the loopback device of the new network namespace",
      syscall='ioctl(socket, SIOCSIFFLAGS, {{"lo", IFF_UP}})', man="netdevice(7)")
def bring_up_loopback():
    """A new netns starts with `lo` down; no netlink needed to bring it up: the
    SIOCGIFFLAGS/SIOCSIFFLAGS ioctls on any socket (netdevice(7)) set IFF_UP. (`_socket`:
    the C half of the socket module; importing socket.py, which wraps every constant in an
    enum, would cost every container's init ~3 ms.)"""
    import _socket
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    finally:
        sock.close()
