"""minibox.network, minibox.portproxy on their own, against the real kernel (root).

Everything happens inside network namespaces these tests create: the test process itself
moves into a fresh netns that plays "the host" (so the real host never sees minibox0),
and each "container" is an `unshare --net sleep` process. Facts are read back with
independent tools (iproute2's `ip`, /proc/net/tcp, busybox ping/wget/httpd), never
with the code under test.
"""
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minibox import bridge, network, portproxy, shared, waiting
from minibox.bridge import NetworkError
from minibox.portproxy import PublishError, parse_mapping

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"


class FakeContainer:
    """A process in a network namespace of its own, like a container's init after unshare."""

    def __init__(self, name):
        self.id = f"{name}{os.urandom(16).hex()}"
        self.process = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && echo ready && exec sleep 300"],
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


def leases():
    """{address: container id}, read from the pool's lease files."""
    pool = bridge.address_pool().directory
    return ({path.name: path.read_text() for path in pool.iterdir() if path.name != "subnet"}
            if pool.exists() else {})


def test_bring_up_loopback(host_netns):
    # the fixture's fresh netns had lo down; bring_up_loopback() set IFF_UP
    assert "<LOOPBACK,UP," in ip("-o", "link", "show", "lo")


def test_connect_configures_both_ends(host_netns, containers):
    box = containers()
    ours = os.readlink("/proc/thread-self/ns/net")
    assert str(bridge.connect(box.id, box.pid)) == "10.199.0.2"
    assert os.readlink("/proc/thread-self/ns/net") == ours  # visited the container's, came back
    assert "inet 10.199.0.2/24" in box.run("ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "state UP" in box.run("ip", "-o", "link", "show", "eth0").stdout
    assert "default via 10.199.0.1 dev eth0" in box.run("ip", "route").stdout
    # the host end is a port of the bridge, the bridge carries the gateway address
    host_end = bridge.host_ifname(box.id)
    assert f"{host_end}@" in ip("-o", "link", "show", "master", "minibox0")
    assert "inet 10.199.0.1/24" in ip("-4", "-o", "addr", "show", "minibox0")
    assert "alias minibox bridge" in ip("-d", "link", "show", "minibox0")
    assert leases() == {"10.199.0.2": box.id}


def test_containers_and_host_reach_each_other(host_netns, containers, tmp_path):
    server, client = containers("server"), containers("client")
    server_ip = bridge.connect(server.id, server.pid)
    client_ip = bridge.connect(client.id, client.pid)
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


def test_disconnect_leaves_nothing(host_netns, containers):
    box = containers()
    bridge.connect(box.id, box.pid)
    bridge.disconnect(box.id)
    bridge.disconnect(box.id)  # twice is harmless

    assert veths_on_host() == []
    assert leases() == {}
    assert "eth0" not in box.run("ip", "-o", "link").stdout
    assert link_exists("minibox0")  # the bridge stays, like docker0


def test_requested_address(host_netns, containers):
    first, second = containers(), containers()
    assert str(bridge.connect(first.id, first.pid, "10.199.0.77")) == "10.199.0.77"
    with pytest.raises(NetworkError, match="10.199.0.77 is already in use"):
        bridge.connect(second.id, second.pid, "10.199.0.77")
    assert veths_on_host() == [bridge.host_ifname(first.id)]
    assert leases() == {"10.199.0.77": first.id}


def test_failure_inside_the_container_rolls_back(host_netns, containers):
    box = containers()
    box.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    with pytest.raises(NetworkError, match="create veth pair .*: File exists"):
        bridge.connect(box.id, box.pid)
    assert veths_on_host() == []
    assert leases() == {}


def test_foreign_minibox0_is_refused(host_netns, containers):
    ip("link", "add", "minibox0", "type", "veth", "peer", "name", "squatter")
    box = containers()
    with pytest.raises(NetworkError, match="minibox0 already exists and minibox did not create it"):
        bridge.connect(box.id, box.pid)
    assert veths_on_host() == ["minibox0", "squatter"]  # untouched, nothing added
    assert leases() == {}
    assert "eth0" not in box.run("ip", "-o", "link").stdout


def test_a_bridge_deleted_by_hand_is_recreated_and_its_stale_leases_dropped(host_netns, containers):
    first, second = containers(), containers()
    bridge.connect(first.id, first.pid)
    # Its host end gone too: a container that is gone without teardown. (One whose veth is
    # still there keeps its lease: test_network_lifecycle's bridge-deleted test.)
    ip("link", "del", bridge.host_ifname(first.id))
    ip("link", "del", "minibox0")
    assert str(bridge.connect(second.id, second.pid)) == "10.199.0.2"
    assert leases() == {"10.199.0.2": second.id}
    assert "alias minibox bridge" in ip("-d", "link", "show", "minibox0")
    assert f"{bridge.host_ifname(second.id)}@" in ip("-o", "link", "show", "master", "minibox0")


def test_a_stale_pool_without_a_bridge_is_dropped(host_netns):
    """A netns that died with leases leaves a pool; a new netns may reuse its inode."""
    pool = bridge.address_pool()
    with pool.locked(subnet_if_new="10.199.0.0/24") as table:
        table.allocate("ghost")
    assert bridge.bridge_status() is None
    assert bridge.remove_bridge() is False
    assert not pool.directory.exists()


def test_subnet_exhausted(host_netns, containers, monkeypatch):
    monkeypatch.setenv(bridge.SUBNET_ENV, "10.199.0.0/30")  # gateway .1, one container .2
    first, second = containers(), containers()
    bridge.connect(first.id, first.pid)
    with pytest.raises(NetworkError, match=r"no free address left in 10.199.0.0/30"):
        bridge.connect(second.id, second.pid)
    assert veths_on_host() == [bridge.host_ifname(first.id)]
    assert list(leases().values()) == [first.id]


def test_remove_bridge_only_when_unused(host_netns, containers):
    assert bridge.bridge_status() is None
    assert bridge.remove_bridge() is False
    box = containers()
    bridge.connect(box.id, box.pid)
    assert bridge.bridge_status() == ("10.199.0.0/24", "10.199.0.1", {"10.199.0.2": box.id})

    with pytest.raises(NetworkError, match=f"in use by container.*{box.id[:12]}"):
        bridge.remove_bridge()
    assert link_exists("minibox0")

    bridge.disconnect(box.id)
    assert bridge.remove_bridge() is True
    assert not link_exists("minibox0")
    assert bridge.bridge_status() is None


def _connect_in_child(container_id, pid):
    bridge.connect(container_id, pid)


def test_twenty_parallel_connects(host_netns, containers):
    boxes = [containers() for _ in range(20)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_connect_in_child, args=(box.id, box.pid))
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
    assert {owner: address for address, owner in leases().items()} == seen
    assert len(veths_on_host()) == 20

    for box in boxes:
        bridge.disconnect(box.id)
    assert veths_on_host() == [] and leases() == {}


@pytest.fixture
def web_container(host_netns, containers, tmp_path):
    box = containers("web")
    address = bridge.connect(box.id, box.pid)
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


def start_proxy(bound, address, watched_pid):
    """What a container's monitor does with its published ports (waiting.serve_until_exit),
    in a child of ours that watches `watched_pid`; the ledger's view of it."""
    published = portproxy.Published(address, bound)
    pid = os.fork()
    if pid == 0:
        try:
            waiting.serve_until_exit(watched_pid, published)
        finally:
            os._exit(0)
    published.close()
    return portproxy.ProxyProcess(pid, shared.process_start_time(pid))


def test_published_port_reaches_the_container(web_container):
    box, address = web_container
    bound = portproxy.bind_ports([parse_mapping("18080:80")])
    proxy = start_proxy(bound, address, box.pid)
    try:
        assert fetch("http://127.0.0.1:18080/") == "published\n"
        assert fetch("http://127.0.0.1:18080/") == "published\n"  # and again
    finally:
        portproxy.stop(proxy)
    assert not Path(f"/proc/{proxy.pid}").exists()
    assert not listening(18080)


# In the fake container: reads a connection to its end, answers with the bytes reversed.
REVERSER = """
import socket
server = socket.create_server(("", 7))
print("ready", flush=True)
while True:
    connection, _ = server.accept()
    with connection:
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
        connection.sendall(data[::-1])
"""


def test_the_proxy_relays_both_ways_with_half_closes_and_never_waits_on_one_client(
        web_container):
    """One loop serves every connection (waiting.Loop): a client that sends nothing does not
    hold up another, whose megabytes go through both ways, its half-close passed on."""
    box, address = web_container
    reverser = subprocess.Popen(["nsenter", f"--net=/proc/{box.pid}/ns/net", sys.executable,
                                 "-c", REVERSER], stdout=subprocess.PIPE, text=True)
    box.servers.append(reverser)
    assert reverser.stdout.readline() == "ready\n"
    proxy = start_proxy(portproxy.bind_ports([parse_mapping("18084:80"),
                                              parse_mapping("18085:7")]), address, box.pid)
    try:
        with socket.create_connection(("127.0.0.1", 18084), timeout=10):  # silent
            payload = os.urandom(3 * 1024 * 1024)
            with socket.create_connection(("127.0.0.1", 18085), timeout=10) as client:
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := client.recv(65536):
                    answer += chunk
            assert answer == payload[::-1]
        assert fetch("http://127.0.0.1:18084/") == "published\n"
    finally:
        portproxy.stop(proxy)


def test_busy_host_port_is_refused_before_anything_starts(host_netns):
    first = portproxy.bind_ports([parse_mapping("18081:80")])
    try:
        with pytest.raises(PublishError, match=r"host port 127.0.0.1:18081 is already in use"):
            portproxy.bind_ports([parse_mapping("18082:80"), parse_mapping("18081:80")])
        assert not listening(18082)  # all-or-nothing: the first of the pair was closed
    finally:
        portproxy.close_ports(first)
    assert not listening(18081)


def test_proxy_exits_with_the_process_it_watches(web_container):
    box, address = web_container
    proxy = start_proxy(portproxy.bind_ports([parse_mapping("18083:80")]), address, box.pid)
    box.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if os.waitpid(proxy.pid, os.WNOHANG) != (0, 0):
            break
        time.sleep(0.01)
    else:
        portproxy.stop(proxy)
        pytest.fail("the proxy outlived the process it watches")
    assert not listening(18083)


def test_stop_never_kills_a_recycled_pid(host_netns):
    """After the proxy is gone, its PID may belong to someone else: stop() must leave it be."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        started = shared.process_start_time(bystander.pid)
        impostor = portproxy.ProxyProcess(bystander.pid, started + 1)
        portproxy.stop(impostor)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
