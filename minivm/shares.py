"""Host folders in the guest over virtio-9p: `-v HOSTDIR:GUESTDIR[:ro]` and `minivm sandbox`.

9P is Plan 9's file protocol: the guest kernel sends requests (walk, open, read, write...) and
a server answers them. Here the server is QEMU itself, reading and writing the host folder on
the guest's behalf; the requests travel over a virtio ring (Documentation/filesystems/9p.rst).
On QEMU's microvm there is no PCI bus, so the device is `virtio-9p-device` on virtio-mmio
(`-virtfs` is a shorthand that wants PCI):

    -fsdev local,id=fs0,path=HOSTDIR,security_model=none[,readonly=on]
    -device virtio-9p-device,fsdev=fs0,mount_tag=share0

and the guest mounts the tag: `mount -t 9p -o trans=virtio,version=9p2000.L share0 GUESTDIR`.
security_model=none: QEMU creates files as itself (root here) and passes modes through,
the guest's idea of owners is not kept apart (QEMU docs: "-fsdev").

`minivm sandbox` shares the host's whole root, read-only, and lays a tmpfs over it with
overlayfs: the guest runs the host's own programs, under its own kernel, and whatever they
write vanishes with the VM (kvmtool's `lkvm sandbox` does the same with its 9p root).
"""
import os
from collections import namedtuple

from minivm import MinivmError
from minivm.qemu import Option, option

# Debian's kernel has these as modules (modules.py adds what they depend on: virtio, netfs...);
# the tiny kernel has them built in.
GUEST_MODULES = ["virtio_mmio", "9pnet_virtio", "9p"]
SANDBOX_MODULES = GUEST_MODULES + ["overlay", "virtio_rng"]

# Large messages mean fewer round trips for big reads; 512 KiB is the most virtio 9p takes
# in one request on Linux 6.1 (net/9p/trans_virtio.c, VIRTQUEUE_NUM pages).
MOUNT_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000"

# Where the sandbox builds its root in the guest's initramfs.
SANDBOX = "/sandbox"
SANDBOX_ROOT = f"{SANDBOX}/root"

Share = namedtuple("Share", "host guest readonly")

# A guest has no source of randomness of its own: no RDRAND on QEMU's default CPU model, and
# under emulation the kernel's jitter entropy takes minutes. Since Linux 5.18 getrandom(2)
# and /dev/urandom wait until the kernel's generator is seeded, so the first host program
# that asks (Python does at start-up) would hang. virtio-rng hands the guest host entropy.
ENTROPY = option("-device", "virtio-rng-device", why="entropy from the host (QEMU asks getrandom(2)), "
                 "so getrandom(2) in the guest does not wait for minutes",
                 doc="QEMU docs: virtio-rng; random(4)")


def parse(spec: str) -> Share:
    """`HOSTDIR:GUESTDIR[:ro|:rw]` -> Share; bad input is a MinivmError in one line."""
    parts = spec.split(":")
    mode = parts.pop() if len(parts) == 3 else "rw"
    if len(parts) != 2 or not all(parts) or mode not in ("ro", "rw"):
        raise MinivmError(f"-v {spec}: expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro")
    host, guest = parts
    if not os.path.isdir(host):
        what = "is not a directory" if os.path.exists(host) else "does not exist"
        raise MinivmError(f"-v {spec}: host directory {host} {what}")
    if not guest.startswith("/"):
        raise MinivmError(f"-v {spec}: the guest directory must be an absolute path")
    return Share(os.path.realpath(host), os.path.normpath(guest), mode == "ro")


def _qemu_value(text: str) -> str:
    """QEMU splits option values at commas; a literal comma is written twice (docs: -fsdev)."""
    return text.replace(",", ",,")


def device_options(share: Share, tag: str) -> list[Option]:
    readonly = ",readonly=on" if share.readonly else ""
    return [
        # multidevs=remap: a folder that holds other mounts (the host's / holds /proc, /sys,
        # /work...) has files from several devices whose inode numbers may collide; QEMU
        # remaps them into one space instead of warning about it (QEMU docs: -fsdev).
        option("-fsdev", f"local,id={tag},path={_qemu_value(share.host)},"
               f"security_model=none,multidevs=remap{readonly}",
               why=f"QEMU serves host folder {share.host} over 9P"
               + (", refusing writes" if share.readonly else ""), doc="QEMU docs: -fsdev"),
        option("-device", f"virtio-9p-device,fsdev={tag},mount_tag={tag}",
               why=f"a virtio-mmio 9P device; the guest mounts it by its tag {tag}",
               doc="QEMU docs/system/i386/microvm.rst, Linux Documentation/filesystems/9p.rst"),
    ]


def mount_command(tag: str, target: str, readonly: bool) -> list[str]:
    options = MOUNT_OPTIONS + (",ro" if readonly else "")
    return ["mount", "-t", "9p", "-o", options, tag, target]


# What shares add to a VM: QEMU options, guest kernel modules, commands for the guest's /init.
Attachment = namedtuple("Attachment", "options modules setup")


def attach(shares: list[Share], sandbox: bool) -> Attachment:
    """QEMU devices for the shares and the guest commands that mount them, in order: in a
    sandbox first the host's root (read-only 9p + tmpfs + overlay, with fresh proc, sys and
    dev in it), then each -v folder inside that root."""
    options, setup, root = [], [], ""
    if sandbox:
        options += device_options(Share("/", "/", True), "hostroot") + [ENTROPY]
        setup += sandbox_commands("hostroot")
        root = SANDBOX_ROOT
    for index, share in enumerate(shares):
        tag = f"share{index}"
        options += device_options(share, tag)
        target = root + share.guest
        setup += [["mkdir", "-p", target], mount_command(tag, target, share.readonly)]
    return Attachment(options, SANDBOX_MODULES if sandbox else GUEST_MODULES, setup)


def sandbox_commands(tag: str) -> list[list[str]]:
    """The guest's view of the host: its root read-only (9p), a tmpfs for writes, and overlayfs
    joining them (Documentation/filesystems/overlayfs.rst): reads fall through to the host,
    writes copy the file up into the tmpfs. proc, sysfs and devtmpfs are the guest's own."""
    lower, writable = f"{SANDBOX}/host", f"{SANDBOX}/rw"
    layers = f"lowerdir={lower},upperdir={writable}/upper,workdir={writable}/work"
    return [
        ["mkdir", "-p", lower, writable, SANDBOX_ROOT],
        mount_command(tag, lower, readonly=True),
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "sandbox", writable],
        ["mkdir", f"{writable}/upper", f"{writable}/work"],
        ["mount", "-t", "overlay", "-o", layers, "sandbox", SANDBOX_ROOT],
        ["mount", "-t", "proc", "proc", f"{SANDBOX_ROOT}/proc"],
        ["mount", "-t", "sysfs", "sysfs", f"{SANDBOX_ROOT}/sys"],
        ["mount", "-t", "devtmpfs", "devtmpfs", f"{SANDBOX_ROOT}/dev"],
    ]
