"""Detached VMs: `minivm run -d`, ps, logs, pause/resume over QMP, stop, rm; nothing left."""
import json
import time

import pytest

from tests.vm.helpers import wait_for

pytestmark = pytest.mark.vm

TICKER = 'while true; do echo "tick $(cut -d" " -f1 /proc/uptime)"; sleep 0.2; done'


@pytest.fixture
def vm_root(tmp_path, monkeypatch, minivm):
    """A private MINIVM_ROOT; every VM still in it at the end is removed, QEMU killed."""
    root = tmp_path / "vms"
    monkeypatch.setenv("MINIVM_ROOT", str(root))
    yield root
    for vm_dir in root.glob("*") if root.exists() else ():
        minivm("rm", "-f", vm_dir.name)


def qemu_of(root, name):
    state = json.loads((root / name / "state.json").read_text())
    return state["pid"]


def gone(pid):
    """No such process, or only its zombie (a detached QEMU's parent is whoever adopted it,
    which may reap it later): either way nothing of it runs or holds files."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def ticks(root, name):
    text = (root / name / "console.log").read_bytes().decode(errors="replace")
    return [float(line.split()[1]) for line in text.splitlines()
            if line.startswith("tick ") and len(line.split()) == 2]


def test_pause_stops_the_guest_clock_and_resume_restarts_it(minivm, vm_root):
    done = minivm("run", "-d", "--name", "clock", "--", "sh", "-c", TICKER)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"clock\n"
    assert wait_for(lambda: len(ticks(vm_root, "clock")) >= 3, 60), "the guest never ticked"
    assert minivm("pause", "clock").returncode == 0
    assert b"clock                paused" in minivm("ps").stdout
    before = ticks(vm_root, "clock")
    time.sleep(2)
    assert ticks(vm_root, "clock") == before  # paused: not one line more
    assert minivm("resume", "clock").returncode == 0
    assert wait_for(lambda: len(ticks(vm_root, "clock")) > len(before), 10)
    after = ticks(vm_root, "clock")
    # Two seconds of wall time passed while paused; the guest's uptime did not see them
    # (ticks are 0.2 s apart; allow slack for a loaded TCG host).
    assert after[len(before)] - before[-1] < 1.5
    assert b"clock                running" in minivm("ps").stdout


def test_stop_asks_the_guest_and_rm_leaves_nothing(minivm, vm_root, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xab" * 65536)
    done = minivm("run", "-d", "--name", "web", "--disk", str(image), "--", "sh", "-c",
                  "echo ready; sleep 1000")
    assert done.returncode == 0, done.stderr
    qemu = qemu_of(vm_root, "web")
    assert wait_for(lambda: b"ready" in minivm("logs", "web").stdout, 60)
    assert (vm_root / "web" / "disk0.qcow2").exists()
    again = minivm("run", "-d", "--name", "web", "--", "true")
    assert again.returncode == 125
    assert again.stderr.decode() == ("minivm: the name web is already in use by a VM: remove "
                                     "it with `minivm rm web` or choose another --name\n")
    refused = minivm("rm", "web")
    assert refused.returncode == 125 and len(refused.stderr.splitlines()) == 1
    stopped = minivm("stop", "web")
    assert stopped.returncode == 0
    assert stopped.stderr.decode() == "minivm: web: the guest shut down\n"
    assert gone(qemu)
    # sleep got SIGTERM from /init: 128 + 15, reported from the console log
    assert b"web                  exited (143)" in minivm("ps").stdout
    assert minivm("rm", "web").returncode == 0
    assert list(vm_root.iterdir()) == []
    assert image.read_bytes() == b"\xab" * 65536


def test_a_guest_that_ignores_the_request_is_quit_after_the_grace_time(minivm, vm_root):
    done = minivm("run", "-d", "--name", "deaf", "--", "sh", "-c",
                  "trap '' TERM; echo ready; sleep 1000")
    assert done.returncode == 0, done.stderr
    qemu = qemu_of(vm_root, "deaf")
    assert wait_for(lambda: b"ready" in minivm("logs", "deaf").stdout, 60)
    start = time.monotonic()
    stopped = minivm("stop", "-t", "1", "deaf")
    assert 1 <= time.monotonic() - start < 15
    assert "did not finish within 1 s: QEMU was told to quit" in stopped.stderr.decode()
    assert gone(qemu)
    assert b"deaf                 exited " in minivm("ps").stdout


@pytest.mark.parametrize("args, message", [
    (["pause", "nope"], "minivm: no VM named nope (see `minivm ps`)\n"),
    (["rm", "nope"], "minivm: no VM named nope (see `minivm ps`)\n"),
    (["run", "--name", "x", "--", "true"], "minivm: --name names a detached VM: use it with -d\n"),
    (["run", "-d", "-t", "--", "sh"],
     "minivm: -d runs the VM in the background: it cannot take -i or -t\n"),
    (["run", "-d", "--name", "a/b", "--", "true"],
     "minivm: bad VM name 'a/b': use letters, digits, _ . - (up to 64), starting with a "
     "letter or digit\n"),
])
def test_bad_vm_commands_are_one_line(minivm, vm_root, args, message):
    done = minivm(*args)
    assert done.returncode == 125
    assert done.stderr.decode() == message


def test_a_detached_qemu_keeps_no_kernel_pages_and_no_huge_pages(minivm, vm_root):
    """QEMU keeps the ELF it booted mapped for the VM's life (to reload it on a reset that
    -no-reboot never allows): 13 MiB of the tiny kernel, 57 of Debian's, resident beside the
    copy in guest RAM. `run -d` hands it a memfd copy, emptied once loaded. And QEMU runs
    without transparent huge pages, which made 2 MiB resident per byte the guest touched."""
    done = minivm("run", "-d", "--name", "lean", "--", "sleep", "100")
    assert done.returncode == 0, done.stderr
    pid = qemu_of(vm_root, "lean")
    resident, mapping = {}, None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
                mapping = " ".join(fields[5:])
            elif fields[0] == "Rss:" and "vmlinux" in mapping:
                resident[mapping] = resident.get(mapping, 0) + int(fields[1])
    assert resident and set(resident.values()) == {0}, resident  # the memfd, emptied
    with open(f"/proc/{pid}/status") as status:
        assert "THP_enabled:\t0\n" in status.read()


def test_a_detached_guest_reports_the_pages_it_freed(minivm, vm_root, guest_kernel):
    """Free page reporting (minivm/balloon.py): a detached VM's QEMU gets the balloon device
    with reporting on, the guest's driver binds it, and /init has it report free blocks of
    every size (order 0), not only 4 MiB ones, which a booted guest never frees."""
    from minivm import balloon
    if not balloon.supported(guest_kernel):
        pytest.skip(f"{guest_kernel.release} has no built-in virtio_balloon (the tiny kernel has)")
    done = minivm("run", "-d", "--name", "frugal", "--", "sh", "-c",
                  "echo order $(cat /sys/module/page_reporting/parameters/page_reporting_order) "
                  "bound $(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio); "
                  "sleep 100")
    assert done.returncode == 0, done.stderr
    with open(f"/proc/{qemu_of(vm_root, 'frugal')}/cmdline") as cmdline:
        assert "virtio-balloon-device,free-page-reporting=on" in cmdline.read().split("\0")
    console = vm_root / "frugal" / "console.log"
    assert wait_for(lambda: "order 0 bound 1" in console.read_bytes().decode(errors="replace"),
                    30)
