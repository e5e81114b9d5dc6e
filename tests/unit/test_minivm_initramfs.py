"""The cpio "newc" writer and the /init argument passing, checked with the system's tools."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minivm import initramfs
from minivm.initramfs import CpioWriter

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio (apt cpio)")


def sample_archive() -> bytes:
    archive = CpioWriter()
    archive.add_dir("bin")
    archive.add_file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    archive.add_file("odd", b"abc")  # 3 bytes: the writer must pad to 4
    archive.add_symlink("bin/hi", "hello")
    return archive.finish()


def test_newc_headers_follow_the_format():
    data = sample_archive()
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    # Each header is "070701" + 13 fields of 8 hex digits; c_namesize counts the NUL.
    fields = [int(data[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    mode, namesize, filesize = fields[1], fields[11], fields[6]
    assert mode == 0o040755 and namesize == len(b"bin\0") and filesize == 0
    assert b"TRAILER!!!\0" in data[-124:]


@needs_cpio
def test_system_cpio_lists_and_extracts_what_the_writer_wrote(tmp_path):
    archive = tmp_path / "sample.cpio"
    archive.write_bytes(sample_archive())
    listing = subprocess.run(["cpio", "-t", "--quiet"], stdin=archive.open("rb"),
                             capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["bin", "bin/hello", "odd", "bin/hi"]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], stdin=archive.open("rb"), cwd=out, check=True)
    assert (out / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "bin/hello").stat().st_mode & 0o777 == 0o755
    assert (out / "odd").read_bytes() == b"abc"
    assert (out / "bin/hi").readlink().as_posix() == "hello"


def test_a_changed_busybox_gets_a_new_base_archive(tmp_path):
    """busybox is keyed by its size, mtime and inode: a stat(2), not a 2 MB read."""
    if not os.path.isfile(initramfs.BUSYBOX):
        pytest.skip("needs busybox-static")
    busybox = tmp_path / "busybox"
    shutil.copy2(initramfs.BUSYBOX, busybox)
    first, cached = initramfs.cached_base(tmp_path, busybox)
    assert not cached and initramfs.cached_base(tmp_path, busybox) == (first, True)
    info = busybox.stat()
    os.utime(busybox, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # as an upgrade would
    second, cached = initramfs.cached_base(tmp_path, busybox)
    assert not cached and second != first
    assert Path(second).read_bytes() == Path(first).read_bytes()


def test_the_base_archive_key_is_the_same_in_every_checkout(tmp_path, monkeypatch):
    """The writer's source is keyed by its text: a second clone (another inode, another
    mtime) shares the archive; an edit of /init makes a new one."""
    if not os.path.isfile(initramfs.BUSYBOX):
        pytest.skip("needs busybox-static")
    keys = []
    for clone, text in (("a", "same"), ("b", "same"), ("c", "edited")):
        (tmp_path / clone).mkdir()
        source = tmp_path / clone / "initramfs.py"
        source.write_text(text)
        monkeypatch.setattr(initramfs, "__file__", str(source))
        keys.append(initramfs._base_path(tmp_path, initramfs.BUSYBOX))
    assert keys[0] == keys[1] != keys[2]


def test_gc_prunes_the_base_archives_this_minivm_would_not_use(tmp_path):
    if not os.path.isfile(initramfs.BUSYBOX):
        pytest.skip("needs busybox-static")
    current, _ = initramfs.cached_base(tmp_path)
    stale = [tmp_path / "initramfs" / name for name in ("base-1-2-3.cpio", "base-0-0-0-0.cpio")]
    for path in stale:
        path.write_bytes(b"old")
    assert initramfs.prune_bases(tmp_path) == [str(path) for path in sorted(stale)]
    assert initramfs.cached_base(tmp_path) == (current, True)
    assert initramfs.prune_bases(tmp_path) == []


@needs_cpio
def test_base_archive_has_busybox_applets_init_and_console(tmp_path):
    if not os.path.isfile(initramfs.BUSYBOX):
        pytest.skip("needs busybox-static")
    path, cached = initramfs.cached_base(tmp_path)
    assert not cached
    assert initramfs.cached_base(tmp_path) == (path, True)
    listing = subprocess.run(["cpio", "-tv", "--quiet"], stdin=open(path, "rb"),
                             capture_output=True, text=True, check=True).stdout
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}
    assert lines["init"].startswith("-rwxr-xr-x")
    assert lines["bin/busybox"].startswith("-rwxr-xr-x")
    assert lines["bin/sh"].startswith("l") and lines["bin/sh"].endswith("-> busybox")
    assert lines["dev/console"].startswith("crw-------")
    assert "5," in lines["dev/console"] and " 1 " in lines["dev/console"]
    assert "etc/fstab" in lines


@pytest.mark.parametrize("shell", [["sh"], [str(initramfs.BUSYBOX), "sh"]])
def test_run_conf_passes_every_argument_intact(tmp_path, shell):
    """The `set --` line of run.conf, sourced by a real POSIX shell, gives back the argv."""
    if not shutil.which(shell[0]):
        pytest.skip(f"needs {shell[0]}")
    argv = ["printf", "a b", "it's", '"q"', "$HOME", "`id`", "back\\slash", "new\nline", "", "*"]
    data = initramfs.run_archive(argv, "nonce")
    conf = data[data.index(b"nonce="):data.index(b"\0", data.index(b"nonce="))]
    (tmp_path / "run.conf").write_bytes(conf)
    script = f'. {tmp_path}/run.conf; for arg in "$@"; do printf "%s\\0" "$arg"; done'
    done = subprocess.run([*shell, "-c", script], capture_output=True, check=True, cwd=tmp_path)
    assert done.stdout.split(b"\0")[:-1] == [arg.encode() for arg in argv]


def test_initrd_is_base_then_run_archive_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    base = tmp_path / "base.cpio"
    base.write_bytes(sample_archive())
    path = Path(initramfs.write_initrd(base, b"RUN", "abcd"))
    assert path.parent == tmp_path
    assert path.read_bytes() == sample_archive() + b"RUN"
    assert path.stat().st_mode & 0o777 == 0o600


def test_run_archive_carries_modules_in_order_and_setup_commands(tmp_path):
    if shutil.which("cpio") is None:
        pytest.skip("needs cpio")
    archive = initramfs.run_archive(["true"], "n0nce", modules=[("virtio", b"A"), ("blk", b"B")],
                                    setup=[["ip", "addr", "add", "10.0.0.2/24", "dev", "eth0"]])
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, check=True)
    conf = (tmp_path / "minivm" / "run.conf").read_text()
    assert "modules='virtio blk'\n" in conf  # load order as given
    assert (tmp_path / "minivm" / "modules" / "blk.ko").read_bytes() == b"B"
    assert (tmp_path / "minivm" / "setup.sh").read_text() == \
        "prepare ip addr add 10.0.0.2/24 dev eth0\n"


def test_a_base_archive_pruned_under_a_run_is_one_line_and_no_initrd(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with pytest.raises(initramfs.MinivmError, match="gone.cpio was removed"):
        initramfs.write_initrd(tmp_path / "gone.cpio", b"run", "ab")
    assert list(tmp_path.iterdir()) == []


def test_sh_quoting_is_shlex_quote_to_the_letter():
    """initramfs quotes /init's words by shlex.quote's rule without importing shlex (and the
    re it loads): differential against the standard library's, on every character class."""
    import random
    import shlex
    import string
    from minivm.initramfs import _quote
    pick = random.Random(19)
    alphabet = string.printable + "é€\x01"
    for _ in range(20000):
        word = "".join(pick.choice(alphabet) for _ in range(pick.randint(0, 8)))
        assert _quote(word) == shlex.quote(word), repr(word)
