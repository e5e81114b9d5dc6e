"""Find a guest kernel and turn it into something QEMU boots fast: an uncompressed vmlinux.

Where the kernel comes from, first match wins:
1. `--kernel PATH` (a bzImage like /boot/vmlinuz-*, or an ELF vmlinux);
2. the cache: kernels minivm fetched itself, under <cache>/kernels/<release>/;
3. the host's /boot/vmlinuz-*, when readable (Ubuntu makes them root-only);
4. Debian's kernel package, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
   into the cache: the kernel and its modules (virtio, 9p... for guests that need them).

Why the uncompressed vmlinux: a bzImage is a small decompressor plus the real kernel,
compressed. Under TCG that decompressor is emulated and takes seconds (5.5 s vs 1.9 s per boot,
measured here). So minivm decompresses once, on the host, with Python's own lzma/gzip/bz2, and
caches the result. QEMU boots an ELF vmlinux directly when it carries a PVH note (the
XEN_ELFNOTE_PHYS32_ENTRY entry point, CONFIG_PVH=y; Documentation/arch/x86/boot.rst for the
bzImage layout, QEMU's docs/system/i386/microvm.rst for PVH boot).

The cache is /var/cache/minivm for root, ~/.cache/minivm otherwise; MINIVM_CACHE overrides.
"""
import bz2
import fcntl
import hashlib
import json
import lzma
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from minivm import MinivmError

BOOT_DIR = Path("/boot")
DEBIAN_META_PACKAGE = "linux-image-amd64"
ELF_MAGIC = b"\x7fELF"

# Magic numbers at the start of each compressed stream (the same list the kernel's own
# scripts/extract-vmlinux searches for), and how to decompress each in Python. The kernel
# appends the uncompressed size after the stream; decompressor objects stop at the stream's
# end and leave those 4 bytes alone.
COMPRESSIONS = {
    b"\xfd7zXZ\x00": ("xz", lambda data: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)),
    b"\x5d\x00\x00": ("lzma", lambda data: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)),
    b"\x1f\x8b": ("gzip", lambda data: zlib.decompressobj(wbits=31).decompress(data)),
    b"BZh": ("bzip2", lambda data: bz2.BZ2Decompressor().decompress(data)),
    b"\x28\xb5\x2f\xfd": ("zstd", lambda data: _decompress_with("zstd", data)),
    b"\x02\x21\x4c\x18": ("lz4", lambda data: _decompress_with("lz4", data)),
}


def _decompress_with(tool: str, data: bytes) -> bytes:
    """zstd and lz4 have no decoder in Python 3.11's standard library: use the command."""
    if shutil.which(tool) is None:
        raise MinivmError(f"this kernel is {tool}-compressed: install the {tool} package")
    done = subprocess.run([tool, "-dc"], input=data, capture_output=True)
    if not done.stdout:
        raise MinivmError(f"{tool} could not decompress the kernel: {done.stderr.decode().strip()}")
    return done.stdout


@dataclass(frozen=True)
class Kernel:
    vmlinux: Path            # the ELF QEMU boots
    release: str             # `uname -r` inside the guest, e.g. 6.1.0-56-amd64
    origin: str              # where it came from, for --explain and `kernel list`
    modules: Path | None     # lib/modules/<release> when minivm has them (issue: 9p, virtio)


def cache_dir() -> Path:
    if "MINIVM_CACHE" in os.environ:
        return Path(os.environ["MINIVM_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/minivm")
    return Path.home() / ".cache" / "minivm"


# --- reading a bzImage (Documentation/arch/x86/boot.rst, "The real-mode kernel header") ---

def _setup_header(image: bytes) -> tuple[int, int]:
    """(boot protocol version, start of the protected-mode code) of a bzImage."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise MinivmError("not a bzImage: no 'HdrS' boot header at offset 0x202")
    version = struct.unpack_from("<H", image, 0x206)[0]
    setup_sects = image[0x1F1] or 4  # "if this field is 0, the real value is 4"
    return version, (setup_sects + 1) * 512


def bzimage_release(image: bytes) -> str:
    """The release from the header's kernel_version field: a pointer to a string, less 0x200."""
    _setup_header(image)
    pointer = struct.unpack_from("<H", image, 0x20E)[0]
    if not pointer:
        raise MinivmError("this bzImage records no kernel version string")
    text = image[pointer + 0x200:pointer + 0x400].split(b"\0")[0].decode(errors="replace")
    return text.split()[0]


def vmlinux_from_bzimage(image: bytes) -> tuple[bytes, str]:
    """Decompress the kernel inside a bzImage. Returns (the vmlinux ELF, compression name).

    Since boot protocol 2.08 the header says where the compressed kernel is: payload_offset
    (0x248) counts from the protected-mode code, payload_length (0x24c) is its size.
    """
    version, protected_mode_start = _setup_header(image)
    if version < 0x208:
        raise MinivmError(f"boot protocol {version >> 8}.{version & 0xff} is too old "
                          "(2.08+ records where the compressed kernel is)")
    offset, length = struct.unpack_from("<II", image, 0x248)
    payload = image[protected_mode_start + offset:protected_mode_start + offset + length]
    for magic, (name, decompress) in COMPRESSIONS.items():
        if payload.startswith(magic):
            vmlinux = decompress(payload)
            if not vmlinux.startswith(ELF_MAGIC):
                raise MinivmError(f"the {name} payload of this bzImage is not an ELF file")
            return vmlinux, name
    raise MinivmError(f"unknown compression in this bzImage (payload starts {payload[:4].hex()})")


def vmlinux_release(vmlinux: Path) -> str:
    """The release from an ELF vmlinux: the banner `Linux version <release> (...)`."""
    found = re.search(rb"Linux version (\S+) \(", vmlinux.read_bytes())
    if not found:
        raise MinivmError(f"{vmlinux}: no 'Linux version' banner found: is it a Linux kernel?")
    return found.group(1).decode()


# --- the cache ---

def _save(directory: Path, name: str, data: bytes):
    """Write atomically: a concurrent minivm sees the whole file or none."""
    partial = directory / f".{name}.{os.getpid()}.tmp"
    partial.write_bytes(data)
    os.replace(partial, directory / name)


def _entry(directory: Path) -> Kernel | None:
    """A cache entry: <dir>/kernel.json records what <dir>/vmlinux is."""
    try:
        record = json.loads((directory / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    modules = directory / "lib" / "modules" / record["release"]
    return Kernel(Path(record["vmlinux"]), record["release"], record["origin"],
                  modules if modules.is_dir() else None)


def _release_key(release: str) -> list:
    """Sort 6.1.0-56-amd64 after 6.1.0-9-amd64: compare numbers as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", release)]


def cached_kernels(cache: Path) -> list[Kernel]:
    """Kernels minivm fetched into the cache, newest release first."""
    entries = [_entry(path) for path in (cache / "kernels").glob("*") if path.is_dir()]
    found = [entry for entry in entries if entry and entry.vmlinux.is_file()]
    return sorted(found, key=lambda kernel: _release_key(kernel.release), reverse=True)


def from_file(path: Path, cache: Path, progress=None) -> Kernel:
    """A kernel the user or /boot names. A bzImage is decompressed once into the cache.

    The extracted vmlinux is keyed by the file's path, size and modification time rather
    than a hash of its 8 MB, so finding it again costs one stat(2) per boot.
    """
    try:
        info = path.stat()
        with path.open("rb") as kernel_file:
            magic = kernel_file.read(4)
    except OSError as error:
        raise MinivmError(f"cannot read kernel {path}: {error.strerror}") from None
    if magic == ELF_MAGIC:
        return Kernel(path, vmlinux_release(path), f"{path} (an ELF vmlinux)", None)
    key = hashlib.sha256(f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode())
    directory = cache / "extracted" / key.hexdigest()[:16]
    known = _entry(directory)
    if known and known.vmlinux.is_file():
        return known
    image = path.read_bytes()
    release = bzimage_release(image)
    if progress:
        progress(f"extracting the uncompressed kernel from {path} (once; cached)")
    vmlinux, compression = vmlinux_from_bzimage(image)
    directory.mkdir(parents=True, exist_ok=True)
    _save(directory, "vmlinux", vmlinux)
    origin = f"{path} ({compression}-compressed bzImage, extracted to {directory / 'vmlinux'})"
    record = {"release": release, "origin": origin, "vmlinux": str(directory / "vmlinux")}
    _save(directory, "kernel.json", json.dumps(record, indent=1).encode())
    return Kernel(directory / "vmlinux", release, origin, None)


def boot_kernels(boot_dir: Path = BOOT_DIR) -> list[Path]:
    """Readable /boot/vmlinuz-* files, newest release first."""
    found = [path for path in boot_dir.glob("vmlinuz-*") if os.access(path, os.R_OK)]
    return sorted(found, key=lambda path: _release_key(path.name), reverse=True)


def find(explicit: Path | None, cache: Path, progress, boot_dir: Path = BOOT_DIR) -> Kernel:
    """The kernel to boot, following the order in this module's docstring."""
    if explicit is not None:
        return from_file(explicit, cache, progress)
    cached = cached_kernels(cache)
    if cached:
        return cached[0]
    for path in boot_kernels(boot_dir):
        return from_file(path, cache, progress)
    if shutil.which("apt-get") is None:
        raise MinivmError(f"no guest kernel: none in {cache}, no readable {boot_dir}/vmlinuz-*, "
                          "and no apt-get to download one; pass --kernel PATH")
    progress(f"no guest kernel yet: fetching Debian's into {cache} (once)")
    return fetch_debian(cache, progress)


# --- fetching Debian's kernel package ---

def debian_package() -> str:
    """The versioned package that linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64."""
    if platform.machine() != "x86_64":
        raise MinivmError(f"minivm boots x86_64 guests; this host is {platform.machine()}")
    if shutil.which("apt-cache") is None:
        raise MinivmError("no apt-cache: cannot find Debian's kernel package; pass --kernel PATH")
    depends = subprocess.run(["apt-cache", "depends", DEBIAN_META_PACKAGE],
                             capture_output=True, text=True)
    found = re.search(r"Depends: (linux-image-\S+)", depends.stdout)
    if not found:
        raise MinivmError(f"apt-cache does not know {DEBIAN_META_PACKAGE}: "
                          "run `apt-get update` first")
    return found.group(1)


def fetch_debian(cache: Path, progress, package: str | None = None) -> Kernel:
    """apt-get download + dpkg-deb -x into <cache>/kernels/<release>/, then extract vmlinux.

    Holds a lock on <cache>/fetch.lock so two minivm runs don't download at the same time.
    """
    package = package or debian_package()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kernel in cached_kernels(cache):
            if package.endswith(kernel.release):
                return kernel  # fetched by another run while we waited for the lock
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as scratch:
            return _download_and_unpack(package, cache, Path(scratch), progress)


def _download_and_unpack(package: str, cache: Path, scratch: Path, progress) -> Kernel:
    progress(f"downloading {package} with apt-get (Debian's kernel package, ~70 MB)")
    # As root apt drops to the _apt user to download, which can't write into our private
    # directory; APT::Sandbox::User=root keeps it root for this one download.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    _run_visibly(["apt-get", "download", *sandbox, package], scratch)
    debs = list(scratch.glob("*.deb"))
    if not debs:
        raise MinivmError(f"apt-get download {package} produced no .deb")
    progress(f"unpacking {debs[0].name} with dpkg-deb -x (kernel and modules)")
    tree = scratch / "tree"
    _run_visibly(["dpkg-deb", "-x", str(debs[0]), str(tree)], scratch)
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    if not images:
        raise MinivmError(f"{debs[0].name} holds no boot/vmlinuz-*")
    image = images[0].read_bytes()
    release = bzimage_release(image)
    progress(f"extracting the uncompressed kernel {release} from the bzImage")
    vmlinux, compression = vmlinux_from_bzimage(image)
    _save(tree, "vmlinux", vmlinux)
    directory = cache / "kernels" / release
    origin = f"Debian package {debs[0].name} ({compression} bzImage), cached in {directory}"
    record = {"release": release, "origin": origin, "vmlinux": str(directory / "vmlinux"),
              "package": package}
    _save(tree, "kernel.json", json.dumps(record, indent=1).encode())
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tree, directory)
    progress(f"kernel {release} ready: {directory / 'vmlinux'}")
    return _entry(directory)


def _run_visibly(argv: list[str], cwd: Path):
    """Run a fetch step with its output on stderr (stdout belongs to the guest command)."""
    try:
        done = subprocess.run(argv, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr)
    except OSError as error:
        raise MinivmError(f"cannot run {argv[0]}: {error.strerror}") from None
    if done.returncode:
        raise MinivmError(f"`{' '.join(argv)}` failed with exit status {done.returncode}")
