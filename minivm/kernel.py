"""Find a guest kernel and turn it into something QEMU boots fast: an uncompressed vmlinux.

Where the kernel comes from, first match wins:
1. `--kernel PATH` (a bzImage like /boot/vmlinuz-*, or an ELF vmlinux);
2. the cache: kernels minivm fetched itself, under <cache>/kernels/<release>/;
3. the host's /boot/vmlinuz-*, when readable (Ubuntu makes them root-only);
4. Debian's kernel package, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
   into the cache: the kernel and its modules (virtio, 9p... for guests that need them).

QEMU boots the *uncompressed* kernel, which bzimage.py takes out of the bzImage once and the
cache keeps: an ELF vmlinux with a PVH note (the XEN_ELFNOTE_PHYS32_ENTRY entry point,
CONFIG_PVH=y) boots straight into 32-bit mode, no bootloader, no decompressor
(QEMU's docs/system/i386/microvm.rst).

The cache is /var/cache/minivm for root, ~/.cache/minivm otherwise; MINIVM_CACHE overrides.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

from minivm import MinivmError

BOOT_DIR = Path("/boot")
DEBIAN_META_PACKAGE = "linux-image-amd64"

# vmlinux: the ELF QEMU boots; release: `uname -r` in the guest, e.g. 6.1.0-56-amd64;
# origin: where it came from, for --explain and `kernel list`; modules: lib/modules/<release>
# when minivm has them (virtio, 9p... for guests that need them), else None.
Kernel = namedtuple("Kernel", "vmlinux release origin modules")


def cache_dir() -> Path:
    if "MINIVM_CACHE" in os.environ:
        return Path(os.environ["MINIVM_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/minivm")
    return Path.home() / ".cache" / "minivm"


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


def from_file(path: Path, cache: Path, progress) -> Kernel:
    """A kernel the user or /boot names. A bzImage is decompressed once into the cache.

    The extracted vmlinux is keyed by the file's path, size and modification time rather
    than a hash of its 8 MB, so finding it again costs one stat(2) per boot.
    """
    from minivm import bzimage  # lzma & co.: only for kernels that aren't cached
    try:
        info = path.stat()
        with path.open("rb") as kernel_file:
            magic = kernel_file.read(4)
    except OSError as error:
        raise MinivmError(f"cannot read kernel {path}: {error.strerror}") from None
    if magic == bzimage.ELF_MAGIC:
        return Kernel(path, vmlinux_release(path), f"{path} (an ELF vmlinux)", None)
    key = hashlib.sha256(f"{path.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode())
    directory = cache / "extracted" / key.hexdigest()[:16]
    known = _entry(directory)
    if known and known.vmlinux.is_file():
        return known
    image = path.read_bytes()
    release = bzimage.release(image)
    progress(f"extracting the uncompressed kernel from {path} (once; cached)")
    vmlinux, compression = bzimage.vmlinux(image)
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
    machine = os.uname().machine
    if machine != "x86_64":
        raise MinivmError(f"minivm boots x86_64 guests; this host is {machine}")
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
    import tempfile  # only here: the common path never fetches
    with open(cache / "fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kernel in cached_kernels(cache):
            if package.endswith(kernel.release):
                return kernel  # fetched by another run while we waited for the lock
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as scratch:
            return _download_and_unpack(package, cache, Path(scratch), progress)


def _download_and_unpack(package: str, cache: Path, scratch: Path, progress) -> Kernel:
    from minivm import bzimage
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
    release = bzimage.release(image)
    progress(f"extracting the uncompressed kernel {release} from the bzImage")
    vmlinux, compression = bzimage.vmlinux(image)
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
