"""The image store: read-only root filesystems that containers stack an overlay on.

An image is a directory tree that is never written after it is made; every container gets
its own writable layer on top (see rootfs.mount_overlay). The built-in image `busybox` is
made on first use from the host's static busybox: one binary plus a symlink per applet
(`busybox --list-full`), the few files in /etc that programs expect, and empty mount points.
MINIBOX_STORE overrides /var/lib/minibox.
"""
import os
import struct

from .errors import MiniboxError

STORE = os.environ.get("MINIBOX_STORE", "/var/lib/minibox")
IMAGES = os.path.join(STORE, "images")
HOST_BUSYBOX = "/bin/busybox"

_ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_MOUNT_POINTS = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "root": 0o700,
                 "etc": 0o755}


def image_layers(name):
    """The image's layer directories, top layer first (overlayfs' lowerdir order)."""
    if name == "busybox":
        return [_busybox_rootfs()]
    raise MiniboxError(f"unknown image {name!r} (available: busybox)")


def _busybox_rootfs():
    rootfs = os.path.join(IMAGES, "busybox", "rootfs")
    if not os.path.isdir(rootfs):
        build_busybox_image(os.path.dirname(rootfs))
    return rootfs


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


def build_busybox_image(image_dir):
    """Build the busybox image in a scratch dir, then rename(2) it into place atomically."""
    if not os.path.exists(HOST_BUSYBOX):
        raise MiniboxError(f"{HOST_BUSYBOX} not found: install busybox-static "
                           "(sudo apt-get install busybox-static)")
    if not _is_static_elf(HOST_BUSYBOX):
        raise MiniboxError(f"{HOST_BUSYBOX} is dynamically linked and would not run inside "
                           "the image: install busybox-static")
    import shutil
    import subprocess
    os.makedirs(image_dir, exist_ok=True)
    scratch = os.path.join(image_dir, f"rootfs.building.{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin"):
        os.makedirs(os.path.join(scratch, directory))
    for directory, mode in _MOUNT_POINTS.items():
        os.makedirs(os.path.join(scratch, directory), exist_ok=True)
        os.chmod(os.path.join(scratch, directory), mode)
    shutil.copy2(HOST_BUSYBOX, os.path.join(scratch, "bin/busybox"))
    applets = subprocess.run([HOST_BUSYBOX, "--list-full"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(scratch, applet)
        if applet != "bin/busybox" and not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    for relative, text in _ETC_FILES.items():
        with open(os.path.join(scratch, relative), "w") as out:
            out.write(text)
    try:
        os.rename(scratch, os.path.join(image_dir, "rootfs"))
    except OSError:  # another run built it first: theirs is as good as ours
        shutil.rmtree(scratch, ignore_errors=True)
