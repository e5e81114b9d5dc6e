"""What an image archive holds: `docker save` output, an OCI image layout, or a plain rootfs.

All three are read from a tar file (itself plain or gzip-compressed) or from the directory it
was unpacked into:

- `docker save` (Docker < 25): manifest.json lists, per image, its config file
  `<sha256>.json`, its tags (RepoTags) and its layers `<v1 id>/layer.tar`, bottom first.
  Docker 25+ writes an OCI layout plus the same manifest.json, with blobs/sha256/... paths.
- An OCI image layout (image-spec, image-layout.md): an `oci-layout` marker, `index.json`
  pointing at manifests, and every file as blobs/sha256/<digest of its bytes>. A manifest
  names its config and its layers by digest; an index (multi-platform) names manifests.
- Anything else is taken as a plain root filesystem tarball (`docker import`): one layer,
  no config.

Every digest an archive promises is checked as the bytes are read: the config's file name
(docker save) or descriptor (OCI), each layer blob's descriptor (OCI), and each layer's
uncompressed content against the config's rootfs.diff_ids (both). layers.py does the layer
checks while unpacking; this module only finds things and checks the small JSON files.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import stat
import tarfile

from ..errors import MiniboxError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
# How a compressed archive begins, and tarfile's name for the compression.
_COMPRESSIONS = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


@dataclasses.dataclass
class LayerBlob:
    name: str           # where it is in the archive, for messages
    open: callable      # () -> a binary stream of the blob
    size: int           # bytes as stored, for the progress line
    digest: str = None  # sha256 of the bytes as stored, when the archive promises one


@dataclasses.dataclass
class ArchiveImage:
    config: bytes       # the image config JSON exactly as stored (None: a plain rootfs)
    layers: list        # LayerBlob, bottom layer first
    names: list         # NAME:TAG references the archive gives the image


class _Source:
    """Files of an archive by their path inside it: a tarball's members or a directory's."""

    def __init__(self, path):
        self.path = path
        self.file = None if os.path.isdir(path) else _open_regular_file(path)
        self.tar = self.file and _open_tarball(path, self.file)
        # "./manifest.json" and "manifest.json" are the same file (tar -C DIR -cf X .)
        # Reads every header now, so a truncated archive fails here rather than halfway.
        self.members = {os.path.normpath(member.name): member
                        for member in (_members(path, self.tar) if self.tar else [])}

    def close(self):
        if self.tar is not None:
            self.tar.close()
            self.file.close()

    def reopen(self):
        """The archive file itself once more, with a file offset of its own: opened again
        through /proc/self/fd (proc(5)), so it is the file checked when it was first
        opened even if its path has been given to another file since."""
        return open(f"/proc/self/fd/{self.file.fileno()}", "rb")

    def has(self, name):
        if self.tar is None:
            return os.path.isfile(self._on_disk(name))
        member = self.members.get(name)
        return member is not None and (member.isfile() or member.issym() or member.islnk())

    def size(self, name):
        if self.tar is None:
            return os.path.getsize(self._on_disk(name))
        return self.members[name].size

    def open(self, name):
        """A binary stream of the file `name` (a tarball member's links are followed)."""
        if not self.has(name):
            raise MiniboxError(f"{self.path}: the archive has no {name}")
        if self.tar is None:
            return open(self._on_disk(name), "rb")
        return self.tar.extractfile(self.members[name])

    def read(self, name):
        with self.open(name) as stream:
            try:
                return stream.read()
            except tarfile.TarError as error:
                raise MiniboxError(f"{self.path}: truncated or corrupt archive "
                                   f"({name}: {error})") from None

    def _on_disk(self, name):
        return os.path.join(self.path, name)


def _open_regular_file(path):
    """Open the archive file, refusing anything but a regular file: /dev/zero would be read
    forever, a FIFO or a terminal block. O_NONBLOCK makes open(2) of a FIFO return at once
    (fifo(7)), so fstat(2) can check the file that was opened, not one that was at `path`
    a moment before; it changes nothing for a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise MiniboxError(f"{path}: {error.strerror.lower()}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MiniboxError(f"{path}: not a regular file (an archive is a file or a directory)")
    return os.fdopen(fd, "rb")


def _open_tarball(path, file):
    """The archive as a TarFile, its compression told by its first bytes. tarfile reads
    the first 512-byte header and checks its checksum, so a file that is no tar (once
    decompressed) is refused after one block."""
    magic = file.read(6)
    file.seek(0)
    compression = next((name for prefix, name in _COMPRESSIONS if magic.startswith(prefix)), "")
    try:
        return tarfile.open(fileobj=file, mode=f"r:{compression}")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise MiniboxError(f"{path}: not a tar archive ({error})") from None


def _members(path, tar):
    try:
        return tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise MiniboxError(f"{path}: truncated or corrupt archive ({error})") from None


def _checked_name(path, name):
    """A path the archive's own JSON names: it must stay inside the archive."""
    if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
        raise MiniboxError(f"{path}: refusing the archive: it names the file {name!r}")
    return name


def _checked_digest(path, digest):
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise MiniboxError(f"{path}: unsupported or malformed digest {digest!r} "
                           "(only sha256 is supported)")
    return digest


def _verified(path, name, data, digest):
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise MiniboxError(f"{path}: digest mismatch for {name}: expected {digest}, "
                           f"got {actual}")
    return data


def _load_json(path, name, data):
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MiniboxError(f"{path}: {name} is not valid JSON") from None


@contextlib.contextmanager
def open_archive(path):
    """Yield the images in the archive at `path` (a file or a directory), as ArchiveImage."""
    source = _Source(path)
    try:
        if source.has("oci-layout"):
            yield _oci_images(source)
        elif source.has("manifest.json"):
            yield _docker_save_images(source)
        elif source.tar is not None:
            yield [ArchiveImage(None, [LayerBlob(os.path.basename(path), source.reopen,
                                                 os.fstat(source.file.fileno()).st_size)], [])]
        else:
            raise MiniboxError(f"{path}: neither a docker save archive (manifest.json) nor "
                               "an OCI image layout (oci-layout)")
    finally:
        source.close()


def parse_config(image):
    """The image config as a dict, after checking it lists one diff_id per layer."""
    config = _load_json("the archive", "the image config", image.config)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if (not isinstance(diff_ids, list) or len(diff_ids) != len(image.layers)
            or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids)):
        raise MiniboxError(f"the image config's rootfs.diff_ids do not list one sha256 digest "
                           f"for each of its {len(image.layers)} layers")
    return config


def _docker_save_images(source):
    manifest = _load_json(source.path, "manifest.json", source.read("manifest.json"))
    if not isinstance(manifest, list):
        raise MiniboxError(f"{source.path}: manifest.json is not a list of images")
    images = []
    for entry in manifest:
        config_name = _checked_name(source.path, entry.get("Config"))
        config = source.read(config_name)
        # The config's file name is its digest: "<hex>.json" or "blobs/sha256/<hex>".
        hex_name = os.path.basename(config_name).removesuffix(".json")
        if re.fullmatch(r"[0-9a-f]{64}", hex_name):
            _verified(source.path, config_name, config, "sha256:" + hex_name)
        layers = []
        for name in entry.get("Layers") or []:
            name = _checked_name(source.path, name)
            # Only blobs/sha256/<hex> names are content digests; "<id>/layer.tar" is a v1 id.
            digest = ("sha256:" + os.path.basename(name)
                      if name.startswith("blobs/sha256/") else None)
            layers.append(_layer_blob(source, name, digest))
        images.append(ArchiveImage(config, layers, list(entry.get("RepoTags") or [])))
    return images


def _oci_images(source):
    index = _load_json(source.path, "index.json", source.read("index.json"))
    images = []
    for descriptor in index.get("manifests", []):
        annotations = descriptor.get("annotations") or {}
        name = (annotations.get("io.containerd.image.name")
                or annotations.get("org.opencontainers.image.ref.name", ""))
        manifest = _oci_manifest(source, descriptor)
        config_descriptor = manifest.get("config") or {}
        config = _oci_blob(source, config_descriptor.get("digest"))
        layers = [_layer_blob(source, _blob_name(source, layer.get("digest")), layer["digest"])
                  for layer in manifest.get("layers", [])]
        # A bare ref.name is just a tag ("latest"): without a repository it names nothing.
        images.append(ArchiveImage(config, layers, [name] if ":" in name else []))
    if not images:
        raise MiniboxError(f"{source.path}: index.json lists no image")
    return images


def _oci_manifest(source, descriptor):
    """The image manifest a descriptor leads to, through an index for this machine's
    platform if it names one (a multi-platform image)."""
    manifest = _load_json(source.path, descriptor.get("digest"),
                          _oci_blob(source, descriptor.get("digest")))
    if manifest.get("mediaType", descriptor.get("mediaType")) not in _INDEX_TYPES:
        return manifest
    wanted = _ARCHITECTURES.get(platform.machine(), platform.machine())
    for candidate in manifest.get("manifests", []):
        if (candidate.get("platform") or {}).get("architecture", wanted) == wanted:
            return _oci_manifest(source, candidate)
    raise MiniboxError(f"{source.path}: the image has no manifest for linux/{wanted}")


def _blob_name(source, digest):
    return "blobs/sha256/" + _checked_digest(source.path, digest).removeprefix("sha256:")


def _oci_blob(source, digest):
    name = _blob_name(source, digest)
    return _verified(source.path, name, source.read(name), digest)


def _layer_blob(source, name, digest):
    if not source.has(name):
        raise MiniboxError(f"{source.path}: the archive has no {name}")
    short_name = re.sub(r"[0-9a-f]{64}", lambda digest: digest.group()[:12], name)
    return LayerBlob(short_name, lambda: source.open(name), source.size(name), digest)
