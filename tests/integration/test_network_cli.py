"""`minibox run --network/--ip/-p`, `minibox network`, `minibox gc`: real containers.

Every test runs inside a private network namespace (the `host_netns` fixture), so "the
host" here is that namespace: the bridge, the veths and the published ports never appear
on the real host. Facts are checked with iproute2, /proc and busybox, not with minibox.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from minibox import bridge, network, shared, state
from tests.harness import container_dirs, wait_until
from tests.helpers import assert_one_line_error

pytestmark = pytest.mark.root

SITE = ("mkdir -p /www && echo hello from $(hostname) > /www/index.html"
        " && exec httpd -f -p 80 -h /www")


@pytest.fixture
def root(host_netns, minibox):
    """The test's private state root (conftest's minibox), inside the private netns."""
    return Path(minibox.root)


@pytest.fixture
def background(root, minibox):
    """Start `minibox run ...` without waiting; every runtime is killed at the end."""
    started = []

    def start(*args):
        started.append(minibox.popen("run", *args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for runtime in started:
        runtime.kill()
        runtime.communicate()


def container_states(root):
    states = []
    for name in sorted(os.listdir(root)) if root.exists() else []:
        try:
            states.append(json.loads((root / name / "state.json").read_text()))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            continue
    return states


def wait_running(root, name, timeout=30):
    return wait_until(lambda: next((current for current in container_states(root)
                                    if current.get("name") == name
                                    and current.get("status") == "running"), None),
                      timeout=timeout, what=f"container {name} to start")


def wait_listening(pid, port, timeout=10):
    """Until something listens on TCP `port` in the netns of `pid` (/proc/PID/net/tcp*)."""
    wait_until(lambda: listening(port, pid), timeout=timeout,
               what=f"something to listen on port {port}")


def listening(port, pid="self"):
    lines = [line for table in ("tcp", "tcp6")
             for line in open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]]
    return any(int(l.split()[1].rsplit(":", 1)[1], 16) == port and l.split()[3] == "0A"
               for l in lines)


def stop(runtime, current):
    """Kill the container's PID 1 (as `docker kill` would); its runtime tears down and exits."""
    os.kill(current["pid"], signal.SIGKILL)
    runtime.wait(timeout=30)


def ip(*argv):
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=True).stdout


def veths():
    return sorted(line.split(": ")[1].split("@")[0]
                  for line in ip("-o", "link", "show", "type", "veth").splitlines())


def leases():
    """{address: container id}, read from the pool's lease files."""
    pool = bridge.address_pool().directory
    return ({path.name: path.read_text() for path in pool.iterdir() if path.name != "subnet"}
            if pool.exists() else {})


def ledger(root, container_id):
    lines = (root / container_id / "ledger").read_text().splitlines()
    return [json.loads(line) for line in lines]


def now_in_ticks():
    """Clock ticks since boot: the unit of a process's start time (proc(5), stat field 22)."""
    with open("/proc/uptime") as uptime:
        return int(float(uptime.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def netns_in_use(inode, born_before):
    """Does a process that started before `born_before` still sit in the netns `inode`?

    The start-time filter matters on a busy machine: nsfs hands a dead namespace's inode
    number to the next new namespace, which may belong to anyone.
    """
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (os.stat(f"/proc/{pid}/ns/net").st_ino == inode
                    and shared.process_start_time(pid) <= born_before):
                return True
        except (FileNotFoundError, PermissionError, TypeError):
            continue  # gone while we looked (TypeError: no start time any more)
    return False


def test_two_containers_talk_over_the_bridge(root, background, minibox):
    server = background("--rm", "--name", "web", "busybox", "sh", "-c", SITE)
    web = wait_running(root, "web")
    wait_listening(web["pid"], 80)
    address = web["network"]["address"]
    assert web["network"]["mode"] == "bridge" and address.startswith("10.199.0.")

    client = minibox("run", "--rm", "--name", "client", "busybox", "sh", "-c",
                     f"wget -q -O - http://{address}/; ip -4 -o addr show eth0; cat /etc/hosts")
    assert client.returncode == 0, client.stderr
    page, inet, *hosts = client.stdout.splitlines()
    assert page == "hello from web"
    own = inet.split("inet ")[1].split("/")[0]
    assert own != address and f"{own}\tclient" in hosts
    # /etc/hosts is a bind mount, not a file in the writable layer `minibox commit` packs
    assert not (root / web["id"] / "upper" / "etc" / "hosts").exists()
    stop(server, web)


def test_host_fetches_a_page_through_a_published_port(root, background):
    server = background("--rm", "--name", "pub", "-p", "18080:80", "busybox", "sh", "-c", SITE)
    web = wait_running(root, "pub")
    wait_listening(web["pid"], 80)
    assert web["network"]["ports"] == ["127.0.0.1:18080->80/tcp"]
    assert listening(18080)
    with urllib.request.urlopen("http://127.0.0.1:18080/", timeout=10) as response:
        assert response.read() == b"hello from pub\n"
    (proxy,) = [e for e in ledger(root, web["id"]) if e["kind"] == "proxy"]
    assert shared.process_alive(proxy["pid"], proxy["start_time"])

    stop(server, web)
    assert not shared.process_alive(proxy["pid"], proxy["start_time"])
    assert not listening(18080)
    assert veths() == [] and leases() == {}


def rss_kib(pid):
    """The process's resident set, all of it (shared libraries too), as the kernel counts
    it: proc(5), /proc/<pid>/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Rss:"))


def test_a_foreground_run_waits_in_a_bare_interpreter_of_at_most_10_mib(root, background,
                                                                        minibox):
    """The foreground `minibox run`, on the bridge with -p: after a second as the runtime it
    waits lean (monitor.run_foreground), then comes back to tear down and exits with the
    command's code. Issue 19's target: 10 MiB of RSS."""
    runtime = background("--rm", "--name", "lean", "-p", "18092:80", "busybox", "sh", "-c",
                         "httpd -p 80 -h /; while [ ! -e /done ]; do sleep 0.05; done; exit 3")
    wait_running(root, "lean")

    def waiting_lean():
        with open(f"/proc/{runtime.pid}/cmdline", "rb") as cmdline:
            return b"wait_then_resume" in cmdline.read()
    wait_until(waiting_lean, timeout=20, what="the foreground run waiting lean")
    assert rss_kib(runtime.pid) <= 10 * 1024
    assert listening(18092)
    minibox("exec", "lean", "touch", "/done")
    _, err = runtime.communicate(timeout=30)
    assert runtime.returncode == 3, err
    assert veths() == [] and leases() == {} and not listening(18092)


def test_a_terminal_and_a_published_port_are_served_lean_too(root, minibox):
    """`run -it -p`: the monitor relays the terminal (window size changes included) and
    serves the port from one loop in the bare interpreter (waiting.Loop): 10 MiB of Rss at
    most, as without -t; the command's exit code still comes back."""
    pexpect = pytest.importorskip("pexpect")
    child = minibox.spawn("run", "--rm", "-it", "--name", "tty", "-p", "18093:80", "busybox",
                          "sh")
    child.expect("# ")
    child.sendline("mkdir -p /www; echo from a terminal > /www/index.html; httpd -p 80 -h /www")
    wait_listening(wait_running(root, "tty")["pid"], 80)

    def waiting_lean():
        with open(f"/proc/{child.pid}/cmdline", "rb") as cmdline:
            return b"wait_then_resume" in cmdline.read()
    wait_until(waiting_lean, timeout=20, what="the foreground run -t waiting lean")
    assert rss_kib(child.pid) <= 10 * 1024
    with urllib.request.urlopen("http://127.0.0.1:18093/", timeout=10) as response:
        assert response.read() == b"from a terminal\n"
    child.setwinsize(33, 101)
    child.sendline("stty size; echo $((6*7))")
    child.expect("33 101")
    child.expect("42")
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert not listening(18093) and veths() == [] and leases() == {}


def test_network_none_sees_only_loopback(root, minibox):
    result = minibox("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                     "ls /sys/class/net; cat /etc/hosts")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "lo"
    assert "127.0.1.1\t" in result.stdout
    assert not bridge.address_pool().exists()  # no bridge, no lease table


def test_network_host_shares_the_hosts_namespace(root, minibox):
    ip("link", "add", "hostonly0", "type", "veth", "peer", "name", "hostonly1")
    result = minibox("run", "--rm", "--network", "host", "busybox", "sh", "-c",
                     "readlink /proc/self/ns/net; ls /sys/class/net")
    assert result.returncode == 0, result.stderr
    netns, *names = result.stdout.split()
    assert netns == os.readlink("/proc/self/ns/net")
    assert {"lo", "hostonly0", "hostonly1"} <= set(names)


def test_container_mode_shares_address_and_loopback(root, background, minibox):
    server = background("--rm", "--name", "base", "busybox", "sh", "-c", SITE)
    base = wait_running(root, "base")
    wait_listening(base["pid"], 80)
    result = minibox("run", "--rm", "--network", "container:base", "busybox", "sh", "-c",
                     "readlink /proc/self/ns/net; ip -4 -o addr show eth0; "
                     "wget -q -O - http://127.0.0.1/")
    assert result.returncode == 0, result.stderr
    netns, inet, page = result.stdout.splitlines()
    assert netns == os.readlink(f"/proc/{base['pid']}/ns/net")
    assert f"inet {base['network']['address']}/24" in inet
    assert page == "hello from base"  # base's httpd, reached over the shared lo
    assert len(leases()) == 1  # the joiner took no address of its own
    stop(server, base)


def test_container_mode_needs_a_running_container(root, minibox):
    result = minibox("run", "--rm", "--network", "container:nobody", "busybox", "true",
                     check=False)
    assert result.returncode == 125
    assert result.stderr == "minibox: no such container: nobody\n"


@pytest.mark.slow
def test_twenty_parallel_containers_then_no_leftovers(root, background, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    runtimes = [background("--rm", "--name", f"p{i}", "-p", f"{18100 + i}:80",
                           "-v", f"{gate}:/gate", "busybox", "sh", "-c",
                           "ip -4 -o addr show eth0; while [ ! -e /gate/go ]; do sleep 0.05; done")
                for i in range(20)]
    running = [wait_running(root, f"p{i}", timeout=120) for i in range(20)]
    addresses = {current["network"]["address"] for current in running}
    assert len(addresses) == 20
    assert sorted(leases()) == sorted(addresses)
    assert len(veths()) == 20
    namespaces = [os.stat(f"/proc/{current['pid']}/ns/net").st_ino for current in running]
    proxies = [entry for current in running for entry in ledger(root, current["id"])
               if entry["kind"] == "proxy"]
    assert len(proxies) == 20
    assert all(shared.process_alive(p["pid"], p["start_time"]) for p in proxies)

    born_before = now_in_ticks()
    (gate / "go").touch()
    seen_inside = set()
    for runtime in runtimes:
        out, err = runtime.communicate(timeout=60)
        assert runtime.returncode == 0, err
        seen_inside.add(out.split("inet ")[1].split("/")[0])
    assert seen_inside == addresses
    assert veths() == [] and leases() == {}
    assert not any(shared.process_alive(p["pid"], p["start_time"]) for p in proxies)
    assert not any(listening(18100 + i) for i in range(20))
    assert not any(netns_in_use(inode, born_before) for inode in namespaces)


def test_sigkill_of_the_runtime_then_gc_leaves_nothing(root, background, minibox):
    runtime = background("--rm", "--name", "doomed", "-p", "18090:80", "busybox", "sh", "-c", SITE)
    doomed = wait_running(root, "doomed")
    (proxy,) = [e for e in ledger(root, doomed["id"]) if e["kind"] == "proxy"]
    netns = os.stat(f"/proc/{doomed['pid']}/ns/net").st_ino
    born_before = now_in_ticks()
    runtime.kill()  # SIGKILL: no teardown at all; the init dies of PR_SET_PDEATHSIG
    runtime.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            shared.process_alive(proxy["pid"], proxy["start_time"])
            or netns_in_use(netns, born_before)):
        time.sleep(0.05)
    assert list(leases().values()) == [doomed["id"]]  # what gc is for

    result = minibox("gc")
    assert result.returncode == 0, result.stderr
    assert f"removed leftovers of {doomed['id'][:12]}" in result.stdout
    assert "removed unused bridge minibox0" in result.stdout
    assert veths() == [] and leases() == {}
    assert not bridge.address_pool().exists()
    assert subprocess.run(["ip", "link", "show", "minibox0"], capture_output=True).returncode != 0
    assert not shared.process_alive(proxy["pid"], proxy["start_time"]) and not listening(18090)
    assert not netns_in_use(netns, born_before)


def test_network_ls_and_rm(root, background, minibox):
    assert minibox("network", "ls").stdout.splitlines()[1:] == []
    server = background("--rm", "--name", "user", "busybox", "sleep", "60")
    user = wait_running(root, "user")
    listing = minibox("network", "ls").stdout.splitlines()
    assert listing[1].split() == ["minibox0", "bridge", "10.199.0.0/24", "10.199.0.1", "1"]

    busy = minibox("network", "rm", "minibox0", check=False)
    assert busy.returncode == 125
    assert busy.stderr == f"minibox: minibox0 is in use by container(s) {user['id'][:12]}\n"
    stop(server, user)
    removed = minibox("network", "rm", "minibox0")
    assert removed.returncode == 0 and removed.stdout == "minibox0\n"
    assert subprocess.run(["ip", "link", "show", "minibox0"], capture_output=True).returncode != 0
    assert minibox("network", "rm", "minibox0", check=False).returncode == 125


def assert_nothing_left(root, veths_before=()):
    # Directories, not states: a refused run's directory would hold a ledger but no state.json.
    assert container_dirs(root) == []
    assert veths() == list(veths_before)
    assert leases() == {}


@pytest.mark.parametrize("args, message", [
    (["-p", "80"], "bad -p '80': expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]"),
    (["-p", "8080:80/udp"], "bad -p '8080:80/udp': only tcp can be published"),
    (["-p", "99999:80"], "bad -p '99999:80': '99999' is not a port number (1-65535)"),
    (["--network", "bridged"],
     "bad --network 'bridged': expected one of bridge, none, host, container:ID"),
    (["--network", "none", "-p", "8080:80"], "-p needs --network bridge, not none"),
    (["--network", "host", "--ip", "10.199.0.9"], "--ip needs --network bridge, not host"),
    (["--ip", "10.199.0.1"], "minibox0: 10.199.0.1 is the bridge's gateway address"),
    (["--ip", "10.200.0.9"], "minibox0: 10.200.0.9 is not a usable address in 10.199.0.0/24"),
])
def test_bad_network_options(root, args, message, minibox):
    result = minibox("run", "--rm", *args, "busybox", "true", check=False)
    assert_one_line_error(result, 125, f"minibox: {message}")
    assert_nothing_left(root)


def test_busy_host_port(root, minibox):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 18095))
        squatter.listen()
        result = minibox("run", "--rm", "-p", "18095:80", "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr == ("minibox: cannot publish 127.0.0.1:18095->80/tcp: "
                             "host port 127.0.0.1:18095 is already in use\n")
    assert_nothing_left(root)


def test_subnet_exhausted(root, background, monkeypatch, minibox):
    monkeypatch.setenv(bridge.SUBNET_ENV, "10.199.0.0/30")  # room for one container
    server = background("--rm", "--name", "only", "busybox", "sleep", "60")
    only = wait_running(root, "only")
    result = minibox("run", "--rm", "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr.startswith("minibox: minibox0: no free address left in 10.199.0.0/30")
    assert [s["name"] for s in container_states(root)] == ["only"]
    assert veths() == [bridge.host_ifname(only["id"])]
    assert leases() == {"10.199.0.2": only["id"]}
    stop(server, only)


def test_foreign_minibox0(root, minibox):
    ip("link", "add", "minibox0", "type", "veth", "peer", "name", "squatter")
    result = minibox("run", "--rm", "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr.startswith("minibox: an interface named minibox0 already exists "
                                    "and minibox did not create it (kind veth")
    assert_nothing_left(root, veths_before=["minibox0", "squatter"])


def test_explain_narrates_the_network_steps(root, minibox):
    result = minibox("run", "--rm", "--explain", "-p", "18096:80", "busybox", "true")
    assert result.returncode == 0, result.stderr
    for expected in ("=> Connect the container to the bridge", "RTM_NEWLINK veth peer eth0",
                     "read:    veth(4), rtnetlink(7)  (code: minibox/bridge.py:",
                     "=> Write the container's /etc/hosts and /etc/hostname",
                     "=> Mount bind at /etc/hosts", "=> Mount bind at /etc/hostname",
                     "=> Bring up the loopback device"):
        assert expected in result.stderr
