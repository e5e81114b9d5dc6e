"""SIGKILL of `minivm run` and `minivm run -d --network bridge` at any moment: QEMU dies
with it, and `minivm gc` (or `minivm rm`) collects the rest. The no_vm_left_behind check
(tests/conftest.py) and host_netns (no tap, no dead lease) then find nothing.

"The host" is a network namespace of the test's own (host_netns)."""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minibox.shared import process_start_time
from tests.helpers import dead_minivm_leases, minivm_leftovers
from tests.integration.conftest import host_netns  # noqa: F401 (a fixture)
from tests.integration.test_network_cli import leases
from tests.vm.helpers import initrds_of, qemu_pids_of, wait_for
from tests.vm.test_minivm_network import taps

pytestmark = [pytest.mark.vm, pytest.mark.root]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "minivm", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def vm_state(name):
    try:
        return json.loads((Path(os.environ["MINIVM_ROOT"]) / name / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_a_killed_foreground_run_leaves_its_lease_and_initrd_to_gc(host_netns, minivm,
                                                                     minibox):
    """5 of 5 killed runs leaked their lease, so `minibox network rm` refused, and a 2 MB
    /tmp/minivm-initrd-<pid>-<hex>.cpio."""
    run = start("run", "--network", "bridge", "--", "sleep", "100")
    assert wait_for(lambda: qemu_pids_of(run.pid), 60), "QEMU never started"
    run.kill()
    run.wait()
    assert wait_for(lambda: not qemu_pids_of(run.pid), 5)  # PR_SET_PDEATHSIG
    # The tap goes with its last descriptor, a moment after QEMU's cmdline (exit_mm()
    # comes before exit_files() in do_exit()).
    assert wait_for(lambda: taps() == [], 5)
    (owner,) = dead_minivm_leases().values()
    assert initrds_of(run.pid)
    collected = minivm("gc")
    assert collected.returncode == 0, collected.stderr
    assert f"released the address of {owner}" in collected.stdout.decode()
    assert initrds_of(run.pid) == [] and leases() == {}
    removed = minibox("network", "rm", "minibox0")
    assert removed.returncode == 0, removed.stderr


def test_run_d_killed_before_its_vm_is_recorded(host_netns, minivm, tmp_path, monkeypatch):
    """A QEMU whose QMP never answers holds the start at its most exposed moment: QEMU
    exists, the tap and the lease too, the VM is not recorded yet. Killing `run -d` then
    left QEMU running, the tap, the lease and a directory `rm` did not know."""
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec sleep 1000\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    run = start("run", "-d", "--name", "half", "--network", "bridge", "--", "true")
    assert wait_for(lambda: "pid" in vm_state("half"), 60), "QEMU's pid was never recorded"
    qemu = vm_state("half")["pid"]
    assert len(taps()) == 1 and list(leases().values()) == ["minivm-half"]
    run.kill()
    run.wait()
    assert wait_for(lambda: process_start_time(qemu) is None, 5), "QEMU outlived minivm"
    assert wait_for(lambda: taps() == [], 5)  # the watchdog held it too, until it exited
    listed = minivm("ps").stdout.decode().splitlines()
    assert listed[1].split()[:3] == ["half", "start", "failed"]
    logs = minivm("logs", "half")
    assert logs.stderr == b"minivm: half has no logs: its status is start failed\n"
    removed = minivm("rm", "half")
    assert removed.returncode == 0, removed.stderr
    assert leases() == {} and vm_state("half") == {}
    assert minivm("rm", "half").returncode == 125  # and now the name is free


@pytest.mark.slow
def test_kill_storm_then_gc_leaves_nothing(host_netns, minivm):
    """30 foreground runs and 30 `run -d --network bridge`, each SIGKILLed 0-1.5 s after it
    began; a VM whose start completed first is the user's, removed with `rm -f` as a user
    would. Then one `minivm gc`, and nothing may be left."""
    chance = random.Random(14)
    started = time.monotonic()
    for round in range(30):
        for detach in (False, True):
            name = f"storm{round}"
            run = start("run", "--network", "bridge",
                        *(["-d", "--name", name] if detach else []), "--", "sleep", "60")
            time.sleep(chance.uniform(0, 1.5))
            run.kill()
            run.wait()
            if "started" in vm_state(name):
                assert minivm("rm", "-f", name).returncode == 0
            assert time.monotonic() - started < 600, "the storm took over 10 minutes"
    collected = minivm("gc")
    assert collected.returncode == 0, collected.stderr
    left = minivm_leftovers(os.environ["MINIVM_ROOT"], os.environ["TMPDIR"],
                            f"MINIVM_TEST_TAG={os.environ['MINIVM_TEST_TAG']}")
    assert (left, taps(), leases()) == ({}, [], {}), collected.stdout
