"""Limits parsing and validation: every bad value is refused with one line naming the flag."""
import re

import pytest

from minibox.cgroups import Limits, format_size, limits, parse_cgroup_parent, parse_limits, parse_size
from minibox.cgroups.devices import container_rules
from minibox.cgroups.limits import host_cpus


@pytest.mark.parametrize("text, size", [
    ("512", 512),
    ("1b", 1),
    ("4k", 4096),
    ("64m", 64 * 2**20),
    ("64M", 64 * 2**20),
    ("64mb", 64 * 2**20),
    ("64MiB", 64 * 2**20),
    ("1.5g", 3 * 2**29),
    (" 2 g ", 2 * 2**30),
])
def test_parse_size_accepts_dockers_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10x", "", "m", "-5m", "1e9", "64 megs", "0x10"])
def test_parse_size_refuses_garbage_in_one_line(text):
    with pytest.raises(ValueError) as error:
        parse_size(text)
    assert str(error.value) == (
        f"invalid size {text!r}: use a number with an optional unit b, k, m, g (e.g. 64m)"
    )


@pytest.mark.parametrize("size, text", [
    (64 * 2**20, "64 MiB"), (3 * 2**29, "1.5 GiB"), (4096, "4 KiB"), (100, "100 B"), (0, "0 B"),
    (6 * 2**20 + 1, "6.0 MiB"),
])
def test_format_size(size, text):
    assert format_size(size) == text


def test_parse_limits_builds_every_field():
    limits = parse_limits("64m", "128m", "0.5", "512", "32", cpuset_cpus="0-1",
                          blkio_weight="300")
    assert vars(limits) == dict(memory=64 * 2**20, memory_swap=128 * 2**20, cpus=0.5, cpu_shares=512,
                                pids=32, devices=container_rules(), memory_reservation=None,
                                memory_swappiness=None, cpu_period=None, cpuset_cpus="0-1",
                                cpuset_mems=None, blkio_weight=300, blkio_weight_devices=None,
                                blkio_throttle=None, hugepages=None)
    assert limits.controllers() == {"memory", "cpu", "pids", "cpuset", "blkio"}
    assert limits.controllers(block_io="io") == {"memory", "cpu", "pids", "cpuset", "io"}
    assert limits.cpu_quota_us() == 50_000


def test_no_flags_means_no_limits_and_no_controllers_required():
    limits = parse_limits()
    assert vars(limits) == vars(Limits(devices=container_rules()))
    assert limits.controllers() == set()  # v2 has no devices controller to require


def test_the_device_rules_deny_all_then_allow_runcs_list_and_privileged_has_none():
    rules = parse_limits().devices
    assert rules[0] == (False, "a") and (True, "c 1:3 rwm") in rules
    assert not [line for allow, line in rules if allow and line.startswith("b ") and "r" in line]
    assert parse_limits(privileged=True).devices is None


def test_unlimited_swap_is_minus_one():
    assert parse_limits("64m", "-1").memory_swap == -1


BAD_INPUT = [
    (dict(memory="10x"),
     "-m/--memory: invalid size '10x': use a number with an optional unit b, k, m, g (e.g. 64m)"),
    (dict(memory="0"), "-m/--memory: minimum memory limit allowed is 6 MiB (got 0 B)"),
    (dict(memory="5m"), "-m/--memory: minimum memory limit allowed is 6 MiB (got 5 MiB)"),
    (dict(memory_swap="128m"),
     "--memory-swap: needs -m/--memory as well (it is the total of memory and swap)"),
    (dict(memory="64m", memory_swap="32m"),
     "--memory-swap: must be at least the memory limit 64 MiB (got 32 MiB), or -1 for unlimited swap"),
    (dict(cpus="abc"), "--cpus: not a number: 'abc'"),
    (dict(cpu_shares="1"), "--cpu-shares: must be from 2 to 262144 (got 1)"),
    (dict(cpu_shares="300000"), "--cpu-shares: must be from 2 to 262144 (got 300000)"),
    (dict(pids_limit="0"), "--pids-limit: must be a positive number of processes (got 0)"),
    (dict(pids_limit="-1"), "--pids-limit: must be a positive number of processes (got -1)"),
    (dict(pids_limit="many"), "--pids-limit: not a number: 'many'"),
    (dict(cpuset_cpus="0-x"),
     "--cpuset-cpus: '0-x' is not a list of CPUs or memory nodes like 0-3,5"),
    (dict(blkio_weight="5"), "--blkio-weight: range of blkio weight is from 10 to 1000 (got 5)"),
    (dict(blkio_weight="heavy"), "--blkio-weight: not a number: 'heavy'"),
]


@pytest.mark.parametrize("flags, message", BAD_INPUT)
def test_bad_limits_get_one_line_naming_the_flag(flags, message):
    with pytest.raises(ValueError) as error:
        parse_limits(**flags)
    assert str(error.value) == message
    assert "\n" not in message


@pytest.mark.parametrize("cpus", ["0", "-1", "0.001", "nan", "inf", str(host_cpus() + 1)])
def test_cpus_out_of_range_quotes_docker(cpus):
    n = host_cpus()
    with pytest.raises(ValueError) as error:
        parse_limits(cpus=cpus)
    assert str(error.value) == (
        f"--cpus: range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available (got {cpus})"
    )


def test_cpus_at_the_edges_are_accepted():
    assert parse_limits(cpus="0.01").cpu_quota_us() == 1000
    assert parse_limits(cpus=str(host_cpus())).cpus == host_cpus()


@pytest.mark.parametrize("text, path", [("/ci/jobs", "ci/jobs"), ("ci//jobs/", "ci/jobs"), ("x", "x")])
def test_cgroup_parent_is_made_relative(text, path):
    assert parse_cgroup_parent(text) == path


@pytest.mark.parametrize("text", ["/", "", "../escape", "a/../../b", "./a"])
def test_cgroup_parent_cannot_climb_out(text):
    with pytest.raises(ValueError, match=r"^--cgroup-parent: .* must be a path like /ci/jobs, without \. or \.\.$"):
        parse_cgroup_parent(text)


@pytest.mark.parametrize("text, path", [
    ("/libpod_parent/libpod-abc", "/libpod_parent/libpod-abc"),
    ("pods//abc/", "pods/abc"),
    # systemd's form, mapped to the cgroupfs path systemd would give the unit (runc's docs)
    ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
    ("machine-libpod.slice:libpod:abc", "/machine.slice/machine-libpod.slice/libpod-abc.scope"),
    (":crio:abc", "/system.slice/crio-abc.scope"),
    ("-.slice:p:x", "/p-x.scope"),
    ("a.slice::b-c.slice", "/a.slice/b-c.slice"),
])
def test_oci_cgroups_path(text, path):
    assert limits.parse_cgroups_path(text) == path


@pytest.mark.parametrize("text, message", [
    ("/a/../b", "without . or .."), ("", "without . or .."),
    ("docker:p:x", "'docker' is not a slice name"), ("a--b.slice:p:x", "empty part")])
def test_bad_oci_cgroups_paths(text, message):
    with pytest.raises(ValueError, match=message):
        limits.parse_cgroups_path(text)


def test_what_docker_writes_for_no_limit_is_no_limit():
    """Docker fills linux.resources with zeroes for every limit not given (blockIO weight,
    cpu shares, pids limit): runc reads them as "not set", and so does minibox."""
    from minibox.oci import ConfigCheck
    from minibox.ociresources import limits as oci_limits
    docker = {"resources": {"devices": [{"allow": False, "access": "rwm"}],
                            "memory": {}, "cpu": {"shares": 0}, "pids": {"limit": 0},
                            "blockIO": {"weight": 0}}}
    limits = oci_limits(docker, ConfigCheck("config.json"))
    assert (limits.cpu_shares, limits.pids, limits.memory) == (None, None, None)
    assert limits.controllers() == set()  # blockIO weight 0 asks for no blkio controller
    # a weight that is set is applied now (or refused by a host without BFQ, at create)
    assert oci_limits({"resources": {"blockIO": {"weight": 300}}},
                      ConfigCheck("config.json")).blkio_weight == 300


def test_oci_cpuset_block_io_and_hugepages_become_limits():
    from minibox.oci import ConfigCheck
    from minibox.ociresources import limits as oci_limits
    resources = {"cpu": {"cpus": "0-1", "mems": "0"},
                 "blockIO": {"weight": 500, "weightDevice": [
                     {"major": 8, "minor": 0, "weight": 200},
                     {"major": 8, "minor": 16}],  # no weight: asks nothing, as runc reads it
                     "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
                     "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100},
                                                 {"major": 8, "minor": 16, "rate": 0}]},
                 "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20},
                                    {"pageSize": "1GB", "limit": 0}]}
    limits = oci_limits({"resources": resources}, ConfigCheck("config.json"))
    assert (limits.cpuset_cpus, limits.cpuset_mems) == ("0-1", "0")
    assert limits.blkio_weight == 500
    assert limits.blkio_weight_devices == [[8, 0, 200]]
    assert limits.blkio_throttle == {"read_bps": [[8, 0, 1 << 20]],
                                     "write_iops": [[8, 0, 100], [8, 16, 0]]}
    assert limits.hugepages == {"2MB": 4 << 20, "1GB": 0}
    assert limits.controllers() == {"cpuset", "blkio", "hugetlb"}


def test_update_applies_what_runc_update_applies_and_keeps_what_create_set():
    """`update --resources`: memory, cpu, pids and blockIO.weight change; device rules, huge
    page limits and blockIO's per-device lists are left as create set them (v1 writes no
    device file for devices=None), and a limit runc would apply but minibox cannot is one line."""
    from minibox.errors import MiniboxError
    from minibox.oci import ConfigCheck
    from minibox.ociresources import update_limits
    check = ConfigCheck("--resources r.json")
    limits = update_limits({"memory": {"limit": 1 << 26}, "cpu": {"cpus": "0", "shares": 512},
                            "pids": {"limit": 42}, "blockIO": {"weight": 300, "weightDevice": [
                                {"major": 8, "minor": 0, "weight": 200}]},
                            "devices": [{"allow": False, "access": "rwm"}],
                            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}, check)
    assert (limits.memory, limits.cpuset_cpus, limits.cpu_shares, limits.pids,
            limits.blkio_weight) == (1 << 26, "0", 512, 42, 300)
    assert (limits.devices, limits.hugepages, limits.blkio_weight_devices) == (None, None, None)
    for resources, message in (([], "--resources r.json: must hold a JSON object"),
                               ({"unified": {"memory.high": "1M"}},
                                "linux.resources.unified is not supported")):
        with pytest.raises(MiniboxError, match=re.escape(message)):
            update_limits(resources, check)


@pytest.mark.parametrize("resources, message", [
    ({"cpu": {"cpus": "0,,1"}}, "linux.resources.cpu.cpus: '0,,1' is not a list of CPUs"),
    ({"cpu": {"mems": "all"}}, "linux.resources.cpu.mems: 'all' is not a list of CPUs"),
    ({"blockIO": {"weight": 5}},
     "linux.resources.blockIO.weight: range of blkio weight is from 10 to 1000 (got 5)"),
    ({"blockIO": {"leafWeight": 300}}, "linux.resources.blockIO.leafWeight is not supported"),
    ({"blockIO": {"weightDevice": [{"major": 8, "weight": 100}]}},
     "linux.resources.blockIO.weightDevice[]: major and minor"),
    ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 100, "leafWeight": 9}]}},
     "weightDevice[].leafWeight is not supported"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[]: rate (a number, 0 for no limit)"),
    ({"blockIO": {"throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": "1m"}]}},
     "throttleWriteBpsDevice[].rate must be a int, not str"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
     "linux.resources.hugepageLimits[]: pageSize '2M' is not a huge page size like 2MB"),
    ({"hugepageLimits": [{"pageSize": "2MB"}]},
     "linux.resources.hugepageLimits[]: limit (bytes of 2MB pages) is required"),
    ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime is not supported"),
])
def test_bad_oci_resources_are_one_line_naming_the_field(resources, message):
    from minibox.errors import MiniboxError
    from minibox.oci import ConfigCheck
    from minibox.ociresources import limits as oci_limits
    with pytest.raises(MiniboxError) as error:
        oci_limits({"resources": resources}, ConfigCheck("config.json"))
    assert message in str(error.value) and "\n" not in str(error.value)
