"""IP address management: which container owns which address on the bridge.

Every container on the bridge needs an address nobody else holds. Twenty `minibox run`
processes may start at the same moment, and each is a separate process, so the only safe
referee is the kernel: an exclusive `flock(2)` on a lock file. A process holds it while it
reads the lease table, picks the lowest free address and writes the table back, so two
starts can never pick the same address (the classic teaching-runtime bug: "every
container got the same IP").

The table is a small JSON file beside the lock::

    {"subnet": "10.199.0.0/24", "leases": {"10.199.0.2": "<container id>", ...}}

It is replaced with `rename(2)` (write a temporary file, then rename over the old one) so a
reader never sees half a file, even if a writer is killed mid-write. The lock is taken on
the store's directory, not on the table: a lock on the table's old inode would mean
nothing after the rename, and a separate lock file could never be deleted safely (a process
still waiting on a deleted lock file and a newcomer locking its fresh successor would both
believe they hold the lock).

No `fsync(2)`: the state root is `/run` (tmpfs) by default, and leases only describe
interfaces that a reboot wipes anyway.
"""
import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from pathlib import Path


class AddressError(Exception):
    """An address can't be handed out: pool exhausted, taken, or outside the subnet."""


class LeaseTable:
    """The lease table of one subnet, valid only while its `AddressPool.locked()` is held."""

    def __init__(self, subnet, leases):
        self.subnet = subnet
        self.leases = leases  # address (str) -> owner (container id)
        self.discarded = False

    def discard(self):
        """Delete the whole table when the lock is released (the network is being removed)."""
        self.discarded = True

    @property
    def gateway(self):
        """The first host address belongs to the bridge: the containers' default route."""
        return next(self.subnet.hosts())

    def allocate(self, owner, requested=None):
        """Lease `requested` (or the lowest free address) to `owner` and return it.

        The network address, the gateway and the broadcast address are never handed out.
        """
        if requested is not None:
            return self._claim(owner, requested)
        for candidate in self.subnet.hosts():
            if candidate != self.gateway and str(candidate) not in self.leases:
                self.leases[str(candidate)] = owner
                return candidate
        raise AddressError(f"no free address left in {self.subnet} "
                           f"({len(self.leases)} leased): stop a container or pick a larger subnet")

    def _claim(self, owner, requested):
        address = ipaddress.IPv4Address(requested)
        if address not in self.subnet or address in (self.subnet.network_address,
                                                     self.subnet.broadcast_address):
            raise AddressError(f"{address} is not a usable address in {self.subnet}")
        if address == self.gateway:
            raise AddressError(f"{address} is the bridge's gateway address")
        holder = self.leases.get(str(address))
        if holder is not None and holder != owner:
            raise AddressError(f"{address} is already in use by container {holder[:12]}")
        self.leases[str(address)] = owner
        return address

    def release(self, owner):
        """Drop every lease held by `owner`; releasing twice is harmless."""
        for address in [a for a, o in self.leases.items() if o == owner]:
            del self.leases[address]

    def address_of(self, owner):
        for address, holder in self.leases.items():
            if holder == owner:
                return ipaddress.IPv4Address(address)
        return None


class AddressPool:
    """The lease table `name`.json of one bridge network, in `store_dir`."""

    def __init__(self, store_dir, name):
        self.store_dir = Path(store_dir)
        self.table_path = self.store_dir / f"{name}.json"

    @contextmanager
    def locked(self, subnet_if_new=None):
        """Hold the pool's `flock(2)` and yield its `LeaseTable`; save it on a clean exit.

        A pool that doesn't exist yet is created with `subnet_if_new`; without one, a
        missing pool raises FileNotFoundError. An exception inside the block leaves the
        stored table untouched, so a half-done allocation never reaches the disk.
        """
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.store_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            table = self._load(subnet_if_new)
            yield table
            if table.discarded:
                self.table_path.unlink(missing_ok=True)
            else:
                self._save(table)
        finally:
            os.close(lock_fd)  # closing the last fd drops the flock

    def exists(self):
        return self.table_path.exists()

    def _load(self, subnet_if_new):
        try:
            stored = json.loads(self.table_path.read_text())
        except FileNotFoundError:
            if subnet_if_new is None:
                raise
            return LeaseTable(ipaddress.IPv4Network(subnet_if_new), {})
        return LeaseTable(ipaddress.IPv4Network(stored["subnet"]), stored["leases"])

    def _save(self, table):
        temporary = self.table_path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps({"subnet": str(table.subnet), "leases": table.leases},
                                        indent=1, sort_keys=True))
        os.rename(temporary, self.table_path)
