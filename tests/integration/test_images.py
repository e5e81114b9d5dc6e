"""Images end to end, as root: import (docker save, OCI layout), run, commit, export, rmi.

Every image is built here with tarfile from the host's busybox-static (tests/imagebuilder.py):
no registry, no internet. Each test gets its own MINIBOX_STORE and MINIBOX_ROOT.
"""
import gzip
import json
import os
import signal
import stat
import time

import pytest

from tests import imagebuilder as ib
from tests.harness import Minibox
from tests.helpers import assert_one_line_error, small_tmpfs

pytestmark = pytest.mark.root

BASE = ib.busybox_entries() + [
    ("dir", "data"), ("file", "data/keep", "kept\n"), ("file", "data/gone", "deleted\n"),
    ("dir", "opq"), ("file", "opq/old", "hidden\n"), ("dir", "opq/sub"),
    ("file", "opq/sub/old2", "hidden\n")]
TOP = [("file", "data/.wh.gone", ""), ("dir", "opq"), ("file", "opq/.wh..wh..opq", ""),
       ("file", "opq/new", "new\n"), ("file", "added", "added in layer 2\n")]
SHOW = "ls /data; echo --; find /opq | sort; echo --; cat /added"
SHOWN = "keep\n--\n/opq\n/opq/new\n--\nadded in layer 2\n"


@pytest.fixture
def box(tmp_path):
    """The minibox CLI (tests/harness.py) with an image store of its own: no mount of the
    store and no scratch file in it may be left."""
    box = Minibox(tmp_path / "store")
    box.tmp = tmp_path
    yield box
    with open("/proc/self/mountinfo") as mounts:
        assert str(tmp_path) not in mounts.read()
    scratch = tmp_path / "store" / "tmp"
    assert not scratch.exists() or os.listdir(scratch) == []


def write_archive(box, files, kind, name="image"):
    path = box.tmp / f"{name}.{'d' if kind == 'dir' else 'tar'}"
    (ib.write_dir if kind == "dir" else ib.write_tar)(str(path), files)
    return str(path)


def stored_layers(box):
    layers = box.store / "layers"
    return sorted(os.listdir(layers)) if layers.exists() else []


def one_line_error(result):
    """The one `minibox: ...` line of a failure (progress lines may come before it)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("minibox: ")]
    assert result.returncode == 125 and len(errors) == 1 and "Traceback" not in result.stderr, \
        result.stderr
    return errors[0]


@pytest.mark.parametrize("form", ["docker-save", "oci"])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_two_layer_image_with_whiteout_and_opaque_dir(box, form, kind):
    layers = [ib.layer_tar(BASE), ib.layer_tar(TOP)]
    files = ib.docker_save(layers) if form == "docker-save" else ib.oci_layout(layers)
    name = "test/image:1" if form == "docker-save" else "test/oci:2"
    imported = box("image", "import", write_archive(box, files, kind))
    assert f"Loaded image: {name}" in imported.stdout

    assert box("run", "--rm", name, "sh", "-c", SHOW).stdout == SHOWN
    # The overlay form on disk: a 0:0 character device and trusted.overlay.opaque=y.
    top = box.store / "layers" / ib.sha256(layers[1])[7:] / "diff"
    whiteout = os.lstat(top / "data" / "gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(top / "opq", "trusted.overlay.opaque") == b"y"
    assert stored_layers(box) == sorted(ib.sha256(layer)[7:] for layer in layers)


def test_a_layer_twice_in_one_image_runs(box):
    # Empty build steps give identical layers; overlayfs would refuse a lowerdir given twice.
    empty = ib.layer_tar([])
    layers = [ib.layer_tar(BASE), empty, ib.layer_tar(TOP), empty]
    box("image", "import", write_archive(box, ib.docker_save(layers), "file"))
    assert box("run", "--rm", "test/image:1", "sh", "-c", SHOW).stdout == SHOWN
    assert len(stored_layers(box)) == 3


def test_layers_are_stored_once(box):
    base = ib.layer_tar(BASE)
    box("image", "import", write_archive(box, ib.docker_save([base]), "file", "one"))
    box("image", "import", write_archive(box, ib.oci_layout([base, ib.layer_tar(TOP)]), "file"))
    assert len(stored_layers(box)) == 2
    listing = box("images").stdout.splitlines()
    assert [line.split()[:2] for line in listing[1:]] == [["test/image", "1"], ["test/oci", "2"]]


def test_image_config_is_applied(box):
    layers = [ib.layer_tar(BASE)]
    settings = {"Entrypoint": ["/bin/echo", "entry"], "Cmd": ["default", "cmd"],
                "Env": ["GREETING=hello", "PATH=/bin"], "WorkingDir": "/work"}
    box("image", "import", "--name", "cfg", write_archive(box, ib.docker_save(layers, settings),
                                                          "file"))
    assert box("run", "--rm", "cfg").stdout == "entry default cmd\n"
    assert box("run", "--rm", "cfg", "replaced").stdout == "entry replaced\n"
    shown = box("run", "--rm", "-e", "EXTRA=1", "--entrypoint", "/bin/sh", "cfg",
                "-c", "echo $GREETING $EXTRA $PATH; pwd").stdout
    assert shown == "hello 1 /bin\n/work\n"
    assert box("run", "--rm", "-e", "GREETING=override", "-w", "/tmp", "--entrypoint", "sh",
               "cfg", "-c", "echo $GREETING; pwd").stdout == "override\n/tmp\n"


def test_image_user_is_applied(box):
    layers = [ib.layer_tar(BASE)]
    box("image", "import", "--name", "user",
        write_archive(box, ib.docker_save(layers, {"User": "1000:1001"}), "file"))
    status = box("run", "--rm", "user", "cat", "/proc/self/status").stdout
    assert "\nUid:\t1000\t1000\t1000\t1000\n" in status
    assert "\nGid:\t1001\t1001\t1001\t1001\n" in status


def test_busybox_runs_sh_by_default(box):
    assert box("run", "-i", "--rm", "busybox", input="echo $((6*7))\n").stdout == "42\n"


def test_many_layers_are_flattened_to_fit_one_mount(tmp_path):
    # A long store path leaves room for few l/<short> links in the mount options' budget:
    # 12 layers must be merged down to what fits, and the files must survive the merge.
    store = tmp_path / ("s" * 200) / ("t" * 200) / "store"
    layers = [ib.layer_tar(BASE)]
    for number in range(1, 12):
        layers.append(ib.layer_tar([("file", f"f{number}", f"{number}\n")]
                                   + ([("file", ".wh.f1", "")] if number == 5 else [])))
    ib.write_tar(str(tmp_path / "deep.tar"), ib.docker_save(layers))

    minibox = Minibox(store)
    minibox("image", "import", str(tmp_path / "deep.tar"))
    config, = os.listdir(store / "images")
    diff_ids = json.loads((store / "images" / config).read_text())["rootfs"]["diff_ids"]
    limit = 3072 // (len(str(store / "l")) + 12)
    assert 1 < len(diff_ids) <= limit < len(layers)
    assert len(os.listdir(store / "layers")) == len(diff_ids)  # the merged ones are gone
    shown = minibox("run", "--rm", "test/image:1", "sh", "-c", "ls /; cat /f11").stdout.split()
    assert "f1" not in shown and "f2" in shown and "f11" in shown and shown[-1] == "11"


@pytest.mark.parametrize("entries, outside", [
    ([("file", "../../escaped", "x")], "escaped"),
    ([("symlink", "link", "{outside}"), ("file", "link/escaped", "x")], "escaped"),
    ([("symlink", "link", "../../../../../../../../{outside}"), ("file", "link/escaped", "x")],
     "escaped"),
    ([("dir", "d"), ("symlink", "d/up", "../../.."), ("file", "d/up/escaped", "x")], None),
    ([("hardlink", "stolen", "{outside}/secret")], "secret"),
    ([("hardlink", "stolen", "../../../../../../{outside}/secret")], "secret"),
], ids=["dotdot", "symlink-absolute", "symlink-relative", "symlink-up", "hardlink-absolute",
        "hardlink-dotdot"])
def test_malicious_layers_write_nothing_outside(box, entries, outside):
    victim = box.tmp / "victim"
    victim.mkdir()
    (victim / "secret").write_text("host secret\n")
    entries = [tuple(part.format(outside=victim) if isinstance(part, str) else part
                     for part in entry) for entry in entries]
    archive = write_archive(box, ib.docker_save([ib.layer_tar(entries)]), "file")
    result = box("image", "import", archive, check=False)
    assert "refusing the layer" in one_line_error(result)
    assert sorted(os.listdir(victim)) == ["secret"] and os.stat(victim / "secret").st_nlink == 1
    assert not (box.tmp / "escaped").exists() and not (box.store / "escaped").exists()
    assert stored_layers(box) == [] and not (box.store / "repositories.json").exists()


def test_absolute_names_stay_inside_and_devices_are_skipped(box):
    victim = box.tmp / "victim"
    entries = ib.busybox_entries() + [("file", f"{victim}/planted", "x"),
                                      ("chardev", "disk", 8, 0)]
    layer = ib.layer_tar(entries)
    result = box("image", "import", "--name", "odd",
                 write_archive(box, ib.docker_save([layer]), "file"))
    assert "skipped 1 device node" in result.stderr
    assert not victim.exists()
    diff = box.store / "layers" / ib.sha256(layer)[7:] / "diff"
    assert (diff / str(victim).lstrip("/") / "planted").read_text() == "x"
    assert not os.path.lexists(diff / "disk")


def test_digest_mismatch_and_truncation_store_nothing(box):
    layers = [ib.layer_tar(BASE), ib.layer_tar(TOP)]
    tampered = ib.docker_save(layers)
    name = next(n for n in tampered if n.endswith("layer.tar") and tampered[n] == layers[1])
    tampered[name] = ib.layer_tar(TOP + [("file", "backdoor", "x")])
    result = box("image", "import", write_archive(box, tampered, "file", "tampered"), check=False)
    assert "digest mismatch" in one_line_error(result)

    oci = ib.oci_layout(layers)
    blob = next(n for n in oci if oci[n] == gzip.compress(layers[1]))
    oci[blob] = gzip.compress(layers[1] + b"\0" * 1024)
    result = box("image", "import", write_archive(box, oci, "dir", "oci"), check=False)
    assert "digest mismatch" in one_line_error(result)

    whole = box.tmp / "whole.tar"
    ib.write_tar(str(whole), ib.docker_save(layers))
    data = whole.read_bytes()
    (box.tmp / "cut.tar").write_bytes(data[:len(data) // 2])
    result = box("image", "import", str(box.tmp / "cut.tar"), check=False)
    assert "truncated" in one_line_error(result)
    # A rootfs tarball has no digest to check: cut inside busybox, tar itself notices.
    (box.tmp / "cut-rootfs.tar").write_bytes(layers[0][:len(layers[0]) // 2])
    result = box("image", "import", "--name", "cut", str(box.tmp / "cut-rootfs.tar"),
                 check=False)
    assert "truncated" in one_line_error(result)
    assert stored_layers(box) == [] and not (box.store / "images").exists()


def test_commit_then_run_sees_the_change(box):
    box("run", "--name", "builder", "busybox", "sh", "-c",
        "echo committed > /new; rm /etc/group; mkdir -p /opt/app; echo x > /opt/app/f")
    box("commit", "builder", "mine:v1")
    shown = box("run", "--rm", "mine:v1", "sh", "-c",
                "cat /new /opt/app/f; test -e /etc/group || echo group-gone").stdout
    assert shown == "committed\nx\ngroup-gone\n"
    # rmi refuses while a container made from the image exists, and then frees its layers.
    box("run", "--name", "user-of-mine", "mine:v1", "true")
    assert "used by container" in one_line_error(box("rmi", "mine:v1", check=False))
    box("rm", "user-of-mine", "builder")
    before = stored_layers(box)
    box("rmi", "mine:v1")
    assert len(stored_layers(box)) == len(before) - 1
    assert "no such image" in one_line_error(box("run", "--rm", "mine:v1", check=False))


def test_export_round_trips_through_import(box):
    layers = [ib.layer_tar(BASE), ib.layer_tar(TOP)]
    box("image", "import", write_archive(box, ib.docker_save(layers), "file"))
    box("run", "--name", "exported", "test/image:1", "sh", "-c", "echo hi > /data/mine")
    exported = box.tmp / "fs.tar"
    box("export", "-o", str(exported), "exported")
    box("rm", "exported")
    box("image", "import", "--name", "flat", str(exported))
    assert box("images").stdout.split("\n")[1].split()[:4][3] == "1"  # one layer
    shown = box("run", "--rm", "flat", "sh", "-c", "cat /data/mine; " + SHOW).stdout
    assert shown == "hi\n" + SHOWN.replace("keep\n", "keep\nmine\n")


def test_rmi_untags_before_it_deletes(box):
    os.makedirs(box.store / "images" / "busybox" / "rootfs")  # the foundation's old layout
    archive = write_archive(box, ib.docker_save([ib.layer_tar(BASE)]), "file")
    box("image", "import", archive)
    box("image", "import", "--name", "alias", archive)
    box("rmi", "alias")
    assert len(stored_layers(box)) == 1
    box("rmi", "test/image:1")
    assert stored_layers(box) == [] and os.listdir(box.store / "l") == []


def test_bad_input_is_one_line(box):
    assert "no such file" in one_line_error(box("image", "import", "/nonexistent.tar",
                                                check=False))
    assert "no such image" in one_line_error(box("run", "--rm", "nothing:here", check=False))
    assert "invalid image reference" in one_line_error(
        box("image", "import", "--name", "Bad Name", str(box.tmp), check=False))


def only_line(result, contains):
    """The contract for bad input: exit 125, one line naming `contains`."""
    assert_one_line_error(result, 125, "minibox: ", contains)
    return result.stderr


@pytest.mark.parametrize("content", [b"this is not a tar archive at all" * 100,
                                     gzip.compress(b"nor is this, once unzipped" * 100),
                                     b""], ids=["text", "gzip-of-text", "empty"])
def test_a_file_that_is_no_tar_is_one_line(box, content):
    not_tar = box.tmp / "junk.tar"
    not_tar.write_bytes(content)
    assert "not a tar archive" in only_line(box("image", "import", str(not_tar), check=False),
                                            str(not_tar))


def test_import_refuses_what_is_not_a_regular_file(box):
    # /dev/zero never ends; a FIFO blocks: neither is read at all.
    fifo = box.tmp / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        result = box("image", "import", path, check=False, timeout=10)
        assert "not a regular file" in only_line(result, path)
    assert stored_layers(box) == []


def zeros_archive(box, size):
    """A docker save archive of one gzip layer holding `size` zero bytes (and a short tail)."""
    layer = ib.zero_filled_layer_gz("zeros", size)
    config = ib.image_config([gzip.decompress(layer)])
    return write_archive(box, ib.docker_save([layer], config=config), "file")


def test_the_import_limit_is_checked_before_writing(box):
    archive = zeros_archive(box, 2 << 20)
    result = box("image", "import", "--max-size", "1m", archive, check=False)
    message = only_line(result, archive)
    assert "2.0 MiB" in message and "1 MiB" in message and "--max-size" in message
    assert stored_layers(box) == [] and not (box.store / "repositories.json").exists()
    box("image", "import", "--max-size", "3m", archive)
    assert len(stored_layers(box)) == 1
    assert "not-a-size" in only_line(box("image", "import", "--max-size", "not-a-size", archive,
                                         check=False), "--max-size")
    assert "default 10g" in box("image", "import", "--help").stdout


@pytest.fixture
def small_store(box):
    """The box's store on a 32 MB tmpfs (torn down before box checks its mounts)."""
    with small_tmpfs(str(box.store)) as store:
        yield store


def test_a_sparse_file_imports_into_a_small_store(box, small_store):
    # Issue 14's case: a 10 KB layer holding a 10 GB sparse file, a 32 MB store.
    layer = ib.sparse_layer_tar("big", 10 ** 10, [(0, b"start\n")])
    box("image", "import", write_archive(box, ib.docker_save([layer]), "file"))
    big = box.store / "layers" / ib.sha256(layer)[7:] / "diff" / "big"
    assert os.stat(big).st_size == 10 ** 10 and os.stat(big).st_blocks * 512 <= 64 * 1024


def test_an_archive_bigger_than_the_free_space_writes_nothing(box, small_store):
    archive = zeros_archive(box, 64 << 20)
    message = only_line(box("image", "import", archive, check=False), small_store)
    assert "64.0 MiB" in message and "free" in message
    assert stored_layers(box) == [] and os.listdir(box.store / "tmp") == []


def test_running_out_of_space_while_unpacking_names_the_store(box):
    # The claimed bytes fit; the inodes do not (a tmpfs of 40): ENOSPC from open(2) itself.
    layer = ib.layer_tar([("file", f"f{number}", "") for number in range(100)])
    archive = write_archive(box, ib.docker_save([layer]), "file")
    with small_tmpfs(str(box.store), "size=32m,nr_inodes=40"):
        message = only_line(box("image", "import", archive, check=False), str(box.store))
        assert "No space left on device" in message
        assert stored_layers(box) == [] and os.listdir(box.store / "tmp") == []


def test_export_errors_are_one_line(box):
    only_line(box("export", "-o", str(box.tmp / "none.tar"), "nothing", check=False),
              "no such container: nothing")
    assert not os.path.exists(box.tmp / "none.tar")  # no empty file left behind
    box("run", "--name", "exported", "busybox", "true")
    assert "/nonexistent/x" in only_line(box("export", "-o", "/nonexistent/x", "exported",
                                             check=False), "No such file or directory")
    with small_tmpfs(str(box.tmp / "small"), "size=256k") as small:
        output = os.path.join(small, "fs.tar")
        message = only_line(box("export", "-o", output, "exported", check=False), output)
        assert "No space left on device" in message
        assert os.listdir(small) == []  # the half-written export is gone
    # Only a half-written regular file is removed: never a device the export was sent to.
    assert "No space left on device" in only_line(box("export", "-o", "/dev/full", "exported",
                                                      check=False), "/dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    box("rm", "exported")


def test_commit_into_a_full_store_is_one_line(box, small_store):
    box("run", "--name", "big", "busybox", "sh", "-c", "head -c 24000000 /dev/urandom > /big")
    images_before = os.listdir(box.store / "images")
    message = only_line(box("commit", "big", "big:1", check=False), small_store)
    assert "free" in message or "No space left on device" in message
    assert os.listdir(box.store / "images") == images_before
    assert os.listdir(box.store / "tmp") == []
    box("rm", "big")


def test_a_container_keeps_its_image_when_the_name_moves_on(box):
    """The image is resolved once, when the container is created: a re-tag of its name later
    must not change what a restart mounts, let rmi delete layers in use, or make commit stack
    the container's changes on the other image's layers."""
    def image(text, name):
        layer = ib.layer_tar(ib.busybox_entries() + [("file", "which", text)])
        return write_archive(box, ib.docker_save([layer], repo_tags=("app:1",)), "file", name)
    box("image", "import", image("first\n", "first"))
    box("run", "-d", "--network", "none", "--restart", "always", "--name", "keeper", "app:1",
        "busybox", "sleep", "60")
    try:
        box("image", "import", image("second\n", "second"))  # app:1 names another image now

        def pid():
            return box("inspect", "-f", "{{.State.Pid}}", "keeper").stdout.strip()
        first_pid = pid()
        os.kill(int(first_pid), signal.SIGKILL)  # --restart always brings a fresh init
        deadline = time.monotonic() + 10
        while pid() in (first_pid, "0") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box("exec", "keeper", "cat", "/which").stdout == "first\n"
        first_id = box("inspect", "-f", "{{.Image}}", "keeper").stdout.strip()
        assert first_id.startswith("sha256:")
        assert "used by container" in one_line_error(box("rmi", first_id, check=False))
        box("exec", "keeper", "sh", "-c", "echo mine > /mine")
        box("commit", "keeper", "kept:1")
        shown = box("run", "--rm", "--network", "none", "kept:1", "cat", "/which", "/mine")
        assert shown.stdout == "first\nmine\n"
    finally:
        box("rm", "-f", "keeper")
