"""Rootless mode: a user without root runs containers, in a user namespace of its own.

Making a namespace needs CAP_SYS_ADMIN -- except a user namespace (user_namespaces(7)): on
most kernels any user may create one, and inside it the creator holds every capability, but
only over what the new namespace owns: the namespaces created while in it, and files whose
owner is mapped into it. So a user U (group G) can build a container the way root does, once
it has made a user namespace first, as rootless podman and runc do:

    unshare(CLONE_NEWUSER)                    U is "nobody" (65534) in a namespace of its own
    write("/proc/self/setgroups", "deny")     before an unprivileged gid_map (see below)
    write("/proc/self/uid_map", "0 U 1")      one line: container root is U, no other uid
    write("/proc/self/gid_map", "0 G 1")
    ... then as with root: unshare PID, mount, UTS, IPC, network and cgroup namespaces

A user may map only itself, and only in one line: any other host uid would be one it does
not own. (More uids need a setuid helper, newuidmap(1), reading /etc/subuid: not used here.)
"setgroups deny" comes first: root of its own namespace could otherwise drop its
supplementary groups with setgroups(2), and so read a file whose mode (say 0705) shuts out
one of those groups (CVE-2014-8989; since Linux 3.19 the kernel insists).

Why the *runtime* enters the user namespace, not just the container's init: the runtime
makes the PID namespace (namespaces.new_pid_namespace_for_children: its next child is PID 1
there), and unshare(CLONE_NEWPID) needs CAP_SYS_ADMIN in the user namespace the caller is
in -- which U has only inside one of its own. (runc instead lets an intermediate child enter
it, make the PID namespace and fork the init, then exit, with the runtime a subreaper to
adopt the init: one more process and a handshake, for what one unshare(2) does here.)

What that costs -- the runtime stays in the user namespace for the rest of its life:
- It can never return its children to the host's PID namespace: setns(2) into it needs
  CAP_SYS_ADMIN in the host's user namespace, which owns it. So a runtime makes one PID
  namespace for one init, and no second one -- unshare(CLONE_NEWPID) fails with EINVAL while
  the children's PID namespace differs from the caller's own: no --restart.
- On the host it still is only U: no cgroup, even where one is delegated to U
  (_refuse_cgroup_limits), no bridge or veth (network.check_rootless), no uid but its own.
- One uid inside: files owned by anyone else (the host's, in a volume) show up as nobody,
  --user has no other uid to become, and the caller's supplementary groups stay (shown as
  nogroup): setgroups(2) is denied.

What stays the same: capabilities, no_new_privs and seccomp (security.confine) are applied as
with root, and still matter: root of the user namespace holds nothing over the host, but it
owns the container's mount, UTS and network namespaces, and with CAP_SYS_ADMIN could mount
a fresh /proc over the masked one. `minibox exec` joins the container's user namespace
first (enter.py): the other namespaces are its.

Where a user's containers and images live: state in $XDG_RUNTIME_DIR/minibox (else
/tmp/minibox-<uid>), images in $XDG_DATA_HOME/minibox (~/.local/share/minibox);
MINIBOX_ROOT and MINIBOX_STORE override both, as with root.
"""
import os

from .errors import MiniboxError
from .explain import step

# Decided once, when the process starts: inside the user namespace geteuid() says 0.
ENABLED = os.geteuid() != 0

# What a user without root may run. The rest needs the host's root: OCI create (hooks,
# arbitrary namespaces), image import (layers of many owners), commit/export, stats and
# networks (cgroups and bridges).
COMMANDS = ("run", "exec", "ps", "rm", "stop", "kill", "logs", "inspect", "gc", "images",
            "image build", "rmi")
NO_CGROUP_LIMITS = ("cgroup limits in rootless mode need a delegated cgroup v2 subtree "
                    "(systemd user session)")


def check_caller(command):
    """The CLI's gate before each command: root may do anything; any other user only what
    rootless mode covers, and `run` only where the host lets it make a user namespace."""
    if not ENABLED:
        return
    if command not in COMMANDS:
        raise MiniboxError(f"`minibox {command}` must be run as root (try sudo); without "
                           f"root minibox can: {', '.join(COMMANDS)}")
    if command == "run":
        from . import namespaces
        reason = namespaces.check_unprivileged_user_namespaces()
        if reason:
            raise MiniboxError(f"rootless mode needs a user namespace, but {reason}")


def state_root():
    """Where a user's containers live: per user, private, gone at logout like /run."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "minibox")
    return f"/tmp/minibox-{os.getuid()}"


def image_store():
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".local/share")
    return os.path.join(data_home, "minibox")


def make_private_directory(path):
    """mkdir 0700, and refuse one somebody else made: /tmp/minibox-<uid> is a name anyone
    can take first, as a directory or as a symlink to a place of their choosing."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.geteuid():
        raise MiniboxError(f"refusing to keep containers in {path}: it is not a directory of "
                           "yours (remove it, or set XDG_RUNTIME_DIR or MINIBOX_ROOT)")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)


def check_spec(spec):
    """Refuse, in one line each, what a container cannot have without root. Called before
    anything is made."""
    if spec.userns:
        raise MiniboxError(
            f"--userns maps container root to host uids {_userns_range()}, and only root may "
            f"map uids other than its own; without root every container already runs in a "
            f"user namespace whose root is you (uid {os.geteuid()}): leave out --userns")
    if spec.limits.controllers() or spec.cgroup_parent:
        _refuse_cgroup_limits()
    if spec.restart.name != "no":
        raise MiniboxError("--restart needs root: a rootless runtime makes one PID namespace "
                           "and cannot make a fresh one for a restart (see minibox/rootless.py)")
    user, _, group = (spec.user or "0").partition(":")
    if user not in ("0", "root") or group not in ("", "0", "root") or spec.additional_gids:
        raise MiniboxError(f"user {spec.user!r}: in rootless mode the container has one uid, "
                           f"root, which is you (uid {os.geteuid()}); other uids would need "
                           "/etc/subuid and the setuid helper newuidmap, which minibox does "
                           "not use")


def _refuse_cgroup_limits():
    """A user may only make cgroups where one is delegated to it: with systemd, cgroup v2 and
    Delegate=yes, the user@<uid>.service subtree. minibox does not use even that yet: on
    cgroup v2 only leaves may hold processes, so it would first have to move itself out of
    its own cgroup into a leaf of its own (crun does), or ask systemd for a scope over D-Bus
    (podman does). The error says whether such a subtree is there."""
    delegated = delegated_cgroup()
    if delegated is None:
        raise MiniboxError(NO_CGROUP_LIMITS)
    raise MiniboxError(f"cgroup limits in rootless mode: your cgroup {delegated} is delegated "
                       "to you, but minibox does not place containers in a delegated subtree "
                       "yet (see minibox/rootless.py)")


def delegated_cgroup(own_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """The caller's own cgroup v2 directory if it may make cgroups there, else None. v1
    hierarchies (this host's, a hybrid) are never delegated to users."""
    if not os.path.exists(os.path.join(root, "cgroup.controllers")):
        return None
    with open(own_cgroup) as lines:
        path = next((line[3:].strip() for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    directory = os.path.join(root, path.lstrip("/"))
    writable = all(os.access(os.path.join(directory, name), os.W_OK)
                   for name in ("", "cgroup.procs", "cgroup.subtree_control"))
    return directory if writable else None


def _userns_range():
    from .namespaces import USERNS_HOST_BASE, USERNS_SIZE
    return f"{USERNS_HOST_BASE}-{USERNS_HOST_BASE + USERNS_SIZE - 1}"


@step("Enter a user namespace of our own: container root will be us, uid {uid}",
      syscall="unshare(CLONE_NEWUSER)", man="user_namespaces(7)")
def enter_user_namespace(uid, gid):
    """The runtime's first step without root (module docstring). Once per process: a
    restarted or second container would need a second PID namespace anyway."""
    from . import namespaces, syscalls  # here: `ps` or `rm` without root need neither
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    except OSError as error:
        reason = namespaces.check_unprivileged_user_namespaces() or error.strerror
        raise MiniboxError(f"rootless mode needs a user namespace, but {reason}") from None
    namespaces.write_id_maps("self", [(0, uid, 1)], [(0, gid, 1)], deny_setgroups=True)

