"""The detached monitor: what looks after a container once `run -d` returned.

`minibox run -d` must print the id and return at once, even as `id=$(minibox run -d ...)`,
whose stdout is a pipe the shell reads until *every* process holding it has closed it. So
the caller forks a monitor that keeps nothing of the caller's: it forks twice (the monitor
is reparented to init, or the nearest subreaper, and the caller reaps the middle process at
once), calls setsid(2) (no controlling terminal: the caller's terminal closing does not
reach it), and puts /dev/null on its stdio. The monitor then runs container.run -- the very
code of a foreground run -- and reports over a pipe when the container is up, or why not.
Then it waits for PID 1 in a bare interpreter, and comes back as the runtime to restart or
tear down, as a foreground run does (supervisor.py).

OCI `create` has no monitor: its caller (an engine's shim, conmon) reaps the container's
init itself (engine.py).
"""
import os

from . import container, daemon, supervisor
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

    exit_code = 0
    try:
        container.run(spec, container_id, ready=ready,
                      waiting=supervisor.waiter(supervisor.DETACHED))
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
