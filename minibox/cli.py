"""The `minibox` command line: parse flags, call the library, print. No kernel work here.

Each command is a function below: the @command line above it declares its options, its
docstring is its help. parse() finds the command in that table, then builds an argparse
parser for it alone.

argparse rather than click: `minibox run` should start about as fast as `runc run` (~30 ms on
this machine, most of it the kernel's grace period: cgroups/grace.py), and importing click
alone costs 20-30 ms. For the same reason each command
imports the library modules it calls inside its function, so `run` loads only what runs a
container (check with `python -X importtime -m minibox run ...`).

Exit status, like Docker's: the command's own for `run` and `exec`; 125 for bad usage and
minibox's own errors; 126 when the command cannot be run, 127 when it is not found.
"""
import argparse
import os
import sys
import time

from .errors import RUNTIME_ERROR, MiniboxError, bug_line
from .network import NETWORK_HELP
from .portproxy import PUBLISH_HELP
from .rootless import check_caller
from .shared import exit_now


class UsageError(MiniboxError):
    """Bad usage: one line that points at the command's --help, exit 125."""

    def __init__(self, message, command):
        super().__init__(f"{message} (see: {command} --help)")


HELP_WIDTH = 78


class HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a docstring on its own (argparse would run them together), and
    lists `-e, --env KEY=VALUE` rather than `-e KEY=VALUE, --env KEY=VALUE`."""

    def __init__(self, prog):
        # A fixed width, as click's: asking the terminal makes argparse import shutil (and
        # bz2, lzma...), ~3 ms, and it makes a formatter for every add_argument().
        super().__init__(prog, width=HELP_WIDTH)

    def _fill_text(self, text, width, indent):
        fill = super()._fill_text
        return "\n\n".join(fill(paragraph, width, indent) for paragraph in text.split("\n\n"))

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


class OneLineParser(argparse.ArgumentParser):
    """--help (not -h: that is --hostname), no abbreviated options, and bad usage as one line."""

    def __init__(self, **settings):
        super().__init__(add_help=False, allow_abbrev=False, formatter_class=HelpFormatter,
                         **settings)
        self.add_argument("--help", action="help", help="Show this message and exit.")

    def error(self, message):
        raise UsageError(message, self.prog)

    def parse_known_args(self, args=None, namespace=None):
        # Unknown options are reported by the command that got them (`minibox run --bad`
        # points at `minibox run --help`), not by the top-level parser.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"no such option: {extras[0]}" if extras[0].startswith("-")
                       else f"unexpected argument: {extras[0]}")
        return namespace, extras


# -- the table of commands: filled by @command, read by parse() ---------------------------------

COMMANDS = {}  # "run", "image import"... -> (function, its arguments, its usage line or None)
GROUPS = {
    "network": "The bridge network minibox0 (created on first use; stays, like docker0).",
    "image": "Manage images: import archives, build the built-in busybox image.",
}


def command(name, *arguments, usage=None):
    """Register a command. `usage` replaces argparse's usage line where that would list
    every option."""
    def register(function):
        COMMANDS[name] = function, arguments, usage
        return function
    return register


def option(*names, **settings):
    """One ArgumentParser.add_argument() call, made when the parser is built."""
    return names, settings


def flag(*names, **settings):
    return option(*names, action="store_true", **settings)


def repeatable(*names, **settings):
    """An option that may be given again and again: -e A=1 -e B=2."""
    return option(*names, action="append", default=[], **settings)


def non_negative(text):
    """`--tail N`, `stop -t N`: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of 0 or more")
    return int(text)


class CommandParser(OneLineParser):
    """Parses `minibox [--root DIR] COMMAND [ARG...]`, or a group's `minibox GROUP COMMAND
    [ARG...]`: which command, and the words left for it. Its help lists the commands."""

    def __init__(self, group, description):
        self.group = group
        super().__init__(prog=f"minibox {group}".strip(), description=description,
                         usage="%(prog)s " + ("" if group else "[--root DIR] ") +
                         "COMMAND [ARG...]")
        self.add_argument("command", nargs="?", help=argparse.SUPPRESS)
        self.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def choose(self, words):
        """-> (the command's full name, the words left for it, all that was parsed)."""
        chosen = self.parse_args(words)
        if chosen.command is None:
            self.error("no command given")
        if chosen.command not in self.commands():
            self.error(f"no such command: {chosen.command}")
        return f"{self.group} {chosen.command}".strip(), chosen.arguments, chosen

    def commands(self):
        """{name: description} of the group's commands, in the order of this file."""
        found = {}
        for name, (function, _, _) in COMMANDS.items():
            parent, _, child = name.rpartition(" ")
            if parent == self.group:
                found[child] = function.__doc__
            elif parent and not self.group:
                found.setdefault(parent, GROUPS[parent])
        return found

    def format_help(self):
        import textwrap
        rows = (textwrap.fill(" ".join(description.split("\n\n")[0].split()), HELP_WIDTH,
                              initial_indent=f"  {name:<10}", subsequent_indent=" " * 12,
                              break_on_hyphens=False)
                for name, description in self.commands().items())
        return super().format_help() + "\ncommands:\n" + "\n".join(rows) + "\n"


def parse(words):
    """argv -> (the command's function, its arguments by name, --root DIR or None).

    First which command (`run`; `image import`: a group, then its command), then that
    command's options. Only the chosen command's parser is built: building every command's
    would cost ~4 ms of each start."""
    parser = CommandParser("", "minibox: a teaching container runtime (namespaces, cgroups, "
                           "overlayfs, pivot_root).")
    parser.add_argument("--root", metavar="DIR", help="Where container state lives "
                        "(default /run/minibox, or $MINIBOX_ROOT; without root "
                        "$XDG_RUNTIME_DIR/minibox).")
    name, words, chosen = parser.choose(words)
    while name in GROUPS:
        name, words, _ = CommandParser(name, GROUPS[name]).choose(words)
    function, arguments, usage = COMMANDS[name]
    parser = OneLineParser(prog=f"minibox {name}", description=function.__doc__, usage=usage)
    for names, settings in arguments:
        parser.add_argument(*names, **settings)
    return function, vars(parser.parse_args(words)), chosen.root


def _command_line(words):
    """IMAGE CMD ARG... as typed; a `--` before them only ended the options."""
    return words[1:] if words[:1] == ["--"] else words


# -- containers, the Docker way ----------------------------------------------------------------

INTERACTIVE = flag("-i", "--interactive", help="Keep stdin attached.")
TTY = flag("-t", "--tty", help="Give the command a pseudo-terminal.")
ENV = repeatable("-e", "--env", metavar="KEY=VALUE", help="Set an environment variable.")
FORCE = flag("-f", "--force", help="Kill the container first if it runs.")

RUN_OPTIONS = (
    flag("--rm", dest="remove", help="Remove the container when it exits."),
    flag("-d", "--detach", help="Run in the background; print the id."),
    option("--restart", default="no", metavar="POLICY",
           help="no | on-failure[:N] | always: restart the command when it exits."),
    INTERACTIVE, TTY,
    option("--name", help="A unique name for the container."),
    option("-h", "--hostname", help="Hostname inside (default: the name, else the short id)."),
    ENV,
    option("-w", "--workdir", metavar="DIR",
           help="Working directory inside (default: the image's, else /)."),
    option("--entrypoint", metavar="CMD",
           help="Run this instead of the image's ENTRYPOINT (drops its CMD)."),
    repeatable("-v", "--volume", metavar="HOSTDIR:DIR[:ro]",
               help="Bind-mount a host directory (read-only with :ro)."),
    option("--rootfs", metavar="DIR", help="Use DIR as the read-only image instead of IMAGE."),
    flag("--chroot", dest="use_chroot",
         help="Use chroot(2) instead of pivot_root(2) (escapable: for the lesson)."),
    option("-m", "--memory", metavar="SIZE", help="Memory limit, e.g. 64m (OOM kill above it)."),
    option("--memory-swap", metavar="SIZE", help="Memory plus swap limit; -1: unlimited swap."),
    option("--cpus", metavar="N", help="CPU time limit in CPUs, e.g. 0.5."),
    option("--cpu-shares", metavar="N", help="Relative CPU weight (default 1024)."),
    option("--pids-limit", metavar="N", help="Most processes at once (fork bombs stop here)."),
    option("--cgroup-parent", metavar="PATH",
           help="Put the cgroup under PATH instead of minibox/."),
    flag("--stats", dest="show_stats", help="At exit, print peak memory, CPU time and max pids."),
    repeatable("--cap-add", metavar="CAP",
               help="Keep a capability beyond Docker's default set (ALL: every one)."),
    repeatable("--cap-drop", metavar="CAP",
               help="Drop a capability from the default set (ALL: every one)."),
    flag("--privileged",
         help="Keep every capability, no seccomp, no masked paths (to see what opens up)."),
    repeatable("--security-opt", metavar="OPT",
               help="no-new-privileges[=false] or seccomp=unconfined."),
    flag("--read-only", help="Make the root read-only (with a tmpfs /tmp)."),
    option("-u", "--user", metavar="USER[:GROUP]",
           help="Run the command as this user (ids or names)."),
    flag("--userns", help="A user namespace: container root is uid 100000 on the host."),
    option("--network", dest="network_mode", metavar="MODE", help=NETWORK_HELP),
    option("--ip", metavar="ADDRESS",
           help="The container's address on the bridge (default: the lowest free one)."),
    repeatable("-p", "--publish", metavar="[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]",
               help=PUBLISH_HELP),
    flag("--explain", help="Narrate each step: syscall, man page, source line."),
    flag("--step", help="Like --explain, and wait for Enter before each step."),
    # Options end at IMAGE: everything after it is the command's (`run busybox ls -l`).
    option("args", nargs=argparse.REMAINDER, metavar="(IMAGE | --rootfs DIR) [CMD [ARG...]]",
           help="The image, then the command and its arguments (options end at IMAGE)."),
)


@command("run", *RUN_OPTIONS, usage="%(prog)s [OPTIONS] (IMAGE | --rootfs DIR) [CMD [ARG...]]")
def run(remove, detach, restart, interactive, tty, name, hostname, env, workdir, entrypoint,
        volume, rootfs, use_chroot, memory, memory_swap, cpus, cpu_shares, pids_limit,
        cgroup_parent, show_stats, cap_add, cap_drop, privileged, security_opt, read_only, user,
        userns, network_mode, ip, publish, explain, step, args):
    """Run a command in a new container; exit with the command's exit code.

    Without CMD, the image's default command runs (ENTRYPOINT + CMD); CMD replaces CMD."""
    check_caller("run")
    from . import container, images, network, portproxy, spec as specs, state
    mode = network.NetworkMode.parse(network_mode)
    mappings = [portproxy.PortMapping.parse(text) for text in publish]
    network.check_options(mode, ip, mappings)
    args = _command_line(args)
    image = None if rootfs else (args.pop(0) if args else None)
    if not rootfs and image is None:
        raise MiniboxError("no image given (usage: minibox run IMAGE [CMD [ARG...]])")
    config = images.image_config(image) if image else {}
    args = images.command_for(config, args, entrypoint)
    if not args:
        raise MiniboxError("no command given, and the image has no default command "
                           "(usage: minibox run IMAGE CMD [ARG...])")
    if detach and (tty or interactive):
        raise MiniboxError("-d cannot be combined with -i or -t (minibox has no attach)")
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    policy = specs.parse_restart(restart)
    if remove and policy.name != "no":
        raise MiniboxError("--rm and --restart cannot be combined")
    container_id = state.new_container_id()
    hostname = hostname or name or container_id[:12]
    spec = specs.ContainerSpec(
        command=args, image=image,
        rootfs=specs.check_rootfs(rootfs) if rootfs else None,
        name=specs.check_name(name), hostname=specs.check_hostname(hostname),
        env=specs.docker_environment(env, hostname, tty, images.environment_of(config)),
        workdir=specs.check_workdir(workdir) if workdir else config.get("WorkingDir") or "/",
        user=specs.check_user(user) if user else config.get("User") or None,
        volumes=[specs.parse_volume(v) for v in volume],
        mounts=specs.docker_mounts(state.ContainerDir(container_id).path, privileged, read_only),
        namespaces=specs.docker_namespaces(mode, userns),
        uid_mappings=specs.docker_id_mappings(userns),
        gid_mappings=specs.docker_id_mappings(userns),
        interactive=interactive, tty=tty, remove=remove, detach=detach, restart=policy,
        use_chroot=use_chroot,
        limits=specs.parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit, privileged),
        cgroup_parent=specs.parse_cgroup_parent(cgroup_parent), stats=show_stats,
        security=specs.security_profile(cap_add, cap_drop, privileged, security_opt),
        privileged=privileged, read_only=read_only,
        network=mode, ip=ip, publish=mappings)
    if use_chroot:
        print("minibox: warning: --chroot is escapable (chroot(2) does not change the "
              "mount namespace's root); use it only for the lesson", file=sys.stderr)
    _configure_explain(explain, step)
    if detach:
        from . import monitor
        monitor.launch(spec, container_id)
        print(container_id)
        return 0
    return container.run(spec, container_id)


def _configure_explain(narrate, pause):
    from . import explain
    try:
        explain.configure(narrate, pause)
    except OSError:
        raise MiniboxError("--step needs a terminal to wait on (no /dev/tty)") from None


@command("rm", FORCE, option("containers", nargs="+", metavar="CONTAINER"))
def rm(force, containers):
    """Remove stopped containers (their state and writable layer)."""
    from . import control
    check_caller("rm")
    for reference in containers:
        control.remove(reference, force=force)
        print(reference)


@command("gc")
def gc():
    """Remove what crashed runs left behind (from each container's ledger), cgroups no
    container knows, and the bridge if no container uses it any more."""
    from . import control, network
    check_caller("gc")
    cleaned, failed, orphan_cgroups = control.collect_garbage()
    for container_id in cleaned:
        print(f"removed leftovers of {container_id[:12]}")
    for error in failed:
        print(f"minibox: {error}", file=sys.stderr)
    for path in orphan_cgroups:
        print(f"removed orphaned cgroup {path}")
    if network.remove_bridge_if_unused():
        print(f"removed unused bridge {network.BRIDGE}")
    return RUNTIME_ERROR if failed else 0


@command("network ls")
def network_ls():
    """List the bridge network: subnet, gateway, containers attached."""
    from . import network
    check_caller("network ls")
    status = network.bridge_status()
    print(f"{'NAME':10}{'DRIVER':8}{'SUBNET':18}{'GATEWAY':16}CONTAINERS")
    if status is not None:
        subnet, gateway, leases = status
        print(f"{network.BRIDGE:10}{'bridge':8}{subnet:18}{gateway:16}{len(leases)}")


@command("network rm", option("name", metavar="NETWORK"))
def network_rm(name):
    """Remove the bridge (refused while a container uses it)."""
    from . import network
    check_caller("network rm")
    if name != network.BRIDGE:
        raise MiniboxError(f"no such network: {name} (the only one is {network.BRIDGE})")
    if not network.remove_bridge():
        raise MiniboxError(f"network {name} does not exist")
    print(name)


# -- images ------------------------------------------------------------------------------------

def byte_size(text):
    """`--max-size 20g`: a size in the units of `run -m` (binary: k = 1024)."""
    from .cgroups.limits import parse_size
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@command("image import", option("--name", metavar="NAME[:TAG]",
                                help="Tag the image (default: the archive's tags)."),
         option("--max-size", type=byte_size, default="10g", metavar="SIZE",
                help="Refuse an archive whose layers hold more file data than SIZE (default "
                     "%(default)s; holes in sparse files do not count)."),
         option("archive", metavar="ARCHIVE"))
def image_import(name, max_size, archive):
    """Import a `docker save` archive, an OCI image layout or a rootfs tarball (file or dir).

    The layers' tar headers are read first: an archive that claims more than --max-size, or
    more than the image store has free, is refused before anything is written."""
    from . import imagestore
    check_caller("image import")
    progress = imagestore.Progress(sys.stderr)
    for names, image_id in imagestore.import_archive(archive, max_size, name, progress):
        for tagged in names or ["<untagged>"]:
            print(f"Loaded image: {tagged} ({image_id[:19]})")


@command("image build", option("which", choices=["busybox"], metavar="IMAGE",
                               help="busybox: the only built-in image."))
def image_build(which):
    """(Re)build a built-in image from the host: busybox from busybox-static."""
    from . import images, imagestore
    check_caller("image build")
    image_id = imagestore.build_busybox_image(imagestore.Progress(sys.stderr))
    print(f"Built image: {images.BUSYBOX} ({image_id[:19]})")


@command("images")
def list_images():
    """List stored images."""
    from . import images
    check_caller("images")
    print(f"{'REPOSITORY':<30} {'TAG':<16} {'IMAGE ID':<12} {'LAYERS':>6} {'SIZE':>10}")
    for name, image_id, layer_count, size in images.list_images():
        repository, tag = name.rsplit(":", 1) if name else ("<none>", "<none>")
        print(f"{repository:<30} {tag:<16} {image_id[7:19]:<12} {layer_count:>6} "
              f"{size / 1e6:>8.1f}MB")


@command("rmi", option("references", nargs="+", metavar="IMAGE"))
def rmi(references):
    """Remove images (untag; delete the layers no other image uses)."""
    from . import imagestore
    check_caller("rmi")
    for reference in references:
        image_id = imagestore.remove_image(reference)
        print(f"Removed: {reference} ({image_id[:19]})")


@command("export", option("-o", "--output", metavar="FILE",
                          help="Write to FILE instead of stdout."),
         option("reference", metavar="CONTAINER"))
def export(output, reference):
    """Write a container's filesystem as a tar archive (to stdout or -o FILE)."""
    from . import imagestore
    check_caller("export")
    if output is None and sys.stdout.isatty():
        raise MiniboxError("refusing to write a tar archive to a terminal: "
                           "redirect stdout or use -o FILE")
    imagestore.export_container(reference, output)


@command("commit", option("reference", metavar="CONTAINER"), option("name", metavar="NAME[:TAG]"))
def commit(reference, name):
    """Make a new image from a container: its changes become a new top layer."""
    from . import imagestore
    check_caller("commit")
    image_id = imagestore.commit_container(reference, name, imagestore.Progress(sys.stderr))
    print(image_id)


# -- looking at and controlling containers -----------------------------------------------------

@command("ps", flag("-a", "--all", dest="show_all", help="Show stopped containers too."),
         flag("-q", "--quiet", help="Only print the ids."))
def ps(show_all, quiet):
    """List containers."""
    from . import control
    check_caller("ps")
    skipped = []
    found = control.containers(skipped, include_stopped=show_all)
    _warn_skipped(skipped)
    if quiet:
        for directory, _, _ in found:
            print(directory.id[:12])
        return
    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "RESTARTS", "PID")]
    now = time.time()
    for directory, current, status in found:
        command_line = " ".join(current.get("command") or [])
        rows.append((directory.id[:12], current.get("name") or "",
                     os.path.basename(current.get("image") or ""),
                     f'"{command_line[:24]}…"' if len(command_line) > 25 else f'"{command_line}"',
                     f"{_ago(now - current.get('created', now))} ago", _describe(status, current, now),
                     str(current.get("restarts", 0)),
                     str(current["pid"]) if status in ("created", "running") else ""))
    _print_table(rows)


def _warn_skipped(skipped):
    """One line per container whose state could not be read; the others are listed."""
    for error in skipped:
        print(f"minibox: skipping {error}", file=sys.stderr)


def _ago(seconds):
    """Docker's way of saying how long: '3 seconds', 'About a minute', '5 hours'."""
    seconds = max(0, int(seconds))
    if seconds < 1:
        return "Less than a second"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"About a {unit}" if count == 1 and unit != "day" else \
                f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} second{'s' if seconds > 1 else ''}"


def _describe(status, current, now):
    if status == "running":
        return f"Up {_ago(now - current.get('started', now))}"
    if status == "stopped":
        finished = current.get("finished") or now
        # None: its monitor died (SIGKILL) or could not write state.json (a full disk)
        # before it learnt how PID 1 ended.
        code = current.get("exit_code")
        return f"Exited ({'unknown' if code is None else code}) {_ago(now - finished)} ago"
    if status == "restarting":
        return f"Restarting ({current.get('exit_code')})"
    return status.capitalize()


@command("logs", flag("-f", "--follow", help="Keep printing output until it exits."),
         option("--tail", type=non_negative, metavar="N", help="Only the last N lines."),
         option("reference", metavar="CONTAINER"))
def logs(follow, tail, reference):
    """Print a detached container's output (stdout and stderr)."""
    from . import control
    check_caller("logs")
    control.logs(reference, sys.stdout.buffer, follow=follow, tail=tail)


@command("exec", INTERACTIVE, TTY, ENV,
         option("-w", "--workdir", metavar="DIR",
                help="Working directory inside the container."),
         option("reference", metavar="CONTAINER"),
         # Options end at CONTAINER: `exec ID ls -la` passes -la to ls.
         option("command", nargs=argparse.REMAINDER, metavar="CMD [ARG...]",
                help="The command to run and its arguments."),
         usage="%(prog)s [OPTIONS] CONTAINER CMD [ARG...]")
def exec_command(interactive, tty, env, workdir, reference, command):
    """Run a command in a running container (its namespaces and cgroups); exit with its code."""
    from . import control, enter, spec as specs
    command = _command_line(command)
    if not command:
        raise UsageError("no command given", "minibox exec")
    check_caller("exec")
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    directory, current, status = control.load(reference)
    if status != "running":
        raise MiniboxError(f"container {directory.id[:12]} is not running (it is {status})")
    spec = specs.ContainerSpec.load(directory.file("spec.json"))
    spec.env.update(specs.parse_env(env))
    spec.workdir = specs.check_workdir(workdir) if workdir else spec.workdir
    return enter.exec_in(current["pid"], spec, command, tty=tty, interactive=interactive)


@command("stop", option("-t", "--time", dest="timeout", type=non_negative, default=10,
                        metavar="SECONDS",
                        help="Seconds to wait after SIGTERM before SIGKILL (default 10)."),
         option("containers", nargs="+", metavar="CONTAINER"))
def stop(timeout, containers):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    from . import control
    check_caller("stop")
    for reference in containers:
        control.stop(reference, timeout)
        print(reference)


@command("kill", option("-s", "--signal", dest="signal_name", metavar="SIGNAL",
                        help="Signal to send (default TERM)."),
         option("args", nargs="+", metavar="CONTAINER"),
         usage="%(prog)s [-s SIGNAL] CONTAINER... | %(prog)s ID [SIGNAL]")
def kill(signal_name, args):
    """Send a signal to containers: docker's `kill [-s SIG] C...` or runc's `kill ID [SIG]`."""
    from . import control
    check_caller("kill")
    references = list(args)
    if signal_name is None and len(references) == 2 and _is_signal(references[1]):
        signal_name = references.pop()
    signum = control.parse_signal(signal_name or "TERM")
    for reference in references:
        control.kill(reference, signum)


def _is_signal(text):
    from . import control
    try:
        control.parse_signal(text)
    except MiniboxError:
        return False
    return True


@command("stats", flag("--no-stream", help="Print one sample and exit."),
         option("references", nargs="*", metavar="CONTAINER"))
def stats(no_stream, references):
    """Show running containers' CPU, memory and processes, from their cgroups."""
    from . import cgroups, control
    check_caller("stats")
    while True:
        rows = [("CONTAINER ID", "NAME", "CPU %", "MEM PEAK / LIMIT", "PIDS")]
        skipped = []
        for directory, name, cpu, usage, limit, pids in control.usage(
                skipped, 0.5 if no_stream else 1.0, references):
            memory = "n/a" if usage.memory_peak is None else cgroups.format_size(usage.memory_peak)
            rows.append((directory.id[:12], name or "", "n/a" if cpu is None else f"{cpu:.1f}%",
                         f"{memory} / {'-' if limit is None else cgroups.format_size(limit)}",
                         str(pids)))
        if not no_stream:
            print("\033[2J\033[H", end="")  # clear the terminal, like `docker stats`
        _warn_skipped(skipped)
        _print_table(rows)
        if no_stream:
            return


def _print_table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(),
              flush=True)


@command("inspect", option("references", nargs="+", metavar="CONTAINER"))
def inspect(references):
    """Print containers' configuration and state as JSON."""
    import json
    from . import control
    check_caller("inspect")
    print(json.dumps([control.inspect(r) for r in references], indent=2))


# -- the OCI runtime command line (runc-compatible) -------------------------------------------

CONTAINER_ID = option("container_id", metavar="ID")


@command("create", option("-b", "--bundle", default=".", metavar="DIR",
                          help="The bundle directory (default: the current one)."),
         option("--pid-file", metavar="FILE", help="Write the container's PID here."),
         CONTAINER_ID)
def create(bundle, pid_file, container_id):
    """OCI: create a container from a bundle, stopped just before its command runs."""
    from . import control, monitor, spec as specs
    check_caller("create")
    spec = specs.load_bundle(bundle)
    monitor.launch(spec, specs.check_container_id(container_id), wait_for_start=True)
    if pid_file:
        _write_pid_file(pid_file, control.load(container_id)[1]["pid"])


def _write_pid_file(path, pid):
    """The digits only, written atomically (a reader never sees an empty file)."""
    from . import shared
    shared.replace_file(os.path.abspath(path), str(pid))


@command("start", CONTAINER_ID)
def start(container_id):
    """OCI: run the command of a created container."""
    from . import control
    check_caller("start")
    control.start(container_id)


@command("state", CONTAINER_ID)
def state(container_id):
    """OCI: print the container's state as JSON."""
    from . import control
    check_caller("state")
    print(control.oci_state(container_id))


@command("delete", FORCE, CONTAINER_ID)
def delete(force, container_id):
    """OCI: delete a stopped container (a running one only with --force)."""
    from . import control
    check_caller("delete")
    control.delete(container_id, force=force)


@command("spec", option("-b", "--bundle", default=".", metavar="DIR",
                        help="Where to write config.json (default: the current directory)."))
def spec(bundle):
    """OCI: write a default config.json, like `runc spec`."""
    from . import spec as specs
    specs.write_default_config(bundle)


def main(argv=None):
    """Entry point: one line on stderr and Docker's exit codes instead of tracebacks."""
    try:
        handler, settings, root = parse(sys.argv[1:] if argv is None else argv)
        if root:
            from . import state as states
            states.set_root(os.path.abspath(root))
        code = handler(**settings)
    except MiniboxError as error:
        print(f"minibox: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `minibox ps | head`: the reader has all it wanted
        code = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except OSError as error:  # one the code did not expect, still named by its path
        if os.environ.get("MINIBOX_DEBUG"):
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"minibox: {where}{error.strerror or bug_line(error)}", file=sys.stderr)
        code = RUNTIME_ERROR
    except Exception as error:  # a bug: still one line, with the traceback on request
        if os.environ.get("MINIBOX_DEBUG"):
            raise
        print(f"minibox: internal error: {bug_line(error)} "
              "(MINIBOX_DEBUG=1 shows the traceback)", file=sys.stderr)
        code = RUNTIME_ERROR
    if argv is not None:
        sys.exit(code or 0)  # called from Python (tests): a normal exit
    exit_now(code or 0)
