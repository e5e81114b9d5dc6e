"""The device rules: which device nodes a container may open(2) or mknod(2).

A device node is only a name for (type, major, minor). Whoever can make one -- CAP_MKNOD is
in Docker's default set -- on a filesystem mounted without nodev reaches any driver of the
host: `mknod disk b 254 0` is the host's whole disk. On each open(2) and mknod(2) of a node
the kernel asks the container's devices cgroup (devcgroup_inode_permission and
devcgroup_inode_mknod, security/device_cgroup.c) and refuses with EPERM what its rules do not
allow. minibox's own `run` mounts everything nodev; these rules are the second line, for the
mounts an OCI bundle asks for without it.

A rule is (allow, line), the line in cgroup v1's grammar "TYPE MAJOR:MINOR ACCESS"
(Documentation/admin-guide/cgroup-v1/devices.rst): type b (block), c (char) or a (all), a
number or * for any major or minor, access r(ead), w(rite), m(knod). v1 writes allowing lines
to devices.allow, the others to devices.deny; the line "a" changes the default instead:
devices.deny "a" means nothing is allowed but the exceptions that follow (v1.py). cgroup v2
has no such files: devicefilter.py turns the same rules into an eBPF program (v2.py).
"""

# Deny everything first: rules added after it are a whitelist, as runc's are.
DENY_ALL = (False, "a")

# runc's AllowedDevices (libcontainer/specconv/spec_linux.go), which runc appends to every
# container's rules and so Docker's containers get: mknod(2) of any node (an image may ship
# some), but open(2) only of null, zero, full, random, urandom, the controlling tty, the ptys
# (/dev/ptmx and /dev/pts/N, major 136) and /dev/net/tun. runc 1.2.0 dropped tun as a mistake
# of Docker's early days; 1.2.4 put it back because VPN containers broke (runc#4555).
ALLOWED_DEVICES = (
    (True, "c *:* m"), (True, "b *:* m"),
    (True, "c 1:3 rwm"), (True, "c 1:8 rwm"), (True, "c 1:7 rwm"), (True, "c 5:0 rwm"),
    (True, "c 1:5 rwm"), (True, "c 1:9 rwm"), (True, "c 136:* rwm"), (True, "c 5:2 rwm"),
    (True, "c 10:200 rwm"),
)


def container_rules(requested=()):
    """A container's rules, in runc's order: deny all, the `requested` ones (an OCI bundle's
    linux.resources.devices), then ALLOWED_DEVICES. Docker's --privileged asks for "a"
    (allow everything), which lifts all of them."""
    return [DENY_ALL, *requested, *ALLOWED_DEVICES]


def rule(allow, kind="a", major=None, minor=None, access="rwm"):
    """One OCI linux.resources.devices entry as (allow, v1 line); None is any major/minor.

    The kernel reads type a as "every device, every access" whatever follows it, so its line
    is just "a"."""
    if kind == "a":
        return (allow, "a")
    number = "*" if major is None else major
    return (allow, f"{kind} {number}:{'*' if minor is None else minor} {access}")
