"""The `minivm` command: parse, call the library, print. No VM work happens here.

    minivm run [--kernel PATH] [-m 256M] [--cpus N] [--accel auto|kvm|tcg] [-i] [-t]
               [-v HOSTDIR:GUESTDIR[:ro]]... [--disk IMAGE]... [--network none|bridge]
               [--append PARAMS] [--timeout S] [--timings] [--explain] [--verbose]
               -- CMD [ARG...]
    minivm run -d [--name NAME] [OPTIONS] -- CMD [ARG...]
    minivm sandbox [the options of run] -- CMD [ARG...]
    minivm ps | logs NAME | pause NAME | resume NAME | stop [-t S] NAME | rm [-f] NAME
    minivm gc
    minivm kvm-hello
    minivm kernel list
    minivm kernel fetch [--package NAME]
    minivm kernel build

argparse rather than click, as minibox's CLI: minivm's work is booting in well under two
seconds, and click's import alone costs ~30 ms of that.

Exit status: the guest command's own; 124 when the timeout killed the guest; 125 for minivm's
own errors (bad options, no QEMU, no kernel...), like `docker run`; 127 when the command is
not in the guest.
"""
import argparse
import os
import re
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

from minibox.shared import exit_now
from minivm import MinivmError, accel

EXIT_TIMEOUT = 124
EXIT_MINIVM_ERROR = 125
EXIT_NOT_FOUND = 127
# The stock Debian kernel keeps ~50 MB for itself; measured here, 80M panics while
# unpacking the initramfs and 64M never prints a line. 96M boots.
MIN_MEMORY_MIB = 96
DEFAULT_TIMEOUT = 120.0  # a stock kernel boots in ~2 s under TCG; generous for loaded CI


class TimedOut(Exception):
    """--timeout ran out before QEMU started (qemu.run watches the same deadline after)."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without `import shutil` on every boot.

    argparse makes a formatter for each add_argument(), and its own imports shutil (which
    loads bz2 and lzma, ~3 ms) to ask the terminal's width; this one asks os directly, the
    way shutil.get_terminal_size() does: $COLUMNS, else stdout's terminal, else 80."""

    def __init__(self, prog):
        columns = os.environ.get("COLUMNS", "")
        columns = ((int(columns) if columns.isdigit() else 0)
                   or _terminal_size(sys.__stdout__)[1] or 80)  # a 0x0 terminal: `script`
        super().__init__(prog, width=columns - 2)


class OneLineParser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit 125, not a usage dump."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(EXIT_MINIVM_ERROR, f"minivm: {message} (see `{self.prog} --help`)\n")


def memory_mib(text: str) -> int:
    """'256M', '1G', '512' (MiB) -> MiB."""
    found = re.fullmatch(r"(\d+)\s*(?:([mg])(?:i?b)?)?", text.strip(), re.IGNORECASE)
    if not found:
        raise MinivmError(f"-m {text}: not a memory size; use e.g. 256M or 1G")
    size = int(found.group(1)) * (1024 if (found.group(2) or "").lower() == "g" else 1)
    if size < MIN_MEMORY_MIB:
        raise MinivmError(f"-m {text}: a guest needs at least {MIN_MEMORY_MIB}M")
    host_mib = _host_memory_mib()
    if size > host_mib:
        raise MinivmError(f"-m {text}: more than this host's {host_mib}M of RAM")
    return size


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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="minivm", description="Boot a small Linux guest under QEMU and "
                           "run one command in it.")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)
    run = commands.add_parser("run", help="boot a guest, run CMD in it, exit with its status",
                              epilog="Exit status: CMD's; 124 timeout; 125 minivm error; "
                              "127 CMD not in the guest. With -t, Ctrl-] quits.")
    run.add_argument("--kernel", type=Path, help="a bzImage or vmlinux to boot (default: the "
                     "tiny kernel once built, else the cached one, else /boot/vmlinuz-*, else "
                     "Debian's, downloaded)")
    run.add_argument("-m", "--memory", default="256M", help="guest RAM (default 256M)")
    run.add_argument("--cpus", type=int, default=1, help="virtual CPUs (default 1)")
    run.add_argument("--accel", choices=accel.CHOICES, default="auto",
                     help="kvm, tcg (emulation) or auto: kvm only where it really works")
    run.add_argument("-i", "--interactive", action="store_true", help="send stdin to CMD")
    run.add_argument("-t", "--tty", action="store_true", help="a terminal for CMD (host "
                     "terminal in raw mode; Ctrl-] quits)")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="kill the guest "
                     f"after this many seconds (default {DEFAULT_TIMEOUT:.0f})")
    run.add_argument("--timings", action="store_true", help="print phase timings on stderr")
    run.add_argument("--explain", action="store_true", help="narrate every step on stderr")
    run.add_argument("--verbose", action="store_true", help="show the kernel's boot "
                     "messages (on stderr)")
    run.add_argument("-v", "--volume", action="append", default=[],
                     metavar="HOSTDIR:GUESTDIR[:ro]", help="share a host folder with the guest "
                     "over virtio-9p, read-only with :ro (repeatable)")
    run.add_argument("--append", default="", metavar="PARAMS", help="more kernel command line "
                     "parameters, e.g. cgroup_no_v1=all")
    run.add_argument("-d", "--detach", action="store_true", help="start the VM in the "
                     "background and print its name (see ps, logs, pause, resume, stop, rm)")
    run.add_argument("--name", help="name of a detached VM (default: vm-<6 hex digits>)")
    run.add_argument("--disk", type=Path, action="append", default=[], metavar="IMAGE",
                     help="attach IMAGE as /dev/vda (repeat for vdb...) through a qcow2 "
                     "overlay: the guest may write, the image never changes")
    run.add_argument("--network", choices=("none", "bridge"), default="none",
                     help="none (default): no NIC; bridge: a virtio NIC on a tap in minibox0, "
                     "addressed from the containers' pool")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    # Everything `run` takes; a parser copies its parents' options (argparse `parents=`).
    commands.add_parser("sandbox", parents=[run], add_help=False,
                        help="run a host program under the guest kernel: the host's root, "
                        "read-only, with a throwaway tmpfs over it",
                        description="Like kvmtool's `lkvm sandbox`: the guest's root is the "
                        "host's, shared read-only over 9p with a tmpfs overlay on top, so CMD "
                        "is a host program; it starts in the current directory and its writes "
                        "vanish with the VM unless they go to a -v folder.")

    commands.add_parser("ps", help="list detached VMs and their status")
    for name, what in (("logs", "print what a detached VM's command wrote"),
                       ("pause", "pause a detached VM's vCPUs (QMP stop)"),
                       ("resume", "resume a paused VM (QMP cont)")):
        commands.add_parser(name, help=what).add_argument("name")
    stop = commands.add_parser("stop", help="ask a detached VM's guest to end its command; "
                               "after the grace time, quit QEMU")
    stop.add_argument("-t", "--time", type=float, default=10.0, help="seconds of grace "
                      "(default 10)")
    stop.add_argument("name")
    remove = commands.add_parser("rm", help="remove a stopped VM and its files")
    remove.add_argument("-f", "--force", action="store_true", help="kill it first if running")
    remove.add_argument("name")
    commands.add_parser("gc", help="remove what killed runs left: half-made VMs (their "
                        "QEMU too), addresses of dead runs, their files in $TMPDIR")
    commands.add_parser("kvm-hello", help="a lesson: a VM from raw /dev/kvm ioctls that "
                        "runs a few real-mode instructions, each VM exit printed")
    kernel = commands.add_parser("kernel", help="list, fetch or build guest kernels")
    kernel_commands = kernel.add_subparsers(dest="kernel_command", required=True,
                                            metavar="list|fetch|build",
                                            parser_class=OneLineParser)
    kernel_commands.add_parser("list", help="kernels minivm can boot, the default marked *")
    fetch = kernel_commands.add_parser("fetch", help="download Debian's kernel into the cache")
    fetch.add_argument("--package", help="a linux-image-* package (default: the one "
                       "linux-image-amd64 depends on)")
    kernel_commands.add_parser("build", help="build the tiny kernel from Debian's linux-source "
                               "(~5 min); `run` prefers it from then on")
    return parser


def progress(message: str):
    print(f"minivm: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None):
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    # SIGTERM/SIGHUP become exceptions, so the `finally` that stops QEMU runs.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    code = 0
    try:
        if args.command_name in ("run", "sandbox"):
            code = run(args, started)
        elif args.command_name in VM_COMMANDS:
            VM_COMMANDS[args.command_name](args)
        elif args.command_name == "kvm-hello":
            from minivm import kvmhello
            kvmhello.main()
        elif args.kernel_command == "list":
            list_kernels()
        elif args.kernel_command == "build":
            build_kernel()
        else:
            fetch_kernel(args.package)
    except MinivmError as error:
        print(f"minivm: {error}", file=sys.stderr)
        code = EXIT_MINIVM_ERROR
    except TimedOut:
        progress(f"timeout: the guest did not start within {args.timeout:g} s")
        code = EXIT_TIMEOUT
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BrokenPipeError:
        # Whoever read our stdout left (`minivm run -- yes | head`); QEMU is already stopped.
        # Point stdout at /dev/null so the final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    if argv is not None:
        sys.exit(code)  # called from Python (tests): a normal exit
    exit_now(code)


def run(args, started: float) -> int:
    from minivm import initramfs, kernel, qemu
    from minivm.explain import Narrator, code_of

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        if not args.tty:
            raise MinivmError("run: no command given: minivm run [OPTIONS] -- CMD [ARG...]")
        command = ["sh"]
    memory = memory_mib(args.memory)
    cpus = cpu_count(args.cpus)
    if args.detach and (args.interactive or args.tty):
        raise MinivmError("-d runs the VM in the background: it cannot take -i or -t")
    if args.tty and not os.isatty(sys.stdin.fileno()):
        raise MinivmError("-t needs a terminal on stdin (for piped input use -i)")
    if args.name is not None and not args.detach:
        raise MinivmError("--name names a detached VM: use it with -d")
    if args.name is not None:
        from minivm import vms
        vms.VMDir(args.name).check_free()  # claimed later, atomically; this says it early
    if args.timeout <= 0:
        raise MinivmError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    _start_clock(started + args.timeout)
    # Bad input is one line, before anything else is said or done.
    disks = []
    if args.disk:
        from minivm import disk  # shutil, qemu-img: only for VMs that have disks
        disks = [(image, disk.base_format(image)) for image in args.disk]
    folders = []
    if args.volume:
        from minivm import shares  # device modules: imported only for VMs that have the device
        folders = [shares.parse(spec) for spec in args.volume]
    if not _on_path(qemu.QEMU_BINARY):
        raise MinivmError(f"{qemu.QEMU_BINARY} not found: install the {qemu.QEMU_PACKAGE} "
                          f"package (apt-get install {qemu.QEMU_PACKAGE})")
    narrator = Narrator(args.explain)
    phases = []

    choice = accel.choose(args.accel)
    if args.accel == "auto" and choice.name == "tcg":
        progress(f"using {choice.reason}")
    narrator.step(f"accelerator: {choice.reason}", "Documentation/virt/kvm/api.rst",
                  code_of(accel.kvm_problem))

    cache = kernel.cache_dir()
    guest_kernel = kernel.find(args.kernel, cache, progress)
    narrator.step(f"kernel {guest_kernel.release}: {guest_kernel.vmlinux}",
                  "Documentation/arch/x86/boot.rst (bzImage), QEMU microvm.rst (PVH)",
                  code_of(kernel.find))
    narrator.detail(f"from {guest_kernel.origin}")
    phases.append(("kernel ready", time.monotonic() - started))

    base, was_cached = initramfs.cached_base(cache)
    narrator.step(f"initramfs: {base} ({'cached' if was_cached else 'built now'}): "
                  "busybox-static, applet links, /etc/fstab, /init",
                  "Documentation/driver-api/early-userspace/buffer-format.rst",
                  code_of(initramfs.base_archive))
    nonce = os.urandom(8).hex()
    with ExitStack() as cleanup:
        vm_dir = _claim_name(args, {"command": command, "nonce": nonce},
                             cleanup) if args.detach else None
        devices = _attach_devices(args, disks, folders, nonce, cleanup, narrator, vm_dir)
        guest_modules = []
        if devices.modules:
            from minivm import modules
            guest_modules = modules.ModuleTree(guest_kernel.modules).load_order(devices.modules)
        if guest_modules:
            narrator.step(f"kernel modules for the guest, dependencies first: "
                          f"{' '.join(name for name, _ in guest_modules)}",
                          "modinfo(8) depends=, modprobe(8)",
                          code_of(modules.ModuleTree.load_order))
        rows, cols = _terminal_size(sys.stdin) if args.tty else (24, 80)
        place = {}
        if args.command_name == "sandbox":
            from minivm import shares
            place = dict(root=shares.SANDBOX_ROOT, cwd=os.getcwd(),
                         path=os.environ.get("PATH", os.defpath))
        run_archive = initramfs.run_archive(
            command, nonce, stdin=args.interactive, tty=args.tty, rows=rows, cols=cols,
            term=os.environ.get("TERM", "linux"), modules=guest_modules, setup=devices.setup,
            **place)
        narrator.step(f"appended a second cpio archive with /minivm/run.conf: the command "
                      f"{command!r}, single-quoted for sh", "sh(1p) Single-Quotes; shlex.quote",
                      code_of(initramfs.run_archive))
        initrd = initramfs.write_initrd(base, run_archive, nonce,
                                        vm_dir.path if vm_dir else None)
        try:
            phases.append(("initramfs ready", time.monotonic() - started))
            config = qemu.VMConfig(
                kernel=guest_kernel.vmlinux, initrd=initrd, memory_mib=memory, cpus=cpus,
                accel=choice.name, devices=devices.options,
                tsc_khz=accel.host_tsc_khz() if choice.name == "tcg" else None,
                kernel_args=[qemu.option(param, why="asked for with --append",
                                         doc="kernel-parameters.txt")
                             for param in args.append.split()],
                acpi=bool(devices.options)
                and not kernel.takes_mmio_devices_from_command_line(guest_kernel),
                pass_fds=tuple(devices.fds),
                pit_tick=guest_kernel.vmlinux.parent == kernel.tiny_dir(cache))
            if vm_dir:
                _start_detached(config, vm_dir, {"command": command, "nonce": nonce,
                                                 "network": devices.network}, narrator)
                cleanup.pop_all()  # the VM keeps its directory, overlays... until `minivm rm`
                print(vm_dir.name)
                return 0
            result = _boot(config, nonce, args, narrator, started)
        finally:
            initrd.unlink()  # QEMU read it at start; a detached VM is running by now
    return _report(result, command, guest_kernel, args, phases)


def _start_clock(deadline: float):
    """--timeout covers every phase, the kernel's extraction included: SIGALRM (setitimer(2))
    raises TimedOut wherever minivm is, and the `with` and `finally` blocks on the way out
    undo what was made. Stopped once QEMU runs: qemu.run() keeps the same deadline and
    reports the guest's last lines."""
    def expire(signum, frame):
        raise TimedOut
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))


def _stop_clock():
    signal.setitimer(signal.ITIMER_REAL, 0)


def _claim_name(args, state: dict, cleanup: ExitStack):
    """`run -d`: the VM's directory, its name claimed and `state` recorded; removed again
    if the start fails."""
    import shutil

    from minivm import vms
    vm_dir = vms.VMDir.create(args.name or vms.new_name(), state)
    cleanup.callback(shutil.rmtree, vm_dir.path, True)
    return vm_dir


def _start_detached(config, vm_dir, state: dict, narrator):
    from minivm import qemu, vms
    config.serial = f"file:{vm_dir.file('console.log')}"
    config.devices += vms.control_options(vm_dir)
    for opt in qemu.qemu_options(config) if narrator.enabled else ():
        narrator.step(f"qemu {' '.join(opt.args)}: {opt.why}", opt.doc, opt.where)
    vms.start(config, vm_dir, state)
    _stop_clock()


class Devices:
    """What the VM gets beyond CPU, memory and console: QEMU options, guest kernel modules."""

    def __init__(self):
        self.options, self.modules = [], []
        self.setup: list[list[str]] = []  # commands for the guest's /init (initramfs.py)
        self.fds: list[int] = []          # descriptors QEMU inherits
        self.network: dict = {}           # the NIC's lease owner and address, for state.json


def _attach_devices(args, disks, folders, nonce: str, cleanup: ExitStack, narrator,
                    vm_dir=None) -> Devices:
    """Make each requested device's host side; `cleanup` undoes it when the VM is gone.
    A detached VM (vm_dir) keeps its files in its directory, others in $TMPDIR."""
    from minivm.explain import code_of
    devices = Devices()
    if disks:
        from minivm import disk
        directory, prefix = ((vm_dir.path, "") if vm_dir else
                             (_scratch_dir(), f"minivm-{os.getpid()}-{nonce}-"))
        overlays, options = disk.attach(disks, directory, prefix)
        cleanup.callback(disk.remove, overlays)
        narrator.step(f"qcow2 overlays over {', '.join(map(str, args.disk))}: "
                      f"{', '.join(map(str, overlays))}", "qemu-img(1) create -b -F",
                      code_of(disk.attach))
        devices.options += options
        devices.modules += disk.GUEST_MODULES
    if args.network == "bridge":
        from minivm import nic, vms
        owner = vms.lease_owner(vm_dir.name) if vm_dir else f"minivm-{nonce}"
        card = nic.connect(owner, f"mv{nonce[:12]}")
        cleanup.callback(nic.release, owner)
        cleanup.callback(os.close, card.tap_fd)
        narrator.step(f"tap {card.tap_name} on minibox0, guest address {card.address}/"
                      f"{card.subnet.prefixlen} via {card.gateway}",
                      "Documentation/networking/tuntap.rst, rtnetlink(7)", code_of(nic.connect))
        devices.options += card.options()
        devices.modules += nic.GUEST_MODULES
        devices.setup += card.guest_setup()
        devices.fds.append(card.tap_fd)
        devices.network = {"owner": owner, "address": str(card.address)}
    if folders or args.command_name == "sandbox":
        from minivm import shares
        attached = shares.attach(folders, args.command_name == "sandbox")
        narrator.step("host folders over 9p, mounted by /init: " + "; ".join(
            " ".join(step) for step in attached.setup), "Documentation/filesystems/9p.rst, "
            "overlayfs.rst (sandbox)", code_of(shares.attach))
        devices.options += attached.options
        devices.modules += attached.modules
        devices.setup += attached.setup
    return devices


def _scratch_dir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp"))


def _boot(config, nonce: str, args, narrator, started: float):
    from minivm import qemu
    from minivm.console import ConsoleParser

    if narrator.enabled:
        for opt in qemu.qemu_options(config):
            narrator.step(f"qemu {' '.join(opt.args)}: {opt.why}", opt.doc, opt.where)
        for param in qemu.kernel_parameters(config):
            narrator.step(f"kernel parameter {param.args[0]}: {param.why}", param.doc, param.where)
        narrator.step("starting QEMU; kernel messages follow as [guest] lines",
                      "qemu-system-x86_64(1)")
    console = qemu.Console(show_kernel=args.verbose or args.explain,
                           stdin_fd=sys.stdin.fileno() if args.interactive or args.tty else None)
    parser = ConsoleParser(nonce, crlf=args.tty)
    terminal = nullcontext()
    if args.tty:
        from minibox.shared import raw_mode
        terminal = raw_mode(sys.stdin.fileno())
        progress("interactive guest: press Ctrl-] to quit")
    with terminal:
        _stop_clock()
        return qemu.run(config, parser, console, args.timeout, started)


def _on_path(program: str) -> bool:
    """shutil.which(), without importing shutil (and the bz2/lzma it pulls in) on every boot."""
    directories = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return any(os.access(os.path.join(directory, program), os.X_OK) for directory in directories)


def _terminal_size(stream) -> tuple[int, int]:
    """(lines, columns) of the terminal `stream` is, or 24x80 when it is none."""
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.lines, size.columns
    except (AttributeError, ValueError, OSError):  # no stream, a closed one, not a terminal
        return 24, 80


def _report(result, command, guest_kernel, args, phases) -> int:
    """Turn a qemu.Result into messages on stderr and minivm's exit status."""
    if args.timings:
        rows = sorted(phases + result.phases, key=lambda phase: phase[1])
        sys.stderr.write("minivm timings (seconds since minivm started):\n" + "".join(
            f"  {name:<20} {seconds:7.3f}\n" for name, seconds in rows))
    if result.guest_release and result.guest_release != guest_kernel.release:
        progress(f"warning: expected kernel {guest_kernel.release}, "
                 f"but the guest runs {result.guest_release}")
    last_lines = "".join(f"\n  {line}" for line in result.kernel_tail[-6:])
    if result.timed_out:
        progress(f"timeout: the guest did not finish within {args.timeout:g} s; QEMU was "
                 f"killed. Last kernel lines:{last_lines or ' (none)'}")
        return EXIT_TIMEOUT
    if result.escaped:
        progress("left the guest (Ctrl-]); QEMU was stopped")
        return 128 + signal.SIGINT
    if result.setup_failed:
        raise MinivmError(f"the guest could not be prepared: {result.setup_failed}")
    if result.not_found:
        progress(f"{command[0]}: command not found in the guest")
        return EXIT_NOT_FOUND
    if result.status is None:
        qemu_said = result.qemu_errors.strip().splitlines()[-1:] or ["nothing on stderr"]
        raise MinivmError(f"the guest stopped without reporting an exit status (QEMU exit "
                          f"status {result.qemu_status}, QEMU said: {qemu_said[0]}). "
                          f"Last kernel lines:{last_lines or ' (none)'}")
    return result.status


def list_vms(args):
    from minivm import vms
    print(f"{'NAME':<20} {'STATUS':<14} {'PID':>8}  {'ADDRESS':<15}  COMMAND")
    for vm_dir in vms.all_vms():
        state = vm_dir.state()
        pid = state["pid"] if vm_dir.running() else "-"
        address = state.get("network", {}).get("address", "-")
        print(f"{vm_dir.name:<20} {vm_dir.status():<14} {pid:>8}  {address:<15}  "
              f"{' '.join(state.get('command', []))}")


def show_logs(args):
    from minivm import vms
    vm_dir = vms.VMDir.find(args.name)
    if "started" not in vm_dir.state():
        raise MinivmError(f"{args.name} has no logs: its status is {vm_dir.status()}")
    sys.stdout.buffer.write(vms.command_output(vm_dir.file("console.log"),
                                               vm_dir.state()["nonce"]))


def pause_vm(args):
    from minivm import vms
    vms.pause(vms.VMDir.find(args.name), paused=args.command_name == "pause")


def stop_vm(args):
    from minivm import vms
    if args.time < 0:
        raise MinivmError(f"--time {args.time:g}: must be 0 or more seconds")
    progress(f"{args.name}: {vms.stop(vms.VMDir.find(args.name), args.time)}")


def remove_vm(args):
    from minivm import vms
    vms.remove(vms.VMDir.find(args.name), args.force)


def collect_garbage(args):
    from minivm import gc
    for line in gc.collect():
        print(line)


VM_COMMANDS = {"ps": list_vms, "logs": show_logs, "pause": pause_vm, "resume": pause_vm,
               "stop": stop_vm, "rm": remove_vm, "gc": collect_garbage}


def list_kernels():
    from minivm import kernel
    cache = kernel.cache_dir()
    tiny = kernel.tiny_kernel(cache)
    cached = ([tiny] if tiny else []) + kernel.cached_kernels(cache)
    boot = kernel.boot_kernels()
    if not cached and not boot:
        print(f"no kernels yet (cache: {cache}); `minivm kernel fetch` downloads Debian's")
    for index, entry in enumerate(cached):
        default = "*" if index == 0 else " "
        modules = entry.modules or ("drivers built in" if entry == tiny else "no modules")
        print(f"{default} {entry.release:<24} {entry.vmlinux}\n    {entry.origin}; {modules}")
    for index, path in enumerate(boot):
        default = "*" if index == 0 and not cached else " "
        print(f"{default} {path.name:<24} {path} (host /boot; extracted on first use)")


def build_kernel():
    from minivm import kernel, tinykernel
    built = tinykernel.build(kernel.cache_dir(), progress)
    print(f"{built.release} {built.vmlinux}")


def fetch_kernel(package: str | None):
    from minivm import kernel
    fetched = kernel.fetch(kernel.cache_dir(), progress, package)
    print(f"{fetched.release} {fetched.vmlinux}")
