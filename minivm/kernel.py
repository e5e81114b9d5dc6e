"""Find a guest kernel and turn it into something QEMU boots fast: an uncompressed vmlinux.

Where the kernel comes from, first match wins:
1. `--kernel PATH` (a bzImage like /boot/vmlinuz-*, or an ELF vmlinux);
2. the tiny kernel, once `minivm kernel build` made it (tinykernel.py): every driver a
   guest needs built in, boots ~3x faster than Debian's;
3. the cache: kernels minivm fetched itself, under <cache>/kernels/<release>/;
4. the host's /boot/vmlinuz-*, when readable (Ubuntu makes them root-only);
5. Debian's kernel package, fetched into the cache (debian.py): the kernel and its modules
   (virtio, 9p... for guests that need them).

QEMU boots the *uncompressed* kernel, which bzimage.py takes out of the bzImage once and the
cache keeps: an ELF vmlinux with a PVH note (the XEN_ELFNOTE_PHYS32_ENTRY entry point,
CONFIG_PVH=y) boots straight into 32-bit mode, no bootloader, no decompressor
(QEMU's docs/system/i386/microvm.rst).

The cache is /var/cache/minivm for root, ~/.cache/minivm otherwise; MINIVM_CACHE overrides.
Paths are strings, joined with os.path: pathlib, with the re, enum, fnmatch and urllib.parse
it imports, were a noticeable share of minivm's own cost at each boot (bench/README.md,
issue 19).
"""
import os
import zlib
from collections import namedtuple

from minibox import cjson  # the json package compiles regexes on import: at each boot
from minibox.shared import replace_file
from minivm import MinivmError, bzimage

BOOT_DIR = "/boot"

# vmlinux: the ELF QEMU boots; release: `uname -r` in the guest, e.g. 6.1.0-56-amd64;
# origin: where it came from, for --explain and `kernel list`; modules: lib/modules/<release>
# when minivm has them (virtio, 9p... for guests that need them), else None.
Kernel = namedtuple("Kernel", "vmlinux release origin modules")
# Debian's bzImage is 8 MB and its vmlinux 63 MB; one with every debug symbol ~1 GB.
MAX_BZIMAGE_BYTES = 128 << 20
MAX_VMLINUX_FILE_BYTES = 2 << 30


def cache_dir() -> str:
    if "MINIVM_CACHE" in os.environ:
        return os.environ["MINIVM_CACHE"]
    if os.geteuid() == 0:
        return "/var/cache/minivm"
    return os.path.expanduser("~/.cache/minivm")


def vmlinux_release(vmlinux: str) -> str:
    """The release from an ELF vmlinux: the banner `Linux version <release> (...)`.

    Searched through mmap(2): the kernel pages the file in as the search goes and may drop
    the pages again, so a 60 MB vmlinux never becomes 60 MB of minivm's own memory."""
    import mmap
    import re  # only when a kernel is first seen: re and enum are not free
    with open(vmlinux, "rb") as image, mmap.mmap(image.fileno(), 0, access=mmap.ACCESS_READ) \
            as mapped:
        found = re.search(rb"Linux version (\S+) \(", mapped)
        if not found:
            raise MinivmError(f"{vmlinux}: no 'Linux version' banner found: is it a Linux "
                              "kernel?")
        return found.group(1).decode()  # while the mapping is there: the match points into it


def config_text(kernel: Kernel, boot_dir: str = BOOT_DIR) -> str | None:
    """The .config the kernel was built from, when it came with one: <dir>/config for the
    tiny kernel, boot/config-<release> in a Debian package, /boot/config-<release>."""
    directory = os.path.dirname(kernel.vmlinux)
    for path in (os.path.join(directory, "config"),
                 os.path.join(directory, "boot", f"config-{kernel.release}"),
                 os.path.join(boot_dir, f"config-{kernel.release}")):
        try:
            with open(path) as config:
                return config.read()
        except OSError:
            continue
    return None


def takes_mmio_devices_from_command_line(kernel: Kernel) -> bool:
    """Does the kernel read `virtio_mmio.device=` (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)?
    Debian's does not: it finds microvm's devices through ACPI. A kernel that came without
    its config is taken to (a vmlinux built for microvm)."""
    config = config_text(kernel)
    return config is None or "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y" in config.splitlines()


# --- the cache ---

def entry(directory: str) -> Kernel | None:
    """A cache entry: <dir>/kernel.json records what <dir>/vmlinux is."""
    try:
        with open(os.path.join(directory, "kernel.json")) as record_file:
            record = cjson.loads(record_file.read())
    except (OSError, ValueError):
        return None
    modules = os.path.join(directory, "lib", "modules", record["release"])
    return Kernel(record["vmlinux"], record["release"], record["origin"],
                  modules if os.path.isdir(modules) else None)


def release_key(release: str) -> list:
    """Sort 6.1.0-56-amd64 after 6.1.0-9-amd64: compare numbers as numbers."""
    import re  # only where releases are sorted, not on a boot of the tiny kernel
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", release)]


def tiny_dir(cache: str) -> str:
    return os.path.join(cache, "tiny")


def tiny_kernel(cache: str) -> Kernel | None:
    """The kernel `minivm kernel build` made (tinykernel.py), if it did."""
    found = entry(tiny_dir(cache))
    return found if found and os.path.isfile(found.vmlinux) else None


def cached_kernels(cache: str) -> list[Kernel]:
    """Kernels minivm fetched into the cache, newest release first."""
    entries = [entry(path) for path in _subdirectories(os.path.join(cache, "kernels"))]
    found = [entry for entry in entries if entry and os.path.isfile(entry.vmlinux)]
    return sorted(found, key=lambda kernel: release_key(kernel.release), reverse=True)


def _subdirectories(directory: str) -> list[str]:
    try:
        return [item.path for item in os.scandir(directory) if item.is_dir()]
    except FileNotFoundError:
        return []


def from_file(path: str, cache: str, progress) -> Kernel:
    """A kernel the user or /boot names. A bzImage is decompressed once into the cache.

    The file is judged by stat(2) and its first bytes before anything else reads it:
    `--kernel /dev/zero` was once read whole into memory, 22 GB in 73 s.

    The extracted vmlinux is keyed by the file's path, size and modification time rather
    than a hash of its 8 MB, so finding it again costs one stat(2) per boot. (zlib.crc32, not
hashlib: a cache key needs no cryptography, and OpenSSL's import costs milliseconds.)
    """
    path = os.fspath(path)
    info, header = _kernel_header(path)
    if header.startswith(bzimage.ELF_MAGIC):
        known = entry(os.path.dirname(path))  # one of the cache's own: keep its modules
        if known and known.vmlinux == path:
            return known
        return Kernel(path, vmlinux_release(path), f"{path} (an ELF vmlinux)", None)
    key = zlib.crc32(f"{os.path.realpath(path)}:{info.st_size}:{info.st_mtime_ns}".encode())
    directory = os.path.join(cache, "extracted", f"{key:08x}")
    vmlinux_path = os.path.join(directory, "vmlinux")
    known = entry(directory)
    if known and os.path.isfile(known.vmlinux):
        return known
    with open(path, "rb") as image_file:
        image = image_file.read()
    release = bzimage.release(image)
    progress(f"extracting the uncompressed kernel from {path} (once; cached)")
    vmlinux, compression = bzimage.vmlinux(image)
    os.makedirs(directory, exist_ok=True)
    replace_file(vmlinux_path, vmlinux)  # atomic: a concurrent minivm sees all or nothing
    origin = f"{path} ({compression}-compressed bzImage, extracted to {vmlinux_path})"
    record = {"release": release, "origin": origin, "vmlinux": vmlinux_path}
    replace_file(os.path.join(directory, "kernel.json"), cjson.dumps(record, indent=1))
    return Kernel(vmlinux_path, release, origin, None)


def _kernel_header(path: str):
    """(stat, first bytes) of a file that may be a kernel: a regular file (not a device or a
    FIFO, which never end), an ELF or a bzImage by its magic, and no larger than one can be."""
    import stat
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise MinivmError(f"--kernel {path}: not a regular file")
        with open(path, "rb") as kernel_file:
            header = kernel_file.read(len(bzimage.BZIMAGE_MAGIC) + bzimage.BZIMAGE_MAGIC_OFFSET)
    except OSError as error:
        raise MinivmError(f"cannot read kernel {path}: {error.strerror}") from None
    if header.startswith(bzimage.ELF_MAGIC):
        kind, limit = "an ELF vmlinux", MAX_VMLINUX_FILE_BYTES
    elif header[bzimage.BZIMAGE_MAGIC_OFFSET:] == bzimage.BZIMAGE_MAGIC:
        kind, limit = "a bzImage", MAX_BZIMAGE_BYTES
    else:
        raise MinivmError(f"--kernel {path}: neither an ELF vmlinux nor a bzImage (no ELF "
                          "magic, no 'HdrS' boot header at 0x202)")
    if info.st_size > limit:
        raise MinivmError(f"--kernel {path}: {info.st_size >> 20} MiB: more than {kind} can "
                          f"be ({limit >> 20} MiB at most)")
    return info, header


def boot_kernels(boot_dir: str = BOOT_DIR) -> list[str]:
    """Readable /boot/vmlinuz-* files, newest release first."""
    try:
        names = [name for name in os.listdir(boot_dir) if name.startswith("vmlinuz-")]
    except FileNotFoundError:
        return []
    found = [os.path.join(boot_dir, name) for name in sorted(names, key=release_key, reverse=True)]
    return [path for path in found if os.access(path, os.R_OK)]


def find(explicit: str | None, cache: str, progress, boot_dir: str = BOOT_DIR,
         tiny: bool = True) -> Kernel:
    """The kernel to boot, following the order in this module's docstring (tiny=False skips
    the tiny kernel: a guest that wants Debian's, with its modules)."""
    if explicit is not None:
        return from_file(explicit, cache, progress)
    built = tiny_kernel(cache) if tiny else None
    if built:
        return built
    cached = cached_kernels(cache)
    if cached:
        return cached[0]
    on_host = boot_kernels(boot_dir)
    if on_host:
        return from_file(on_host[0], cache, progress)
    from minivm import debian  # apt-get & co.: only when no kernel is at hand
    if not debian.apt_available():
        raise MinivmError(f"no guest kernel: none in {cache}, no readable {boot_dir}/vmlinuz-*, "
                          "and no apt-get to download one; pass --kernel PATH")
    progress(f"no guest kernel yet: fetching Debian's into {cache} (once)")
    return fetch(cache, progress)


def fetch(cache: str, progress, package: str | None = None) -> Kernel:
    """Debian's kernel package (debian.py downloads and unpacks it) into
    <cache>/kernels/<release>/, its vmlinux taken out of the bzImage once.

    Holds a lock on <cache>/fetch.lock (flock(2)) so two minivm runs don't download at once.
    """
    import fcntl
    import shutil
    import tempfile
    from pathlib import Path  # debian.py's currency

    from minivm import debian
    package = package or debian.debian_package()
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "fetch.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cached in cached_kernels(cache):
            if package.endswith(cached.release):
                return cached  # fetched by another run while we waited for the lock
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as scratch:
            deb, tree, bzimage_path = debian.download(package, Path(scratch), progress)
            image = bzimage_path.read_bytes()
            release = bzimage.release(image)
            progress(f"extracting the uncompressed kernel {release} from the bzImage")
            vmlinux, compression = bzimage.vmlinux(image)
            replace_file(tree / "vmlinux", vmlinux)
            directory = os.path.join(cache, "kernels", release)
            origin = f"Debian package {deb} ({compression} bzImage), cached in {directory}"
            record = {"release": release, "origin": origin,
                      "vmlinux": os.path.join(directory, "vmlinux"), "package": package}
            replace_file(tree / "kernel.json", cjson.dumps(record, indent=1))
            if os.path.exists(directory):
                shutil.rmtree(directory)
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            os.rename(tree, directory)
    progress(f"kernel {release} ready: {os.path.join(directory, 'vmlinux')}")
    return entry(directory)
