"""Kernel modules for the guest: pick them from the kernel package, with their dependencies.

Debian's kernel builds most drivers as modules: virtio itself, the virtio-mmio transport that
microvm's devices sit on, virtio_blk, virtio_net, 9p, ext4 are all `=m` in its config. The
guest has no /lib/modules and no modprobe database, so the host does modprobe's job:

1. find each module's file through lib/modules/<release>/modules.order (one line per module,
   `kernel/drivers/block/virtio_blk.ko`, written by the kernel build);
2. read the `depends=` entry of its `.modinfo` ELF section (what modinfo(8) prints) and put
   every dependency before the module that needs it (modules.dep(5) holds the same facts,
   but only after depmod(8) ran, and the cache keeps the package's files as they are);
3. ship the files in the per-run initramfs under /minivm/modules/, in load order; /init loads
   them with insmod(8), handing each the `<module>.<param>=` options from the kernel command
   line as modprobe(8) does. That matters for virtio_mmio: QEMU describes microvm's devices
   as `virtio_mmio.device=512@0xfeb00e00:12` parameters, and a module sees the command line
   only through whoever loads it.

A module listed in modules.builtin is compiled into the kernel and needs nothing. A kernel
with no modules directory (a vmlinux from --kernel, a kernel built with everything in) is
taken at its word: the drivers had better be built in.
"""
import lzma
import struct
from pathlib import Path

from minivm import MinivmError
from minivm.bzimage import ELF_MAGIC


def _name(path: str) -> str:
    """`kernel/fs/ext4/ext4.ko.xz` -> `ext4`; the kernel treats - and _ in names alike."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


class ModuleTree:
    """lib/modules/<release>/ of a kernel package: which modules exist, and where."""

    def __init__(self, directory: str | None):
        directory = None if directory is None else Path(directory)  # kernel.py's str
        self.directory = directory
        self.files: dict[str, Path] = {}
        self.builtin: set[str] = set()
        if directory is None:
            return
        try:
            order = (directory / "modules.order").read_text().split()
            builtin = (directory / "modules.builtin").read_text().split()
        except OSError as error:
            raise MinivmError(f"cannot read the module list in {directory}: "
                              f"{error.strerror}") from None
        self.files = {_name(line): directory / line for line in order}
        self.builtin = {_name(line) for line in builtin}

    def load_order(self, wanted: list[str]) -> list[tuple[str, bytes]]:
        """(name, .ko bytes) for `wanted` and everything they depend on, dependencies first."""
        ordered: dict[str, bytes] = {}

        def visit(name: str, needed_by: str | None):
            name = name.replace("-", "_")
            if name in ordered or name in self.builtin or self.directory is None:
                return
            path = self.files.get(name)
            if path is None:
                who = f" (needed by {needed_by})" if needed_by else ""
                raise MinivmError(f"the guest kernel has no module {name}{who} in "
                                  f"{self.directory}")
            image = _read_module(path)
            for dependency in filter(None, modinfo(image).get("depends", "").split(",")):
                visit(dependency, name)
            ordered[name] = image

        for name in wanted:
            visit(name, None)
        return list(ordered.items())


def _read_module(path: Path) -> bytes:
    """A module file's ELF bytes; newer Debian kernels ship them xz-compressed (.ko.xz)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MinivmError(f"cannot read kernel module {path}: {error.strerror}") from None
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix != ".ko":
        raise MinivmError(f"{path}: compressed kernel modules other than .xz are not supported")
    return data


def modinfo(image: bytes) -> dict[str, str]:
    """The `.modinfo` section of a module: NUL-separated `key=value` strings.

    ELF64 layout (elf(5), include/uapi/linux/elf.h): the header holds e_shoff (section
    header table offset, at byte 0x28), e_shentsize/e_shnum/e_shstrndx (at 0x3a); each
    64-byte section header starts with sh_name (offset of its name in the section-name
    string table) and has sh_offset and sh_size at bytes 24 and 32.
    """
    if image[:4] != ELF_MAGIC or image[4] != 2:
        raise MinivmError("not a 64-bit ELF kernel module")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3a)

    def section(index: int) -> tuple[int, int, int]:
        header = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", image, header)
        offset, size = struct.unpack_from("<QQ", image, header + 24)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if image[names_at + name:image.index(b"\0", names_at + name)] == b".modinfo":
            entries = image[offset:offset + size].split(b"\0")
            return dict(entry.decode(errors="replace").partition("=")[::2]
                        for entry in entries if b"=" in entry)
    return {}
