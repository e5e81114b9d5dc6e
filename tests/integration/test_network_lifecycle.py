"""Networking across a container's whole life: `run -d`, `exec`, `inspect`, `stop`,
restarts and OCI `create` -- and nothing left behind (the `minibox` fixture also checks for
veths and leases of every container).

Every test runs in a private network namespace that plays the host (conftest's
`host_netns`), so the bridge, the veths and the published ports never reach the real host.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from minibox import bridge, shared, state

from tests.harness import leftovers, snapshot, wait_until
from .test_network_cli import SITE, leases, listening, rss_kib, wait_listening
from .test_oci import bundle, create, oci_state, set_args  # noqa: F401 (bundle: a fixture)

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def private_host(host_netns):
    """Set up before (and torn down after) the `minibox` fixture: its cleanup and leftover
    checks run in this namespace too."""


def fetch(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


def proxy_of(minibox, container_id):
    with open(os.path.join(minibox.root, container_id, "ledger")) as ledger:
        entries = [json.loads(line) for line in ledger]
    (proxy,) = [entry for entry in entries if entry["kind"] == "proxy"]
    return proxy


def test_detached_exec_inspect_then_stop_releases_veth_lease_and_proxy(minibox):
    container_id = minibox.run_detached("--name", "web", "-p", "18280:80", "busybox", "sh",
                                        "-c", SITE)
    current = minibox.state(container_id)
    address, pid = current["network"]["address"], current["pid"]
    wait_listening(pid, 80)
    assert fetch(18280) == "hello from web\n"
    # exec joins the container's netns: the same namespace, the veth's address on eth0.
    joined = minibox("exec", "web", "sh", "-c",
                     "readlink /proc/self/ns/net; ip -4 -o addr show eth0").stdout
    netns, inet = joined.splitlines()
    assert netns == os.readlink(f"/proc/{pid}/ns/net")
    assert f"inet {address}/24" in inet
    [info] = json.loads(minibox("inspect", "web").stdout)
    assert info["Addresses"] == [address]
    assert info["HostConfig"]["NetworkMode"] == "bridge"
    assert info["NetworkSettings"] == {"IPAddress": address, "Ports": {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18280"}]}}
    proxy = proxy_of(minibox, container_id)
    assert shared.process_alive(proxy["pid"], proxy["start_time"])

    minibox("stop", "-t", "1", "web")
    # stop returns once the monitor has torn down: everything is free at once
    assert not bridge.link_exists(bridge.host_ifname(container_id))
    assert leases() == {}
    assert not shared.process_alive(proxy["pid"], proxy["start_time"])
    assert not listening(18280)
    [info] = json.loads(minibox("inspect", "web").stdout)
    assert (info["State"]["Status"], info["Addresses"], info["NetworkSettings"]) == \
        ("stopped", [], {"IPAddress": "", "Ports": {}})


def test_a_restart_gets_a_new_netns_and_veth_but_keeps_address_and_proxy(minibox):
    # Each incarnation serves a page, prints its peer's (the host end's) ifindex and its
    # address, and exits after a moment: --restart always brings it back.
    script = ("mkdir -p /www; echo up > /www/index.html; httpd -p 80 -h /www; "
              "echo $(cat /sys/class/net/eth0/iflink) $(ip -4 -o addr show eth0); sleep 0.5")
    container_id = minibox.run_detached("--restart", "always", "-p", "18281:80", "busybox",
                                        "sh", "-c", script)
    first = minibox.state(container_id)
    proxy = proxy_of(minibox, container_id)
    wait_until(lambda: minibox.state(container_id)["restarts"] >= 2, timeout=20)
    assert wait_until(lambda: _try_fetch(18281), timeout=10) == "up\n"  # the same proxy
    assert proxy_of(minibox, container_id) == proxy
    assert shared.process_alive(proxy["pid"], proxy["start_time"])
    assert minibox.state(container_id)["pid"] != first["pid"]
    assert leases() == {first["network"]["address"]: container_id}

    minibox("stop", "-t", "0", container_id)
    lines = minibox("logs", container_id).stdout.splitlines()
    assert len(lines) >= 3
    host_ends = [line.split()[0] for line in lines]
    addresses = {line.split("inet ")[1].split("/")[0] for line in lines}
    assert len(set(host_ends)) == len(host_ends)  # a new veth pair for every init
    assert addresses == {first["network"]["address"]}
    assert not bridge.link_exists(bridge.host_ifname(container_id))
    assert leases() == {}
    assert not shared.process_alive(proxy["pid"], proxy["start_time"])


def _try_fetch(port):
    try:
        return fetch(port)
    except OSError:
        return None  # between two incarnations


def test_rm_force_of_a_running_container_releases_its_network(minibox):
    container_id = minibox.run_detached("-p", "18282:80", "busybox", "sleep", "60")
    proxy = proxy_of(minibox, container_id)
    assert bridge.link_exists(bridge.host_ifname(container_id))
    minibox("rm", "-f", container_id)
    assert not bridge.link_exists(bridge.host_ifname(container_id))
    assert leases() == {}
    assert not shared.process_alive(proxy["pid"], proxy["start_time"])


def test_oci_create_gets_loopback_only_and_no_bridge(minibox, bundle):
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "oci-net")
    pid = oci_state(minibox, "oci-net")["pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    with open(f"/proc/{pid}/net/dev") as devices:
        assert [line.split(":")[0].strip() for line in devices.readlines()[2:]] == ["lo"]
    with open(f"/proc/{pid}/net/fib_trie") as routes:  # lo is up: the kernel gave it 127.0.0.1
        assert "127.0.0.1" in routes.read()
    assert not bridge.link_exists(bridge.BRIDGE)  # runc makes no bridge; nor do we
    [info] = json.loads(minibox("inspect", "oci-net").stdout)
    assert (info["Addresses"], info["NetworkSettings"]) == ([], {"IPAddress": "", "Ports": {}})
    minibox("delete", "--force", "oci-net")


def test_a_bridge_deleted_under_a_running_container_comes_back_with_its_lease(minibox):
    """`ip link del minibox0` while a container runs, then a new run: the pool was reset and
    both containers got 10.199.0.2, and the old one's published port answered nothing."""
    container_id = minibox.run_detached("--name", "old", "-p", "18282:80", "busybox", "sh",
                                        "-c", SITE)
    current = minibox.state(container_id)
    address = current["network"]["address"]
    wait_listening(current["pid"], 80)
    subprocess.run(["ip", "link", "del", bridge.BRIDGE], check=True)
    new = minibox("run", "--rm", "busybox", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {address}/" not in new
    assert leases()[address] == container_id
    veth = bridge.host_ifname(container_id)
    assert f"master {bridge.BRIDGE} " in subprocess.run(
        ["ip", "-o", "link", "show", veth], capture_output=True, text=True).stdout
    assert fetch(18282) == "hello from old\n"
    minibox("stop", "-t", "1", "old")
    assert leases() == {}


def test_gc_removes_the_address_pool_of_a_network_namespace_that_is_gone(minibox):
    """A bridge container run inside a network namespace of its own (unshare -n) leaves,
    once that namespace is gone, an address pool no process can use: gc removes it, and
    keeps the pool of the namespace it runs in."""
    def pools():
        return set(os.listdir(bridge.STORE_DIR)) if os.path.isdir(bridge.STORE_DIR) else set()

    ours = bridge.address_pool().directory.name
    before = pools()
    subprocess.run(["unshare", "--net", sys.executable, "-m", "minibox", "run", "--rm",
                    "busybox", "true"], env=minibox.env, check=True, timeout=60)
    (gone,) = pools() - before
    assert gone.startswith(f"{bridge.BRIDGE}.netns") and gone != ours
    holder = subprocess.Popen(["unshare", "--net", sys.executable, "-m", "minibox", "run",
                               "--rm", "busybox", "sleep", "30"], env=minibox.env)
    try:
        (held,) = wait_until(lambda: pools() - before - {gone}, what="the held pool")
        out = minibox("gc").stdout
        assert f"removed the address pool {gone} (its network namespace is gone)" in out
        assert gone not in pools() and held in pools()  # its namespace still has a process
    finally:
        holder.kill()
        holder.wait()
    minibox("gc")
    assert pools() <= before


# What a bridge run's runtime has loaded when it exits (atexit: after teardown).
MODULES_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print("pyroute2 loaded:", "pyroute2" in sys.modules))
from minibox.cli import main
main(["run", "--rm", "busybox", "sh", "-c", "ip -4 -o addr show eth0; ip route"])
"""


def test_a_bridge_run_leaves_pyroute2_to_its_helper_from_setup_to_teardown(minibox):
    """pyroute2 is imported in a helper process, on the other core, while the runtime sets
    up the rest (nethelper.py); teardown waits for the kernel to take the veth pair with
    the netns (bridge.disconnect): the runtime itself never loads it."""
    result = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT], env=minibox.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    inet, route, *_, loaded = result.stdout.splitlines()
    assert " eth0 " in inet and "inet 10.199.0." in inet
    assert route.startswith("default via 10.199.0.1 dev eth0")
    assert loaded == "pyroute2 loaded: False"
    assert leases() == {}  # and the fixture finds no veth, lease or process left


def test_the_owner_of_a_shared_netns_stops_first_and_takes_its_veth_and_address(minibox):
    """A joiner (--network container:ID) keeps the owner's netns alive, so the kernel does
    not delete the veth pair when the owner's init exits: teardown deletes it itself."""
    owner = minibox.run_detached("busybox", "sleep", "60")
    joiner = minibox.run_detached("--network", f"container:{owner}", "busybox", "sleep", "60")
    minibox("stop", "-t", "0", owner)
    assert not bridge.link_exists(bridge.host_ifname(owner))
    assert leases() == {}
    eth0 = minibox("exec", joiner, "ls", "/sys/class/net").stdout.split()
    assert eth0 == ["lo"]  # the pair went with the owner, as in Docker
    minibox("rm", "-f", joiner)


# What the helper has loaded when it starts its own work: `minibox run` as the command runs it.
MODULES_AT_FORK = """
import sys
from minibox import nethelper
serve = nethelper._serve
def spy(channel, parent):
    print("click in the helper:", "click" in sys.modules, flush=True)
    serve(channel, parent)
nethelper._serve = spy
sys.argv = ["minibox", "run", "--rm", "busybox", "true"]
from minibox.__main__ import main
main()
"""


def test_a_bridge_run_forks_its_helper_before_the_command_line_is_imported(minibox):
    """The helper's import of pyroute2 is what a bridge run waits for longest: __main__.py
    starts it before click and the runtime are imported (nethelper.start_for_run)."""
    result = subprocess.run([sys.executable, "-c", MODULES_AT_FORK], env=minibox.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "click in the helper: False\n"
    assert leases() == {}


def test_a_helper_forked_on_a_wrong_guess_is_gone_before_the_container_runs(minibox):
    """__main__.py reads the first --network, click the last: the helper it forked for the
    bridge is stopped once the spec says `none` (network.prepare), not left to idle beside
    the container, nor as a zombie of the lean monitor."""
    run = minibox.popen("run", "--rm", "--network", "bridge", "--network", "none", "busybox",
                        "sleep", "2", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    current = minibox.wait_for_state(lambda state: state["status"] == "running")
    with open(f"/proc/{run.pid}/task/{run.pid}/children") as children:
        assert children.read().split() == [str(current["pid"])]
    out, err = run.communicate(timeout=30)
    assert (run.returncode, out, err) == (0, "", "")
    assert current["network"]["mode"] == "none"


def test_a_helper_killed_before_it_answers_fails_the_run_in_one_line(minibox):
    run = minibox.popen("run", "--rm", "busybox", "true", stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children = f"/proc/{run.pid}/task/{run.pid}/children"
    # Its first child, forked before the command line is read, and importing pyroute2 now.
    helper = int(wait_until(lambda: open(children).read().split(), interval=0.001)[0])
    os.kill(helper, signal.SIGKILL)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 125
    assert err.startswith(f"minibox: the network helper (PID {helper}) died before "
                          "connecting container ")
    assert err.count("\n") == 1 and out == ""
    assert leases() == {}  # and the fixture finds no veth, lease, cgroup or process left


@pytest.mark.slow
def test_ctrl_c_or_sigkill_at_any_moment_of_the_helpers_work_leaves_nothing(minibox):
    """The helper imports pyroute2 and connects the init while the runtime sets up the
    rest: interrupt the run anywhere in there (Ctrl-C reaches the whole process group),
    or SIGKILL the runtime and run `gc`, and nothing remains."""
    rng = random.Random(19)
    before = snapshot()
    for round in range(16):
        run = minibox.popen("run", "--rm", "busybox", "true", start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 0.4))
        if round % 2:
            os.killpg(run.pid, signal.SIGINT)
        else:
            run.kill()
        run.wait(timeout=30)
    minibox.container_dirs()  # noted in minibox.seen, the killed ones too
    minibox("gc")
    wait_until(lambda: minibox.container_dirs() == [])
    assert leftovers(before, [minibox]) == {}
    assert leases() == {}


def test_the_detached_monitor_waits_in_a_bare_interpreter_of_at_most_10_mib(minibox):
    """`run -d` with the bridge and -p: the runtime set it all up, then the monitor exec'd a
    bare interpreter to wait (waiting.py); a restart brings the runtime back for a moment,
    then the monitor waits lean again. Issue 19's target: 10 MiB of RSS."""
    container_id = minibox.run_detached(
        "--restart", "on-failure:1", "-p", "18283:80", "busybox", "sh", "-c",
        "[ -e /restarted ] && " + SITE + "; touch /restarted; sleep 0.5; exit 1")
    started = minibox.state(container_id)
    monitor = started["monitor_pid"]

    def waiting_lean(restarts):
        current = minibox.state(container_id)
        with open(f"/proc/{monitor}/cmdline", "rb") as cmdline:
            return current["restarts"] == restarts and b"wait_then_resume" in cmdline.read()

    for restarts in (0, 1):
        wait_until(lambda: waiting_lean(restarts), timeout=20,
                   what=f"the monitor waiting lean (restarts={restarts})")
        assert rss_kib(monitor) <= 10 * 1024
    wait_listening(minibox.state(container_id)["pid"], 80)
    assert fetch(18283) == f"hello from {container_id[:12]}\n"
    minibox("stop", "-t", "1", container_id)
    assert not state.monitor_alive(started)  # the runtime came back and tore down


def cost_outside_kib(monitor, init):
    """What a container costs outside itself: the Rss of every process in its monitor's tree
    (the monitor included) that is not in the container's cgroups (/proc/PID/cgroup). The
    container's own short-lived processes (its `sleep`s) may end meanwhile: a zombie, or a
    process gone, holds no memory."""
    parents = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as stat:
                state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            parents[int(name)] = int(parent)
    tree, added = {monitor}, True
    while added:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        added = bool(children)
    with open(f"/proc/{init}/cgroup") as cgroup:
        containers = cgroup.read()
    outside = {}
    for pid in tree:
        try:
            with open(f"/proc/{pid}/cgroup") as cgroup:
                if cgroup.read() != containers:
                    outside[pid] = rss_kib(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    assert monitor in outside
    return sum(outside.values())


def test_a_published_container_costs_at_most_10_mib_outside_itself(minibox):
    """Issue 19: with bridge networking and -p, one process outside the container -- the
    monitor, which serves the ports itself (portproxy.Published) -- of at most 10 MiB Rss,
    before and after a restart; the port works in both incarnations."""
    script = ("mkdir -p /www; if [ -e /restarted ]; then echo second > /www/index.html; "
              "exec httpd -f -p 80 -h /www; fi; touch /restarted; echo first > /www/index.html; "
              "httpd -p 80 -h /www; while [ ! -e /next ]; do sleep 0.05; done; exit 1")
    container_id = minibox.run_detached("--restart", "on-failure:1", "-p", "18284:80",
                                        "busybox", "sh", "-c", script)
    monitor = minibox.state(container_id)["monitor_pid"]

    def lean_and_serving(restarts, page):
        current = minibox.state(container_id)
        with open(f"/proc/{monitor}/cmdline", "rb") as cmdline:
            return (current["restarts"] == restarts and b"wait_then_resume" in cmdline.read()
                    and _try_fetch(18284) == page)

    for restarts, page in ((0, "first\n"), (1, "second\n")):
        wait_until(lambda: lean_and_serving(restarts, page), timeout=20,
                   what=f"the monitor waiting lean, serving {page!r}")
        assert cost_outside_kib(monitor, minibox.state(container_id)["pid"]) <= 10 * 1024
        if restarts == 0:
            minibox("exec", container_id, "touch", "/next")
    minibox("stop", "-t", "1", container_id)
    assert not listening(18284)
