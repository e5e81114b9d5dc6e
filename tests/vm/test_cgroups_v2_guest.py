"""minibox on cgroup v2, for real: this host only has v1 controllers; a guest can have v2 only.

`minivm sandbox` boots Debian's kernel with `cgroup_no_v1=all` and shares the host's root
read-only, so the guest sees this checkout, its virtualenv and the Python it points at, and
runs minibox there. The guest script mounts cgroup2 at /sys/fs/cgroup and a tmpfs for
minibox's state and images (overlayfs refuses the sandbox's own overlay as an upper layer),
then prints what it found as `key: value` lines, which the test checks here. Containers run
with `--network none`: the guest has no bridge module loaded, and the test is about cgroups.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.helpers import debian_kernel, initrds_of, qemu_pids_of

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root]

PROJECT = Path(__file__).resolve().parents[2]

GUEST_SCRIPT = r"""
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /minibox-state && mount -t tmpfs minibox-state /minibox-state
export MINIBOX_ROOT=/minibox-state/run MINIBOX_STORE=/minibox-state/store
minibox() { "$PYTHON" -m minibox "$@"; }
echo "mounts: $(grep cgroup /proc/mounts | cut -d' ' -f1-3 | tr '\n' ';')"
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "version: $("$PYTHON" -c 'from minibox.cgroups import cgroup_version; print(cgroup_version())')"
id=$(minibox run --network none -d -m 32m --pids-limit 20 busybox sleep 60)
echo "memory.max: $(cat /sys/fs/cgroup/minibox/"$id"*/memory.max)"
echo "pids.max: $(cat /sys/fs/cgroup/minibox/"$id"*/pids.max)"
echo "members: $(cat /sys/fs/cgroup/minibox/"$id"*/cgroup.procs | wc -l)"
minibox rm -f "$id" >/dev/null
minibox run --network none --rm -m 32m busybox awk 'BEGIN { s = "x"; while (1) s = s s }' 2>/tmp/oom.err
echo "oom status: $?"
echo "oom message: $(cat /tmp/oom.err)"
minibox run --network none --rm --pids-limit 20 --stats busybox sh -c \
    'bomb() { bomb | bomb & }; bomb 2>/dev/null; exec sleep 3' 2>/tmp/bomb.err
echo "bomb status: $?"
echo "bomb stats: $(grep 'max pids' /tmp/bomb.err)"
echo "left: $(find /sys/fs/cgroup/minibox -mindepth 1 -type d)"
"""


def test_minibox_limits_work_on_a_cgroup_v2_only_kernel(guest_kernel):
    process = subprocess.Popen(
        [sys.executable, "-m", "minivm", "sandbox", "--kernel", str(debian_kernel()),
         "-m", "768M", "--append", "cgroup_no_v1=all", "--",
         "env", f"PYTHON={sys.executable}", "/bin/sh", "-c", GUEST_SCRIPT], cwd=PROJECT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    facts = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)

    assert facts["mounts"] == "cgroup2 /sys/fs/cgroup cgroup2;"  # no v1 hierarchy at all
    assert {"memory", "pids", "cpu"} <= set(facts["controllers"].split())
    assert facts["version"] == "2"
    assert facts["memory.max"] == str(32 * 1024 * 1024)
    assert facts["pids.max"] == "20"
    assert facts["members"] == "1"  # the container's init: sleep
    assert facts["oom status"] == "137"
    assert re.fullmatch(r"minibox: container [0-9a-f]{12} was killed by the OOM killer "
                        r"\(memory limit 32 MiB\)", facts["oom message"])
    assert facts["bomb status"] == "0"
    assert re.search(r"max pids 20\b", facts["bomb stats"])
    assert facts["left"] == ""  # no container cgroup is left under minibox/
    assert qemu_pids_of(process.pid) == [] and initrds_of(process.pid) == []

