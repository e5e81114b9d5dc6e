"""The leak check itself (tests/harness.py): it must catch a cgroup this session leaked,
and must not blame this session for another session's container. (Other sessions on the
machine may make cgroups meanwhile: each test looks only at the one it made.)"""
import os
import subprocess

import pytest

from minibox.cgroups import cgroup_for
from tests import harness

pytestmark = pytest.mark.root


@pytest.fixture
def minibox_group():
    """Where containers' cgroups go (the shared minibox/ group of one hierarchy), and a
    fresh name in it; the directory is removed afterwards if a test made it."""
    parent = os.path.dirname(cgroup_for("x").paths()[0])
    made_parent = not os.path.isdir(parent)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f"harness-test-{os.getpid()}")
    yield path
    if os.path.isdir(path):
        os.rmdir(path)
    if made_parent:
        try:
            os.rmdir(parent)
        except OSError:  # another session's container moved in meanwhile
            pass


def test_an_empty_cgroup_left_behind_is_a_leak(minibox_group):
    before = harness.cgroup_dirs()
    os.mkdir(minibox_group)
    assert minibox_group in harness.leaked_cgroups(before, ids=(), grace=0.2)


def test_a_cgroup_named_after_a_container_of_ours_is_a_leak_even_in_use(minibox_group):
    before = harness.cgroup_dirs()
    os.mkdir(minibox_group)
    with _foreign_process_in(minibox_group):
        assert minibox_group in harness.leaked_cgroups(
            before, ids={os.path.basename(minibox_group)}, grace=0.2)


def test_another_sessions_container_is_not_ours(minibox_group):
    before = harness.cgroup_dirs()
    os.mkdir(minibox_group)
    with _foreign_process_in(minibox_group):
        assert minibox_group not in harness.leaked_cgroups(before, ids=(), grace=0.2)


class _foreign_process_in:
    """A `sleep` that is not this session's (its parent is gone: it is re-parented away
    from this process tree) in the cgroup `path`, for the block; killed by its PID after."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.pid = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                                      capture_output=True, text=True, check=True).stdout)
        with open(os.path.join(self.path, "cgroup.procs"), "w") as procs:
            procs.write(str(self.pid))
        return self

    def __exit__(self, *_):
        os.kill(self.pid, 9)
        harness.wait_until(lambda: not _in_cgroup(self.path), timeout=5)


def _in_cgroup(path):
    with open(os.path.join(path, "cgroup.procs")) as procs:
        return procs.read().split()
