"""minibox under an engine: what Docker's containerd-shim-runc-v2, podman's conmon and a
Kubernetes node's containerd ask of a runtime, runc's way, beyond start/state/kill/delete
(control.py).

Who reaps the container. The shim and conmon make themselves child subreapers
(prctl(2) PR_SET_CHILD_SUBREAPER) and run `minibox create`, which must *exit* once the init
is blocked before execve(2) and its PID is in --pid-file: the init is then re-parented to
the engine, which waits for it and reads its exit status (runc's `create` does the same).
So no minibox process stays: no monitor. What a monitor does for `run -d` is split up --
`start` opens exec.fifo and records "running" (control.start), `state` reads the process
itself (pid + start time, state.live_status), `delete` tears down what the ledger lists.

The rest acts on the container's cgroup, found from its ledger: pause/resume (the freezer),
ps (the processes in it), update (its limits), events --stats (its counters).
"""
import json
import os
import signal

from . import cgroups, container, control, shared, terminal
from .errors import MiniboxError

RUNC_VERSION = "1.1.5"  # the runc whose command line minibox follows (features' "runc" key)


def create_from_bundle(bundle, container_id, pid_file=None, console_socket=None,
                       preserve_fds=0):
    """`minibox create`: the bundle's config.json (oci.py) made a container by `create`."""
    from . import oci
    spec = oci.load_bundle(bundle)
    create(spec, oci.check_container_id(container_id), pid_file,
           console_socket and os.path.abspath(console_socket), preserve_fds)


def create(spec, container_id, pid_file=None, console_socket=None, preserve_fds=0):
    """OCI `create` for a caller that reaps the init itself; returns once nothing of ours
    holds it. process.terminal: the pty made inside goes to console_socket (runc's
    protocol, terminal.send_console)."""
    if spec.tty and not console_socket:
        raise MiniboxError("process.terminal is true: it needs a console socket to send the "
                           "terminal to (--console-socket)")
    if console_socket and not spec.tty:
        raise MiniboxError(f"--console-socket {console_socket}: process.terminal is false, "
                           "there is no terminal to send")
    console = console_socket and terminal.connect_console_socket(console_socket)
    made = container.create(spec, container_id, caller_reaps=True, preserve_fds=preserve_fds)
    try:
        made.channel.close()
        if made.console is not None:
            terminal.send_console(console, made.console)
        if pid_file:
            # The digits only, written atomically: a reader never sees an empty file.
            shared.replace_file(os.path.abspath(pid_file), str(made.pid))
    except BaseException:
        os.kill(made.pid, signal.SIGKILL)  # still our child: nobody else would reap it
        os.waitpid(made.pid, 0)
        made.directory.release_all()
        raise


def pause(reference):
    """Freeze every process of a running container (v1 freezer.state, v2 cgroup.freeze)."""
    _running_cgroup(reference, "pause").freeze()


def resume(reference):
    _running_cgroup(reference, "resume").thaw()


def _running_cgroup(reference, action):
    directory, _, status = control.load(reference)
    if status != "running":
        raise MiniboxError(f"cannot {action} container {directory.id[:12]}: it is {status}")
    return control.cgroup_of(directory)


def processes(reference):
    """The host PIDs of the container's processes (runc's `ps --format json`)."""
    directory, _, _ = control.load(reference)
    return control.cgroup_of(directory).pids()


def update(reference, resources, source):
    """runc's `update --resources FILE`: the OCI linux.resources object `source` held (what
    runc's update applies of it: ociresources.update_limits) written to the running
    container's cgroup."""
    from .oci import ConfigCheck
    from .ociresources import update_limits
    directory, _, status = control.load(reference)
    if status not in ("created", "running"):  # a paused (frozen) container reads running
        raise MiniboxError(f"cannot update container {directory.id[:12]}: it is {status}")
    limits = update_limits(resources, ConfigCheck(f"--resources {source}"))
    try:
        control.cgroup_of(directory).set_limits(limits)
    except (OSError, cgroups.CgroupError) as error:
        raise MiniboxError(f"cannot update container {directory.id[:12]}: {error}") from None


def stats_event(reference):
    """One `events --stats` record in runc's JSON shape ({"type": "stats", "id", "data"}),
    from what the cgroup counts (Docker's `docker stats` reads the cgroup itself, through
    containerd's shim: this is for `runc events` callers)."""
    directory, _, _ = control.load(reference)
    group = control.cgroup_of(directory)
    usage = group.stats()
    return json.dumps({"type": "stats", "id": directory.id, "data": {
        "cpu": {"usage": {"total": int((usage.cpu_seconds or 0) * 1e9)}},
        "memory": {"usage": {"max": usage.memory_peak or 0}},
        "pids": {"current": len(group.pids())}}})


def features():
    """`minibox features`: runc's JSON (runtime-spec's features.md) of what this runtime
    accepts, so an engine can ask before it writes a config."""
    from . import security, spec
    return json.dumps({
        "ociVersionMin": "1.0.0", "ociVersionMax": spec.OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
                         "bind", "rbind", "private", "rprivate", "slave", "rslave", "shared",
                         "rshared", "relatime", "strictatime", "noatime"],
        "linux": {"namespaces": sorted(spec.NAMESPACE_FILES),
                  "capabilities": [f"CAP_{name}" for name in security.CAPABILITIES],
                  "cgroup": {"v1": True, "v2": True, "systemd": False},
                  "seccomp": {"enabled": True},
                  "apparmor": {"enabled": False}, "selinux": {"enabled": False}},
        "annotations": {"org.opencontainers.runc.version": RUNC_VERSION}}, indent=2)
