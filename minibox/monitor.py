"""The container's monitor: the process that waits for PID 1, restarts it and tears down.

A plain `minibox run` is its container's monitor itself (`run_foreground`). For `run -d`,
`minibox` must print the id and return at once, even as `id=$(minibox run -d ...)`, whose
stdout is a pipe the shell reads until *every* process holding it has closed it. So the
caller forks a monitor that keeps nothing of the caller's (`launch`): it forks twice (the
monitor is reparented to init, or the nearest subreaper, and the caller reaps the middle
process at once), calls setsid(2) (no controlling terminal: the caller's terminal closing
does not reach it), and puts /dev/null on its stdio. Either way the monitor runs
container.run -- one code path -- and a detached one reports over a pipe when the container
is up, or why not.

Then it only waits, for hours maybe: so it does not wait as the runtime, whose modules
(pyroute2 above all) would stay resident for each container (bench/README.md, "Container
memory"). It execve(2)s a bare interpreter that waits for PID 1 (waiting.py), which execs
the runtime again when PID 1 ends (`resume`), to record the exit, restart as --restart says
(and wait lean again) or tear down. One process, one PID throughout: state.json's
monitor_pid and start time, the port proxy's pidfd, `gc`'s liveness check and the shell
waiting for a foreground `minibox run` all keep naming it.

OCI `create` has no monitor: its caller (an engine's shim, conmon) reaps the container's
init itself (engine.py).
"""
import os

from . import container, daemon, explain, rootless, state, waiting
from .errors import (RUNTIME_ERROR, MiniboxError, bug_line, failure_report,
                     read_failure_report)

DETACHED, FOREGROUND = "detached", "foreground"
# A foreground `run` waits this long as the runtime before it goes lean: a command that ends
# sooner (`run --rm IMAGE true`) would pay two interpreter starts for nothing.
FOREGROUND_LEAN_AFTER = 1.0


def run_foreground(spec, container_id):
    """A plain `minibox run`: this process is the monitor. Returns the exit code."""
    return container.run(spec, container_id, waiting=_waiter(FOREGROUND))


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
    """A detached monitor's first life, as the runtime: create and start; never returns."""
    daemon.close_fds_except(report)
    daemon.stdio_to_dev_null()
    pending = [report]  # the report pipe, until it has been used (fd numbers get reused)

    def ready(_container):
        _send(pending, b"ok")

    _exit_with(lambda: container.run(spec, container_id, ready=ready,
                                     waiting=_waiter(DETACHED)), pending)


def _waiter(mode):
    """container.wait's `waiting`: wait for PID 1 in a lean interpreter, which never
    returns, or here when that can't be done:
    - with -t, where this process relays the terminal and must restore its raw mode;
    - a foreground run narrated with --explain, whose teardown is narrated too;
    - without root: the monitor is root of its own user namespace only, and a fresh runtime
      there would see euid 0 and take itself for root's (rootless.ENABLED is decided at
      start)."""
    def wait(running):
        if (running.console is not None or rootless.ENABLED
                or (mode == FOREGROUND and explain.enabled())):
            return waiting.wait_for(running.pid, running.console, running.spec.interactive)
        if mode == FOREGROUND:
            exit_code = waiting.wait_for(running.pid, timeout=FOREGROUND_LEAN_AFTER)
            if exit_code is not None:
                return exit_code
        waiting.exec_blocked("waiting.wait_then_resume",
                             [state.ROOT, running.id, str(running.pid), mode])
    return wait


def resume(args):
    """The monitor's next lives, each in a fresh runtime (waiting.wait_then_resume): PID 1
    ended with the exit code in `args`; carry on as container.run would have, and exit as
    it would have. Never returns."""
    root, container_id, exit_code, mode = args
    state.set_root(root)  # `minibox --root DIR run`: the runtime's default may differ
    directory = state.ContainerDir(container_id)

    def life():
        return container.resume(directory, int(exit_code), waiting=_waiter(mode))

    if mode == DETACHED:
        _exit_with(life, [])
    from .ocicalls import failed
    from .shared import exit_now
    try:
        code = life()
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # as the command line reports it: one line (ocicalls)
        code = failed(error)
    exit_now(code)


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
