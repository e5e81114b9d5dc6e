"""The container lifecycle: create -> start -> wait -> delete, and `run` = all four.

Who does what. The runtime process stays in the host's namespaces for the whole life of the
container: it is the container's *monitor* (like conmon or runc's shim), so it can set up the
host side, wait for the container and tear everything down. It forks the container's init,
which enters its new namespaces, builds its root filesystem, and finally execve(2)s the
user's command as PID 1. The two talk over a socketpair (SOCK_SEQPACKET keeps messages apart):

    init (init.py)                         runtime (this file)
                                           [without root: unshare(user) first, rootless.py]
                                           unshare(pid), fork
    unshare(mnt, uts, ipc, net)  ----->  "ready"
                                           host side: veth, /etc/hosts, cgroup, hooks
    unshare(cgroup)              <-----  "go" + the OCI state JSON, for hooks
    overlay, the spec's mounts (/proc, /dev, /sys, /etc/hosts...), [createContainer hooks],
    pivot_root, hostname, lo up
    [pty master fd]              ----->  (with -t)
    [unshare(user) with --userns ----->  "userns"; maps written, exec.fifo
     (OCI: or setns to its path) <-----  "mapped"   given to the namespace's root]
    blocks on exec.fifo          ----->  "created"          <- `minibox create` ends here
                                           -p ports to serve, once per container
                                 <-----  start: reads exec.fifo
    [startContainer hooks], seccomp, capabilities, user, no_new_privs
    execve(CMD)                                             (init.exec_confined)
    (socket closes on exec: FD_CLOEXEC) -> runtime knows the exec happened

Then the monitor waits for PID 1 (supervise), records its exit code in state.json, restarts
it as the restart policy says -- with a fresh init, since a PID namespace dies with its
PID 1, and the fresh network namespace gets the container's address again -- and tears
down what the ledger lists. For `run -d` the monitor is a detached process of its own
(monitor.py); for a plain `run` it is the `minibox` process. Either way it waits in a bare
interpreter, where it can (supervisor.py says when not), and comes back as the runtime
(`resume`) when PID 1 ends; OCI
`create` leaves no monitor (engine.py). Commands acting on a container that exists (start,
kill, stop, rm, gc) are in control.py.
"""
import _socket  # socket(2) without socket.py's enums, whose import every start would pay
import os
import signal
import sys
import time

from . import (cgroups, execfifo, explain, hooks, init, namespaces, network, portproxy,
               rootfs, rootless, shared, state)
from . import spec as spec_module
from .errors import MiniboxError, read_failure_report


class Container:
    """A created container, as seen by its monitor."""

    def __init__(self, spec, directory, pid, channel, cgroup, console=None, ports=None):
        self.spec = spec
        self.directory = directory
        self.id = directory.id
        self.pid = pid              # the init's PID on the host
        self.channel = channel      # our end of the socketpair
        self.cgroup = cgroup        # cgroups.Cgroup: limits, stats, OOM kills
        self.console = console      # the pty master, with -t
        self.ports = ports          # portproxy.Published, with -p: the monitor serves them


def create(spec, container_id=None, caller_reaps=False, preserve_fds=0):
    """The runtime's story, steps 1-4: from a spec to an init blocked just before execve.
    caller_reaps: OCI `create` under an engine, which reaps the init itself (engine.py)."""
    namespaces.check_kernel_support()
    if rootless.ENABLED:
        rootless.check_spec(spec)
    if spec.root_path is None:
        rootfs.check_overlay_support()
    if not all(os.path.isdir(layer) for layer in spec.layers):  # before anything is made
        raise MiniboxError(f"image {spec.image} ({spec.image_id[:19]}): its layers are no "
                           "longer in the image store")
    # 0. Without root, a user namespace of our own first, where we are root (rootless.py):
    #    for good, since everything below needs its capabilities.
    if rootless.ENABLED:
        rootless.enter_user_namespace(os.geteuid(), os.getegid())
    #    Moving the init into its cgroup (step 4) waits for an RCU grace period: a thread
    #    starts paying it now, while we go on (cgroups/grace.py; a plain `minibox run` started
    #    it even earlier, in __main__.py, before importing the command line).
    cgroups.start_grace_period()
    # 1. Make the container's directory. Every resource is recorded in the ledger before it
    #    is made, so teardown and `minibox gc` know what to undo.
    directory = state.ContainerDir.create(container_id or state.new_container_id(), spec.name)
    bound_ports = []
    try:
        directory.save(dict(_initial_state(spec, directory), caller_reaps=caller_reaps))
        #    On the bridge: a helper starts importing pyroute2 now, on the other core.
        network.prepare(spec, directory)
        # 2. The cgroup, limits written, before the init exists (cgroups/v1.py, v2.py).
        cgroup = cgroups.cgroup_of(spec, directory.id)
        taken = [path for path in cgroup.paths() if os.path.isdir(path)]
        if taken:  # another's (an OCI cgroupsPath): the ledger would remove it with ours
            raise MiniboxError(f"cgroup {taken[0]} exists already: minibox makes the "
                               "container's cgroup itself, it joins none")
        if cgroup.paths():  # none without root (cgroups.NoCgroup)
            directory.record("cgroup", paths=cgroup.paths(), groups=cgroup.groups())
            _create_cgroup(cgroup, spec.limits, "\n              ".join(cgroup.plan(spec.limits)))
        shared.replace_file(directory.file("spec.json"), spec.dumps())
        for scratch in ("upper", "work", "rootfs"):
            os.mkdir(directory.file(scratch), 0o755)
        #    Published host ports are bound now, so a busy port fails the run before the
        #    container exists.
        bound_ports = portproxy.bind_ports(spec.publish)
        container = spawn(spec, directory, cgroup, caller_reaps, preserve_fds)
        container.ports = network.publish(directory, bound_ports)
        return container
    except BaseException:
        portproxy.close_ports(bound_ports)
        directory.release_all()
        raise


def spawn(spec, directory, cgroup, caller_reaps=False, preserve_fds=0, ports=None):
    """Steps 3-4 (again for each restart): fork a fresh init and take it to `created`."""
    os.mkfifo(directory.file("exec.fifo"), 0o600)
    # --network container:ID: that container's netns, opened now, while its init can still
    # be told from a process that got its PID later.
    shared_netns, shared_address = network.open_shared_netns(spec.network)
    channel, init_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    # 3. Fork the init into a new PID namespace; it unshares the others itself. A PID
    #    namespace dies with its PID 1, so a restarted container gets a fresh one too.
    new_pid_namespace = "pid" in spec.namespaces
    if new_pid_namespace:
        own_pid_namespace = namespaces.new_pid_namespace_for_children(spec.namespaces["pid"])
    pid = os.fork()
    if pid == 0:
        channel.close()
        init.pid1(spec, directory, init_end, shared_netns, caller_reaps,
                  preserve_fds)  # never returns (init.py)
    if new_pid_namespace:
        namespaces.restore_pid_namespace(own_pid_namespace, rootless.ENABLED)
    if shared_netns is not None:
        os.close(shared_netns)
    init_end.close()
    start_time = shared.process_start_time(pid)
    directory.record("process", pid=pid, start_time=start_time)
    # 4. Host-side setup while the init waits in its new namespaces. The network first: it
    #    does not care about cgroups, and meanwhile the grace period that the cgroup move
    #    waits for passes (cgroups/grace.py).
    _expect(channel, b"ready", pid)
    networking = network.set_up(spec, directory, pid, shared_address)
    if cgroup.paths():
        _join_cgroup(cgroup, pid)
    # The OCI state JSON, for hooks to read on stdin: only when there are hooks.
    created = _hook_state(directory, "created", pid, start_time) if spec.hooks else ""
    hooks.run(spec.hooks, ("prestart", "createRuntime"), created)
    channel.send(b"go " + created.encode())  # the init's own hooks read it too
    if spec.userns:
        _expect(channel, b"userns", pid)
        _map_user_namespace(spec, directory, pid)
        channel.send(b"mapped")
    console = None
    if spec.tty:
        console = _receive_console(channel, pid)
    _expect(channel, b"created", pid)
    directory.update(status="created", pid=pid, pid_start=start_time, network=networking)
    return Container(spec, directory, pid, channel, cgroup, console, ports)


def _map_user_namespace(spec, directory, pid):
    """Write a new user namespace's id maps (a joined one has its own), then give exec.fifo
    to the host ids of its root: the init opens the fifo as that root."""
    if spec.namespaces["user"] is None:
        try:
            namespaces.write_id_maps(pid, spec.uid_mappings, spec.gid_mappings)
        except OSError as error:  # e.g. EINVAL: overlapping ranges (user_namespaces(7))
            raise MiniboxError(f"cannot write the user namespace's id maps "
                               f"{spec.uid_mappings} / {spec.gid_mappings}: {error.strerror}"
                               ) from None
    owner = [namespaces.host_id_of_root(pid, name) for name in ("uid_map", "gid_map")]
    if None in owner:
        raise MiniboxError(f"user namespace {spec.namespaces['user']} maps no uid or gid 0 "
                           "for the container's root")
    os.chown(directory.file("exec.fifo"), *owner)


@explain.step("Create the container's cgroup and write its limits: the kernel enforces them "
              "on every process put in it", syscall="{plan}", man="cgroups(7)")
def _create_cgroup(cgroup, limits, plan):
    """`plan` is the narration: each mkdir and control file, with its twin in the other
    cgroup version."""
    try:
        cgroup.create(limits)
    except cgroups.CgroupError as error:
        raise MiniboxError(str(error)) from None


@explain.step("Move the init into the cgroup, before it runs a single instruction of the "
              "user's", syscall='echo {pid} > cgroup.procs (v1: in every hierarchy)',
              man="cgroups(7)")
def _join_cgroup(cgroup, pid):
    try:
        cgroup.add(pid)
    except cgroups.CgroupError as error:
        raise MiniboxError(str(error)) from None


def _initial_state(spec, directory):
    return {"id": directory.id, "name": spec.name,
            "image": spec.image or spec.rootfs or spec.root_path, "image_id": spec.image_id,
            "command": spec.command,
            "hostname": spec.hostname, "created": time.time(), "status": "creating",
            "pid": None, "exit_code": None, "remove": spec.remove, "restarts": 0,
            "bundle": spec.bundle or directory.path, "annotations": spec.annotations,
            "monitor_pid": os.getpid(),
            "monitor_start": shared.process_start_time(os.getpid())}


def _hook_state(directory, status, pid, start_time):
    """The OCI state JSON a hook reads on its stdin."""
    current = directory.load() or {}
    return state.oci_state(directory.id,
                           dict(current, status=status, pid=pid, pid_start=start_time))


def _receive(channel, pid):
    """One message from the init, with the file descriptor it may pass along (SCM_RIGHTS,
    unix(7): the kernel installs a copy of the sender's fd in our table)."""
    try:
        message, ancillary, _, _ = channel.recvmsg(4096, _socket.CMSG_SPACE(4))
    except OSError:
        message, ancillary = b"", []
    fds = [int.from_bytes(data[:4], sys.byteorder) for level, kind, data in ancillary
           if (level, kind) == (_socket.SOL_SOCKET, _socket.SCM_RIGHTS)]
    failure = read_failure_report(message)
    if failure:
        _reap(pid)
        raise failure
    if not message:
        _reap(pid)
        raise MiniboxError("the container's init exited during setup")
    return message, fds


def _expect(channel, wanted, pid):
    message, _ = _receive(channel, pid)
    if message != wanted:
        raise MiniboxError(f"unexpected message from the container's init: {message!r}")


def _receive_console(channel, pid):
    message, fds = _receive(channel, pid)
    if message != b"console" or not fds:
        raise MiniboxError("the container's init sent no terminal")
    return fds[0]


def _reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start(container):
    execfifo.release_init(container.directory, container.pid)
    confirm_exec(container)


def confirm_exec(container):
    """Wait until the init has exec'd the command (its end of the channel closes on execve:
    FD_CLOEXEC) or reported why it could not; then the container is running."""
    directory = container.directory
    message = container.channel.recv(4096)
    container.channel.close()
    failure = read_failure_report(message)
    if failure:
        _reap(container.pid)
        directory.update(status="stopped", exit_code=failure.exit_code, finished=time.time(),
                         error=str(failure))
        raise failure
    # EOF also comes when the init was killed before `start` (OCI kill of a created
    # container): then it is not running, and wait() will record how it ended.
    if os.waitid(os.P_PID, container.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        execfifo.mark_running(directory, container.spec.hooks)


def wait(container, waiting):
    """Wait for PID 1 to exit and record how it ended; return its exit code. `waiting`
    (supervisor.waiter) does the waiting, and may do it in a lean interpreter: then it never
    returns, and `resume` carries on in a fresh runtime."""
    return record_exit(container, waiting(container))


def record_exit(container, exit_code):
    """Record in state.json how PID 1 ended, with its cgroup's stats; return the exit code."""
    # Read while the cgroup still exists: `minibox stats` and --stats show these later.
    container.stats, container.oom_kills = container.cgroup.stats(), container.cgroup.oom_kills()
    try:
        container.directory.update(status="stopped", exit_code=exit_code, finished=time.time(),
                                   stats=vars(container.stats), oom_kills=container.oom_kills)
    except MiniboxError as error:
        # A command that filled the disk of the state directory (ENOSPC) still ended with
        # its own code: that is what `run` reports; `ps` shows "Exited (unknown)".
        sys.stderr.write(f"minibox: warning: container {container.id[:12]} exited with "
                         f"{exit_code}, not recorded: {error}\n")
    return exit_code


def supervise(container, exit_code, waiting):
    """Wait for PID 1 and restart it while the restart policy says so (and nobody ran
    `minibox stop`); return the last incarnation and its exit code. With `exit_code`, PID 1
    has ended already (`resume`); `waiting`: see wait()."""
    directory, spec = container.directory, container.spec
    restarts = (directory.load() or {}).get("restarts", 0)  # a resumed monitor's too
    while True:
        if exit_code is None:
            exit_code = wait(container, waiting)
        else:
            record_exit(container, exit_code)
        if not spec.restart.should_restart(exit_code, restarts):
            return container, exit_code
        restarts += 1
        if _stop_requested(directory) or not directory.update(
                only_from=("stopped",), status="restarting", restarts=restarts):
            return container, exit_code
        time.sleep(min(0.1 * 2 ** restarts, 5))  # Docker doubles its delay between restarts too
        if _stop_requested(directory):
            directory.update(status="stopped")
            return container, exit_code
        container = spawn(spec, directory, container.cgroup, ports=container.ports)
        start(container)
        exit_code = None


def _stop_requested(directory):
    """Did a `minibox stop` ask for this end? Only while that stop still runs: one killed
    half-way (SIGKILL, Ctrl-C) must not disarm the restart policy for good."""
    stopper = (directory.load() or {}).get("stop_requested") or {}
    return shared.process_alive(stopper.get("pid"), stopper.get("start"))


def release(container):
    """Tear down what the container held on the host; with --rm, its directory too."""
    if container.ports is not None:
        container.ports.close()
    keep = () if container.spec.remove else ("dir", "name")
    container.directory.release_all(keep=keep)


def run(spec, container_id=None, ready=None, *, waiting):
    """`minibox run`: create + start + wait (+ delete with --rm), one code path.

    A detached container's monitor (monitor.py) passes `ready`, called once the container
    runs; `waiting`: see wait()."""
    container = create(spec, container_id)
    try:
        start(container)
        if ready is not None:
            ready(container)
    except BaseException:
        release(container)
        raise
    return _supervise_then_release(container, None, waiting)


def resume(directory, exit_code, waiting, ports=None):
    """The rest of `run` in a fresh runtime, once a lean monitor (waiting.py) has reaped
    PID 1 with `exit_code`: record it, restart or tear down. The container as `create` left
    it is rebuilt from its directory: spec.json, state.json, and the cgroup (same id, same
    monitor process, so the same path); the published `ports` came along through exec."""
    spec = spec_module.ContainerSpec.load(directory.file("spec.json"))
    cgroup = cgroups.cgroup_of(spec, directory.id)
    container = Container(spec, directory, directory.load()["pid"], None, cgroup, ports=ports)
    return _supervise_then_release(container, exit_code, waiting)


def _supervise_then_release(container, exit_code, waiting):
    try:
        container, exit_code = supervise(container, exit_code, waiting)
    finally:
        release(container)
    return _report_usage(container, exit_code)


def _report_usage(container, exit_code):
    """--stats, and the OOM killer's verdict: Docker only shows it in `inspect` (OOMKilled),
    but a bare exit code 137 looks the same as `kill -9`."""
    short_id = container.id[:12]
    if container.spec.stats:
        sys.stderr.write(f"minibox: container {short_id}: {container.stats.describe()}\n")
    if container.oom_kills:
        memory = container.spec.limits.memory
        limit = "no memory limit" if memory is None else f"memory limit {cgroups.format_size(memory)}"
        if exit_code == 128 + signal.SIGKILL:
            raise MiniboxError(f"container {short_id} was killed by the OOM killer ({limit})",
                               exit_code)
        killed = "a process" if container.oom_kills == 1 else f"{container.oom_kills} processes"
        sys.stderr.write(f"minibox: warning: the OOM killer killed {killed} in container "
                         f"{short_id} ({limit})\n")
    return exit_code
