"""IP address management: which container holds which address on the bridge.

Every container on the bridge needs an address nobody else holds. Twenty `minibox run`
processes may start at the same moment, so the referee is the kernel: an exclusive
`flock(2)`, held while a process picks the lowest free address and claims it (without it,
the classic teaching-runtime bug: "every container got the same IP").

A pool is a directory, like CNI's host-local IPAM (/var/lib/cni/networks/<name>/):

    <store>/<pool>/subnet         "10.199.0.0/24"
    <store>/<pool>/10.199.0.2     "<id of the container holding it>"
    <store>/<pool>/10.199.0.3     ...

One file per lease makes claiming and releasing one `open(O_CREAT|O_EXCL)` or one
`unlink(2)`: no table to rewrite. (Rewriting a JSON table by write-then-rename costs a flush per start on ext4, whose
auto_da_alloc flushes a file renamed over another.)
O_EXCL also makes a double lease an error rather than a silent overwrite.

The lock is on the store directory, which is never deleted: a lock on a pool directory (or
a lock file) that gets removed lets a process still waiting on the old inode and a newcomer
locking the new one both believe they hold it.
"""
import fcntl
import ipaddress
import os
from contextlib import contextmanager
from pathlib import Path

from . import shared

SUBNET_FILE = "subnet"


class AddressError(Exception):
    """An address can't be handed out: pool exhausted, taken, or outside the subnet."""


class AddressPool:
    """The pool `name` (one bridge network's leases) inside `store_dir`."""

    def __init__(self, store_dir, name):
        self.store_dir = Path(store_dir)
        self.directory = self.store_dir / name

    def exists(self):
        return (self.directory / SUBNET_FILE).exists()

    @contextmanager
    def locked(self, subnet_if_new=None):
        """Hold the store's `flock(2)` and yield the pool's `LeaseTable`.

        A pool that doesn't exist yet is created with `subnet_if_new`; without one, a
        missing pool raises FileNotFoundError.
        """
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.store_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield LeaseTable(self.directory, subnet_if_new)
        finally:
            os.close(lock_fd)  # closing the last fd drops the flock


class LeaseTable:
    """The leases of one pool; only valid while its `AddressPool.locked()` is held."""

    def __init__(self, directory, subnet_if_new):
        self.directory = directory
        try:
            self.subnet = ipaddress.IPv4Network((directory / SUBNET_FILE).read_text())
        except FileNotFoundError:
            if subnet_if_new is None:
                raise
            directory.mkdir(mode=0o700, exist_ok=True)
            self.reset(subnet_if_new)

    @property
    def gateway(self):
        """The first host address belongs to the bridge: the containers' default route."""
        return next(self.subnet.hosts())

    @property
    def leases(self):
        """{address: container id} of every lease."""
        return {address: (self.directory / address).read_text()
                for address in self._leased_addresses()}

    def _leased_addresses(self):
        # skip the subnet file, and its temporary left by a writer killed mid-reset
        return {name for name in os.listdir(self.directory) if not name.startswith(SUBNET_FILE)}

    def allocate(self, owner, requested=None):
        """Lease `requested` (or the lowest free address) to `owner` and return it.

        The network address, the gateway and the broadcast address are never handed out.
        An owner asking again for an address it holds keeps it (a restarted container).
        """
        if requested is not None:
            address = ipaddress.IPv4Address(requested)
            if address not in self.subnet or address in (self.subnet.network_address,
                                                         self.subnet.broadcast_address):
                raise AddressError(f"{address} is not a usable address in {self.subnet}")
            if address == self.gateway:
                raise AddressError(f"{address} is the bridge's gateway address")
            holder = self.leases.get(str(address))
            if holder == owner:
                return address
            if holder is not None:
                raise AddressError(f"{address} is already in use by container {holder[:12]}")
            return self._claim(address, owner)
        taken = self._leased_addresses()
        for candidate in self.subnet.hosts():
            if candidate != self.gateway and str(candidate) not in taken:
                return self._claim(candidate, owner)
        raise AddressError(f"no free address left in {self.subnet} ({len(taken)} leased): "
                           "stop a container or choose a larger subnet")

    def _claim(self, address, owner):
        lease = os.open(self.directory / str(address),
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(lease, owner.encode())
        finally:
            os.close(lease)
        return address

    def release(self, owner):
        """Drop every lease held by `owner`; releasing twice is harmless."""
        for address, holder in self.leases.items():
            if holder == owner:
                (self.directory / address).unlink()

    def keep(self, addresses):
        """Drop every lease but those of `addresses` (the bridge is made again around them)."""
        for address in self._leased_addresses() - set(addresses):
            (self.directory / address).unlink()

    def reset(self, subnet):
        """Forget every lease and start over with `subnet` (the bridge is being created)."""
        self._remove_leases()
        self.subnet = ipaddress.IPv4Network(subnet)
        shared.replace_file(self.directory / SUBNET_FILE, str(self.subnet))  # never half a subnet

    def discard(self):
        """Delete the pool: its leases, its subnet, its directory (the network is removed)."""
        self._remove_leases()
        (self.directory / SUBNET_FILE).unlink(missing_ok=True)
        self.directory.rmdir()

    def _remove_leases(self):
        for address in self._leased_addresses():
            (self.directory / address).unlink()
