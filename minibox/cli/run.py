"""`minibox run`: the flags docker run takes, turned into a spec (docker.py) and run
(supervisor.py, container.py). The only command module a plain `minibox run` imports."""
import sys

import click

from . import command
from ..errors import MiniboxError
from ..network import NETWORK_HELP
from ..portproxy import PUBLISH_HELP

RUN_ARGUMENTS = "(IMAGE | --rootfs DIR) [CMD [ARG...]]"


def flag(*names, **settings):
    return click.option(*names, is_flag=True, **settings)


def repeatable(*names, **settings):
    """An option that may be given again and again: -e A=1 -e B=2."""
    return click.option(*names, multiple=True, **settings)


# Shared with exec (containers.py).
INTERACTIVE = flag("-i", "--interactive", help="Keep stdin attached.")
TTY = flag("-t", "--tty", help="Give the command a pseudo-terminal.")
ENV = repeatable("-e", "--env", metavar="KEY=VALUE", help="Set an environment variable.")

RUN_OPTIONS = (
    flag("--rm", "remove", help="Remove the container when it exits."),
    flag("-d", "--detach", help="Run in the background; print the id."),
    click.option("--restart", default="no", metavar="POLICY",
                 help="no | on-failure[:N] | always: restart the command when it exits."),
    INTERACTIVE, TTY,
    click.option("--name", help="A unique name for the container."),
    click.option("-h", "--hostname", metavar="HOSTNAME",
                 help="Hostname inside (default: the name, else the short id)."),
    ENV,
    click.option("-w", "--workdir", metavar="DIR",
                 help="Working directory inside (default: the image's, else /)."),
    click.option("--entrypoint", metavar="CMD",
                 help="Run this instead of the image's ENTRYPOINT (drops its CMD)."),
    repeatable("-v", "--volume", metavar="HOSTDIR:DIR[:ro]",
               help="Bind-mount a host directory (read-only with :ro)."),
    click.option("--rootfs", metavar="DIR",
                 help="Use DIR as the read-only image instead of IMAGE."),
    flag("--chroot", "use_chroot",
         help="Use chroot(2) instead of pivot_root(2) (escapable: for the lesson)."),
    click.option("-m", "--memory", metavar="SIZE",
                 help="Memory limit, e.g. 64m (OOM kill above it)."),
    click.option("--memory-swap", metavar="SIZE",
                 help="Memory plus swap limit; -1: unlimited swap."),
    click.option("--cpus", metavar="N", help="CPU time limit in CPUs, e.g. 0.5."),
    click.option("--cpu-shares", metavar="N", help="Relative CPU weight (default 1024)."),
    click.option("--pids-limit", metavar="N",
                 help="Most processes at once (fork bombs stop here)."),
    click.option("--cpuset-cpus", metavar="LIST",
                 help="CPUs the container may run on, e.g. 0-1,3."),
    click.option("--blkio-weight", metavar="N",
                 help="Relative block I/O weight, 10 to 1000 (needs BFQ)."),
    click.option("--cgroup-parent", metavar="PATH",
                 help="Put the cgroup under PATH instead of minibox/."),
    flag("--stats", "show_stats", help="At exit, print peak memory, CPU time and max pids."),
    repeatable("--cap-add", metavar="CAP",
               help="Keep a capability beyond Docker's default set (ALL: every one)."),
    repeatable("--cap-drop", metavar="CAP",
               help="Drop a capability from the default set (ALL: every one)."),
    flag("--privileged",
         help="Keep every capability, no seccomp, no masked paths (to see what opens up)."),
    repeatable("--security-opt", metavar="OPT",
               help="no-new-privileges[=false] or seccomp=unconfined."),
    flag("--read-only", help="Make the root read-only (with a tmpfs /tmp)."),
    click.option("-u", "--user", metavar="USER[:GROUP]",
                 help="Run the command as this user (ids or names)."),
    flag("--userns", help="A user namespace: container root is uid 100000 on the host."),
    click.option("--network", "network_mode", metavar="MODE", help=NETWORK_HELP),
    click.option("--ip", metavar="ADDRESS",
                 help="The container's address on the bridge (default: the lowest free one)."),
    repeatable("-p", "--publish", metavar="[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]",
               help=PUBLISH_HELP),
    flag("--explain", help="Narrate each step: syscall, man page, source line."),
    flag("--step", help="Like --explain, and wait for Enter before each step."),
    click.argument("args", nargs=-1, metavar=RUN_ARGUMENTS),
)


def options(*decorators):
    """Apply option decorators in the order given (click lists them in that order)."""
    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function
    return apply


@command(rootless=True, options_end_at_argument=True)
@options(*RUN_OPTIONS)
def run(explain, step, args, **flags):
    """Run a command in a new container; exit with the command's exit code.

    Without CMD, the image's default command runs (ENTRYPOINT + CMD); CMD replaces CMD.
    Options end at IMAGE: what follows is the command's."""
    from .. import docker, state, supervisor
    container_id = state.new_container_id()
    spec = docker.spec_from_flags(container_id, args, **flags)
    if spec.use_chroot:
        print("minibox: warning: --chroot is escapable (chroot(2) does not change the "
              "mount namespace's root); use it only for the lesson", file=sys.stderr)
    _configure_explain(explain, step)
    if spec.detach:
        from .. import monitor
        monitor.launch(spec, container_id)
        print(container_id)
        return 0
    return supervisor.run_foreground(spec, container_id)


def _configure_explain(narrate, pause):
    from .. import explain
    try:
        explain.configure(narrate, pause)
    except OSError:
        raise MiniboxError("--step needs a terminal to wait on (no /dev/tty)") from None
