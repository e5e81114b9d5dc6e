"""The cgroup backend on this host's real cgroups (v1 here; v2 inside a minivm guest).

Each test puts real processes into a real cgroup and checks what the kernel reports: the
control files, /proc/<pid>/cgroup, OOM kills, CPU throttling, frozen tasks. No directory may be
left behind.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from minibox.cgroups.base import wait_for
from minibox.cgroups import (CgroupError, Limits, cgroup_for, cgroup_version, grace,
                             remove_cgroup_dirs, remove_orphans, start_grace_period, v1, v2)

pytestmark = pytest.mark.root

# The file that holds each limit, per cgroup version, and how the kernel shows the value.
LIMIT_FILES = {
    1: {"memory": ("memory.limit_in_bytes", "33554432"), "cpu": ("cpu.cfs_quota_us", "50000"),
        "shares": ("cpu.shares", "512"), "pids": ("pids.max", "20")},
    2: {"memory": ("memory.max", "33554432"), "cpu": ("cpu.max", "50000 100000"),
        "shares": ("cpu.weight", "20"), "pids": ("pids.max", "20")},
}


@pytest.fixture
def cgroup():
    """A fresh cgroup with a unique id; after the test, its directories must be gone."""
    group = cgroup_for("test-" + uuid.uuid4().hex[:12])
    yield group
    for pid in _pids_or_none(group):
        os.kill(pid, signal.SIGKILL)  # only processes this test started and put there
    group.destroy()
    assert [path for path in group.paths() if os.path.exists(path)] == []


def _pids_or_none(group):
    try:
        return group.pids()
    except FileNotFoundError:
        return []


def start_in(group, *argv):
    """Start argv with its process already in `group` before exec (preexec_fn runs in the
    child after fork(2), before execve(2)), as the runtime does for PID 1."""
    return subprocess.Popen(argv, preexec_fn=lambda: group.add(os.getpid()))


def controller_dir(group, name):
    """The directory holding `name`'s files (v1: that controller's hierarchy)."""
    return group.dirs[name] if group.version == 1 else group.path


def test_limits_land_in_the_kernels_files(cgroup):
    cgroup.create(Limits(memory=32 << 20, cpus=0.5, cpu_shares=512, pids=20))
    for controller, (name, value) in LIMIT_FILES[cgroup.version].items():
        directory = controller_dir(cgroup, "cpu" if controller == "shares" else controller)
        with open(os.path.join(directory, name)) as control:
            assert control.read().strip() == value, name


def test_a_process_added_before_exec_is_in_every_hierarchy(cgroup):
    cgroup.create(Limits())
    sleeper = start_in(cgroup, "sleep", "30")
    assert cgroup.pids() == [sleeper.pid]
    with open(f"/proc/{sleeper.pid}/cgroup") as membership:
        lines = membership.read().splitlines()
    leaf = os.path.basename(cgroup.paths()[0])
    placed = [line for line in lines if line.endswith("/minibox/" + leaf)]
    assert len(placed) == (len(set(cgroup.dirs.values())) if cgroup.version == 1 else 1)
    sleeper.kill()
    sleeper.wait()


def test_memory_hog_is_oom_killed_and_counted(cgroup):
    cgroup.create(Limits(memory=32 << 20))
    hog = start_in(cgroup, sys.executable, "-c", "grow = b'x' * (200 << 20)")
    assert hog.wait(timeout=30) == -signal.SIGKILL
    assert cgroup.oom_kills() == 1
    assert 24 << 20 < cgroup.stats().memory_peak <= 32 << 20


def test_fork_bomb_is_held_at_the_pids_limit(cgroup):
    cgroup.create(Limits(pids=20))
    bomb = start_in(cgroup, "sh", "-c", "for i in $(seq 60); do sleep 10 & done 2>/dev/null; wait")
    events = os.path.join(controller_dir(cgroup, "pids"), "pids.events")
    deadline = time.monotonic() + 10
    while _max_events(events) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _max_events(events) > 0  # the kernel refused fork(2) at least once
    assert len(cgroup.pids()) <= 20
    peak = cgroup.stats().pids_peak
    assert peak is None or peak == 20
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork
    bomb.kill()
    bomb.wait()


def _max_events(path):
    with open(path) as events:
        return int(dict(line.split() for line in events)["max"])


BUSY_LOOP = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"


def test_half_a_cpu_gets_half_the_cpu_time(cgroup):
    cgroup.create(Limits(cpus=0.5))
    assert start_in(cgroup, sys.executable, "-c", BUSY_LOOP).wait(timeout=10) == 0
    assert 0.55 < cgroup.stats().cpu_seconds < 0.95  # 0.75 s of CPU in 1.5 s of wall time
    with open(os.path.join(controller_dir(cgroup, "cpu"), "cpu.stat")) as stat:
        assert int(dict(line.split() for line in stat)["nr_throttled"]) > 0


def test_frozen_processes_get_no_cpu_until_thawed(cgroup):
    cgroup.create(Limits())
    spinner = start_in(cgroup, sys.executable, "-c", "while True: pass")
    time.sleep(0.2)
    cgroup.freeze()
    frozen_at = _cpu_ticks(spinner.pid)
    time.sleep(0.3)
    assert _cpu_ticks(spinner.pid) == frozen_at
    cgroup.thaw()
    time.sleep(0.3)
    assert _cpu_ticks(spinner.pid) > frozen_at
    spinner.kill()
    spinner.wait()


def _cpu_ticks(pid):
    """utime + stime from proc(5) /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_destroy_waits_for_a_killed_process_to_drain(cgroup):
    cgroup.create(Limits())
    sleeper = start_in(cgroup, "sleep", "30")
    sleeper.kill()
    cgroup.destroy()  # at once, before the zombie is reaped
    assert not any(os.path.exists(path) for path in cgroup.paths())
    sleeper.wait()


def test_destroy_of_a_busy_cgroup_names_the_process(cgroup):
    cgroup.create(Limits())
    sleeper = start_in(cgroup, "sleep", "30")
    with pytest.raises(CgroupError, match=rf"still busy after 0.2 s \(processes left: {sleeper.pid}\)"):
        cgroup.destroy(timeout=0.2)
    sleeper.kill()
    sleeper.wait()


def test_a_value_the_kernel_refuses_leaves_nothing_behind(cgroup):
    with pytest.raises(CgroupError, match=r"cannot write -5 to .*pids\.max: Invalid argument"):
        cgroup.create(Limits(pids=-5))
    assert not any(os.path.exists(path) for path in cgroup.paths())


def test_cgroup_parent_places_the_cgroup_there():
    group = cgroup_for("test-" + uuid.uuid4().hex[:12], parent="minibox-test-parent/jobs")
    group.create(Limits())
    try:
        assert all("/minibox-test-parent/jobs/" in path for path in group.paths())
        assert all(os.path.isdir(path) for path in group.paths())
    finally:
        group.destroy()
        parents = [os.path.dirname(path) for path in group.paths()]
        remove_cgroup_dirs(parents + [os.path.dirname(parent) for parent in parents])
    assert not any(os.path.exists(os.path.dirname(path)) for path in group.paths())


@pytest.mark.skipif(cgroup_version() != 1, reason="v1 host only")
def test_v1_places_containers_under_the_runtimes_own_cgroup():
    with open("/proc/self/cgroup") as own:
        memory_own = next(line.split(":", 2)[2].strip() for line in own if ":memory:" in line)
    group = cgroup_for("abc")
    assert group.dirs["memory"].endswith(os.path.join(memory_own, "minibox", "abc"))


def test_the_grace_period_head_start_moves_the_runtime_nowhere(cgroup):
    """start_grace_period() keeps writing our PID into our own cgroup.procs: the kernel
    takes the migration lock but changes nothing, add() still moves the process it is
    given, and then the thread has ended (grace.finish)."""
    with open("/proc/self/cgroup") as own:
        before = own.read()
    own_procs = v2.own_procs() if cgroup_version() == 2 else v1.own_procs()
    with open(own_procs) as procs:
        assert str(os.getpid()) in procs.read().split()
    cgroup.create(Limits())
    threads_before = _threads()
    start_grace_period()
    assert _threads() == threads_before + 1
    time.sleep(3 * grace.INTERVAL)  # a few writes of our own PID
    process = subprocess.Popen(["sleep", "30"])
    try:
        cgroup.add(process.pid)
        assert cgroup.pids() == [process.pid]
        assert wait_for(lambda: _threads() == threads_before, timeout=1.0)  # the thread ended
        with open("/proc/self/cgroup") as own:
            assert own.read() == before
    finally:
        process.kill()
        process.wait()


def _threads():
    return len(os.listdir("/proc/self/task"))


def test_the_shared_group_goes_with_its_last_container():
    first, second = (cgroup_for("test-" + uuid.uuid4().hex[:12]) for _ in range(2))
    groups = first.groups()
    assert groups == second.groups() and all(os.path.basename(g) == "minibox" for g in groups)
    existed = {group: os.path.isdir(group) for group in groups}  # another container's, maybe
    first.create(Limits())
    second.create(Limits())
    first.destroy()
    assert all(os.path.isdir(group) for group in groups)  # the second container still in it
    second.destroy()
    for group in groups:
        assert os.path.isdir(group) == (existed[group] and bool(os.listdir(group)))


def test_a_cgroup_parent_given_by_the_user_is_never_removed():
    parent = "minibox-test-parent-" + uuid.uuid4().hex[:8]
    group = cgroup_for("test-" + uuid.uuid4().hex[:12], parent)
    assert group.groups() == []
    group.create(Limits())
    group.destroy()
    parents = {os.path.dirname(path) for path in group.paths()}
    assert all(os.path.isdir(p) for p in parents)
    remove_cgroup_dirs(list(parents))


def test_gc_removes_orphaned_cgroups_but_not_live_ones():
    orphan, live = (cgroup_for("test-" + uuid.uuid4().hex[:12]) for _ in range(2))
    orphan.create(Limits())
    live.create(Limits())
    sleeper = start_in(live, "sleep", "60")
    try:
        removed = remove_orphans(orphan.groups(), known_ids=set(), min_age=0)
        assert set(orphan.paths()) <= set(removed)  # (and any other empty leftover)
        assert all(os.path.isdir(path) for path in live.paths())  # EBUSY: it has a process
    finally:
        sleeper.kill()
        sleeper.wait()
        live.destroy()
        orphan.destroy()
