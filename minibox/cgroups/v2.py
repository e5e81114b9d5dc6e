"""cgroup v2: one unified tree with every controller (cgroups(7), "CGROUPS VERSION 2";
Documentation/admin-guide/cgroup-v2.rst).

A container gets a single directory, /sys/fs/cgroup/minibox/<id>. A controller only shows up
in a cgroup when its parent lists it in `cgroup.subtree_control`, so minibox writes
"+cpu +memory +pids" into every ancestor from the root down. The "no internal processes" rule
means those ancestors must hold no processes themselves (the root is exempt), which is why
containers sit in a `minibox/` group of their own rather than next to the runtime.

The files this backend writes, and their twins in v1 (see v1.py):

| what             | v2 (this file)                           | v1                                       |
|------------------|------------------------------------------|------------------------------------------|
| memory limit     | memory.max                               | memory.limit_in_bytes                    |
| swap limit       | memory.swap.max (swap alone)             | memory.memsw.limit_in_bytes (mem + swap) |
| reservation      | memory.low                               | memory.soft_limit_in_bytes               |
| CPU bandwidth    | cpu.max "quota period"                   | cpu.cfs_quota_us + cpu.cfs_period_us     |
| CPU weight       | cpu.weight (1..10000, default 100)       | cpu.shares (2..262144, default 1024)     |
| process limit    | pids.max                                 | pids.max                                 |
| add a process    | cgroup.procs                             | cgroup.procs or `tasks` (one thread)     |
| OOM kills        | memory.events "oom_kill N"               | memory.oom_control "oom_kill N"          |
| peak memory      | memory.peak (Linux 5.19+)                | memory.max_usage_in_bytes                |
| CPU time         | cpu.stat "usage_usec N" (always there)   | cpuacct.usage, a separate controller     |
| freeze           | cgroup.freeze 1/0, cgroup.events frozen  | freezer.state, a separate controller     |
| device rules     | an eBPF program, bpf(2) (see below)      | devices.deny "a", then devices.allow     |
| CPUs, mem nodes  | cpuset.cpus, cpuset.mems                 | the same, in the cpuset hierarchy        |
| block I/O weight | io.bfq.weight (BFQ), else io.weight      | blkio.bfq.weight, or CFQ's blkio.weight  |
| per device       | io.bfq.weight "maj:min w", io.max        | blkio.bfq.weight_device, throttle.*      |
| huge pages       | hugetlb.<size>.max                       | hugetlb.<size>.limit_in_bytes            |

cpuset, io and hugetlb are enabled in the ancestors' subtree_control only for a container
whose limits need them. The block I/O weight is BFQ's (1..1000, as OCI's) while BFQ is
loaded, else io.weight's (1..10000, iocost), mapped as runc's fs2/io.go does; a per-device
weight only BFQ takes: without it, refused (runc 1.1 drops it without a word).

Device rules (devices.py) have no file in v2: the kernel asks an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup. devicefilter.py writes it from the rules,
as runc does, and create() loads and attaches it with bpf(2).
"""
import os

from minibox import syscalls
from minibox.cgroups import devicefilter
from minibox.cgroups.base import Cgroup, CgroupError, LimitFile, Stats, read, read_int, read_keyed
from minibox.cgroups.base import refuse_missing, wait_for, write
from minibox.cgroups.limits import (BLOCK_IO, HUGEPAGES, MAX_BLKIO_WEIGHT, MAX_CPU_SHARES,
                                    MIN_BLKIO_WEIGHT, MIN_CPU_SHARES, Limits)
from minibox.cgroups.mounts import memberships

ROOT = "/sys/fs/cgroup"

# Enabled whenever the host offers them, limits or not: memory for OOM kills and peak memory,
# pids for the process count, cpu for cpu.max/cpu.weight (cpu.stat exists without it).
CONTROLLERS = ("cpu", "memory", "pids")

# OCI blockIO's throttle lists (limits.Limits.blkio_throttle) as io.max's keys.
IO_MAX_KEYS = {"read_bps": "rbps", "write_bps": "wbps", "read_iops": "riops",
               "write_iops": "wiops"}


def cpu_weight(shares: int) -> int:
    """Map cpu.shares [2, 262144] linearly onto cpu.weight [1, 10000], as runc and crun do."""
    return 1 + (shares - MIN_CPU_SHARES) * 9999 // (MAX_CPU_SHARES - MIN_CPU_SHARES)


def io_weight(blkio_weight: int) -> int:
    """Map blkio's weight [10, 1000] linearly onto io.weight [1, 10000], as runc does
    (ConvertBlkIOToIOWeightValue)."""
    return 1 + (blkio_weight - MIN_BLKIO_WEIGHT) * 9999 // (MAX_BLKIO_WEIGHT - MIN_BLKIO_WEIGHT)


def own_cgroup() -> str | None:
    """The runtime's own cgroup: /proc/self/cgroup on a v2 host reads
    "0::/the/runtime's/cgroup" (cgroups(7))."""
    for controllers, path in memberships():
        if not controllers:
            return path.strip()
    return None


def own_procs(root: str = ROOT) -> str | None:
    """The `cgroup.procs` of the runtime's own cgroup (for grace.py)."""
    own = own_cgroup()
    return own and os.path.join(root, own.lstrip("/"), "cgroup.procs")


class V2Cgroup(Cgroup):
    """A container's directory in the unified hierarchy mounted at `root`."""

    version = 2

    def __init__(self, container_id: str, parent: str | None = None, root: str = ROOT,
                 path: str | None = None, own: str | None = None):
        """`parent` is a path below `root` (see limits.parse_cgroup_parent), default "minibox".
        `path`, an OCI cgroupsPath (limits.parse_cgroups_path), names the container's own
        directory: below `root` if absolute, else below the parent of the runtime's own
        cgroup `own` (default: /proc/self/cgroup's), as runc's fs2 driver places it -- the
        runtime's own cgroup holds processes, so the "no internal processes" rule would
        forbid enabling controllers for a child of it."""
        self.root = root
        self.custom_parent = parent is not None or path is not None
        if path and path[0] == "/":
            self.path = os.path.join(root, path.lstrip("/"))
        elif path:
            own = own_cgroup() if own is None else own
            self.path = os.path.join(root, os.path.dirname(own.strip("/")), path)
        else:
            self.path = os.path.join(root, parent or "minibox", container_id)

    @classmethod
    def at(cls, path: str) -> "V2Cgroup":
        """The cgroup at `path`, wherever it was made."""
        group = cls("")
        group.path = path
        return group

    def paths(self) -> list[str]:
        return [self.path]

    def available(self) -> set[str]:
        """Controllers the root offers (cgroup.controllers), e.g. {"cpu", "memory", "pids"}."""
        return set(read(self.root, "cgroup.controllers").split())

    def _check(self, limits: Limits) -> None:
        refuse_missing(limits.controllers(block_io="io"), self.available(), version=2)
        if limits.memory_swappiness is not None:  # dropping it silently is no answer
            raise CgroupError("linux.resources.memory.swappiness: cgroup v2 has no swappiness "
                              "per cgroup (only v1's memory.swappiness)")

    def _make_dirs(self, limits: Limits) -> None:
        available = self.available()
        needed = sorted(limits.controllers(block_io="io") - set(CONTROLLERS))
        enable = " ".join(f"+{name}" for name in CONTROLLERS + tuple(needed) if name in available)
        ancestor = self.root
        for part in os.path.relpath(os.path.dirname(self.path), self.root).split(os.sep):
            write(ancestor, "cgroup.subtree_control", enable)
            ancestor = os.path.join(ancestor, part)
            os.makedirs(ancestor, exist_ok=True)
        write(ancestor, "cgroup.subtree_control", enable)
        self._mkdir(self.path)

    def plan(self, limits: Limits) -> list[str]:
        """create()'s steps for --explain, the device program in full."""
        if limits.devices is None:
            return super().plan(limits)
        program = devicefilter.compile_rules(limits.devices)
        return super().plan(limits) + [
            f"bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE): {len(program)} instructions "
            "from the device rules   (v1: devices.deny, devices.allow)",
            *(f"  {line}" for line in devicefilter.disassemble(program)),
            f"bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) to {self.path}"]

    def _confine_devices(self, limits: Limits) -> None:
        """Load the device program and attach it to the directory. Nothing to undo: the
        kernel detaches and frees it when the directory is removed."""
        if limits.devices is None:  # --privileged
            return
        program = devicefilter.compile_rules(limits.devices)
        try:
            program_fd = syscalls.bpf_load_cgroup_device(devicefilter.encode(program),
                                                         len(program))
        except OSError as error:  # EINVAL: a kernel without CONFIG_CGROUP_BPF
            raise CgroupError(f"cannot load the device rules' eBPF program for {self.path}: "
                              f"{error.strerror}") from None
        try:
            directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                syscalls.bpf_attach_cgroup_device(directory, program_fd)
            finally:
                os.close(directory)
        except OSError as error:
            raise CgroupError(f"cannot attach the device rules' eBPF program to {self.path}: "
                              f"{error.strerror}") from None
        finally:
            # The attachment holds its own reference to the program (kernel/bpf/cgroup.c),
            # dropped when the cgroup is freed: our fd is only the loader's and may go now.
            os.close(program_fd)

    def limit_files(self, limits: Limits) -> list[LimitFile]:
        files = []
        if limits.memory is not None:
            files.append(LimitFile(self.path, "memory.max", limits.memory, "memory.limit_in_bytes"))
        if limits.memory_swap is not None:
            # Docker's --memory-swap counts memory + swap; v2 limits the swap alone.
            swap = "max" if limits.memory_swap == -1 else limits.memory_swap - limits.memory
            files.append(LimitFile(self.path, "memory.swap.max", swap,
                                   "memory.memsw.limit_in_bytes, memory + swap"))
        if limits.memory_reservation is not None:
            files.append(LimitFile(self.path, "memory.low", limits.memory_reservation,
                                   "memory.soft_limit_in_bytes"))
        if limits.cpus is not None:
            files.append(LimitFile(self.path, "cpu.max",
                                   f"{limits.cpu_quota_us()} {limits.cpu_period_us()}",
                                   "cpu.cfs_quota_us + cpu.cfs_period_us"))
        if limits.cpu_shares is not None:
            files.append(LimitFile(self.path, "cpu.weight", cpu_weight(limits.cpu_shares),
                                   "cpu.shares, 2..262144"))
        if limits.pids is not None:
            files.append(LimitFile(self.path, "pids.max", limits.pids, "pids.max"))
        return files + self._cpuset_io_hugetlb_files(limits)

    def _cpuset_io_hugetlb_files(self, limits: Limits) -> list[LimitFile]:
        files = []
        if limits.cpuset_cpus is not None:
            files.append(LimitFile(self.path, "cpuset.cpus", limits.cpuset_cpus, "cpuset.cpus"))
        if limits.cpuset_mems is not None:
            files.append(LimitFile(self.path, "cpuset.mems", limits.cpuset_mems, "cpuset.mems"))
        bfq = os.path.exists(os.path.join(self.path, "io.bfq.weight"))
        if limits.blkio_weight and bfq:
            files.append(LimitFile(self.path, "io.bfq.weight", limits.blkio_weight,
                                   "blkio.bfq.weight"))
        elif limits.blkio_weight:
            files.append(LimitFile(self.path, "io.weight", io_weight(limits.blkio_weight),
                                   "blkio.weight, 10..1000", f"{BLOCK_IO}.weight"))
        for major, minor, weight in limits.blkio_weight_devices or ():
            files.append(LimitFile(self.path, "io.bfq.weight", f"{major}:{minor} {weight}",
                                   "blkio.bfq.weight_device", f"{BLOCK_IO}.weightDevice"))
        for kind, devices in (limits.blkio_throttle or {}).items():
            for major, minor, rate in devices:
                files.append(LimitFile(self.path, "io.max",
                                       f"{major}:{minor} {IO_MAX_KEYS[kind]}={rate}",
                                       f"blkio.throttle.{kind}_device"))
        for size, limit in (limits.hugepages or {}).items():
            files.append(LimitFile(self.path, f"hugetlb.{size}.max", limit,
                                   f"hugetlb.{size}.limit_in_bytes", f"{HUGEPAGES} {size}"))
        return files

    def stats(self) -> Stats:
        usage_usec = read_keyed(self.path, "cpu.stat").get("usage_usec")
        return Stats(
            memory_peak=read_int(self.path, "memory.peak"),
            cpu_seconds=None if usage_usec is None else usage_usec / 1e6,
            pids_peak=read_int(self.path, "pids.peak"),
        )

    def oom_kills(self) -> int:
        """memory.events counts this cgroup and its descendants (memory.events.local: only it)."""
        try:
            return read_keyed(self.path, "memory.events").get("oom_kill", 0)
        except FileNotFoundError:  # the memory controller is not enabled here
            return 0

    def freeze(self) -> None:
        """Writing 1 starts freezing; cgroup.events says "frozen 1" once every task stopped."""
        self._set_frozen(1)

    def thaw(self) -> None:
        self._set_frozen(0)

    def frozen(self) -> bool:
        return read_keyed(self.path, "cgroup.events").get("frozen") == 1

    def _set_frozen(self, frozen: int) -> None:
        write(self.path, "cgroup.freeze", frozen)
        if not wait_for(lambda: read_keyed(self.path, "cgroup.events").get("frozen") == frozen, timeout=2.0):
            raise CgroupError(f"{self.path}/cgroup.events did not show frozen {frozen} within 2 s")
