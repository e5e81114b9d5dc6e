"""The OCI runtime command line, runc-compatible: create, start, state, delete, spec."""
import os

import click

from . import command
from .containers import FORCE

CONTAINER_ID = click.argument("container_id", metavar="ID")


@command()
@click.option("-b", "--bundle", default=".", metavar="DIR", help="The bundle directory (default: the current one).")
@click.option("--pid-file", metavar="FILE", help="Write the container's PID here.")
@CONTAINER_ID
def create(bundle, pid_file, container_id):
    """OCI: create a container from a bundle, stopped just before its command runs."""
    from .. import control, monitor, oci, shared
    spec = oci.load_bundle(bundle)
    monitor.launch(spec, oci.check_container_id(container_id), wait_for_start=True)
    if pid_file:
        # The digits only, written atomically: a reader never sees an empty file.
        shared.replace_file(os.path.abspath(pid_file), str(control.load(container_id)[1]["pid"]))


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


@command(rootless=True)  # it only writes a file
@click.option("-b", "--bundle", default=".", metavar="DIR",
              help="Where to write config.json (default: the current directory).")
def spec(bundle):
    """OCI: write a default config.json, like `runc spec`."""
    from .. import oci
    oci.write_default_config(bundle)
