"""`minivm run` and `minivm sandbox` read without click, from the one table of their options,
and the exit-status contract every minivm command shares.

A boot of the tiny kernel takes ~0.4 s, and minivm's own part of it is meant to stay under
5 %: importing click (with the inspect, typing, datetime and uuid it loads) costs more than
that alone (bench/README.md, "VM boot"). So `minivm/__main__.py` hands the command line here
first, as minibox/__main__.py hands the engines' calls to minibox/ocicalls.py. OPTIONS is
the only list of run's options: parse() reads a command line with it, and cli.py builds
click's options from it, for `--help` and for every shape parse() does not take:

    run|sandbox [--long VALUE | --long=VALUE | -x VALUE | --flag | -f]... [--] CMD [ARG...]

Anything else -- `-h`/`--help`, a cluster such as `-it` or `-m256M`, an unknown option, a
value click would refuse (`--cpus two`, `--accel xen`) or one that starts with `-` -- goes on
to click, so that help and bad usage read the same whichever way they came in. Like click's
parse with allow_interspersed_args off, options end at the first word of CMD (`minivm run
uname -a`: -a is uname's) or at `--`.
"""
import _signal  # not signal.py, as in minibox/waiting.py: its enums' import at each boot
import os
import sys
from collections import namedtuple

from minibox.errors import MiniboxError
from minivm import MinivmError, accel, vm

COMMANDS = ("run", "sandbox")

# type: bool for a flag; str, int or float for a value (paths are str: kernel.py's docstring
# says why); a tuple for a choice.
# shown: `--help` prints the default.
Option = namedtuple("Option", "names dest type default multiple metavar shown help")


def _option(*names, dest=None, type=str, default=None, multiple=False, metavar=None,
            shown=False, help):
    if type is bool:
        default = False
    elif multiple:
        default = ()
    dest = dest or names[-1].lstrip("-").replace("-", "_")
    return Option(names, dest, type, default, multiple, metavar, shown, help)


OPTIONS = (
    _option("--kernel", metavar="PATH", help="a bzImage or vmlinux to boot (default: the tiny "
            "kernel once built, else the cached one, else /boot/vmlinuz-*, else Debian's, "
            "downloaded)"),
    _option("-m", "--memory", help=f"guest RAM, e.g. 256M or 1G (default: "
            f"{vm.TINY_MEMORY.default}M for the tiny kernel, "
            f"{vm.DISTRIBUTION_MEMORY.default}M for others)"),
    _option("--cpus", type=int, default=1, shown=True, help="virtual CPUs"),
    _option("--accel", type=accel.CHOICES, default="auto", help="kvm, tcg (emulation) or "
            "auto: kvm only where it really works"),
    _option("-i", "--interactive", type=bool, help="send stdin to CMD"),
    _option("-t", "--tty", type=bool, help="a terminal for CMD (host terminal in raw mode; "
            "Ctrl-] quits)"),
    _option("--timeout", type=float, default=vm.DEFAULT_TIMEOUT, shown=True,
            help="kill the guest after this many seconds"),
    _option("--timings", type=bool, help="print phase timings on stderr"),
    _option("--explain", type=bool, help="narrate every step on stderr"),
    _option("--verbose", type=bool, help="show the kernel's boot messages (on stderr)"),
    _option("-v", "--volume", dest="volumes", multiple=True, metavar="HOSTDIR:GUESTDIR[:ro]",
            help="share a host folder with the guest over virtio-9p, read-only with :ro "
            "(repeatable)"),
    _option("--append", default="", metavar="PARAMS", help="more kernel command line "
            "parameters, e.g. cgroup_no_v1=all"),
    _option("-d", "--detach", type=bool, help="start the VM in the background and print its "
            "name (see ps, logs, pause, resume, stop, rm)"),
    _option("--name", help="name of a detached VM (default: vm-<6 hex digits>)"),
    _option("--disk", dest="disks", multiple=True, metavar="IMAGE",
            help="attach IMAGE as /dev/vda (repeat for vdb...) through a qcow2 overlay: the "
            "guest may write, the image never changes"),
    _option("--network", type=("none", "bridge"), default="none", help="none (default): no "
            "NIC; bridge: a virtio NIC on a tap in minibox0, addressed from the containers' "
            "pool"),
)
_BY_NAME = {name: option for option in OPTIONS for name in option.names}


class Request:
    """What `minivm run` (or `sandbox`) was asked for: the command, and an attribute per
    entry of OPTIONS (its dest: memory, cpus, volumes...), the entry's default unless
    given. vm.run() reads it."""

    def __init__(self, command, sandbox=False, **given):
        unknown = set(given) - {option.dest for option in OPTIONS}
        if unknown:
            raise TypeError(f"not options of run: {', '.join(sorted(unknown))}")
        self.command, self.sandbox = list(command), sandbox
        for option in OPTIONS:
            value = given.get(option.dest, option.default)
            setattr(self, option.dest, list(value) if option.multiple else value)


def main(argv, started):
    """Run `minivm run|sandbox ...` and exit, if parse() reads `argv`; else return.
    `started`: time.monotonic() when minivm started, for --timings."""
    call = parse(argv)
    if call is None:
        return
    command, options = call
    if options["network"] == "bridge" and not options["explain"]:
        from minibox import nethelper
        nethelper.start()  # importing pyroute2 from now on, on the other core (minivm/nic.py)
    from minibox.shared import exit_now
    exit_now(guarded(lambda: run(Request(**options, sandbox=command == "sandbox"), started)))


def parse(argv):
    """(command, {dest: value, "command": CMD}) as click would read `argv`, or None for a
    shape this does not read (the module's docstring lists them)."""
    if not argv or argv[0] not in COMMANDS:
        return None
    values = {option.dest: list(option.default) if option.multiple else option.default
              for option in OPTIONS}
    rest = list(argv[1:])
    while rest and rest[0].startswith("-") and rest[0] != "-":  # `-` alone is a word of CMD
        word = rest.pop(0)
        if word == "--":
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        option = _BY_NAME.get(name)
        if option is None or (option.type is bool and equals):
            return None
        if option.type is bool:
            values[option.dest] = True
            continue
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        try:
            value = convert(option.type, value)
        except ValueError:
            return None
        if option.multiple:
            values[option.dest].append(value)
        else:
            values[option.dest] = value
    return argv[0], dict(values, command=rest)


def convert(kind, text):
    """`text` as an option of type `kind` (OPTIONS' types but bool); ValueError, in words
    for the user, if it is not one. cli.py's click types call this too, so that both
    readings convert alike."""
    if isinstance(kind, tuple):
        if text not in kind:
            raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(kind)})")
        return text
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"invalid {kind.__name__} value: {text!r}") from None


def run(request, started):
    """Boot the request's guest (vm.run); its status, 124 if it timed out before QEMU ran."""
    try:
        return vm.run(request, started)
    except vm.TimedOut:
        vm.progress(f"timeout: the guest did not start within {request.timeout:g} s")
        return vm.EXIT_TIMEOUT


def guarded(call):
    """call()'s exit status, kept to the contract of every minivm command: minivm's own
    errors are one line on stderr and 125, as `docker run`'s; Ctrl-C is 130; SIGTERM and
    SIGHUP become exceptions, so the `finally` blocks that stop QEMU run."""
    for signum in (_signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    try:
        return call() or 0
    except (MinivmError, MiniboxError) as error:
        print(f"minivm: {error}", file=sys.stderr)
        return vm.EXIT_MINIVM_ERROR
    except KeyboardInterrupt:
        return 128 + _signal.SIGINT
    except BrokenPipeError:
        # Whoever read our stdout left (`minivm run -- yes | head`); QEMU is already stopped.
        # Point stdout at /dev/null so the final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + _signal.SIGPIPE
