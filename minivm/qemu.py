"""QEMU: the VM's hardware, one option at a time, and the process that runs it.

A VMConfig says what the guest gets; qemu_options() turns it into QEMU options, each with the
reason it is there and where that is documented, so --explain can print them and a reader can
check them. spawn() starts QEMU (fork(2) and execve(2)); run() feeds a foreground QEMU's serial
console through console.ConsoleParser, enforces the timeout and records the phase timings.

The machine is QEMU's `microvm` (docs/system/i386/microvm.rst): no PCI, no firmware menus, no
emulated disks — a few ISA devices and virtio-mmio slots, made for fast-booting guests. The
device modules (shares.py: virtio-9p; disk.py: virtio-blk; nic.py: virtio-net; vms.py: QMP
and the control port of a detached VM) append their options to VMConfig.devices; --append's
kernel parameters (e.g. `cgroup_no_v1=all`) go to VMConfig.kernel_args.
"""
import _signal  # not signal.py, as in minibox/waiting.py: its enums' import at each boot
import os
import select
import sys
import time
from collections import namedtuple

import prctl  # python-prctl: a C extension, lighter to load than ctypes for two calls

from minibox.explain import caller
from minivm import MinivmError
from minivm.console import ConsoleParser

QEMU_BINARY = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
ESCAPE_BYTE = b"\x1d"  # Ctrl-], telnet's escape key: ends an interactive session
EOF_BYTE = b"\x04"     # Ctrl-D: the guest terminal's end-of-file when piped input runs out
BOOT_LOG_BATCH_SECONDS = 0.01
# TCG's translation cache, in MiB. A boot of the tiny kernel fills ~22 MiB, and a smaller
# cache is flushed and filled again during it (16 MiB: a quarter slower); the default, 1 GiB,
# lets a long-running guest's cache grow that large (bench/README.md, "VM memory").
TB_CACHE_MIB = 64
# The command printed a newline and went quiet: show it after this long (console.release).
RELEASE_HELD_OUTPUT_SECONDS = 0.05


# Some QEMU options (or one kernel parameter), why they are there, where that is documented,
# and the file:line that added them, for --explain.
Option = namedtuple("Option", "args why doc where")


def option(*args: str, why: str, doc: str) -> Option:
    return Option(args, why, doc, caller())


class VMConfig:
    """What the guest gets. kernel_args and devices hold extra kernel parameters and QEMU
    devices (Options), for features beyond a bare command runner."""

    def __init__(self, kernel: str, initrd: str, memory_mib: int, cpus: int = 1,
                 accel: str = "tcg", tsc_khz: int | None = None,
                 kernel_args: list[Option] = (), devices: list[Option] = (),
                 acpi: bool = False, serial: str = "stdio", pass_fds: tuple[int, ...] = (),
                 pit_tick: bool = True, boot_log_shown: bool = True):
        self.kernel, self.initrd = kernel, initrd
        self.boot_log_shown = boot_log_shown  # -v: the kernel's lines go to the user as they come
        # Under TCG, tick with the PIT instead of the local APIC timer (faster to emulate).
        # Only for kernels known to take it: measured here, Debian's 6.1 kernel with
        # noapictimer never ends a normal RCU grace period, so the first cgroup migration
        # (which waits for one while holding the lock that fork(2) needs) froze the guest.
        self.pit_tick = pit_tick
        self.serial = serial  # where ttyS0 goes: stdio, or file:PATH for a detached VM
        self.pass_fds = pass_fds  # descriptors QEMU inherits (a tap device's: -netdev fd=N)
        self.acpi = acpi  # describe devices in ACPI tables (see machine())
        self.memory_mib, self.cpus = memory_mib, cpus
        self.accel, self.tsc_khz = accel, tsc_khz
        self.kernel_args, self.devices = list(kernel_args), list(devices)


def kernel_parameters(config: VMConfig) -> list[Option]:
    """The guest kernel's command line (Documentation/admin-guide/kernel-parameters.txt)."""
    params = [
        option("console=ttyS0", why="kernel messages go to the first serial port, which QEMU "
               "connects to minivm", doc="kernel-parameters: console="),
        option("reboot=t", why="without ACPI the kernel has no way to reset but a triple "
               "fault; other methods loop forever", doc="kernel-parameters: reboot="),
        option("panic=-1", why="a panicking guest reboots at once (so QEMU exits, see "
               "-no-reboot) instead of hanging until the timeout", doc="kernel-parameters: panic="),
        option("pci=off", why="microvm has no PCI bus: do not probe for one (through ACPI "
               "on Debian's kernel, a noticeable part of its TCG boot; bench/README.md)",
               doc="kernel-parameters: pci=off"),
    ]
    if not config.boot_log_shown:
        params.append(option(
            "printk.time=0", why="no timestamp before each kernel line when nobody reads them "
            "as they come (no -v): a fifth fewer bytes through the emulated UART, one I/O exit "
            "and one write(2) of QEMU's each (bench/README.md); "
            "a guest that hangs still shows its last lines, and /init turns them back on for "
            "dmesg", doc="kernel-parameters: printk.time="))
    if config.accel == "tcg":
        if config.tsc_khz:
            params.append(option(
                f"tsc_early_khz={config.tsc_khz}", why="microvm has no HPET or PM timer to "
                "calibrate the TSC against; when calibration fails (~5% of boots here) the "
                "kernel stalls. Under TCG the guest TSC ticks at the host's rate, so tell it",
                doc="kernel-parameters: tsc_early_khz="))
        if config.pit_tick:
            params.append(option(
                "noapictimer", why="emulating the local APIC timer is slow under TCG; the PIT "
                "serves as the tick", doc="kernel-parameters: noapictimer"))
        params += [
            option("no_timer_check", why="skip the boot-time test of the timer interrupt, a "
                   "busy wait for ticks (bench/README.md, issue 19); QEMU's emulated timer is "
                   "not the broken chipset the test looks for",
                   doc="kernel-parameters: no_timer_check, arch/x86/kernel/apic/io_apic.c"),
            option("cryptomgr.notests", why="skip the crypto self-tests that run at every boot "
                   "(a noticeable share of a TCG boot)", doc="kernel-parameters: cryptomgr.notests"),
            option("noreplace-smp", why="on one CPU the kernel would rewrite every SMP lock "
                   "prefix into a no-op at boot; under TCG each rewrite throws translated code "
                   "away (~50 ms measured with the tiny kernel)",
                   doc="kernel-parameters: noreplace-smp, arch/x86/kernel/alternative.c"),
        ]
    return params + config.kernel_args


def machine(config: VMConfig) -> Option:
    """microvm (QEMU docs/system/i386/microvm.rst): no PCI, no firmware menus, virtio-mmio
    slots. The guest must learn where QEMU put each virtio-mmio device, one of two ways:
    with acpi=off QEMU appends `virtio_mmio.device=<size>@<address>:<irq>` to the kernel
    command line, which only a kernel with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES reads (the tiny
    kernel; not Debian's); with ACPI on, QEMU lists them in its ACPI tables (DSDT), which
    Debian's kernel reads, at the price of ACPI's start-up under emulation."""
    if config.acpi:
        return option("-M", "microvm,acpi=on", why="a minimal machine; its ACPI tables tell "
                      "this kernel where the virtio-mmio devices are (it cannot read them "
                      "from its command line)", doc="QEMU docs/system/i386/microvm.rst")
    return option("-M", "microvm,acpi=off", why="a minimal machine with no PCI and no firmware "
                  "tables; QEMU describes its virtio-mmio devices on the kernel command line",
                  doc="QEMU docs/system/i386/microvm.rst")


def qemu_options(config: VMConfig) -> list[Option]:
    """Every QEMU option, in order (qemu-system-x86_64(1), QEMU docs/system/invocation)."""
    accel = [option("-accel", f"tcg,tb-size={TB_CACHE_MIB}", why="TCG: QEMU translates "
                    f"guest instructions itself and keeps the translations, in at most "
                    f"{TB_CACHE_MIB} MiB (1 GiB by default) before it starts over",
                    doc="QEMU docs: -accel tcg,tb-size")]
    if config.accel == "kvm":
        accel = [option("-accel", "kvm", "-cpu", "host", why="KVM runs the guest on the real "
                        "CPU; -cpu host exposes its features", doc="QEMU docs: -accel, -cpu")]
    command_line = " ".join(param.args[0] for param in kernel_parameters(config))
    return [
        machine(config),
        *accel,
        option("-m", f"{config.memory_mib}M", why="guest RAM", doc="QEMU docs: -m"),
        option("-smp", str(config.cpus), why="virtual CPUs", doc="QEMU docs: -smp"),
        option("-nodefaults", "-no-user-config", why="no default devices (VGA, NIC, floppy...) "
               "and no system config file: the VM has exactly what this list says",
               doc="QEMU docs: -nodefaults, -no-user-config"),
        option("-display", "none", why="no window: the serial port is the only console",
               doc="QEMU docs: -display"),
        option("-serial", config.serial, why="the guest's ttyS0: QEMU's stdin/stdout, pipes to "
               "minivm (a detached VM's goes to its console.log)", doc="QEMU docs: -serial"),
        option("-no-reboot", why="a guest reboot (reboot=t, panic=-1) ends QEMU instead",
               doc="QEMU docs: -no-reboot"),
        option("-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", why="a write to I/O port "
               "0xf4 ends QEMU at once: the fastest clean way out for /init",
               doc="QEMU hw/misc/debugexit.c"),
        option("-kernel", str(config.kernel), why="boot this uncompressed ELF vmlinux through "
               "its PVH entry point: no bootloader, no decompression",
               doc="QEMU docs/system/i386/microvm.rst, Linux arch/x86/platform/pvh"),
        option("-initrd", str(config.initrd), why="the cpio archive the kernel unpacks as its "
               "root filesystem", doc="Linux Documentation/filesystems/ramfs-rootfs-initramfs.rst"),
        option("-append", command_line, why="the kernel command line (parameters listed "
               "separately)", doc="QEMU docs: -append"),
        *config.devices,
    ]


def argv(config: VMConfig) -> list[str]:
    return [QEMU_BINARY] + [arg for opt in qemu_options(config) for arg in opt.args]


class Result:
    """How a run ended, as far as the host can tell."""

    def __init__(self):
        self.status: int | None = None         # the guest command's exit status, if told
        self.not_found = False                 # the command does not exist in the guest
        self.setup_failed: str | None = None   # why /init could not prepare the guest
        self.out_of_memory: str | None = None  # the guest kernel's OOM report, if it killed
        self.guest_release: str | None = None  # `uname -r` as the guest's /init saw it
        self.timed_out = False
        self.escaped = False                   # the user left with the escape key
        self.qemu_status: int | None = None
        self.qemu_errors = ""                  # what QEMU printed on stderr
        self.kernel_tail: list[str] = []
        self.phases: list[tuple[str, float]] = []  # (name, seconds since minivm started)


# A QEMU that spawn() started: its pid and minivm's ends of its serial console, stderr and
# (with -i) stdin; None for what does not come back to minivm (a detached VM's).
Child = namedtuple("Child", "pid serial errors input")


def binary() -> str:
    """The path of QEMU's program on $PATH (shutil.which, without importing shutil and the
    bz2 and lzma it loads); MinivmError when it is not installed."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory, QEMU_BINARY)
        if os.access(path, os.X_OK):
            return path
    raise MinivmError(f"{QEMU_BINARY} not found: install the {QEMU_PACKAGE} package "
                      f"(apt-get install {QEMU_PACKAGE})")


def spawn(config: VMConfig, stdin: bool = False, log: int | None = None) -> Child:
    """Start QEMU with fork(2) and execve(2), for a run in the foreground (log None) or a
    detached VM (vms.py's watchdog; `log`: the descriptor of its qemu.log).

    In the foreground, QEMU's serial console (its stdout) and stderr come back through
    pipes, and PR_SET_PDEATHSIG (prctl(2)) asks the kernel to SIGKILL QEMU when minivm dies,
    even by SIGKILL, so no guest outlives its minivm. A detached VM's console is a file
    (config.serial), its stderr goes to `log`, and it must outlive the watchdog that starts
    it (which kills it itself if `run -d` fails). It also runs without transparent huge
    pages (prctl(2) PR_SET_THP_DISABLE, kept across execve(2)): QEMU asks for them on guest
    RAM and its code cache (madvise(2) MADV_HUGEPAGE), and then each byte an idle guest
    touched keeps 2 MiB of host memory resident (Documentation/admin-guide/mm/transhuge.rst).
    A foreground run keeps them: its guest is gone in a moment, and boots faster with them:
    2 MiB page faults instead of 512 small ones each (bench/README.md, issue 19).

    Both take a session of their own (setsid(2)): a Ctrl-C on the host terminal reaches
    minivm, which stops QEMU itself, rather than QEMU dying first with the exit status lost.
    An exec that fails is told through a close-on-exec pipe: the parent reads EOF once QEMU
    runs. (Not subprocess: the threading, selectors and locale it imports slowed every boot;
    and the program is found on $PATH here, not by execvp in the child, where
    os.get_exec_path's import of warnings held QEMU back: bench/README.md, issue 19.)"""
    args, program = argv(config), binary()
    foreground = log is None
    fds = [os.pipe() for _ in range(4)]  # serial, stderr, stdin, the failed exec's report
    (serial, serial_w), (errors, errors_w), (input_r, input_w), (report, report_w) = fds
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if foreground:
                prctl.set_pdeathsig(_signal.SIGKILL)
            else:
                prctl.set_thp_disable(True)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(input_r if stdin else null, 0)
            os.dup2(serial_w if foreground else null, 1)
            os.dup2(errors_w if foreground else log, 2)
            # As subprocess's close_fds: no descriptor that minivm inherited by chance stays
            # open in QEMU; the report pipe closes itself at the exec.
            low = 3
            for fd in sorted({*config.pass_fds, report_w}) + [os.sysconf("SC_OPEN_MAX")]:
                os.closerange(low, fd)
                low = fd + 1
            for fd in config.pass_fds:
                os.set_inheritable(fd, True)
            os.execv(program, args)
        except OSError as error:
            os.write(report_w, error.strerror.encode())
        finally:
            os._exit(127)
    for fd in (serial_w, errors_w, input_r, report_w):
        os.close(fd)
    failure = os.read(report, 4096).decode()
    os.close(report)
    if failure:
        os.waitpid(pid, 0)
        for fd in (serial, errors, input_w):
            os.close(fd)
        raise MinivmError(f"cannot start {QEMU_BINARY}: {failure}")
    if not stdin:
        os.close(input_w)
    if not foreground:
        os.close(serial)
        os.close(errors)
    return Child(pid, serial if foreground else None, errors if foreground else None,
                 input_w if stdin else None)


class Console:
    """Where the guest's parts go: output to stdout, kernel lines to stderr (when shown)."""

    def __init__(self, show_kernel: bool, stdin_fd: int | None = None):
        self.show_kernel = show_kernel
        self.stdin_fd = stdin_fd  # forwarded to the guest (-i), None otherwise

    def output(self, data: bytes):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def kernel(self, lines: list[str]):
        if self.show_kernel and lines:
            sys.stderr.write("".join(f"[guest] {line}\n" for line in lines))
            sys.stderr.flush()


def run(config: VMConfig, parser: ConsoleParser, console: Console, timeout: float,
        started: float) -> Result:
    """Boot, relay the console until QEMU exits or the timeout; never leave QEMU running."""
    result = Result()

    def phase(name: str):
        result.phases.append((name, time.monotonic() - started))

    qemu = spawn(config, stdin=console.stdin_fd is not None)
    exited = os.pidfd_open(qemu.pid)  # readable once QEMU exits (pidfd_open(2))
    phase("qemu spawned")
    try:
        ending = _relay(qemu, parser, console, started + timeout, result, phase)
        result.timed_out = ending == "timeout"
        result.escaped = ending == "escape"
        if ending == "serial closed":
            result.qemu_status = _wait(qemu.pid, exited, started + timeout)
            result.timed_out = result.qemu_status is None
            if not result.timed_out:  # a QEMU still running keeps its stderr open
                result.qemu_errors += _read_all(qemu.errors).decode(errors="replace")
                phase("qemu exited")
    finally:
        if result.qemu_status is None:
            os.kill(qemu.pid, _signal.SIGKILL)  # our child, not yet reaped: the PID is still its
            os.waitpid(qemu.pid, 0)
        for fd in (exited, qemu.serial, qemu.errors, qemu.input):
            if fd is not None:
                os.close(fd)
    result.kernel_tail = list(parser.kernel_tail)
    return result


def _wait(pid: int, pidfd: int, deadline: float) -> int | None:
    """QEMU's exit status (-N for signal N, as subprocess says it), or None if it is still
    running at `deadline`: its pidfd becomes readable when it exits (pidfd_open(2),
    select(2)), then waitpid(2) reaps it."""
    exited, _, _ = select.select([pidfd], [], [], max(deadline - time.monotonic(), 0))
    if not exited:
        return None
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _read_all(fd: int) -> bytes:
    """What is left in a pipe, up to its end (every writer closed it)."""
    chunks = [os.read(fd, 65536)]
    while chunks[-1]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks)


def _relay(qemu: Child, parser: ConsoleParser, console: Console, deadline: float,
           result: Result, phase) -> str:
    """Move bytes until the serial port closes. Returns why it stopped:
    "serial closed", "timeout" or "escape" (the user pressed the escape key)."""
    serial, errors = qemu.serial, qemu.errors
    watched = {serial, errors}
    first_output = True
    while serial in watched:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        # Host input waits until /init runs: before the guest opens its console, the UART
        # driver's start-up discards whatever arrived (8250 serial8250_do_startup()).
        if console.stdin_fd is not None and result.guest_release is not None:
            watched.add(console.stdin_fd)
        if parser.holding():
            remaining = min(remaining, RELEASE_HELD_OUTPUT_SECONDS)
        ready, _, _ = select.select(list(watched), [], [], remaining)
        if not ready and parser.holding():
            _dispatch(parser.release(), console, result, phase)
        for fd in ready:
            data = os.read(fd, 65536)
            if fd == serial and data:
                if first_output:
                    phase("first kernel output")
                    first_output = False
                _dispatch(parser.feed(data), console, result, phase)
            elif fd == errors and data:
                result.qemu_errors += data.decode(errors="replace")
            elif fd == console.stdin_fd:
                if not data:  # host input is over: the guest reader gets end-of-file
                    _forward_input(EOF_BYTE, qemu)
                    console.stdin_fd = None
                    watched.discard(fd)
                    continue
                before, escape, _ = data.partition(ESCAPE_BYTE)
                if before:
                    _forward_input(before, qemu)
                if escape:
                    return "escape"
            else:
                watched.discard(fd)
        if result.guest_release is None and serial in watched:
            # Booting: QEMU passes the serial port on as the guest writes it, often a byte
            # per write(2). Waking for each byte would cost thousands of wakeups per boot,
            # taking CPU from the emulator; the boot log can wait a few milliseconds.
            time.sleep(BOOT_LOG_BATCH_SECONDS)
    return "serial closed"


def _dispatch(chunk, console: Console, result: Result, phase):
    console.kernel(chunk.kernel_lines)
    if chunk.output:
        console.output(chunk.output)
    for event in chunk.events:
        if event.name == "init":
            result.guest_release = event.value
            phase("init started")
        elif event.name == "notfound":
            result.not_found = True
        elif event.name == "failed":
            result.setup_failed = event.value
        elif event.name == "oom":
            result.out_of_memory = event.value
        elif event.name == "exit":
            result.status = int(event.value)
            phase("command done")


def _forward_input(data: bytes, qemu: Child):
    """Send host input to the guest's serial port; a guest that is gone just misses it."""
    try:
        os.write(qemu.input, data)
    except BrokenPipeError:
        pass
