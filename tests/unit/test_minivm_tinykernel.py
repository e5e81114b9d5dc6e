"""`minivm kernel build`: the config fragment and the check that Kconfig kept every line of it.
(The build itself takes minutes; tests/vm/test_minivm_tiny_kernel.py checks its result.)"""
from minivm import tinykernel

FRAGMENT = """\
# a comment
CONFIG_NET=y
CONFIG_LOCALVERSION="-minivm"
# CONFIG_VT is not set
"""


def test_fragment_lines_are_options_on_values_and_offs():
    assert tinykernel.fragment_options(FRAGMENT) == {
        "CONFIG_NET": "y", "CONFIG_LOCALVERSION": '"-minivm"', "CONFIG_VT": None}


def test_every_line_kconfig_did_not_honour_is_named():
    config = 'CONFIG_LOCALVERSION="-minivm"\n# CONFIG_NET is not set\nCONFIG_VT=y\n'
    assert tinykernel.dropped_options(FRAGMENT, config) == ["CONFIG_NET=y", "CONFIG_VT off"]
    honoured = 'CONFIG_NET=y\nCONFIG_LOCALVERSION="-minivm"\n'  # VT absent: off
    assert tinykernel.dropped_options(FRAGMENT, honoured) == []


def test_the_fragment_in_the_repository_asks_for_what_the_issue_lists():
    options = tinykernel.fragment_options(tinykernel.FRAGMENT.read_text())
    wanted = ["64BIT", "PRINTK", "TTY", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD", "BINFMT_ELF",
              "BINFMT_SCRIPT", "PROC_FS", "SYSFS", "TMPFS", "DEVTMPFS", "VIRTIO_MMIO", "VIRTIO_PCI",
              "VIRTIO_CONSOLE", "VIRTIO_NET", "VIRTIO_BLK", "HW_RANDOM_VIRTIO", "NET_9P_VIRTIO",
              "9P_FS", "UTS_NS", "IPC_NS", "PID_NS", "NET_NS", "USER_NS", "MEMCG", "CGROUP_PIDS",
              "CGROUP_SCHED", "OVERLAY_FS", "SECCOMP_FILTER", "PVH"]
    assert [name for name in wanted if options.get(f"CONFIG_{name}") != "y"] == []
