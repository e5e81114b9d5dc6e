"""The `minivm` command: parse, call the library, print. The VM's story is in vm.py.

    minivm run [--kernel PATH] [-m SIZE] [--cpus N] [--accel auto|kvm|tcg] [-i] [-t]
               [-v HOSTDIR:GUESTDIR[:ro]]... [--disk IMAGE]... [--network none|bridge]
               [--append PARAMS] [--timeout S] [--timings] [--explain] [--verbose]
               -- CMD [ARG...]
    minivm run -d [--name NAME] [OPTIONS] -- CMD [ARG...]
    minivm sandbox [the options of run] -- CMD [ARG...]
    minivm ps [-f TEMPLATE] | inspect [-f TEMPLATE] NAME... | logs NAME | pause NAME
    minivm resume NAME | stop [-t S] NAME | rm [-f] NAME | gc | kvm-hello
    minivm kernel list | fetch [--package NAME] | build

A click group (click.palletsprojects.com); each command imports the modules it uses inside
its function. `minivm run` and `sandbox` seldom come here: runcall.py reads them without
click, from the table that also makes their click options below (run_options), and leaves
to click only the shapes it does not read (`--help`, `-it`, bad values). Bad usage and
minivm's own errors are one line on stderr and exit 125 (vm.py's docstring lists the other
statuses).
"""
import os
import signal
import sys
import time

import click

from minibox.shared import exit_now
from minivm import MinivmError, runcall, vm


class Kind(click.ParamType):
    """An int, a float or one of a tuple of choices, converted by runcall.convert and
    refused in its words ("invalid int value: 'two'", as argparse said them)."""

    def __init__(self, kind):
        self.kind, self.name = kind, "choice" if isinstance(kind, tuple) else kind.__name__

    def get_metavar(self, param, ctx=None):
        return f"[{'|'.join(self.kind)}]" if isinstance(self.kind, tuple) else None

    def convert(self, value, param, ctx):
        try:
            return runcall.convert(self.kind, value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


# -h as well as --help: minivm has no -h of its own (minibox's `run -h` is --hostname).
@click.group(context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=False)
def minivm():
    """Boot a small Linux guest under QEMU and run one command in it."""


def run_options(command):
    """The options of `run`, which `sandbox` takes too: runcall.OPTIONS as click options."""
    command = click.argument("command", nargs=-1, type=click.UNPROCESSED,
                             metavar="-- CMD [ARG...]")(click.pass_obj(command))
    for option in reversed(runcall.OPTIONS):
        kind = ({"is_flag": True} if option.type is bool else
                {"type": Kind(option.type)} if option.type is not str else {})
        command = click.option(*option.names, option.dest, default=option.default,
                               multiple=option.multiple, metavar=option.metavar,
                               show_default=option.shown, help=option.help, **kind)(command)
    return command


# Options end at the first word of CMD (`minivm run uname -a`: -a is uname's), as docker run.
RUN_SETTINGS = {"allow_interspersed_args": False}


@minivm.command(context_settings=RUN_SETTINGS, epilog="Exit status: CMD's; 124 timeout; 125 "
                "minivm error; 127 CMD not in the guest. With -t, Ctrl-] quits.")
@run_options
def run(started, **options):
    """Boot a guest, run CMD in it, exit with its status."""
    return runcall.run(runcall.Request(**options), started)


@minivm.command(context_settings=RUN_SETTINGS)
@run_options
def sandbox(started, **options):
    """Run a host program under the guest kernel: the host's root, read-only, with a
    throwaway tmpfs over it.

    Like kvmtool's `lkvm sandbox`: the guest's root is the host's, shared read-only over 9p
    with a tmpfs overlay on top, so CMD is a host program; it starts in the current directory
    and its writes vanish with the VM unless they go to a -v folder."""
    return runcall.run(runcall.Request(**options, sandbox=True), started)


@minivm.command()
@click.option("-f", "--format", "template", help="a Go template for each VM's line, as "
              "`docker ps --format`: {{.Name}} {{.Status}} {{.Pid}} {{.Address}} {{.Command}}")
def ps(template):
    """List detached VMs and their status."""
    from minibox.gotemplate import render_format
    from minivm import vms
    rows = [vms.summary(vm_dir) for vm_dir in vms.all_vms()]
    if template is not None:
        for row in rows:
            print(render_format(template, row))
        return
    print(f"{'NAME':<20} {'STATUS':<14} {'PID':>8}  {'ADDRESS':<15}  COMMAND")
    for row in rows:
        print(f"{row['Name']:<20} {row['Status']:<14} {row['Pid'] or '-':>8}  "
              f"{row['Address'] or '-':<15}  {row['Command']}")


@minivm.command()
@click.option("-f", "--format", "template", help="a Go template, as `docker inspect -f`: "
              "{{.State.Pid}}, {{json .Config}}")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def inspect(template, names):
    """Print detached VMs' records as JSON, in `docker inspect`'s shape."""
    import json

    from minibox.gotemplate import render_format
    from minivm import vms
    records = [vms.inspect(vms.VMDir.find(name)) for name in names]
    if template is None:
        print(json.dumps(records, indent=4))
    for record in records if template is not None else ():
        print(render_format(template, record))


@minivm.command()
@click.argument("name")
def logs(name):
    """Print what a detached VM's command wrote."""
    from minivm import vms
    vm_dir = vms.VMDir.find(name)
    if "started" not in vm_dir.state():
        raise MinivmError(f"{name} has no logs: its status is {vm_dir.status()}")
    sys.stdout.buffer.write(vms.command_output(vm_dir.file("console.log"),
                                               vm_dir.state()["nonce"]))


@minivm.command()
@click.argument("name")
def pause(name):
    """Pause a detached VM's vCPUs (QMP stop)."""
    from minivm import vms
    vms.pause(vms.VMDir.find(name), paused=True)


@minivm.command()
@click.argument("name")
def resume(name):
    """Resume a paused VM (QMP cont)."""
    from minivm import vms
    vms.pause(vms.VMDir.find(name), paused=False)


@minivm.command()
@click.option("-t", "--time", "grace", type=Kind(float), default=10.0, show_default=True,
              help="seconds of grace")
@click.argument("name")
def stop(grace, name):
    """Ask a detached VM's guest to end its command; after the grace time, quit QEMU."""
    from minivm import vms
    if grace < 0:
        raise MinivmError(f"--time {grace:g}: must be 0 or more seconds")
    vm.progress(f"{name}: {vms.stop(vms.VMDir.find(name), grace)}")


@minivm.command()
@click.option("-f", "--force", is_flag=True, help="kill it first if running")
@click.argument("name")
def rm(force, name):
    """Remove a stopped VM and its files."""
    from minivm import vms
    vms.remove(vms.VMDir.find(name), force)


@minivm.command()
def gc():
    """Remove what killed runs left: half-made VMs (their QEMU too), addresses of dead runs,
    their files in $TMPDIR."""
    from minivm import gc as collector
    for line in collector.collect():
        print(line)


@minivm.command("kvm-hello")
def kvm_hello():
    """A lesson: a VM from raw /dev/kvm ioctls that runs a few real-mode instructions, each
    VM exit printed."""
    from minivm import kvmhello
    kvmhello.main()


@minivm.group(no_args_is_help=False)
def kernel():
    """List, fetch or build guest kernels."""


@kernel.command("list")
def list_kernels():
    """Kernels minivm can boot, the default marked *."""
    from minivm import kernel as kernels
    cache = kernels.cache_dir()
    tiny = kernels.tiny_kernel(cache)
    cached = ([tiny] if tiny else []) + kernels.cached_kernels(cache)
    boot = kernels.boot_kernels()
    if not cached and not boot:
        print(f"no kernels yet (cache: {cache}); `minivm kernel fetch` downloads Debian's")
    for index, entry in enumerate(cached):
        default = "*" if index == 0 else " "
        modules = entry.modules or ("drivers built in" if entry == tiny else "no modules")
        print(f"{default} {entry.release:<24} {entry.vmlinux}\n    {entry.origin}; {modules}")
    for index, path in enumerate(boot):
        default = "*" if index == 0 and not cached else " "
        print(f"{default} {os.path.basename(path):<24} {path} (host /boot; extracted on "
              "first use)")


@kernel.command()
@click.option("--package", help="a linux-image-* package (default: the one linux-image-amd64 "
              "depends on)")
def fetch(package):
    """Download Debian's kernel into the cache."""
    from minivm import kernel as kernels
    fetched = kernels.fetch(kernels.cache_dir(), vm.progress, package)
    print(f"{fetched.release} {fetched.vmlinux}")


@kernel.command()
def build():
    """Build the tiny kernel from Debian's linux-source; `run` prefers it from then on."""
    from minivm import kernel as kernels
    from minivm import tinykernel
    built = tinykernel.build(kernels.cache_dir(), vm.progress)
    print(f"{built.release} {built.vmlinux}")


def main(argv: list[str] | None = None, started: float | None = None):
    """Every command through click (`python -m minivm` reads most runs in runcall.py)."""
    started = time.monotonic() if started is None else started
    code = runcall.guarded(lambda: _click_main(argv, started))
    if argv is not None:
        sys.exit(code)  # called from Python (tests): a normal exit
    exit_now(code)


def _click_main(argv, started):
    try:
        return minivm.main(argv, prog_name="minivm", standalone_mode=False, obj=started)
    except click.UsageError as error:
        return _usage_error(error)
    except click.Abort:  # click's word for a Ctrl-C in its own prompts
        return 128 + signal.SIGINT


def _usage_error(error: click.UsageError) -> int:
    """click prints a usage error as several lines and exits 2; minivm says it in one line
    and exits 125, as `docker run` does."""
    message = error.format_message()
    # argparse's words, which minivm's users and tests know
    if isinstance(error, click.NoSuchOption):
        message = f"unrecognized arguments: {error.option_name}"
    elif (isinstance(error, click.BadParameter) and error.param is not None
          and not isinstance(error, click.MissingParameter)):
        message = f"argument {'/'.join(error.param.opts)}: {error.message}"
    where = error.ctx.command_path if error.ctx else "minivm"
    print(f"minivm: {message} (see `{where} --help`)", file=sys.stderr)
    return vm.EXIT_MINIVM_ERROR
