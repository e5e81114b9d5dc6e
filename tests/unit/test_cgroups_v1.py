"""The v1 backend's bookkeeping against fake /proc files and a temporary hierarchy.

The real v1 hierarchies of this host are exercised in tests/integration/test_cgroups_backend.py.
"""
import os

import pytest

from minibox.cgroups import CgroupError, Limits, base, remove_cgroup_dirs
from minibox.cgroups.devices import container_rules
from minibox.cgroups.v1 import Hierarchy, V1Cgroup, inherit_cpus_and_mems, mounted_hierarchies

MOUNTINFO = """\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

OWN_CGROUPS = """\
9:name=systemd:/user.slice
7:blkio:/
6:freezer:/
4:memory:/process_api/34869c
2:cpu,cpuacct:/
0::/user.slice
"""


def test_hierarchies_come_from_mountinfo_and_proc_self_cgroup(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(OWN_CGROUPS)
    assert mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")) == {
        "cpu": Hierarchy("/sys/fs/cgroup/cpu,cpuacct", ""),
        "cpuacct": Hierarchy("/sys/fs/cgroup/cpu,cpuacct", ""),
        "memory": Hierarchy("/sys/fs/cgroup/memory", "process_api/34869c"),
        "freezer": Hierarchy("/sys/fs/cgroup/freezer", ""),
    }


def test_every_hierarchy_is_listed_for_an_oci_container_as_runc_joins_them(tmp_path):
    """blkio, name=systemd and a hybrid host's cgroup2 too: minibox's own come first (pids()
    reads the first directory's cgroup.procs), then the rest as /proc/self/cgroup lists them."""
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(OWN_CGROUPS)
    every = mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup"), every=True)
    assert list(every.items()) == [
        ("memory", Hierarchy("/sys/fs/cgroup/memory", "process_api/34869c")),
        ("cpu", Hierarchy("/sys/fs/cgroup/cpu,cpuacct", "")),
        ("cpuacct", Hierarchy("/sys/fs/cgroup/cpu,cpuacct", "")),
        ("freezer", Hierarchy("/sys/fs/cgroup/freezer", "")),
        ("name=systemd", Hierarchy("/sys/fs/cgroup/systemd", "user.slice")),
        ("blkio", Hierarchy("/sys/fs/cgroup/blkio", "")),
        ("", Hierarchy("/sys/fs/cgroup/unified", "user.slice")),
    ]


def test_a_cgroup_in_every_hierarchy_is_at_the_cgroups_path_in_each(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(OWN_CGROUPS)
    every = mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup"), every=True)
    assert V1Cgroup("abc", hierarchies=every, path="/pod/abc").paths() == [
        f"/sys/fs/cgroup/{name}/pod/abc"
        for name in ("memory", "cpu,cpuacct", "freezer", "systemd", "blkio", "unified")]


def test_a_subtree_mount_strips_its_root(tmp_path):
    (tmp_path / "mountinfo").write_text(
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n")
    (tmp_path / "cgroup").write_text("4:memory:/docker/abc/inner\n")
    assert mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")) == {
        "memory": Hierarchy("/sys/fs/cgroup/memory", "inner"),
    }


@pytest.fixture
def hierarchies(tmp_path):
    """memory (with the runtime in a sub-cgroup), cpu+cpuacct co-mounted, pids, freezer."""
    for name in ("memory/process_api/34869c", "cpu,cpuacct", "pids", "freezer"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    return {
        "memory": Hierarchy(str(tmp_path / "memory"), "process_api/34869c"),
        "cpu": Hierarchy(str(tmp_path / "cpu,cpuacct"), ""),
        "cpuacct": Hierarchy(str(tmp_path / "cpu,cpuacct"), ""),
        "pids": Hierarchy(str(tmp_path / "pids"), ""),
        "freezer": Hierarchy(str(tmp_path / "freezer"), ""),
    }


def test_each_hierarchy_gets_one_directory_under_the_runtimes_own_cgroup(hierarchies, tmp_path):
    assert V1Cgroup("abc123", hierarchies=hierarchies).paths() == [
        f"{tmp_path}/memory/process_api/34869c/minibox/abc123",
        f"{tmp_path}/cpu,cpuacct/minibox/abc123",
        f"{tmp_path}/pids/minibox/abc123",
        f"{tmp_path}/freezer/minibox/abc123",
    ]


def test_cgroup_parent_starts_at_each_hierarchys_root(hierarchies, tmp_path):
    cgroup = V1Cgroup("abc123", parent="ci/jobs", hierarchies=hierarchies)
    assert cgroup.paths()[0] == f"{tmp_path}/memory/ci/jobs/abc123"


def test_create_writes_the_v1_files(hierarchies, tmp_path):
    limits = Limits(memory=64 << 20, memory_swap=128 << 20, cpus=0.5, cpu_shares=512, pids=32)
    V1Cgroup("abc123", hierarchies=hierarchies).create(limits)
    memory = tmp_path / "memory/process_api/34869c/minibox/abc123"
    cpu = tmp_path / "cpu,cpuacct/minibox/abc123"
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(128 << 20)  # memory + swap
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.shares").read_text() == "512"
    assert (tmp_path / "pids/minibox/abc123/pids.max").read_text() == "32"
    assert os.listdir(tmp_path / "freezer/minibox/abc123") == []


def test_a_missing_controller_is_named_and_nothing_is_created(hierarchies, tmp_path):
    del hierarchies["pids"], hierarchies["cpu"]
    with pytest.raises(CgroupError) as error:
        V1Cgroup("abc123", hierarchies=hierarchies).create(Limits(cpus=1.0, pids=20))
    assert str(error.value) == (
        "this host lacks the cgroup v1 controller 'cpu' (for --cpus/--cpu-shares),"
        " 'pids' (for --pids-limit)"
    )
    assert not (tmp_path / "freezer" / "minibox").exists()


def test_device_rules_need_the_devices_controller(hierarchies, tmp_path):
    with pytest.raises(CgroupError) as error:
        V1Cgroup("abc123", hierarchies=hierarchies).create(Limits(devices=container_rules()))
    assert str(error.value) == ("this host lacks the cgroup v1 controller 'devices' (for the "
                                "device rules, which only --privileged lifts)")
    assert not (tmp_path / "freezer" / "minibox").exists()


def test_device_rules_go_to_devices_deny_and_devices_allow_in_order(hierarchies, tmp_path):
    hierarchies["devices"] = Hierarchy(str(tmp_path / "devices"), "")
    plan = V1Cgroup("abc123", hierarchies=hierarchies).plan(
        Limits(devices=[(False, "a"), (True, "c 1:3 rwm")]))
    devices = f"{tmp_path}/devices/minibox/abc123"
    assert plan[-2:] == [
        f"echo a > {devices}/devices.deny   (v2: a BPF_PROG_TYPE_CGROUP_DEVICE program)",
        f"echo c 1:3 rwm > {devices}/devices.allow   (v2: a BPF_PROG_TYPE_CGROUP_DEVICE program)",
    ]


def test_memory_swap_without_swap_accounting_is_refused_before_mkdir(hierarchies, tmp_path):
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").unlink()
    with pytest.raises(CgroupError, match=r"^--memory-swap needs swap accounting.*swapaccount=1\)$"):
        V1Cgroup("abc123", hierarchies=hierarchies).create(Limits(memory=64 << 20, memory_swap=-1))
    assert not (tmp_path / "freezer" / "minibox").exists()


def test_stats_and_oom_kills(hierarchies, tmp_path):
    cgroup = V1Cgroup("abc123", hierarchies=hierarchies)
    cgroup.create(Limits())
    memory = tmp_path / "memory/process_api/34869c/minibox/abc123"
    (memory / "memory.max_usage_in_bytes").write_text("1048576\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (tmp_path / "cpu,cpuacct/minibox/abc123/cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "pids/minibox/abc123/pids.peak").write_text("7\n")
    assert cgroup.stats().describe() == "peak memory 1 MiB, CPU time 2.50 s, max pids 7"
    assert cgroup.oom_kills() == 1


def test_freeze_writes_freezer_state(hierarchies, tmp_path):
    cgroup = V1Cgroup("abc123", hierarchies=hierarchies)
    cgroup.create(Limits())
    cgroup.freeze()  # a plain file reads back what was written, as a frozen cgroup does
    assert (tmp_path / "freezer/minibox/abc123/freezer.state").read_text() == "FROZEN"
    cgroup.thaw()
    assert (tmp_path / "freezer/minibox/abc123/freezer.state").read_text() == "THAWED"


def test_remove_cgroup_dirs_goes_deepest_first_and_skips_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    remove_cgroup_dirs([str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(tmp_path / "gone")])
    assert os.listdir(tmp_path) == []


def test_an_oci_cgroups_path_is_the_containers_directory(hierarchies, tmp_path):
    """linux.cgroupsPath as runc's fs driver reads it: absolute from each hierarchy's root,
    relative below the runtime's own cgroup; the directories above are not minibox's."""
    absolute = V1Cgroup("abc123", hierarchies=hierarchies, path="/libpod_parent/libpod-abc")
    assert absolute.paths()[:2] == [f"{tmp_path}/memory/libpod_parent/libpod-abc",
                                    f"{tmp_path}/cpu,cpuacct/libpod_parent/libpod-abc"]
    relative = V1Cgroup("abc123", hierarchies=hierarchies, path="pods/abc")
    assert relative.paths()[0] == f"{tmp_path}/memory/process_api/34869c/pods/abc"
    assert absolute.groups() == relative.groups() == []


def test_oci_reservation_swappiness_and_period_are_written(hierarchies, tmp_path):
    limits = Limits(memory_reservation=32 << 20, memory_swappiness=0, cpus=0.25,
                    cpu_period=200000)
    V1Cgroup("abc123", hierarchies=hierarchies).create(limits)
    memory = tmp_path / "memory/process_api/34869c/minibox/abc123"
    cpu = tmp_path / "cpu,cpuacct/minibox/abc123"
    assert (memory / "memory.soft_limit_in_bytes").read_text() == str(32 << 20)
    assert (memory / "memory.swappiness").read_text() == "0"
    assert (cpu / "cpu.cfs_period_us").read_text() == "200000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"


def test_cpuset_cgroups_get_their_parents_cpus_and_mems_down_to_the_container(tmp_path):
    """The kernel refuses a process in a cpuset cgroup without CPUs or memory nodes (ENOSPC):
    each level is filled from the one above where empty, as runc's cpusetEnsureParent."""
    (tmp_path / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset.mems").write_text("0\n")
    for level, cpus in (("pod", "1\n"), ("pod/abc", "\n")):
        (tmp_path / level).mkdir()
        (tmp_path / level / "cpuset.cpus").write_text(cpus)  # a cgroup of its own says "1"
        (tmp_path / level / "cpuset.mems").write_text("")
    inherit_cpus_and_mems(str(tmp_path), str(tmp_path / "pod/abc"))
    assert [(tmp_path / level / name).read_text().strip()
            for level in ("pod", "pod/abc") for name in ("cpuset.cpus", "cpuset.mems")] == [
        "1", "0", "1", "0"]


@pytest.fixture
def with_cpuset(hierarchies, tmp_path, monkeypatch):
    """A cpuset hierarchy offering CPUs 0-1 and memory node 0; a temporary directory has no
    control files, so the kernel's empty ones are made by a fake mkdir."""
    (tmp_path / "cpuset").mkdir()
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    hierarchies["cpuset"] = Hierarchy(str(tmp_path / "cpuset"), "")
    real_mkdir = os.mkdir

    def mkdir(path, *args):
        real_mkdir(path, *args)
        if str(path).startswith(str(tmp_path / "cpuset")):
            for name in ("cpuset.cpus", "cpuset.mems"):
                (tmp_path / path / name).write_text("")
    monkeypatch.setattr(os, "mkdir", mkdir)
    return hierarchies


def test_create_in_every_hierarchy_fills_the_cpuset(with_cpuset, tmp_path):
    """create() makes the cpuset directory and calls the copy on it."""
    V1Cgroup("abc123", hierarchies=with_cpuset, path="/pod/abc123").create(Limits())
    for level in ("pod", "pod/abc123"):
        assert (tmp_path / "cpuset" / level / "cpuset.cpus").read_text() == "0-1"
        assert (tmp_path / "cpuset" / level / "cpuset.mems").read_text() == "0"


BLOCK_AND_PAGES = Limits(blkio_weight=300, blkio_weight_devices=[[8, 0, 200]],
                         blkio_throttle={"read_bps": [[8, 0, 1 << 20]],
                                         "write_iops": [[8, 0, 100], [8, 16, 50]]},
                         hugepages={"2MB": 4 << 20})


@pytest.fixture
def blkio_and_hugetlb(hierarchies, tmp_path):
    """blkio and hugetlb hierarchies beside the others."""
    for name in ("blkio", "hugetlb"):
        (tmp_path / name).mkdir()
        hierarchies[name] = Hierarchy(str(tmp_path / name), "")
    return hierarchies


def fake_kernel_files(monkeypatch, tmp_path):
    """mkdir that also makes the files a kernel with BFQ loaded and 2 MB pages would."""
    real_mkdir = os.mkdir

    def mkdir(path, *args):
        real_mkdir(path, *args)
        names = {"blkio": ["blkio.bfq.weight", "blkio.bfq.weight_device",
                           "blkio.throttle.read_bps_device", "blkio.throttle.write_iops_device"],
                 "hugetlb": ["hugetlb.2MB.limit_in_bytes"]}
        for hierarchy, files in names.items():
            if str(path).startswith(str(tmp_path / hierarchy) + "/"):
                for name in files:
                    open(os.path.join(path, name), "w").close()
    monkeypatch.setattr(os, "mkdir", mkdir)


def test_block_io_and_hugepage_limits_go_to_bfq_throttle_and_hugetlb(blkio_and_hugetlb, tmp_path,
                                                                     monkeypatch):
    fake_kernel_files(monkeypatch, tmp_path)
    lines = []
    monkeypatch.setattr(base, "write", lambda directory, name, value: lines.append(
        f"{os.path.relpath(directory, tmp_path)}/{name}: {value}"))
    V1Cgroup("abc123", hierarchies=blkio_and_hugetlb).create(BLOCK_AND_PAGES)
    # one write per device: each line of a *_device file is its own write(2)
    assert lines == ["blkio/minibox/abc123/blkio.bfq.weight: 300",
                     "blkio/minibox/abc123/blkio.bfq.weight_device: 8:0 200",
                     "blkio/minibox/abc123/blkio.throttle.read_bps_device: 8:0 1048576",
                     "blkio/minibox/abc123/blkio.throttle.write_iops_device: 8:0 100",
                     "blkio/minibox/abc123/blkio.throttle.write_iops_device: 8:16 50",
                     f"hugetlb/minibox/abc123/hugetlb.2MB.limit_in_bytes: {4 << 20}"]


def test_a_weight_without_bfq_is_refused_naming_the_field_and_nothing_is_left(
        blkio_and_hugetlb, tmp_path, monkeypatch):
    """mq-deadline and none have no weights: runc fails on the ENOENT of blkio.bfq.weight.
    (A plain mkdir here: the directory gets no blkio.bfq.weight.)"""
    with pytest.raises(CgroupError) as error:
        V1Cgroup("abc123", hierarchies=blkio_and_hugetlb).create(Limits(blkio_weight=300))
    assert str(error.value) == (
        f"linux.resources.blockIO.weight: this host cannot apply it, its kernel has no "
        f"blkio.bfq.weight in {tmp_path}/blkio/minibox/abc123")
    assert not (tmp_path / "blkio" / "minibox" / "abc123").exists()


def test_hugepages_and_cpuset_need_their_controllers(hierarchies, tmp_path):
    with pytest.raises(CgroupError) as error:
        V1Cgroup("abc123", hierarchies=hierarchies).create(
            Limits(hugepages={"2MB": 0}, cpuset_cpus="0"))
    assert str(error.value) == ("this host lacks the cgroup v1 controller 'cpuset' (for "
                                "--cpuset-cpus, cpu.cpus/mems), 'hugetlb' (for hugepageLimits)")
    assert not (tmp_path / "freezer" / "minibox").exists()


def test_cpus_and_mems_are_written_after_the_parents_are_copied(with_cpuset, tmp_path):
    V1Cgroup("abc123", hierarchies=with_cpuset).create(Limits(cpuset_cpus="1", cpuset_mems="0"))
    assert (tmp_path / "cpuset/minibox/cpuset.cpus").read_text() == "0-1"  # the group: a copy
    assert (tmp_path / "cpuset/minibox/abc123/cpuset.cpus").read_text() == "1"
    assert (tmp_path / "cpuset/minibox/abc123/cpuset.mems").read_text() == "0"


def test_a_docker_run_joins_the_hierarchies_its_limits_need(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(OWN_CGROUPS)
    plain = mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup"))
    needing = mounted_hierarchies(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup"),
                                  needs={"blkio", "memory"})
    assert "blkio" not in plain and set(needing) == set(plain) | {"blkio"}
