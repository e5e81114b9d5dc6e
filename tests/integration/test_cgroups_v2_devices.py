"""cgroup v2's device program, for real on this host.

A hybrid (v1) host such as this one still mounts a controller-less cgroup2 hierarchy at
/sys/fs/cgroup/unified, and BPF_CGROUP_DEVICE programs attach there as on a v2 host (systemd
attaches its own that way): the kernel runs every program of each hierarchy the opener is in.
So a process put into a V2Cgroup there is checked by minibox's program, and nothing else.
"""
import os
import subprocess
import uuid

import pytest

from minibox.cgroups import Limits, cgroup_version
from minibox.cgroups.devices import container_rules
from minibox.cgroups.v2 import V2Cgroup

pytestmark = pytest.mark.root

UNIFIED = "/sys/fs/cgroup" if cgroup_version() == 2 else "/sys/fs/cgroup/unified"


@pytest.fixture
def v2_group():
    if not os.path.exists(os.path.join(UNIFIED, "cgroup.procs")):
        pytest.skip(f"no cgroup2 hierarchy at {UNIFIED}")
    made = []

    def make(devices):
        group = V2Cgroup("test-" + uuid.uuid4().hex[:12], root=UNIFIED)
        made.append(group)
        group.create(Limits(devices=devices))
        return group
    yield make
    for group in made:  # its processes were reaped by run_in
        group.destroy()
        assert not os.path.exists(group.path)


def run_in(group, script):
    """sh -c script, already in `group` when it execs (as the runtime puts a container's init)."""
    return subprocess.run(["sh", "-c", script], preexec_fn=lambda: group.add(os.getpid()),
                          capture_output=True, text=True, timeout=30)


def open_nodes(group, tmp_path, disk):
    """mknod the host disk (a loop device) in tmp_path, on a filesystem without nodev; open
    it and /dev/null. One "name=ok" or "name=error" line each."""
    major, minor = disk
    node = tmp_path / "disk"
    result = run_in(group, f"mknod {node} b {major} {minor} && echo mknod=ok;"
                    f"head -c 8 {node} && echo; head -c 1 /dev/null && echo null=ok")
    return result.stdout.splitlines(), result.stderr


def test_the_default_rules_refuse_a_disk_node_and_allow_dev_null(v2_group, tmp_path, host_disk):
    out, err = open_nodes(v2_group(container_rules()), tmp_path, host_disk)
    # mknod is allowed (runc's "b *:* m"), the open(2) is not: EPERM from the program
    assert out == ["mknod=ok", "null=ok"]
    assert f"cannot open '{tmp_path}/disk' for reading: Operation not permitted" in err


def test_privileged_attaches_no_program(v2_group, tmp_path, host_disk):
    """The same with --privileged's rules (None): proof the refusal above was the program's."""
    out, err = open_nodes(v2_group(None), tmp_path, host_disk)
    assert out == ["mknod=ok", "HOSTDISK", "null=ok"], err
