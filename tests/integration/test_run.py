"""`minibox run`: real containers, checked against what the kernel shows."""
import os
import re
import signal
import subprocess
import time

import pytest

from tests.harness import wait_until
from tests.helpers import assert_one_line_error, busybox_layer, code_references

pytestmark = pytest.mark.root

NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup")


def test_every_namespace_differs_from_the_hosts(minibox):
    probe = "; ".join(f"readlink /proc/self/ns/{ns}" for ns in NAMESPACES)
    result = minibox("run", "--rm", "busybox", "sh", "-c", probe)
    assert result.returncode == 0, result.stderr
    inside = result.stdout.split()
    host = [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    assert len(inside) == len(NAMESPACES)
    for ns, in_container, on_host in zip(NAMESPACES, inside, host):
        assert in_container.startswith(f"{ns}:[")
        assert in_container != on_host, f"{ns} namespace is shared with the host"


def test_command_is_pid_1_and_sees_only_its_own_processes(minibox):
    # `; true` keeps sh alive while ps runs (sh would otherwise exec its last command)
    result = minibox("run", "--rm", "busybox", "sh", "-c", "echo $$; ps -o pid,comm; true")
    lines = result.stdout.splitlines()
    assert lines[0] == "1"
    processes = [line.split() for line in lines[2:]]
    assert [comm for _, comm in processes] == ["sh", "ps"]
    assert processes[0][0] == "1"


def test_only_loopback_exists_and_is_up(minibox):
    result = minibox("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                     "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags")
    names, _state, flags = result.stdout.split("\n")[0], None, result.stdout.split()[-1]
    assert names == "lo"
    assert int(flags, 16) & 0x1, "lo is not up"


def test_hostname_from_flag_name_or_short_id(minibox):
    assert minibox("run", "--rm", "-h", "box1", "busybox", "hostname").stdout == "box1\n"
    assert minibox("run", "--rm", "--name", "named", "busybox", "hostname").stdout == "named\n"
    result = minibox("run", "busybox", "hostname")
    (container_id,) = minibox.container_dirs()
    assert result.stdout == container_id[:12] + "\n"
    assert minibox("rm", container_id[:6]).returncode == 0
    assert minibox.container_dirs() == []


@pytest.mark.parametrize("code", [0, 7])
def test_exit_code_is_the_commands(minibox, code):
    assert minibox("run", "--rm", "busybox", "sh", "-c", f"exit {code}", check=False).returncode == code


def test_missing_command_exits_127_and_non_executable_126(minibox, tmp_path):
    missing = minibox("run", "--rm", "busybox", "no-such-command", check=False)
    assert missing.returncode == 127
    # runc's words, which Docker and podman turn into 127
    assert missing.stderr == ('minibox: exec: "no-such-command": executable file not found '
                              'in $PATH\n')
    (tmp_path / "script").write_text("#!/bin/sh\n")
    denied = minibox("run", "--rm", "-v", f"{tmp_path}:/data", "busybox", "/data/script",
                     check=False)
    assert denied.returncode == 126
    assert "permission denied" in denied.stderr


def test_sigkill_from_the_host_gives_137_and_cleans_up(minibox):
    runtime = minibox.popen("run", "--rm", "busybox", "sleep", "100")
    state = minibox.wait_for_state(lambda s: s["status"] == "running")
    os.kill(state["pid"], signal.SIGKILL)
    assert runtime.wait(timeout=10) == 137
    assert minibox.container_dirs() == []


def test_signals_to_minibox_are_forwarded(minibox):
    runtime = minibox.popen("run", "--rm", "busybox", "sh", "-c",
                            "trap 'exit 42' TERM; while :; do sleep 0.05; done")
    minibox.wait_for_state(lambda s: s["status"] == "running")
    time.sleep(0.3)  # let sh install its trap
    runtime.send_signal(signal.SIGTERM)
    assert runtime.wait(timeout=10) == 42


def test_copy_on_write_keeps_image_and_other_containers_clean(minibox):
    image = busybox_layer(minibox.store)
    first = minibox("run", "--name", "writer", "busybox", "sh", "-c",
                    "echo changed > /etc/hosts; echo new > /made-here; cat /etc/hosts")
    assert first.stdout == "changed\n"
    second = minibox("run", "--rm", "busybox", "sh", "-c",
                     "cat /etc/hosts; ls /made-here 2>&1 || true")
    assert "changed" not in second.stdout and "localhost" in second.stdout
    assert "No such file" in second.stdout
    with open(os.path.join(image, "etc/hosts")) as hosts:
        assert "changed" not in hosts.read()
    assert not os.path.exists(os.path.join(image, "made-here"))
    upper = os.path.join(minibox.root, minibox.container_dirs()[0], "upper")
    assert open(os.path.join(upper, "made-here")).read() == "new\n"  # kept without --rm
    minibox("rm", "writer")


def test_volumes_read_write_and_read_only(minibox, tmp_path):
    (tmp_path / "in.txt").write_text("from host\n")
    result = minibox("run", "--rm", "-v", f"{tmp_path}:/data", "busybox", "sh", "-c",
                     "cat /data/in.txt; echo from container > /data/out.txt")
    assert result.stdout == "from host\n"
    assert (tmp_path / "out.txt").read_text() == "from container\n"
    readonly = minibox("run", "--rm", "-v", f"{tmp_path}:/data:ro", "busybox", "sh", "-c",
                       "echo x > /data/other.txt", check=False)
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr
    assert not (tmp_path / "other.txt").exists()


def test_volume_target_symlink_cannot_escape_the_root(minibox, tmp_path):
    # An image path that is a symlink to / must resolve inside the container's root.
    rootfs = tmp_path / "rootfs"
    image = busybox_layer(minibox.store)
    subprocess.run(["cp", "-a", image + "/.", str(rootfs)], check=True)
    os.symlink("/etc", rootfs / "escape")
    source = tmp_path / "src"
    source.mkdir()
    result = minibox("run", "--rm", "-v", f"{source}:/escape/mounted", "--rootfs", str(rootfs),
                     "sh", "-c", "ls -d /etc/mounted")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists("/etc/mounted")


def test_env_workdir_and_default_environment(minibox):
    result = minibox("run", "--rm", "-e", "GREETING=hello world", "-w", "/tmp/work", "busybox",
                     "sh", "-c", 'echo "$GREETING"; pwd; echo $PATH')
    assert result.stdout.splitlines() == ["hello world", "/tmp/work",
                                          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_proc_dev_and_sys_are_set_up_and_masked(minibox):
    result = minibox("run", "--rm", "busybox", "sh", "-c",
                     "ls /dev; wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware; "
                     "echo 1 > /proc/sys/kernel/domainname; echo x > /sys/x", check=False)
    for device in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx"):
        assert device in result.stdout.split()
    assert result.stdout.endswith("\n0\n0\n")  # /dev/null over /proc/keys, timer_list; empty tmpfs
    assert result.stderr.count("Read-only file system") == 2


def test_pivot_root_leaves_no_host_mounts_visible(minibox):
    result = minibox("run", "--rm", "busybox", "cat", "/proc/self/mountinfo")
    mount_points = [line.split()[4] for line in result.stdout.splitlines()]
    assert mount_points[0] == "/"
    # /etc/hosts and /etc/hostname: the runtime's files, bind-mounted as Docker does
    assert all(p.startswith(("/proc", "/dev", "/sys")) or p in ("/", "/etc/hosts", "/etc/hostname")
               for p in mount_points)


def test_chroot_mode_warns_and_keeps_host_mounts(minibox):
    result = minibox("run", "--rm", "--chroot", "busybox", "sh", "-c",
                     "grep -c . /proc/self/mountinfo")
    assert "warning: --chroot is escapable" in result.stderr
    assert result.returncode == 0


def test_host_mountinfo_unchanged_and_nothing_left_after_20_runs(minibox):
    def mountinfo():
        with open("/proc/self/mountinfo") as f:
            return f.read()
    before = mountinfo()
    for i in range(20):
        assert minibox("run", "--rm", "busybox", "true").returncode == 0
    assert mountinfo() == before
    assert minibox.container_dirs() == []
    assert os.listdir(os.path.join(minibox.root, "names")) == []


def test_sigkill_of_minibox_then_gc_leaves_nothing(minibox):
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    runtime = minibox.popen("run", "--rm", "--name", "doomed", "busybox", "sleep", "100")
    state = minibox.wait_for_state(lambda s: s["status"] == "running")
    runtime.kill()
    runtime.wait()
    # the init dies of PR_SET_PDEATHSIG
    wait_until(lambda: not os.path.exists(f"/proc/{state['pid']}"), timeout=5)
    assert len(minibox.container_dirs()) == 1  # the leftovers gc is for
    result = minibox("gc")
    assert result.returncode == 0 and "removed leftovers" in result.stdout
    assert minibox.container_dirs() == []
    assert os.listdir(os.path.join(minibox.root, "names")) == []
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before
    assert minibox("run", "--rm", "--name", "doomed", "busybox", "true").returncode == 0


def test_interactive_tty_runs_a_shell(minibox):
    pexpect = pytest.importorskip("pexpect")
    child = minibox.spawn("run", "--rm", "-it", "busybox", "sh")
    child.setwinsize(33, 101)
    child.expect("# ")
    child.sendline("tty; stty size; echo $((6*7))")
    child.expect("/dev/pts/0")
    child.expect("33 101")
    child.expect("42")
    child.sendline("sleep 100 &")
    child.sendline("jobs")
    child.expect(r"\[1\]\+?\s+Running")
    child.sendline("kill %1; exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert minibox.container_dirs() == []


def test_explain_prints_every_step_with_real_source_lines(minibox):
    result = minibox("run", "--rm", "--explain", "busybox", "true")
    assert result.returncode == 0
    steps = re.findall(r"^=> (.*)$", result.stderr, re.M)
    sources = code_references(result.stderr)
    assert len(steps) == len(sources) >= 12
    for where, text in sources:
        assert text.lstrip().startswith("def "), f"{where} is not a function: {text}"
    for expected in ("unshare(CLONE_NEWPID)", "MS_REC|MS_PRIVATE", '"overlay"', "pivot_root",
                     "sethostname", "SIOCSIFFLAGS", "exec.fifo"):
        assert expected in result.stderr


ERROR_CASES = [
    (["run", "--rm", "no-such-image", "true"], 125, "no such image: no-such-image"),
    (["run", "--rm", "--rootfs", "/no/such/dir", "true"], 125, "no such directory"),
    (["run", "--rm", "--rootfs", "/etc/hostname", "true"], 125, "not a directory"),
    (["run", "--rm", "--rootfs", "/tmp"], 125, "no command given"),
    (["run", "--rm", "-e", "=value", "busybox", "true"], 125, "invalid environment variable"),
    (["run", "--rm", "-v", "/no/such/host/dir:/x", "busybox", "true"], 125, "does not exist"),
    (["run", "--rm", "--no-such-flag", "busybox", "true"], 125, "no such option '--no-such-flag' (see: minibox run --help)"),
    # What a clumsy user typed (issue 14): each one line naming the value.
    (["run", "--rm", "-v", "/tmp:/proc", "busybox", "true"], 125, "/proc"),
    (["run", "--rm", "-v", "/tmp:/proc/sys", "busybox", "true"], 125, "/proc/sys"),
    (["run", "--rm", "-v", "/etc:/", "busybox", "true"], 125, "'/etc:/'"),
    (["run", "--rm", "-h", "h" * 300, "busybox", "true"], 125, "hostname"),
    (["run", "--rm", "--user", "99999999999", "busybox", "true"], 125, "99999999999"),
    (["run", "--rm", "-w", "relative", "busybox", "true"], 125, "'relative'"),
    (["run", "--rm", "--name", "n" * 300, "busybox", "true"], 125, "invalid container name"),
    (["run", "--rm", "--name=-dash", "busybox", "true"], 125, "invalid container name"),
    (["--root", "/proc/1", "run", "--rm", "busybox", "true"], 125, "/proc/1"),
]


@pytest.mark.parametrize("args,code,message", ERROR_CASES)
def test_bad_input_gives_one_line_and_creates_nothing(minibox, args, code, message):
    result = minibox(*args, check=False)
    assert_one_line_error(result, code, "minibox: ", message)
    assert minibox.container_dirs() == []


def test_duplicate_name_is_refused_without_touching_the_first(minibox):
    assert minibox("run", "--name", "twin", "busybox", "true").returncode == 0
    result = minibox("run", "--name", "twin", "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr == "minibox: the container name 'twin' is already in use\n"
    assert len(minibox.container_dirs()) == 1
    assert minibox("rm", "twin").returncode == 0


def test_a_run_without_network_imports_no_other_command(minibox):
    """The whole `run` path, container included: click's lazy sub-commands keep out what
    the other commands need (the image store and archives, control, exec's enter, the other
    command modules), pyroute2 (~150 ms); not even socket or shutil, 2-5 ms each
    (bench/startup.py compares this start-up with runc's)."""
    command = ["run", "--rm", "--network", "none", "busybox", "true"]
    # Once first: in a fresh store that run builds the busybox image, which may import more.
    assert minibox(*command).returncode == 0
    result = minibox(*command, python_options=["-X", "importtime"], check=False)
    assert result.returncode == 0, result.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:") and not line.endswith("| imported package")}
    assert {"click", "minibox.cli", "minibox.container"} <= loaded
    other_commands = {"minibox.images.store", "minibox.images.archives", "minibox.images.layers",
                      "minibox.control", "minibox.enter", "minibox.oci", "minibox.monitor",
                      "minibox.cli.containers", "minibox.cli.images", "minibox.cli.network",
                      "minibox.cli.oci", "minibox.cli.template"}
    heavy = {name for name in loaded if name in other_commands or name.split(".")[0] in (
        "pyroute2", "socket", "shutil", "argparse")}
    assert heavy == set()


def test_step_mode_waits_for_enter_before_each_step(minibox):
    pexpect = pytest.importorskip("pexpect")
    child = minibox.spawn("run", "--rm", "--step", "busybox", "echo", "done")
    pauses = 0
    while child.expect([r"\[Enter\] ", "done", pexpect.EOF]) == 0:
        pauses += 1
        child.send("\r")
    child.expect(pexpect.EOF)
    child.close()
    assert pauses >= 12 and child.exitstatus == 0
