"""Running the real `minibox` command in tests, with private state and image dirs, and
checking that nothing it made is left behind (processes, mounts, directories, cgroups,
veths and address leases).

Import the `minibox` fixture into a test module to use it instead of conftest's simpler one.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from minibox import network


class Minibox:
    """`minibox` with MINIBOX_ROOT/MINIBOX_STORE in private directories."""

    def __init__(self, root, store):
        self.root = root
        self.env = dict(os.environ, MINIBOX_ROOT=root, MINIBOX_STORE=store)
        self.seen = set()  # every container id this test made: for the cgroup check

    def run_detached(self, *args):
        """`minibox run -d ARGS`; returns the id."""
        container_id = self("run", "-d", *args).stdout.strip()
        self.seen.add(container_id)
        return container_id

    def __call__(self, *args, check=True, timeout=60, **kwargs):
        kwargs.setdefault("capture_output", "stdout" not in kwargs)
        result = subprocess.run([sys.executable, "-m", "minibox", *args], env=self.env,
                                text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"minibox {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def popen(self, *args, **kwargs):
        return subprocess.Popen([sys.executable, "-m", "minibox", *args], env=self.env,
                                text=True, **kwargs)

    def state(self, container_id):
        """state.json as the monitor wrote it."""
        with open(os.path.join(self.root, self.full_id(container_id), "state.json")) as saved:
            return json.load(saved)

    def full_id(self, prefix):
        names = os.path.join(self.root, "names", prefix)
        if os.path.islink(names):
            return os.readlink(names)
        matches = [d for d in os.listdir(self.root) if d.startswith(prefix)]
        assert len(matches) == 1, matches
        return matches[0]

    def status(self, container_id):
        ps = self("ps", "-a").stdout.splitlines()
        return next(line for line in ps if line.startswith(container_id[:12]))

    def container_dirs(self):
        if not os.path.isdir(self.root):
            return []
        return [d for d in os.listdir(self.root) if d != "names"]


@pytest.fixture
def minibox(image_store):
    """A private minibox; at the end every container it still has is removed and the test
    fails if anything of any container was left behind."""
    # Not under /tmp: anything that reads every file there (a grep -r of another test
    # session) would open a created container's exec.fifo -- and so start it.
    root = tempfile.mkdtemp(prefix="minibox-test-", dir="/run")
    mounts_before = host_mounts()
    box = Minibox(root, image_store)
    yield box
    box.seen.update(box.container_dirs())
    for container_id in box.container_dirs():
        box("rm", "-f", container_id, check=False)
    assert leftovers(root, mounts_before, box.seen) == {}
    shutil.rmtree(root)


def wait_until(predicate, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def host_mounts():
    """The host's mount table without mount ids (mountinfo(5) fields 5 and on)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return sorted(" ".join(line.split()[4:]) for line in mountinfo)


def _processes_using(root):
    """PIDs whose root, cwd or environment points into the private state dir: containers
    (their root is below it) and monitors (MINIBOX_ROOT in their environment)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(pid) == os.getpid():
                continue
            links = [os.readlink(f"/proc/{pid}/{name}") for name in ("root", "cwd")]
            with open(f"/proc/{pid}/environ", "rb") as environ:
                env = environ.read()
        except OSError:
            continue
        if any(link.startswith(root) for link in links) or \
                f"MINIBOX_ROOT={root}\0".encode() in env:
            found.append(int(pid))
    return found


def leftovers(root, mounts_before, container_ids=()):
    """Everything containers under `root` may have left, by kind; {} when clean. Processes
    get a moment to be reaped (a killed PID namespace empties asynchronously)."""
    found = {}
    deadline = time.monotonic() + 5
    while _processes_using(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _processes_using(root):
        found["processes"] = _processes_using(root)
    directories = [d for d in os.listdir(root) if d != "names"] if os.path.isdir(root) else []
    if directories:
        found["directories"] = directories
    if os.path.isdir(os.path.join(root, "names")) and os.listdir(os.path.join(root, "names")):
        found["names"] = os.listdir(os.path.join(root, "names"))
    mounts = set(host_mounts()) - set(mounts_before)
    mounts = {m for m in mounts if root in m}
    if mounts:
        found["mounts"] = sorted(mounts)
    ids = set(container_ids) | set(directories)
    cgroups = [path for container_id in ids
               for path in glob.glob(f"/sys/fs/cgroup/*/**/{container_id}", recursive=True)]
    if cgroups:
        found["cgroups"] = cgroups
    veths = [name for name in map(network.host_ifname, ids) if network.link_exists(name)]
    if veths:
        found["veths"] = veths
    pool = network.address_pool().directory
    leases = [lease.name for lease in pool.glob("*.*.*.*") if lease.read_text() in ids]
    if leases:
        found["leases"] = leases
    return found
