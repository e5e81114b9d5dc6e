"""`minivm run --network bridge`: a VM on minibox0, next to containers, in a private netns.

"The host" is a network namespace of the test's own (host_netns): the bridge, the taps and
the veths never appear on the real host. Facts come from iproute2 and the address pool.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import host_netns  # noqa: F401 (a fixture)
from tests.integration.test_network_cli import (SITE, background, leases, root,  # noqa: F401
                                                stop, wait_listening, wait_running)
from tests.harness import wait_until
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


# What the `minivm run` process itself -- not its network helper -- has loaded at its end.
MODULES_AT_EXIT = """
import sys
from minibox import shared
exit_now = shared.exit_now
shared.exit_now = lambda code: (print("pyroute2 loaded:", "pyroute2" in sys.modules),
                                exit_now(code))
sys.argv = ["minivm", "run", "--network", "bridge", "--", "sh", "-c", "ip -4 -o addr show eth0"]
from minivm.__main__ import main
main()
"""


def test_a_bridge_run_leaves_pyroute2_to_its_helper(host_netns, guest_kernel):
    """pyroute2 is imported by minibox's network helper while minivm finds the kernel and
    writes the initramfs (minibox/nethelper.py); minivm, which then waits as long as its
    guest runs, never loads it."""
    done = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=150)
    assert done.returncode == 0, done.stderr
    inet, loaded = done.stdout.splitlines()
    assert " eth0 " in inet and "inet 10.199.0." in inet
    assert loaded == "pyroute2 loaded: False"
    assert taps() == [] and leases() == {}


def test_a_network_helper_killed_before_it_answers_is_one_line(host_netns, guest_kernel):
    run = subprocess.Popen([sys.executable, "-m", "minivm", "run", "--accel", "tcg", "--network",
                            "bridge", "--", "true"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = f"/proc/{run.pid}/task/{run.pid}/children"
    # Its first child, forked once `--network bridge` was read, and importing pyroute2 now.
    helper = int(wait_until(lambda: open(children).read().split(), interval=0.001)[0])
    os.kill(helper, signal.SIGKILL)
    out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (125, "")
    assert re.fullmatch(f"minivm: --network bridge: the network helper \\(PID {helper}\\) died "
                        "before attaching mv[0-9a-f]{12}\n", err), err
    assert taps() == [] and leases() == {}  # and host_netns finds no tap or dead lease
