"""The OCI runtime command line, runc-compatible: create, start, state, delete, spec, and
what engines call besides (pause, resume, update, events, features; kill and ps are in
containers.py, shared with Docker's words). engine.py says who reaps an OCI container."""
import click

from . import command
from .containers import FORCE

CONTAINER_ID = click.argument("container_id", metavar="ID")


@command()
@click.option("-b", "--bundle", default=".", metavar="DIR", help="The bundle directory (default: the current one).")
@click.option("--pid-file", metavar="FILE", help="Write the container's PID here.")
@click.option("--console-socket", metavar="PATH",
              help="With process.terminal: send the pty master to this unix socket.")
@click.option("--preserve-fds", type=click.IntRange(min=0), default=0, metavar="N",
              help="Pass fds 3 to 3+N-1 on to the container's process.")
@click.option("--no-pivot", is_flag=True,
              help="Accepted for runc's callers: minibox always uses pivot_root.")
@click.option("--no-new-keyring", is_flag=True,
              help="Accepted for runc's callers: minibox makes no session keyring.")
@CONTAINER_ID
def create(bundle, pid_file, console_socket, preserve_fds, no_pivot, no_new_keyring,
           container_id):
    """OCI: create a container from a bundle, stopped just before its command runs. The
    caller reaps its process: no minibox process stays."""
    from .. import engine
    engine.create_from_bundle(bundle, container_id, pid_file, console_socket, preserve_fds)


@command()
@CONTAINER_ID
def start(container_id):
    """OCI: run the command of a created container."""
    from .. import control
    control.start(container_id)


@command()
@CONTAINER_ID
def state(container_id):
    """OCI: print the container's state as JSON."""
    from .. import control
    print(control.oci_state(container_id))


@command()
@FORCE
@CONTAINER_ID
def delete(force, container_id):
    """OCI: delete a stopped container (a running one only with --force)."""
    from .. import control
    control.delete(container_id, force=force)


@command()
@CONTAINER_ID
def pause(container_id):
    """OCI: freeze every process of the container (the cgroup freezer)."""
    from .. import engine
    engine.pause(container_id)


@command()
@CONTAINER_ID
def resume(container_id):
    """OCI: thaw a paused container."""
    from .. import engine
    engine.resume(container_id)


@command()
@click.option("-r", "--resources", required=True, metavar="FILE",
              help="OCI linux.resources as JSON (memory, cpu, pids, blockIO weight); - for stdin.")
@CONTAINER_ID
def update(resources, container_id):
    """OCI: change a container's cgroup limits."""
    import json
    import sys
    from .. import engine
    from ..errors import MiniboxError
    try:
        with (open(resources) if resources != "-" else sys.stdin) as source:
            wanted = json.load(source)
    except (OSError, ValueError) as error:
        raise MiniboxError(f"--resources {resources}: {getattr(error, 'strerror', None) or error}"
                           ) from None
    engine.update(container_id, wanted, resources)


@command()
@click.option("--stats", is_flag=True, help="Print one stats record and exit.")
@click.option("--interval", default=5, type=click.IntRange(min=1), metavar="SECONDS",
              help="Seconds between records (default 5).")
@CONTAINER_ID
def events(stats, interval, container_id):
    """OCI: print the container's cgroup counters as runc's JSON records."""
    import time
    from .. import engine
    while True:
        print(engine.stats_event(container_id), flush=True)
        if stats:
            return
        time.sleep(interval)


@command()
def features():
    """OCI: print what this runtime supports, as runc's JSON."""
    from .. import engine
    print(engine.features())


@command(rootless=True)  # it only writes a file
@click.option("-b", "--bundle", default=".", metavar="DIR",
              help="Where to write config.json (default: the current directory).")
def spec(bundle):
    """OCI: write a default config.json, like `runc spec`."""
    from .. import oci
    oci.write_default_config(bundle)
