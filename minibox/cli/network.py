"""`minibox network ls | rm`: the bridge network."""
import click

from . import LazyGroup, command
from ..errors import MiniboxError


@click.group(cls=LazyGroup)
def network():
    """The bridge network minibox0 (created on first use; stays, like docker0)."""


@command(network, "ls")
def network_ls():
    """List the bridge network: subnet, gateway, containers attached."""
    from .. import bridge
    status = bridge.bridge_status()
    print(f"{'NAME':10}{'DRIVER':8}{'SUBNET':18}{'GATEWAY':16}CONTAINERS")
    if status is not None:
        subnet, gateway, leases = status
        print(f"{bridge.BRIDGE:10}{'bridge':8}{subnet:18}{gateway:16}{len(leases)}")


@command(network, "rm")
@click.argument("name", metavar="NETWORK")
def network_rm(name):
    """Remove the bridge (refused while a container uses it)."""
    from .. import bridge
    if name != bridge.BRIDGE:
        raise MiniboxError(f"no such network: {name} (the only one is {bridge.BRIDGE})")
    if not bridge.remove_bridge():
        raise MiniboxError(f"network {name} does not exist")
    print(name)
