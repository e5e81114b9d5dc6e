"""--disk IMAGE: a virtual disk whose writes land in a throwaway qcow2 overlay.

This is the VM twin of a container's overlayfs: the image is the read-only lower layer, and
each VM gets its own copy-on-write upper layer. qcow2 (QEMU's "copy on write" format,
docs/interop/qcow2.txt) can name a *backing file*: a cluster the guest never wrote is read
from the backing file, a cluster it writes is first copied into the qcow2 file. So

    qemu-img create -f qcow2 -b /abs/base.img -F raw overlay.qcow2

makes an overlay of a few hundred KB however large the base is, and QEMU opens the backing
file read-only (docs/system/images.rst, "backing files"): the base image never changes, and
any number of VMs can share it. minivm deletes the overlay when the VM is gone, so every run
starts from the base image again, as every `minibox run` starts from the image's layers.

`-F` names the base's format instead of letting QEMU guess it: a guessed "raw" image whose
first bytes a guest made look like a qcow2 header would be opened as qcow2 the next time,
backing file and all (the reason QEMU warns about probing, CVE-2008-2004).

In the guest the disk is a virtio block device on microvm's virtio-mmio bus: /dev/vda (then
vdb...). The Debian kernel has virtio_blk and ext4 as modules, so they travel along
(modules.py); `mount /dev/vda /mnt` works for ext2/3/4 images.
"""
import json
import os
import subprocess

from minivm import MinivmError
from minivm.qemu import Option, option

QEMU_IMG = "qemu-img"
SECTOR_SIZE = 512
# virtio_mmio: the transport; virtio_blk: the disk; ext4: mounts ext2/3/4 file systems.
# ext4 asks for the checksum through the crypto API, by name (its modinfo says
# `softdep=pre: crypto-crc32c`, an alias only modprobe resolves): crc32c_generic provides it.
GUEST_MODULES = ["virtio_mmio", "virtio_blk", "crc32c_generic", "ext4"]


def base_format(image: str) -> str:
    """The base image's format as `qemu-img info` sees it; MinivmError for anything unusable."""
    if not os.path.exists(image):
        raise MinivmError(f"--disk {image}: base image not found")
    if not os.path.isfile(image):
        raise MinivmError(f"--disk {image}: not a file")
    # --backing-chain opens the whole chain, so a qcow2 whose own backing file is gone fails
    # here, not in the middle of a boot.
    chain = json.loads(_qemu_img(image, "info", "--backing-chain", "--output=json", str(image)))
    if chain[0].get("virtual-size", 0) < SECTOR_SIZE:
        raise MinivmError(f"--disk {image}: the image is empty")
    return chain[0]["format"]


def attach(bases: list[tuple[str, str]], directory: str,
           prefix: str) -> tuple[list[str], list[Option]]:
    """An overlay per (base image, its format), as <directory>/<prefix>disk<N>.qcow2, and the
    QEMU options that attach them in order (/dev/vda, vdb...). The caller deletes the
    overlays; if one cannot be made, those made before it are deleted here."""
    overlays, options = [], []
    try:
        for index, (base, fmt) in enumerate(bases):
            overlay = os.path.join(directory, f"{prefix}disk{index}.qcow2")
            # The overlay records the backing path as given: absolute, so it holds from anywhere.
            _qemu_img(base, "create", "-q", "-f", "qcow2", "-b", os.path.realpath(base), "-F",
                      fmt, overlay)
            overlays.append(overlay)
            options.append(option(
                "-drive", f"if=none,id=disk{index},file={overlay},format=qcow2,cache=unsafe",
                "-device", f"virtio-blk-device,drive=disk{index}",
                why=f"a virtio disk over {base} ({fmt}): reads fall through to it, writes go "
                "to a qcow2 overlay deleted afterwards (cache=unsafe: no point flushing a "
                "file that is thrown away)",
                doc="QEMU docs/system/images.rst (backing files), docs/interop/qcow2.txt"))
    except BaseException:
        remove(overlays)
        raise
    return overlays, options


def remove(overlays: list[str]):
    for overlay in overlays:
        try:
            os.unlink(overlay)
        except FileNotFoundError:
            pass


def _qemu_img(image: str, *args: str) -> str:
    """Run qemu-img about `image`; its first complaint becomes a one-line MinivmError."""
    try:
        done = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise MinivmError(f"{QEMU_IMG} not found: install the qemu-utils package "
                          "(apt-get install qemu-utils)") from None
    if done.returncode:
        said = done.stderr.strip().splitlines()[:1] or [f"exit status {done.returncode}"]
        raise MinivmError(f"--disk {image}: {QEMU_IMG} {args[0]} failed: "
                          f"{said[0].removeprefix(QEMU_IMG + ': ')}")
    return done.stdout
