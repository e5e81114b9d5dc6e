"""The container's root filesystem: overlay, bind mounts, /proc, /dev, /sys, then pivot_root.

All of this runs in the container's init, inside its new mount namespace (mount_namespaces(7)),
so none of these mounts is ever visible on the host, and all of them vanish by themselves when
the namespace's last process exits: nothing to unmount at teardown.
"""
import os
import stat

from . import cgroups, rootless, syscalls
from .errors import MiniboxError
from .explain import step
from .syscalls import (MNT_DETACH, MS_BIND, MS_DIRSYNC, MS_MANDLOCK, MS_NOATIME,
                       MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY,
                       MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
                       MS_SYNCHRONOUS, MS_UNBINDABLE, mount)

# Character devices a program may expect in /dev (major, minor from devices.txt).
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}
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
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if rootless.ENABLED:
        # overlayfs keeps whiteouts of directories and renames in trusted.overlay.* xattrs,
        # which only the host's root may set: in a user namespace it must use user.overlay.*
        # (Linux 5.11+), else removing a directory of the image fails with EIO.
        options += ",userxattr"
    try:
        mount("overlay", merged, "overlay", MS_NODEV if nodev else 0, options)
    except OSError as error:
        hint = (f" (overlayfs in a user namespace needs Linux 5.11 or later; this is "
                f"{os.uname().release})") if rootless.ENABLED else ""
        raise MiniboxError(f"cannot mount the overlay for the root filesystem: {error}{hint}"
                           ) from None


# mount(8) option words that are mount(2) flags: word -> (flag, set it?). Every other word
# (mode=755, size=65536k, newinstance...) is passed to the filesystem as its data string.
_FLAG_OPTIONS = {
    "ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True), "async": (MS_SYNCHRONOUS, False),
    "dirsync": (MS_DIRSYNC, True), "remount": (MS_REMOUNT, True),
    "mand": (MS_MANDLOCK, True), "nomand": (MS_MANDLOCK, False),
    "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, True), "norelatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, True), "nostrictatime": (MS_STRICTATIME, False),
    "nosymfollow": (MS_NOSYMFOLLOW, True), "symfollow": (MS_NOSYMFOLLOW, False),
    "bind": (MS_BIND, True), "rbind": (MS_BIND | MS_REC, True),
}
# Options runc maps to mount_setattr(2) (ID-mapped mounts; rro, rnosuid... applied to every
# mount below): minibox has no such call. Given to mount(2) they would be dropped on a bind
# mount without a word -- an "rro" volume left writable -- so oci.py refuses them.
UNSUPPORTED_OPTIONS = {"idmap", "ridmap"} | {
    "r" + word for word in _FLAG_OPTIONS if word not in ("bind", "rbind", "remount")}
# Propagation is changed by a second mount(2) call of its own (mount_namespaces(7)).
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


def parse_mount_options(options):
    """['nosuid', 'mode=755', 'rslave'] -> (mount flags, propagation flags, 'mode=755')."""
    flags, propagation, data = 0, 0, []
    for word in options:
        if word in _FLAG_OPTIONS:
            flag, on = _FLAG_OPTIONS[word]
            flags = flags | flag if on else flags & ~flag
        elif word in PROPAGATION:
            propagation |= PROPAGATION[word]
        else:
            data.append(word)
    return flags, propagation, ",".join(data)


@step("Use the bundle's root directory in place: bind-mount it (the OCI way, no overlay)",
      syscall='mount("{path}", "{merged}", NULL, MS_BIND|MS_REC, NULL)', man="mount(2)")
def bind_root(path, merged):
    # A bind mount makes new_root a mount point, which pivot_root(2) requires.
    mount(path, merged, None, MS_BIND | MS_REC)


@step("Mount {fstype} at {destination}",
      syscall='mount("{source}", "<root>{destination}", "{fstype}", <flags from {options}>)',
      man="mount(2), mount(8) for the options")
def mount_entry(rootfs, destination, fstype, source, options, own_cgroup_namespace=False,
                own_network_namespace=True):
    """One entry of the spec's mount list, mounted below rootfs. Why each default is there:
    proc(5) shows the PID namespace of whoever mounts it (ours: we are PID 1 of it); a
    tmpfs /dev gets only the harmless devices (make_default_devices); devpts with
    `newinstance` is a pts(4) of our own, not the host's terminals; an mqueue mount shows
    the message queues of the mounter's IPC namespace; sysfs(5) can only be mounted by the
    owner of the current network namespace, so /sys/class/net lists our own devices."""
    flags, propagation, data = parse_mount_options(options)
    target = path_in_root(rootfs, destination)
    if flags & MS_BIND:
        if not os.path.exists(source):
            raise MiniboxError(f"bind mount source {source} does not exist")
        _make_mount_point(target, directory=os.path.isdir(source))
        mount(source, target, None, flags & (MS_BIND | MS_REC))
        if flags & ~(MS_BIND | MS_REC):
            # A bind mount inherits the source's flags; ro, nosuid... need a remount.
            _remount_bind(target, flags)
    elif fstype == "cgroup":
        _mount_cgroups(target, flags, own_cgroup_namespace)
    elif fstype == "sysfs" and rootless.ENABLED and not own_network_namespace:
        _bind_host_sysfs(target, flags)
    else:
        _make_mount_point(target, directory=True)
        mount(source or fstype, target, fstype, flags, data or None)
    if propagation:
        mount(None, target, None, propagation)
    if destination == "/dev" and fstype == "tmpfs":
        # mknod(2) of a device is never allowed in a user namespace: rootless binds too.
        make_default_devices(target, bind=bool(flags & MS_NODEV) or rootless.ENABLED)


def _bind_host_sysfs(target, flags):
    """A rootless container on the host's network (--network host): sysfs(5) may only be
    mounted by the owner of the network namespace, here the host's root. Bind the host's
    /sys instead, read-only, as runc does."""
    _make_mount_point(target, directory=True)
    mount("/sys", target, None, MS_BIND | MS_REC)
    _remount_bind(target, flags | MS_BIND | MS_RDONLY)


def _remount_bind(target, flags):
    try:
        mount(None, target, None, flags | MS_REMOUNT)
    except PermissionError:
        # In a user namespace (rootless.py) the flags of a mount that came from the host's
        # mount namespace are locked (mount_namespaces(7), "MNT_LOCK_*"): a bind of a
        # nosuid /run/user/1000 may not lose nosuid. Keep the source's flags, as runc does.
        source_flags = os.statvfs(target).f_flag
        locked = sum(flag for st_flag, flag in _LOCKABLE_FLAGS if source_flags & st_flag)
        mount(None, target, None, flags | locked | MS_REMOUNT)


# statvfs(3)'s f_flag bit -> the mount(2) flag a user namespace may not clear.
_LOCKABLE_FLAGS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                   (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                   (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


def _make_mount_point(target, directory):
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()


def _mount_cgroups(target, flags, own_namespace):
    """`type: cgroup`: the container's own cgroups, read-only by default, under target.

    cgroup v2: one cgroup2 mount (inside a cgroup namespace it shows the container's cgroup
    as its root). v1: a tmpfs with one bind mount per hierarchy of the container's cgroup
    directory, as runc does -- the rest of the host's tree stays out of sight."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        _make_mount_point(target, directory=True)
        mount("cgroup", target, "cgroup2", flags)
        return
    _make_mount_point(target, directory=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    # In a cgroup namespace of our own a fresh mount of a hierarchy shows our cgroup as its
    # root; without one it would show the host's whole tree, so bind our directory instead.
    for controllers, mount_point, directory in cgroups.cgroup_directories("self"):
        if controllers:  # v1 hierarchies only, as runc does on a hybrid host
            where = os.path.join(target, os.path.basename(mount_point))
            os.makedirs(where, exist_ok=True)
            if own_namespace:
                mount("cgroup", where, "cgroup", flags, controllers)
            else:
                mount(directory, where, None, MS_BIND)
                mount(None, where, None, MS_BIND | MS_REMOUNT | flags)


@step("Fill the tmpfs /dev: null, zero, full, random, urandom, tty (bound from the host's "
      "when /dev is nodev, else made with mknod(2) as runc does) and the /dev/fd links",
      syscall='mount("/dev/null", "{dev}/null", NULL, MS_BIND) or mknod(...); symlink(...)',
      man="mount(2), mknod(2)")
def make_default_devices(dev, bind):
    # Never bind the host's /dev: it holds the host's disks. Only six harmless nodes are
    # bound in, one by one. Binding instead of mknod(2) is what lets /dev be nodev: the kernel
    # refuses to open any device node on a nodev mount (EACCES), so a node the container
    # makes itself with CAP_MKNOD -- say, of the host's disk -- is useless, while each bound
    # node is a mount of the host's /dev and works. Docker gets the same from its device
    # cgroup (v1 devices.deny, v2 an eBPF program); nodev needs neither. It also works in a
    # user namespace, where mknod(2) is not allowed at all.
    for name, (major, minor) in DEVICES.items():
        target = os.path.join(dev, name)
        if bind:
            open(target, "x").close()
            mount(os.path.join("/dev", name), target, None, MS_BIND)
        else:
            create_device(target, "c", major, minor)
    for name, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))


def create_device(path, kind, major, minor, mode=0o666, uid=0, gid=0):
    """mknod(2) one device node: kind c (character), b (block) or p (fifo)."""
    file_type = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.mknod(path, mode | file_type[kind], os.makedev(major, minor))
    os.chmod(path, mode)  # mknod(2) applies the umask
    os.chown(path, uid, gid)


@step("Set namespaced kernel parameters through the container's own /proc/sys",
      syscall='write("/proc/sys/<key with dots as slashes>", value)', man="sysctl(8), proc(5)")
def set_sysctls(rootfs, sysctl):
    # Only sysctls that belong to one of our namespaces (net.*, kernel.shm*...) get here:
    # oci.py refuses the rest, which would change the host.
    for key, value in sysctl.items():
        with open(os.path.join(rootfs, "proc/sys", key.replace(".", "/")), "w") as knob:
            knob.write(str(value))


@step("Mask /proc and /sys paths that expose the host kernel; make others read-only",
      syscall='mount("/dev/null", "/proc/kcore", NULL, MS_BIND); '
              'mount(.., "/proc/sys", .., MS_BIND|MS_REMOUNT|MS_RDONLY)',
      man="proc(5); runc's maskedPaths/readonlyPaths (OCI runtime spec)")
def mask_paths(rootfs, masked, readonly):
    # The container's own /dev/null when it has one (as runc): nothing of the host's /dev.
    null = os.path.join(rootfs, "dev/null")
    null = null if os.path.exists(null) else "/dev/null"
    for path in masked:
        target = path_in_root(rootfs, path)
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY, "size=0")
        elif os.path.exists(target):
            mount(null, target, None, MS_BIND)
    for path in readonly:
        target = path_in_root(rootfs, path)
        if os.path.exists(target):
            mount(target, target, None, MS_BIND | MS_REC)
            mount(None, target, None,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC)


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


@step("Make the root filesystem read-only (--read-only, OCI root.readonly)",
      syscall='mount(NULL, "{rootfs}", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY, NULL)',
      man="mount(2) 'Remounting an existing mount'")
def make_root_read_only(rootfs, nodev=True):
    # Only the root mount turns read-only: /proc, /dev, /tmp and volumes are mounts of their
    # own. MS_REMOUNT|MS_BIND changes the per-mount flags and replaces all of them, so nodev
    # must be given again.
    mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_NODEV if nodev else 0))


@step("Set the propagation of the new root (OCI rootfsPropagation: {kind}); a mount that "
      "names its own keeps it", syscall='mount(NULL, "/", NULL, <{kind}>, NULL)',
      man="mount_namespaces(7)")
def set_root_propagation(kind, mounts=()):
    """`mounts`: the (destination, options) of config.json's mounts."""
    # After pivot_root, on the new root itself: the runtime spec says rootfsPropagation
    # "sets the rootfs's mount propagation", and crun 1.8 does this. runc 1.1.5 applies it
    # to the old / before binding the rootfs, so with "shared" its container's / is private
    # (tests/integration/test_oci.py shows both), and with "unbindable" runc and crun both
    # fail (EINVAL binding the rootfs) where this works.
    mount(None, "/", None, PROPAGATION[kind])
    if PROPAGATION[kind] & MS_REC:
        # The recursive kinds reach every mount below: a mount whose options name its own
        # ("rshared") gets that back, as mount(8) reads the word and as runc 1.1.5 leaves it
        # (runc sets the root's first); crun 1.8 leaves such a mount private.
        for destination, options in mounts:
            propagation = parse_mount_options(options)[1]
            if propagation:
                mount(None, path_in_root("/", destination), None, propagation)


@step("chroot into the new root (WARNING: escapable, the host's mounts stay reachable)",
      syscall='chroot("{rootfs}"); chdir("/")', man="chroot(2) NOTES")
def chroot_to(rootfs):
    os.chroot(rootfs)
    os.chdir("/")
