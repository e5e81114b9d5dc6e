"""cgroup v1: a separate directory tree per controller (cgroups(7), "CGROUPS VERSION 1").

Each controller (or a few mounted together, like "cpu,cpuacct" on most distros) is its own
hierarchy, mounted at /sys/fs/cgroup/<controller>. A container therefore gets one directory
*per hierarchy*, and the same PID is written into each. This host is "hybrid": v1 controllers,
plus an empty cgroup2 at /sys/fs/cgroup/unified.

The files this backend writes, and their twins in v2 (see v2.py):

| what             | v1 (this file)                                   | v2                     |
|------------------|--------------------------------------------------|------------------------|
| memory limit     | memory.limit_in_bytes                            | memory.max             |
| memory + swap    | memory.memsw.limit_in_bytes (memory + swap)      | memory.swap.max (swap) |
| reservation      | memory.soft_limit_in_bytes                       | memory.low             |
| swappiness       | memory.swappiness (0..100)                       | none: refused          |
| CPU bandwidth    | cpu.cfs_quota_us + cpu.cfs_period_us             | cpu.max "quota period" |
| CPU weight       | cpu.shares (2..262144, default 1024)             | cpu.weight (1..10000)  |
| process limit    | pids.max                                         | pids.max               |
| add a process    | cgroup.procs (`tasks` moves a single thread)     | cgroup.procs           |
| OOM kills        | memory.oom_control "oom_kill N"                  | memory.events          |
| peak memory      | memory.max_usage_in_bytes                        | memory.peak            |
| CPU time         | cpuacct.usage (ns, a separate controller)        | cpu.stat usage_usec    |
| freeze           | freezer.state FROZEN/THAWED (own controller)     | cgroup.freeze 1/0      |
| device rules     | devices.deny "a", then devices.allow lines       | an eBPF program        |
| CPUs, mem nodes  | cpuset.cpus, cpuset.mems (own controller)        | cpuset.cpus, .mems     |
| block I/O weight | blkio.weight, or BFQ's blkio.bfq.weight          | io.bfq.weight/io.weight|
| per device       | blkio.bfq.weight_device, blkio.throttle.*_device | io.bfq.weight, io.max  |
| huge pages       | hugetlb.<size>.limit_in_bytes                    | hugetlb.<size>.max     |

Block I/O weights are the I/O scheduler's: CFQ's blkio.weight left with CFQ in Linux 5.0, and
BFQ's blkio.bfq.weight exists only while BFQ is loaded (mq-deadline and none have no
weights). Like runc (libcontainer/cgroups/fs/blkio.go), the one there is written; with
neither, the limit is refused (base.Cgroup.set_limits).

Placement: <hierarchy>/<the runtime's own cgroup>/minibox/<id>, the own cgroup read from
/proc/self/cgroup, so a runtime that is itself confined (here memory is under
/process_api/<hash>) keeps its containers inside that confinement. --cgroup-parent replaces
"<own>/minibox" with a path from the hierarchy's root, like Docker's cgroupfs driver.

Which hierarchies: a Docker-style `run` only those it uses (CONTROLLERS, and cpuset or blkio
when its limits need them); an OCI container every one mounted, the hybrid host's cgroup2
included, as runc puts it (engines and tools look for it in name=systemd or cpuset too). A
cpuset directory needs its parent's CPUs and memory nodes before it takes a process
(inherit_cpus_and_mems).
"""
import os
from collections import namedtuple

from minibox.cgroups.base import Cgroup, CgroupError, LimitFile, Stats, read, read_int, read_keyed
from minibox.cgroups.base import refuse_missing, wait_for, write
from minibox.cgroups.limits import BLOCK_IO, HUGEPAGES, Limits
from minibox.cgroups.mounts import cgroup_mounts, find_mount, memberships, relative_path

# The hierarchies a Docker-style `run` uses: each one is a mkdir and a cgroup.procs write per
# container. An OCI container joins every hierarchy, as runc does (mounted_hierarchies).
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "devices")


# mountpoint: e.g. /sys/fs/cgroup/memory; own: the runtime's cgroup in it, relative to the
# mount point (say "process_api/34869c...", or "" at the root). (Not `typing`: an import
# every start would pay.)
Hierarchy = namedtuple("Hierarchy", "mountpoint own")


def mounted_hierarchies(mountinfo: str = "/proc/self/mountinfo",
                        own_cgroups: str = "/proc/self/cgroup",
                        every: bool = False, needs=()) -> dict[str, Hierarchy]:
    """{controller: Hierarchy} for the v1 controllers minibox uses that this host mounts.

    With `every`, for each hierarchy the runtime is in, as runc's fs driver joins them for an
    OCI container: the controllers minibox writes no file of (blkio, cpuset, net_cls,
    perf_event, hugetlb, rdma, misc...), named hierarchies ("name=systemd") and, keyed "",
    the cgroup2 hierarchy a hybrid host mounts beside them (/sys/fs/cgroup/unified).
    `needs`: controllers beyond CONTROLLERS that the container's limits write to.

    Mount points come from proc(5) mountinfo (filesystem type "cgroup", controllers in the
    super options); the runtime's place in each hierarchy from /proc/self/cgroup, whose lines
    read "hierarchy-ID:controller,list:/path".
    """
    mounts = cgroup_mounts(mountinfo)
    hierarchies = {}
    for controllers, path in memberships(own_cgroups):
        names = [name for name in controllers.split(",")
                 if every or name in CONTROLLERS or name in needs]
        mount = find_mount(mounts, controllers) if names else None
        if mount is None:
            continue
        # A mount of a sub-tree (root != "/") shows that cgroup at its mount point.
        own = relative_path(mount, path)
        for name in names:
            hierarchies[name] = Hierarchy(mount.mountpoint, path.strip("/") if own is None else own)
    # minibox's own first: pids() reads the first directory's cgroup.procs.
    order = [name for name in CONTROLLERS if name in hierarchies] + \
        [name for name in hierarchies if name not in CONTROLLERS]
    return {name: hierarchies[name] for name in order}


def own_procs() -> str | None:
    """The `cgroup.procs` of the runtime's own cgroup in one hierarchy (for grace.py: any
    hierarchy will do, the rwsem and its grace period are global)."""
    hierarchy = next(iter(mounted_hierarchies().values()), None)
    return hierarchy and os.path.join(hierarchy.mountpoint, hierarchy.own, "cgroup.procs")


class V1Cgroup(Cgroup):
    """A container's directories in the memory, cpu, cpuacct, pids, freezer and devices
    hierarchies, or in every hierarchy for an OCI container."""

    version = 1

    def __init__(self, container_id: str, parent: str | None = None,
                 hierarchies: dict[str, Hierarchy] | None = None, path: str | None = None,
                 every: bool = False, needs=()):
        """`hierarchies` defaults to this host's (mounted_hierarchies(), all of them with
        `every`, or with the controllers the limits `needs`); `parent` is a path below each
        hierarchy's root (see limits.parse_cgroup_parent); `path`, an OCI cgroupsPath
        (limits.parse_cgroups_path), names the container's own directory: from each
        hierarchy's root if absolute, else below the runtime's own cgroup, as runc's."""
        self.hierarchies = (mounted_hierarchies(every=every, needs=needs) if hierarchies is None
                            else hierarchies)
        self.custom_parent = parent is not None or path is not None
        self.dirs = {
            controller: os.path.join(mountpoint, path.lstrip("/")) if path and path[0] == "/"
            else os.path.join(mountpoint, own, path) if path
            else os.path.join(mountpoint, parent or os.path.join(own, "minibox"), container_id)
            for controller, (mountpoint, own) in self.hierarchies.items()
        }

    @classmethod
    def at(cls, paths: list[str]) -> "V1Cgroup":
        """The cgroup whose directories are `paths` (one per hierarchy, as paths() lists)."""
        group = cls("", every=True)
        group.dirs = {controller: path for controller, hierarchy in group.hierarchies.items()
                      for path in paths if path.startswith(hierarchy.mountpoint + "/")}
        return group

    def paths(self) -> list[str]:
        # cpu and cpuacct share one directory when they are mounted together.
        return list(dict.fromkeys(self.dirs.values()))

    def _check(self, limits: Limits) -> None:
        refuse_missing(limits.controllers() | ({"devices"} if limits.devices else set()),
                       self.dirs, version=1)
        if limits.memory_swap is not None:
            memory_root = self.hierarchies["memory"].mountpoint
            if not os.path.exists(os.path.join(memory_root, "memory.memsw.limit_in_bytes")):
                raise CgroupError("--memory-swap needs swap accounting, which this kernel has off"
                                  " (no memory.memsw.limit_in_bytes; boot with swapaccount=1)")

    def _make_dirs(self, limits: Limits) -> None:
        for path in self.paths():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._mkdir(path)
        if "cpuset" in self.dirs:
            inherit_cpus_and_mems(self.hierarchies["cpuset"].mountpoint, self.dirs["cpuset"])

    def limit_files(self, limits: Limits) -> list[LimitFile]:
        memory, cpu, pids = self.dirs.get("memory"), self.dirs.get("cpu"), self.dirs.get("pids")
        files = []
        if limits.memory is not None:
            files.append(LimitFile(memory, "memory.limit_in_bytes", limits.memory, "memory.max"))
        if limits.memory_swap is not None:
            # memsw is memory *plus* swap and must stay >= limit_in_bytes, so it comes second.
            files.append(LimitFile(memory, "memory.memsw.limit_in_bytes", limits.memory_swap,
                                   "memory.swap.max, swap alone"))
        if limits.memory_reservation is not None:
            files.append(LimitFile(memory, "memory.soft_limit_in_bytes", limits.memory_reservation,
                                   "memory.low"))
        if limits.memory_swappiness is not None:
            files.append(LimitFile(memory, "memory.swappiness", limits.memory_swappiness,
                                   "none: v2 has no swappiness per cgroup"))
        if limits.cpus is not None:
            files.append(LimitFile(cpu, "cpu.cfs_period_us", limits.cpu_period_us(),
                                   "cpu.max, 2nd field"))
            files.append(LimitFile(cpu, "cpu.cfs_quota_us", limits.cpu_quota_us(), "cpu.max, 1st field"))
        if limits.cpu_shares is not None:
            files.append(LimitFile(cpu, "cpu.shares", limits.cpu_shares, "cpu.weight, 1..10000"))
        if limits.pids is not None:
            files.append(LimitFile(pids, "pids.max", limits.pids, "pids.max"))
        for allow, line in limits.devices or ():
            # A new devices cgroup starts as a copy of its parent's rules (here: everything
            # allowed); "a" to devices.deny empties them, the allow lines then whitelist.
            files.append(LimitFile(self.dirs["devices"], "devices.allow" if allow else "devices.deny",
                                   line, "a BPF_PROG_TYPE_CGROUP_DEVICE program"))
        return files + self._cpuset_blkio_hugetlb_files(limits)

    def _cpuset_blkio_hugetlb_files(self, limits: Limits) -> list[LimitFile]:
        cpuset, blkio, hugetlb = (self.dirs.get(name) for name in ("cpuset", "blkio", "hugetlb"))
        files = []
        if limits.cpuset_cpus is not None:
            files.append(LimitFile(cpuset, "cpuset.cpus", limits.cpuset_cpus, "cpuset.cpus"))
        if limits.cpuset_mems is not None:
            files.append(LimitFile(cpuset, "cpuset.mems", limits.cpuset_mems, "cpuset.mems"))
        # CFQ's files where the kernel still has them, else BFQ's (runc's detectWeightFilenames)
        cfq = blkio and os.path.exists(os.path.join(blkio, "blkio.weight"))
        prefix = "blkio." if cfq else "blkio.bfq."
        if limits.blkio_weight:
            files.append(LimitFile(blkio, prefix + "weight", limits.blkio_weight,
                                   "io.bfq.weight, or io.weight", f"{BLOCK_IO}.weight"))
        for major, minor, weight in limits.blkio_weight_devices or ():
            files.append(LimitFile(blkio, prefix + "weight_device", f"{major}:{minor} {weight}",
                                   "io.bfq.weight", f"{BLOCK_IO}.weightDevice"))
        for kind, devices in (limits.blkio_throttle or {}).items():
            for major, minor, rate in devices:
                files.append(LimitFile(blkio, f"blkio.throttle.{kind}_device",
                                       f"{major}:{minor} {rate}", "io.max"))
        for size, limit in (limits.hugepages or {}).items():
            files.append(LimitFile(hugetlb, f"hugetlb.{size}.limit_in_bytes", limit,
                                   f"hugetlb.{size}.max", f"{HUGEPAGES} {size}"))
        return files

    def stats(self) -> Stats:
        cpu_ns = self._read_int("cpuacct", "cpuacct.usage")
        return Stats(
            memory_peak=self._read_int("memory", "memory.max_usage_in_bytes"),
            cpu_seconds=None if cpu_ns is None else cpu_ns / 1e9,
            pids_peak=self._read_int("pids", "pids.peak"),
        )

    def oom_kills(self) -> int:
        """The kernel counts kills in memory.oom_control's "oom_kill" line (Linux 4.13+)."""
        if "memory" not in self.dirs:
            return 0
        return read_keyed(self.dirs["memory"], "memory.oom_control").get("oom_kill", 0)

    def freeze(self) -> None:
        """FREEZING becomes FROZEN once every task has stopped; wait for that."""
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    def frozen(self) -> bool:
        return "freezer" in self.dirs and read(self.dirs["freezer"], "freezer.state").strip() == "FROZEN"

    def _set_freezer(self, state: str) -> None:
        if "freezer" not in self.dirs:
            raise CgroupError("this host lacks the cgroup v1 controller 'freezer'")
        directory = self.dirs["freezer"]
        write(directory, "freezer.state", state)
        if not wait_for(lambda: read(directory, "freezer.state").strip() == state, timeout=2.0):
            raise CgroupError(f"{directory}/freezer.state did not become {state} within 2 s")

    def _read_int(self, controller: str, name: str) -> int | None:
        return read_int(self.dirs[controller], name) if controller in self.dirs else None


def inherit_cpus_and_mems(mountpoint: str, directory: str) -> None:
    """Give each cpuset cgroup from the mount point down to `directory` its parent's CPUs and
    memory nodes where it has none (cpuset(7): cpuset.cpus, cpuset.mems).

    A new v1 cpuset cgroup starts with empty cpuset.cpus and cpuset.mems, and the kernel
    refuses to move a process into it (cpuset_can_attach: ENOSPC from the cgroup.procs
    write) until both are set. cgroup.clone_children=1 in the parent would make mkdir copy
    them, but the parent may be the caller's; runc copies them down level by level instead
    (cpusetEnsureParent in libcontainer/cgroups/fs/cpuset.go), and so does this. A copy is no
    limit: the container may use what its parent may."""
    parent = mountpoint
    for name in os.path.relpath(directory, mountpoint).split("/"):
        current = os.path.join(parent, name)
        for field in ("cpuset.cpus", "cpuset.mems"):
            if not read(current, field).strip():
                write(current, field, read(parent, field).strip())
        parent = current
