"""Container networking. For now: the loopback device of the container's own network namespace.

A new network namespace (network_namespaces(7)) starts with one device, `lo`, and even that
is down. Bringing it up needs no netlink library: the SIOCSIFFLAGS ioctl on any socket
(netdevice(7)) sets the IFF_UP flag.
"""
import fcntl
import socket
import struct

from .explain import step

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


@step("Bring up the loopback device of the new network namespace",
      syscall='ioctl(socket, SIOCSIFFLAGS, {{"lo", IFF_UP}})', man="netdevice(7)")
def bring_up_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
