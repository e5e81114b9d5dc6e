"""Docker-style lifecycle on real containers: run -d, ps, logs, exec, stop, kill, rm,
inspect, restart policies, gc -- and nothing left behind (the `minibox` fixture checks
processes, mounts, directories and cgroups after every test)."""
import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import assert_one_line_error, converse

from tests.harness import leftovers, snapshot, wait_until

pytestmark = pytest.mark.root

NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup")


def namespace_inodes(pid):
    return {kind: os.stat(f"/proc/{pid}/ns/{kind}").st_ino for kind in NAMESPACES}


def test_run_detached_returns_at_once_holding_none_of_the_callers_stdio(minibox):
    # communicate() reads stdout and stderr to EOF: it only returns when no process -- not
    # the monitor, not the container -- holds the caller's pipes any more.
    started = time.monotonic()
    caller = minibox.popen("run", "-d", "busybox", "sleep", "30",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = caller.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert caller.returncode == 0, err
    container_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id)
    current = minibox.state(container_id)
    assert current["status"] == "running"
    pid, monitor = current["pid"], current["monitor_pid"]
    assert namespace_inodes(pid)["pid"] != namespace_inodes(os.getpid())["pid"]
    # A session of its own (no controlling terminal), and not its leader (it never gets one).
    assert os.getsid(monitor) not in (os.getsid(0), monitor)
    assert os.readlink(f"/proc/{monitor}/fd/1") == "/dev/null"


def test_ps_shows_status_command_and_pid(minibox):
    running = minibox.run_detached("--name", "sleeper", "busybox", "sleep", "30")
    exited = minibox.run_detached("busybox", "sh", "-c", "exit 3")
    wait_until(lambda: minibox.state(exited)["status"] == "stopped")
    ps = minibox("ps").stdout
    assert ps.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    line = minibox.status(running)
    assert "sleeper" in line and '"sleep 30"' in line and "Up " in line
    assert str(minibox.state(running)["pid"]) in line.split()
    assert exited[:12] not in ps
    assert re.search(r"Exited \(3\) .* ago", minibox.status(exited))
    assert sorted(minibox("ps", "-aq").stdout.split()) == sorted([running[:12], exited[:12]])
    assert minibox("ps", "-q").stdout.split() == [running[:12]]


def test_names_are_unique_and_id_prefixes_resolve(minibox):
    first = minibox.run_detached("--name", "web", "busybox", "sleep", "30")
    duplicate = minibox("run", "-d", "--name", "web", "busybox", "true", check=False)
    assert_one_line_error(duplicate, 125, "minibox: ", "already in use")
    assert minibox("inspect", first[:5]).returncode == 0
    assert json.loads(minibox("inspect", "web").stdout)[0]["Id"] == first
    missing = minibox("inspect", "nosuchcontainer", check=False)
    assert missing.returncode == 125 and "no such container" in missing.stderr


def test_logs_survive_the_container_and_tail_follow_work(minibox):
    container_id = minibox.run_detached("busybox", "sh", "-c",
                                        "echo one; echo two >&2; echo three; exit 5")
    wait_until(lambda: minibox.state(container_id)["status"] == "stopped")
    assert minibox.state(container_id)["exit_code"] == 5
    assert minibox("logs", container_id).stdout.split() == ["one", "two", "three"]
    assert minibox("logs", "--tail", "1", container_id).stdout == "three\n"
    follower = minibox.run_detached("busybox", "sh", "-c",
                                    "for i in 1 2 3; do echo tick$i; sleep 0.3; done")
    followed = minibox("logs", "-f", follower, timeout=10)
    assert followed.stdout.split() == ["tick1", "tick2", "tick3"]
    assert minibox.state(follower)["status"] == "stopped"


def test_exec_joins_namespaces_and_cgroups_and_propagates_the_exit_code(minibox):
    container_id = minibox.run_detached("busybox", "sleep", "60")
    pid1 = minibox.state(container_id)["pid"]
    background = minibox.popen("exec", container_id, "sleep", "31")
    try:
        def exec_pid():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        if cmdline.read() == b"sleep\x0031\x00":
                            return int(pid)
                except OSError:
                    pass
        pid = wait_until(exec_pid)
        assert namespace_inodes(pid) == namespace_inodes(pid1)
        with open(f"/proc/{pid}/cgroup") as mine, open(f"/proc/{pid1}/cgroup") as theirs:
            assert mine.read() == theirs.read()
        assert os.readlink(f"/proc/{pid}/root") == os.readlink(f"/proc/{pid1}/root")
        ps = minibox("exec", container_id, "ps").stdout
        assert re.search(r"^\s*1 .*sleep 60", ps, re.M) and "sleep 31" in ps
    finally:
        background.kill()
        background.wait()
    assert minibox("exec", container_id, "sh", "-c", "exit 42", check=False).returncode == 42
    argv = minibox("exec", container_id, "sh", "-c", 'printf "%s|" "$@"', "_", "a b", "c")
    assert argv.stdout == "a b|c|"
    env = minibox("exec", "-e", "GREETING=hi there", "-w", "/tmp", container_id,
                  "sh", "-c", 'echo "$GREETING"; pwd; hostname').stdout.split("\n")
    assert env[:3] == ["hi there", "/tmp", container_id[:12]]
    missing = minibox("exec", container_id, "nosuchcommand", check=False)
    assert missing.returncode == 127


def test_exec_with_a_terminal(minibox):
    pexpect = pytest.importorskip("pexpect")
    container_id = minibox.run_detached("busybox", "sleep", "60")
    import sys
    shell = pexpect.spawn(sys.executable, ["-m", "minibox", "exec", "-it", container_id, "sh"],
                          env=minibox.env, timeout=10, encoding="utf-8")
    shell.expect("# ")
    converse(shell, "tty; echo $((6 * 7))", [r"/dev/pts/\d+", "42"], exit_status=3)


def test_stop_sends_term_then_kill(minibox):
    # PID 1 without a SIGTERM handler ignores SIGTERM (pid_namespaces(7)): killed at timeout.
    stubborn = minibox.run_detached("busybox", "sleep", "60")
    started = time.monotonic()
    minibox("stop", "-t", "1", stubborn)
    assert 0.9 < time.monotonic() - started < 8
    assert minibox.state(stubborn)["exit_code"] == 137
    polite = minibox.run_detached("busybox", "sh", "-c",
                                  "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    started = time.monotonic()
    minibox("stop", polite)
    assert time.monotonic() - started < 5
    assert minibox.state(polite)["exit_code"] == 0
    assert minibox("stop", polite).returncode == 0  # stopping a stopped one: nothing to do


def test_kill_sends_the_signal_and_refuses_a_stopped_container(minibox):
    container_id = minibox.run_detached("busybox", "sh", "-c",
                                        "trap 'exit 10' USR1; while :; do sleep 0.1; done")
    time.sleep(0.3)  # let sh install its trap
    minibox("kill", "-s", "USR1", container_id)
    wait_until(lambda: minibox.state(container_id)["status"] == "stopped")
    assert minibox.state(container_id)["exit_code"] == 10
    refused = minibox("kill", container_id, check=False)
    assert refused.returncode == 125 and "stopped" in refused.stderr
    bad = minibox("kill", "-s", "NOSUCHSIG", container_id, check=False)
    assert_one_line_error(bad, 125, "minibox: ")


def test_rm_refuses_a_running_container_unless_forced(minibox):
    container_id = minibox.run_detached("--name", "keep", "busybox", "sleep", "60")
    pid = minibox.state(container_id)["pid"]
    refused = minibox("rm", "keep", check=False)
    assert refused.returncode == 125 and "rm -f" in refused.stderr
    assert minibox.state(container_id)["status"] == "running" and os.path.exists(f"/proc/{pid}")
    minibox("rm", "-f", "keep")
    assert minibox.container_dirs() == []
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    minibox.run_detached("--name", "keep", "busybox", "true")  # the name is free again


def test_inspect_reports_config_state_pid_cgroups_and_mounts(minibox):
    container_id = minibox.run_detached("--name", "looked-at", "busybox", "sleep", "60")
    [info] = json.loads(minibox("inspect", "looked-at").stdout)
    pid = minibox.state(container_id)["pid"]
    assert info["Id"] == container_id and info["Name"] == "looked-at"
    assert info["State"]["Pid"] == pid and info["State"]["Status"] == "running"
    assert info["Config"]["Cmd"] == ["sleep", "60"]
    assert {m["Destination"] for m in info["Mounts"]} >= {"/", "/proc", "/dev", "/sys"}
    with open(f"/proc/{pid}/cgroup") as cgroup:
        assert len(info["Cgroup"]) == len(cgroup.read().splitlines())
    address = minibox.state(container_id)["network"]["address"]  # --network bridge
    assert info["Addresses"] == [address]  # as the kernel's routing table in its netns says
    assert info["HostConfig"]["NetworkMode"] == "bridge"
    assert info["NetworkSettings"] == {"IPAddress": address, "Ports": {}}


def test_restart_on_failure_restarts_n_times_then_stops(minibox):
    container_id = minibox.run_detached("--restart", "on-failure:2", "busybox", "sh", "-c",
                                        "echo attempt; exit 1")
    wait_until(lambda: minibox.state(container_id)["status"] == "stopped"
               and minibox.state(container_id)["restarts"] == 2, timeout=15)
    time.sleep(1)  # a third restart would have come by now
    current = minibox.state(container_id)
    assert (current["status"], current["restarts"], current["exit_code"]) == ("stopped", 2, 1)
    assert minibox("logs", container_id).stdout.split() == ["attempt"] * 3
    assert re.search(r"Exited \(1\).*\s2\s*$", minibox.status(container_id))


def test_a_restarted_container_blocks_no_signal(minibox):
    """A restart is forked by a monitor that came back as the runtime with the forwarded
    signals blocked (supervisor.py); the mask survives execve(2), so the init clears it."""
    container_id = minibox.run_detached("--restart", "on-failure:1", "busybox", "sh", "-c",
                                        "grep SigBlk /proc/self/status; exit 1")
    wait_until(lambda: minibox.state(container_id)["restarts"] == 1
               and minibox.state(container_id)["status"] == "stopped", timeout=20)
    assert minibox("logs", container_id).stdout.split() == ["SigBlk:", "0000000000000000"] * 2


def test_restart_always_gets_a_fresh_pid_namespace_and_stop_ends_it(minibox):
    container_id = minibox.run_detached("--restart", "always", "busybox", "sh", "-c",
                                        "echo $$; sleep 0.2")
    wait_until(lambda: minibox.state(container_id)["restarts"] >= 2, timeout=15)
    assert set(minibox("logs", container_id).stdout.split()) == {"1"}  # PID 1 every time
    minibox("stop", "-t", "1", container_id)
    restarts = minibox.state(container_id)["restarts"]
    time.sleep(1)
    assert minibox.state(container_id)["restarts"] == restarts
    assert minibox.state(container_id)["status"] == "stopped"


def test_restart_policy_and_detach_flags_are_checked(minibox):
    for args, message in ((("--restart", "sometimes"), "invalid restart policy"),
                          (("--restart", "always", "--rm"), "cannot be combined"),
                          (("-d", "-t"), "-d cannot be combined")):
        result = minibox("run", *args, "busybox", "true", check=False)
        assert_one_line_error(result, 125, "minibox: ", message)
    assert minibox.container_dirs() == []


@pytest.mark.slow
def test_twenty_detached_containers_in_parallel_leave_nothing(minibox):
    before = snapshot()
    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(lambda i: minibox.run_detached("--name", f"par{i}", "busybox",
                                                           "sleep", "60"), range(20)))
    assert len(set(ids)) == 20
    pids = [minibox.state(i)["pid"] for i in ids]
    assert len(minibox("ps", "-q").stdout.split()) == 20
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda i: minibox("stop", "-t", "0", i), ids))
    assert all(minibox.state(i)["exit_code"] == 137 for i in ids)
    minibox("rm", *ids)
    assert minibox("ps", "-aq").stdout == ""
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert leftovers(before, [minibox]) == {}


def test_sigkill_of_the_monitor_then_gc_leaves_nothing(minibox):
    before = snapshot()
    removed = minibox.run_detached("--rm", "busybox", "sleep", "60")
    kept = minibox.run_detached("busybox", "sleep", "60")
    for container_id in (removed, kept):
        current = minibox.state(container_id)
        os.kill(current["monitor_pid"], signal.SIGKILL)
        # The init dies with its parent (PR_SET_PDEATHSIG), and with it the PID namespace.
        wait_until(lambda: not os.path.exists(f"/proc/{current['pid']}"))
    gc = minibox("gc").stdout
    assert removed[:12] in gc and kept[:12] in gc
    assert minibox.container_dirs() == [kept]  # kept for inspection, as without --rm
    assert re.search(r"Exited \(255\)", minibox.status(kept))
    minibox("rm", kept)
    assert leftovers(before, [minibox]) == {}


def test_stats_reads_cpu_memory_and_pids_from_the_cgroup(minibox):
    busy = minibox.run_detached("--name", "busy", "-m", "32m", "busybox", "sh", "-c",
                                "while :; do :; done")
    idle = minibox.run_detached("--name", "idle", "busybox", "sleep", "60")
    rows = {line.split()[1]: line.split() for line in
            minibox("stats", "--no-stream").stdout.splitlines()[1:]}
    assert set(rows) == {"busy", "idle"}
    assert rows["busy"][0] == busy[:12] and rows["idle"][0] == idle[:12]
    assert float(rows["busy"][2].rstrip("%")) > 20  # a spinning shell (2 CPUs, busy host)
    assert float(rows["idle"][2].rstrip("%")) < 10
    assert rows["busy"][-4:] == ["/", "32", "MiB", "1"]  # limit 32 MiB, one process
