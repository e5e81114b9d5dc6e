"""A VM's run, start to end: what `minivm run` and `minivm sandbox` do once runcall.py (or cli.py)
parsed them.

Who does what (read it beside minibox/container.py, the container's side). minivm prepares
everything on the host, QEMU runs the guest, and the guest's /init (written by
initramfs.py) runs the command and reports on the serial console:

    minivm (this process)                       QEMU (child)        the guest
    check the request (memory, cpus, -v, --disk)
    the accelerator: kvm where it works (accel.py)
    the kernel, an uncompressed vmlinux (kernel.py)
    the base initramfs: busybox, /init (cached)
    each device's host side: qcow2 overlays
      (disk.py), a tap in minibox0 (nic.py),
      shared folders (shares.py)
    the run's cpio: command, modules, setup
    QEMU's command line (qemu.py)   -- exec -->  -M microvm: loads
                                                 vmlinux + initrd  -->  kernel boots, /init:
                                                                        mounts, insmod, setup,
                                                                        runs CMD
    console.py reads the console  <------------------ serial ------  output, "exit N" (nonce)
    exit status, timings               <-- QEMU exits when the guest powers off
    each device undone (ExitStack)

With `run -d` QEMU is started by vms.py's watchdog and recorded in /run/minivm/<name>/, and
minivm returns at once; `ps`, `stop`, `rm` find it there.

Exit status: the guest command's own; 124 when the timeout killed the guest; 125 for minivm's
own errors (bad options, no QEMU, no kernel...), like `docker run`; 127 when the command is
not in the guest.
"""
import _signal  # not signal.py, as in minibox/waiting.py: its enums' import at each boot
import os
import sys
import time
from collections import namedtuple
from contextlib import ExitStack, nullcontext

from minibox import explain
from minivm import MinivmError, accel

EXIT_TIMEOUT = 124
EXIT_MINIVM_ERROR = 125
EXIT_NOT_FOUND = 127
# Guest RAM sized to the kernel: `least` is refused below, `default` is what -m leaves out
# gets. Debian's stock kernel keeps ~50 MB for itself: it panicked at 80M and booted at 88M;
# the tiny kernel panicked at 34M and booted at 36M. Each default leaves the command several
# times what the kernel left free at its least. A bigger -m costs the host little: memory the
# guest never touches is never made resident (bench/README.md, "VM memory").
GuestMemory = namedtuple("GuestMemory", "kernel least default")
DISTRIBUTION_MEMORY = GuestMemory("a distribution kernel", 96, 128)
TINY_MEMORY = GuestMemory("the tiny kernel", 40, 64)
DEFAULT_TIMEOUT = 120.0  # generous: a loaded CI host emulating the guest under TCG


class TimedOut(Exception):
    """--timeout ran out before QEMU started (qemu.run watches the same deadline after)."""


def progress(message: str):
    print(f"minivm: {message}", file=sys.stderr, flush=True)


def memory_mib(text: str, sizes: GuestMemory = DISTRIBUTION_MEMORY) -> int:
    """'256M', '1G', '512' (MiB) -> MiB, at least what the kernel needs."""
    import re  # only when -m is given: re and enum are not free
    found = re.fullmatch(r"(\d+)\s*(?:([mg])(?:i?b)?)?", text.strip(), re.IGNORECASE)
    if not found:
        raise MinivmError(f"-m {text}: not a memory size; use e.g. 256M or 1G")
    size = int(found.group(1)) * (1024 if (found.group(2) or "").lower() == "g" else 1)
    if size < sizes.least:
        raise MinivmError(f"-m {text}: a guest of {sizes.kernel} needs at least {sizes.least}M")
    host_mib = _host_memory_mib()
    if size > host_mib:
        raise MinivmError(f"-m {text}: more than this host's {host_mib}M of RAM")
    return size


def guest_memory(explicit_kernel: str | None, cache: str) -> GuestMemory:
    """The sizes for the kernel that will boot, known before kernel.find() fetches or
    extracts anything (so a bad -m is refused first): the tiny kernel's when it is built
    and no --kernel names another, a distribution kernel's otherwise."""
    from minivm import kernel
    tiny = kernel.tiny_kernel(cache)
    if tiny is None or (explicit_kernel is not None
                        and os.path.realpath(explicit_kernel) != os.path.realpath(tiny.vmlinux)):
        return DISTRIBUTION_MEMORY
    return TINY_MEMORY


def _host_memory_mib() -> int:
    """The host's RAM: sysconf(3) _SC_PHYS_PAGES pages of _SC_PAGE_SIZE bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20


def cpu_count(value: int) -> int:
    host = os.cpu_count() or 1
    if value < 1:
        raise MinivmError(f"--cpus {value}: must be at least 1")
    if value > host:
        raise MinivmError(f"--cpus {value}: this host has only {host} CPUs")
    return value


def run(request, started: float) -> int:
    """Boot the guest of `request` (a runcall.Request), run the command, return its exit
    status (for -d: start it, print its name, return 0). `started`: time.monotonic() when
    minivm started, for --timings."""
    from minivm import initramfs, kernel, qemu

    command = request.command
    if not command:
        if not request.tty:
            raise MinivmError("run: no command given: minivm run [OPTIONS] -- CMD [ARG...]")
        command = ["sh"]
    cache = kernel.cache_dir()
    sizes = guest_memory(request.kernel, cache)
    memory = memory_mib(request.memory, sizes) if request.memory else sizes.default
    cpus = cpu_count(request.cpus)
    if request.detach and (request.interactive or request.tty):
        raise MinivmError("-d runs the VM in the background: it cannot take -i or -t")
    if request.tty and not os.isatty(sys.stdin.fileno()):
        raise MinivmError("-t needs a terminal on stdin (for piped input use -i)")
    if request.name is not None and not request.detach:
        raise MinivmError("--name names a detached VM: use it with -d")
    if request.name is not None:
        from minivm import vms
        vms.VMDir(request.name).check_free()  # claimed later, atomically; this says it early
    if request.timeout <= 0:
        raise MinivmError(f"--timeout {request.timeout:g}: must be more than 0 seconds")
    _start_clock(started + request.timeout)
    # Bad input is one line, before anything else is said or done.
    disks = []
    if request.disks:
        from minivm import disk  # shutil, qemu-img: only for VMs that have disks
        disks = [(image, disk.base_format(image)) for image in request.disks]
    folders = []
    if request.volumes:
        from minivm import shares  # device modules: imported only for VMs that have the device
        folders = [shares.parse(spec) for spec in request.volumes]
    qemu.binary()  # not installed: one line, before anything is done
    explain.configure(request.explain)
    phases = []

    choice = accel.choose(request.accel)
    if request.accel == "auto" and choice.name == "tcg":
        progress(f"using {choice.reason}")
    explain.narrate(f"accelerator: {choice.reason}", "Documentation/virt/kvm/api.rst",
                    accel.kvm_problem)

    guest_kernel = kernel.find(request.kernel, cache, progress)
    explain.narrate(f"kernel {guest_kernel.release}: {guest_kernel.vmlinux}, from "
                    f"{guest_kernel.origin}", "Documentation/arch/x86/boot.rst (bzImage), "
                    "QEMU microvm.rst (PVH)", kernel.find)
    phases.append(("kernel ready", time.monotonic() - started))

    base, was_cached = initramfs.cached_base(cache)
    explain.narrate(f"initramfs: {base} ({'cached' if was_cached else 'built now'}): "
                    "busybox-static, applet links, /etc/fstab, /init",
                    "Documentation/driver-api/early-userspace/buffer-format.rst",
                    initramfs.base_archive)
    nonce = os.urandom(8).hex()
    with ExitStack() as cleanup:
        vm_dir = _claim_name(request, {"command": command, "nonce": nonce},
                             cleanup) if request.detach else None
        devices = _attach_devices(request, guest_kernel, disks, folders, nonce, cleanup,
                                  vm_dir)
        guest_modules = []
        if devices.modules:
            from minivm import modules
            guest_modules = modules.ModuleTree(guest_kernel.modules).load_order(devices.modules)
        if guest_modules:
            explain.narrate(f"kernel modules for the guest, dependencies first: "
                            f"{' '.join(name for name, _ in guest_modules)}",
                            "modinfo(8) depends=, modprobe(8)",
                            modules.ModuleTree.load_order)
        rows, cols = terminal_size(sys.stdin) if request.tty else (24, 80)
        place = {}
        if request.sandbox:
            from minivm import shares
            place = dict(root=shares.SANDBOX_ROOT, cwd=os.getcwd(),
                         path=os.environ.get("PATH", os.defpath))
        run_archive = initramfs.run_archive(
            command, nonce, stdin=request.interactive, tty=request.tty, rows=rows, cols=cols,
            term=os.environ.get("TERM", "linux"), modules=guest_modules, setup=devices.setup,
            **place)
        explain.narrate(f"appended a second cpio archive with /minivm/run.conf: the command "
                        f"{command!r}, single-quoted for sh", "sh(1p) Single-Quotes",
                        initramfs.run_archive)
        initrd = initramfs.write_initrd(base, run_archive, nonce,
                                        str(vm_dir.path) if vm_dir else None)
        try:
            phases.append(("initramfs ready", time.monotonic() - started))
            config = qemu.VMConfig(
                kernel=guest_kernel.vmlinux, initrd=initrd, memory_mib=memory, cpus=cpus,
                accel=choice.name, devices=devices.options,
                tsc_khz=accel.host_tsc_khz() if choice.name == "tcg" else None,
                kernel_args=[qemu.option(param, why="asked for with --append",
                                         doc="kernel-parameters.txt")
                             for param in request.append.split()],
                acpi=bool(devices.options)
                and not kernel.takes_mmio_devices_from_command_line(guest_kernel),
                pass_fds=tuple(devices.fds),
                pit_tick=sizes is TINY_MEMORY,  # the tiny kernel boots (guest_memory)
                boot_log_shown=request.verbose or request.explain)
            if vm_dir:
                explain.narrate("no transparent huge pages for a detached VM's QEMU: with "
                                "them, each byte an idle guest touched keeps 2 MiB of its RAM "
                                "resident on the host", "prctl(2) PR_SET_THP_DISABLE, "
                                "admin-guide/mm/transhuge.rst", qemu.spawn)
                _start_detached(config, vm_dir, {"command": command, "nonce": nonce,
                                                 "network": devices.network})
                cleanup.pop_all()  # the VM keeps its directory, overlays... until `minivm rm`
                print(vm_dir.name)
                return 0
            result = _boot(config, nonce, request, started)
        finally:
            os.unlink(initrd)  # QEMU read it at start; a detached VM is running by now
    return _report(result, command, guest_kernel, request, phases, memory)


def _start_clock(deadline: float):
    """--timeout covers every phase, the kernel's extraction included: SIGALRM (setitimer(2))
    raises TimedOut wherever minivm is, and the `with` and `finally` blocks on the way out
    undo what was made. Stopped once QEMU runs: qemu.run() keeps the same deadline and
    reports the guest's last lines."""
    def expire(signum, frame):
        raise TimedOut
    _signal.signal(_signal.SIGALRM, expire)
    _signal.setitimer(_signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))


def _stop_clock():
    _signal.setitimer(_signal.ITIMER_REAL, 0)


def _claim_name(request, state: dict, cleanup: ExitStack):
    """`run -d`: the VM's directory, its name claimed and `state` recorded; removed again
    if the start fails."""
    import shutil

    from minivm import vms
    vm_dir = vms.VMDir.create(request.name or vms.new_name(), state)
    cleanup.callback(shutil.rmtree, vm_dir.path, True)
    return vm_dir


def _narrate_qemu_options(config):
    from minivm import qemu
    for opt in qemu.qemu_options(config) if explain.enabled() else ():
        explain.narrate(f"qemu {' '.join(opt.args)}: {opt.why}", opt.doc, opt.where)


def _start_detached(config, vm_dir, state: dict):
    from minivm import vms
    config.serial = f"file:{vm_dir.file('console.log')}"
    config.devices += vms.control_options(vm_dir)
    _narrate_qemu_options(config)
    vms.start(config, vm_dir, state)
    _stop_clock()


class Devices:
    """What the VM gets beyond CPU, memory and console: QEMU options, guest kernel modules."""

    def __init__(self):
        self.options, self.modules = [], []
        self.setup: list[list[str]] = []  # commands for the guest's /init (initramfs.py)
        self.fds: list[int] = []          # descriptors QEMU inherits
        self.network: dict = {}           # the NIC's lease owner and address, for state.json


def _attach_devices(request, guest_kernel, disks, folders, nonce: str, cleanup: ExitStack,
                    vm_dir=None) -> Devices:
    """Make each requested device's host side; `cleanup` undoes it when the VM is gone.
    A detached VM (vm_dir) keeps its files in its directory, others in $TMPDIR, and gets
    free page reporting where its kernel has the driver (balloon.py)."""
    devices = Devices()
    if vm_dir:
        from minivm import balloon
        if balloon.supported(guest_kernel):
            devices.options += balloon.options()
    if disks:
        from minivm import disk
        directory, prefix = ((str(vm_dir.path), "") if vm_dir else
                             (os.environ.get("TMPDIR", "/tmp"), f"minivm-{os.getpid()}-{nonce}-"))
        overlays, options = disk.attach(disks, directory, prefix)
        cleanup.callback(disk.remove, overlays)
        explain.narrate(f"qcow2 overlays over {', '.join(map(str, request.disks))}: "
                        f"{', '.join(map(str, overlays))}", "qemu-img(1) create -b -F",
                        disk.attach)
        devices.options += options
        devices.modules += disk.GUEST_MODULES
    if request.network == "bridge":
        from minivm import nic, vms
        owner = vms.lease_owner(vm_dir.name) if vm_dir else f"minivm-{nonce}"
        card = nic.connect(owner, f"mv{nonce[:12]}")
        cleanup.callback(nic.release, owner)
        cleanup.callback(os.close, card.tap_fd)
        explain.narrate(f"tap {card.tap_name} on minibox0, guest address {card.address}/"
                        f"{card.subnet.prefixlen} via {card.gateway}",
                        "Documentation/networking/tuntap.rst, rtnetlink(7)",
                        nic.connect)
        devices.options += card.options()
        devices.modules += nic.GUEST_MODULES
        devices.setup += card.guest_setup()
        devices.fds.append(card.tap_fd)
        devices.network = {"owner": owner, "address": str(card.address)}
    if folders or request.sandbox:
        from minivm import shares
        attached = shares.attach(folders, request.sandbox)
        explain.narrate("host folders over 9p, mounted by /init: " + "; ".join(
            " ".join(step) for step in attached.setup), "Documentation/filesystems/9p.rst, "
            "overlayfs.rst (sandbox)", shares.attach)
        devices.options += attached.options
        devices.modules += attached.modules
        devices.setup += attached.setup
    return devices


def _boot(config, nonce: str, request, started: float):
    from minivm import qemu
    from minivm.console import ConsoleParser

    _narrate_qemu_options(config)
    for param in qemu.kernel_parameters(config) if explain.enabled() else ():
        explain.narrate(f"kernel parameter {param.args[0]}: {param.why}", param.doc,
                        param.where)
    explain.narrate("starting QEMU; kernel messages follow as [guest] lines",
                    "qemu-system-x86_64(1)", qemu.run)
    console = qemu.Console(show_kernel=config.boot_log_shown,
                           stdin_fd=sys.stdin.fileno() if request.interactive or request.tty
                           else None)
    parser = ConsoleParser(nonce, crlf=request.tty)
    terminal = nullcontext()
    if request.tty:
        from minibox.terminal import RawMode
        terminal = RawMode(sys.stdin.fileno())
        progress("interactive guest: press Ctrl-] to quit")
    with terminal:
        _stop_clock()
        return qemu.run(config, parser, console, request.timeout, started)


def terminal_size(stream) -> tuple[int, int]:
    """(lines, columns) of the terminal `stream` is, or 24x80 when it is none."""
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.lines, size.columns
    except (AttributeError, ValueError, OSError):  # no stream, a closed one, not a terminal
        return 24, 80


def _report(result, command, guest_kernel, request, phases, memory: int | None = None) -> int:
    """Turn a qemu.Result into messages on stderr and minivm's exit status. memory: the
    guest's RAM in MiB, for the message about a guest that ran out of it."""
    if request.timings:
        rows = sorted(phases + result.phases, key=lambda phase: phase[1])
        sys.stderr.write("minivm timings (seconds since minivm started):\n" + "".join(
            f"  {name:<20} {seconds:7.3f}\n" for name, seconds in rows))
    if result.guest_release and result.guest_release != guest_kernel.release:
        progress(f"warning: expected kernel {guest_kernel.release}, "
                 f"but the guest runs {result.guest_release}")
    last_lines = "".join(f"\n  {line}" for line in result.kernel_tail[-6:])
    if result.timed_out:
        progress(f"timeout: the guest did not finish within {request.timeout:g} s; QEMU was "
                 f"killed. Last kernel lines:{last_lines or ' (none)'}")
        return EXIT_TIMEOUT
    if result.escaped:
        progress("left the guest (Ctrl-]); QEMU was stopped")
        return 128 + _signal.SIGINT
    if result.setup_failed:
        raise MinivmError(f"the guest could not be prepared: {result.setup_failed}")
    if result.not_found:
        progress(f"{command[0]}: command not found in the guest")
        return EXIT_NOT_FOUND
    if result.out_of_memory:
        progress(f"the guest ran out of memory{f' ({memory}M, more with -m)' if memory else ''}"
                 f": its kernel killed the command: {result.out_of_memory}")
    if result.status is None:
        qemu_said = result.qemu_errors.strip().splitlines()[-1:] or ["nothing on stderr"]
        raise MinivmError(f"the guest stopped without reporting an exit status (QEMU exit "
                          f"status {result.qemu_status}, QEMU said: {qemu_said[0]}). "
                          f"Last kernel lines:{last_lines or ' (none)'}")
    return result.status
