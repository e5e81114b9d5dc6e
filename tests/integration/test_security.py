"""Security from inside real containers: capability masks, no_new_privs, seccomp, --read-only,
--user, nodev, and the escape lab (examples/escapes/), each checked as the kernel shows it."""
import json
import os
import subprocess
import sys

import pytest

from minibox import seccomp, security
from tests.harness import cgroup_dirs, wait_until
from tests.helpers import assert_one_line_error
from tests.seccomp_cases import HARMLESS_CALLS

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = security.capability_mask(security.DOCKER_DEFAULT_CAPABILITIES)
CLONE_NEWUTS, CLONE_NEWUSER, CLONE_FILES, SIGCHLD = 0x04000000, 0x10000000, 0x400, 17
# Namespace-creating calls the filter refuses, and two harmless ones it must let through.
NAMESPACE_CALLS = {"unshare_newuts": (272, [CLONE_NEWUTS]),
                   "clone_newuser": (56, [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0])}
ALLOWED_CALLS = {"unshare_files": (272, [CLONE_FILES]), "getppid": (110, [])}


def status(minibox, *flags):
    """The container's /proc/self/status as a dict (of the `cat` that reads it)."""
    result = minibox("run", "--rm", *flags, "busybox", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    return dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)


def cap_masks(fields):
    return {name: int(fields[name], 16)
            for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def every_set(mask):
    return {"CapInh": mask, "CapPrm": mask, "CapEff": mask, "CapBnd": mask, "CapAmb": 0}


def test_default_is_dockers_set_in_every_set_with_nnp_and_seccomp(minibox):
    fields = status(minibox)
    assert cap_masks(fields) == every_set(DEFAULT) == every_set(0xA80425FB)
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


def test_cap_add_and_cap_drop_change_every_set(minibox):
    fields = status(minibox, "--cap-add", "NET_ADMIN", "--cap-add", "cap_sys_ptrace",
                    "--cap-drop", "CHOWN")
    net_admin, sys_ptrace, chown = 1 << 12, 1 << 19, 1 << 0
    assert cap_masks(fields) == every_set(DEFAULT & ~chown | net_admin | sys_ptrace)


def test_cap_drop_all_leaves_nothing(minibox):
    assert cap_masks(status(minibox, "--cap-drop", "ALL")) == every_set(0)


def test_privileged_keeps_what_the_runtime_holds_and_turns_seccomp_off(minibox):
    fields = status(minibox, "--privileged")
    assert cap_masks(fields) == every_set(security.capability_mask(security.held_capabilities()))
    assert fields["Seccomp"] == "0"


def test_security_opts_turn_nnp_and_seccomp_off(minibox):
    fields = status(minibox, "--security-opt", "no-new-privileges=false",
                    "--security-opt", "seccomp=unconfined")
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("0", "0")
    assert cap_masks(fields) == every_set(DEFAULT)


def test_user_runs_the_command_without_capabilities(minibox):
    fields = status(minibox, "--user", "1000:1001")
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1001"] * 4
    assert cap_masks(fields) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DEFAULT,
                                 "CapAmb": 0}
    assert minibox("run", "--rm", "-u", "1000", "busybox", "id").stdout == "uid=1000 gid=0(root)\n"
    named = minibox("run", "--rm", "-u", "nobody", "busybox", "id").stdout
    assert named == "uid=65534(nobody) gid=65534(nogroup)\n"


@pytest.mark.parametrize("flags, message", [
    (["--cap-add", "NET_ADMINN"], "minibox: unknown capability 'NET_ADMINN'"),
    (["--cap-drop", "bogus"], "minibox: unknown capability 'bogus'"),
    (["--user", "alice"], "minibox: unable to find user alice: no matching entries"),
    (["--user", "a:b:c"], "minibox: invalid --user 'a:b:c'"),
    (["--security-opt", "seccomp=/etc/profile.json"], "only seccomp=unconfined is supported"),
    (["--security-opt", "apparmor=x"], "minibox: invalid --security-opt 'apparmor=x'"),
])
def test_bad_security_flags_are_one_line_and_make_nothing(minibox, flags, message):
    result = minibox("run", "--rm", *flags, "busybox", "true", check=False)
    assert_one_line_error(result, 125, "minibox: ", message)
    assert minibox.container_dirs() == []


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """A directory with the raw-syscall probe, built with gcc -static."""
    directory = str(tmp_path_factory.mktemp("probes"))
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", os.path.join(directory, "syscalls"),
                    os.path.join(REPO, "tests", "probes", "syscalls.c")], check=True)
    return directory


def syscalls_inside(minibox, probes, calls, *flags):
    """Make each (number, args) call from inside a container: {name: "ok" | errno name}."""
    argv = [f"{name}:{nr}:{','.join(map(str, args))}" for name, (nr, args) in calls.items()]
    result = minibox("run", "--rm", *flags, "-v", f"{probes}:/probes:ro", "busybox",
                     "/probes/syscalls", *argv)
    assert result.returncode == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())


def all_refused_calls():
    calls = {name: (seccomp.BLOCKED_SYSCALLS[name], args) for name, args in HARMLESS_CALLS.items()}
    return {**calls, **NAMESPACE_CALLS}


def test_each_blocked_syscall_gets_eperm_from_seccomp(minibox, probes):
    """--cap-add ALL: the capability checks would pass, so every EPERM is the filter's."""
    results = syscalls_inside(minibox, probes, {**all_refused_calls(), **ALLOWED_CALLS},
                              "--cap-add", "ALL")
    assert {name: results[name] for name in all_refused_calls()} == \
        {name: "EPERM" for name in all_refused_calls()}
    assert results["unshare_files"] == "ok" and results["getppid"] == "ok"


def test_without_seccomp_the_same_calls_fail_otherwise(minibox, probes):
    """Proof that the test above can fail: unconfined, none of them is refused with EPERM."""
    results = syscalls_inside(minibox, probes, all_refused_calls(), "--cap-add", "ALL",
                              "--security-opt", "seccomp=unconfined")
    assert [name for name, result in results.items() if result == "EPERM"] == []
    assert results["unshare_newuts"] == "ok"


def test_read_only_root_gives_erofs_but_tmp_is_writable(minibox, probes):
    result = minibox("run", "--rm", "--read-only", "busybox", "sh", "-c",
                     "touch /etc/x; echo ok > /tmp/y && cat /tmp/y; grep ' / / ' /proc/self/mountinfo")
    assert result.returncode == 0, result.stderr
    assert "touch: /etc/x: Read-only file system" in result.stderr  # strerror(EROFS)
    lines = result.stdout.splitlines()
    assert lines[0] == "ok"
    assert "ro" in lines[1].split()[5].split(",")  # the root mount's per-mount options


def test_every_directory_the_container_can_write_is_nodev(minibox):
    """A device node can be made only in a directory: each writable one must refuse to open it.
    (The device nodes bound into /dev and over masked files are mounts too, but not dirs.)"""
    result = minibox("run", "--rm", "busybox", "sh", "-c",
                     "while read -r _ _ _ _ point options _; do [ -d $point ] "
                     "&& echo $point $options; done < /proc/self/mountinfo", check=False)
    mounts = dict(line.split() for line in result.stdout.splitlines())
    writable = {point: options.split(",") for point, options in mounts.items()
                if "rw" in options.split(",")}
    assert {"/", "/dev", "/dev/shm"} <= set(writable)
    # devpts is the exception: its nodes are the ptys the kernel makes (nodev would break -t),
    # and it has no mknod(2) at all.
    assert [point for point, options in writable.items() if "nodev" not in options] == ["/dev/pts"]


def test_privileged_lifts_the_device_rules(minibox, host_disk):
    major, minor = host_disk
    result = minibox("run", "--rm", "--privileged", "busybox", "sh", "-c",
                     f"mknod /tmp/disk b {major} {minor} && head -c 8 /tmp/disk")
    assert (result.returncode, result.stdout) == (0, "HOSTDISK"), result.stderr


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/devices"), reason="no v1 devices controller")
def test_the_containers_devices_cgroup_lists_runcs_default_rules(minibox, tmp_path):
    """devices.list, read from the host while the container waits for /sync/go: the
    whitelist the kernel checks on each open(2) and mknod(2) of a device node."""
    waiting = minibox.popen(
        "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/sync", "busybox", "sh", "-c",
        "while [ ! -e /sync/go ]; do sleep 0.05; done", stdin=subprocess.DEVNULL)

    def devices_cgroup():
        # This container's own group (its id), not whatever else appears meanwhile.
        assert waiting.poll() is None, "no devices cgroup"
        return [path for path in cgroup_dirs() if path.startswith("/sys/fs/cgroup/devices/")
                and os.path.basename(path) in minibox.container_dirs()]
    try:
        made = wait_until(devices_cgroup, timeout=30)
        with open(os.path.join(made[0], "devices.list")) as listing:
            rules = listing.read().splitlines()
    finally:
        (tmp_path / "go").touch()
        waiting.wait(timeout=30)
    assert sorted(rules) == sorted(["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm",
                                    "c 5:0 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm",
                                    "c 5:2 rwm", "c 10:200 rwm"])


@pytest.fixture(scope="module")
def lab_results(tmp_path_factory, image_store):
    """Every escape, protected and unprotected: examples/escapes/run.py --json, run once."""
    env = {**os.environ, "MINIBOX_ROOT": str(tmp_path_factory.mktemp("run")),
           "MINIBOX_STORE": image_store}
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "escapes", "run.py"),
                             "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return {row["escape"]: row for row in json.loads(result.stdout)}


ESCAPES = ["chroot_escape", "remount_proc_sys", "sysrq_trigger", "read_kcore", "mknod_disk",
           "reboot", "load_module", "ptrace_outside", "userns_caps", "io_uring", "open_by_handle"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_every_escape_fails_with_protections_on(lab_results, escape):
    verdict, line = lab_results[escape]["protected"]
    assert verdict == "BLOCKED", line


def test_the_chroot_escape_succeeds_under_chroot(lab_results):
    verdict, line = lab_results["chroot_escape"]["unprotected"]
    assert verdict == "ESCAPED", line
    assert "host-marker is visible" in line


@pytest.mark.parametrize("escape, error", [
    ("remount_proc_sys", "EPERM"), ("reboot", "EPERM"), ("load_module", "EPERM"),
    ("ptrace_outside", "EPERM"), ("userns_caps", "EPERM"), ("io_uring", "EPERM"),
    ("open_by_handle", "EPERM"),
    ("mknod_disk", "EACCES"),  # nodev: the node is made, opening it is refused
])
def test_the_protection_is_the_one_named(lab_results, escape, error):
    assert f": {error} (" in lab_results[escape]["protected"][1]


@pytest.mark.parametrize("escape", ["remount_proc_sys", "reboot", "ptrace_outside",
                                    "userns_caps", "io_uring", "open_by_handle",
                                    "load_module"])
def test_turning_the_protection_off_lets_the_escape_through(lab_results, escape):
    verdict, line = lab_results[escape]["unprotected"]
    assert verdict == "ESCAPED", line


def test_the_lab_runs_every_escape_in_order(lab_results):
    assert list(lab_results) == ESCAPES


def test_userns_root_writes_files_owned_by_host_uid_100000(minibox, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = minibox("run", "--rm", "--userns", "-v", f"{shared}:/data", "busybox", "sh", "-c",
                     "cat /proc/self/uid_map; id -u; touch /data/made-by-root")
    assert result.returncode == 0, result.stderr
    uid_map, uid = result.stdout.splitlines()
    assert uid_map.split() == ["0", "100000", "65536"] and uid == "0"
    made = (shared / "made-by-root").stat()
    assert (made.st_uid, made.st_gid) == (100000, 100000)


def test_userns_root_keeps_no_power_over_the_mount_and_uts_namespaces(minibox):
    result = minibox("run", "--rm", "--userns", "--cap-add", "SYS_ADMIN",
                     "--security-opt", "seccomp=unconfined", "busybox", "sh", "-c",
                     "hostname changed; mount -t tmpfs none /tmp", check=False)
    assert "sethostname: Operation not permitted" in result.stderr
    assert "mount: permission denied" in result.stderr
