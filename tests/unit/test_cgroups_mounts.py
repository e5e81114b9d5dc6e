"""The one reader of mountinfo and /proc/<pid>/cgroup (cgroups/mounts.py), against fake files:
`exec` joins the container's cgroups, and `type: cgroup` mounts bind them, by these paths."""
from minibox.cgroups import cgroup_directories
from minibox.cgroups.mounts import CgroupDirectory, mount_table

# A host that is itself in a container: each hierarchy is mounted from a sub-tree (field 4),
# and one mount point has a space in it, which mountinfo writes as \040.
MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 31 0:29 /docker/abc /sys/fs/cgroup/cpu\\040and\\040acct rw,relatime - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

CGROUP = """\
6:pids:/minibox/c1
4:memory:/docker/abc/minibox/c1
2:cpu,cpuacct:/docker/abc
1:freezer:/elsewhere
0::/docker/abc/minibox/c1
"""


def test_directories_strip_the_mount_root_and_unescape_the_mount_point(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(CGROUP)
    assert cgroup_directories(mountinfo=str(tmp_path / "mountinfo"),
                              cgroup_file=str(tmp_path / "cgroup")) == [
        CgroupDirectory("pids", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/pids/minibox/c1"),
        CgroupDirectory("memory", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/minibox/c1"),
        CgroupDirectory("cpu,cpuacct", "/sys/fs/cgroup/cpu and acct",
                        "/sys/fs/cgroup/cpu and acct"),
        # freezer is not mounted here: no directory to join or bind
        CgroupDirectory("", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/minibox/c1"),
    ]


def test_a_cgroup_outside_the_mounted_sub_tree_has_no_directory(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text("4:memory:/other/c1\n4:memory:/docker/abcd\n")
    assert cgroup_directories(mountinfo=str(tmp_path / "mountinfo"),
                              cgroup_file=str(tmp_path / "cgroup")) == []


def test_the_mount_table_reads_every_line_whatever_its_optional_fields(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw\n"
        "97 27 254:0 /srv/my\\040data /mnt/with\\040space rw,relatime master:1 shared:5 "
        "- ext4 /dev/vda rw,discard\n"
        "98 27 0:60 / /tmp rw - tmpfs tmpfs rw,size=65536k\n")
    proc, data, tmp = mount_table(str(mountinfo))
    assert (proc.mountpoint, proc.fstype, proc.options) == ("/proc", "proc",
                                                            "rw,nosuid,nodev,noexec,relatime")
    assert (data.root, data.mountpoint, data.source) == ("/srv/my data", "/mnt/with space",
                                                         "/dev/vda")
    assert (tmp.fstype, tmp.super_options) == ("tmpfs", "rw,size=65536k")
