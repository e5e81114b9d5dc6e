"""The workshop lessons (examples/NN_*.py) and the side-by-side demo: each runs on its own,
as a participant would run it, and prints its key lines. The `minibox` fixture runs them with
a private state root and fails the test if any container, mount, cgroup or process (QEMU
included: it inherits MINIBOX_ROOT) is left behind."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import PROJECT, code_references

pytestmark = pytest.mark.root


def lesson(minibox, name, *args, timeout=240, parse_json=False):
    """Run examples/<name> the way the README says; its output (stdout + stderr), or with
    parse_json its stdout as JSON."""
    result = subprocess.run([sys.executable, os.path.join(PROJECT, "examples", name), *args],
                            env=minibox.env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, cwd=PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout) if parse_json else result.stdout + result.stderr


def test_01_namespaces_one_at_a_time(minibox):
    out = lesson(minibox, "01_namespaces.py")
    host = os.uname().nodename
    assert re.search(r"uts +inside: +hostname is lesson-01 ", out)
    assert re.search(rf"uts +host: +hostname is {re.escape(host)} ", out)
    assert re.search(r"pid +inside: +my child calls itself PID 1;", out)
    assert re.search(r"mnt +inside: +tmpfs on \S+ in my mountinfo: yes", out)
    assert re.search(r"mnt +host: +tmpfs on \S+ in my mountinfo: no", out)
    assert re.search(r"net +inside: +network interfaces: lo +\[", out)
    assert re.search(r"ipc +inside: +made a segment; System V shared memory segments: 1 ", out)
    assert re.search(r"user +inside: +uid 65534", out)
    assert re.search(r"cgroup +inside: +my cgroup paths start at: / +\[", out)
    # each namespace inode inside differs from the host's
    for kind in ("uts", "mnt", "net", "ipc", "user", "cgroup"):
        inside = re.search(rf"{kind} +inside: .*\[ns (\S+)\]", out)[1]
        on_host = re.search(rf"{kind} +host: .*\[ns (\S+)\]", out)[1]
        assert inside != on_host == os.readlink(f"/proc/self/ns/{kind}")
    assert "PID=1 hostname=lesson-01" in out
    assert not [d for d in os.listdir("/tmp") if d.startswith("lesson-01-")]
    code_references(out)  # the --explain part names real code


def test_02_pivot_root_blocks_the_escape_that_chroot_allows(minibox):
    out = lesson(minibox, "02_pivot_root.py")
    assert "/ / rw,nodev,relatime - overlay overlay" in out
    assert re.search(r"^  pivot_root +BLOCKED: access\(host file\)", out, re.M)
    assert re.search(r"^  --chroot +ESCAPED: climbed out of the root", out, re.M)


def test_03_overlay_copies_up_and_whites_out(minibox):
    out = lesson(minibox, "03_overlay.py")
    assert re.search(r"upper /bin/vi +whiteout \(character device 0:0", out)
    assert re.search(r"upper /etc/motd +file, 6 bytes", out)
    assert re.search(r"upper /etc/passwd +file", out)
    assert re.search(r"layer /etc/motd +absent", out)
    assert re.search(r"layer /bin/vi +symlink to ", out)
    assert "ls: /etc/motd: No such file or directory" in out  # a fresh container: the image's
    assert minibox.container_dirs() == []  # the lesson removed its container


def test_04_cgroups_oom_fork_bomb_cpu_quota(minibox):
    out = lesson(minibox, "04_cgroups.py")
    assert re.search(r"echo 33554432 > \S+/memory\.(limit_in_bytes|max)", out)
    assert re.search(r"echo 20 > \S+/pids\.max", out)
    assert re.search(r"killed by the OOM killer \(memory limit 32 MiB\)\n  \(exit code 137\)", out)
    assert "max pids 20" in out
    cpu = float(re.search(r"CPU time ([\d.]+) s, max pids \d+\n  \(exit code 0\)\n*$", out)[1])
    assert 1.0 < cpu < 1.8  # a 0.5 CPU quota over 3 s


@pytest.mark.vm
def test_05_networking_veth_and_bridge(minibox):
    out = lesson(minibox, "05_networking.py")
    assert re.search(r"^  1: lo\b", out, re.M) and "eth0" in out.split("# A web server")[1]
    assert re.search(r"inet 10\.\d+\.\d+\.\d+/\d+", out)
    assert out.count("hello from lesson 05") >= 3  # the echo, the other container, the host
    assert "GET http://127.0.0.1:18080/ -> hello from lesson 05" in out
    vm = out.split("# A VM on the same bridge")[1].split("(exit code")
    assert re.search(r"eth0 +inet 10\.\d+\.\d+\.\d+/\d+", vm[0])
    assert "virtio_net" in vm[0] and "hello from lesson 05" in vm[0]
    assert vm[1].startswith(" 0)")
    after_rm = out.rsplit("$ ip -o link show master minibox0", 1)[1]
    assert "mb" not in after_rm.split("(exit code")[0]  # the veth pair went with the container


def test_06_capabilities_and_seccomp(minibox):
    out = lesson(minibox, "06_security.py")
    assert "= 14 capabilities: CHOWN" in out and "Seccomp:\t2" in out
    assert "Seccomp:\t0" in out  # --privileged
    for escape in ("remount_proc_sys", "reboot", "userns_caps", "io_uring", "open_by_handle"):
        block = out.split(f"  {escape}  (stopped by:")[1].split("\n  ")[0:3]
        assert "BLOCKED" in block[1] and "ESCAPED" in block[2], block


@pytest.mark.vm
@pytest.mark.slow
def test_07_a_vm_from_kernel_initramfs_qemu(minibox):
    out = lesson(minibox, "07_vm.py")
    assert re.search(r"^  Linux \S+ \d+\.\d+\S* ", out, re.M)  # the guest's uname -a
    assert "=> qemu -M microvm,acpi=off" in out and "[guest] " in out
    assert "kernel command line: console=ttyS0" in out
    assert re.search(r"qemu exited +[\d.]+\n  \(exit code 3\)", out)
    code_references(out)  # every file:line minivm --explain printed exists


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
def test_08_raw_kvm_runs_real_mode_code_to_hlt(minibox):
    out = lesson(minibox, "08_raw_kvm.py")  # kvm-hello's exit code 0 is checked inside
    assert "KVM_EXIT_IO: out to port" in out and "KVM_EXIT_HLT: the guest halted" in out


@pytest.mark.vm
@pytest.mark.slow
def test_09_side_by_side_measures_both_columns(minibox):
    with open("/proc/sys/vm/swappiness") as swappiness:
        host_swappiness = swappiness.read().strip()
    started = os.times().elapsed
    report = lesson(minibox, "side_by_side.py", "--json", "-n", "2", parse_json=True)
    assert os.times().elapsed - started < 120  # the whole demo, on 2 cores under TCG
    cells = {row["key"]: (row["container"], row["vm"]) for row in report["rows"]}
    host_kernel = os.uname().release
    assert cells["kernel"][0] == f"{host_kernel}: the host's"
    assert "this script's process not among them" in cells["processes"][0]
    assert cells["dmesg"][0].startswith("denied")
    assert cells["sysctl"][0].startswith("vm.swappiness=10 refused (Read-only file system)")
    assert cells["own_file"][0].endswith("is gone in the replacement")
    survives = "file written to the shared folder survives (the host reads it)"
    assert cells["shared_file"][0] == survives
    assert cells["restart"][0].startswith("crashed (exit 139)")
    with open("/proc/sys/vm/swappiness") as swappiness:
        assert swappiness.read().strip() == host_swappiness
    veth = re.fullmatch(r"eth0 \(veth\); its host end (mb\w+) \(the veth's peer\) is a "
                        r"port of minibox0", cells["interface"][0])[1]
    assert not os.path.exists(f"/sys/class/net/{veth}")  # gone with the container
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+/\d+ on eth0", cells["address"][0])
    assert cells["reachable"][0].startswith("yes: HTTP from the host")
    assert not cells["kernel"][1].startswith(host_kernel) and ": its own (" in cells["kernel"][1]
    assert "QEMU" in cells["cpu"][1]
    assert cells["dmesg"][1].startswith("its own kernel log: [")
    assert cells["sysctl"][1].startswith("vm.swappiness=10 set in the guest (reads 10)")
    assert cells["own_file"][1].endswith("is gone in the replacement")
    assert cells["restart"][1].startswith("crashed (exit 139)")
    assert cells["shared_file"][1] == survives  # -v over virtio-9p
    tap = re.fullmatch(r"eth0 \(virtio_net\); its host end (mv\w+) \(a tap qemu holds\) "
                       r"is a port of minibox0", cells["interface"][1])[1]  # a tap in minibox0
    assert not os.path.exists(f"/sys/class/net/{tap}")  # gone with qemu
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+/\d+ on eth0", cells["address"][1])
    assert cells["reachable"][1].startswith("yes: HTTP from the host")
    container, vm = report["container"], report["vm"]
    assert container["start_seconds"] < vm["start_seconds"]
    assert container["memory_bytes"] < vm["memory_bytes"]
    assert container["many_memory_bytes"] < vm["many_memory_bytes"]


def chromium(*args, profile):
    """Headless Chromium (Debian's chromium package) on a local file; its stdout."""
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={profile}", "--window-size=1200,1400", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_image_data(path):
    """(width, height, compressed size of the pixel data) of a PNG (RFC 2083: the IHDR chunk
    first, the pixels in IDAT chunks)."""
    import struct
    with open(path, "rb") as png:
        data = png.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    size, offset = 0, 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        size += length if kind == b"IDAT" else 0
        offset += 12 + length
    return width, height, size


@pytest.mark.vm
@pytest.mark.slow
def test_09_side_by_side_html_renders_in_chromium(minibox, tmp_path):
    page = tmp_path / "room.html"
    lesson(minibox, "side_by_side.py", "-n", "1", "--html", str(page))  # ~10 s here
    text = page.read_text()
    assert "<script" not in text and "src=" not in text and "href=" not in text  # no network
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    sys.path.insert(0, os.path.join(PROJECT, "examples"))
    import side_by_side
    for _, items in side_by_side.ROWS:
        for _, label in items:
            assert f">{label}</td>" in dom, label
    assert dom.count("<svg") == 4 and dom.count("<rect") == 8  # 4 charts, container and VM
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    sizes = {}
    for name in ("room", "blank"):
        chromium(f"--screenshot={tmp_path / name}.png", (tmp_path / f"{name}.html").as_uri(),
                 profile=tmp_path / "profile")
        sizes[name] = png_image_data(tmp_path / f"{name}.png")
    assert sizes["room"][:2] == (1200, 1400)
    # A blank page compresses to almost nothing; text, table and bars do not.
    assert sizes["room"][2] > 10 * sizes["blank"][2], sizes


def test_side_by_side_html_refuses_a_missing_directory(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(PROJECT, "examples", "side_by_side.py"),
                           "--html", str(tmp_path / "nowhere" / "room.html")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"side_by_side.py: --html {tmp_path / 'nowhere' / 'room.html'}: no such directory"]
