"""How a container's monitor waits: in a bare interpreter, and back as the runtime.

Who monitors a container (waits for PID 1, restarts it, tears down): the `minibox` process
of a plain `minibox run` (`run_foreground`), or the detached process of `run -d`
(monitor.py). Either way it spends nearly all its life waiting, for hours maybe: so it does
not wait as the runtime, whose modules (pyroute2 above all) would stay resident for each
container (bench/README.md, "Container memory"). It execve(2)s a bare interpreter that
waits for PID 1 (waiting.py), which execs the runtime again when PID 1 ends (`resume`), to
record the exit, restart as --restart says (and wait lean again) or tear down. One process,
one PID throughout: state.json's monitor_pid and start time, `gc`'s liveness check and the
shell waiting for `minibox run` all keep naming it. Its waiting loop serves the published
ports too (portproxy.py), whose sockets each exec passes on.
"""
from . import container, explain, rootless, state, waiting

DETACHED, FOREGROUND = "detached", "foreground"
# A foreground `run` waits this long as the runtime before it goes lean: a command that ends
# sooner (`run --rm IMAGE true`) would pay two interpreter starts for nothing. Not with -p:
# a connection relayed at the exec would be cut, so a server goes lean at once.
FOREGROUND_LEAN_AFTER = 1.0


def run_foreground(spec, container_id):
    """A plain `minibox run`: this process is the monitor. Returns the exit code."""
    return container.run(spec, container_id, waiting=waiter(FOREGROUND))


def waiter(mode):
    """container.wait's `waiting`: wait for PID 1 in a lean interpreter, which never
    returns, or here when that can't be done:
    - a foreground run narrated with --explain, whose teardown is narrated too;
    - without root: the monitor is root of its own user namespace only, and a fresh runtime
      there would see euid 0 and take itself for root's (rootless.ENABLED is decided at
      start)."""
    def wait(running):
        stays = rootless.ENABLED or (mode == FOREGROUND and explain.enabled())
        if stays or (mode == FOREGROUND and running.ports is None):
            exit_code = waiting.wait_for(running.pid, running.console, running.spec.interactive,
                                         ports=running.ports,
                                         timeout=None if stays else FOREGROUND_LEAN_AFTER)
            if exit_code is not None:
                return exit_code
        waiting.exec_blocked("waiting.wait_then_resume", [
            state.ROOT, running.id, str(running.pid), mode,
            waiting.terminal_arg(running.console, running.spec.interactive),
            *(running.ports.to_args() if running.ports is not None else [])])
    return wait


def resume(args):
    """The monitor's next lives, each in a fresh runtime (waiting.wait_then_resume): PID 1
    ended with the exit code in `args` (`ROOT ID CODE MODE [PORTS...]`); carry on as
    container.run would have, and exit as `minibox run` would (a detached monitor's stdio is
    /dev/null). Never returns.

    The forwarded signals stay blocked (waiting.exec_blocked) until the monitor waits again:
    a Ctrl-C or SIGTERM meanwhile can't cut the record or the teardown short; it reaches
    the next incarnation of PID 1, or nobody once the container is gone."""
    from .ocicalls import failed
    from .shared import exit_now
    from .portproxy import Published
    root, container_id, exit_code, mode, *ports = args
    state.set_root(root)  # `minibox --root DIR run`: the runtime's default may differ
    try:
        code = container.resume(state.ContainerDir(container_id), int(exit_code),
                                waiting=waiter(mode),
                                ports=Published.from_args(ports) if ports else None)
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # as the command line reports it: one line (ocicalls)
        code = failed(error)
    exit_now(code)
