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
@click.option("-w", "--workdir", default="/", help="Working directory inside the container.")
@click.option("-v", "--volume", multiple=True, metavar="HOSTDIR:DIR[:ro]",
              help="Bind-mount a host directory (read-only with :ro).")
@click.option("--rootfs", type=click.Path(), help="Use DIR as the read-only image instead of IMAGE.")
@click.option("--chroot", "use_chroot", is_flag=True,
              help="Use chroot(2) instead of pivot_root(2) (escapable: for the lesson).")
@click.option("--network", "network_mode", default="bridge", metavar="MODE",
              help=network_help.NETWORK_HELP)
@click.option("--ip", metavar="ADDRESS", help="The container's address on the bridge "
              "(default: the lowest free one).")
@click.option("-p", "--publish", multiple=True, metavar="[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]",
              help=portproxy.PUBLISH_HELP)
@click.option("--explain", is_flag=True, help="Narrate each step: syscall, man page, source line.")
@click.option("--step", is_flag=True, help="Like --explain, and wait for Enter before each step.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="(IMAGE | --rootfs DIR) CMD [ARG...]")
def run(remove, interactive, tty, name, hostname, env, workdir, volume, rootfs, use_chroot,
        network_mode, ip, publish, explain, step, args):
    """Run a command in a new container; exit with the command's exit code."""
    from . import container, network, spec as specs
    require_root()
    mode = network.NetworkMode.parse(network_mode)
    mappings = [portproxy.PortMapping.parse(text) for text in publish]
    network.check_options(mode, ip, mappings)
    args = list(args)
    image = None if rootfs else (args.pop(0) if args else None)
    if not rootfs and image is None:
        raise MiniboxError("no image given (usage: minibox run IMAGE CMD [ARG...])")
    if not args:
        raise MiniboxError("no command given (usage: minibox run IMAGE CMD [ARG...])")
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    spec = specs.ContainerSpec(
        command=args, image=image,
        rootfs=specs.check_rootfs(rootfs) if rootfs else None,
        name=specs.check_name(name), hostname=hostname, env=specs.parse_env(env),
        workdir=workdir, volumes=[specs.parse_volume(v) for v in volume],
        interactive=interactive, tty=tty, remove=remove, use_chroot=use_chroot,
        network=mode, ip=ip, publish=mappings)
    if use_chroot:
        click.echo("minibox: warning: --chroot is escapable (chroot(2) does not change the "
                   "mount namespace's root); use it only for the lesson", err=True)
    _configure_explain(explain, step)
    return container.run(spec)


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
