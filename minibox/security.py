"""Security: what the container's PID 1 gives up just before it execs the command.

Namespaces decide what a process can *see*; this module decides what it may still *do* with
what it sees. Root in a container is the host's root (unless --userns maps it away), so without
these steps `mount`, `reboot`, `init_module` or `open_by_handle_at` act on the real kernel.
Four independent locks, each stopping a different escape (examples/escapes/ shows each one):

1. capabilities(7): root's power is split into ~41 capabilities. We keep Docker's default 14
   in every set (bounding, permitted, effective, inheritable) and clear the ambient set; an
   OCI config names each of the five sets itself. prctl(2) PR_CAPBSET_DROP, capset(2) --
   through python-prctl -- and PR_CAP_AMBIENT.
2. --user UID[:GID]: setgroups(2), setgid(2), setuid(2). Leaving uid 0 clears the permitted and
   effective sets (capabilities(7), "Effect of user ID changes on capabilities").
3. no_new_privs: prctl(2) PR_SET_NO_NEW_PRIVS. After it, execve(2) never grants privileges:
   setuid-root binaries and file capabilities are ignored. Inherited by every child; irreversible.
4. seccomp(2): a classic BPF program the kernel runs on every system call, returning EPERM for
   the calls a container has no business making (mount, reboot, kexec_load, bpf, io_uring...),
   or the one config.json's linux.seccomp describes: seccomp.py writes and installs both.

Device nodes have two more locks, set up outside this module. A node is just (type, major,
minor): with CAP_MKNOD (in Docker's 14) `mknod disk b 254 0` names the host's disk.
- nodev: `run` mounts everything the container can write nodev (docker.docker_mounts), so
  open(2) of a node made there fails with EACCES. devpts is the exception, and its nodes are
  only the ptys the kernel made.
- the device rules (cgroups/devices.py): runc's whitelist in the container's cgroup -- v1's
  devices controller, or on v2 an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE, written by
  cgroups/devicefilter.py, attached with bpf(2)) -- so even on a mount without nodev (an OCI
  bundle may ask for one) open(2) of anything but null, zero, full, random, urandom, tty, the
  ptys and tun fails with EPERM. --privileged lifts both, as in Docker.

Order matters, and follows runc's libcontainer/init_linux.go: seccomp is installed first, while
we still hold CAP_SYS_ADMIN, because without no_new_privs only CAP_SYS_ADMIN may install a filter
(--security-opt no-new-privileges=false must still get seccomp). Then the bounding set is cut,
the user switched (still needing CAP_SETUID/CAP_SETGID), the remaining sets set, and last
no_new_privs. The filter allows every call these steps and execve(2) make.
"""
import os

import prctl

from . import seccomp, syscalls
from .errors import MiniboxError
from .explain import step

# capabilities(7): name -> bit number, from <linux/capability.h>. These numbers are kernel ABI
# and never change; new capabilities only get appended (CHECKPOINT_RESTORE, 40, is Linux 5.9).
CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# Docker's default set (moby oci/caps/defaults.go). Notably absent: SYS_ADMIN (mount, most
# namespace and device ioctls), SYS_MODULE, SYS_RAWIO (/proc/kcore, /dev/mem), SYS_PTRACE,
# SYS_BOOT, SYS_TIME, NET_ADMIN and DAC_READ_SEARCH -- the one the 2014 "shocker" exploit used
# to walk the host's filesystem through open_by_handle_at(2).
DOCKER_DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP",
})


def capability_name(text):
    """'net_admin' or 'CAP_NET_ADMIN' -> 'NET_ADMIN'; ValueError for a name the kernel lacks."""
    name = text.strip().upper()
    name = name[4:] if name.startswith("CAP_") else name
    if name != "ALL" and name not in CAPABILITIES:
        raise ValueError(f"unknown capability {text!r} (names are listed in capabilities(7), "
                         "e.g. NET_ADMIN or CAP_NET_ADMIN; ALL means every one)")
    return name


def held_capabilities():
    """The capabilities this process could ever hold: its bounding set (CapBnd)."""
    return frozenset(name for name, bit in CAPABILITIES.items() if prctl.capbset_read(bit))


def resolve_capabilities(cap_add=(), cap_drop=(), privileged=False, available=None):
    """The set of capability names the container keeps, with Docker's rules.

    --privileged keeps everything; --cap-add ALL keeps everything but --cap-drop; --cap-drop ALL
    keeps only --cap-add; otherwise (default - drop) + add, so adding and dropping the same
    capability keeps it (moby's TweakCapabilities). `available` is what the runtime itself holds
    (its bounding set): a capability outside it cannot be granted, so asking for it by name is
    an error, while ALL and --privileged quietly mean "all we have".
    """
    available = held_capabilities() if available is None else frozenset(available)
    add = {capability_name(c) for c in cap_add}
    drop = {capability_name(c) for c in cap_drop}
    if privileged or "ALL" in add:
        keep = set(available) if privileged else available - drop
    elif "ALL" in drop:
        keep = add
    else:
        keep = (DOCKER_DEFAULT_CAPABILITIES - drop) | add
    missing = sorted(add - {"ALL"} - available)
    if missing:
        raise ValueError(f"cannot add {', '.join(missing)}: minibox itself does not hold "
                         "it (not in its bounding set, CapBnd in /proc/self/status)")
    return frozenset(keep & available)


def capability_mask(names):
    """The bit mask /proc/<pid>/status shows (CapEff: 00000000a80425fb) for a set of names."""
    return sum(1 << CAPABILITIES[name] for name in names)


@step("Cut the capability bounding set down to the kept capabilities",
      syscall="prctl(PR_CAPBSET_DROP, cap) for each capability not kept",
      man="capabilities(7), prctl(2)")
def drop_bounding_set(keep):
    """Cut the bounding set down to `keep`: the ceiling for every later execve(2).

    For root, execve treats every file as if it had all file capabilities, so the new permitted
    set is exactly the bounding set: this is the step that really limits a root container.
    prctl(2) PR_CAPBSET_DROP, needs CAP_SETPCAP.
    """
    for name, bit in CAPABILITIES.items():
        if name not in keep and prctl.capbset_read(bit):
            prctl.capbset_drop(bit)


@step("Set the permitted, effective and inheritable capabilities, then the ambient set",
      syscall="capset(2) with the kept capabilities; "
              "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), then PR_CAP_AMBIENT_RAISE each",
      man="capabilities(7), capset(2)")
def set_capabilities(permitted, effective=None, inheritable=None, ambient=()):
    """Set the permitted set, the effective and inheritable sets (default: the same names)
    and the ambient set, the one set that survives an execve of an ordinary binary by a
    non-root user.

    capset(2) (python-prctl's set_caps) for the three classic sets; prctl(2) PR_CAP_AMBIENT
    (which python-prctl lacks) for the ambient set.
    """
    sets = {prctl.CAP_PERMITTED: permitted,
            prctl.CAP_EFFECTIVE: permitted if effective is None else effective,
            prctl.CAP_INHERITABLE: permitted if inheritable is None else inheritable}
    changes = []  # one capset(2): python-prctl reads the sets, edits them, writes them once
    for kind, names in sets.items():
        bits = {CAPABILITIES[name] for name in names}
        changes.append((sorted(bits), [kind], True))
        changes.append((sorted(set(CAPABILITIES.values()) - bits), [kind], False))
    prctl.set_caps(*changes)
    syscalls.clear_ambient_capabilities()
    for name in sorted(ambient):
        try:
            syscalls.raise_ambient_capability(CAPABILITIES[name])
        except OSError:
            # EPERM: the kernel raises only what is both permitted and inheritable, and
            # `runc spec`'s own default lists ambient capabilities without inheritable ones
            # (dropped there for CVE-2022-29162). runc and crun both go on without it.
            pass


@step("Become the --user: drop supplementary groups, then gid, then uid",
      syscall="setgroups(0, NULL); setgid({gid}); setuid({uid})",
      man="setgroups(2), setuid(2), capabilities(7)")
def switch_user(uid, gid, groups=(), keep_capabilities=False):
    """Become uid:gid with only the given supplementary groups (OCI additionalGids):
    setgroups(2), setgid(2), setuid(2).

    Groups and gid first: after setuid to a non-zero uid we no longer hold CAP_SETGID. Leaving
    uid 0 also empties the permitted and effective sets (the kernel's "setuid fixup"), so a
    --user container runs with no effective capabilities, like Docker -- unless
    `keep_capabilities` (an OCI config that lists capabilities for a non-root user, as runc
    reads it): prctl(2) PR_SET_KEEPCAPS keeps the permitted set across setuid, and the
    kernel clears the flag again at execve(2).
    """
    os.setgroups(list(groups))
    os.setgid(gid)
    if keep_capabilities:
        prctl.set_keepcaps(True)
    os.setuid(uid)


@step("Forbid execve(2) from ever granting privileges again (setuid bits, file caps)",
      syscall="prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)", man="prctl(2)")
def set_no_new_privs():
    """prctl(2) PR_SET_NO_NEW_PRIVS: execve(2) can no longer raise privileges (setuid bits and
    file capabilities are ignored). Inherited by all children; cannot be unset."""
    prctl.set_no_new_privs(1)


class SecurityProfile:
    """What the container keeps: Docker's defaults unless the CLI said otherwise.

    A plain class: importing dataclasses costs ~7 ms, a third of a container start.
    """

    def __init__(self, capabilities=DOCKER_DEFAULT_CAPABILITIES, no_new_privileges=True,
                 seccomp=True, seccomp_rules=None, capability_sets=None):
        self.capabilities = frozenset(capabilities)  # the bounding set
        # OCI process.capabilities, {"effective": [names], ...} for permitted, effective,
        # inheritable and ambient, each applied as given for any user, as runc does. None
        # (Docker's way): `capabilities` in all but ambient for root, none for another user.
        self.capability_sets = capability_sets
        self.no_new_privileges = no_new_privileges
        self.seccomp = seccomp
        # config.json's linux.seccomp (seccomp.from_config's dict) in place of the built-in filter
        self.seccomp_rules = seccomp_rules


def resolve_user(text, etc="/etc"):
    """'1000', '1000:1000', 'nobody', 'nobody:nogroup' -> (uid, gid).

    Names are looked up in the container's /etc/passwd and /etc/group -- called after
    pivot_root, so these are the image's files, never the host's. A bare uid takes its
    passwd entry's group, else gid 0 (docker run does the same).
    """
    user, _, group = text.partition(":")
    entry = find_entry(os.path.join(etc, "passwd"), user)
    if entry is None and not user.isdigit():
        raise MiniboxError(f"unable to find user {user}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(user)
    if not group:
        return uid, int(entry[3]) if entry else 0
    if group.isdigit():
        return uid, int(group)
    group_entry = find_entry(os.path.join(etc, "group"), group)
    if group_entry is None:
        raise MiniboxError(f"unable to find group {group}: no matching entries in group file")
    return uid, int(group_entry[2])


def find_entry(path, name_or_id):
    """The colon-separated line of passwd(5)/group(5) whose name (or id) matches."""
    try:
        with open(path) as database:
            for line in database:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 3 and name_or_id in (fields[0], fields[2]):
                    return fields
    except OSError:
        pass  # no such database (or unreadable): no entry
    return None


def confine(profile, user=None, groups=()):
    """The container init's last steps before execve(2), in runc's order (module docstring)."""
    uid, gid = resolve_user(user) if user else (0, 0)
    if profile.seccomp_rules is not None:
        seccomp.install(profile.seccomp_rules)
    elif profile.seccomp:
        seccomp.install_filter()
    drop_bounding_set(profile.capabilities)
    sets = profile.capability_sets
    if (uid, gid) != (0, 0) or groups:
        switch_user(uid, gid, groups, keep_capabilities=sets is not None)
    if sets is not None:
        set_capabilities(sets["permitted"], sets["effective"], sets["inheritable"],
                         sets["ambient"])
    else:
        # A non-root user keeps nothing: its permitted set is already empty after setuid, and
        # a non-empty inheritable set would let it gain capabilities by executing a binary
        # with inheritable file capabilities (CVE-2022-24769, which made Docker empty it).
        set_capabilities(profile.capabilities if uid == 0 else frozenset())
    if profile.no_new_privileges:
        set_no_new_privs()
