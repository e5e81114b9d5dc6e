"""config.json's linux.resources and linux.cgroupsPath -> the cgroup module's Limits and path.

The part of oci.py's mapping (runc's specconv) that is about cgroups(7): every limit of
linux.resources is either turned into a field of cgroups.Limits, which v1.py and v2.py write,
or refused in one line naming it -- a limit dropped without a word is the one wrong answer
(https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md#control-groups).
Whether this host *can* apply a limit (a controller, BFQ's weight files, a huge page size)
is the cgroup backend's to say, when it makes the cgroup. `check` is oci.py's ConfigCheck: each
wrong field is one line naming it.
"""
import re

from .cgroups import limits as cgroup_limits
from .cgroups.devices import container_rules, rule as device_rule

# What linux.resources may hold that minibox applies; any other field (network, rdma, unified,
# cpu.realtimeRuntime, blockIO.leafWeight...) is refused in one line.
_RESOURCES = {"memory": ("limit", "reservation", "swap", "swappiness"),
              "cpu": ("shares", "quota", "period", "cpus", "mems"), "pids": ("limit",),
              "devices": None, "hugepageLimits": None,
              "blockIO": ("weight", "weightDevice", "throttleReadBpsDevice",
                          "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                          "throttleWriteIOPSDevice")}

# blockIO's throttle lists -> Limits.blkio_throttle's keys (v1: blkio.throttle.<key>_device).
_THROTTLES = {"throttleReadBpsDevice": "read_bps", "throttleWriteBpsDevice": "write_bps",
              "throttleReadIOPSDevice": "read_iops", "throttleWriteIOPSDevice": "write_iops"}

# A hugepageLimits pageSize as the kernel names its hugetlb files: hugetlb.2MB.max.
_PAGE_SIZE = re.compile(r"^\d+[KMG]B$")


def _is_set(value):
    """Does a linux.resources value ask for anything? runc reads 0, false, "" and empty
    lists and objects as "not set", and engines write them for every limit not given."""
    if isinstance(value, dict):
        return any(_is_set(item) for item in value.values())
    if isinstance(value, list):
        return any(_is_set(item) for item in value)
    return value not in (None, 0, False, "")


def limits(linux, check):
    """linux.resources as the cgroup module's Limits."""
    resources = check.get(linux, "resources", dict, {}, "linux.")
    for group, value in resources.items():
        if not _is_set(value):
            continue  # what engines write for "no limit": Docker's "blockIO": {"weight": 0}
        if group not in _RESOURCES:
            check.fail(f"linux.resources.{group} is not supported: minibox would not apply it")
        for field in (value if _RESOURCES[group] is not None and isinstance(value, dict) else ()):
            if field not in _RESOURCES[group] and _is_set(value[field]):
                check.fail(f"linux.resources.{group}.{field} is not supported: minibox would "
                           "not apply it")
    memory = check.get(resources, "memory", dict, {}, "linux.resources.")
    cpu = check.get(resources, "cpu", dict, {}, "linux.resources.")
    pids = check.get(resources, "pids", dict, {}, "linux.resources.")
    quota = check.get(cpu, "quota", int, None, "linux.resources.cpu.")
    period = check.get(cpu, "period", int, None, "linux.resources.cpu.")
    result = cgroup_limits.Limits(
        memory=check.get(memory, "limit", int, None, "linux.resources.memory."),
        memory_swap=check.get(memory, "swap", int, None, "linux.resources.memory."),
        memory_reservation=check.get(memory, "reservation", int, None,
                                     "linux.resources.memory."),
        cpus=quota / (period or cgroup_limits.CFS_PERIOD_US) if quota and quota > 0 else None,
        cpu_period=period, cpu_shares=check.get(cpu, "shares", int, None, "linux.resources.cpu."),
        pids=check.get(pids, "limit", int, None, "linux.resources.pids."))
    for name, value in vars(result).items():
        if value == 0:  # runc reads 0 as "not set": Docker writes cpu.shares and pids.limit 0
            setattr(result, name, None)
        elif value is not None and value != -1 and value < 0:
            check.fail(f"linux.resources: {name} must be positive")
    swappiness = check.get(memory, "swappiness", int, None, "linux.resources.memory.")
    if swappiness is not None and not 0 <= swappiness <= 100:
        check.fail(f"linux.resources.memory.swappiness must be from 0 to 100, not {swappiness}")
    result.memory_swappiness = swappiness
    result.cpuset_cpus = _cpu_list(cpu, "cpus", check)
    result.cpuset_mems = _cpu_list(cpu, "mems", check)
    _block_io(result, check.get(resources, "blockIO", dict, {}, "linux.resources."), check)
    result.hugepages = _hugepage_limits(resources, check)
    result.devices = container_rules(_device_rules(resources, check))
    return result


def update_limits(resources, check):
    """`update --resources`: what runc's update applies of a linux.resources object (memory,
    cpu, pids, blockIO.weight), as Limits, anything else it applies but minibox cannot refused
    in one line. Device rules, huge page limits and blockIO's per-device lists keep what create
    set: runc's update leaves them alone too, and CRI's UpdateContainerResources sends the
    whole object, not only what changed."""
    if not isinstance(resources, dict):
        check.fail("must hold a JSON object (OCI linux.resources)")
    kept = {group: value for group, value in resources.items()
            if group not in ("devices", "hugepageLimits", "blockIO")}
    if isinstance(resources.get("blockIO"), dict):
        kept["blockIO"] = {"weight": resources["blockIO"].get("weight")}
    result = limits({"resources": kept}, check)
    result.devices = None  # v1 then writes no device file; v2's program stays attached
    return result


def cgroups_path(linux, check):
    """linux.cgroupsPath, mapped as runc maps it (cgroups.parse_cgroups_path); None: minibox's
    own place, minibox/<id>."""
    path = check.get(linux, "cgroupsPath", str, None, "linux.")
    try:
        return path and cgroup_limits.parse_cgroups_path(path)
    except ValueError as error:
        check.fail(str(error))


def _cpu_list(cpu, name, check):
    """cpu.cpus or cpu.mems, "0-3,5" (cpuset(7)); "" is not set, as runc reads it."""
    text = check.get(cpu, name, str, None, "linux.resources.cpu.")
    try:
        return text and cgroup_limits.check_cpu_list(f"linux.resources.cpu.{name}", text)
    except ValueError as error:
        check.fail(str(error))


def _block_io(result, block_io, check):
    """blockIO: weight, weightDevice[] and the four throttle lists, of {major, minor, ...}."""
    where = "linux.resources.blockIO."
    weight = check.get(block_io, "weight", int, None, where)
    result.blkio_weight = weight and _weight(f"{where}weight", weight, check)
    devices = []
    for entry in check.get(block_io, "weightDevice", list, [], where):
        if _is_set(check.get(entry, "leafWeight", int, None, f"{where}weightDevice[].")):
            check.fail(f"{where}weightDevice[].leafWeight is not supported: minibox would not "
                       "apply it (CFQ's, gone since Linux 5.0)")
        major, minor = _device_number(entry, f"{where}weightDevice[]", check)
        device_weight = check.get(entry, "weight", int, None, f"{where}weightDevice[].")
        if device_weight:  # without one the entry asks nothing (runc skips it)
            devices.append([major, minor, _weight(f"{where}weightDevice[].weight",
                                                  device_weight, check)])
    result.blkio_weight_devices = devices or None
    throttle = {}
    for field, key in _THROTTLES.items():
        for entry in check.get(block_io, field, list, [], where):
            major, minor = _device_number(entry, f"{where}{field}[]", check)
            rate = check.get(entry, "rate", int, None, f"{where}{field}[].")
            if rate is None or rate < 0:
                check.fail(f"{where}{field}[]: rate (a number, 0 for no limit) is required")
            throttle.setdefault(key, []).append([major, minor, rate])
    result.blkio_throttle = throttle or None


def _weight(field, weight, check):
    try:
        return cgroup_limits.check_blkio_weight(field, weight)
    except ValueError as error:
        check.fail(str(error))


def _device_number(entry, where, check):
    """(major, minor) of a blockIO device entry: both required."""
    numbers = [check.get(entry, name, int, None, f"{where}.") for name in ("major", "minor")]
    if None in numbers or min(numbers) < 0:
        check.fail(f"{where}: major and minor (the block device's numbers) are required")
    return numbers


def _hugepage_limits(resources, check):
    """hugepageLimits: [{"pageSize": "2MB", "limit": bytes}] as {"2MB": bytes}; a limit of 0
    is one (no huge pages of that size), as runc writes it."""
    where = "linux.resources.hugepageLimits[]"
    pages = {}
    for entry in check.get(resources, "hugepageLimits", list, [], "linux.resources."):
        size = check.get(entry, "pageSize", str, None, f"{where}.")
        limit = check.get(entry, "limit", int, None, f"{where}.")
        if size is None or not _PAGE_SIZE.match(size):
            check.fail(f"{where}: pageSize {size!r} is not a huge page size like 2MB or 1GB")
        if limit is None or limit < 0:
            check.fail(f"{where}: limit (bytes of {size} pages) is required")
        pages[size] = limit
    return pages or None


def _device_rules(resources, check):
    """linux.resources.devices: [{"allow": true, "type": "c", "major": 1, "minor": 3,
    "access": "rwm"}]; type a (all) unless given, a missing major or minor is any."""
    rules = []
    where = "linux.resources.devices[]."
    for entry in check.get(resources, "devices", list, [], "linux.resources."):
        allow = check.get(entry, "allow", bool, None, where)
        kind = check.get(entry, "type", str, "a", where)
        access = check.get(entry, "access", str, "rwm", where)
        if allow is None:
            check.fail("linux.resources.devices[]: allow (true or false) is required")
        if kind not in ("a", "b", "c"):
            check.fail(f"linux.resources.devices[]: type must be a, b or c, not {kind!r}")
        if not access or set(access) - set("rwm"):
            check.fail(f"linux.resources.devices[]: access must be letters of rwm, not {access!r}")
        rules.append(device_rule(allow, kind, check.get(entry, "major", int, None, where),
                                 check.get(entry, "minor", int, None, where), access))
    return rules
