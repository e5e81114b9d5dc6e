"""The detached monitor: what looks after a container once `run -d` returned.

`minibox run -d` must print the id and return at once, even as `id=$(minibox run -d ...)`,
whose stdout is a pipe the shell reads until *every* process holding it has closed it. So
the caller forks a monitor that keeps nothing of the caller's: it forks twice (the monitor
is reparented to init, or the nearest subreaper, and the caller reaps the middle process at
once), calls setsid(2) (no controlling terminal: the caller's terminal closing does not
reach it), and puts /dev/null on its stdio. The monitor then runs container.run -- the very
code of a foreground run -- and reports over a pipe when the container is up, or why not.

Then it only waits, for hours maybe: so it does not wait as the runtime, whose modules
(pyroute2 above all) would stay resident for each container (bench/README.md, "Container
memory"). It execve(2)s a bare interpreter that waits for PID 1 (waiting.py), which execs the runtime again when
PID 1 ends (`resume`), to record the exit, restart as --restart says (and wait lean again)
or tear down. One process, one PID throughout: state.json's monitor_pid and start time, the
port proxy's pidfd and `gc`'s liveness check all keep naming it.

OCI `create` has no monitor: its caller (an engine's shim, conmon) reaps the container's
init itself (engine.py).
"""
import os

from . import container, daemon, rootless, state, waiting
from .errors import (RUNTIME_ERROR, MiniboxError, bug_line, failure_report,
                     read_failure_report)


def launch(spec, container_id):
    """Fork the container's monitor; return when the container runs. A failure is raised
    here, in the caller, as usual."""
    report_read, report_write = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(report_read)
            os.setsid()
            if os.fork() == 0:
                _monitor(spec, container_id, report_write)
        finally:
            os._exit(0)
    os.close(report_write)
    os.waitpid(middle, 0)
    message = os.read(report_read, 4096)
    os.close(report_read)
    if message == b"ok":
        return
    failure = read_failure_report(message)
    if failure:
        raise failure
    raise MiniboxError("the container's monitor died before the container started")


def _monitor(spec, container_id, report):
    """The monitor's first life, as the runtime: create and start; never returns."""
    daemon.close_fds_except(report)
    daemon.stdio_to_dev_null()
    pending = [report]  # the report pipe, until it has been used (fd numbers get reused)

    def ready(_container):
        _send(pending, b"ok")

    # Without root the monitor is root of its own user namespace only: a fresh runtime there
    # would see euid 0 and take itself for root's (rootless.ENABLED is decided at start).
    lean = None if rootless.ENABLED else _wait_lean
    _exit_with(lambda: container.run(spec, container_id, ready=ready, waiting=lean), pending)


def resume(args):
    """The monitor's next lives, each in a fresh runtime (waiting.exec_python): PID 1 ended
    with the exit code in `args`; carry on as container.run would have. Never returns."""
    root, container_id, exit_code = args
    state.set_root(root)  # `minibox --root DIR run -d`: the runtime's default may differ
    _exit_with(lambda: container.resume(state.ContainerDir(container_id), int(exit_code),
                                        waiting=_wait_lean), [])


def _wait_lean(running):
    """container.wait's `waiting`: become the lean monitor until PID 1 ends."""
    waiting.exec_python("waiting.wait_then_resume", [state.ROOT, running.id, str(running.pid)])


def _exit_with(life, pending):
    """Run `life`, report a failure on the pipe still pending, if any, and exit."""
    exit_code = 0
    try:
        life()
    except MiniboxError as error:
        exit_code = error.exit_code
        _send(pending, failure_report(error.exit_code, error))
    except BaseException as error:  # a bug: still report it, as one line
        exit_code = RUNTIME_ERROR
        _send(pending, failure_report(RUNTIME_ERROR, bug_line(error)))
    os._exit(exit_code)


def _send(pending, message):
    if pending:
        fd = pending.pop()
        os.write(fd, message)
        os.close(fd)
