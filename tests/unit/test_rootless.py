"""Rootless mode's decisions, one by one (the real thing: tests/integration/test_rootless.py).
Faked here only what this host cannot show: a disabled sysctl, a cgroup v2 host, rootless
mode itself for a test run as root."""
import functools
import io
import os
import tarfile

import click
import pytest

from minibox import cli, namespaces, rootless
from minibox.images import layers
from minibox.errors import MiniboxError
from minibox.bridge import NetworkError
from minibox.network import check_options, parse_mode
from minibox.spec import PortMapping
from minibox.docker import docker_mounts


def gate(name):
    """The CLI's rootless gate for `minibox NAME`, with that command's own declaration."""
    group = cli.minibox
    *groups, leaf = name.split()
    for word in groups:
        group = group.get_command(click.Context(group), word)
    cli.check_caller(name, group.get_command(click.Context(group), leaf).rootless)


@pytest.fixture
def without_root(monkeypatch):
    monkeypatch.setattr(rootless, "ENABLED", True)


def test_root_may_run_every_command(monkeypatch):
    monkeypatch.setattr(rootless, "ENABLED", False)
    for command in ("run", "network ls", "image import", "create"):
        gate(command)


@pytest.mark.parametrize("command", ["network ls", "image import", "create", "stats"])
def test_a_user_is_told_which_commands_need_root(without_root, command):
    with pytest.raises(MiniboxError, match=f"^`minibox {command}` must be run as root "
                                           r"\(try sudo\); without root minibox can: run, exec"):
        gate(command)


@pytest.mark.parametrize("sysctl, value, cause", [
    ("kernel/unprivileged_userns_clone", "0", r"\(sysctl kernel.unprivileged_userns_clone=0\)"),
    ("kernel/apparmor_restrict_unprivileged_userns", "1", "AppArmor restricts"),
])
def test_run_names_what_forbids_user_namespaces(without_root, monkeypatch, tmp_path, sysctl,
                                                value, cause):
    (tmp_path / sysctl).parent.mkdir(parents=True)
    (tmp_path / sysctl).write_text(value + "\n")
    monkeypatch.setattr(namespaces, "check_unprivileged_user_namespaces", functools.partial(
        namespaces.check_unprivileged_user_namespaces, str(tmp_path)))
    with pytest.raises(MiniboxError, match=f"^rootless mode needs a user namespace, but .*{cause}"):
        gate("run")
    gate("ps")  # only making containers needs the user namespace


def test_state_goes_to_the_runtime_dir_or_a_private_tmp_dir(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert rootless.state_root() == "/run/user/1000/minibox"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert rootless.state_root() == f"/tmp/minibox-{os.getuid()}"


def test_images_go_to_the_users_data_dir(monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/ada")
    assert rootless.image_store() == "/home/ada/.local/share/minibox"


def test_no_cgroup_is_delegated_on_a_v1_host(tmp_path):
    (tmp_path / "self.cgroup").write_text("4:memory:/x\n0::/\n")
    assert rootless.delegated_cgroup(str(tmp_path / "self.cgroup"), str(tmp_path)) is None


def test_a_writable_own_v2_cgroup_is_delegated(tmp_path):
    own = tmp_path / "user.slice/user@1000.service/app.slice/run.scope"
    own.mkdir(parents=True)
    for name in ("cgroup.procs", "cgroup.subtree_control"):
        (own / name).write_text("")
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "self.cgroup").write_text(f"0::/{own.relative_to(tmp_path)}\n")
    assert rootless.delegated_cgroup(str(tmp_path / "self.cgroup"), str(tmp_path)) == str(own)
    (tmp_path / "self.cgroup").write_text("0::/somebody/else\n")
    assert rootless.delegated_cgroup(str(tmp_path / "self.cgroup"), str(tmp_path)) is None


def test_limits_with_a_delegated_cgroup_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(rootless, "delegated_cgroup", lambda: "/sys/fs/cgroup/mine")
    with pytest.raises(MiniboxError, match="your cgroup /sys/fs/cgroup/mine is delegated to "
                                           "you, but minibox does not place containers"):
        rootless._refuse_cgroup_limits()


def test_devpts_gets_no_unmapped_tty_group(without_root):
    devpts = next(m for m in docker_mounts("/x") if m.type == "devpts")
    assert "gid=5" not in devpts.options and "newinstance" in devpts.options


def test_the_default_network_is_none_without_root(without_root):
    assert parse_mode(None).kind == "none"


@pytest.mark.parametrize("mode, ip, publish, says", [
    ("bridge", None, [], "--network bridge needs root"),
    ("none", None, [PortMapping("127.0.0.1", 8080, 80)], "-p needs root"),
    ("none", "10.199.0.9", [], "--ip needs root"),
    ("container:web", None, [], "--network container:web needs root"),
])
def test_networks_that_need_root_are_refused(without_root, mode, ip, publish, says):
    with pytest.raises(NetworkError, match=f"^{says}"):
        check_options(parse_mode(mode), ip, publish)


def test_layers_keep_the_callers_ownership(without_root, tmp_path):
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        info = tarfile.TarInfo("www/index.html")
        info.uid = info.gid = 33
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    packed.seek(0)
    with tarfile.open(fileobj=packed) as tar:
        layers.unpack(tar, str(tmp_path))
    made = os.stat(tmp_path / "www/index.html")
    assert (made.st_uid, made.st_gid) == (os.geteuid(), os.getegid())
