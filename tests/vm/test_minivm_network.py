"""`minivm run --network bridge`: a VM on minibox0, next to containers, in a private netns.

"The host" is a network namespace of the test's own (host_netns): the bridge, the taps and
the veths never appear on the real host. Facts come from iproute2 and the address pool.
"""
import json
import os
import subprocess

import pytest

from tests.integration.conftest import host_netns  # noqa: F401 (a fixture)
from tests.integration.test_network_cli import (SITE, background, leases, root,  # noqa: F401
                                                stop, wait_listening, wait_running)
from tests.vm.helpers import wait_for

pytestmark = [pytest.mark.vm, pytest.mark.root]


def links():
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def taps():
    return [name for name in links() if name.startswith("mv")]


def test_a_vm_fetches_a_page_from_a_container(root, background, minibox, minivm):
    server = background("--rm", "--name", "web", "busybox", "sh", "-c", SITE)
    web = wait_running(root, "web")
    wait_listening(web["pid"], 80)
    address = web["network"]["address"]
    done = minivm("run", "--network", "bridge", "--", "sh", "-c",
                  f"wget -q -O - http://{address}/; ip -4 -o addr show eth0")
    assert done.returncode == 0, done.stderr
    page, inet = done.stdout.decode().splitlines()
    assert page == "hello from web"
    vm_address = inet.split("inet ")[1].split("/")[0]
    assert vm_address.startswith("10.199.0.") and vm_address != address
    assert taps() == []  # the tap went with QEMU
    assert list(leases()) == [address]  # the VM's address is back in the pool
    stop(server, web)


def test_a_container_fetches_a_page_from_a_detached_vm(root, minibox, minivm, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("MINIVM_ROOT", str(tmp_path / "vms"))
    site = "mkdir /www && echo hello from the vm > /www/index.html && httpd -f -p 80 -h /www"
    done = minivm("run", "-d", "--name", "vmweb", "--network", "bridge", "--", "sh", "-c", site)
    assert done.returncode == 0, done.stderr
    try:
        state = json.loads((tmp_path / "vms" / "vmweb" / "state.json").read_text())
        address = state["network"]["address"]
        assert leases()[address] == "minivm-vmweb"
        (tap,) = taps()
        assert "master minibox0" in subprocess.run(["ip", "-o", "link", "show", tap],
                                                    capture_output=True, text=True).stdout
        fetch = f"for i in $(seq 60); do wget -q -O - http://{address}/ && exit; sleep 1; done"
        client = minibox("run", "--rm", "busybox", "sh", "-c", fetch, timeout=120)
        assert client.returncode == 0, client.stderr
        assert client.stdout == "hello from the vm\n"
    finally:
        assert minivm("stop", "-t", "5", "vmweb").returncode == 0
        assert wait_for(lambda: taps() == [], 10)  # the tap went with QEMU
        assert minivm("rm", "vmweb").returncode == 0
    assert address not in leases()


def test_network_none_is_the_default_and_has_no_nic(minivm):
    done = minivm("run", "--", "sh", "-c", "ls /sys/class/net")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"lo\n"


def test_bad_network_mode_is_one_line(minivm):
    done = minivm("run", "--network", "host", "--", "true")
    assert done.returncode == 125
    assert len(done.stderr.splitlines()) == 1
    assert b"--network: invalid choice: 'host'" in done.stderr


def test_a_vm_tap_keeps_its_lease_and_is_plugged_into_a_new_bridge(root, minibox):
    """A tap (no QEMU needed: the test holds its descriptor) survives `ip link del
    minibox0`; the bridge minibox makes next keeps its lease and takes it back as a port."""
    from minivm import nic
    card = nic.connect("minivm-survivor", "mvsurvivor")
    try:
        subprocess.run(["ip", "link", "del", "minibox0"], check=True)
        done = minibox("run", "--rm", "busybox", "ip", "-4", "-o", "addr", "show", "eth0")
        assert done.returncode == 0, done.stderr
        assert f"inet {card.address}/" not in done.stdout
        assert leases() == {str(card.address): "minivm-survivor"}
        assert "master minibox0" in subprocess.run(["ip", "-o", "link", "show", "mvsurvivor"],
                                                    capture_output=True, text=True).stdout
    finally:
        os.close(card.tap_fd)
        nic.release("minivm-survivor")
