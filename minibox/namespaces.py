"""Namespaces: give the container its own view of mounts, hostname, IPC, network, PIDs, cgroups.

A namespace wraps one global resource so that the processes inside see their own instance
(namespaces(7)). unshare(2) moves the *calling* process into new namespaces, with one
exception: CLONE_NEWPID only sets the PID namespace for the caller's future children
(/proc/self/ns/pid_for_children); the first child forked afterwards becomes PID 1 there.
That is why the runtime unshares the PID namespace itself, forks the container's init, and
then setns(2)s its children's PID namespace back to its own.
"""
import os

from . import syscalls
from .errors import MiniboxError
from .explain import step

# OCI namespace types (config.json's linux.namespaces) as clone(2)/setns(2) flags.
CLONE_FLAGS = {"mount": "CLONE_NEWNS", "uts": "CLONE_NEWUTS", "ipc": "CLONE_NEWIPC",
               "network": "CLONE_NEWNET", "pid": "CLONE_NEWPID", "cgroup": "CLONE_NEWCGROUP",
               "user": "CLONE_NEWUSER"}
# The ones the container's init enters itself, in this order (a mount namespace joined by
# path last: see enter_namespaces). The cgroup namespace comes later (see
# enter_cgroup_namespace) and PID is the runtime's job.
INIT_NAMESPACES = ("uts", "ipc", "network", "mount")
NS_GET_NSTYPE = 0xB703  # ioctl_ns(2): which CLONE_NEW* type an nsfs file descriptor is
_KERNEL_OPTION = {"mnt": "CONFIG_NAMESPACES", "uts": "CONFIG_UTS_NS", "ipc": "CONFIG_IPC_NS",
                  "net": "CONFIG_NET_NS", "pid": "CONFIG_PID_NS", "cgroup": "CONFIG_CGROUPS"}


def check_kernel_support(names=("mnt", "uts", "ipc", "net", "pid", "cgroup")):
    """Fail early, naming the namespace, if this kernel was built without it."""
    for name in names:
        if not os.path.exists(f"/proc/self/ns/{name}"):
            raise MiniboxError(f"this kernel has no {name} namespace "
                               f"(built without {_KERNEL_OPTION[name]})")


def check_namespace_path(kind, path):
    """A `path` to join must be a namespace file of that type (ioctl_ns(2) NS_GET_NSTYPE):
    setns(2) would refuse it later anyway, but only after the container was half made."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise MiniboxError(f"{kind} namespace path {path}: {error.strerror}") from None
    try:
        found = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        raise MiniboxError(f"{kind} namespace path {path} is not a namespace file") from None
    finally:
        os.close(fd)
    if found != getattr(syscalls, CLONE_FLAGS[kind]):
        raise MiniboxError(f"{kind} namespace path {path} is a namespace of another type")


@step("Make a new PID namespace (or join config.json's): the next child forked is PID 1 there",
      syscall="unshare(CLONE_NEWPID) or setns(open(path), CLONE_NEWPID)", man="pid_namespaces(7)")
def new_pid_namespace_for_children(path=None):
    """Returns an fd of our own PID namespace, to switch children back with restore_pid_namespace."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    if path is None:
        syscalls.unshare(syscalls.CLONE_NEWPID)
    else:
        join_namespace("pid", path)
    return own


def restore_pid_namespace(own_pid_namespace, rootless=False):
    """Later children of the runtime (helpers, proxies) belong in the host's PID namespace.

    Not in rootless mode: setns(2) into a PID namespace needs CAP_SYS_ADMIN in the user
    namespace that owns it, the host's, and a rootless runtime holds nothing there. Its
    children stay in the container's PID namespace, so it makes no other (rootless.py)."""
    if rootless:
        os.close(own_pid_namespace)
    else:
        join_fd(own_pid_namespace, "pid")


def enter_namespaces(namespaces):
    """The init's own namespaces from the spec ({type: None for new, or a path to join});
    a type missing from the spec stays the host's. Every path is opened before any is
    joined: after setns(2) into a mount namespace, /proc/<pid>/ns/* would be looked up in
    the joined tree (its /proc, its PID namespace), no longer the host's."""
    opened = [(kind, os.open(namespaces[kind], os.O_RDONLY | os.O_CLOEXEC))
              for kind in INIT_NAMESPACES if namespaces.get(kind) is not None]
    for kind, fd in opened:
        join_namespace(kind, namespaces[kind], fd)
    new = [CLONE_FLAGS[kind] for kind in INIT_NAMESPACES
           if kind in namespaces and namespaces[kind] is None]
    if new:
        unshare_namespaces("|".join(new))


@step("Enter new namespaces", syscall="unshare({clone_flags})", man="unshare(2), namespaces(7)")
def unshare_namespaces(clone_flags):
    flags = 0
    for name in clone_flags.split("|"):
        flags |= getattr(syscalls, name)
    syscalls.unshare(flags)


@step("Join an existing {kind} namespace", syscall='setns(open("{path}"), {kind})',
      man="setns(2)")
def join_namespace(kind, path, fd=None):
    """fd: `path` opened already (enter_namespaces). Joining a mount namespace also moves
    our root and working directory to that namespace's root (setns(2), "CLONE_NEWNS")."""
    join_fd(os.open(path, os.O_RDONLY | os.O_CLOEXEC) if fd is None else fd, kind)


def join_fd(fd, kind=None):
    """setns(2) into the namespace that `fd` (an open /proc/<pid>/ns/* file) refers to, then
    close fd. With a `kind` the kernel also checks the namespace is of that type (EINVAL if
    not); without, any type will do, as nsenter(1) does."""
    try:
        syscalls.setns(fd, getattr(syscalls, CLONE_FLAGS[kind]) if kind else 0)
    finally:
        os.close(fd)


@step("Enter a new cgroup namespace: the container's own cgroup now looks like /",
      syscall="unshare(CLONE_NEWCGROUP)", man="cgroup_namespaces(7)")
def enter_cgroup_namespace(path=None):
    # After the runtime has moved us into our cgroup: the namespace's root is fixed to
    # the cgroup we are in at the moment of unshare(2).
    if path is None:
        syscalls.unshare(syscalls.CLONE_NEWCGROUP)
    else:
        join_namespace("cgroup", path)


@step("Set the hostname inside the new UTS namespace", syscall='sethostname("{hostname}")',
      man="uts_namespaces(7), sethostname(2)")
def set_hostname(hostname):
    import _socket  # socket.py's own sethostname is this one (see container.py on _socket)
    _socket.sethostname(hostname)


# --userns: container uids 0..65535 are host uids 100000..165535 (the usual /etc/subuid range).
USERNS_HOST_BASE = 100000
USERNS_SIZE = 65536


@step("Enter a new user namespace (or join the one opened before pivot_root): root inside "
      "will be an unprivileged uid on the host",
      syscall="unshare(CLONE_NEWUSER) or setns(fd, CLONE_NEWUSER)", man="user_namespaces(7)")
def enter_user_namespace(joined_fd=None):
    # Entered last, after every mount, so that the mount, UTS, IPC and network namespaces
    # stay owned by the host's user namespace: root inside holds its capabilities only over
    # what the new user namespace owns, so it can no longer mount, set the hostname or change
    # the network at all. (runc enters it first instead and owns them all, which then needs
    # the image shifted to the mapped uids.) A namespace to join is opened by path before
    # pivot_root, while the host's /proc/<pid>/ns/user is still in reach.
    if joined_fd is None:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    else:
        join_fd(joined_fd, "user")


@step("Map the container's uids and gids to host ids: {uid_mappings} and {gid_mappings} "
      "(container id, host id, how many)",
      syscall='[write("/proc/{pid}/setgroups", "deny")]; write("/proc/{pid}/uid_map", lines); '
              'write("/proc/{pid}/gid_map", lines)',
      man="user_namespaces(7) 'User and group ID mappings'")
def write_id_maps(pid, uid_mappings, gid_mappings, deny_setgroups=False):
    """`pid`: a process in the new user namespace, or "self" (rootless.py maps its own)."""
    # Mapping ids other than one's own needs CAP_SETUID in the parent user namespace, which
    # the container's init no longer has: the runtime writes them. Each file takes one
    # write(2) with every line, and only one ever. /proc/<pid>/setgroups stays "allow", as
    # runc leaves it for a runtime with root: "deny" is for a mapping written without
    # CAP_SETGID (rootless), where a process could otherwise drop a group that denies it
    # access (CVE-2014-8989); the kernel then refuses gid_map until setgroups says "deny".
    files = [("setgroups", "deny")] if deny_setgroups else []
    for name, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        files.append((name, "".join(f"{inside} {outside} {size}\n"
                                    for inside, outside, size in mappings)))
    for name, text in files:
        control = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(control, text.encode())
        finally:
            os.close(control)


def host_id_of_root(pid, name):
    """The host uid (name="uid_map") or gid ("gid_map") that id 0 of the user namespace of
    `pid` is, or None if 0 is not mapped. Read from the host, /proc/<pid>/uid_map shows
    lines of `inside outside count` with outside in our own namespace (user_namespaces(7))."""
    with open(f"/proc/{pid}/{name}") as id_map:
        for line in id_map:
            inside, outside, size = map(int, line.split())
            if inside == 0 and size > 0:
                return outside
    return None


@step("Become root of the new user namespace: no groups, gid 0, uid 0",
      syscall="setgroups(0, NULL); setresgid(0, 0, 0); setresuid(0, 0, 0)",
      man="user_namespaces(7), setresuid(2)")
def become_namespace_root():
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def check_unprivileged_user_namespaces(sysctl="/proc/sys"):
    """Why a non-root user cannot create a user namespace here, or None if nothing says no."""
    def read(name):
        try:
            with open(os.path.join(sysctl, name)) as value:
                return value.read().strip()
        except OSError:
            return None
    if read("kernel/unprivileged_userns_clone") == "0":
        return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
    if read("user/max_user_namespaces") == "0":
        return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
    if read("kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces (Ubuntu 24.04: sysctl "
                "kernel.apparmor_restrict_unprivileged_userns=1, or an AppArmor profile with "
                "'userns,' for this program)")
    return None
