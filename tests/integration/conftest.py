"""Fixtures for the network tests (a private network namespace that plays "the host"), and
a host block device for the device-rule tests."""
import ctypes
import os
import shutil
import socket
import subprocess

import pytest

from minibox import bridge, network

CLONE_NEWNET = 0x40000000


@pytest.fixture
def host_netns(monkeypatch):
    """Move the test's thread (and every process it starts) into a brand-new netns.

    The real host never sees minibox0, a veth or a published port, and a concurrent
    minibox on the host can't disturb the test. When the test ends, its address pool is
    dropped and the thread returns to the original netns; the private one dies with the
    last process in it, taking the bridge along.
    """
    monkeypatch.delenv(bridge.SUBNET_ENV, raising=False)
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    assert libc.unshare(CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
    try:
        network.bring_up_loopback()
        yield
        # This netns is the test's alone: a tap or a dead run's lease here is its leak.
        from tests.helpers import dead_minivm_leases
        taps = [name for index, name in socket.if_nameindex() if name.startswith("mv")]
        assert (taps, dead_minivm_leases()) == ([], {}), "minivm left taps or leases"
    finally:
        shutil.rmtree(bridge.address_pool().directory, ignore_errors=True)
        assert libc.setns(original, CLONE_NEWNET) == 0
        os.close(original)


@pytest.fixture
def host_disk(tmp_path):
    """(major, minor) of a block device of the host's that root on the host can read: a
    loop device over a file starting with HOSTDISK. (The host's own root disk will not do:
    a host policy here refuses to open it even to root, with the same EPERM.)"""
    image = tmp_path / "disk.img"
    image.write_bytes(b"HOSTDISK".ljust(1 << 20, b"\0"))
    device = subprocess.run(["losetup", "--show", "--find", str(image)], capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        yield os.major(os.stat(device).st_rdev), os.minor(os.stat(device).st_rdev)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)
