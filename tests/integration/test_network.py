"""minibox.network, minibox.portproxy on their own, against the real kernel (root).

Everything happens inside network namespaces these tests create: the test process itself
moves into a fresh netns that plays "the host" (so the real host never sees minibox0),
and each "container" is an `unshare --net sleep` process. Facts are read back with
independent tools (iproute2's `ip`, /proc/net/tcp, busybox ping/wget/httpd), never
with the code under test.
"""
import ctypes
import json
import multiprocessing
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from minibox import network, portproxy
from minibox.network import NetworkError
from minibox.portproxy import PortMapping, PublishError

pytestmark = pytest.mark.root

CLONE_NEWNET = 0x40000000
BUSYBOX = "/bin/busybox"


@pytest.fixture
def host_netns(monkeypatch):
    """Move this test's thread into a brand-new netns for the duration of the test."""
    monkeypatch.delenv(network.SUBNET_ENV, raising=False)
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    assert libc.unshare(CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
    try:
        network.bring_up_loopback()
        yield
    finally:
        assert libc.setns(original, CLONE_NEWNET) == 0
        os.close(original)


@pytest.fixture
def state_root(tmp_path):
    return tmp_path / "state"


class FakeContainer:
    """A process in a network namespace of its own, like a container's init after unshare."""

    def __init__(self, name):
        self.id = f"{name}{os.urandom(16).hex()}"
        self.process = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo ready && exec sleep 300"],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "ready\n"
        self.pid = self.process.pid
        self.servers = []

    def run(self, *argv, check=True, timeout=10):
        return subprocess.run(["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def serve_http(self, port, site, address=""):
        """busybox httpd in the foreground inside the netns; returns once it listens."""
        self.servers.append(subprocess.Popen(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net",
             BUSYBOX, "httpd", "-f", "-p", f"{address}{port}", "-h", str(site)]))
        deadline = time.monotonic() + 5
        while not listening(port, self.pid):
            assert time.monotonic() < deadline, "httpd did not start listening"
            time.sleep(0.01)

    def kill(self):
        for process in [*self.servers, self.process]:
            process.kill()
            process.wait()


@pytest.fixture
def containers():
    made = []

    def make(name="c"):
        made.append(FakeContainer(name))
        return made[-1]

    yield make
    for container in made:
        container.kill()


def ip(*argv):
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=True).stdout


def veths_on_host():
    """veth interfaces in this netns (not /sys/class/net: sysfs shows the netns that mounted it)."""
    return sorted(line.split(": ")[1].split("@")[0]
                  for line in ip("-o", "link", "show", "type", "veth").splitlines())


def link_exists(ifname):
    return subprocess.run(["ip", "link", "show", ifname], capture_output=True).returncode == 0


def leases(state_root):
    path = state_root / "networks" / "minibox0.json"
    return json.loads(path.read_text())["leases"] if path.exists() else {}


def test_bring_up_loopback(host_netns):
    # the fixture's fresh netns had lo down; bring_up_loopback() set IFF_UP
    assert "<LOOPBACK,UP," in ip("-o", "link", "show", "lo")


def test_connect_configures_both_ends(host_netns, state_root, containers):
    box = containers()
    endpoint = network.connect(box.id, box.pid, state_root)

    assert str(endpoint.address) == "10.199.0.2" and str(endpoint.gateway) == "10.199.0.1"
    assert "inet 10.199.0.2/24" in box.run("ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "state UP" in box.run("ip", "-o", "link", "show", "eth0").stdout
    assert "default via 10.199.0.1 dev eth0" in box.run("ip", "route").stdout
    # the host end is a port of the bridge, the bridge carries the gateway address
    host_end = network.host_ifname(box.id)
    assert f"{host_end}@" in ip("-o", "link", "show", "master", "minibox0")
    assert "inet 10.199.0.1/24" in ip("-4", "-o", "addr", "show", "minibox0")
    assert f"alias minibox {state_root.resolve()}" in ip("-d", "link", "show", "minibox0")
    assert leases(state_root) == {"10.199.0.2": box.id}


def test_containers_and_host_reach_each_other(host_netns, state_root, containers, tmp_path):
    server, client = containers("server"), containers("client")
    server_ip = network.connect(server.id, server.pid, state_root).address
    client_ip = network.connect(client.id, client.pid, state_root).address
    assert server_ip != client_ip

    client.run(BUSYBOX, "ping", "-c", "1", "-W", "2", str(server_ip))
    client.run(BUSYBOX, "ping", "-c", "1", "-W", "2", "10.199.0.1")  # the host, via the gateway
    subprocess.run([BUSYBOX, "ping", "-c", "1", "-W", "2", str(client_ip)], check=True,
                   capture_output=True)

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello from the server\n")
    server.serve_http(8000, site, address=f"{server_ip}:")
    fetched = client.run(BUSYBOX, "wget", "-q", "-O", "-", f"http://{server_ip}:8000/")
    assert fetched.stdout == "hello from the server\n"


def test_disconnect_leaves_nothing(host_netns, state_root, containers):
    box = containers()
    network.connect(box.id, box.pid, state_root)
    network.disconnect(box.id, state_root)
    network.disconnect(box.id, state_root)  # twice is harmless

    assert veths_on_host() == []
    assert leases(state_root) == {}
    assert "eth0" not in box.run("ip", "-o", "link").stdout
    assert link_exists("minibox0")  # the bridge stays, like docker0


def test_requested_address(host_netns, state_root, containers):
    first, second = containers(), containers()
    assert str(network.connect(first.id, first.pid, state_root, "10.199.0.77").address) == "10.199.0.77"
    with pytest.raises(NetworkError, match="10.199.0.77 is already in use"):
        network.connect(second.id, second.pid, state_root, "10.199.0.77")
    assert veths_on_host() == [network.host_ifname(first.id)]
    assert leases(state_root) == {"10.199.0.77": first.id}


def test_failure_inside_the_container_rolls_back(host_netns, state_root, containers):
    box = containers()
    box.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    with pytest.raises(NetworkError, match="create veth pair .*: File exists"):
        network.connect(box.id, box.pid, state_root)
    assert veths_on_host() == []
    assert leases(state_root) == {}


def test_foreign_minibox0_is_refused(host_netns, state_root, containers):
    ip("link", "add", "minibox0", "type", "veth", "peer", "name", "squatter")
    box = containers()
    with pytest.raises(NetworkError, match="minibox0 already exists and is not this minibox's bridge"):
        network.connect(box.id, box.pid, state_root)
    assert veths_on_host() == ["minibox0", "squatter"]  # untouched, nothing added
    assert leases(state_root) == {}
    assert "eth0" not in box.run("ip", "-o", "link").stdout


def test_bridge_of_another_state_root_is_foreign(host_netns, tmp_path, containers):
    first, second = containers(), containers()
    network.connect(first.id, first.pid, tmp_path / "one")
    with pytest.raises(NetworkError, match="not this minibox's bridge"):
        network.connect(second.id, second.pid, tmp_path / "two")


def test_subnet_exhausted(host_netns, state_root, containers, monkeypatch):
    monkeypatch.setenv(network.SUBNET_ENV, "10.199.0.0/30")  # gateway .1, one container .2
    first, second = containers(), containers()
    network.connect(first.id, first.pid, state_root)
    with pytest.raises(NetworkError, match=r"no free address left in 10.199.0.0/30"):
        network.connect(second.id, second.pid, state_root)
    assert veths_on_host() == [network.host_ifname(first.id)]
    assert list(leases(state_root).values()) == [first.id]


def test_remove_bridge_only_when_unused(host_netns, state_root, containers):
    assert network.bridge_status(state_root) is None
    assert network.remove_bridge(state_root) is False
    box = containers()
    network.connect(box.id, box.pid, state_root)
    status = network.bridge_status(state_root)
    assert (status.subnet, status.gateway, status.present) == ("10.199.0.0/24", "10.199.0.1", True)
    assert status.leases == {"10.199.0.2": box.id}

    with pytest.raises(NetworkError, match=f"in use by container.*{box.id[:12]}"):
        network.remove_bridge(state_root)
    assert link_exists("minibox0")

    network.disconnect(box.id, state_root)
    assert network.remove_bridge(state_root) is True
    assert not link_exists("minibox0")
    assert network.bridge_status(state_root) is None


def _connect_in_child(container_id, pid, state_root):
    network.connect(container_id, pid, state_root)


def test_twenty_parallel_connects(host_netns, state_root, containers):
    boxes = [containers() for _ in range(20)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_connect_in_child, args=(box.id, box.pid, state_root))
               for box in boxes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    seen = {}
    for box in boxes:
        line = box.run("ip", "-4", "-o", "addr", "show", "eth0").stdout
        seen[box.id] = line.split("inet ")[1].split("/")[0]
    assert len(set(seen.values())) == 20
    assert {owner: address for address, owner in leases(state_root).items()} == seen
    assert len(veths_on_host()) == 20

    for box in boxes:
        network.disconnect(box.id, state_root)
    assert veths_on_host() == [] and leases(state_root) == {}


@pytest.fixture
def web_container(host_netns, state_root, containers, tmp_path):
    box = containers("web")
    address = network.connect(box.id, box.pid, state_root).address
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("published\n")
    box.serve_http(80, site)
    return box, address


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def listening(port, pid="self"):
    """Is anything listening on TCP `port` in the netns of `pid`? (/proc/PID/net/tcp*, state 0A)"""
    lines = [line for table in ("tcp", "tcp6")
             for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]]
    return any(int(l.split()[1].split(":")[1], 16) == port and l.split()[3] == "0A" for l in lines)


def test_published_port_reaches_the_container(web_container):
    box, address = web_container
    bound = portproxy.bind_ports([PortMapping.parse("18080:80")])
    proxy = portproxy.start_proxy(bound, address, box.pid)
    try:
        assert fetch("http://127.0.0.1:18080/") == "published\n"
        assert fetch("http://127.0.0.1:18080/") == "published\n"  # and again
    finally:
        portproxy.stop(proxy)
    assert not Path(f"/proc/{proxy.pid}").exists()
    assert not listening(18080)


def test_busy_host_port_is_refused_before_anything_starts(host_netns):
    first = portproxy.bind_ports([PortMapping.parse("18081:80")])
    try:
        with pytest.raises(PublishError, match=r"host port 127.0.0.1:18081 is already in use"):
            portproxy.bind_ports([PortMapping.parse("18082:80"), PortMapping.parse("18081:80")])
        assert not listening(18082)  # all-or-nothing: the first of the pair was closed
    finally:
        portproxy.close_ports(first)
    assert not listening(18081)


def test_proxy_exits_with_the_container(web_container):
    box, address = web_container
    proxy = portproxy.start_proxy(portproxy.bind_ports([PortMapping.parse("18083:80")]),
                                  address, box.pid)
    box.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if os.waitpid(proxy.pid, os.WNOHANG) != (0, 0):
            break
        time.sleep(0.01)
    else:
        portproxy.stop(proxy)
        pytest.fail("the proxy outlived the container's init")
    assert not listening(18083)


def test_stop_never_kills_a_recycled_pid(host_netns):
    """After the proxy is gone, its PID may belong to someone else: stop() must leave it be."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        impostor = portproxy.ProxyProcess(bystander.pid, portproxy.start_time(bystander.pid) + 1)
        portproxy.stop(impostor)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
