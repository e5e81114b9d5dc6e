"""Images without containers: references, Docker's command rules, archive parsing, layer
conversion (overlay whiteouts <-> OCI whiteouts) and how `run` composes an image's config."""
import gzip
import io
import json
import os
import stat
import tarfile

import pytest

from minibox import cli, images, supervisor
from minibox.images import archives, layers
from minibox.images import store as imagestore
from minibox.errors import MiniboxError
from tests import imagebuilder as ib
from tests.helpers import small_tmpfs


@pytest.mark.parametrize("text, expected", [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("docker.io/library/alpine:3.19", "alpine:3.19"),
    ("docker.io/user/app", "user/app:latest"),
    ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
    ("Registry.Example.com/app", "Registry.Example.com/app:latest"),
])
def test_references_are_normalised_like_docker(text, expected):
    assert images.parse_reference(text) == expected


@pytest.mark.parametrize("text", ["Upper/case", "with space", "app:bad/tag", "app:", "-app",
                                  "app:" + "x" * 129])
def test_bad_references_are_refused(text):
    with pytest.raises(MiniboxError, match="invalid image reference"):
        images.parse_reference(text)


CONFIG = {"Entrypoint": ["/bin/echo", "entry"], "Cmd": ["default"]}


@pytest.mark.parametrize("config, args, entrypoint, expected", [
    (CONFIG, [], None, ["/bin/echo", "entry", "default"]),
    (CONFIG, ["mine"], None, ["/bin/echo", "entry", "mine"]),
    (CONFIG, [], "/bin/sh", ["/bin/sh"]),                      # --entrypoint drops CMD
    (CONFIG, ["-c", "x"], "/bin/sh", ["/bin/sh", "-c", "x"]),
    (CONFIG, ["ls"], "", ["ls"]),                              # --entrypoint "" clears it
    ({"Cmd": ["sh"]}, [], None, ["sh"]),
    ({}, [], None, []),
])
def test_entrypoint_and_cmd_follow_docker(config, args, entrypoint, expected):
    assert images.command_for(config, args, entrypoint) == expected


def test_image_env_is_a_dict():
    assert images.environment_of({"Env": ["A=1", "B=x=y", "junk"]}) == {"A": "1", "B": "x=y"}


def test_run_applies_the_image_config(monkeypatch):
    settings = {"Entrypoint": ["/bin/echo"], "Cmd": ["hi"], "Env": ["PATH=/bin", "A=image"],
                "WorkingDir": "/srv", "User": "1000:1001"}
    seen = []
    monkeypatch.setattr(cli, "check_caller", lambda command, allowed: None)
    monkeypatch.setattr(images, "resolve", lambda reference: f"sha256:{reference}")
    monkeypatch.setattr(images, "run_settings", lambda image_id: settings)
    monkeypatch.setattr(images, "layers_of", lambda image_id: [f"/layers/of/{image_id}"])
    monkeypatch.setattr(supervisor, "run_foreground", lambda spec, container_id: seen.append(spec) or 0)
    for argv in (["run", "-e", "A=flag", "img"], ["run", "-w", "/tmp", "img", "there"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 0
    first, second = seen
    assert first.command == ["/bin/echo", "hi"] and second.command == ["/bin/echo", "there"]
    # Docker's defaults, then the image's ENV, then -e
    assert first.env == {"PATH": "/bin", "A": "flag", "HOME": "/root",
                         "HOSTNAME": first.hostname}
    assert (first.workdir, second.workdir) == ("/srv", "/tmp")
    assert first.user == "1000:1001"
    # resolved once: the id and its layers go with the container
    assert (first.image, first.image_id, first.layers) == ("img", "sha256:img",
                                                           ["/layers/of/sha256:img"])


# -- archives -------------------------------------------------------------------------------

def found(tmp_path, files):
    ib.write_dir(str(tmp_path / "archive"), files)
    with archives.open_archive(str(tmp_path / "archive")) as images_found:
        return images_found


def test_docker_save_config_is_checked_against_its_file_name(tmp_path):
    files = ib.docker_save([ib.layer_tar([])])
    config_name = next(name for name in files if name.endswith(".json") and name[0] != "m")
    files[config_name] = files[config_name].replace(b'"os"', b'"OS"')
    with pytest.raises(MiniboxError, match="digest mismatch for .*json"):
        found(tmp_path, files)


def test_manifest_paths_may_not_leave_the_archive(tmp_path):
    files = ib.docker_save([ib.layer_tar([])])
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Layers"] = ["../../etc/passwd"]
    files["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(MiniboxError, match="refusing the archive"):
        found(tmp_path, files)


def test_oci_index_picks_this_machines_platform(tmp_path):
    files = ib.oci_layout([ib.layer_tar([])], name="multi:1")
    index = json.loads(files["index.json"])
    image_manifest = index["manifests"][0]
    platforms = json.dumps({"schemaVersion": 2,
                            "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [
                                dict(image_manifest, digest="sha256:" + "0" * 64,
                                     platform={"architecture": "arm64", "os": "linux"}),
                                dict(image_manifest,
                                     platform={"architecture": "amd64", "os": "linux"})]}).encode()
    files[f"blobs/sha256/{ib.sha256(platforms)[7:]}"] = platforms
    index["manifests"] = [dict(image_manifest, digest=ib.sha256(platforms),
                               mediaType="application/vnd.oci.image.index.v1+json")]
    files["index.json"] = json.dumps(index).encode()
    image, = found(tmp_path, files)
    assert image.names == ["multi:1"] and len(image.layers) == 1


def test_oci_blob_digests_are_checked(tmp_path):
    files = ib.oci_layout([ib.layer_tar([])])
    index = json.loads(files["index.json"])
    files[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"] += b" "
    with pytest.raises(MiniboxError, match="digest mismatch"):
        found(tmp_path, files)


def test_a_directory_that_is_no_archive_is_refused(tmp_path):
    with pytest.raises(MiniboxError, match="neither a docker save archive"):
        found(tmp_path, {"README": b"hello"})


def test_config_must_list_one_diff_id_per_layer(tmp_path):
    layer = ib.layer_tar([])
    files = ib.docker_save([layer, layer], config=ib.image_config([layer]))
    image, = found(tmp_path, files)
    with pytest.raises(MiniboxError, match="one sha256 digest for each of its 2 layers"):
        archives.parse_config(image)


# -- layers ---------------------------------------------------------------------------------

@pytest.mark.root
def test_a_later_entry_replaces_a_directory_without_following_its_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host data")
    layer = ib.layer_tar([("dir", "a"), ("dir", "a/b"), ("file", "a/b/f", "x"),
                          ("symlink", "a/link", str(outside)), ("file", "a", "now a file"),
                          ("dir", "c"), ("file", "c/g", "y"), ("file", ".wh.c", "")])
    target = tmp_path / "layer"
    target.mkdir()
    layers.unpack_layer(io.BytesIO(layer), str(target))
    assert (target / "a").read_text() == "now a file"
    assert stat.S_ISCHR(os.lstat(target / "c").st_mode)  # the directory gave way to a whiteout
    assert (outside / "keep").read_text() == "host data"

@pytest.mark.root
def test_whiteouts_become_overlay_whiteouts_and_pack_back(tmp_path):
    entries = [("dir", "etc"), ("file", "etc/.wh.hosts", ""), ("dir", "var", 0o1777),
               ("file", "var/.wh..wh..opq", ""), ("file", "var/new", "n", 0o4755),
               ("file", "owned", "o", {"uid": 1234, "gid": 5678}),
               ("hardlink", "var/again", "var/new"), ("symlink", "abs", "/etc/passwd"),
               ("file", ".wh..wh.plnk", "aufs bookkeeping")]
    layer = ib.layer_tar(entries)
    target = tmp_path / "layer"
    target.mkdir()
    blob, diff_id, skipped = layers.unpack_layer(io.BytesIO(gzip.compress(layer)), str(target))
    assert diff_id == ib.sha256(layer) and blob != diff_id and skipped == 0
    whiteout = os.lstat(target / "etc" / "hosts")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(target / "var", "trusted.overlay.opaque") == b"y"
    assert stat.S_IMODE(os.stat(target / "var").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(target / "var" / "new").st_mode) == 0o4755  # setuid kept
    assert os.stat(target / "var" / "new").st_ino == os.stat(target / "var" / "again").st_ino
    assert (os.stat(target / "owned").st_uid, os.stat(target / "owned").st_gid) == (1234, 5678)
    assert os.readlink(target / "abs") == "/etc/passwd"
    assert sorted(os.listdir(target)) == ["abs", "etc", "owned", "var"]

    packed = io.BytesIO()
    layers.pack(str(target), packed)
    packed.seek(0)
    with tarfile.open(fileobj=packed) as tar:
        members = {member.name: member for member in tar}
    assert "etc/.wh.hosts" in members and "var/.wh..wh..opq" in members
    assert members["var/again"].islnk() or members["var/new"].islnk()
    assert members["owned"].uid == 1234 and members["owned"].uname == ""


@pytest.mark.root
def test_zstd_layers_are_refused_with_a_reason(tmp_path):
    with pytest.raises(MiniboxError, match="zstd"):
        layers.unpack_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100), str(tmp_path))


# -- what a layer may cost: holes stay holes, and a limit on what is written -----------------

TEN_GB = 10 ** 10


@pytest.mark.root
def test_a_sparse_member_stays_sparse(tmp_path):
    # Issue 14: a 10 KB layer holding a 10 GB sparse file filled a 32 MB store at once.
    layer = ib.sparse_layer_tar("big", TEN_GB, [(5, b"hello"), (TEN_GB - 4, b"end\n")])
    assert len(layer) <= 10 * 1024
    with small_tmpfs(str(tmp_path / "disk")) as disk:
        layers.unpack_layer(io.BytesIO(layer), disk)
        unpacked = os.path.join(disk, "big")
        assert os.stat(unpacked).st_size == TEN_GB
        assert os.stat(unpacked).st_blocks * 512 <= 64 * 1024
        with open(unpacked, "rb") as content:
            assert content.read(10) == b"\0" * 5 + b"hello"
            content.seek(TEN_GB - 4)
            assert content.read() == b"end\n"


@pytest.mark.root
def test_a_zero_filled_member_is_written_with_holes(tmp_path):
    # A plain member (no sparse map) of 256 MiB of zeros: only its non-zero tail takes disk.
    size = 256 << 20
    layer = ib.zero_filled_layer_gz("zeros", size, tail=b"end\n")
    with small_tmpfs(str(tmp_path / "disk")) as disk:
        layers.unpack_layer(io.BytesIO(layer), disk)
        unpacked = os.path.join(disk, "zeros")
        assert os.stat(unpacked).st_size == size + 4
        assert os.stat(unpacked).st_blocks * 512 <= 64 * 1024
        with open(unpacked, "rb") as content:
            content.seek(size - 2)
            assert content.read() == b"\0\0end\n"


def test_claimed_bytes_count_data_not_holes():
    sparse = ib.sparse_layer_tar("big", TEN_GB, [(5, b"hello"), (TEN_GB - 4, b"end\n")])
    assert layers.claimed_bytes(io.BytesIO(sparse)) == 9
    plain = ib.layer_tar([("file", "a", "x" * 1000), ("dir", "d"), ("hardlink", "b", "a"),
                          ("symlink", "c", "a")])
    assert layers.claimed_bytes(io.BytesIO(gzip.compress(plain))) == 1000
    with pytest.raises(MiniboxError, match="zstd"):
        layers.claimed_bytes(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100))
    with pytest.raises(MiniboxError, match="truncated or corrupt"):
        layers.claimed_bytes(io.BytesIO(plain[:700]))
    with pytest.raises(MiniboxError, match=r"^the layer is not a tar \(invalid header\)$"):
        layers.claimed_bytes(io.BytesIO(b"junk" * 300))
    # A negative length in the map would lower the claim: refused, here and when unpacking.
    negative = ib.sparse_layer_tar("big", 100, [(0, b"x" * 10)]).replace(b"\n0\n10\n", b"\n0\n-9\n")
    with pytest.raises(MiniboxError, match="negative size or offset in its sparse map"):
        layers.claimed_bytes(io.BytesIO(negative))


@pytest.mark.root
def test_the_write_limit_holds_while_writing(tmp_path):
    # What the headers claim is checked first (imagestore), but the archive is read again to
    # unpack it: the count while writing is what holds if it changed in between.
    layer = ib.layer_tar([("file", "a", "x" * 80), ("file", "b", "y" * 80)])
    limit = imagestore.ImportLimit(100, "image.tar")
    limit.check(layers.claimed_bytes(io.BytesIO(layer)) - 100)  # as if it had claimed less
    with pytest.raises(MiniboxError, match="image.tar: .* over the import limit of 100 B"):
        layers.unpack_layer(io.BytesIO(layer), str(tmp_path), limit=limit)


def test_progress_lines_without_a_terminal():
    out = io.StringIO()
    progress = imagestore.Progress(out)
    progress.start(2, 3, archives.LayerBlob("abc/layer.tar", None, 2_000_000))
    progress.update(2_000_000)
    progress.done(skipped=1)
    assert out.getvalue() == ("layer 2/3 abc/layer.tar: 2.0/2.0 MB done, "
                              "skipped 1 device node(s)/FIFO(s)\n")


def test_the_lowerdir_budget_fits_the_page():
    per_layer = len(images.SHORT_LINKS) + 1 + 2 * imagestore._SHORT_NAME_BYTES + 1
    assert imagestore.max_layers() * per_layer <= imagestore.LOWERDIR_BUDGET < 4096
