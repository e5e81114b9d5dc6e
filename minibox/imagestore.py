"""Writing the image store: import archives, build busybox, commit, export, remove.

The store's layout and why it looks that way are in images.py. Every change follows one
pattern, so that a failure at any point leaves the store as it was:
1. unpack each new layer into a private scratch dir (tmp/<pid>-<random>/), checking every
   digest on the way (layers.unpack_layer) -- slow, and done without the lock;
2. under the store's flock(2): rename(2) each layer into layers/ (once per diff_id: a layer
   already there is simply not moved), write the config, point the tags at it.
A digest mismatch or a truncated archive fails in step 1, and the scratch dir goes.

Before step 1 writes anything, the layers' tar headers say how much file data they hold
(layers.claimed_bytes): more than the store's free space, or than an import may write
(ImportLimit, `--max-size`), and nothing is written at all. A full disk met anyway (the
inodes ran out, another writer filled it) is one line naming the store, and the scratch
dir goes with it.
"""
import contextlib
import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import struct
import time

from . import shared, state, syscalls
from .cgroups.limits import format_size
from .errors import MiniboxError
from .images import (BUSYBOX, IMAGES, LAYERS, REPOSITORIES, SCRATCH, SHORT_LINKS, STORE,
                     all_image_ids, image_layers, layer_path, load_config, load_repositories, normalize,
                     parse_reference, resolve, stack)

HOST_BUSYBOX = "/bin/busybox"
# Bytes of the overlay mount options the lower layers may take; the rest of the page is for
# upperdir=...,workdir=... (container.py's paths under MINIBOX_ROOT).
LOWERDIR_BUDGET = 3072
_SHORT_NAME_BYTES = 5  # -> 10 hex characters in l/

_ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_DIRECTORIES = {"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
                "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "root": 0o700,
                "etc": 0o755}


# -- storing ---------------------------------------------------------------------------------

def _make_store():
    # 0700: layers keep their setuid-root binaries, which no host user may run from here.
    os.makedirs(STORE, mode=0o700, exist_ok=True)


@contextlib.contextmanager
def _locked():
    """Hold the store's lock: tags, configs and the set of layers change only under it."""
    _make_store()
    with open(os.path.join(STORE, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _scratch():
    """A private directory in the store (same filesystem: layers rename(2) into place).
    What fails to be written in it (ENOSPC, EDQUOT, EIO) is one line naming the store."""
    _make_store()
    os.makedirs(SCRATCH, mode=0o700, exist_ok=True)
    for name in os.listdir(SCRATCH):  # left by an import that was killed
        if not os.path.exists(f"/proc/{name.split('-')[0]}"):
            shutil.rmtree(os.path.join(SCRATCH, name), ignore_errors=True)
    path = os.path.join(SCRATCH, f"{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(path, 0o700)
    try:
        yield path
    except OSError as error:
        raise MiniboxError(f"writing to the image store {STORE}: {error.strerror}") from None
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ImportLimit:
    """The most file data an import may write (holes cost nothing: layers._write_data).
    Checked twice: against what the layers' headers claim, before anything is written, and
    block by block as it is written -- the archive is read twice, and a file that changed
    in between must not get past the first check."""

    def __init__(self, limit, archive):
        self.limit = self.left = limit
        self.archive = archive

    def check(self, claimed):
        if claimed > self.left:
            raise self._over(f"its layers hold {format_size(claimed)} of file data")

    def spend(self, count):
        self.left -= count
        if self.left < 0:
            raise self._over("it writes more file data than its layers claimed")

    def _over(self, what):
        return MiniboxError(f"{self.archive}: {what}, over the import limit of "
                            f"{format_size(self.limit)} (raise it with --max-size)")


def _check_space(blobs, scratch, limit):
    """Refuse, before writing anything, layers whose headers claim more file data than the
    store has free space (statvfs(3): blocks free to unprivileged users) or than `limit`."""
    from . import layers
    claimed = 0
    for blob in blobs:
        try:
            with blob.open() as stream:
                claimed += layers.claimed_bytes(stream)
        except MiniboxError as error:
            raise MiniboxError(f"layer {blob.name}: {error}") from None
    if limit:
        limit.check(claimed)
    disk = os.statvfs(scratch)
    free = disk.f_bavail * disk.f_frsize
    if claimed > free:
        raise MiniboxError(f"the image store {STORE} has {format_size(free)} free, and the "
                           f"layers hold {format_size(claimed)} of file data: nothing stored")


def _unpack_all(blobs, expected_diff_ids, scratch, progress, limit=None):
    """Unpack each layer blob into scratch/<n>/diff, checking the digests as it goes and,
    first, the space it needs. Returns the diff_ids; nothing is in the store yet."""
    from . import layers
    _check_space(blobs, scratch, limit)
    diff_ids = []
    for number, (blob, expected) in enumerate(zip(blobs, expected_diff_ids), 1):
        target = os.path.join(scratch, str(number), "diff")
        os.makedirs(target, mode=0o755)
        progress.start(number, len(blobs), blob)
        try:
            with blob.open() as stream:
                stored, diff_id, skipped = layers.unpack_layer(stream, target, progress.update,
                                                               limit)
        except MiniboxError as error:
            raise MiniboxError(f"layer {blob.name}: {error}") from None
        for what, promised, actual in (("blob", blob.digest, stored),
                                       ("content (diff_id)", expected, diff_id)):
            if promised is not None and promised != actual:
                raise MiniboxError(f"digest mismatch for layer {blob.name}: its {what} "
                                   f"should be {promised}, is {actual}: nothing stored")
        progress.done(skipped)
        diff_ids.append(diff_id)
    return diff_ids


def _install_layer(diff_id, unpacked):
    """Move an unpacked layer (scratch/<n>, holding diff/) into the store, once per diff_id.
    The short link is made first: a crash in between leaves a dangling link, not a layer
    without one."""
    final = os.path.join(LAYERS, diff_id.removeprefix("sha256:"))
    if os.path.isdir(final):
        return
    os.makedirs(SHORT_LINKS, mode=0o700, exist_ok=True)
    os.makedirs(LAYERS, mode=0o700, exist_ok=True)
    while True:
        short = secrets.token_hex(_SHORT_NAME_BYTES)
        try:
            os.symlink(os.path.join("..", "layers", os.path.basename(final), "diff"),
                       os.path.join(SHORT_LINKS, short))
            break
        except FileExistsError:
            continue
    size = sum(os.lstat(os.path.join(top, name)).st_size
               for top, dirs, files in os.walk(os.path.join(unpacked, "diff"))
               for name in dirs + files)
    for name, value in (("link", short), ("size", str(size))):
        with open(os.path.join(unpacked, name), "w") as out:
            out.write(value)
    os.rename(unpacked, final)


def _install_image(config, unpacked, names, data=None):
    """Under the lock: move the layers in, write the config (`data`: its bytes as an archive
    stored them) and point the names at it. `unpacked` maps the new diff_ids to their
    scratch dirs; the others (a commit's base image) must be in the store already."""
    for diff_id in config["rootfs"]["diff_ids"]:
        if diff_id in unpacked:
            _install_layer(diff_id, unpacked[diff_id])
        elif not os.path.isdir(os.path.join(LAYERS, diff_id.removeprefix("sha256:"))):
            raise MiniboxError(f"layer {diff_id} of the base image is gone (removed meanwhile)")
    flattened = _flatten_if_too_deep(config)
    if data is None or flattened is not config:
        data = json.dumps(flattened, separators=(",", ":")).encode()
    image_id = _write_config(data, names)
    if flattened is not config:
        _remove_unused_layers()  # the layers that were merged
    return image_id


def _write_config(data, names):
    image_id = "sha256:" + hashlib.sha256(data).hexdigest()
    os.makedirs(IMAGES, mode=0o700, exist_ok=True)
    path = os.path.join(IMAGES, image_id.removeprefix("sha256:") + ".json")
    shared.replace_file(path, data)
    repositories = load_repositories()
    repositories.update((name, image_id) for name in names)
    _save_repositories(repositories)
    return image_id


def _save_repositories(repositories):
    shared.replace_file(REPOSITORIES, json.dumps(repositories, indent=1, sort_keys=True))


def store_image(config, blobs, names, progress=None, limit=None):
    """Unpack the new layer `blobs`, append their diff_ids to config's, store the image.
    For images made here (busybox, commit, a plain rootfs import): their config is ours."""
    progress = progress or Progress()
    with _scratch() as scratch:
        diff_ids = _unpack_all(blobs, [None] * len(blobs), scratch, progress, limit)
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"] += diff_ids
        unpacked = {d: os.path.join(scratch, str(n)) for n, d in enumerate(diff_ids, 1)}
        with _locked():
            return _install_image(config, unpacked, names)


def _store_imported(image, names, progress, limit):
    """Store an image from an archive, its config verbatim (its digest is the image id)."""
    from . import archives
    config = archives.parse_config(image)
    diff_ids = config["rootfs"]["diff_ids"]
    with _scratch() as scratch:
        _unpack_all(image.layers, diff_ids, scratch, progress, limit)
        unpacked = {d: os.path.join(scratch, str(n)) for n, d in enumerate(diff_ids, 1)}
        with _locked():
            return _install_image(config, unpacked, names, data=image.config)


def import_archive(path, max_size, name=None, progress=None):
    """`minibox image import`: store every image in a docker-save archive or OCI layout
    (file or directory), or a plain rootfs tarball as a one-layer image, writing at most
    `max_size` bytes of file data in all. Returns [(names, image id)]. A digest mismatch,
    a truncated archive or one over the limit stores nothing."""
    from . import archives
    names = [parse_reference(name)] if name else None
    limit = ImportLimit(max_size, path)
    stored = []
    with archives.open_archive(path) as found:
        if names and len(found) != 1:
            raise MiniboxError(f"{path} holds {len(found)} images: --name needs exactly one")
        for image in found:
            image_names = names or [parse_reference(n) for n in image.names]
            if image.config is None:
                image_id = store_image(_new_config({}, "minibox image import"), image.layers,
                                       image_names, progress, limit)
            else:
                image_id = _store_imported(image, image_names, progress or Progress(), limit)
            stored.append((image_names, image_id))
    return stored


def _new_config(run_settings, created_by):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"architecture": "amd64", "os": "linux", "created": now, "config": run_settings,
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created": now, "created_by": created_by}]}


# -- too many layers for one mount -----------------------------------------------------------

def max_layers():
    """How many l/<short> paths fit in LOWERDIR_BUDGET, with their ':' separators."""
    return LOWERDIR_BUDGET // (len(SHORT_LINKS) + 2 + 2 * _SHORT_NAME_BYTES)


def _flatten_if_too_deep(config):
    """Merge the lowest layers until the image's lowerdir fits in one mount(2) page.
    The history no longer lines up with the layers, so it goes; the result is a new image."""
    diff_ids = stack(config["rootfs"]["diff_ids"])[::-1]
    limit = max_layers()
    if len(diff_ids) <= limit:
        return config
    if limit < 2:
        raise MiniboxError(f"MINIBOX_STORE={STORE} is too long a path for overlay mount "
                           f"options to hold even two layers; choose a shorter one")
    while len(diff_ids) > limit:
        diff_ids = [_merge_layers(diff_ids[:limit])] + diff_ids[limit:]
    config = dict(config, rootfs={"type": "layers", "diff_ids": diff_ids})
    config.pop("history", None)
    return config


def _merge_layers(diff_ids):
    """One layer with the content of `diff_ids` (bottom first) as overlayfs shows them."""
    from . import archives
    with _scratch() as scratch:
        packed = os.path.join(scratch, "merged.tar")
        with open(packed, "wb") as out:
            _pack_view([layer_path(d) for d in stack(diff_ids)], out, packed)
        blob = archives.LayerBlob("merged lower layers", lambda: open(packed, "rb"),
                                  os.path.getsize(packed))
        merged, = _unpack_all([blob], [None], scratch, Progress())
        _install_layer(merged, os.path.join(scratch, "1"))
    return merged


def _pack_view(lowers, out, where):
    """Write the read-only view of `lowers` (top first) as one tar to the binary file `out`.
    A failed write (ENOSPC; EPIPE from `export | head`) is one line naming `where`."""
    from . import layers

    def pack_view(root):
        try:
            layers.pack(root, out)
            out.flush()
        except OSError as error:
            raise MiniboxError(f"writing {where}: {error.strerror}") from None
    in_read_only_view(lowers, pack_view)


def in_read_only_view(lowers, action):
    """Call action(root) in a child process where `lowers` (top first) are stacked as one
    read-only overlay at root: an overlay mount with no upperdir is read-only. The mount is
    made in a new mount namespace (unshare(2) CLONE_NEWNS), so the host never sees it and
    it vanishes with the child."""
    _make_store()
    os.makedirs(SCRATCH, mode=0o700, exist_ok=True)
    root = os.path.join(SCRATCH, f"{os.getpid()}-view-{secrets.token_hex(4)}")
    os.mkdir(root, 0o700)
    errors_read, errors_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(errors_read)
        code = 1
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            syscalls.mount("overlay", root, "overlay", syscalls.MS_RDONLY,
                           "lowerdir=" + ":".join(lowers))
            action(root)
            code = 0
        except BaseException as error:  # the child must end here, whatever happened
            os.write(errors_write, str(error).encode()[:4000])
        finally:
            os._exit(code)
    os.close(errors_write)
    with os.fdopen(errors_read, "rb") as errors:
        message = errors.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    os.rmdir(root)
    if status != 0:
        raise MiniboxError(message or "the process that read the layers failed")


# -- containers -> images --------------------------------------------------------------------

def _container(reference):
    """A container's directory and the image it was made from (a name, or --rootfs DIR)."""
    directory = state.find(reference)
    current = directory.load()
    if not current:
        raise MiniboxError(f"container {directory.id[:12]} has no state yet (being created?)")
    return directory, current["image"]


def export_container(reference, output=None):
    """`minibox export`: the container's filesystem as one tar (no whiteouts: it is the
    merged view, the container's upper dir over its image, as the container sees it), to
    the file `output` or to stdout. A failed export leaves no file behind."""
    directory, image = _container(reference)  # first: a wrong name makes no empty file
    lowers = [image] if image.startswith("/") else image_layers(image)
    where = output or "stdout"
    try:
        out = open(output, "wb") if output else os.fdopen(os.dup(1), "wb")
    except OSError as error:
        raise MiniboxError(f"writing {where}: {error.strerror}") from None
    with out:
        try:
            _pack_view([directory.file("upper")] + lowers, out, where)
        except MiniboxError:
            # Half-written: gone. But only a regular file: `-o /dev/full` must not unlink
            # the device node (as root, it would).
            if output and stat.S_ISREG(os.fstat(out.fileno()).st_mode):
                os.unlink(output)
            raise


def commit_container(reference, name, progress=None):
    """`minibox commit`: the container's upper dir becomes a new top layer of its image.
    (Like `docker commit --pause=false`: a running container's files may change meanwhile.)"""
    from . import archives, layers
    name = parse_reference(name)
    directory, image = _container(reference)
    if image.startswith("/"):
        raise MiniboxError(f"container {directory.id[:12]} runs on --rootfs {image}, "
                           "not an image: use `minibox export` instead")
    config = load_config(resolve(image))
    config.setdefault("history", []).append(
        {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "created_by": f"minibox commit {directory.id[:12]}"})
    with _scratch() as scratch:
        packed = os.path.join(scratch, "upper.tar")
        with open(packed, "wb") as out:
            layers.pack(directory.file("upper"), out)
        blob = archives.LayerBlob(f"upper of {directory.id[:12]}", lambda: open(packed, "rb"),
                                  os.path.getsize(packed))
        return store_image(config, [blob], [name], progress)


def remove_image(reference):
    """`minibox rmi`: untag NAME:TAG; when no tag is left (or an id was given), delete the
    image and every layer no other image uses. Refused while a container uses the image."""
    with _locked():
        repositories = load_repositories()
        image_id = resolve(reference, repositories)
        name = normalize(reference)
        if name in repositories and list(repositories.values()).count(image_id) > 1:
            del repositories[name]  # other names keep the image
        else:
            users = [d.id[:12] for d in _containers_using(image_id, repositories)]
            if users:
                raise MiniboxError(f"image {reference} is used by container(s) "
                                   f"{', '.join(users)}: remove them first (minibox rm)")
            repositories = {n: i for n, i in repositories.items() if i != image_id}
            os.unlink(os.path.join(IMAGES, image_id.removeprefix("sha256:") + ".json"))
        _save_repositories(repositories)
        _remove_unused_layers()
    return image_id


def _containers_using(image_id, repositories):
    # A container whose state is corrupt names no image: `rm -f` or `gc` removes it.
    for directory, current in state.readable_containers(skipped=[]):
        image = current.get("image") or "/"
        if not image.startswith("/"):
            try:
                if resolve(image, repositories) == image_id:
                    yield directory
            except MiniboxError:
                pass


def _remove_unused_layers():
    used = {d.removeprefix("sha256:") for image_id in all_image_ids()
            for d in load_config(image_id)["rootfs"]["diff_ids"]}
    for name in os.listdir(LAYERS) if os.path.isdir(LAYERS) else []:
        if name not in used:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layer_path("sha256:" + name))
            shutil.rmtree(os.path.join(LAYERS, name), ignore_errors=True)


# -- progress ---------------------------------------------------------------------------------

class Progress:
    """Progress lines for unpacking layers, on `stream` (None: silent). On a terminal one
    line is rewritten in place; otherwise a line per layer and one every few seconds."""

    def __init__(self, stream=None):
        self.stream = stream
        self.live = stream is not None and stream.isatty()

    def start(self, number, count, blob):
        self.label = f"layer {number}/{count} {blob.name}"
        self.total = blob.size
        self.last = time.monotonic()
        self.done_bytes = 0

    def update(self, bytes_read):
        self.done_bytes = bytes_read
        now = time.monotonic()
        if self.stream and now - self.last >= (0.2 if self.live else 5):
            self.last = now
            self._say(f"{self._amount()}", final=False)

    def done(self, skipped):
        note = f", skipped {skipped} device node(s)/FIFO(s)" if skipped else ""
        if self.stream:
            self._say(f"{self._amount()} done{note}", final=True)

    def _amount(self):
        return f"{self.done_bytes / 1e6:.1f}/{self.total / 1e6:.1f} MB"

    def _say(self, text, final):
        if self.live:
            self.stream.write(f"\r\033[K{self.label}: {text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()


# -- the built-in busybox image ---------------------------------------------------------------

def _is_static_elf(path):
    """True if the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    with open(path, "rb") as elf:
        header = elf.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def build_busybox_image(progress=None):
    """`minibox image build busybox`: one layer made from the host's busybox-static, packed
    as a tar in memory and stored like any imported layer. Returns the image id."""
    from . import archives
    if not os.path.exists(HOST_BUSYBOX):
        raise MiniboxError(f"{HOST_BUSYBOX} not found: install busybox-static "
                           "(sudo apt-get install busybox-static)")
    if not _is_static_elf(HOST_BUSYBOX):
        raise MiniboxError(f"{HOST_BUSYBOX} is dynamically linked and would not run inside "
                           "the image: install busybox-static")
    packed = io.BytesIO()
    _pack_busybox(packed)
    layer = packed.getvalue()
    blob = archives.LayerBlob("busybox (from the host)", lambda: io.BytesIO(layer), len(layer))
    from .spec import DEFAULT_PATH
    config = _new_config({"Cmd": ["sh"], "Env": [f"PATH={DEFAULT_PATH}"]},
                         f"minibox image build busybox ({HOST_BUSYBOX})")
    return store_image(config, [blob], [BUSYBOX], progress)


def _pack_busybox(out):
    import subprocess
    import tarfile
    applets = subprocess.run([HOST_BUSYBOX, "--list-full"], capture_output=True,
                             text=True, check=True).stdout.split()
    # Every entry gets busybox's mtime: the same binary packs to the same layer digest.
    mtime = os.stat(HOST_BUSYBOX).st_mtime

    def entry(name, kind, mode, size=0, target=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, target, mtime
        return info
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, mode in _DIRECTORIES.items():
            tar.addfile(entry(directory, tarfile.DIRTYPE, mode))
        with open(HOST_BUSYBOX, "rb") as binary:
            tar.addfile(entry("bin/busybox", tarfile.REGTYPE, 0o755,
                              os.fstat(binary.fileno()).st_size), binary)
        for applet in sorted(set(applets) - {"bin/busybox"}):
            tar.addfile(entry(applet, tarfile.SYMTYPE, 0o777, target="/bin/busybox"))
        for name, text in _ETC_FILES.items():
            data = text.encode()
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
