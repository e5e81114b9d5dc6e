"""--network bridge: a virtio NIC whose other end is a tap device in minibox's bridge.

A container gets a veth pair (minibox/bridge.py); a VM gets a *tap* device instead
(Documentation/networking/tuntap.rst). A tap is a network interface on the host whose
"wire" is a file descriptor: every Ethernet frame the host sends to the interface can be
read from the fd, and every frame written to the fd arrives on the interface. QEMU holds
the fd and connects it to the guest's virtio-net device, so the guest's eth0 and the host's
tap are the two ends of one cable:

    host netns                                            guest (its own kernel)
    minibox0 (bridge, 10.199.0.1/24) -- mv<id> (tap) ==fd== QEMU virtio-net == eth0 10.199.0.N

The tap is a port of the same bridge as the containers' veths and its address comes from
the same IPAM pool (minibox.bridge.connect_interface), so VMs and containers reach each
other by IP. The guest's /init sets the address and the default route with busybox `ip`.

minivm makes the tap itself: open /dev/net/tun and ioctl(TUNSETIFF) with IFF_TAP (frames,
not IP packets) and IFF_NO_PI (no extra packet-info header). Without TUNSETPERSIST the
device lives exactly as long as a descriptor on it is open; QEMU inherits the descriptor
(`-netdev tap,fd=N`), so when QEMU ends, however it ends, the kernel removes the tap: none
is ever left behind. Attaching it to the bridge is netlink (pyroute2), as for containers,
and as for them done by minibox's network helper (minibox/nethelper.py): a process forked
as soon as runcall.py has read `--network bridge`, which imports pyroute2 on the other core
while minivm finds the kernel and writes the initramfs. minivm itself never loads pyroute2,
neither while it starts nor while it waits for QEMU.
"""
import fcntl
import os
import struct

from minivm import MinivmError
from minivm.qemu import Option, option

# virtio_mmio: the transport; virtio_net: the NIC (needs failover/net_failover, found by
# modules.py from its modinfo).
GUEST_MODULES = ["virtio_mmio", "virtio_net"]
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), include/uapi/linux/if_tun.h
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
GUEST_IFNAME = "eth0"


class NIC:
    """One VM's network: the tap's fd (QEMU inherits it), the lease, the guest's settings."""

    def __init__(self, tap_fd: int, tap_name: str, owner: str, address, subnet, gateway):
        self.tap_fd, self.tap_name, self.owner = tap_fd, tap_name, owner
        self.address, self.subnet, self.gateway = address, subnet, gateway

    def options(self) -> list[Option]:
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))  # QEMU's OUI
        return [option("-netdev", f"tap,id=net0,fd={self.tap_fd}",
                       "-device", f"virtio-net-device,netdev=net0,mac={mac}",
                       why=f"a virtio NIC on the tap {self.tap_name}, a port of minibox0; QEMU "
                       "inherits the tap's fd, and the tap vanishes when QEMU exits",
                       doc="QEMU docs: -netdev tap; Documentation/networking/tuntap.rst")]

    def guest_setup(self) -> list[list[str]]:
        """The commands /init runs to configure eth0 (busybox ip)."""
        cidr = f"{self.address}/{self.subnet.prefixlen}"
        return [["ip", "link", "set", "lo", "up"],
                ["ip", "addr", "add", cidr, "dev", GUEST_IFNAME],
                ["ip", "link", "set", GUEST_IFNAME, "up"],
                ["ip", "route", "add", "default", "via", str(self.gateway)]]


def open_tap(name: str) -> int:
    """A new, non-persistent tap device called `name`; returns its fd (inheritable)."""
    try:
        tun = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as error:
        raise MinivmError(f"--network bridge: cannot open /dev/net/tun: {error.strerror} "
                          "(needs root and the tun module)") from None
    # struct ifreq (netdevice(7)): char ifr_name[IFNAMSIZ = 16]; short ifr_flags; padding.
    request = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI)
    try:
        fcntl.ioctl(tun, TUNSETIFF, request)
    except OSError as error:
        os.close(tun)
        raise MinivmError(f"--network bridge: TUNSETIFF {name}: {error.strerror}") from None
    return tun


def connect(owner: str, tap_name: str) -> NIC:
    """A tap on minibox0 and an address for the guest; os.close(tap_fd) and release()
    undo it."""
    import ipaddress

    from minibox import nethelper
    from minibox.errors import MiniboxError

    tap = open_tap(tap_name)
    try:
        address, subnet, gateway = nethelper.attach(owner, tap_name)
    except MiniboxError as error:
        os.close(tap)
        raise MinivmError(f"--network bridge: {error}") from None
    except BaseException:
        os.close(tap)
        raise
    return NIC(tap, tap_name, owner, ipaddress.ip_address(address),
               ipaddress.ip_network(subnet), ipaddress.ip_address(gateway))


def release(owner: str):
    """Give the guest's address back to the pool."""
    from minibox import bridge
    bridge.release_address(owner)
