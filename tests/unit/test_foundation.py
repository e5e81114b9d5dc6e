"""Unit tests of the foundation's pure parts: no root, no containers."""
import os

import pytest

from minibox import explain, rootfs, shared, spec, state
from minibox.errors import MiniboxError


def test_parse_env_accepts_values_with_equals_and_copies_host_values():
    env = spec.parse_env(["A=1", "B=x=y", "HOMEISH"], host_env={"HOMEISH": "h"})
    assert env == {"A": "1", "B": "x=y", "HOMEISH": "h"}


@pytest.mark.parametrize("bad", ["=value", "A B=1", ""])
def test_parse_env_rejects_bad_names(bad):
    with pytest.raises(MiniboxError, match="invalid environment variable"):
        spec.parse_env([bad])


def test_parse_volume(tmp_path):
    volume = spec.parse_volume(f"{tmp_path}:/data:ro")
    assert (volume.host_path, volume.container_path, volume.readonly) == (str(tmp_path), "/data", True)
    with pytest.raises(MiniboxError, match="must be absolute"):
        spec.parse_volume(f"{tmp_path}:data")
    with pytest.raises(MiniboxError, match="expected HOSTDIR:CONTAINERDIR"):
        spec.parse_volume(f"{tmp_path}:/a:rx")


def test_path_in_root_never_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")            # absolute link: resolved inside root
    os.symlink("../../../..", root / "up")      # climbing link: stops at root
    os.symlink("loop", root / "loop")
    assert rootfs.path_in_root(str(root), "/abs/passwd") == str(root / "etc" / "passwd")
    assert rootfs.path_in_root(str(root), "/up/etc") == str(root / "etc")
    assert rootfs.path_in_root(str(root), "../../x") == str(root / "x")
    with pytest.raises(MiniboxError, match="too many levels"):
        rootfs.path_in_root(str(root), "/loop")


def test_explain_points_at_the_def_line_of_each_step():
    location = explain.where(rootfs.pivot_to)
    path, line = location.rsplit(":", 1)
    assert path == "minibox/rootfs.py"
    with open(rootfs.__file__) as source:
        assert source.read().splitlines()[int(line) - 1].startswith("def pivot_to(")


def test_explain_narrates_with_arguments(capsys):
    explain.configure(True)
    try:
        rootfs.check_overlay_support()  # not a step: prints nothing
        assert capsys.readouterr().err == ""
        explain.say("title", "mount(x)", "mount(2)", "minibox/rootfs.py:1")
        assert "=> title" in capsys.readouterr().err
    finally:
        explain.configure(False)


def test_ledger_release_runs_newest_first_and_keeps_kinds(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "names"))
    released = []
    monkeypatch.setitem(state.RELEASE, "thing", lambda entry: released.append(entry["n"]))
    directory = state.ContainerDir.create("c1", name="web")
    directory.record("thing", n=1)
    directory.record("thing", n=2)
    directory.release_all(keep=("dir", "name"))
    assert released == [2, 1]
    assert [e["kind"] for e in directory.entries()] == ["dir", "name"]
    assert state.find("web").id == "c1" and state.find("c").id == "c1"
    with pytest.raises(MiniboxError, match="already in use"):
        state.ContainerDir.create("c2", name="web")
    assert state.find("web").id == "c1"  # the loser did not free the winner's name
    directory.release_all()
    assert not os.path.exists(directory.path)
    with pytest.raises(MiniboxError, match="no such container"):
        state.find("web")


def test_removing_a_container_directory_never_follows_a_symlink(tmp_path, monkeypatch):
    """What a container left in its writable layer goes with it: nested and unreadable
    directories too (overlayfs makes work/work mode 000), but a symbolic link is removed,
    never followed, even one to a directory outside."""
    monkeypatch.setattr(state, "ROOT", str(tmp_path / "run"))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "run" / "names"))
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "file").write_text("host data")
    directory = state.ContainerDir.create("c1")
    upper = os.path.join(directory.path, "upper")
    os.makedirs(os.path.join(upper, "a", "b"))
    with open(os.path.join(upper, "a", "b", "file"), "w") as file:
        file.write("container data")
    os.symlink(outside, os.path.join(upper, "link-to-dir"))
    os.symlink(outside / "keep" / "file", os.path.join(upper, "a", "link-to-file"))
    os.makedirs(os.path.join(directory.path, "work", "work"), mode=0)
    directory.release_all()
    assert not os.path.exists(directory.path)
    assert (outside / "keep" / "file").read_text() == "host data"


def test_state_is_replaced_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "names"))
    directory = state.ContainerDir.create("c1")
    directory.save({"status": "created"})
    directory.update(status="running", pid=5)
    assert directory.load() == {"status": "running", "pid": 5}
    assert sorted(os.listdir(directory.path)) == ["ledger", "state.json"]


def test_process_identity_survives_pid_reuse_check():
    me = os.getpid()
    assert shared.process_alive(me, shared.process_start_time(me))
    assert not shared.process_alive(me, shared.process_start_time(me) + 1)
    assert shared.process_start_time(2 ** 22 + 1) is None


def test_a_kernel_without_a_namespace_type_is_named(monkeypatch):
    # This kernel has them all; what a kernel without one would show is faked here.
    from minibox import namespaces
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda p: False if p == "/proc/self/ns/cgroup" else real_exists(p))
    with pytest.raises(MiniboxError, match="no cgroup namespace .*CONFIG_CGROUPS"):
        namespaces.check_kernel_support()


def test_a_kernel_without_overlayfs_is_named(monkeypatch):
    import builtins
    import io
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: io.StringIO("nodev\tproc\n")
                        if p == "/proc/filesystems" else real_open(p, *a, **k))
    with pytest.raises(MiniboxError, match="no overlayfs"):
        rootfs.check_overlay_support()


def test_listing_survives_a_container_directory_that_vanishes(tmp_path, monkeypatch):
    """`gc` racing with `run --rm` once failed: the sort key stat(2)ed a directory that had
    just been removed."""
    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "names"))
    state.ContainerDir.create("stays")
    state.ContainerDir.create("goes")
    real_scandir = os.scandir

    def scandir_then_remove(path):
        entries = list(real_scandir(path))
        os.unlink(tmp_path / "goes" / "ledger")  # gone between readdir and stat
        os.rmdir(tmp_path / "goes")
        return iter(entries)
    monkeypatch.setattr(os, "scandir", scandir_then_remove)
    assert [d.id for d in state.all_containers()] == ["stays"]


def test_a_directory_without_state_is_garbage_once_its_owner_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "names"))
    mine = state.ContainerDir.create("mine")
    assert mine.being_made()  # we made it and we live
    dead = state.ContainerDir.create("dead")
    with open(dead.file("ledger"), "w") as ledger:  # as if a killed process had made it
        ledger.write('{"kind": "dir", "path": "x", "owner": 4194305, "owner_start": 1}\n')
    assert not dead.being_made()


def test_a_damaged_ledger_still_releases_the_rest_and_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    monkeypatch.setattr(state, "NAMES", str(tmp_path / "names"))
    released = []
    monkeypatch.setitem(state.RELEASE, "thing", lambda entry: released.append(entry["n"]))
    directory = state.ContainerDir.create("c1", name="web")
    directory.record("thing", n=1)
    with open(directory.file("ledger"), "a") as ledger:
        ledger.write('\xff{"kind": "nosuchkind"}\n[1, 2]\n{"kind": "dir", "path": "/etc"}\n'
                     '{"kind": "thing", "n": 2}\n{"kind": "thing", "n"')  # cut short
    directory.release_all()
    assert released == [2, 1]
    assert os.listdir(tmp_path) == ["names"] and os.listdir(tmp_path / "names") == []
    assert os.path.isdir("/etc")
