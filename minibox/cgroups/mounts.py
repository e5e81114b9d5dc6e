"""Where a process's cgroups are: the one reader of proc(5)'s mountinfo and /proc/<pid>/cgroup
(mount_table serves `inspect`'s list of a container's mounts too).

/proc/<pid>/cgroup has a line per hierarchy, "hierarchy-ID:controller,list:/path" ("0::/path"
for v2), the path relative to that hierarchy's root (cgroups(7)). Which directory that is on
this host comes from /proc/self/mountinfo, a line per mount (proc(5)):

    35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
    id parent  root        mount point           options      type  source super options

Field 4, the root, is the directory of the filesystem mounted there: "/" for a whole
hierarchy, but a host that is itself a container may see only a sub-tree, and then the cgroup
/docker/abc/x is the directory <mount point>/x. Paths escape a space, tab, newline and
backslash as octal ("\\040"). opencontainers/cgroups (runc's) reads both files the same way.
"""
from collections import namedtuple

# controllers: frozenset of the super options naming controllers ("memory", "name=systemd"),
# empty for cgroup2; root and mount point unescaped.
CgroupMount = namedtuple("CgroupMount", "controllers root mountpoint")
# controllers as /proc/<pid>/cgroup writes them ("cpu,cpuacct"; "" for v2); the mount point
# of the hierarchy; directory: the cgroup's directory on this host.
CgroupDirectory = namedtuple("CgroupDirectory", "controllers mountpoint directory")


# One line of mountinfo: root and mount point unescaped; options are the mount's own (rw,
# nosuid...), super_options the filesystem's (for cgroup v1: the controllers).
Mount = namedtuple("Mount", "root mountpoint options fstype source super_options")


def mount_table(mountinfo="/proc/self/mountinfo"):
    """Every mount in a mountinfo file, in its order (the optional fields before " - " vary
    in number, so the line is split there first)."""
    table = []
    with open(mountinfo) as lines:
        for line in lines:
            mount, _, filesystem = line.partition(" - ")
            fields = mount.split()
            fstype, source, super_options = filesystem.split()[:3]
            table.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fields[5], fstype,
                               _unescape(source), super_options))
    return table


def cgroup_mounts(mountinfo="/proc/self/mountinfo"):
    """Every cgroup and cgroup2 mount, in mountinfo's order."""
    found = []
    for mount in mount_table(mountinfo):
        if mount.fstype == "cgroup":
            controllers = frozenset(mount.super_options.split(",")) - {"rw", "ro"}
        elif mount.fstype == "cgroup2":
            controllers = frozenset()
        else:
            continue
        found.append(CgroupMount(controllers, mount.root, mount.mountpoint))
    return found


def memberships(cgroup_file="/proc/self/cgroup"):
    """(controllers, path) per hierarchy, from a /proc/<pid>/cgroup file."""
    with open(cgroup_file) as lines:
        return [tuple(line.rstrip("\n").split(":", 2)[1:]) for line in lines]


def relative_path(mount, path):
    """Where cgroup `path` is below `mount`'s mount point ("" at it), or None when the mount
    shows another sub-tree of the hierarchy."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return path[len(root):].strip("/")


def find_mount(mounts, controllers):
    """The mount of the hierarchy with these controllers ("" for cgroup2), or None."""
    wanted = frozenset(controllers.split(",")) if controllers else frozenset()
    for mount in mounts:
        if (wanted <= mount.controllers) if wanted else not mount.controllers:
            return mount
    return None


def cgroup_directories(pid="self", mountinfo="/proc/self/mountinfo", cgroup_file=None):
    """The directories of the cgroups process `pid` is in, one per hierarchy mounted here."""
    mounts = cgroup_mounts(mountinfo)
    found = []
    for controllers, path in memberships(cgroup_file or f"/proc/{pid}/cgroup"):
        mount = find_mount(mounts, controllers)
        relative = None if mount is None else relative_path(mount, path)
        if relative is not None:
            directory = f"{mount.mountpoint}/{relative}" if relative else mount.mountpoint
            found.append(CgroupDirectory(controllers, mount.mountpoint, directory))
    return found


def _unescape(field):
    """mountinfo's octal escapes: "\\040" is a space (the kernel's show_path/mangle)."""
    if "\\" not in field:
        return field
    first, *rest = field.split("\\")
    return first + "".join(chr(int(part[:3], 8)) + part[3:] for part in rest)
