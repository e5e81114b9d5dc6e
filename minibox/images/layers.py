"""Image layers on disk: unpack a layer tarball safely, and pack a directory back into one.

A layer is a tar of what one build step added, changed or deleted (OCI image-spec, layer.md).
Deletions travel as *whiteouts*: an empty file `.wh.NAME` says "NAME from the layers below is
gone", and `DIR/.wh..wh..opq` says "DIR hides everything the layers below have in it"
(opaque). overlayfs records the same facts its own way (kernel docs, filesystems/overlayfs):
a whiteout is a character device 0:0 named NAME, and an opaque directory carries the xattr
`trusted.overlay.opaque=y`. unpack() turns the tar form into the overlay form; pack() turns a
container's overlay upper dir back into the tar form (that is what `minibox commit` stores).

Why not tarfile.extractall()? A layer comes from anyone, and tar was made to restore backups,
not to contain hostile input:
- Names like `../../etc/cron.d/x` or `/etc/passwd`, a symlink `lib -> /etc` followed by an
  entry `lib/passwd` (a write *through* a previously extracted link), or a hardlink to
  `/etc/shadow` all write outside the target directory (CVE-2007-4559, and Docker's own
  CVE-2014-6407 / CVE-2018-15664 in docker cp).
- filter="data" (3.11.4+) refuses those, but checks with os.path.realpath() before it writes:
  a check-then-use race, and a check that was bypassed by links whose expansion overflows
  PATH_MAX (CVE-2025-4517, fixed only in 3.11.13). It also strips
  setuid bits and group/other write bits (an image's /tmp would lose mode 1777) and refuses
  every device node, including the 0:0 ones that overlay uses as whiteouts.
- tarfile.chown() looks owner *names* up in the host's /etc/passwd: an image's "www-data"
  would get whatever uid the host gives that name. Images carry numeric ids; we keep those.
So tarfile only parses here. Every entry is made relative to a file descriptor of its parent
directory, reached one component at a time with O_NOFOLLOW (openat(2)), so no path component
is ever a symlink: nothing can lead outside the layer, however the archive is crafted.
Device nodes and FIFOs in an archive are skipped and counted (an image has no business
shipping /dev/sda).

A layer also comes with a size it may lie about. A 10 KB archive can hold a 10 GB file: a GNU
sparse member (tar --sparse) stores only its data and a map of where it goes, and a plain
member of zeros compresses to almost nothing. Files are written with their holes left as
holes (see _write_data), so such a file costs what it stores, and claimed_bytes() reads what
a layer will write from its headers alone, so the store can refuse it before writing.

Without root (rootless.py) a user can only own files as itself: every file of a layer stays
the caller's, which is root in its containers (podman's `ignore_chown_errors` does the same).
"""
import io
import gzip
import hashlib
import os
import stat
import tarfile
import zlib

from .. import rootless
from ..errors import MiniboxError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# xattrs an archive may carry into a layer (PAX headers `SCHILY.xattr.NAME`): file
# capabilities (ping's cap_net_raw) and user.*. Never trusted.*: trusted.overlay.redirect or
# .metacopy in a lower layer would change what overlayfs looks up.
KEPT_XATTRS = ("security.capability", "user.")
_XATTR_HEADER = "SCHILY.xattr."
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# A block of this many zero bytes is skipped, not written: a hole. 64 KiB is a whole number
# of pages and filesystem blocks, and big enough that the comparison costs little.
_HOLE_BLOCK = 1 << 16
_ZEROS = bytes(_HOLE_BLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _HashingReader(io.RawIOBase):
    """A read-only stream that computes the sha256 of everything read through it."""

    def __init__(self, source, on_read=None):
        self.source = source
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.on_read = on_read

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.source.read(len(buffer))
        buffer[:len(data)] = data
        self.sha256.update(data)
        self.bytes_read += len(data)
        if self.on_read:
            self.on_read(self.bytes_read)
        return len(data)

    def digest(self):
        return "sha256:" + self.sha256.hexdigest()


def _drain(stream):
    while stream.read(_CHUNK):
        pass


def _refuse_zstd(magic):
    if magic.startswith(_ZSTD_MAGIC):
        raise MiniboxError("zstd-compressed layers are not supported (only plain tar and gzip)")


def claimed_bytes(blob):
    """How many bytes of file data the layer tarball (plain or gzip) in the seekable binary
    stream `blob` says it holds, from its headers alone: each regular file's size, and for a
    sparse member only what it stores (its holes cost nothing, see _write_data). tarfile
    seeks over the data of a plain tar; a gzip one has to be decompressed to find them."""
    magic = blob.read(4)
    blob.seek(0)
    _refuse_zstd(magic)
    failures = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
    try:
        tar = tarfile.open(fileobj=blob, mode="r:gz" if magic.startswith(_GZIP_MAGIC) else "r:")
    except failures as error:  # its first block is no tar header
        raise MiniboxError(f"the layer is not a tar ({error})") from None
    try:
        with tar:
            return sum(length for member in tar if member.isreg()
                       for _, length in _data_regions(member))
    except failures as error:
        raise MiniboxError(f"the layer is truncated or corrupt ({error})") from None


def _data_regions(member):
    """[(offset, length)] of a regular member's file that its archive stores: the sparse
    map, or the whole file. A negative number there would move the file offset backwards
    (lseek(2): EINVAL) or lower what the layer claims, so it refuses the layer."""
    regions = member.sparse or [(0, member.size)]
    if member.size < 0 or any(offset < 0 or length < 0 for offset, length in regions):
        raise MiniboxError(f"refusing the layer: {member.name!r} has a negative size or "
                           "offset in its sparse map")
    return regions


def unpack_layer(blob, dest, on_read=None, limit=None):
    """Unpack a layer tarball (plain or gzip) from the binary stream `blob` into the empty
    directory `dest`. Returns (blob digest, diff_id, skipped): the sha256 of the bytes as
    stored and of the uncompressed tar (what an image config's rootfs.diff_ids lists), and
    how many device nodes and FIFOs were left out. `limit.spend(count)` is told of every
    block of file data before it is written, and may refuse it by raising MiniboxError.

    Both digests cover every byte to the end of the stream, not only up to tar's end marker,
    so they can be compared with what a manifest promises."""
    stored = _HashingReader(blob, on_read)
    buffered = io.BufferedReader(stored, _CHUNK)
    magic = buffered.peek(4)[:4]
    _refuse_zstd(magic)
    if magic.startswith(_GZIP_MAGIC):
        content = _HashingReader(gzip.GzipFile(fileobj=buffered, mode="rb"))
        tar_stream = io.BufferedReader(content, _CHUNK)
    else:
        content, tar_stream = stored, buffered
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|") as tar:
            skipped = unpack(tar, dest, limit)
        _drain(tar_stream)
        _drain(buffered)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise MiniboxError(f"the layer is truncated or corrupt ({error})") from None
    return stored.digest(), content.digest(), skipped


def unpack(tar, dest, limit=None):
    """Make each member of the tarfile `tar` (read in order) beneath the directory `dest`,
    converting whiteouts to overlay's form. Returns how many special files were skipped."""
    root = os.open(dest, _DIR_FLAGS)
    skipped = 0
    directory_times = []
    try:
        for member in tar:
            parts = _parts(member.name)
            if not parts:
                continue  # "./", the layer's own root
            parent = _open_directory(root, parts[:-1], create=True)
            try:
                name = parts[-1]
                if name == OPAQUE_MARKER:
                    os.setxattr(parent, OPAQUE_XATTR, b"y")
                elif name.startswith(WHITEOUT_PREFIX):
                    _make_whiteout(parent, name[len(WHITEOUT_PREFIX):])
                elif member.isdir():
                    _make_directory(parent, name, member)
                    directory_times.append((parts, member.mtime))
                elif member.isreg():
                    _remove_existing(parent, name)
                    _make_file(parent, name, member, tar.extractfile(member), limit)
                elif member.issym():
                    _remove_existing(parent, name)
                    os.symlink(member.linkname, name, dir_fd=parent)
                    _set_owner_and_times(parent, name, member)
                elif member.islnk():
                    _remove_existing(parent, name)
                    _make_hardlink(root, parent, name, member)
                else:
                    skipped += 1  # character/block devices and FIFOs
            finally:
                os.close(parent)
        # Last, and deepest first: making entries inside a directory changes its mtime.
        for parts, mtime in reversed(directory_times):
            try:
                fd = _open_directory(root, parts, create=False)
            except MiniboxError:
                continue  # a later entry replaced the directory
            os.utime(fd, (mtime, mtime))
            os.close(fd)
    finally:
        os.close(root)
    return skipped


def _parts(name):
    """The path components of an entry's name. A leading "/" is dropped (as GNU tar does:
    the name becomes relative to the layer); ".." is refused outright, since no well-formed
    layer needs it and it is the classic way out of the target directory."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise MiniboxError(f"refusing the layer: entry {name!r} contains '..'")
    return parts


def _open_directory(root, parts, create):
    """Open root/parts... one component at a time, never following a symlink (O_NOFOLLOW
    fails with ELOOP on one), making missing directories if `create`."""
    fd = os.dup(root)
    for index, part in enumerate(parts):
        try:
            if create and not _exists(fd, part):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as error:
            os.close(fd)
            where = "/".join(parts[:index + 1])
            if isinstance(error, FileNotFoundError):
                raise MiniboxError(f"refusing the layer: {where} does not exist") from None
            raise MiniboxError(f"refusing the layer: an entry is written through {where}, "
                               "which is not a directory (through a symlink, it could land "
                               "outside the layer)") from None
        os.close(fd)
        fd = child
    return fd


def _exists(parent, name):
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _remove_existing(parent, name):
    """A later entry for the same name replaces the earlier one, as tar itself does."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        _remove_tree_at(parent, name)
    else:
        os.unlink(name, dir_fd=parent)


def _remove_tree_at(parent, name):
    """rm -rf of `name` in the directory `parent`, every step relative to a directory fd:
    a symbolic link in the tree is removed, never followed (O_NOFOLLOW, unlinkat(2))."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _make_whiteout(parent, name):
    if name.startswith(WHITEOUT_PREFIX) or not name:
        return  # AUFS bookkeeping such as .wh..wh.plnk: meaningless to overlayfs
    _remove_existing(parent, name)
    os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)


def _make_directory(parent, name, member):
    try:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            _remove_existing(parent, name)
            os.mkdir(name, 0o700, dir_fd=parent)
    except FileNotFoundError:
        os.mkdir(name, 0o700, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        _set_metadata(fd, member)
    finally:
        os.close(fd)


def _make_file(parent, name, member, content, limit):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=parent)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            _write_data(member, content, out, limit)
        _set_metadata(fd, member)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


def _write_data(member, content, out, limit):
    """Write a regular member's data to `out` and leave holes where it has none: the ranges
    a sparse member's map leaves out, and every all-zero block of what it stores. Moving the
    file offset past them (lseek(2)) and setting the size at the end (ftruncate(2)) makes a
    hole, which takes no disk block (lseek(2): "If data is later written at this point,
    subsequent reads of the data in the gap (a "hole") return null bytes"). `cp --sparse`
    and GNU tar do the same."""
    # The raw reader, not tarfile's buffered one: that one refuses to seek in a tar read as
    # a stream (r|), while the raw one seeks past a hole by moving its position, reading
    # nothing. Its reads then go forward only, as a stream must.
    raw = content.raw
    for offset, length in _data_regions(member):
        raw.seek(offset)
        out.seek(offset)
        while length > 0:
            block = raw.read(min(length, _HOLE_BLOCK))
            if not block:
                break  # a sparse map that points past the file's end
            if block == _ZEROS[:len(block)]:
                out.seek(len(block), os.SEEK_CUR)
            else:
                if limit:
                    limit.spend(len(block))
                out.write(block)
            length -= len(block)
    out.truncate(member.size)


def _set_metadata(fd, member):
    # chown first: chown(2) clears the setuid/setgid bits that chmod then sets.
    if not rootless.ENABLED:
        os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR_HEADER):
            xattr = key[len(_XATTR_HEADER):]
            if xattr.startswith(KEPT_XATTRS):
                os.setxattr(fd, xattr, value.encode("utf-8", "surrogateescape"))


def _set_owner_and_times(parent, name, member):
    if not rootless.ENABLED:
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def _make_hardlink(root, parent, name, member):
    """A hardlink's target is another entry of the same layer, resolved beneath the layer
    like any entry; linkat(2) without AT_SYMLINK_FOLLOW links a symlink itself, not what
    it points to."""
    target = _parts(member.linkname)
    missing = MiniboxError(f"refusing the layer: hardlink {member.name!r} points to "
                           f"{member.linkname!r}, which is not in the layer")
    if not target:
        raise missing
    try:
        target_parent = _open_directory(root, target[:-1], create=False)
    except MiniboxError:
        raise missing from None
    try:
        os.link(target[-1], name, src_dir_fd=target_parent, dst_dir_fd=parent,
                follow_symlinks=False)
    except FileNotFoundError:
        raise missing from None
    except PermissionError:  # linkat(2) gives EPERM for directories
        raise MiniboxError(f"refusing the layer: hardlink {member.name!r} points to "
                           f"a directory") from None
    finally:
        os.close(target_parent)


def pack(directory, out):
    """Write the tree at `directory` to the binary stream `out` as a layer tar (PAX).

    Overlay whiteouts (0:0 character devices) become `.wh.NAME` files and opaque directories
    get a `.wh..wh..opq` entry, so a container's upper dir packs into a proper OCI layer.
    Owners stay numeric; hardlinks stay hardlinks; other special files are left out."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for top, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            relative = os.path.relpath(top, directory)
            for name in dirnames + sorted(filenames):
                path = os.path.join(top, name)
                arcname = os.path.normpath(os.path.join(relative, name))
                _add(tar, path, arcname)


def _add(tar, path, arcname):
    status = os.lstat(path)
    if stat.S_ISCHR(status.st_mode) and status.st_rdev == 0:
        whiteout = tarfile.TarInfo(os.path.join(os.path.dirname(arcname),
                                                WHITEOUT_PREFIX + os.path.basename(arcname)))
        whiteout.mtime = status.st_mtime
        tar.addfile(whiteout)
        return
    info = tar.gettarinfo(path, arcname)
    if info is None or not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return  # sockets, devices, FIFOs
    info.uname = info.gname = ""
    for xattr in os.listxattr(path, follow_symlinks=False):
        if xattr.startswith(KEPT_XATTRS):
            value = os.getxattr(path, xattr, follow_symlinks=False)
            info.pax_headers[_XATTR_HEADER + xattr] = value.decode("utf-8", "surrogateescape")
    if info.isreg():
        with open(path, "rb") as content:
            tar.addfile(info, content)
    else:
        tar.addfile(info)
    if info.isdir() and _is_opaque(path):
        marker = tarfile.TarInfo(os.path.join(arcname, OPAQUE_MARKER))
        marker.mtime = status.st_mtime
        tar.addfile(marker)


def _is_opaque(path):
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
