"""`minivm run --disk IMAGE`: the guest writes to a qcow2 overlay; the base image never changes."""
import hashlib
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture
def base_image(tmp_path):
    """An 8 MB ext2 image holding /hello, made by mke2fs -d (no loop device, no mount)."""
    if shutil.which("mke2fs") is None:
        pytest.skip("needs mke2fs (e2fsprogs)")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello").write_text("hello from the base\n")
    image = tmp_path / "base.img"
    with image.open("wb") as raw:
        raw.truncate(8 << 20)
    subprocess.run(["mke2fs", "-q", "-t", "ext2", "-d", str(tree), "-F", str(image)], check=True)
    return image


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def overlays_in(directory):
    return sorted(directory.glob("minivm-*disk*.qcow2"))


def test_guest_writes_land_in_an_overlay_that_is_thrown_away(minivm, base_image, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = digest(base_image), base_image.stat().st_mtime_ns
    env = dict(os.environ, TMPDIR=str(scratch))
    write = "mkdir /mnt && mount /dev/vda /mnt && cat /mnt/hello && echo changed > /mnt/hello && " \
            "cat /mnt/hello && umount /mnt"
    done = minivm("run", "--disk", str(base_image), "--", "sh", "-c", write, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello from the base\nchanged\n"
    assert (digest(base_image), base_image.stat().st_mtime_ns) == before
    assert overlays_in(scratch) == []
    # A new VM gets a new overlay: the write is gone.
    done = minivm("run", "--disk", str(base_image), "--", "sh", "-c",
                  "mkdir /mnt && mount -o ro /dev/vda /mnt && cat /mnt/hello", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello from the base\n"
    assert overlays_in(scratch) == []


def test_the_overlay_is_qcow2_over_the_base_while_the_vm_runs(base_image, tmp_path, guest_kernel):
    """While the guest runs: one qcow2 file whose backing file is the base, by absolute path."""
    import sys
    import time
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "minivm", "run", "--disk", str(base_image),
                                "--", "sleep", "1000"], env=dict(os.environ, TMPDIR=str(scratch)),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not overlays_in(scratch) and time.monotonic() < deadline:
            time.sleep(0.1)
        (overlay,) = overlays_in(scratch)
        # -U: QEMU holds a write lock on the overlay; reading its header needs none.
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                              capture_output=True, text=True, check=True).stdout
        assert '"format": "qcow2"' in info
        assert f'"backing-filename": "{base_image}"' in info
        assert '"backing-filename-format": "raw"' in info
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert overlays_in(scratch) == []


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.img", "base image not found"),
    (lambda tmp: tmp, "not a file"),
    (lambda tmp: (tmp / "empty.img").touch() or tmp / "empty.img", "the image is empty"),
])
def test_bad_disk_is_one_line(minivm, tmp_path, make, message):
    image = make(tmp_path)
    done = minivm("run", "--disk", str(image), "--", "true")
    assert done.returncode == 125
    assert done.stderr.decode() == f"minivm: --disk {image}: {message}\n"


def test_a_qcow2_whose_backing_file_is_gone_is_one_line(minivm, tmp_path):
    image = tmp_path / "orphan.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(tmp_path / "gone"),
                    "-F", "raw", str(image), "1M"], check=True)
    done = minivm("run", "--disk", str(image), "--", "true")
    assert done.returncode == 125
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minivm: --disk {image}: qemu-img info failed")
    assert "gone" in lines[0]
