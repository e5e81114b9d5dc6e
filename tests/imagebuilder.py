"""Build test images with tarfile, offline: layer tars, `docker save` archives, OCI layouts.

A layer is described as a list of entries, each a tuple:
    ("file", name, text[, mode])   ("dir", name[, mode])   ("symlink", name, target)
    ("hardlink", name, target)     ("chardev", name, major, minor)
Owners default to 0:0; add {"uid": .., "gid": ..} as the last item to change them.
"""
import gzip
import hashlib
import io
import json
import os
import tarfile

BUSYBOX = "/bin/busybox"


def layer_tar(entries):
    """The bytes of an uncompressed layer tar holding `entries` in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            owner = entry[-1] if isinstance(entry[-1], dict) else {}
            if owner:
                entry = entry[:-1]
            kind, name, *rest = entry
            info = tarfile.TarInfo(name)
            info.uid, info.gid = owner.get("uid", 0), owner.get("gid", 0)
            info.mtime = 1700000000
            data = None
            if kind == "file":
                data = rest[0].encode() if isinstance(rest[0], str) else rest[0]
                info.size, info.mode = len(data), rest[1] if len(rest) > 1 else 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, rest[0] if rest else 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, rest[0]
            elif kind == "chardev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, rest[0], rest[1]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def busybox_entries():
    """A runnable base: the host's static busybox, a shell and the tools tests call."""
    with open(BUSYBOX, "rb") as binary:
        busybox = binary.read()
    entries = [("dir", "bin"), ("file", "bin/busybox", busybox, 0o755), ("dir", "etc"),
               ("file", "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")]
    for tool in ("sh", "ls", "cat", "echo", "id", "pwd", "test", "touch", "rm", "mkdir",
                 "stat", "env", "find", "sort"):
        entries.append(("symlink", f"bin/{tool}", "/bin/busybox"))
    return entries


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(layers, run_settings=None):
    """An OCI image config whose rootfs.diff_ids are the digests of the uncompressed `layers`."""
    return json.dumps({"architecture": "amd64", "os": "linux", "config": run_settings or {},
                       "rootfs": {"type": "layers",
                                  "diff_ids": [sha256(layer) for layer in layers]}}).encode()


def write_tar(path, files):
    """A tar file at `path` holding {name: bytes}, in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_dir(path, files):
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "wb") as out:
            out.write(data)


def docker_save(layers, run_settings=None, repo_tags=("test/image:1",), config=None):
    """{name: bytes} of a classic `docker save` archive (v1 ids as layer dirs)."""
    config = config or image_config(layers, run_settings)
    config_name = sha256(config)[7:] + ".json"
    files = {config_name: config}
    layer_names = []
    for number, layer in enumerate(layers):
        name = f"{hashlib.sha256(b'v1' + bytes([number])).hexdigest()}/layer.tar"
        files[name] = layer
        layer_names.append(name)
    files["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": list(repo_tags),
                                          "Layers": layer_names}]).encode()
    return files


def oci_layout(layers, run_settings=None, name="test/oci:2", compress=True):
    """{name: bytes} of an OCI image layout, layers gzip-compressed by default."""
    config = image_config(layers, run_settings)
    blobs = {sha256(config): config}
    descriptors = []
    for layer in layers:
        blob = gzip.compress(layer) if compress else layer
        blobs[sha256(blob)] = blob
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar"
                            + ("+gzip" if compress else ""),
                            "digest": sha256(blob), "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(config), "size": len(config)},
                           "layers": descriptors}).encode()
    blobs[sha256(manifest)] = manifest
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": sha256(manifest), "size": len(manifest),
         "annotations": {"io.containerd.image.name": name,
                         "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
             "index.json": json.dumps(index).encode()}
    files.update({f"blobs/sha256/{digest[7:]}": data for digest, data in blobs.items()})
    return files


def sparse_layer_tar(name, real_size, chunks):
    """A layer tar holding one GNU sparse member (PAX format 1.0, what `tar --sparse
    --format=pax` writes): a file of `real_size` bytes that stores only `chunks`, a list of
    (offset, bytes); the rest is holes. tarfile reads this format but cannot write it, so
    the member is put together here: its data starts with the sparse map, in decimal lines."""
    sparse_map = f"{len(chunks)}\n" + "".join(f"{offset}\n{len(data)}\n"
                                              for offset, data in chunks)
    data = sparse_map.encode().ljust(-(-len(sparse_map) // 512) * 512, b"\0")
    data += b"".join(data for _, data in chunks)
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size, info.mtime = len(data), 1700000000
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": name, "GNU.sparse.realsize": str(real_size)}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _Zeros(io.RawIOBase):
    """`size` zero bytes, then `tail`, made as they are read: never all in memory."""

    def __init__(self, size, tail):
        self.left, self.tail = size, tail

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.left:
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
        else:
            count = min(len(buffer), len(self.tail))
            buffer[:count], self.tail = self.tail[:count], self.tail[count:]
        return count


def zero_filled_layer_gz(name, size, tail=b"end\n"):
    """A gzip-compressed layer tar whose one plain (not sparse) member is `size` zero bytes
    then `tail`: a few hundred KB of archive for hundreds of MB of file."""
    out = io.BytesIO()
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size + len(tail), 1700000000
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        tar.addfile(info, io.BufferedReader(_Zeros(size, tail), 1 << 20))
    return out.getvalue()
