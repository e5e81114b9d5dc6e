"""What a hostile or a clumsy user tried (issue 14), each a test that failed before its fix:
a host escape through `exec`, state that broke every command, references that were paths,
a full disk, an interrupted `stop`."""
import os
import re
import signal
import subprocess
import tempfile

import pytest

from tests.helpers import assert_one_line_error

from tests.harness import Minibox, leftovers, snapshot, wait_until

pytestmark = pytest.mark.root


def processes_in_pid_namespace_of(pid):
    """Host PIDs of every process in the PID namespace whose init is `pid`."""
    namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
    found = []
    for other in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{other}/ns/pid").st_ino == namespace:
                found.append(int(other))
        except OSError:
            pass
    return found


def open_fds_to(pid, path):
    """The fds of process `pid` that lead to `path` (as the host names it)."""
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    found.append(int(fd))
            except OSError:
                pass
    except OSError:
        pass
    return found


def test_exec_passes_none_of_the_callers_fds_into_the_container(minibox, tmp_path):
    """CVE-2024-21626's twin for exec: an fd of a host directory that the caller holds open
    must not reach the exec'd command (it would walk out through /proc/self/fd/N/..), nor be
    visible to the container's other processes while the exec'd command runs."""
    host_dir = tmp_path / "host-only"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret\n")
    container_id = minibox.run_detached("busybox", "sleep", "60")
    fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.set_inheritable(fd, True)
        escape = minibox("exec", container_id, "sh", "-c",
                         f"cat /proc/self/fd/{fd}/secret; echo x > /proc/self/fd/{fd}/ESCAPE;"
                         " ls /proc/self/fd", pass_fds=(fd,), check=False)
        assert "host secret" not in escape.stdout
        assert not (host_dir / "ESCAPE").exists()
        assert str(fd) not in escape.stdout.split()
        # A harmless exec runs; every process of the container meanwhile, and the exec's own.
        background = minibox.popen("exec", container_id, "sleep", "31", pass_fds=(fd,))
        try:
            pid1 = minibox.state(container_id)["pid"]
            wait_until(lambda: len(processes_in_pid_namespace_of(pid1)) == 2)
            holders = {pid: open_fds_to(pid, str(host_dir))
                       for pid in processes_in_pid_namespace_of(pid1) + [background.pid]}
            assert not any(holders.values()), holders
        finally:
            background.kill()
            background.wait()
    finally:
        os.close(fd)


def test_exec_refuses_a_relative_working_directory(minibox):
    container_id = minibox.run_detached("busybox", "sleep", "60")
    result = minibox("exec", "-w", "rel", container_id, "pwd", check=False)
    assert_one_line_error(result, 125, "minibox: ", "'rel'")


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"[1,2,3]", b'{"status": 3}'])
def test_one_corrupt_state_file_breaks_no_command_for_the_others(minibox, garbage):
    good = minibox.run_detached("--name", "good", "busybox", "sleep", "60")
    bad = minibox.run_detached("--name", "bad", "busybox", "true")
    wait_until(lambda: minibox.state(bad)["status"] == "stopped")
    with open(os.path.join(minibox.root, bad, "state.json"), "wb") as state:
        state.write(garbage)
    for listing in (["ps"], ["ps", "-a"], ["ps", "-q"]):
        result = minibox(*listing)
        assert good[:12] in result.stdout and bad[:12] not in result.stdout
        assert result.stderr.count("\n") == 1 and bad[:12] in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert minibox("inspect", "good").returncode == 0
    assert minibox("exec", "good", "true").returncode == 0
    refused = minibox("inspect", "bad", check=False)
    assert_one_line_error(refused, 125, "minibox: ", bad[:12])
    minibox("rm", "-f", "bad")
    assert minibox.container_dirs() == [good]
    assert not os.path.lexists(os.path.join(minibox.root, "names", "bad"))


def test_gc_removes_a_corrupt_container_directory(minibox):
    bad = minibox.run_detached("busybox", "true")
    wait_until(lambda: minibox.state(bad)["status"] == "stopped")
    with open(os.path.join(minibox.root, bad, "state.json"), "w") as state:
        state.write("[1, 2, 3]")
    assert bad[:12] in minibox("gc").stdout
    assert minibox.container_dirs() == []


@pytest.mark.parametrize("reference", ["../../tmp/TARGET", "..", "/", ".", "names", ""])
def test_a_container_reference_is_never_a_path(minibox, reference, tmp_path):
    """`rm ../../tmp/x` once acted on /tmp/x/ledger: it deleted what that ledger listed."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    target = tmp_path / "TARGET"
    target.mkdir()
    (target / "ledger").write_text(f'{{"kind": "dir", "path": "{victim}"}}\n')
    minibox.run_detached("busybox", "sleep", "60")  # a root that exists, with a container
    reference = reference.replace("/tmp/TARGET", str(target)) if "TARGET" in reference else reference
    for command in (["rm"], ["rm", "-f"], ["inspect"], ["stop"], ["kill"], ["logs"]):
        result = minibox(*command, reference, check=False)
        assert_one_line_error(result, 125, "minibox: ", "no such container")
    assert (victim / "keep").read_text() == "mine"


def test_rm_without_a_ledger_still_removes_the_container(minibox):
    minibox("run", "--name", "keep", "busybox", "true")
    container_id = minibox.full_id("keep")
    os.unlink(os.path.join(minibox.root, container_id, "ledger"))
    assert minibox("rm", "keep").stdout == "keep\n"
    assert minibox.container_dirs() == []
    assert not os.path.lexists(os.path.join(minibox.root, "names", "keep"))


@pytest.fixture
def small_root(image_store):
    """A minibox whose state root is a 16 MiB tmpfs: a container can fill it."""
    root = tempfile.mkdtemp(prefix="minibox-full-", dir="/run")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", root], check=True)
    before = snapshot()
    box = Minibox(image_store, root)
    try:
        yield box
        box.remove_all()
        assert leftovers(before, [box]) == {}
    finally:
        subprocess.run(["umount", "-l", root], check=True)
        os.rmdir(root)


def test_a_container_that_fills_the_state_disk_still_exits_with_its_code(small_root):
    small_root("run", "--rm", "--network", "none", "busybox", "true")  # the image, built
    result = small_root("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                        "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; exit 3",
                        check=False)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert small_root.container_dirs() == []


def test_a_full_state_disk_is_one_line_naming_the_path_and_leaves_nothing(small_root):
    small_root("run", "--rm", "--network", "none", "busybox", "true")
    filler = os.path.join(small_root.root, "filler")
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"],
                   capture_output=True)
    try:
        for attempt in range(3):
            result = small_root("run", "--network", "none", "busybox", "true", check=False)
            assert_one_line_error(result, 125, "minibox: ", "No space left on device")
            assert small_root.root in result.stderr
    finally:
        os.unlink(filler)
    assert small_root.container_dirs() == []
    assert "leftovers" not in small_root("gc").stdout


def test_an_interrupted_stop_leaves_the_restart_policy_working(minibox):
    """SIGKILL of the `stop` client once left stop_requested set for good: the container
    stayed up and its --restart policy never restarted it again."""
    container_id = minibox.run_detached("--restart", "always", "busybox", "sleep", "60")
    first_pid = minibox.state(container_id)["pid"]
    stopper = minibox.popen("stop", "-t", "30", container_id)
    wait_until(lambda: minibox.state(container_id).get("stop_requested"))
    stopper.send_signal(signal.SIGKILL)
    stopper.wait()
    os.kill(first_pid, signal.SIGKILL)  # the command dies on its own: --restart always
    wait_until(lambda: minibox.state(container_id)["pid"] != first_pid
               and minibox.state(container_id)["status"] == "running")
    assert minibox.state(container_id)["restarts"] == 1
    minibox("stop", "-t", "0", container_id)
    assert minibox.state(container_id)["status"] == "stopped"


def test_ps_into_a_closed_pipe_is_quiet(minibox):
    minibox.run_detached("busybox", "sleep", "60")
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = minibox("ps", "-a", stdout=writer, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(writer)
    assert result.stderr == ""
    assert result.returncode in (0, 128 + signal.SIGPIPE)


def test_a_stopped_container_with_no_recorded_exit_code_says_so(minibox):
    container_id = minibox.run_detached("busybox", "sleep", "60")
    current = minibox.state(container_id)
    os.kill(current["monitor_pid"], signal.SIGKILL)  # the init follows (PR_SET_PDEATHSIG)
    wait_until(lambda: not os.path.exists(f"/proc/{current['pid']}"))
    line = minibox.status(container_id)
    assert "None" not in line
    assert re.search(r"Exited \(unknown\)", line), line
