"""`minivm run` booting real guests under QEMU (TCG here): what the guest sees, what comes back."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minivm import accel, initramfs, kernel
from tests.helpers import code_references, converse
from tests.vm.helpers import initrds_of, qemu_pids_of, wait_for

pytestmark = pytest.mark.vm


def test_uname_prints_the_guest_kernel_release_and_nothing_else(minivm, guest_kernel):
    done = minivm("run", "--", "uname", "-r")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{guest_kernel.release}\n".encode()  # no kernel lines, no CR
    assert guest_kernel.release != os.uname().release


@pytest.mark.skipif(accel.kvm_problem() is None, reason="KVM works here: auto picks it")
def test_auto_accel_says_tcg_and_why(minivm):
    done = minivm("run", "--", "true")
    assert done.returncode == 0
    assert f"minivm: using {accel.choose('auto').reason}" in done.stderr.decode()


@pytest.mark.parametrize("status", [0, 3])
def test_exit_status_comes_back(minivm, status):
    assert minivm("run", "--", "sh", "-c", f"exit {status}").returncode == status


def test_arguments_arrive_intact(minivm):
    argv = ["a b", "it's", '"double"', "$HOME", "`id`", "back\\slash", "two\nlines", "", "*"]
    done = minivm("run", "--", "printf", "%s\\0", *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(b"\0")[:-1] == [arg.encode() for arg in argv]


def test_command_missing_in_the_guest_is_127_with_one_line(minivm):
    done = minivm("run", "--accel", "tcg", "--", "no-such-command", "x")
    assert done.returncode == 127
    assert done.stderr.decode() == "minivm: no-such-command: command not found in the guest\n"
    assert done.stdout == b""


def test_the_written_cpio_lists_with_system_cpio_and_boots(minivm, guest_kernel):
    if shutil.which("cpio") is None:
        pytest.skip("needs cpio")
    base, _ = initramfs.cached_base(kernel.cache_dir())
    names = subprocess.run(["cpio", "-t", "--quiet"], stdin=open(base, "rb"), check=True,
                           capture_output=True, text=True).stdout.split()
    assert {"init", "bin/busybox", "bin/sh", "etc/fstab", "dev/console"} <= set(names)
    # The guest's root is that archive (plus the run archive): its files are there.
    done = minivm("run", "--", "sh", "-c", "ls /init /etc/fstab /bin/busybox; cat /proc/mounts")
    assert done.returncode == 0, done.stderr
    output = done.stdout.decode()
    assert output.split("\n")[:3] == ["/bin/busybox", "/etc/fstab", "/init"]  # ls sorts
    mounts = output
    for mount in ("proc /proc proc", "sysfs /sys sysfs", "devtmpfs /dev devtmpfs"):
        assert mount in mounts


def test_memory_and_cpus_reach_the_guest(minivm):
    done = minivm("run", "-m", "128M", "--cpus", "2", "--", "sh", "-c",
                  "nproc; grep MemTotal /proc/meminfo")
    assert done.returncode == 0, done.stderr
    cpus, meminfo = done.stdout.decode().splitlines()
    assert cpus == "2"
    total_kib = int(meminfo.split()[1])
    assert 64 * 1024 < total_kib <= 128 * 1024  # less what the kernel keeps


def test_piped_stdin_reaches_the_command_with_i(minivm):
    done = minivm("run", "-i", "--", "sh", "-c", "cat; echo end", input=b"one\ntwo words\n",
                  stdin=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"one\ntwo words\nend\n"


def test_verbose_shows_kernel_messages_on_stderr_only(minivm):
    done = minivm("run", "--verbose", "--", "echo", "hi")
    assert done.stdout == b"hi\n"
    assert "[guest] [    0.000000] Linux version" in done.stderr.decode()


def test_timings_and_explain_narrate_the_boot(minivm, guest_kernel):
    done = minivm("run", "--timings", "--explain", "--", "true")
    assert done.returncode == 0 and done.stdout == b""
    stderr = done.stderr.decode()
    phases = ["kernel ready", "initramfs ready", "qemu spawned", "first kernel output",
              "init started", "command done", "qemu exited"]
    positions = [stderr.index(f"  {phase} ") for phase in phases]
    assert positions == sorted(positions)
    assert f"=> kernel {guest_kernel.release}: {guest_kernel.vmlinux}" in stderr
    assert "=> qemu -M microvm,acpi=off" in stderr and "tsc_early_khz=" in stderr
    code_references(stderr)  # every (code: file:line) names a real line of the project


@pytest.mark.slow
def test_a_hanging_guest_is_killed_at_the_timeout(guest_kernel):
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "minivm", "run", "--timeout", "20", "--",
                                "sleep", "1000"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=60)
    elapsed = time.monotonic() - start
    assert process.returncode == 124
    assert 19 < elapsed < 30
    message = stderr.decode()
    assert "minivm: timeout: the guest did not finish within 20 s; QEMU was killed" in message
    assert "Run /init as init process" in message  # the last kernel lines
    assert qemu_pids_of(process.pid) == [] and initrds_of(process.pid) == []


def start_sleeping_guest():
    process = subprocess.Popen([sys.executable, "-m", "minivm", "run", "--", "sleep", "1000"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    assert wait_for(lambda: qemu_pids_of(process.pid), 20), "QEMU never started"
    return process, qemu_pids_of(process.pid)


def test_sigterm_stops_qemu_and_cleans_up(guest_kernel):
    process, qemus = start_sleeping_guest()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    assert not any(os.path.exists(f"/proc/{pid}") for pid in qemus)
    assert initrds_of(process.pid) == []


def test_qemu_dies_with_a_killed_minivm(guest_kernel):
    """SIGKILL leaves minivm no chance to clean up: PR_SET_PDEATHSIG makes the kernel kill QEMU."""
    process, qemus = start_sleeping_guest()
    process.kill()
    process.wait(timeout=20)
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in qemus), 10)
    for leftover in initrds_of(process.pid):  # the one thing SIGKILL does leave behind
        leftover.unlink()


def spawn_interactive():
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "minivm", "run", "-it", "--", "sh"],
                          timeout=90, dimensions=(30, 100),
                          env=dict(os.environ, TERM="xterm-mini"))
    child.expect("press Ctrl-] to quit")
    child.expect(r"/ # ")
    return child, pexpect


def test_interactive_shell_has_a_terminal_and_its_exit_status(guest_kernel):
    child, _ = spawn_interactive()
    converse(child, "tty; echo $TERM; stty size; echo $((6*7))",
             ["/dev/ttyS0", "xterm-mini", "30 100", "42"],  # 30 100: the host terminal's size
             exit_status=5)


def test_interactive_escape_key_quits_and_stops_qemu(guest_kernel):
    child, pexpect = spawn_interactive()
    qemus = qemu_pids_of(child.pid)
    assert qemus
    child.send("\x1d")  # Ctrl-]
    child.expect("left the guest")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 128 + signal.SIGINT
    assert not any(os.path.exists(f"/proc/{pid}") for pid in qemus)


def test_a_bzimage_given_with_kernel_is_extracted_and_booted(minivm, guest_kernel, tmp_path):
    bzimages = sorted((Path(guest_kernel.vmlinux).parent / "boot").glob("vmlinuz-*"))
    if not bzimages:
        pytest.skip("the cached kernel did not come with its bzImage")
    cache = tmp_path / "cache"
    try:
        done = minivm("run", "--kernel", str(bzimages[0]), "--", "uname", "-r",
                      env=dict(os.environ, MINIVM_CACHE=str(cache)))
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().strip() == guest_kernel.release
        assert "extracting the uncompressed kernel" in done.stderr.decode()
        extracted = list(cache.glob("extracted/*/vmlinux"))
        assert len(extracted) == 1 and extracted[0].read_bytes()[:4] == b"\x7fELF"
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # 65 MB: don't leave it to pytest's tmp


def test_kernel_list_shows_the_default_kernel_and_its_version(minivm, guest_kernel):
    done = minivm("kernel", "list")
    assert done.returncode == 0
    first = done.stdout.decode().splitlines()[0].split()
    assert first[:3] == ["*", guest_kernel.release, str(guest_kernel.vmlinux)]


def test_a_line_reaches_the_host_while_the_guest_command_still_runs(guest_kernel):
    # A host program reading line by line must not wait for the guest command to end.
    runner = subprocess.Popen([sys.executable, "-m", "minivm", "run", "--", "sh", "-c",
                               "echo first; sleep 3; echo second"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        first = runner.stdout.readline()
        still_running = runner.poll() is None
        rest = runner.stdout.read()
    finally:
        runner.wait(timeout=60)
    assert first == b"first\n" and still_running
    assert rest == b"second\n" and runner.returncode == 0


def test_a_command_that_outgrows_the_guest_is_one_line_quoting_the_kernel(minivm):
    """A shell variable larger than the guest's RAM: the guest's OOM killer ends the command,
    and minivm says so in one line with the kernel's report, the command's status (128 +
    SIGKILL) as its own. Before, only the guest shell's "Killed" told, and nothing why."""
    done = minivm("run", "--accel", "tcg", "--timeout", "120", "--", "sh", "-c",
                  'x=$(head -c 1000000000 /dev/zero | tr "\\0" a)')
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    stderr = done.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("minivm: the guest ran out of memory ("), stderr
    assert "Out of memory: Killed process" in stderr  # the kernel's own line
