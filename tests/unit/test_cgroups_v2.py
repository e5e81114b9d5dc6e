"""The v2 backend against a temporary directory laid out like a cgroup2 mount.

A real cgroup2 filesystem creates the control files on mkdir; here the test writes the files
the kernel would fill in (memory.events, cpu.stat, ...) and checks what minibox writes.
The same backend runs for real on a cgroup-v2 kernel in tests/vm/test_cgroups_v2_guest.py.
"""
import os

import pytest

from minibox.cgroups import CgroupError, Limits, cgroup_version
from minibox.cgroups import base, v2
from minibox.cgroups.devices import container_rules
from minibox.cgroups.v2 import V2Cgroup, cpu_weight, io_weight


@pytest.fixture
def root(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


def read(path):
    return path.read_text()


def test_version_is_told_by_cgroup_controllers(root, tmp_path_factory):
    assert cgroup_version(str(root)) == 2
    assert cgroup_version(str(tmp_path_factory.mktemp("v1"))) == 1


def test_paths_are_known_before_create(root):
    cgroup = V2Cgroup("abc123", root=str(root))
    assert cgroup.paths() == [str(root / "minibox" / "abc123")]
    assert not (root / "minibox").exists()


def test_create_enables_controllers_in_every_ancestor_and_writes_limits(root):
    limits = Limits(memory=64 << 20, memory_swap=128 << 20, cpus=0.5, cpu_shares=1024, pids=32)
    V2Cgroup("abc123", root=str(root)).create(limits)
    leaf = root / "minibox" / "abc123"
    assert read(root / "cgroup.subtree_control") == "+cpu +memory +pids"
    assert read(root / "minibox" / "cgroup.subtree_control") == "+cpu +memory +pids"
    assert read(leaf / "memory.max") == str(64 << 20)
    assert read(leaf / "memory.swap.max") == str(64 << 20)  # swap alone: 128m total - 64m memory
    assert read(leaf / "cpu.max") == "50000 100000"
    assert read(leaf / "cpu.weight") == "39"  # runc's mapping of the default 1024 shares
    assert read(leaf / "pids.max") == "32"


def test_plan_narrates_each_file_with_its_v1_twin(root):
    plan = V2Cgroup("abc123", root=str(root)).plan(Limits(memory=64 << 20, cpus=1.5))
    assert plan == [
        f"mkdir {root}/minibox/abc123",
        f"echo 67108864 > {root}/minibox/abc123/memory.max   (v1: memory.limit_in_bytes)",
        f"echo 150000 100000 > {root}/minibox/abc123/cpu.max"
        "   (v1: cpu.cfs_quota_us + cpu.cfs_period_us)",
    ]
    assert not (root / "minibox").exists()


def test_the_plan_shows_the_device_program_and_where_it_is_attached(root):
    plan = V2Cgroup("abc123", root=str(root)).plan(Limits(devices=container_rules()))
    assert plan[1] == ("bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE): 64 instructions from "
                       "the device rules   (v1: devices.deny, devices.allow)")
    assert plan[2] == "    0: LdXMemW dst: r2 src: r1 off: 0 imm: 0"
    assert plan[-1] == f"bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) to {root}/minibox/abc123"
    assert len(plan) == 2 + 64 + 1
    assert V2Cgroup("abc123", root=str(root)).plan(Limits(devices=None)) == [
        f"mkdir {root}/minibox/abc123"]  # --privileged: no program


def test_a_device_program_the_kernel_refuses_is_one_line_and_leaves_nothing(root, monkeypatch):
    def no_cgroup_bpf(instructions, count):  # a kernel without CONFIG_CGROUP_BPF
        raise OSError(22, "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE): Invalid argument")
    monkeypatch.setattr(v2.syscalls, "bpf_load_cgroup_device", no_cgroup_bpf)
    with pytest.raises(CgroupError) as error:
        V2Cgroup("abc123", root=str(root)).create(Limits(devices=container_rules()))
    assert str(error.value) == (
        f"cannot load the device rules' eBPF program for {root}/minibox/abc123: "
        "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE): Invalid argument")
    assert not (root / "minibox" / "abc123").exists()


@pytest.mark.root
def test_a_directory_that_is_no_cgroup_cannot_take_the_program(root):
    """Here the root is a plain directory: the kernel loads the program, then refuses to
    attach it (EBADF, cgroup_get_from_fd) -- one line, and nothing left."""
    with pytest.raises(CgroupError, match=r"^cannot attach the device rules' eBPF program to "
                       rf"{root}/minibox/abc123: bpf\(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE\): "):
        V2Cgroup("abc123", root=str(root)).create(Limits(devices=container_rules()))
    assert not (root / "minibox" / "abc123").exists()


def test_create_without_limits_writes_no_limit_files(root):
    V2Cgroup("abc123", root=str(root)).create(Limits())
    assert os.listdir(root / "minibox" / "abc123") == []


def test_unlimited_swap_is_max(root):
    V2Cgroup("abc123", root=str(root)).create(Limits(memory=64 << 20, memory_swap=-1))
    assert read(root / "minibox" / "abc123" / "memory.swap.max") == "max"


def test_cgroup_parent_replaces_minibox_and_each_level_delegates(root):
    cgroup = V2Cgroup("abc123", parent="ci/jobs", root=str(root))
    cgroup.create(Limits())
    assert cgroup.paths() == [str(root / "ci" / "jobs" / "abc123")]
    for level in (root, root / "ci", root / "ci" / "jobs"):
        assert read(level / "cgroup.subtree_control") == "+cpu +memory +pids"


def test_only_offered_controllers_are_enabled(root):
    (root / "cgroup.controllers").write_text("cpu memory\n")
    V2Cgroup("abc123", root=str(root)).create(Limits(memory=64 << 20))
    assert read(root / "cgroup.subtree_control") == "+cpu +memory"


def test_a_missing_controller_is_named_and_nothing_is_created(root):
    (root / "cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(CgroupError) as error:
        V2Cgroup("abc123", root=str(root)).create(Limits(pids=20))
    assert str(error.value) == "this host lacks the cgroup v2 controller 'pids' (for --pids-limit)"
    assert sorted(os.listdir(root)) == ["cgroup.controllers", "cgroup.subtree_control"]
    assert read(root / "cgroup.subtree_control") == ""


def test_an_existing_cgroup_is_neither_reused_nor_removed(root):
    V2Cgroup("abc123", root=str(root)).create(Limits())
    with pytest.raises(CgroupError, match="cannot create cgroup .*/minibox/abc123: File exists"):
        V2Cgroup("abc123", root=str(root)).create(Limits())
    assert (root / "minibox" / "abc123").is_dir()


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000)])
def test_cpu_weight_maps_the_whole_shares_range(shares, weight):
    assert cpu_weight(shares) == weight


@pytest.fixture
def created(root):
    cgroup = V2Cgroup("abc123", root=str(root))
    cgroup.create(Limits(memory=32 << 20))
    return cgroup, root / "minibox" / "abc123"


def test_add_writes_the_pid_to_cgroup_procs(created):
    cgroup, leaf = created
    cgroup.add(4242)
    assert read(leaf / "cgroup.procs") == "4242"
    assert cgroup.pids() == [4242]


def test_stats_and_oom_kills_are_parsed_from_the_kernels_files(created):
    cgroup, leaf = created
    (leaf / "memory.peak").write_text("33550336\n")
    (leaf / "pids.peak").write_text("20\n")
    (leaf / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1200000\nsystem_usec 300000\n"
        "nr_periods 30\nnr_throttled 15\nthrottled_usec 1480000\nnr_bursts 0\nburst_usec 0\n"
    )
    (leaf / "memory.events").write_text(
        "low 0\nhigh 0\nmax 112\noom 3\noom_kill 2\noom_group_kill 0\n"
    )
    assert vars(cgroup.stats()) == dict(memory_peak=33550336, cpu_seconds=1.5, pids_peak=20)
    assert cgroup.stats().describe() == "peak memory 32.0 MiB, CPU time 1.50 s, max pids 20"
    assert cgroup.oom_kills() == 2


def test_stats_of_an_older_kernel_say_what_is_unknown(created):
    cgroup, leaf = created
    (leaf / "cpu.stat").write_text("usage_usec 250\n")
    assert vars(cgroup.stats()) == dict(memory_peak=None, cpu_seconds=0.00025, pids_peak=None)
    assert cgroup.stats().describe() == "peak memory n/a, CPU time 0.00 s, max pids n/a"
    assert cgroup.oom_kills() == 0


def test_freeze_and_thaw_wait_for_cgroup_events(created):
    cgroup, leaf = created
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cgroup.freeze()
    assert read(leaf / "cgroup.freeze") == "1"
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    cgroup.thaw()
    assert read(leaf / "cgroup.freeze") == "0"


def test_a_freeze_the_kernel_never_confirms_is_an_error(created, monkeypatch):
    cgroup, leaf = created
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 0\n")  # stays unfrozen
    monkeypatch.setattr(v2, "wait_for", lambda condition, timeout: condition())  # no 2 s wait
    with pytest.raises(CgroupError, match="did not show frozen 1"):
        cgroup.freeze()


def test_an_oci_cgroups_path_is_placed_as_runcs_fs2_driver_does(root):
    """Absolute: below the root; relative: below the PARENT of the runtime's own cgroup
    (which holds processes: no controllers could be enabled below it)."""
    assert V2Cgroup("x", root=str(root), path="/machine.slice/libpod-abc.scope").paths() == [
        str(root / "machine.slice/libpod-abc.scope")]
    assert V2Cgroup("x", root=str(root), path="pods/abc", own="/user.slice/session-1.scope"
                    ).paths() == [str(root / "user.slice/pods/abc")]


def test_oci_reservation_and_period_are_written_and_swappiness_refused(root):
    V2Cgroup("abc123", root=str(root)).create(Limits(memory_reservation=32 << 20, cpus=0.25,
                                                     cpu_period=200000))
    leaf = root / "minibox" / "abc123"
    assert read(leaf / "memory.low") == str(32 << 20)
    assert read(leaf / "cpu.max") == "50000 200000"
    with pytest.raises(CgroupError, match="memory.swappiness: cgroup v2 has no swappiness"):
        V2Cgroup("other", root=str(root)).create(Limits(memory_swappiness=10))
    assert not (root / "minibox" / "other").exists()


def test_every_hierarchy_on_v2_is_the_one_unified_directory(monkeypatch):
    """An OCI container's "every hierarchy" (v1: blkio, cpuset, name=systemd...) is on a
    pure v2 host the one cgroup at the cgroupsPath, as runc's fs2 driver makes it."""
    from minibox import cgroups, rootless
    monkeypatch.setattr(rootless, "ENABLED", False)
    monkeypatch.setattr(cgroups, "cgroup_version", lambda: 2)
    cgroup = cgroups.cgroup_for("abc", path="/pod/abc", every_hierarchy=True)
    assert isinstance(cgroup, V2Cgroup) and cgroup.paths() == ["/sys/fs/cgroup/pod/abc"]


def bfq_kernel_files(monkeypatch, root, bfq):
    """mkdir that also makes the files the kernel would: io.max and io.weight (iocost),
    io.bfq.weight when BFQ is loaded, hugetlb.2MB.max."""
    real_mkdir = os.mkdir

    def mkdir(path, *args):
        real_mkdir(path, *args)
        for name in ["io.max", "io.weight", "hugetlb.2MB.max"] + ["io.bfq.weight"] * bfq:
            (root / path / name).write_text("")
    monkeypatch.setattr(os, "mkdir", mkdir)


def written(monkeypatch, root):
    """Every write(2) to a control file, as 'file: value' (each line of io.max is its own)."""
    lines = []

    def write(directory, name, value):
        lines.append(f"{os.path.relpath(os.path.join(directory, name), root)}: {value}")
    for module in (base, v2):  # set_limits' and _make_dirs' subtree_control
        monkeypatch.setattr(module, "write", write)
    return lines


LIMITS = Limits(cpuset_cpus="0-1", cpuset_mems="0", blkio_weight=500,
                blkio_weight_devices=[[8, 0, 200]],
                blkio_throttle={"read_bps": [[8, 0, 1 << 20]], "write_iops": [[8, 16, 100]]},
                hugepages={"2MB": 4 << 20})


def test_cpuset_io_and_hugetlb_are_enabled_up_the_path_and_written_with_bfq(root, monkeypatch):
    bfq_kernel_files(monkeypatch, root, bfq=True)
    lines = written(monkeypatch, root)
    V2Cgroup("abc123", root=str(root)).create(LIMITS)
    enable = "+cpu +memory +pids +cpuset +hugetlb +io"
    assert lines == [f"cgroup.subtree_control: {enable}",
                     f"minibox/cgroup.subtree_control: {enable}",
                     "minibox/abc123/cpuset.cpus: 0-1", "minibox/abc123/cpuset.mems: 0",
                     "minibox/abc123/io.bfq.weight: 500",  # BFQ's own range, as given
                     "minibox/abc123/io.bfq.weight: 8:0 200",
                     f"minibox/abc123/io.max: 8:0 rbps={1 << 20}",
                     "minibox/abc123/io.max: 8:16 wiops=100",
                     f"minibox/abc123/hugetlb.2MB.max: {4 << 20}"]


def test_without_bfq_the_weight_is_io_weight_mapped_as_runc_does(root, monkeypatch):
    bfq_kernel_files(monkeypatch, root, bfq=False)
    lines = written(monkeypatch, root)
    V2Cgroup("abc123", root=str(root)).create(Limits(blkio_weight=500))
    assert lines[-1] == "minibox/abc123/io.weight: 4950"
    assert (io_weight(10), io_weight(1000)) == (1, 10000)


def test_a_device_weight_without_bfq_is_refused_and_nothing_is_left(root):
    """Only BFQ takes per-device weights (runc 1.1 drops them without a word); a plain mkdir
    here makes no io.bfq.weight."""
    with pytest.raises(CgroupError) as error:
        V2Cgroup("abc123", root=str(root)).create(Limits(blkio_weight_devices=[[8, 0, 200]]))
    assert str(error.value) == (
        "linux.resources.blockIO.weightDevice: this host cannot apply it, its kernel has no "
        f"io.bfq.weight in {root}/minibox/abc123")
    assert not (root / "minibox" / "abc123").exists()


def test_a_huge_page_size_the_kernel_lacks_is_refused_naming_it(root):
    with pytest.raises(CgroupError, match=r"^linux.resources.hugepageLimits 1GB: this host "
                       r"cannot apply it, its kernel has no hugetlb.1GB.max in "):
        V2Cgroup("abc123", root=str(root)).create(Limits(hugepages={"1GB": 0}))
    assert not (root / "minibox" / "abc123").exists()


def test_a_missing_io_or_cpuset_controller_is_named(root):
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    with pytest.raises(CgroupError) as error:
        V2Cgroup("abc123", root=str(root)).create(Limits(cpuset_mems="0", blkio_weight=100))
    assert str(error.value) == ("this host lacks the cgroup v2 controller 'cpuset' (for "
                                "--cpuset-cpus, cpu.cpus/mems), 'io' (for --blkio-weight, blockIO)")
    assert not (root / "minibox").exists()
