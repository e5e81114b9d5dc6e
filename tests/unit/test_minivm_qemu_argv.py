"""QEMU's command line as minivm builds it: every option present, explained, extensible."""
from pathlib import Path

from minivm import qemu
from minivm.qemu import VMConfig


def config(**overrides):
    settings = dict(kernel=Path("/k/vmlinux"), initrd=Path("/t/initrd.cpio"), memory_mib=512,
                    cpus=2, accel="tcg", tsc_khz=2100000)
    settings.update(overrides)
    return VMConfig(**settings)


def option_value(argv, name):
    return argv[argv.index(name) + 1]


def test_tcg_microvm_boots_the_vmlinux_with_the_measured_parameters():
    argv = qemu.argv(config())
    assert argv[0] == "qemu-system-x86_64"
    assert option_value(argv, "-M") == "microvm,acpi=off"
    assert option_value(argv, "-accel") == "tcg,tb-size=64" and "-cpu" not in argv
    assert option_value(argv, "-m") == "512M" and option_value(argv, "-smp") == "2"
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv)
    assert option_value(argv, "-display") == "none" and option_value(argv, "-serial") == "stdio"
    assert option_value(argv, "-device") == "isa-debug-exit,iobase=0xf4,iosize=0x04"
    assert option_value(argv, "-kernel") == "/k/vmlinux"
    assert option_value(argv, "-initrd") == "/t/initrd.cpio"
    assert option_value(argv, "-append").split() == [
        "console=ttyS0", "reboot=t", "panic=-1", "pci=off", "tsc_early_khz=2100000", "noapictimer",
        "no_timer_check", "cryptomgr.notests", "noreplace-smp"]


def test_kvm_uses_the_host_cpu_and_no_tcg_workarounds():
    argv = qemu.argv(config(accel="kvm"))
    assert option_value(argv, "-accel") == "kvm" and option_value(argv, "-cpu") == "host"
    assert option_value(argv, "-append").split() == ["console=ttyS0", "reboot=t", "panic=-1",
                                                     "pci=off"]


def test_kernel_lines_lose_their_timestamps_unless_shown_as_they_come():
    """printk.time=0 when the boot log is not shown (no -v): fewer bytes through the UART."""
    quiet = option_value(qemu.argv(config(boot_log_shown=False)), "-append").split()
    assert quiet[:5] == ["console=ttyS0", "reboot=t", "panic=-1", "pci=off", "printk.time=0"]
    assert "printk.time=0" not in option_value(qemu.argv(config()), "-append")


def test_unknown_tsc_rate_leaves_the_parameter_out():
    assert "tsc_early_khz" not in option_value(qemu.argv(config(tsc_khz=None)), "-append")


def test_devices_and_kernel_parameters_can_be_added():
    """The way later features plug in: a 9p share is two more QEMU options and a parameter."""
    share = qemu.option("-fsdev", "local,id=fs0,path=/srv,security_model=none",
                        "-device", "virtio-9p-device,fsdev=fs0,mount_tag=host0",
                        why="share /srv", doc="QEMU docs: -fsdev")
    cgroup2 = qemu.option("cgroup_no_v1=all", why="cgroup v2 only", doc="kernel-parameters")
    argv = qemu.argv(config(devices=[share], kernel_args=[cgroup2]))
    assert argv[-4:] == list(share.args)
    assert option_value(argv, "-append").endswith(" cgroup_no_v1=all")


def test_every_option_says_why_where_documented_and_which_line_added_it():
    source = Path(qemu.__file__).read_text().splitlines()
    for opt in qemu.qemu_options(config()) + qemu.kernel_parameters(config()):
        assert opt.why and opt.doc
        path, line = opt.where.rsplit(":", 1)
        assert path == "minivm/qemu.py"
        assert "option(" in source[int(line) - 1]


def test_acpi_on_for_kernels_that_find_virtio_devices_only_in_acpi_tables():
    assert option_value(qemu.argv(config(acpi=True)), "-M") == "microvm,acpi=on"


def test_the_pit_tick_is_only_for_kernels_that_take_it():
    assert "noapictimer" not in option_value(qemu.argv(config(pit_tick=False)), "-append")


def test_no_timer_check_under_tcg_only():
    assert "no_timer_check" in option_value(qemu.argv(config(accel="tcg")), "-append").split()
    assert "no_timer_check" not in option_value(qemu.argv(config(accel="kvm")), "-append")
