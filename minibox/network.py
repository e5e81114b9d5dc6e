"""Container networking: a bridge, one veth pair per container, and four modes.

A new network namespace (`network_namespaces(7)`, `unshare(2)` with CLONE_NEWNET) holds
only a loopback device, and even that is down. What a container can reach depends on
what the runtime puts into that namespace:

    --network none           loopback only (brought up by `bring_up_loopback()`)
    --network host           no new namespace: the host's interfaces, ports and routes
    --network container:ID   `setns(2)` into the namespace of another container
    --network bridge         (default) a veth pair from the namespace to the bridge:

        host netns                                   container netns
        minibox0 (bridge, 10.199.0.1/24) --- mb<id>  <== veth ==>  eth0 10.199.0.N/24
                                                                   default via 10.199.0.1

A veth pair (`veth(4)`) is a virtual cable: what goes in one end comes out of the other.
The host end is enslaved to a Linux bridge (a virtual switch), so containers on the
bridge reach each other, and the bridge's own address is the containers' gateway, so the
host reaches them (and they the host) by IP. Nothing is forwarded or NATed beyond the
host: minibox never touches `ip_forward` or the firewall.

All netlink work (`rtnetlink(7)`) goes through pyroute2's IPRoute. Two things keep it fast
(a few milliseconds per container):

  * The peer is created *directly inside* the container's namespace, already named eth0:
    RTM_NEWLINK with IFLA_NET_NS_FD in the peer's attributes (what `ip link add mbX type
    veth peer name eth0 netns PID` does). No create-move-rename dance, and no name clash
    between many `eth0`s in the host namespace.
  * The inside end is configured over a netlink socket opened by a short-lived thread that
    `setns(2)`'d into the container's namespace. A socket stays in the namespace it was
    created in, and setns(CLONE_NEWNET) only moves the calling thread. pyroute2's own
    `NetNS`/`IPRoute(netns=...)` forks a helper process per namespace to do the same,
    which costs more than all the netlink work together.

pyroute2's top-level import takes ~150 ms (its `__init__` imports every netlink family),
so it is imported inside the functions that need it, never at module level: a container
with `--network none` or `host` never loads it.

Port publishing lives in `minibox.portproxy`, address leases in `minibox.ipam`.
"""
import ctypes
import errno
import fcntl
import ipaddress
import os
import random
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from minibox.ipam import AddressError, AddressPool

BRIDGE = "minibox0"

DEFAULT_SUBNET = "10.199.0.0/24"
SUBNET_ENV = "MINIBOX_SUBNET"
SUBNET_HELP = (
    f"The bridge {BRIDGE} gets the subnet {DEFAULT_SUBNET} (gateway .1 on the bridge, "
    f"253 containers) when it is first created; set {SUBNET_ENV} to choose another. "
    "It lies outside the defaults of Docker (172.17-31.x, 192.168.x), Podman (10.88.x), "
    "libvirt (192.168.122.x), QEMU user networking (10.0.2.x), LXC (10.0.3.x), "
    "Kubernetes (10.96-111.x, 10.244.x, k3s 10.42-43.x) and CGNAT/Tailscale (100.64/10)."
)

CONTAINER_IFNAME = "eth0"
CLONE_NEWNET = 0x40000000
MODES = ("bridge", "none", "host", "container:ID")


class NetworkError(Exception):
    """A network request that can't be met; the message is one line for the user."""


@dataclass(frozen=True)
class NetworkMode:
    """What `--network` asked for; `container` is the ID or name for `container:ID`."""

    kind: str
    container: str | None = None

    @classmethod
    def parse(cls, text):
        if text in ("bridge", "none", "host"):
            return cls(text)
        kind, _, container = text.partition(":")
        if kind == "container" and container:
            return cls("container", container)
        raise NetworkError(f"bad --network {text!r}: expected one of {', '.join(MODES)}")

    @property
    def new_netns(self):
        """Does the container get a network namespace of its own (CLONE_NEWNET)?"""
        return self.kind in ("bridge", "none")


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to the bridge, as created by `connect()`."""

    address: ipaddress.IPv4Address
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    host_ifname: str


def host_ifname(container_id):
    """The host end of the container's veth pair: `mb` + 12 id characters.

    Derived from the id alone, so the ledger can name it before it exists and `gc` can
    find it after a crash. IFNAMSIZ is 16 bytes with the NUL, so 15 characters at most.
    """
    return f"mb{container_id[:12]}"


def subnet_for_new_bridge():
    """The subnet a bridge gets on first use: $MINIBOX_SUBNET or DEFAULT_SUBNET."""
    text = os.environ.get(SUBNET_ENV, DEFAULT_SUBNET)
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as error:
        raise NetworkError(f"bad {SUBNET_ENV} {text!r}: {error}") from None
    if subnet.num_addresses < 4:
        raise NetworkError(f"bad {SUBNET_ENV} {text!r}: a bridge needs at least a /30")
    return subnet


def _pool(state_root):
    return AddressPool(Path(state_root) / "networks", BRIDGE)


def _owner_tag(state_root):
    """The bridge's ifalias: marks minibox0 as ours, and as belonging to this state root.

    Two state roots (two MINIBOX_ROOTs) sharing one bridge would each have their own lease
    table and hand out the same addresses, so a bridge of another root counts as foreign.
    """
    return f"minibox {Path(state_root).resolve()}"


def connect(container_id, netns_pid, state_root, requested_ip=None):
    """Attach the network namespace of `netns_pid` to the bridge; return the Endpoint.

    Runs in the runtime (host namespaces) after the container's init has unshared its
    netns. Everything created here is undone if a later step fails.
    """
    from pyroute2.iproute.linux import IPRoute

    pool = _pool(state_root)
    host_end = host_ifname(container_id)
    netns_fd = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            # One lock for bridge creation and allocation: twenty parallel first starts
            # must neither race to create minibox0 nor see it half-configured.
            with pool.locked(subnet_if_new=subnet_for_new_bridge()) as table:
                bridge_index = _ensure_bridge(ipr, table, _owner_tag(state_root))
                address = _allocate(table, container_id, requested_ip)
            endpoint = Endpoint(address, table.subnet, table.gateway, host_end)
            try:
                _netlink(ipr.link, "add", ifname=host_end, kind="veth", master=bridge_index,
                         state="up", peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": netns_fd},
                         doing=f"create veth pair {host_end} <-> {CONTAINER_IFNAME}")
                _in_netns(netns_fd, lambda: _configure_inside(endpoint))
            except BaseException:
                _delete_link(ipr, host_end)
                raise
    except BaseException:
        with pool.locked(subnet_if_new=subnet_for_new_bridge()) as table:
            table.release(container_id)
        raise
    finally:
        os.close(netns_fd)
    return endpoint


def _allocate(table, container_id, requested_ip):
    try:
        return table.allocate(container_id, requested_ip)
    except (AddressError, ValueError) as error:
        raise NetworkError(f"{BRIDGE}: {error}") from None


def _ensure_bridge(ipr, table, owner_tag):
    """Return the index of minibox0, creating it with its gateway address on first use."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        (link,) = ipr.link("get", ifname=BRIDGE)
    except NetlinkError as error:
        if error.code != errno.ENODEV:
            raise NetworkError(f"looking up {BRIDGE}: {error.args[1]}") from None
    else:
        kind, alias = link.get(("linkinfo", "kind")), link.get("ifalias")
        if kind != "bridge" or alias != owner_tag:
            raise NetworkError(
                f"an interface named {BRIDGE} already exists and is not this minibox's bridge "
                f"(kind {kind}, alias {alias!r}); remove it or use another MINIBOX_ROOT")
        return link["index"]
    # Without an explicit address a bridge takes the lowest MAC of its ports, so it would
    # change whenever a container comes or goes, and containers that cached the gateway's
    # old MAC would lose the host until their ARP entry expires. A fixed, locally
    # administered (bit 1) unicast (bit 0 clear) MAC stays put.
    mac = ":".join(f"{b:02x}" for b in [0x02, *random.randbytes(5)])
    _netlink(ipr.link, "add", ifname=BRIDGE, kind="bridge", address=mac, state="up",
             doing=f"create bridge {BRIDGE}")
    try:
        (index,) = ipr.link_lookup(ifname=BRIDGE)
        _netlink(ipr.link, "set", index=index, ifalias=owner_tag, doing=f"label {BRIDGE}")
        _netlink(ipr.addr, "add", index=index, address=str(table.gateway),
                 prefixlen=table.subnet.prefixlen,
                 doing=f"add {table.gateway}/{table.subnet.prefixlen} to {BRIDGE}")
    except BaseException:
        _delete_link(ipr, BRIDGE)
        raise
    return index


def _configure_inside(endpoint):
    """Inside the container's netns: address on eth0, eth0 up, default route via gateway."""
    from pyroute2.iproute.linux import IPRoute

    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=CONTAINER_IFNAME)
        _netlink(ipr.addr, "add", index=index, address=str(endpoint.address),
                 prefixlen=endpoint.network.prefixlen,
                 doing=f"add {endpoint.address} to {CONTAINER_IFNAME}")
        _netlink(ipr.link, "set", index=index, state="up", doing=f"bring up {CONTAINER_IFNAME}")
        _netlink(ipr.route, "add", dst="default", gateway=str(endpoint.gateway),
                 doing=f"add default route via {endpoint.gateway}")


def disconnect(container_id, state_root):
    """Delete the container's veth pair and release its address; safe to call twice.

    Deleting either end of a veth pair deletes both. When the container's netns dies
    first, the kernel removes the pair on its own, but it does so asynchronously (in the
    netns cleanup work queue), so the delete here is still needed to be sure.
    """
    from pyroute2.iproute.linux import IPRoute

    with IPRoute() as ipr:
        _delete_link(ipr, host_ifname(container_id))
    pool = _pool(state_root)
    if pool.exists():
        with pool.locked() as table:
            table.release(container_id)


def _delete_link(ipr, ifname):
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("del", ifname=ifname)
    except NetlinkError as error:
        if error.code != errno.ENODEV:
            raise NetworkError(f"deleting {ifname}: {error.args[1]}") from None


@dataclass(frozen=True)
class BridgeStatus:
    """One row of `minibox network ls`."""

    name: str
    subnet: str
    gateway: str
    present: bool
    leases: dict  # address -> container id


def bridge_status(state_root):
    """What the lease table and the kernel say about minibox0 (None: never created)."""
    pool = _pool(state_root)
    if not pool.exists():
        return None
    with pool.locked() as table:
        leases = dict(table.leases)
    return BridgeStatus(BRIDGE, str(table.subnet), str(table.gateway),
                        _link_exists(BRIDGE), leases)


def _link_exists(ifname):
    """Does `ifname` exist in this thread's netns? (SIOCGIFINDEX, `netdevice(7)`)

    Not /sys/class/net: sysfs shows the interfaces of the netns that mounted it, which
    is not ours when minibox runs under `nsenter --net` or `ip netns exec`.
    """
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def remove_bridge(state_root):
    """Delete minibox0 and its lease table; refuse while a container holds an address.

    Returns False when there was nothing to remove. `minibox gc` calls this after it has
    released the leases of containers that no longer exist.
    """
    pool = _pool(state_root)
    if not pool.exists():
        return False
    from pyroute2.iproute.linux import IPRoute

    with pool.locked() as table:
        if table.leases:
            owners = ", ".join(owner[:12] for owner in table.leases.values())
            raise NetworkError(f"{BRIDGE} is in use by container(s) {owners}")
        with IPRoute() as ipr:
            ports = ipr.link("dump", master=_index_of_ours(ipr, state_root))
            if ports:
                names = ", ".join(port.get("ifname") for port in ports)
                raise NetworkError(f"{BRIDGE} still has ports attached: {names}")
            _delete_link(ipr, BRIDGE)
        table.discard()
    return True


def _index_of_ours(ipr, state_root):
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        (link,) = ipr.link("get", ifname=BRIDGE)
    except NetlinkError:
        return 0  # already gone: no ports to worry about
    if link.get("ifalias") != _owner_tag(state_root):
        raise NetworkError(f"{BRIDGE} belongs to someone else (alias {link.get('ifalias')!r})")
    return link["index"]


def _netlink(request, *args, doing, **kwargs):
    """Send one rtnetlink request; turn a kernel error into a one-line NetworkError."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return request(*args, **kwargs)
    except NetlinkError as error:
        raise NetworkError(f"{doing}: {os.strerror(error.code)}") from None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd, nstype):
    """`setns(2)`: Python 3.11 has no os.setns."""
    if _libc.setns(fd, nstype) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _in_netns(netns_fd, work):
    """Run `work()` on a new thread that has joined the network namespace `netns_fd`.

    setns(CLONE_NEWNET) moves only the calling thread, so the runtime's main thread never
    leaves the host namespace, even if `work` fails; the thread and its view die together.
    """
    outcome = {}

    def thread_main():
        try:
            _setns(netns_fd, CLONE_NEWNET)
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    thread = threading.Thread(target=thread_main, name="minibox-netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def etc_hosts(hostname, address=None):
    """/etc/hosts for a container: localhost, and its hostname on its own address.

    Without an address (`--network none`) the hostname maps to 127.0.1.1, as Debian
    does, so `hostname -i` and programs that resolve their own name still work.
    """
    own = f"{address or '127.0.1.1'}\t{hostname}\n"
    return ("127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            + own)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_up_loopback():
    """Bring `lo` up in the current network namespace, without netlink.

    A fresh netns has `lo` down, so even 127.0.0.1 is unreachable. This is the old
    `ifconfig lo up`: the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (`netdevice(7)`) on any socket,
    with a `struct ifreq` = 16-byte interface name + a short of flags.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
