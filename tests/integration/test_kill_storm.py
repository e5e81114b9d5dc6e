"""SIGKILL of minibox's own processes at random moments (issue 14): after `gc`, every
container left is one a user could still act on, and once those are removed nothing of any
of them remains (processes, mounts, directories, names, cgroups, veths, leases)."""
import os
import random
import signal
import time

import pytest

from tests.harness import leftovers, snapshot, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUNDS = 30


def kill_at_random(minibox, rng, *args, latest=0.3):
    """Start `minibox ARGS`, SIGKILL it after 0..latest seconds (or let it end first)."""
    process = minibox.popen(*args, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    time.sleep(rng.uniform(0, latest))
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_storm_then_gc_leaves_only_containers_a_user_can_remove(minibox):
    rng = random.Random(14)
    before = snapshot()
    started = time.monotonic()
    for _ in range(ROUNDS):
        kill_at_random(minibox, rng, "run", "--rm", "busybox", "sleep", "0.2")
        kill_at_random(minibox, rng, "run", "--network", "none", "busybox", "true")
        kill_at_random(minibox, rng, "run", "-d", "busybox", "sleep", "30")
        target = minibox.run_detached("--restart", "always", "busybox", "sleep", "30")
        kill_at_random(minibox, rng, "stop", "-t", "1", target, latest=0.5)
        kill_at_random(minibox, rng, "rm", "-f", target, latest=0.2)
    assert time.monotonic() - started < 240
    # A killed foreground run takes its container along (PR_SET_PDEATHSIG); give the
    # kernel a moment to end those PID namespaces, then collect what they left.
    time.sleep(1)
    minibox.container_dirs()  # noted in minibox.seen, the killed ones too: leftovers checks them
    collected = minibox("gc").stdout
    assert "removed leftovers of" in collected  # the storm did hit runs half-way
    remaining = minibox.container_dirs()
    for container_id in remaining:
        status = minibox.state(container_id)["status"]
        assert status in ("running", "stopped", "restarting"), (container_id, status)
    assert minibox("ps", "-a").stderr == ""
    for container_id in remaining:
        minibox("rm", "-f", container_id)
    wait_until(lambda: minibox.container_dirs() == [])
    assert leftovers(before, [minibox]) == {}
