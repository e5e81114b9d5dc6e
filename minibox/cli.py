"""The `minibox` command line: parse flags, call the library, print. No kernel work here."""
import os
import sys
import time

import click

from . import explain, portproxy
from . import network as network_help
from .errors import RUNTIME_ERROR, MiniboxError


def require_root():
    if os.geteuid() != 0:
        raise MiniboxError("must be run as root (try sudo)")


@click.group(context_settings={"help_option_names": ["--help"]})
@click.option("--root", type=click.Path(), metavar="DIR",
              help="Where container state lives (default /run/minibox, or $MINIBOX_ROOT).")
def cli(root):
    """minibox: a teaching container runtime (namespaces, cgroups, overlayfs, pivot_root)."""
    if root:
        from . import state
        state.set_root(os.path.abspath(root))


# Options end at IMAGE: everything after it is the command's (`run busybox ls -l`).
@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the container when it exits.")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.option("--restart", default="no", metavar="POLICY",
              help="no | on-failure[:N] | always: restart the command when it exits.")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal.")
@click.option("--name", help="A unique name for the container.")
@click.option("-h", "--hostname", help="Hostname inside (default: the name, else the short id).")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable.")
@click.option("-w", "--workdir", help="Working directory inside (default: the image's, else /).")
@click.option("--entrypoint", help="Run this instead of the image's ENTRYPOINT (drops its CMD).")
@click.option("-v", "--volume", multiple=True, metavar="HOSTDIR:DIR[:ro]",
              help="Bind-mount a host directory (read-only with :ro).")
@click.option("--rootfs", type=click.Path(), help="Use DIR as the read-only image instead of IMAGE.")
@click.option("--chroot", "use_chroot", is_flag=True,
              help="Use chroot(2) instead of pivot_root(2) (escapable: for the lesson).")
@click.option("-m", "--memory", metavar="SIZE", help="Memory limit, e.g. 64m (OOM kill above it).")
@click.option("--memory-swap", metavar="SIZE", help="Memory plus swap limit; -1: unlimited swap.")
@click.option("--cpus", metavar="N", help="CPU time limit in CPUs, e.g. 0.5.")
@click.option("--cpu-shares", metavar="N", help="Relative CPU weight (default 1024).")
@click.option("--pids-limit", metavar="N", help="Most processes at once (fork bombs stop here).")
@click.option("--cgroup-parent", metavar="PATH", help="Put the cgroup under PATH instead of minibox/.")
@click.option("--stats", "show_stats", is_flag=True,
              help="At exit, print peak memory, CPU time and max pids.")
@click.option("--cap-add", multiple=True, metavar="CAP",
              help="Keep a capability beyond Docker's default set (ALL: every one).")
@click.option("--cap-drop", multiple=True, metavar="CAP",
              help="Drop a capability from the default set (ALL: every one).")
@click.option("--privileged", is_flag=True,
              help="Keep every capability, no seccomp, no masked paths (to see what opens up).")
@click.option("--security-opt", multiple=True, metavar="OPT",
              help="no-new-privileges[=false] or seccomp=unconfined.")
@click.option("--read-only", is_flag=True, help="Make the root read-only (with a tmpfs /tmp).")
@click.option("-u", "--user", metavar="USER[:GROUP]", help="Run the command as this user (ids or names).")
@click.option("--userns", is_flag=True,
              help="A user namespace: container root is uid 100000 on the host.")
@click.option("--network", "network_mode", default="bridge", metavar="MODE",
              help=network_help.NETWORK_HELP)
@click.option("--ip", metavar="ADDRESS", help="The container's address on the bridge "
              "(default: the lowest free one).")
@click.option("-p", "--publish", multiple=True, metavar="[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]",
              help=portproxy.PUBLISH_HELP)
@click.option("--explain", is_flag=True, help="Narrate each step: syscall, man page, source line.")
@click.option("--step", is_flag=True, help="Like --explain, and wait for Enter before each step.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="(IMAGE | --rootfs DIR) [CMD [ARG...]]")
def run(remove, detach, restart, interactive, tty, name, hostname, env, workdir, entrypoint,
        volume, rootfs, use_chroot, memory, memory_swap, cpus, cpu_shares, pids_limit,
        cgroup_parent, show_stats, cap_add, cap_drop, privileged, security_opt, read_only, user,
        userns, network_mode, ip, publish, explain, step, args):
    """Run a command in a new container; exit with the command's exit code.

    Without CMD, the image's default command runs (ENTRYPOINT + CMD); CMD replaces CMD."""
    from . import container, images, network, spec as specs, state
    if userns and os.geteuid() != 0:
        _refuse_rootless()
    require_root()
    mode = network.NetworkMode.parse(network_mode)
    mappings = [portproxy.PortMapping.parse(text) for text in publish]
    network.check_options(mode, ip, mappings)
    args = list(args)
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
        name=specs.check_name(name), hostname=hostname,
        env=specs.docker_environment(env, hostname, tty, images.environment_of(config)),
        workdir=workdir or config.get("WorkingDir") or "/",
        user=specs.check_user(user) if user else config.get("User") or None,
        volumes=[specs.parse_volume(v) for v in volume],
        mounts=specs.docker_mounts(state.ContainerDir(container_id).path, privileged, read_only),
        namespaces=specs.docker_namespaces(mode),
        interactive=interactive, tty=tty, remove=remove, detach=detach, restart=policy,
        use_chroot=use_chroot,
        limits=specs.parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit),
        cgroup_parent=specs.parse_cgroup_parent(cgroup_parent), stats=show_stats,
        security=specs.security_profile(cap_add, cap_drop, privileged, security_opt),
        privileged=privileged, read_only=read_only, userns=userns,
        network=mode, ip=ip, publish=mappings)
    if use_chroot:
        click.echo("minibox: warning: --chroot is escapable (chroot(2) does not change the "
                   "mount namespace's root); use it only for the lesson", err=True)
    _configure_explain(explain, step)
    if detach:
        from . import monitor
        monitor.launch(spec, container_id)
        click.echo(container_id)
        return 0
    return container.run(spec, container_id)


def _refuse_rootless():
    """A non-root --userns: name what on this host forbids it, else say what is missing."""
    from . import namespaces
    reason = namespaces.check_unprivileged_user_namespaces()
    if reason:
        raise MiniboxError(f"--userns without root: {reason}")
    raise MiniboxError("--userns without root (rootless mode) is not implemented yet: this "
                       "host allows unprivileged user namespaces, but the runtime still needs "
                       "root for its cgroup and PID namespace; use sudo")


def _configure_explain(narrate, pause):
    try:
        explain.configure(narrate, pause)
    except OSError:
        raise MiniboxError("--step needs a terminal to wait on (no /dev/tty)") from None


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Kill the container first if it runs.")
@click.argument("containers", nargs=-1, required=True)
def rm(force, containers):
    """Remove stopped containers (their state and writable layer)."""
    from . import container
    require_root()
    for reference in containers:
        container.remove(reference, force=force)
        click.echo(reference)


@cli.command()
def gc():
    """Remove what crashed runs left behind (from each container's ledger), and the bridge
    if no container uses it any more."""
    from . import container, network
    require_root()
    for container_id in container.collect_garbage():
        click.echo(f"removed leftovers of {container_id[:12]}")
    if network.remove_bridge_if_unused():
        click.echo(f"removed unused bridge {network.BRIDGE}")


@cli.group("network")
def network_group():
    """The bridge network minibox0 (created on first use; stays, like docker0)."""


@network_group.command("ls")
def network_ls():
    """List the bridge network: subnet, gateway, containers attached."""
    from . import network
    require_root()
    status = network.bridge_status()
    click.echo(f"{'NAME':10}{'DRIVER':8}{'SUBNET':18}{'GATEWAY':16}CONTAINERS")
    if status is not None:
        subnet, gateway, leases = status
        click.echo(f"{network.BRIDGE:10}{'bridge':8}{subnet:18}{gateway:16}{len(leases)}")


@network_group.command("rm")
@click.argument("name")
def network_rm(name):
    """Remove the bridge (refused while a container uses it)."""
    from . import network
    require_root()
    if name != network.BRIDGE:
        raise MiniboxError(f"no such network: {name} (the only one is {network.BRIDGE})")
    if not network.remove_bridge():
        raise MiniboxError(f"network {name} does not exist")
    click.echo(name)


@cli.group()
def image():
    """Manage images: import archives, build the built-in busybox image."""


@image.command("import")
@click.option("--name", metavar="NAME[:TAG]", help="Tag the image (default: the archive's tags).")
@click.argument("archive", type=click.Path())
def image_import(name, archive):
    """Import a `docker save` archive, an OCI image layout or a rootfs tarball (file or dir)."""
    from . import imagestore
    require_root()
    progress = imagestore.Progress(sys.stderr)
    for names, image_id in imagestore.import_archive(archive, name, progress):
        for tagged in names or ["<untagged>"]:
            click.echo(f"Loaded image: {tagged} ({image_id[:19]})")


@image.command("build")
@click.argument("which", type=click.Choice(["busybox"]))
def image_build(which):
    """(Re)build a built-in image from the host: busybox from busybox-static."""
    from . import images, imagestore
    require_root()
    image_id = imagestore.build_busybox_image(imagestore.Progress(sys.stderr))
    click.echo(f"Built image: {images.BUSYBOX} ({image_id[:19]})")


@cli.command("images")
def list_images():
    """List stored images."""
    from . import images
    require_root()
    click.echo(f"{'REPOSITORY':<30} {'TAG':<16} {'IMAGE ID':<12} {'LAYERS':>6} {'SIZE':>10}")
    for name, image_id, layer_count, size in images.list_images():
        repository, tag = name.rsplit(":", 1) if name else ("<none>", "<none>")
        click.echo(f"{repository:<30} {tag:<16} {image_id[7:19]:<12} {layer_count:>6} "
                   f"{size / 1e6:>8.1f}MB")


@cli.command()
@click.argument("references", nargs=-1, required=True)
def rmi(references):
    """Remove images (untag; delete the layers no other image uses)."""
    from . import imagestore
    require_root()
    for reference in references:
        image_id = imagestore.remove_image(reference)
        click.echo(f"Removed: {reference} ({image_id[:19]})")


@cli.command()
@click.option("-o", "--output", type=click.Path(), help="Write to FILE instead of stdout.")
@click.argument("reference")
def export(output, reference):
    """Write a container's filesystem as a tar archive (to stdout or -o FILE)."""
    from . import imagestore
    require_root()
    if output is None and sys.stdout.isatty():
        raise MiniboxError("refusing to write a tar archive to a terminal: "
                           "redirect stdout or use -o FILE")
    with open(output, "wb") if output else os.fdopen(os.dup(1), "wb") as out:
        imagestore.export_container(reference, out)


@cli.command()
@click.argument("reference")
@click.argument("name", metavar="NAME[:TAG]")
def commit(reference, name):
    """Make a new image from a container: its changes become a new top layer."""
    from . import imagestore
    require_root()
    image_id = imagestore.commit_container(reference, name, imagestore.Progress(sys.stderr))
    click.echo(image_id)

@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only print the ids.")
def ps(show_all, quiet):
    """List containers."""
    from . import control
    require_root()
    found = control.containers(include_stopped=show_all)
    if quiet:
        for directory, _, _ in found:
            click.echo(directory.id[:12])
        return
    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "RESTARTS", "PID")]
    now = time.time()
    for directory, current, status in found:
        command = " ".join(current.get("command") or [])
        rows.append((directory.id[:12], current.get("name") or "",
                     os.path.basename(current.get("image") or ""),
                     f'"{command[:24]}…"' if len(command) > 25 else f'"{command}"',
                     f"{_ago(now - current['created'])} ago", _describe(status, current, now),
                     str(current.get("restarts", 0)),
                     str(current["pid"]) if status in ("created", "running") else ""))
    _print_table(rows)


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
        return f"Exited ({current.get('exit_code')}) {_ago(now - finished)} ago"
    if status == "restarting":
        return f"Restarting ({current.get('exit_code')})"
    return status.capitalize()


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until it exits.")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.argument("reference", metavar="CONTAINER")
def logs(follow, tail, reference):
    """Print a detached container's output (stdout and stderr)."""
    from . import control
    require_root()
    control.logs(reference, sys.stdout.buffer, follow=follow, tail=tail)


@cli.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.argument("reference", metavar="CONTAINER")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(interactive, tty, env, workdir, reference, command):
    """Run a command in a running container (its namespaces and cgroups); exit with its code."""
    from . import control, enter, spec as specs
    require_root()
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    directory, current, status = control.load(reference)
    if status != "running":
        raise MiniboxError(f"container {directory.id[:12]} is not running (it is {status})")
    spec = specs.ContainerSpec.load(directory.file("spec.json"))
    spec.env.update(specs.parse_env(env))
    spec.workdir = workdir or spec.workdir
    return enter.exec_in(current["pid"], spec, list(command), tty=tty, interactive=interactive)


@cli.command()
@click.option("-t", "--time", "timeout", type=click.IntRange(min=0), default=10,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
def stop(timeout, containers):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    from . import control
    require_root()
    for reference in containers:
        control.stop(reference, timeout)
        click.echo(reference)


@cli.command()
@click.option("-s", "--signal", "signal_name", help="Signal to send (default TERM).")
@click.argument("args", nargs=-1, required=True, metavar="CONTAINER... | ID [SIGNAL]")
def kill(signal_name, args):
    """Send a signal to containers: docker's `kill [-s SIG] C...` or runc's `kill ID [SIG]`."""
    from . import control
    require_root()
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


@cli.command()
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.argument("references", nargs=-1, metavar="[CONTAINER...]")
def stats(no_stream, references):
    """Show running containers' CPU, memory and processes, from their cgroups."""
    from . import cgroups, control
    require_root()
    while True:
        rows = [("CONTAINER ID", "NAME", "CPU %", "MEM PEAK / LIMIT", "PIDS")]
        for directory, name, cpu, usage, limit, pids in control.usage(
                0.5 if no_stream else 1.0, references):
            memory = "n/a" if usage.memory_peak is None else cgroups.format_size(usage.memory_peak)
            rows.append((directory.id[:12], name or "", "n/a" if cpu is None else f"{cpu:.1f}%",
                         f"{memory} / {'-' if limit is None else cgroups.format_size(limit)}",
                         str(pids)))
        if not no_stream:
            click.echo("\033[2J\033[H", nl=False)  # clear the terminal, like `docker stats`
        _print_table(rows)
        if no_stream:
            return


def _print_table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.command()
@click.argument("references", nargs=-1, required=True, metavar="CONTAINER...")
def inspect(references):
    """Print containers' configuration and state as JSON."""
    import json
    from . import control
    require_root()
    click.echo(json.dumps([control.inspect(r) for r in references], indent=2))


# -- the OCI runtime command line (runc-compatible) -------------------------------------------

@cli.command()
@click.option("-b", "--bundle", default=".", type=click.Path(), help="The bundle directory.")
@click.option("--pid-file", type=click.Path(), help="Write the container's PID here.")
@click.argument("container_id", metavar="ID")
def create(bundle, pid_file, container_id):
    """OCI: create a container from a bundle, stopped just before its command runs."""
    from . import control, monitor, spec as specs
    require_root()
    spec = specs.load_bundle(bundle)
    monitor.launch(spec, specs.check_container_id(container_id), wait_for_start=True)
    if pid_file:
        _write_pid_file(pid_file, control.load(container_id)[1]["pid"])


def _write_pid_file(path, pid):
    """The digits only, written atomically (a reader never sees an empty file)."""
    path = os.path.abspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        out.write(str(pid))
    os.replace(temporary, path)


@cli.command()
@click.argument("container_id", metavar="ID")
def start(container_id):
    """OCI: run the command of a created container."""
    from . import control
    require_root()
    control.start(container_id)


@cli.command()
@click.argument("container_id", metavar="ID")
def state(container_id):
    """OCI: print the container's state as JSON."""
    from . import control
    require_root()
    click.echo(control.oci_state(container_id))


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Kill the container first if it runs.")
@click.argument("container_id", metavar="ID")
def delete(force, container_id):
    """OCI: delete a stopped container (a running one only with --force)."""
    from . import control
    require_root()
    control.delete(container_id, force=force)


@cli.command()
@click.option("-b", "--bundle", default=".", type=click.Path(), help="Where to write config.json.")
def spec(bundle):
    """OCI: write a default config.json, like `runc spec`."""
    from . import spec as specs
    specs.write_default_config(bundle)


def main():
    """Entry point: one line on stderr and Docker's exit codes instead of tracebacks."""
    try:
        code = cli.main(prog_name="minibox", standalone_mode=False)
    except MiniboxError as error:
        click.echo(f"minibox: {error}", err=True)
        code = error.exit_code
    except click.exceptions.Abort:
        code = 130
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "minibox"
        click.echo(f"minibox: {error.format_message()} (see: {command} --help)", err=True)
        code = RUNTIME_ERROR
    except click.ClickException as error:
        click.echo(f"minibox: {error.format_message()}", err=True)
        code = RUNTIME_ERROR
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # a bug: still one line, with the traceback on request
        if os.environ.get("MINIBOX_DEBUG"):
            raise
        click.echo(f"minibox: internal error: {type(error).__name__}: {error} "
                   "(MINIBOX_DEBUG=1 shows the traceback)", err=True)
        code = RUNTIME_ERROR
    sys.exit(code if isinstance(code, int) else 0)
