"""QMP, the QEMU Machine Protocol: JSON commands to a running QEMU over a socket.

A detached VM's QEMU listens on <vm dir>/qmp.sock (`-qmp unix:PATH,server=on,wait=off`).
A client connects, reads the greeting, sends `qmp_capabilities` to leave negotiation mode,
then one command per JSON object (docs/interop/qmp-spec.rst; the commands are in
docs/interop/qemu-qmp-ref). minivm uses four:

    query-status   {"status": "running" | "paused" | "shutdown" | ...}
    stop           pause every vCPU: the guest's clock and programs stand still
    cont           resume them
    quit           end QEMU at once, like pulling the plug

`system_powerdown` would press a virtual power button, but a microvm guest without ACPI has
none, and a busybox init would not listen to it anyway: `minivm stop` asks the guest over
its own serial channel first (vms.py) and uses `quit` only when the guest does not finish.

The `qemu.qmp` package (the client QEMU's own tests use) is asyncio-based; its `legacy`
module wraps it in blocking calls, which is all a command-line tool needs.
"""
from pathlib import Path

from minivm import MinivmError

TIMEOUT = 5.0


def execute(socket: Path, command: str, **arguments):
    """Run one QMP command and return its "return" value."""
    import asyncio

    from qemu.qmp import QMPError
    from qemu.qmp.legacy import QEMUMonitorProtocol

    failures = (QMPError, OSError, EOFError, asyncio.TimeoutError)
    monitor = QEMUMonitorProtocol(str(socket))
    try:
        monitor.connect()  # reads the greeting, sends qmp_capabilities
        monitor.settimeout(TIMEOUT)
        return monitor.cmd(command, **arguments)
    except failures as error:
        raise MinivmError(f"QMP {command} on {socket}: {error or type(error).__name__}") from None
    finally:
        try:
            monitor.close()
        except failures:
            pass  # after `quit` QEMU hangs up first
