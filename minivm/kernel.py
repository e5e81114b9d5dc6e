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
"""
import os
import re
import zlib
from collections import namedtuple
from pathlib import Path

from minibox import cjson  # the json package compiles regexes on import: at each boot
from minibox.shared import replace_file
from minivm import MinivmError, bzimage

BOOT_DIR = Path("/boot")

# vmlinux: the ELF QEMU boots; release: `uname -r` in the guest, e.g. 6.1.0-56-amd64;
# origin: where it came from, for --explain and `kernel list`; modules: lib/modules/<release>
# when minivm has them (virtio, 9p... for guests that need them), else None.
Kernel = namedtuple("Kernel", "vmlinux release origin modules")
# Debian's bzImage is 8 MB and its vmlinux 63 MB; one with every debug symbol ~1 GB.
MAX_BZIMAGE_BYTES = 128 << 20
MAX_VMLINUX_FILE_BYTES = 2 << 30


def cache_dir() -> Path:
    if "MINIVM_CACHE" in os.environ:
        return Path(os.environ["MINIVM_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/minivm")
    return Path.home() / ".cache" / "minivm"


def vmlinux_release(vmlinux: Path) -> str:
    """The release from an ELF vmlinux: the banner `Linux version <release> (...)`.

    Searched through mmap(2): the kernel pages the file in as the search goes and may drop
    the pages again, so a 60 MB vmlinux never becomes 60 MB of minivm's own memory."""
    import mmap
    with vmlinux.open("rb") as image, mmap.mmap(image.fileno(), 0, access=mmap.ACCESS_READ) \
            as mapped:
        found = re.search(rb"Linux version (\S+) \(", mapped)
        if not found:
            raise MinivmError(f"{vmlinux}: no 'Linux version' banner found: is it a Linux "
                              "kernel?")
        return found.group(1).decode()  # while the mapping is there: the match points into it


def config_text(kernel: Kernel, boot_dir: Path = BOOT_DIR) -> str | None:
    """The .config the kernel was built from, when it came with one: <dir>/config for the
    tiny kernel, boot/config-<release> in a Debian package, /boot/config-<release>."""
    directory = kernel.vmlinux.parent
    for path in (directory / "config", directory / "boot" / f"config-{kernel.release}",
                 boot_dir / f"config-{kernel.release}"):
        try:
            return path.read_text()
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

def entry(directory: Path) -> Kernel | None:
    """A cache entry: <dir>/kernel.json records what <dir>/vmlinux is."""
    try:
        record = cjson.loads((directory / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    modules = directory / "lib" / "modules" / record["release"]
    return Kernel(Path(record["vmlinux"]), record["release"], record["origin"],
                  modules if modules.is_dir() else None)


def release_key(release: str) -> list:
    """Sort 6.1.0-56-amd64 after 6.1.0-9-amd64: compare numbers as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", release)]


def tiny_dir(cache: Path) -> Path:
    return cache / "tiny"


def tiny_kernel(cache: Path) -> Kernel | None:
    """The kernel `minivm kernel build` made (tinykernel.py), if it did."""
    found = entry(tiny_dir(cache))
    return found if found and found.vmlinux.is_file() else None


def cached_kernels(cache: Path) -> list[Kernel]:
    """Kernels minivm fetched into the cache, newest release first."""
    entries = [entry(path) for path in (cache / "kernels").glob("*") if path.is_dir()]
    found = [entry for entry in entries if entry and entry.vmlinux.is_file()]
    return sorted(found, key=lambda kernel: release_key(kernel.release), reverse=True)


def from_file(path: Path, cache: Path, progress) -> Kernel:
    """A kernel the user or /boot names. A bzImage is decompressed once into the cache.

    The file is judged by stat(2) and its first bytes before anything else reads it:
    `--kernel /dev/zero` was once read whole into memory, 22 GB in 73 s.

    The extracted vmlinux is keyed by the file's path, size and modification time rather
    than a hash of its 8 MB, so finding it again costs one stat(2) per boot. (zlib.crc32, not
hashlib: a cache key needs no cryptography, and OpenSSL's import costs milliseconds.)
    """
    info, header = _kernel_header(path)
    if header.startswith(bzimage.ELF_MAGIC):
        known = entry(path.parent)  # one of the cache's own: keep its modules
        if known and known.vmlinux == path:
            return known
        return Kernel(path, vmlinux_release(path), f"{path} (an ELF vmlinux)", None)
    key = zlib.crc32(f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode())
    directory = cache / "extracted" / f"{key:08x}"
    known = entry(directory)
    if known and known.vmlinux.is_file():
        return known
    image = path.read_bytes()
    release = bzimage.release(image)
    progress(f"extracting the uncompressed kernel from {path} (once; cached)")
    vmlinux, compression = bzimage.vmlinux(image)
    directory.mkdir(parents=True, exist_ok=True)
    replace_file(directory / "vmlinux", vmlinux)  # atomic: a concurrent minivm sees all or nothing
    origin = f"{path} ({compression}-compressed bzImage, extracted to {directory / 'vmlinux'})"
    record = {"release": release, "origin": origin, "vmlinux": str(directory / "vmlinux")}
    replace_file(directory / "kernel.json", cjson.dumps(record, indent=1))
    return Kernel(directory / "vmlinux", release, origin, None)


def _kernel_header(path: Path):
    """(stat, first bytes) of a file that may be a kernel: a regular file (not a device or a
    FIFO, which never end), an ELF or a bzImage by its magic, and no larger than one can be."""
    import stat
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise MinivmError(f"--kernel {path}: not a regular file")
        with path.open("rb") as kernel_file:
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


def boot_kernels(boot_dir: Path = BOOT_DIR) -> list[Path]:
    """Readable /boot/vmlinuz-* files, newest release first."""
    found = [path for path in boot_dir.glob("vmlinuz-*") if os.access(path, os.R_OK)]
    return sorted(found, key=lambda path: release_key(path.name), reverse=True)


def find(explicit: Path | None, cache: Path, progress, boot_dir: Path = BOOT_DIR,
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


def fetch(cache: Path, progress, package: str | None = None) -> Kernel:
    """Debian's kernel package (debian.py downloads and unpacks it) into
    <cache>/kernels/<release>/, its vmlinux taken out of the bzImage once.

    Holds a lock on <cache>/fetch.lock (flock(2)) so two minivm runs don't download at once.
    """
    import fcntl
    import shutil
    import tempfile

    from minivm import debian
    package = package or debian.debian_package()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "fetch.lock", "w") as lock:
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
            directory = cache / "kernels" / release
            origin = f"Debian package {deb} ({compression} bzImage), cached in {directory}"
            record = {"release": release, "origin": origin,
                      "vmlinux": str(directory / "vmlinux"), "package": package}
            replace_file(tree / "kernel.json", cjson.dumps(record, indent=1))
            if directory.exists():
                shutil.rmtree(directory)
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tree, directory)
    progress(f"kernel {release} ready: {directory / 'vmlinux'}")
    return entry(directory)
