"""Shared pytest setup: skip root/vm tests with a clear reason when they can't run here;
the leak checks; the session's private dockerd (tests/engines/ and test_oci.py use it)."""
import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    not_root = pytest.mark.skip(reason="needs root: run `sudo make test`")
    no_qemu = pytest.mark.skip(reason="needs qemu-system-x86_64: run `sudo make setup`")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(not_root)
        if "vm" in item.keywords and shutil.which("qemu-system-x86_64") is None:
            item.add_marker(no_qemu)


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    """Every test as root: afterwards every container its Minibox objects still hold is
    removed, and nothing of what the test made may be left (tests/harness.py's
    leftovers(): processes, state directories, mounts, cgroups, veths, leases). Autouse, so
    it is set up first and checks last, after the test's other fixtures have ended."""
    if os.geteuid() != 0 or "root" not in request.keywords:
        yield
        return
    from tests import harness
    harness.MADE.clear()
    before = harness.snapshot()
    yield
    for box in harness.MADE:
        box.remove_all()
    left = harness.leftovers(before, harness.MADE)
    if left:
        pytest.fail(f"left behind: {left}")
    for box in harness.MADE:
        shutil.rmtree(box.root, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_vm_left_behind(request, tmp_path_factory, monkeypatch):
    """Every VM test (as root): its minivm runs get a VM root and a $TMPDIR of their own and
    a tag in their environment, which QEMU inherits; afterwards none of its QEMU processes,
    VM directories, scratch files or dead runs' address leases may be left."""
    if os.geteuid() != 0 or "vm" not in request.keywords:
        yield
        return
    from tests.helpers import minivm_leftovers
    private = tmp_path_factory.mktemp("minivm")
    tag = f"MINIVM_TEST_TAG={os.urandom(8).hex()}"
    for name, value in (("MINIVM_ROOT", private / "vms"), ("TMPDIR", private / "tmp"),
                        tuple(tag.split("="))):
        monkeypatch.setenv(name, str(value))
    (private / "tmp").mkdir()
    yield
    left = minivm_leftovers(private / "vms", private / "tmp", tag)
    if left:
        pytest.fail(f"minivm left behind: {left}")


@pytest.fixture(scope="session")
def image_store(tmp_path_factory):
    """One image store for the session: the busybox image is built once."""
    return str(tmp_path_factory.mktemp("store"))


@pytest.fixture
def minibox(image_store, monkeypatch):
    """The minibox CLI with a private state root, the session's image store (tests/harness.py's
    Minibox). Its environment is the test's too, for what a test starts by other means."""
    from tests.harness import Minibox
    box = Minibox(image_store)
    monkeypatch.setenv("MINIBOX_ROOT", box.root)
    monkeypatch.setenv("MINIBOX_STORE", image_store)
    return box


@pytest.fixture(scope="session", autouse=True)
def no_bridge_left_behind():
    """`run` defaults to the bridge network, so tests create minibox0 on this host; remove it
    after the session unless it was there before (a bridge stays on purpose, like docker0,
    but a test run should leave the host as it found it)."""
    import socket
    try:
        socket.if_nametoindex("minibox0")
        existed = True
    except OSError:
        existed = False
    yield
    if not existed and os.geteuid() == 0:
        from minibox import bridge
        bridge.remove_bridge_if_unused()


@pytest.fixture(scope="session")
def rootfs_tar():
    from tests.harness import busybox_rootfs_tar
    return busybox_rootfs_tar()


@pytest.fixture(scope="session")
def dockerd(rootfs_tar):
    """harness.private_dockerd, one for the whole session: (its command line, its temp dir)."""
    if shutil.which("dockerd") is None:
        pytest.skip("needs Debian's docker.io: run `sudo make setup`")
    from tests.harness import private_dockerd
    with private_dockerd(rootfs_tar) as daemon:
        yield daemon
