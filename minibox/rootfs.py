"""The container's root filesystem: overlay, bind mounts, /proc, /dev, /sys, then pivot_root.

All of this runs in the container's init, inside its new mount namespace (mount_namespaces(7)),
so none of these mounts is ever visible on the host, and all of them vanish by themselves when
the namespace's last process exits: nothing to unmount at teardown.
"""
import os

from . import syscalls
from .errors import MiniboxError
from .explain import step
from .syscalls import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                       MS_RDONLY, MS_REC, MS_REMOUNT, mount)

# Character devices a program may expect in /dev, bound in from the host's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
# Docker's lists. Masked paths leak host details or give kernel access (/proc/kcore is the
# host's physical memory as an ELF core; /proc/keys lists kernel keyrings of every user).
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
# Read-only paths would let root in the container change the *host* kernel: /proc/sys is
# the sysctl tree, /proc/sysrq-trigger can crash or reboot the machine.
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def check_overlay_support():
    with open("/proc/filesystems") as filesystems:
        if "\toverlay\n" not in filesystems.read():
            raise MiniboxError("this kernel has no overlayfs (modprobe overlay, or build "
                               "with CONFIG_OVERLAY_FS)")


def path_in_root(root, path):
    """Resolve `path` as if `root` were /, following symlinks but never leaving root.

    A plain os.path.join(root, path) would follow a symlink planted in the image, such as
    /data -> /etc, to the *host's* /etc when we then mount over it: the class of bug behind
    CVE-2018-15664 (docker cp) and CVE-2021-30465 (runc mounts). Like runc's securejoin, we
    walk one component at a time and resolve each link relative to root.
    """
    pending = [part for part in path.split("/") if part not in ("", ".")]
    resolved = []
    links_followed = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if not os.path.islink(candidate):
            resolved.append(part)
            continue
        links_followed += 1
        if links_followed > 40:  # the kernel's own limit (MAXSYMLINKS)
            raise MiniboxError(f"too many levels of symbolic links in {path}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return os.path.join(root, *resolved)


@step("Stop mount events from propagating between the host and the container",
      syscall='mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL)', man="mount_namespaces(7)")
def make_mounts_private():
    # The new mount namespace is a copy of the host's, and systemd makes "/" *shared*: every
    # mount below would show up on the host too, and pivot_root(2) refuses (EINVAL) to move
    # a root whose parent mount is shared.
    mount(None, "/", None, MS_REC | MS_PRIVATE)


@step("Stack a private writable layer on the read-only image with overlayfs",
      syscall='mount("overlay", "{merged}", "overlay", nodev={nodev}, '
              '"lowerdir={lowerdir},upperdir={upper},workdir={work}")',
      man="https://docs.kernel.org/filesystems/overlayfs.html")
def mount_overlay(lowerdir, upper, work, merged, nodev=True):
    # Writes go to `upper` (copy-up on first write); the image below is never touched, so
    # any number of containers share one image. The mount also makes `merged` a mount point,
    # which pivot_root(2) requires of new_root (else EBUSY/EINVAL).
    try:
        mount("overlay", merged, "overlay", MS_NODEV if nodev else 0,
              f"lowerdir={lowerdir},upperdir={upper},workdir={work}")
    except OSError as error:
        raise MiniboxError(f"cannot mount the overlay for the root filesystem: {error}") from None


@step("Bind-mount a host directory into the container (its persistent storage)",
      syscall='mount("{source}", "{target}", NULL, MS_BIND|MS_REC, NULL)'
              '; read-only={readonly} nodev={nodev}: mount(.., MS_BIND|MS_REMOUNT|..)',
      man="mount(2) 'Creating a bind mount'")
def bind_mount(source, rootfs, target, readonly, nodev=True):
    where = path_in_root(rootfs, target)
    if os.path.isdir(source):
        os.makedirs(where, exist_ok=True)
    elif not os.path.exists(where):
        os.makedirs(os.path.dirname(where), exist_ok=True)
        open(where, "a").close()
    mount(source, where, None, MS_BIND | MS_REC)
    if readonly or nodev:
        # A bind mount inherits the source's flags; changing them needs a second remount call.
        mount(None, where, None, MS_BIND | MS_REMOUNT | MS_REC
              | (MS_RDONLY if readonly else 0) | (MS_NODEV if nodev else 0))


@step("Mount a /proc that shows only the container's PID namespace",
      syscall='mount("proc", "{rootfs}/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL)',
      man="proc(5)")
def mount_proc(rootfs):
    # procfs shows the PID namespace of the process that mounts it: we are PID 1 of ours.
    target = os.path.join(rootfs, "proc")
    os.makedirs(target, exist_ok=True)
    mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


@step("Build a minimal /dev: a nodev tmpfs with the host's null, zero, full, random, "
      "urandom, tty bound in, a private devpts, shm and mqueue",
      syscall='mount("tmpfs", "{rootfs}/dev", "tmpfs", MS_NOSUID|MS_NODEV, "mode=755"); '
              'mount("/dev/null", "{rootfs}/dev/null", NULL, MS_BIND); ...; '
              'mount("devpts", .., "newinstance,ptmxmode=0666")',
      man="mount(2), pts(4), mq_overview(7)")
def mount_dev(rootfs, nodev=True):
    # Never bind the host's /dev: it holds the host's disks. Only six harmless nodes are
    # bound in, one by one. Binding instead of mknod(2) is what lets /dev be nodev: the kernel
    # refuses to open any device node on a nodev mount (EACCES), so a node the container
    # makes itself with CAP_MKNOD -- say, of the host's disk -- is useless, while each bound
    # node is a mount of the host's /dev and works. Docker gets the same from its device
    # cgroup (v1 devices.deny, v2 an eBPF program); nodev needs neither. It also works in a
    # user namespace, where mknod(2) is not allowed at all.
    dev = os.path.join(rootfs, "dev")
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | (MS_NODEV if nodev else 0), "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        open(target, "x").close()
        mount(os.path.join("/dev", name), target, None, MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, name))
    # newinstance: a devpts of our own, so the container can't see the host's terminals.
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "mode=1777,size=65536k")
    # An mqueue mount shows the message queues of the mounter's IPC namespace: ours.
    mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))


@step("Mount /sys read-only",
      syscall='mount("sysfs", "{rootfs}/sys", "sysfs", MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC)',
      man="sysfs(5)")
def mount_sys(rootfs):
    # sysfs can only be mounted by the owner of the current network namespace: ours, so the
    # network devices listed in /sys/class/net are the container's own.
    target = os.path.join(rootfs, "sys")
    os.makedirs(target, exist_ok=True)
    mount("sysfs", target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


@step("Mask /proc and /sys paths that expose the host kernel; make others read-only",
      syscall='mount("/dev/null", "/proc/kcore", NULL, MS_BIND); '
              'mount(.., "/proc/sys", .., MS_BIND|MS_REMOUNT|MS_RDONLY)',
      man="proc(5); runc's maskedPaths/readonlyPaths (OCI runtime spec)")
def mask_paths(rootfs, masked=MASKED_PATHS, readonly=READONLY_PATHS):
    for path in masked:
        target = os.path.join(rootfs, path.lstrip("/"))
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY, "size=0")
        elif os.path.exists(target):
            mount("/dev/null", target, None, MS_BIND)
    for path in readonly:
        target = os.path.join(rootfs, path.lstrip("/"))
        if os.path.exists(target):
            mount(target, target, None, MS_BIND | MS_REC)
            mount(None, target, None,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC)


@step("Make the root filesystem read-only, with a writable tmpfs on /tmp",
      syscall='mount("tmpfs", "{rootfs}/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=1777"); '
              'mount(NULL, "{rootfs}", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY, NULL)',
      man="mount(2) 'Remounting an existing mount'")
def make_root_read_only(rootfs, nodev=True):
    # Only the root mount turns read-only: /proc, /dev, /tmp and volumes are mounts of their
    # own. MS_REMOUNT|MS_BIND changes the per-mount flags and replaces all of them, so nodev
    # must be given again.
    tmp = path_in_root(rootfs, "/tmp")
    os.makedirs(tmp, exist_ok=True)
    mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_NODEV if nodev else 0))


@step("Switch the root: pivot_root(\".\", \".\") stacks the old root under the new one, "
      "then detach the old root",
      syscall='chdir("{rootfs}"); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/")',
      man="pivot_root(2)")
def pivot_to(rootfs):
    # pivot_root(".", ".") is valid (runc does it): no put_old directory is needed in the
    # image. The old root ends up mounted on top of the new one at "/", and the lazy
    # unmount drops it, so nothing of the host's tree is reachable any more, not even by
    # the chroot escape (chroot only moves one process's root; pivot_root moves the mount).
    os.chdir(rootfs)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", MNT_DETACH)
    os.chdir("/")


@step("chroot into the new root (WARNING: escapable, the host's mounts stay reachable)",
      syscall='chroot("{rootfs}"); chdir("/")', man="chroot(2) NOTES")
def chroot_to(rootfs):
    os.chroot(rootfs)
    os.chdir("/")
