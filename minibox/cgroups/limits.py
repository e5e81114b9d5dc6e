"""What the user asked for: `-m 64m --cpus 0.5 --pids-limit 32`, checked before anything exists.

Every check here runs before a single cgroup directory is made, so bad input leaves nothing
behind. The messages follow Docker's where Docker has one (`docker run --help`,
https://docs.docker.com/engine/containers/resource_constraints/).
"""
import os
import re

from minibox.cgroups.devices import container_rules

# Docker's floor: below this the container is OOM-killed before its first instruction.
MIN_MEMORY = 6 * 1024 * 1024

# The range the kernel accepts for v1 `cpu.shares` (kernel/sched/sched.h MIN/MAX_SHARES).
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144

# The CFS bandwidth period both versions use (cpu.cfs_period_us / the second field of cpu.max):
# the kernel's default, and Docker's. --cpus 0.5 becomes 50 ms of CPU time per 100 ms.
CFS_PERIOD_US = 100_000

# Docker's range for --blkio-weight, and the OCI spec's for blockIO weights (BFQ's 1..1000
# minus the lowest CFQ did not take).
MIN_BLKIO_WEIGHT = 10
MAX_BLKIO_WEIGHT = 1000

# Which flag asked for which controller, to name both when a host lacks one. (v1 calls the
# block I/O controller blkio, v2 io.)
CONTROLLER_FLAGS = {"memory": "-m/--memory, memory.*", "cpu": "--cpus/--cpu-shares", "pids": "--pids-limit",
                    "devices": "the device rules, which only --privileged lifts",
                    "cpuset": "--cpuset-cpus, cpu.cpus/mems", "blkio": "--blkio-weight, blockIO",
                    "io": "--blkio-weight, blockIO", "hugetlb": "hugepageLimits"}

# The fields named when a host lacks a file they need (base.Cgroup.set_limits).
BLOCK_IO = "linux.resources.blockIO"
HUGEPAGES = "linux.resources.hugepageLimits"

# A CPU or memory node list as cpuset(7) writes it: "0-3,5".
CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

# The grammar of Docker's units.RAMInBytes: "64m", "64M", "64mb", "64MiB", "1.5g", "512".
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)


class Limits:
    """Validated resource limits; None means "leave the kernel's default (no limit)".
    (A plain class: dataclasses would import inspect, a large module, on every container start.)"""

    def __init__(self, memory=None, memory_swap=None, cpus=None, cpu_shares=None, pids=None,
                 devices=None, memory_reservation=None, memory_swappiness=None,
                 cpu_period=None, cpuset_cpus=None, cpuset_mems=None, blkio_weight=None,
                 blkio_weight_devices=None, blkio_throttle=None, hugepages=None):
        self.memory = memory  # bytes (-m)
        self.memory_swap = memory_swap  # bytes of memory + swap (--memory-swap); -1: no swap limit
        # bytes reclaimed from the container last under memory pressure (--memory-reservation,
        # OCI memory.reservation); memory_swappiness 0..100, OCI memory.swappiness (v1 only)
        self.memory_reservation = memory_reservation
        self.memory_swappiness = memory_swappiness
        self.cpus = cpus  # --cpus, becomes a CFS quota per period
        self.cpu_period = cpu_period  # the CFS period in us (OCI cpu.period); None: 100 ms
        self.cpu_shares = cpu_shares  # --cpu-shares, relative weight (v1 cpu.shares scale)
        self.pids = pids  # --pids-limit
        # [(allow, "c 1:3 rwm"), ...] from devices.container_rules(); None (--privileged):
        # whatever the parent cgroup allows
        self.devices = devices
        # "0-1,3": the CPUs and memory nodes it may use (--cpuset-cpus, OCI cpu.cpus/mems)
        self.cpuset_cpus = cpuset_cpus
        self.cpuset_mems = cpuset_mems
        self.blkio_weight = blkio_weight  # 10..1000 (--blkio-weight, OCI blockIO.weight)
        self.blkio_weight_devices = blkio_weight_devices  # [[major, minor, weight], ...]
        # {"read_bps": [[major, minor, rate], ...], "write_iops": ...} (OCI blockIO.throttle*)
        self.blkio_throttle = blkio_throttle
        self.hugepages = hugepages  # {"2MB": bytes} (OCI hugepageLimits)

    def controllers(self, block_io: str = "blkio") -> set[str]:
        """The cgroup controllers these limits need (a host lacking one must refuse);
        `block_io` is the block I/O controller's name (v1 blkio, v2 io)."""
        needed = set()
        if {self.memory, self.memory_swap, self.memory_reservation,
                self.memory_swappiness} != {None}:
            needed.add("memory")
        if self.cpus is not None or self.cpu_shares is not None:
            needed.add("cpu")
        if self.pids is not None:
            needed.add("pids")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            needed.add("cpuset")
        if self.blkio_weight or self.blkio_weight_devices or self.blkio_throttle:
            needed.add(block_io)
        if self.hugepages:
            needed.add("hugetlb")
        return needed

    def cpu_period_us(self) -> int:
        return self.cpu_period or CFS_PERIOD_US

    def cpu_quota_us(self) -> int:
        """--cpus as CFS quota: microseconds of CPU time allowed per period."""
        return round(self.cpus * self.cpu_period_us())


def parse_size(text: str) -> int:
    """"64m" -> 67108864. Units are binary (k = 1024), as in Docker; a bare number is bytes."""
    match = SIZE.match(text.strip())
    if not match:
        raise ValueError(
            f"invalid size {text!r}: use a number with an optional unit b, k, m, g (e.g. 64m)"
        )
    number, unit = match.groups()
    return int(float(number) * UNITS[unit.lower()])


def format_size(size: int) -> str:
    """67108864 -> "64 MiB": the largest binary unit, a decimal only when it isn't exact."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{size} B"


def host_cpus() -> int:
    """CPUs this process may run on (sched_getaffinity(2)), which is what Docker counts too."""
    return len(os.sched_getaffinity(0))


def parse_limits(memory=None, memory_swap=None, cpus=None, cpu_shares=None, pids_limit=None,
                 privileged=False, cpuset_cpus=None, blkio_weight=None) -> Limits:
    """Turn the raw CLI strings into Limits, or raise ValueError with one line naming the flag.
    The device rules are runc's defaults, as Docker's; --privileged has none."""
    limits = Limits(devices=None if privileged else container_rules())
    if memory is not None:
        limits.memory = _size("-m/--memory", memory)
        if limits.memory < MIN_MEMORY:
            raise ValueError(
                f"-m/--memory: minimum memory limit allowed is {format_size(MIN_MEMORY)}"
                f" (got {format_size(limits.memory)})"
            )
    if memory_swap is not None:
        limits.memory_swap = _memory_swap(str(memory_swap), limits.memory)
    if cpus is not None:
        limits.cpus = _cpus(cpus)
    if cpu_shares is not None:
        limits.cpu_shares = _number("--cpu-shares", int, cpu_shares)
        if not MIN_CPU_SHARES <= limits.cpu_shares <= MAX_CPU_SHARES:
            raise ValueError(
                f"--cpu-shares: must be from {MIN_CPU_SHARES} to {MAX_CPU_SHARES}"
                f" (got {limits.cpu_shares})"
            )
    if pids_limit is not None:
        limits.pids = _number("--pids-limit", int, pids_limit)
        if limits.pids < 1:
            raise ValueError(f"--pids-limit: must be a positive number of processes (got {limits.pids})")
    if cpuset_cpus is not None:
        limits.cpuset_cpus = check_cpu_list("--cpuset-cpus", cpuset_cpus)
    if blkio_weight is not None:
        limits.blkio_weight = check_blkio_weight("--blkio-weight",
                                                 _number("--blkio-weight", int, blkio_weight))
    return limits


def check_cpu_list(flag: str, text: str) -> str:
    """"0-1,3" as it is; whether those CPUs exist the kernel says when it is written (ERANGE)."""
    if not CPU_LIST.match(text):
        raise ValueError(f"{flag}: {text!r} is not a list of CPUs or memory nodes like 0-3,5")
    return text


def check_blkio_weight(flag: str, weight: int) -> int:
    if not MIN_BLKIO_WEIGHT <= weight <= MAX_BLKIO_WEIGHT:
        raise ValueError(f"{flag}: range of blkio weight is from {MIN_BLKIO_WEIGHT} to "
                         f"{MAX_BLKIO_WEIGHT} (got {weight})")
    return weight


def parse_cgroup_parent(text: str) -> str:
    """--cgroup-parent "/ci/jobs" -> "ci/jobs": a path below each hierarchy's root, never above."""
    parts = [part for part in text.split("/") if part]
    if not parts or ".." in parts or "." in parts:
        raise ValueError(f"--cgroup-parent: {text!r} must be a path like /ci/jobs, without . or ..")
    return "/".join(parts)


def parse_cgroups_path(text: str) -> str:
    """OCI linux.cgroupsPath as a path in each hierarchy: "/a/b" from the hierarchy's root,
    "a/b" below the runtime's own cgroup (v1; v2: below its parent, see v2.py), and
    systemd's "slice:prefix:name" as the path systemd would give the unit, as runc's
    systemd driver documents it (docs/cgroup-v2.md, "systemd cgroup driver"): the slice
    "a-b.slice" is a.slice/a-b.slice, the unit "prefix-name.scope" (a name ending in .slice
    is the slice itself), and no slice means system.slice. No systemd is asked: the
    directories are made as for any other path."""
    parts = text.split(":")
    if len(parts) == 3 and "/" not in text:
        slice_name, prefix, name = parts
        return "/" + "/".join(_expand_slice(slice_name or "system.slice") + [
            name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix
            else f"{name}.scope"])
    names = [part for part in text.split("/") if part]
    if not names or ".." in names or "." in names:
        raise ValueError(f"linux.cgroupsPath {text!r} must be a path without . or .., or "
                         "slice:prefix:name")
    return "/" * text.startswith("/") + "/".join(names)


def _expand_slice(name: str) -> list[str]:
    """systemd.slice(5): "a-b-c.slice" lives in a.slice/a-b.slice/a-b-c.slice; "-.slice" is
    the root."""
    if not name.endswith(".slice") or "/" in name:
        raise ValueError(f"linux.cgroupsPath: {name!r} is not a slice name (NAME.slice)")
    if name == "-.slice":
        return []
    words = name[:-len(".slice")].split("-")
    if "" in words:
        raise ValueError(f"linux.cgroupsPath: {name!r} is not a slice name (empty part)")
    return ["-".join(words[:count]) + ".slice" for count in range(1, len(words) + 1)]


def _size(flag: str, text) -> int:
    try:
        return parse_size(str(text))
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def _number(flag: str, kind: type, text):
    """int(text) or float(text), with the flag's name in the complaint instead of Python's."""
    try:
        return kind(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag}: not a number: {text!r}") from None


def _memory_swap(text: str, memory: int | None) -> int:
    """Docker's --memory-swap is memory *plus* swap, so it only means something next to -m."""
    if memory is None:
        raise ValueError("--memory-swap: needs -m/--memory as well (it is the total of memory and swap)")
    if text.strip() == "-1":
        return -1
    total = _size("--memory-swap", text)
    if total < memory:
        raise ValueError(
            f"--memory-swap: must be at least the memory limit {format_size(memory)}"
            f" (got {format_size(total)}), or -1 for unlimited swap"
        )
    return total


def _cpus(text) -> float:
    cpus = _number("--cpus", float, text)
    available = host_cpus()
    # `not (a <= x <= b)` rather than `x < a or x > b` so that "nan" is refused too.
    if not 0.01 <= cpus <= available:
        raise ValueError(
            f"--cpus: range of CPUs is from 0.01 to {available:.2f},"
            f" as there are only {available} CPUs available (got {text})"
        )
    return cpus
