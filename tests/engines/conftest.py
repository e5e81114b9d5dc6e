"""Real engines driving an OCI runtime: a private dockerd and a private podman.

Each engine gets its own state under a temp directory and touches no host network: dockerd
runs with --bridge=none --iptables=false --ip-forward=false on its own socket (it starts its
own containerd), podman with --root/--runroot of its own, and every container has
--network none. The image is a tarball of the host's busybox-static, imported (no registry).

The host's hard RLIMIT_NOFILE and RLIMIT_NPROC may be below the engines' defaults, where runc
fails as well: every container gets --ulimit nofile=1024:1024 --ulimit nproc=1024:1024.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests import imagebuilder
from tests.harness import remove_cgroup_tree

IMAGE = "busybox:engine-test"
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# The runtimes the engines are tested with: runc is the control (the harness is right).
RUNTIMES = {"runc": shutil.which("runc"),
            "minibox": os.path.join(os.path.dirname(sys.executable), "minibox")}


def busybox_rootfs_tar():
    """A root filesystem as a tar: static busybox with every applet, the usual directories."""
    applets = subprocess.run([imagebuilder.BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries = [entry for entry in imagebuilder.busybox_entries() if entry[0] != "symlink"]
    entries += [("symlink", f"bin/{applet}", "/bin/busybox") for applet in applets
                if applet != "busybox"]
    entries += [("dir", name) for name in ("proc", "sys", "dev", "tmp", "root", "var")]
    entries.append(("file", "etc/group", "root:x:0:\n"))
    return imagebuilder.layer_tar(entries)


class Engine:
    """One engine's command line (`docker -H ...`, `podman --root ...`) with a runtime."""

    def __init__(self, name, argv, runtime, runtime_flags):
        self.name, self.argv, self.runtime = name, argv, runtime
        self.runtime_flags = runtime_flags  # what `run` and `create` need to use `runtime`

    def __call__(self, *args, check=True, timeout=60, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        result = subprocess.run([*self.argv, *args], text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def run(self, *args, **kwargs):
        """`ENGINE run` with this runtime, no network, the ulimits, then ARGS."""
        return self("run", *self.runtime_flags, "--network", "none", *ULIMITS, *args,
                    **kwargs)

    def state(self, container):
        return self("inspect", "-f", "{{.State.Status}}", container).stdout.strip()


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _remove_engine_dir(top):
    """Remove an engine's temp dir; returns the mounts it had left under it (unmounted now)."""
    with open("/proc/self/mountinfo") as mountinfo:
        left = [line.split()[4] for line in mountinfo if line.split()[4].startswith(top)]
    for mount_point in reversed(left):
        subprocess.run(["umount", "-l", mount_point])
    shutil.rmtree(top, ignore_errors=True)
    return left


@pytest.fixture(scope="session")
def rootfs_tar():
    return busybox_rootfs_tar()


@pytest.fixture(scope="session")
def dockerd(rootfs_tar):
    """A dockerd of the test's own (socket, data and exec roots under a temp dir), knowing
    minibox as the runtime `minibox`; stopped by its PID afterwards."""
    if shutil.which("dockerd") is None:
        pytest.skip("needs Debian's docker.io: run `sudo make setup`")
    top = tempfile.mkdtemp(prefix="minibox-dockerd-", dir="/run")
    socket = os.path.join(top, "docker.sock")
    log = open(os.path.join(top, "dockerd.log"), "w")
    daemon = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none",
         "--data-root", os.path.join(top, "data"), "--exec-root", os.path.join(top, "exec"),
         "--pidfile", os.path.join(top, "dockerd.pid"), "-H", f"unix://{socket}",
         "--add-runtime", f"minibox={RUNTIMES['minibox']}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    argv = ["docker", "-H", f"unix://{socket}"]
    try:
        _wait_for(lambda: subprocess.run([*argv, "version"], capture_output=True).returncode == 0
                  or daemon.poll() is not None, 60, "dockerd to answer")
        assert daemon.poll() is None, open(log.name).read()[-2000:]
        subprocess.run([*argv, "import", "-", IMAGE], input=rootfs_tar, capture_output=True,
                       check=True)
        yield argv, top
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        left = _remove_engine_dir(top)
        assert left == [], f"dockerd left mounts behind: {left}"
        assert remove_cgroup_tree("docker") == []


@pytest.fixture(scope="session")
def podman_argv(rootfs_tar):
    """podman with a storage and run root of the test's own, cgroupfs (no systemd)."""
    if shutil.which("podman") is None:
        pytest.skip("needs Debian's podman: run `sudo make setup`")
    top = tempfile.mkdtemp(prefix="minibox-podman-", dir="/run")
    argv = ["podman", "--root", os.path.join(top, "root"), "--runroot", os.path.join(top, "run"),
            "--tmpdir", os.path.join(top, "tmp"), "--cgroup-manager", "cgroupfs",
            "--events-backend", "file"]
    try:
        subprocess.run([*argv, "import", "-", IMAGE], input=rootfs_tar, capture_output=True,
                       check=True)
        yield argv, top
    finally:
        subprocess.run([*argv, "rm", "-a", "-f"], capture_output=True)
        subprocess.run([*argv, "system", "reset", "-f"], capture_output=True)
        left = _remove_engine_dir(top)
        assert left == [], f"podman left mounts behind: {left}"
        assert remove_cgroup_tree("libpod_parent") == []


@pytest.fixture(params=["docker", "podman"])
def engine_argv(request):
    """(engine name, its command line, its temp dir), each engine in turn."""
    argv, top = request.getfixturevalue("dockerd" if request.param == "docker" else
                                        "podman_argv")
    return request.param, argv, top


def make_engine(engine_argv, runtime):
    name, argv, _ = engine_argv
    flags = ["--runtime", runtime if name == "docker" else RUNTIMES[runtime]]
    if name == "docker" and runtime == "runc":
        flags = []  # docker's default runtime
    return Engine(name, argv, runtime, flags)


@pytest.fixture(params=["runc", "minibox"])
def runtime(request):
    return request.param


@pytest.fixture
def engine(engine_argv, runtime):
    """An engine driving `runtime`; at the end every container it still has is removed."""
    box = make_engine(engine_argv, runtime)
    yield box
    names = box("ps", "-aq", check=False).stdout.split()
    if names:
        box("rm", "-f", *names, check=False)
    assert box("ps", "-aq").stdout.split() == []
    # Before the suite's cgroup check: the engine's parent groups are empty now.
    assert remove_cgroup_tree("docker" if box.name == "docker" else "libpod_parent") == []
