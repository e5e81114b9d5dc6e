"""`minivm kernel build`: the config fragment and the check that Kconfig kept every line of it.
(The build itself takes minutes; tests/vm/test_minivm_tiny_kernel.py checks its result.)
And the Makefile's part: `make test` builds it, `make demo` offers it."""
import os
import subprocess
from pathlib import Path

from minivm import tinykernel

PROJECT = Path(__file__).resolve().parents[2]

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


def _make(*args, **env):
    """`make ARGS` in the project's root (Makefile), its output."""
    done = subprocess.run(["make", "-s", *args], cwd=PROJECT, capture_output=True, text=True,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_test_builds_the_tiny_kernel_before_the_suite():
    """So that CI (.ci/run: `make test`) runs tests/vm/test_minivm_tiny_kernel.py."""
    commands = _make("-n", "test").splitlines()
    build = commands.index(".venv/bin/python -m minivm kernel build")
    assert build < commands.index(".venv/bin/python -m pytest")


def test_make_demo_offers_the_tiny_kernel_in_one_line_or_builds_it(tmp_path):
    hint = _make("tiny-kernel-hint", MINIVM_CACHE=str(tmp_path)).splitlines()
    assert len(hint) == 1 and "5-minute build" in hint[0] and "TINY_KERNEL=1" in hint[0]
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "vmlinux").touch()
    assert _make("tiny-kernel-hint", MINIVM_CACHE=str(tmp_path)) == ""
    asked = _make("-n", "demo", "TINY_KERNEL=1").splitlines()
    assert asked.index(".venv/bin/python -m minivm kernel build") < asked.index(
        ".venv/bin/python examples/side_by_side.py")
