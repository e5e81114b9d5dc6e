"""The `minibox` command line: parse flags, call the library, print. No kernel work here."""
import os
import sys

import click

from . import explain, portproxy
from . import network as network_help
from .errors import RUNTIME_ERROR, MiniboxError


def require_root():
    if os.geteuid() != 0:
        raise MiniboxError("must be run as root (try sudo)")


@click.group(context_settings={"help_option_names": ["--help"]})
def cli():
    """minibox: a teaching container runtime (namespaces, cgroups, overlayfs, pivot_root)."""


# Options end at IMAGE: everything after it is the command's (`run busybox ls -l`).
@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the container when it exits.")
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
def run(remove, interactive, tty, name, hostname, env, workdir, entrypoint, volume, rootfs,
        use_chroot, memory, memory_swap, cpus, cpu_shares, pids_limit, cgroup_parent,
        show_stats, cap_add, cap_drop, privileged, security_opt, read_only, user, userns,
        network_mode, ip, publish, explain, step, args):
    """Run a command in a new container; exit with the command's exit code.

    Without CMD, the image's default command runs (ENTRYPOINT + CMD); CMD replaces CMD."""
    from . import container, images, network, spec as specs
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
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    spec = specs.ContainerSpec(
        command=args, image=image,
        rootfs=specs.check_rootfs(rootfs) if rootfs else None,
        name=specs.check_name(name), hostname=hostname,
        env={**images.environment_of(config), **specs.parse_env(env)},
        workdir=workdir or config.get("WorkingDir") or "/",
        user=specs.check_user(user) if user else config.get("User") or None,
        volumes=[specs.parse_volume(v) for v in volume],
        interactive=interactive, tty=tty, remove=remove, use_chroot=use_chroot,
        limits=specs.parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit),
        cgroup_parent=specs.parse_cgroup_parent(cgroup_parent), stats=show_stats,
        security=specs.security_profile(cap_add, cap_drop, privileged, security_opt),
        privileged=privileged, read_only=read_only, userns=userns,
        network=mode, ip=ip, publish=mappings)
    if use_chroot:
        click.echo("minibox: warning: --chroot is escapable (chroot(2) does not change the "
                   "mount namespace's root); use it only for the lesson", err=True)
    _configure_explain(explain, step)
    return container.run(spec)


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
