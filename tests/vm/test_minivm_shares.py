"""Host folders in a guest over virtio-9p (`-v`), and `minivm sandbox` (the host's root, read-only,
under a throwaway tmpfs). Each test boots a real guest under QEMU; ~3 s each under TCG."""
import os
import subprocess
import sys

import pytest

from tests.vm.helpers import debian_kernel, initrds_of, qemu_pids_of

pytestmark = pytest.mark.vm


def run_minivm(*args, cwd=None):
    """minivm as a child we can name by PID afterwards, to look for anything it left."""
    process = subprocess.Popen([sys.executable, "-m", "minivm", *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=150)
    assert qemu_pids_of(process.pid) == [] and initrds_of(process.pid) == []
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
def folder(tmp_path):
    shared = tmp_path / "shared folder"  # a space, to show the path arrives whole
    shared.mkdir()
    (shared / "from-host").write_text("written by the host\n")
    return shared


def test_a_shared_folder_is_read_and_written_through_9p(guest_kernel, folder):
    status, out, err = run_minivm("run", "-v", f"{folder}:/data", "--", "sh", "-c",
                                  "cat /data/from-host; echo from the guest > /data/from-guest; "
                                  "grep ' /data ' /proc/mounts")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "written by the host"
    assert lines[1].split()[:3] == ["share0", "/data", "9p"]
    assert "trans=virtio" in lines[1]
    assert (folder / "from-guest").read_text() == "from the guest\n"


def test_debian_kernel_loads_the_9p_modules_and_finds_the_device_through_acpi(guest_kernel,
                                                                            folder):
    """Debian builds 9p and virtio-mmio as modules and its virtio_mmio cannot read devices from
    the command line: minivm ships the modules in the initramfs and turns microvm's ACPI on."""
    status, out, err = run_minivm("run", "--explain", "--kernel", str(debian_kernel()),
                                  "-v", f"{folder}:/data", "--", "cat", "/data/from-host")
    assert status == 0, err
    assert out == "written by the host\n"
    assert "=> kernel modules for the guest, dependencies first: " in err
    modules = err.split("dependencies first: ")[1].split("\n")[0].split()
    assert modules.index("virtio_mmio") < modules.index("9pnet_virtio") < modules.index("9p")
    assert "=> qemu -M microvm,acpi=on" in err


def test_a_read_only_share_refuses_writes(guest_kernel, folder):
    status, out, err = run_minivm("run", "-v", f"{folder}:/data:ro", "--", "sh", "-c",
                                  "cat /data/from-host; touch /data/new")
    assert status == 1
    assert out.startswith("written by the host\n")
    assert "Read-only file system" in out  # touch's complaint, on the guest's stdout
    assert sorted(os.listdir(folder)) == ["from-host"]


def test_a_missing_host_folder_is_one_line_and_no_vm(guest_kernel, tmp_path):
    missing = tmp_path / "nope"
    status, out, err = run_minivm("run", "-v", f"{missing}:/data", "--", "true")
    assert status == 125 and out == ""
    assert err == f"minivm: -v {missing}:/data: host directory {missing} does not exist\n"


def test_a_guest_side_failure_is_one_line(guest_kernel, folder):
    """/proc/x cannot be made: /init reports the failed step instead of running the command."""
    status, out, err = run_minivm("run", "-v", f"{folder}:/proc/x", "--", "echo", "never")
    assert status == 125 and out == ""
    last = err.splitlines()[-1]
    assert last.startswith("minivm: the guest could not be prepared: mkdir -p /proc/x failed")


def test_sandbox_runs_a_host_program_under_the_guest_kernel(guest_kernel, folder):
    """/usr/bin/uname is GNU coreutils from the host's root, not the initramfs's busybox; the
    command starts in the host's working directory; its writes there vanish with the VM, but
    a -v folder inside the sandbox is the host's own."""
    status, out, err = run_minivm(
        "sandbox", "-v", f"{folder}:/mnt/out", "--", "/bin/sh", "-c",
        "/usr/bin/uname -r; /usr/bin/uname --version | head -1; pwd; "
        "echo scratch > scratch-file && cat scratch-file; echo kept > /mnt/out/kept",
        cwd=folder)
    assert status == 0, err
    release, version, cwd, scratch = out.splitlines()
    assert release == guest_kernel.release != os.uname().release
    assert version.startswith("uname (GNU coreutils)")
    assert cwd == str(folder)
    assert scratch == "scratch"
    assert not (folder / "scratch-file").exists()
    assert (folder / "kept").read_text() == "kept\n"


def test_sandbox_command_missing_on_the_host_is_127(guest_kernel):
    status, out, err = run_minivm("sandbox", "--", "no-such-program-anywhere")
    assert status == 127
    assert err.splitlines()[-1] == "minivm: no-such-program-anywhere: command not found in the guest"
