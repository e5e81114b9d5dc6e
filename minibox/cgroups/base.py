"""What both cgroup versions share: the interface, the stats, and the file plumbing.

A cgroup is a directory in a cgroup filesystem (cgroups(7)). mkdir(2) creates one, writing a
PID into its `cgroup.procs` moves that process in, writing to its control files sets limits,
and rmdir(2) removes it once no process is left. There is no cgroup syscall: everything below
is open/read/write/mkdir/rmdir on files under /sys/fs/cgroup.
"""
import errno
import os
import time
from collections import namedtuple

from minibox.cgroups import grace
from minibox.cgroups.limits import CONTROLLER_FLAGS, Limits, format_size


# One control file to write: where, what, and the file that does the same in the other version;
# `field`, for a file only some kernels have (BFQ's weights, a huge page size): what asked for it.
LimitFile = namedtuple("LimitFile", "directory name value twin field", defaults=(None,))


class CgroupError(Exception):
    """A cgroup could not be created, configured or removed; the message says which file."""


class Stats:
    """What the container used, read from its cgroup after it exited (or while it runs).
    None: this kernel doesn't count it (e.g. memory.peak before Linux 5.19)."""

    def __init__(self, memory_peak, cpu_seconds, pids_peak):
        self.memory_peak = memory_peak  # bytes, the highest memory charge seen
        self.cpu_seconds = cpu_seconds  # CPU time of every process that ever ran in it
        self.pids_peak = pids_peak  # the most processes alive at once

    def describe(self) -> str:
        memory = "n/a" if self.memory_peak is None else format_size(self.memory_peak)
        cpu = "n/a" if self.cpu_seconds is None else f"{self.cpu_seconds:.2f} s"
        pids = "n/a" if self.pids_peak is None else str(self.pids_peak)
        return f"peak memory {memory}, CPU time {cpu}, max pids {pids}"


class Cgroup:
    """One container's cgroup. v1.V1Cgroup and v2.V2Cgroup fill in the files they use.

    paths() is known before create(), so the caller can record the directories in its ledger
    first: a crash between mkdir and the ledger write would otherwise leak them.
    """

    version: int

    def paths(self) -> list[str]:
        raise NotImplementedError

    def groups(self) -> list[str]:
        """The shared `minibox/` directories above paths(), made on first use and removed
        with the last container in them (remove_cgroup_dirs). None ([]) with
        --cgroup-parent: that directory is the user's."""
        return [] if self.custom_parent else list(dict.fromkeys(map(os.path.dirname, self.paths())))

    def create(self, limits: Limits) -> None:
        """mkdir(2) the cgroup and write the limits. Refuses before making anything when the
        host lacks a controller the limits need; on any later failure removes what it made
        (only that: an existing directory of the same name belongs to someone else)."""
        self._check(limits)
        self._made = []
        try:
            for attempt in range(3):
                try:
                    self._make_dirs(limits)
                    break
                except FileNotFoundError:
                    # Another runtime removed the empty `minibox/` group between our makedirs
                    # and our mkdir (it had just released its last container): make it again.
                    continue
            else:
                raise CgroupError(f"cannot create cgroup {self.paths()[0]}: its group keeps "
                                  "disappearing")
            self.set_limits(limits)
            self._confine_devices(limits)
        except BaseException:
            remove_cgroup_dirs(self._made)
            raise

    def plan(self, limits: Limits) -> list[str]:
        """What create() does, for --explain: each mkdir, then each limit with its twin; or
        why create() will refuse (a limit whose controller this host lacks has no file)."""
        try:
            self._check(limits)
        except CgroupError as error:
            return [f"refused: {error}"]
        twin = 2 if self.version == 1 else 1
        return [f"mkdir {path}" for path in self.paths()] + [
            f"echo {limit.value} > {os.path.join(limit.directory, limit.name)}"
            f"   (v{twin}: {limit.twin})"
            for limit in self.limit_files(limits)
        ]

    def _mkdir(self, path: str) -> None:
        """mkdir(2) one leaf; the kernel fills it with the controllers' files at once."""
        if path in self._made:
            return  # made before create() had to retry
        try:
            os.mkdir(path)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise CgroupError(f"cannot create cgroup {path}: {error.strerror}") from None
        self._made.append(path)

    def _check(self, limits: Limits) -> None:
        raise NotImplementedError

    def _make_dirs(self, limits: Limits) -> None:
        raise NotImplementedError

    def limit_files(self, limits: Limits) -> list["LimitFile"]:
        """The control files that enforce `limits`, in the order they must be written."""
        raise NotImplementedError

    def _confine_devices(self, limits: Limits) -> None:
        """Enforce limits.devices where no control file can (v2's eBPF program); v1 writes
        them with the other limits."""

    def add(self, pid: int) -> None:
        """Move `pid` (all its threads) into the cgroup: write it to every `cgroup.procs`."""
        for path in self.paths():
            try:
                write(path, "cgroup.procs", pid)
            except CgroupError as error:
                # A real-time process inherits its policy from the caller (sched(7)); with
                # CONFIG_RT_GROUP_SCHED the kernel refuses it a cpu cgroup whose
                # cpu.rt_runtime_us is 0, as a new one's is (sched_rt_can_attach: EINVAL).
                if os.sched_getscheduler(pid) in (os.SCHED_FIFO, os.SCHED_RR):
                    raise CgroupError(f"{error}: the process runs under a real-time policy "
                                      "(SCHED_FIFO/SCHED_RR, inherited from the caller), which "
                                      "a new cpu cgroup has no time for; run minibox under "
                                      "SCHED_OTHER") from None
                raise
        grace.finish()  # the move found the grace period passed (grace.py): stop paying it

    def pids(self) -> list[int]:
        """The processes in the cgroup now (`cgroup.procs`; v1's `tasks` would list threads)."""
        text = read(self.paths()[0], "cgroup.procs")
        return [int(pid) for pid in text.split()]

    def stats(self) -> Stats:
        raise NotImplementedError

    def oom_kills(self) -> int:
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        """Is the freezer holding every process (what `state` reports as paused)?"""
        raise NotImplementedError

    def set_limits(self, limits: Limits) -> None:
        """Change the limits of a cgroup in use (runc's `update`): the same files as create().
        A file only some kernels have, missing here, is refused naming what asked for it
        (runc only passes on the ENOENT of its write)."""
        for limit in self.limit_files(limits):
            if limit.field and not os.path.exists(os.path.join(limit.directory, limit.name)):
                raise CgroupError(f"{limit.field}: this host cannot apply it, its kernel has no "
                                  f"{limit.name} in {limit.directory}")
            write(limit.directory, limit.name, limit.value)

    def thaw(self) -> None:
        raise NotImplementedError

    def destroy(self, timeout: float = 2.0) -> None:
        """rmdir(2) the cgroup. Nothing is killed here: in a PID namespace the kernel kills
        every process when PID 1 dies, and the cgroup empties as they are reaped."""
        remove_cgroup_dirs(self.paths(), timeout, self.groups())


class NoCgroup(Cgroup):
    """No cgroup at all, for rootless mode: a user may only make cgroups in a subtree
    delegated to it, and minibox uses none (rootless.check_spec refuses limits). The
    container's processes stay in the caller's cgroups: nothing to limit, count or remove."""

    version = 0
    custom_parent = False

    def paths(self) -> list[str]:
        return []

    def _check(self, limits: Limits) -> None:
        pass

    def _make_dirs(self, limits: Limits) -> None:
        pass

    def limit_files(self, limits: Limits) -> list["LimitFile"]:
        return []

    def stats(self) -> Stats:
        return Stats(memory_peak=None, cpu_seconds=None, pids_peak=None)

    def oom_kills(self) -> int:
        return 0


def refuse_missing(needed: set[str], present, version: int) -> None:
    """Raise naming each controller the limits need but this host doesn't offer."""
    missing = sorted(needed - set(present))
    if missing:
        names = ", ".join(f"{name!r} (for {CONTROLLER_FLAGS[name]})" for name in missing)
        raise CgroupError(f"this host lacks the cgroup v{version} controller {names}")


def write(directory: str, name: str, value) -> None:
    """Write one control file. The kernel validates the value and answers with errno."""
    path = os.path.join(directory, name)
    try:
        with open(path, "w") as control:
            control.write(str(value))
    except OSError as error:
        raise CgroupError(f"cannot write {value!r} to {path}: {error.strerror}") from None


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as control:
        return control.read()


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """Parse a flat-keyed file such as memory.events or cpu.stat: one "key value" per line."""
    pairs = (line.split() for line in read(directory, name).splitlines())
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2}


def read_int(directory: str, name: str) -> int | None:
    """An integer file, or None when this kernel doesn't have it (e.g. pids.peak before 6.x)."""
    try:
        return int(read(directory, name))
    except FileNotFoundError:
        return None


def wait_for(condition, timeout: float) -> bool:
    """Poll `condition()` with growing sleeps; cgroup state changes are asynchronous.
    Returns whether it became true before `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def remove_cgroup_dirs(paths: list[str], timeout: float = 2.0, groups=()) -> None:
    """rmdir the given cgroup directories, deepest first, retrying while processes drain;
    then each of `groups` if that was the last container in it.

    rmdir fails with EBUSY while any task is still in the cgroup, and a killed process only
    leaves once the kernel has finished its exit, so it is retried until `timeout`. A
    directory already gone is fine: this is also how `minibox gc` removes what a killed
    runtime left behind. A group still holding other containers' cgroups answers EBUSY
    (cgroupfs) or ENOTEMPTY and stays.
    """
    for path in sorted(set(paths), key=lambda p: p.count("/"), reverse=True):
        if not wait_for(lambda: _rmdir(path), timeout):
            raise CgroupError(
                f"cannot remove cgroup {path}: still busy after {timeout:g} s"
                f" (processes left: {_procs(path)})"
            )
    for group in groups:
        try:
            os.rmdir(group)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                raise CgroupError(f"cannot remove cgroup {group}: {error.strerror}") from None


def remove_orphans(groups: list[str], known_ids, min_age: float = 60.0) -> list[str]:
    """`minibox gc`: remove container cgroups in `groups` that no container directory knows
    (their state was deleted by hand, or belonged to a state root that is gone).

    Only empty ones older than `min_age` go: a live container's cgroup holds its processes
    (rmdir says EBUSY), and a young one may be a run between its mkdir and its ledger."""
    removed = []
    for group in groups:
        try:
            names = [entry.name for entry in os.scandir(group) if entry.is_dir()]
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(group, name)
            if name in known_ids or time.time() - os.stat(path).st_mtime < min_age:
                continue
            try:
                os.rmdir(path)
                removed.append(path)
            except OSError as error:
                if error.errno not in (errno.ENOENT, errno.EBUSY):
                    raise CgroupError(f"cannot remove cgroup {path}: {error.strerror}") from None
        remove_cgroup_dirs([], groups=[group])
    return removed


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno == errno.EBUSY:
            return False
        raise CgroupError(f"cannot remove cgroup {path}: {error.strerror}") from None
    return True


def _procs(path: str) -> str:
    try:
        return " ".join(read(path, "cgroup.procs").split()) or "none"
    except OSError:
        return "unknown"
