"""Real engines driving an OCI runtime: a private dockerd (tests/conftest.py's, made by
tests/harness.py's private_dockerd) and a private podman.

Each engine gets its own state under a temp directory and touches no host network: dockerd
runs with --bridge=none --iptables=false --ip-forward=false on its own socket (it starts its
own containerd), podman with --root/--runroot of its own, and every container has
--network none. The image is a tarball of the host's busybox-static, imported (no registry).

The host's hard RLIMIT_NOFILE and RLIMIT_NPROC may be below the engines' defaults, where runc
fails as well: every container gets --ulimit nofile=1024:1024 --ulimit nproc=1024:1024.
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.harness import (ENGINE_IMAGE as IMAGE, RUNTIMES, ULIMITS, remove_cgroup_tree,
                           remove_engine_dir)


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
        left = remove_engine_dir(top)
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
    top = engine_argv[2]
    assert remove_cgroup_tree(os.path.basename(top) if box.name == "docker" else
                              "libpod_parent") == []
