"""`minibox run` with resource limits, end to end on this host's real cgroups.

Each test runs the real CLI and checks what the kernel did: the exit status the OOM killer
left, the peak process count and CPU time the cgroup accounted, and that no cgroup directory
outlives its container, even when the runtime itself is SIGKILLed.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from minibox.cgroups import cgroup_for
from tests.harness import wait_until
from tests.helpers import assert_one_line_error

pytestmark = pytest.mark.root

SHORT_ID = r"[0-9a-f]{12}"


@pytest.fixture(autouse=True)
def collect_leftovers(minibox):
    """gc after each test: a failed test's runtime may have been killed by its timeout. It
    must find nothing after a test that passed -- else it would hide a leak from the
    cgroup check (tests/conftest.py), which runs after it."""
    yield
    collected = [line for line in minibox("gc").stdout.splitlines()
                 if not line.startswith("removed unused bridge")]  # the bridge stays on purpose
    assert collected == []


def leftover_cgroups(short_id):
    """Directories of the container `short_id` still in any cgroup hierarchy."""
    parents = {os.path.dirname(path) for path in cgroup_for("x").paths()}
    return [os.path.join(parent, name) for parent in parents if os.path.isdir(parent)
            for name in os.listdir(parent) if name.startswith(short_id)]


def stats_of(stderr):
    """Parse the --stats line: {"memory": "32 MiB", "cpu": 1.52, "pids": 20}."""
    match = re.search(r"peak memory (.+?), CPU time ([\d.]+) s, max pids (\d+|n/a)", stderr)
    assert match, stderr
    return {"memory": match[1], "cpu": float(match[2]), "pids": match[3]}


def test_memory_hog_is_oom_killed_with_one_line_and_exit_137(minibox):
    hog = "BEGIN { s = \"x\"; while (1) s = s s }"  # doubles a string until the limit
    result = minibox("run", "--rm", "-m", "32m", "busybox", "awk", hog, check=False)
    assert result.returncode == 137
    assert re.fullmatch(
        rf"minibox: container {SHORT_ID} was killed by the OOM killer \(memory limit 32 MiB\)\n",
        result.stderr)


def test_the_container_sees_its_own_cgroup_as_root(minibox):
    result = minibox("run", "--rm", "-m", "64m", "busybox", "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "4:memory:/" in lines or "0::/" in lines
    # Every hierarchy minibox placed the container in reads "/" from inside (cgroup_namespaces(7)).
    assert all(line.endswith(":/") for line in lines), lines


def test_fork_bomb_is_contained_and_the_host_keeps_working(minibox):
    # PID 1 lights the bomb, then becomes `sleep 3`; when it exits the kernel kills the rest.
    bomb = "bomb() { bomb | bomb & }; bomb 2>/dev/null; exec sleep 3"
    started = time.monotonic()
    result = minibox("run", "--rm", "--pids-limit", "20", "--stats", "busybox", "sh", "-c", bomb)
    assert result.returncode == 0, result.stderr
    assert stats_of(result.stderr)["pids"] == "20"  # pids.peak: the limit was hit and held
    assert time.monotonic() - started < 20
    assert subprocess.run(["true"]).returncode == 0


# 3 s of wall time, all CPU. `; true` keeps sh as PID 1: a lone command is exec'd, and busybox
# timeout execs `yes` in its own place, so `yes` would be PID 1 and ignore the SIGTERM
# (PID 1 only gets signals it has a handler for: pid_namespaces(7)).
SPIN_3S = ["busybox", "sh", "-c", "timeout 3 yes > /dev/null; true"]


@pytest.mark.slow
def test_half_a_cpu_gets_half_the_cpu_time(minibox):
    result = minibox("run", "--rm", "--stats", "--cpus", "0.5", *SPIN_3S)
    # The quota is a hard ceiling of 1.5 s; a busy host can only push it lower.
    assert 1.0 < stats_of(result.stderr)["cpu"] < 1.8, result.stderr


@pytest.mark.slow
def test_without_a_limit_the_loop_gets_a_whole_cpu(minibox):
    # The test suite itself keeps one CPU busy; a second one is what the loop needs.
    load, cpus = os.getloadavg()[0], len(os.sched_getaffinity(0))
    if load > cpus:
        pytest.skip(f"host too busy (load {load:.1f} on {cpus} CPUs) to give a loop a whole CPU")
    result = minibox("run", "--rm", "--stats", *SPIN_3S)
    assert stats_of(result.stderr)["cpu"] > 2.0, result.stderr  # well above --cpus 0.5's 1.5 s


@pytest.mark.slow
def test_no_cgroup_is_left_after_20_runs(minibox):
    ids = []
    for _ in range(20):
        # The hostname defaults to the short id: the container tells us who it was.
        result = minibox("run", "--rm", "-m", "64m", "--pids-limit", "50", "busybox", "hostname")
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    assert len(set(ids)) == 20
    assert [path for short_id in ids for path in leftover_cgroups(short_id)] == []


def test_gc_removes_the_cgroup_of_a_runtime_killed_by_sigkill(minibox):
    # --network none: gc would also report removing the then unused bridge
    runtime = minibox.popen("run", "-m", "64m", "--network", "none", "busybox", "sleep", "60",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        paths = _cgroup_paths_from_ledger(minibox)
        assert paths and all(os.path.isdir(path) for path in paths)
    finally:
        runtime.send_signal(signal.SIGKILL)  # the runtime we started, by its pid
        runtime.wait()
    result = minibox("gc")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"removed leftovers of {SHORT_ID}\n", result.stdout)
    assert [path for path in paths if os.path.exists(path)] == []


def _cgroup_paths_from_ledger(minibox, timeout=10):
    """Wait for the one container of `minibox` to record its cgroup and reach `running`."""
    def recorded():
        for name in minibox.container_dirs():
            directory = os.path.join(minibox.root, name)
            try:
                with open(os.path.join(directory, "state.json")) as state:
                    running = json.load(state)["status"] == "running"
                with open(os.path.join(directory, "ledger")) as ledger:
                    entries = [json.loads(line) for line in ledger]
            except (OSError, ValueError):
                continue
            if running:
                return next(entry["paths"] for entry in entries if entry["kind"] == "cgroup")
        return None
    return wait_until(recorded, timeout=timeout)


@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"),
                    reason="no cgroup v1 cpu hierarchy with real-time group scheduling here")
def test_a_real_time_caller_is_one_line_exit_125_and_nothing_is_left(minibox):
    """A caller under SCHED_FIFO (sched(7)) hands its policy to the init, which the kernel
    refuses a new v1 cpu cgroup (cpu.rt_runtime_us 0: EINVAL): one line saying why."""
    result = minibox("run", "--rm", "--network", "none", "busybox", "true", check=False,
                     preexec_fn=lambda: os.sched_setscheduler(0, os.SCHED_FIFO,
                                                              os.sched_param(1)))
    assert_one_line_error(result, 125, "minibox: cannot write")
    assert "runs under a real-time policy" in result.stderr
    assert minibox.container_dirs() == []


@pytest.mark.parametrize("flags, message", [
    (["-m", "10x"], "-m/--memory: invalid size '10x'"),
    (["-m", "0"], "-m/--memory: minimum memory limit allowed is 6 MiB (got 0 B)"),
    (["--cpus", "0"], "--cpus: range of CPUs is from 0.01 to"),
    (["--cpus", "-1"], "--cpus: range of CPUs is from 0.01 to"),
    (["--cpus", str(len(os.sched_getaffinity(0)) + 1)], "--cpus: range of CPUs is from 0.01 to"),
    (["--pids-limit", "0"], "--pids-limit: must be a positive number of processes (got 0)"),
])
def test_bad_limits_are_one_line_exit_125_and_nothing_is_created(minibox, flags, message):
    parent = f"minibox-test-{os.getpid()}"
    result = minibox("run", "--cgroup-parent", parent, *flags, "busybox", "true", check=False)
    assert_one_line_error(result, 125, f"minibox: {message}")
    assert result.stdout == ""
    assert minibox.container_dirs() == []
    assert not any(os.path.exists(os.path.join(os.path.dirname(os.path.dirname(path)), parent))
                   for path in cgroup_for("x").paths())
