"""Commands acting on existing containers, the Docker way: exec, ps, logs, stop, kill, rm,
inspect, stats, gc."""
import json
import os
import sys
import time

import click

from . import command, print_table, warn_skipped
from .run import ENV, INTERACTIVE, TTY
from ..errors import RUNTIME_ERROR, MiniboxError

FORCE = click.option("-f", "--force", is_flag=True, help="Kill the container first if it runs.")


class WholeNumber(click.ParamType):
    """`--tail N`, `stop -t N`: a whole number, 0 or more."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if not value.isdigit():
            self.fail(f"'{value}' is not a whole number of 0 or more", param, ctx)
        return int(value)


@command(rootless=True, options_end_at_argument=True)
@INTERACTIVE
@TTY
@ENV
@click.option("-w", "--workdir", "--cwd", metavar="DIR",
              help="Working directory inside the container.")
@click.option("-u", "--user", metavar="UID[:GID]", help="Run the command as this user.")
# runc's, for engines (`docker exec`, `podman exec` through containerd's shim or conmon):
@click.option("-p", "--process", "process_file", metavar="FILE",
              help="Take the command and its settings from an OCI process.json.")
@click.option("-d", "--detach", is_flag=True,
              help="Return at once; the caller reaps the process (runc's --detach).")
@click.option("--pid-file", metavar="FILE", help="Write the process's host PID here.")
@click.option("--console-socket", metavar="PATH",
              help="With a terminal: send the pty master to this unix socket.")
@click.argument("reference", metavar="CONTAINER")
@click.argument("command", nargs=-1, metavar="CMD [ARG...]")
def exec_command(interactive, tty, env, workdir, user, process_file, detach, pid_file,
                 console_socket, reference, command):
    """Run a command in a running container (its namespaces and cgroups); exit with its code.

    Options end at CONTAINER: `exec web ls -la` passes -la to ls."""
    from .. import control, docker, enter, oci, spec as specs
    if not command and not process_file:
        raise click.UsageError("no command given")
    directory, current, status = control.load(reference)
    if status != "running":
        raise MiniboxError(f"container {directory.id[:12]} is not running (it is {status})")
    spec = specs.ContainerSpec.load(directory.file("spec.json"))
    if process_file:
        command = oci.load_process(spec, process_file)
        tty = spec.tty
    if console_socket and not tty:
        raise MiniboxError(f"--console-socket {console_socket}: no terminal to send (-t)")
    if tty and not console_socket and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    spec.env.update(docker.parse_env(env))
    spec.workdir = docker.check_workdir(workdir) if workdir else spec.workdir
    spec.user = user or spec.user
    return enter.exec_in(current["pid"], spec, list(command), tty=tty,
                         # an engine wires the process's stdin itself, as runc lets it
                         interactive=interactive or bool(process_file) or detach,
                         pid_file=pid_file and os.path.abspath(pid_file),
                         console_socket=console_socket and os.path.abspath(console_socket),
                         detach=detach)


@command(rootless=True)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only print the ids.")
@click.option("-f", "--format", "output", type=click.Choice(["table", "json"]),
              help="With ID: the host PIDs as a table or a JSON list (runc's `ps`).")
@click.argument("container_id", required=False, metavar="[--format F ID]")
def ps(show_all, quiet, output, container_id):
    """List containers; `ps --format table|json ID`: the host PIDs of its processes (runc's).
    """
    from .. import control
    if container_id and not output:  # Docker's `ps` takes no argument
        raise click.UsageError(f"unexpected extra argument ({container_id})")
    if container_id:
        from .. import engine
        pids = engine.processes(container_id)
        print(json.dumps(pids) if output == "json" else "\n".join(["PID", *map(str, pids)]))
        return
    skipped = []
    found = control.containers(skipped, include_stopped=show_all)
    warn_skipped(skipped)
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
                     f"{_ago(now - current.get('created', now))} ago",
                     _describe(status, current, now), str(current.get("restarts", 0)),
                     str(current["pid"]) if status in ("created", "running") else ""))
    print_table(rows)


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


@command(rootless=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until it exits.")
@click.option("--tail", type=WholeNumber(), help="Only the last N lines.")
@click.argument("reference", metavar="CONTAINER")
def logs(follow, tail, reference):
    """Print a detached container's output (stdout and stderr)."""
    from .. import control
    control.logs(reference, sys.stdout.buffer, follow=follow, tail=tail)


@command(rootless=True)
@click.option("-t", "--time", "timeout", type=WholeNumber(), default=10, metavar="SECONDS",
              help="Seconds to wait after SIGTERM before SIGKILL (default 10).")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def stop(timeout, containers):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    from .. import control
    for reference in containers:
        control.stop(reference, timeout)
        print(reference)


@command(rootless=True)
@click.option("-s", "--signal", "signal_name", metavar="SIGNAL",
              help="Signal to send (default TERM).")
@click.option("-a", "--all", "every_process", is_flag=True,
              help="Signal every process in the container's cgroup, not only PID 1 (runc's).")
@click.argument("args", nargs=-1, required=True, metavar="CONTAINER... | ID [SIGNAL]")
def kill(signal_name, every_process, args):
    """Send a signal to containers: docker's `kill [-s SIG] C...` or runc's `kill ID [SIG]`."""
    from .. import control
    references = list(args)
    if signal_name is None and len(references) == 2 and control.is_signal(references[1]):
        signal_name = references.pop()
    signum = control.parse_signal(signal_name or "TERM")
    for reference in references:
        control.kill(reference, signum, every_process)


@command(rootless=True)
@FORCE
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def rm(force, containers):
    """Remove stopped containers (their state and writable layer)."""
    from .. import control
    for reference in containers:
        control.remove(reference, force=force)
        print(reference)


@command(rootless=True)
def gc():
    """Remove what crashed runs left behind (from each container's ledger), cgroups no
    container knows, and the bridge if no container uses it any more."""
    from .. import bridge, control
    cleaned, failed, orphan_cgroups = control.collect_garbage()
    for container_id in cleaned:
        print(f"removed leftovers of {container_id[:12]}")
    for error in failed:
        print(f"minibox: {error}", file=sys.stderr)
    for path in orphan_cgroups:
        print(f"removed orphaned cgroup {path}")
    if bridge.remove_bridge_if_unused():
        print(f"removed unused bridge {bridge.BRIDGE}")
    for pool in bridge.remove_pools_of_gone_namespaces():
        print(f"removed the address pool {pool} (its network namespace is gone)")
    return RUNTIME_ERROR if failed else 0


@command()
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.argument("references", nargs=-1, metavar="[CONTAINER...]")
def stats(no_stream, references):
    """Show running containers' CPU, memory and processes, from their cgroups."""
    from .. import cgroups, control
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
        warn_skipped(skipped)
        print_table(rows)
        if no_stream:
            return


@command(rootless=True)
@click.option("-f", "--format", "template", metavar="TEMPLATE",
              help="Print each container through a Go template, as docker inspect -f: "
                   "{{.State.Pid}}, {{json .Config}}.")
@click.argument("references", nargs=-1, required=True, metavar="CONTAINER...")
def inspect(template, references):
    """Print containers' configuration and state as JSON, in Docker's shape."""
    import json
    from .. import control
    from ..gotemplate import parse_format
    fill = template is not None and parse_format(template)  # a bad template: before any output
    found = [control.inspect(r) for r in references]
    if not fill:
        print(json.dumps(found, indent=2))
        return
    for info in found:
        print(fill(info))
