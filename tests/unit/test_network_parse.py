"""Parsing of --network and -p, names and generated files: no root, no kernel state."""
import ipaddress
import subprocess
import sys

import pytest

from minibox import bridge, network, nethelper
from minibox.bridge import NetworkError
from minibox.network import parse_mode
from minibox.portproxy import PublishError, parse_mapping
from minibox.spec import PortMapping


@pytest.mark.parametrize("text, kind, container, new_netns", [
    ("bridge", "bridge", None, True),
    ("none", "none", None, True),
    ("host", "host", None, False),
    ("container:web", "container", "web", False),
    ("container:3f2a9c", "container", "3f2a9c", False),
])
def test_network_modes(text, kind, container, new_netns):
    mode = parse_mode(text)
    assert (mode.kind, mode.container, mode.new_netns) == (kind, container, new_netns)


@pytest.mark.parametrize("text", ["", "bridged", "container", "container:", "Host", "overlay"])
def test_bad_network_mode_names_the_choices(text):
    with pytest.raises(NetworkError, match=r"expected one of bridge, none, host, container:ID"):
        parse_mode(text)


@pytest.mark.parametrize("text, expected", [
    ("8080:80", PortMapping("127.0.0.1", 8080, 80)),
    ("8080:80/tcp", PortMapping("127.0.0.1", 8080, 80)),
    ("0.0.0.0:8080:80", PortMapping("0.0.0.0", 8080, 80)),
    ("127.0.0.2:1:65535", PortMapping("127.0.0.2", 1, 65535)),
])
def test_publish_syntax(text, expected):
    assert parse_mapping(text) == expected


def test_publish_defaults_to_loopback_and_says_so():
    assert parse_mapping("80:80").host_ip == "127.0.0.1"
    from minibox.portproxy import PUBLISH_HELP
    assert "defaults to 127.0.0.1" in PUBLISH_HELP


@pytest.mark.parametrize("text, complaint", [
    ("80", "expected"),
    ("1:2:3:4", "expected"),
    ("8080:80/udp", "only tcp"),
    ("8080:80/sctp", "only tcp"),
    ("http:80", "not a port"),
    ("0:80", "not a port"),
    ("8080:70000", "not a port"),
    ("8080:-1", "not a port"),
    ("localhost:8080:80", "not an IPv4 address"),
    ("300.1.1.1:8080:80", "not an IPv4 address"),
])
def test_bad_publish_is_one_clear_line(text, complaint):
    with pytest.raises(PublishError, match=complaint) as caught:
        parse_mapping(text)
    assert "\n" not in str(caught.value) and repr(text) in str(caught.value)


def test_mapping_reads_like_docker_ps():
    assert str(PortMapping("127.0.0.1", 8080, 80)) == "127.0.0.1:8080->80/tcp"


def test_host_ifname_fits_ifnamsiz():
    name = bridge.host_ifname("0123456789abcdef" * 4)
    assert name == "mb0123456789ab" and len(name) <= 15


def test_default_subnet_and_override(monkeypatch):
    monkeypatch.delenv(bridge.SUBNET_ENV, raising=False)
    assert bridge.subnet_for_new_bridge() == ipaddress.IPv4Network("10.199.0.0/24")
    assert "10.199.0.0/24" in bridge.SUBNET_HELP and bridge.SUBNET_ENV in bridge.SUBNET_HELP
    monkeypatch.setenv(bridge.SUBNET_ENV, "192.0.2.0/29")
    assert bridge.subnet_for_new_bridge() == ipaddress.IPv4Network("192.0.2.0/29")


@pytest.mark.parametrize("text", ["10.1.2.3/33", "banana", "10.0.0.1/24", "10.0.0.0/31"])
def test_bad_subnet_override(monkeypatch, text):
    monkeypatch.setenv(bridge.SUBNET_ENV, text)
    with pytest.raises(NetworkError, match=bridge.SUBNET_ENV):
        bridge.subnet_for_new_bridge()


def test_etc_hosts():
    hosts = network.etc_hosts("web", ipaddress.IPv4Address("10.199.0.7"))
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert hosts.endswith("10.199.0.7\tweb\n")
    assert network.etc_hosts("lonely").endswith("127.0.1.1\tlonely\n")


def test_importing_network_does_not_import_pyroute2():
    """pyroute2 costs ~150 ms to import: a --network none container must never pay it."""
    probe = ("import sys, minibox.network, minibox.portproxy, minibox.ipam;"
             "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("args, starts", [
    (["busybox", "true"], True),
    (["--rm", "--network", "bridge", "-p", "8080:80", "busybox"], True),
    (["--network=bridge", "busybox"], True),
    (["--network", "none", "busybox"], False),
    (["--network=host", "busybox"], False),
    (["--network", "container:web", "busybox"], False),
    (["-d", "busybox"], False),
    (["-dit", "busybox", "sh"], False),
    (["--explain", "busybox", "true"], False),
    (["--step", "busybox", "true"], False),
    (["busybox", "ls", "-d", "/"], False),  # a guess: the helper starts later, at connect()
    (["busybox", "--", "-d"], True),
    (["--network"], False),
])
def test_the_helper_starts_before_the_command_line_for_runs_that_look_bridged(
        monkeypatch, args, starts):
    started = []
    monkeypatch.setattr(nethelper, "start", lambda: started.append(True))
    monkeypatch.setattr(nethelper.os, "geteuid", lambda: 0)
    nethelper.start_for_run(args)
    assert started == ([True] if starts else [])


def test_without_root_no_helper_starts_before_the_command_line(monkeypatch):
    started = []
    monkeypatch.setattr(nethelper, "start", lambda: started.append(True))
    monkeypatch.setattr(nethelper.os, "geteuid", lambda: 1000)
    nethelper.start_for_run(["busybox", "true"])
    assert started == []
