"""The bridge network: minibox0, a veth pair per container, addresses from a pool.

    host netns                                        container netns
    minibox0 (bridge, 10.199.0.1/24) -- mb<id>  <== veth ==>  eth0 10.199.0.N/24
                                                              default via 10.199.0.1

A veth pair (veth(4)) is a virtual cable: what goes in one end comes out of the other. The
host end is a port of a Linux bridge (a virtual switch), so containers on the bridge reach
each other, and the bridge's own address is their gateway, so the host reaches them (and
they the host) by IP. Nothing is forwarded or NATed beyond the host: minibox never touches
`ip_forward` or the firewall. A VM's tap device joins the same bridge (minivm/nic.py).

All netlink work (rtnetlink(7)) goes through pyroute2's IPRoute, and two choices keep it
at a few netlink requests per container:

  * The peer is created *inside* the container's namespace, already named eth0: one
    RTM_NEWLINK whose peer carries IFLA_NET_NS_FD (what `ip link add mbX type veth peer
    name eth0 netns PID` does). No create-move-rename dance, no clash between many eth0s.
  * The inside end is configured over a netlink socket that lives in the container's
    namespace: the runtime setns(2)s there just long enough to create it, then returns (a
    socket stays in the namespace it was created in). pyroute2's own `NetNS` /
    `IPRoute(netns=...)` forks a helper process per namespace for the same job, which
    costs more than all the netlink requests together.

pyroute2's package import is slow (its __init__ loads every netlink family), so it is
imported inside the functions that talk netlink, never at module level. Addresses come from
`minibox.ipam` (one lease file per address, under flock(2)).
"""
import errno
import os
import time

from . import namespaces, rootless
from .errors import MiniboxError
from .explain import step

BRIDGE = "minibox0"
# ifalias(the IFLA_IFALIAS text) of the bridge minibox made: anything else named minibox0
# is someone else's interface and is left alone.
BRIDGE_ALIAS = "minibox bridge"
CONTAINER_IFNAME = "eth0"

DEFAULT_SUBNET = "10.199.0.0/24"
SUBNET_ENV = "MINIBOX_SUBNET"
SUBNET_HELP = (
    f"bridge: the bridge {BRIDGE} is created on first use with the subnet {DEFAULT_SUBNET} "
    f"(gateway .1; set {SUBNET_ENV} to choose another), outside the defaults of Docker "
    "(172.17-31.x, 192.168.x), Podman (10.88.x), libvirt (192.168.122.x), QEMU user "
    "networking (10.0.2.x), LXC (10.0.3.x), Kubernetes (10.96-111.x, 10.244.x, k3s "
    "10.42-43.x) and CGNAT/Tailscale (100.64/10)."
)

# The address pools live outside MINIBOX_ROOT: there is one bridge per network namespace,
# not one per state root, so every minibox using it must share one pool. The pool's name
# carries the netns inode, so `ip netns exec X minibox ...` gets a pool of its own.
STORE_DIR = "/run/minibox-network"

# How long disconnect() waits for the kernel to delete a dead netns's veth pair before it
# deletes the pair itself. The wait is usually a few grace periods (bench/README.md); only a
# netns that lives on (another container joined it) or a very busy machine takes this long.
NETNS_CLEANUP_SECONDS = 0.5


class NetworkError(MiniboxError):
    """A network request that can't be met (exit 125, one line)."""


def host_ifname(container_id):
    """The host end of the container's veth pair: `mb` + 12 id characters.

    Derived from the id alone, so the ledger can name it before it exists. IFNAMSIZ is 16
    bytes with the NUL, so 15 characters at most.
    """
    return f"mb{container_id[:12]}"


def subnet_for_new_bridge():
    """The subnet a bridge gets when it is created: $MINIBOX_SUBNET or DEFAULT_SUBNET."""
    import ipaddress
    text = os.environ.get(SUBNET_ENV, DEFAULT_SUBNET)
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as error:
        raise NetworkError(f"bad {SUBNET_ENV} {text!r}: {error}") from None
    if subnet.num_addresses < 4:
        raise NetworkError(f"bad {SUBNET_ENV} {text!r}: a bridge needs at least a /30")
    return subnet


def address_pool():
    """The address pool of minibox0 in this thread's network namespace."""
    from .ipam import AddressPool
    netns = os.stat("/proc/thread-self/ns/net").st_ino
    return AddressPool(STORE_DIR, f"{BRIDGE}.netns{netns}")



# -- connecting containers and VMs ----------------------------------------------------------

@step("Connect the container to the bridge: a veth pair, an address, a default route",
      syscall="RTM_NEWLINK veth peer eth0 IFLA_NET_NS_FD; in the netns: RTM_NEWADDR, "
              "RTM_NEWLINK IFF_UP, RTM_NEWROUTE default", man="veth(4), rtnetlink(7)")
def connect(container_id, netns_pid, requested_ip=None):
    """Attach the network namespace of `netns_pid` to minibox0; return the address.

    Everything made here is undone if a later step fails.
    """
    from pyroute2.iproute.linux import IPRoute

    pool = address_pool()
    host_end = host_ifname(container_id)
    netns_fd = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            # One lock around bridge creation and allocation: twenty parallel first starts
            # must neither race to create minibox0 nor see it half-configured.
            with pool.locked(subnet_if_new=subnet_for_new_bridge()) as table:
                bridge_index = _ensure_bridge(ipr, table)
                address = _allocate(table, container_id, requested_ip)
            try:
                _netlink(ipr.link, "add", ifname=host_end, kind="veth", master=bridge_index,
                         state="up", peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": netns_fd},
                         doing=f"create veth pair {host_end} <-> {CONTAINER_IFNAME}")
                _configure_inside(netns_fd, address, table)
            except BaseException:
                _delete_link(ipr, host_end)
                raise
    except BaseException:
        _release_lease(pool, container_id)
        raise
    finally:
        os.close(netns_fd)
    return address


def connect_interface(owner, ifname):
    """Attach an interface that already exists here, a VM's tap device (minivm/nic.py), to
    minibox0 and lease an address to `owner`, whatever is behind the interface.

    The interface is labelled with the owner (its ifalias) *before* the lease is taken: a
    lease whose labelled interface is gone is a dead owner's (see live_ports).
    Returns (address, subnet, gateway) for the other side to configure itself; the lease
    stays until release_address(owner).
    """
    from pyroute2.iproute.linux import IPRoute

    pool = address_pool()
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        with pool.locked(subnet_if_new=subnet_for_new_bridge()) as table:
            bridge_index = _ensure_bridge(ipr, table)
            _netlink(ipr.link, "set", index=index, master=bridge_index, state="up",
                     ifalias=owner, doing=f"attach {ifname} to {BRIDGE}")
            address = _allocate(table, owner, None)
            subnet, gateway = table.subnet, table.gateway
    return address, subnet, gateway


def release_address(owner):
    """Give back the address connect_interface() leased to `owner`; harmless twice."""
    _release_lease(address_pool(), owner)


def _allocate(table, container_id, requested_ip):
    from .ipam import AddressError
    try:
        return table.allocate(container_id, requested_ip)
    except (AddressError, ValueError) as error:
        raise NetworkError(f"{BRIDGE}: {error}") from None


def _ensure_bridge(ipr, table):
    """Return the index of minibox0, creating it with its gateway address on first use."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        (link,) = ipr.link("get", ifname=BRIDGE)
    except NetlinkError as error:
        if error.code != errno.ENODEV:
            raise NetworkError(f"looking up {BRIDGE}: {os.strerror(error.code)}") from None
    else:
        kind, alias = link.get(("linkinfo", "kind")), link.get("ifalias")
        if kind != "bridge" or alias != BRIDGE_ALIAS:
            raise NetworkError(f"an interface named {BRIDGE} already exists and minibox did "
                               f"not create it (kind {kind}, alias {alias!r}): remove or "
                               "rename it")
        return link["index"]
    # No bridge: none was made yet, or someone deleted it (`ip link del minibox0`) while
    # containers ran. Deleting a bridge only unplugs its ports; a lease whose interface
    # still exists is a running container's or VM's: keep it and plug the interface into
    # the new bridge, or the next container gets its address. Other leases are stale (a
    # reused netns inode too); with none left, the subnet may be chosen anew.
    ports = live_ports(ipr, table.leases)
    if ports:
        table.keep(ports)
    else:
        table.reset(subnet_for_new_bridge())
    # Without an explicit address a bridge takes the lowest MAC of its ports, so it would
    # change whenever a container comes or goes, and containers that cached the gateway's
    # old MAC would lose the host until their ARP entry expires. A fixed, locally
    # administered (bit 1) unicast (bit 0 clear) MAC stays put.
    mac = ":".join(f"{byte:02x}" for byte in b"\x02" + os.urandom(5))
    _netlink(ipr.link, "add", ifname=BRIDGE, kind="bridge", address=mac, state="up",
             doing=f"create bridge {BRIDGE}")
    try:
        (index,) = ipr.link_lookup(ifname=BRIDGE)
        # The alias can't ride along in RTM_NEWLINK: the kernel only sets it on a change.
        _netlink(ipr.link, "set", index=index, ifalias=BRIDGE_ALIAS, doing=f"label {BRIDGE}")
        _netlink(ipr.addr, "add", index=index, address=str(table.gateway),
                 prefixlen=table.subnet.prefixlen,
                 doing=f"add {table.gateway}/{table.subnet.prefixlen} to {BRIDGE}")
        for port in ports.values():
            _netlink(ipr.link, "set", index=port, master=index,
                     doing=f"plug interface {port} back into {BRIDGE}")
    except BaseException:
        _delete_link(ipr, BRIDGE)
        raise
    return index


def live_ports(ipr, leases):
    """{address: interface index} of the leases whose owner's interface exists: a
    container's host veth end (host_ifname), or an interface labelled with the owner's name
    (connect_interface). A VM's tap lives exactly as long as a descriptor on it is open
    (nic.py), so its lease is live exactly as long as its QEMU, or the minivm starting it."""
    by_name, by_alias = {}, {}
    for link in ipr.link("dump"):
        by_name[link.get("ifname")] = by_alias[link.get("ifalias")] = link["index"]
    by_alias.pop(None, None)
    found = {address: by_alias.get(owner) or by_name.get(host_ifname(owner))
             for address, owner in leases.items()}
    return {address: index for address, index in found.items() if index}


def release_dead_leases(owner_prefix):
    """Release the leases of owners named `owner_prefix`... whose interface is gone (for
    `minivm gc`: a SIGKILLed minivm cannot release its own). Returns those owners."""
    from pyroute2.iproute.linux import IPRoute

    pool = address_pool()
    if not pool.exists():
        return []
    with IPRoute() as ipr, pool.locked() as table:
        leases = table.leases
        live = live_ports(ipr, leases)
        dead = sorted({owner for address, owner in leases.items()
                       if owner.startswith(owner_prefix) and address not in live})
        for owner in dead:
            table.release(owner)
    return dead


def _configure_inside(netns_fd, address, table):
    """In the container's netns: the address on eth0, eth0 up, default route via gateway."""
    from pyroute2.iproute.linux import IPRoute

    with IPRoute(fileno=_socket_in_netns(netns_fd).detach()) as ipr:
        (index,) = ipr.link_lookup(ifname=CONTAINER_IFNAME)
        _netlink(ipr.addr, "add", index=index, address=str(address),
                 prefixlen=table.subnet.prefixlen,
                 doing=f"add {address} to {CONTAINER_IFNAME}")
        _netlink(ipr.link, "set", index=index, state="up", doing=f"bring up {CONTAINER_IFNAME}")
        _netlink(ipr.route, "add", dst="default", gateway=str(table.gateway),
                 doing=f"add default route via {table.gateway}")


def disconnect(container_id):
    """Make sure the container's veth pair is gone, then release its address; safe to
    call twice.

    Deleting either end of a veth pair deletes both, and so does the end of the
    container's netns: once its last process is gone, the kernel unregisters the devices
    in it (net/core/net_namespace.c: cleanup_net, from a work queue, after RCU grace
    periods), eth0 and with it our end. Teardown and `gc` kill the init before they get
    here (its ledger entry is newer than the network's), so this first waits for the
    kernel to do that: no netlink request, and no pyroute2 to import for it. A netns that
    outlives its init -- a `--network container:ID` container still uses it -- is not
    waited for longer than NETNS_CLEANUP_SECONDS: then the pair is deleted from here.
    """
    if not _gone_within(host_ifname(container_id), NETNS_CLEANUP_SECONDS):
        delete_veth(container_id)
    _release_lease(address_pool(), container_id)


def _gone_within(ifname, seconds):
    """Poll for `ifname` to vanish: the kernel announces it only to a netlink listener."""
    deadline = time.monotonic() + seconds
    while link_exists(ifname):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def delete_veth(container_id):
    """Delete the container's veth pair, if it still exists."""
    from pyroute2.iproute.linux import IPRoute

    with IPRoute() as ipr:
        _delete_link(ipr, host_ifname(container_id))


def _release_lease(pool, container_id):
    if pool.exists():
        with pool.locked() as table:
            table.release(container_id)


def _delete_link(ipr, ifname):
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("del", ifname=ifname)
    except NetlinkError as error:
        if error.code != errno.ENODEV:
            raise NetworkError(f"deleting {ifname}: {os.strerror(error.code)}") from None


def _netlink(request, *args, doing, **kwargs):
    """Send one rtnetlink request; turn a kernel error into a one-line NetworkError."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return request(*args, **kwargs)
    except NetlinkError as error:
        raise NetworkError(f"{doing}: {os.strerror(error.code)}") from None


def _socket_in_netns(netns_fd):
    """A NETLINK_ROUTE socket bound to the network namespace `netns_fd`, not to ours.

    A socket belongs to the netns it was created in, for life. So: setns(2) there, create
    it, setns(2) back. Only this thread moves (setns(CLONE_NEWNET) is per thread), and
    only for the one socket(2) call.
    """
    import socket  # here, not above: only a container on the bridge pays for it
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    namespaces.join_fd(os.dup(netns_fd), "network")  # join_fd closes what it is given
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    finally:
        namespaces.join_fd(own, "network")


# -- `minibox network ls | rm`, and gc ---------------------------------------------------

def bridge_status():
    """(subnet, gateway, {address: container id}) of minibox0, or None if there is none."""
    if not link_exists(BRIDGE):
        return None  # and any pool left in the store is stale
    from pyroute2.iproute.linux import IPRoute

    with IPRoute() as ipr:
        _our_bridge_index(ipr)  # a foreign minibox0 is not ours to describe
    pool = address_pool()
    if not pool.exists():
        return "unknown", "unknown", {}
    with pool.locked() as table:
        return str(table.subnet), str(table.gateway), table.leases


def link_exists(ifname):
    """Does `ifname` exist in this thread's netns? (SIOCGIFINDEX, netdevice(7))

    Not /sys/class/net: sysfs shows the interfaces of the netns that mounted it, which is
    not ours under `nsenter --net` or `ip netns exec`.
    """
    import _socket  # socket.py's C half: teardown polls this, and need not load its enums
    try:
        _socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def remove_bridge():
    """Delete minibox0 and its address pool; refuse while a container uses it.

    Returns False when there was no bridge to remove (a stale pool is dropped all the same).
    """
    pool = address_pool()
    if not pool.exists() and not link_exists(BRIDGE):
        return False
    from pyroute2.iproute.linux import IPRoute

    with pool.locked(subnet_if_new=DEFAULT_SUBNET) as table, IPRoute() as ipr:
        index = _our_bridge_index(ipr)
        if index is not None:
            if table.leases:
                owners = ", ".join(owner[:12] for owner in table.leases.values())
                raise NetworkError(f"{BRIDGE} is in use by container(s) {owners}")
            ports = [port.get("ifname") for port in ipr.link("dump", master=index)]
            if ports:
                raise NetworkError(f"{BRIDGE} still has ports attached: {', '.join(ports)}")
            _delete_link(ipr, BRIDGE)
        table.discard()
    return index is not None


def remove_bridge_if_unused():
    """For `minibox gc`: remove minibox0 unless a container still holds an address.
    Never without root: the bridge is root's, and its containers too."""
    if rootless.ENABLED:
        return False
    try:
        return remove_bridge()
    except NetworkError:
        return False


def remove_pools_of_gone_namespaces():
    """For `minibox gc`: the address pools (STORE_DIR/minibox0.netns<inode>) of network
    namespaces that no longer exist: a bridge made inside a namespace of its own (a test, a
    bench, `unshare -n`) goes with that namespace, its pool stays on disk. A namespace lives
    while a process is in it or an nsfs bind mount holds it (ip-netns(8)); the names of
    those two kinds are what is kept. Returns the pools removed."""
    from .ipam import AddressPool
    prefix = f"{BRIDGE}.netns"
    try:
        pools = [name for name in os.listdir(STORE_DIR) if name.startswith(prefix)]
    except (FileNotFoundError, PermissionError):  # none yet; root's, seen from a user namespace
        return []
    alive = _live_network_namespaces()
    removed = []
    for name in pools:
        inode = name[len(prefix):]
        if not inode.isdigit() or int(inode) in alive:
            continue
        with AddressPool(STORE_DIR, name).locked() as table:
            table.discard()
        removed.append(name)
    return removed


def _live_network_namespaces():
    """The inode numbers of every network namespace a process is in or a mount pins: a
    namespace is named by the inode of its /proc/<pid>/ns/net link, and an nsfs bind mount
    of that file keeps it alive without a process (namespaces(7), ip-netns(8))."""
    alive = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                alive.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
            except OSError:
                pass  # gone meanwhile, or a kernel thread's
    from .cgroups.mounts import mount_table  # the one mountinfo reader
    for mount in mount_table():
        if mount.fstype == "nsfs":
            try:
                alive.add(os.stat(mount.mountpoint).st_ino)
            except OSError:
                pass
    return alive


def _our_bridge_index(ipr):
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        (link,) = ipr.link("get", ifname=BRIDGE)
    except NetlinkError:
        return None  # already gone
    if link.get("ifalias") != BRIDGE_ALIAS:
        raise NetworkError(f"{BRIDGE} was not created by minibox "
                           f"(alias {link.get('ifalias')!r}): not removing it")
    return link["index"]


