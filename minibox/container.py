"""The container lifecycle: create -> start -> wait -> delete, and `run` = all four.

Who does what. The runtime process stays in the host's namespaces for the whole life of the
container: it is the container's *monitor* (like conmon or runc's shim), so it can set up the
host side, wait for the container and tear everything down. It forks the container's init,
which enters its new namespaces, builds its root filesystem, and finally execve(2)s the
user's command as PID 1. The two talk over a socketpair (SOCK_SEQPACKET keeps messages apart):

    init                                   runtime
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
                                           port proxy (-p), once per container
                                 <-----  start: reads exec.fifo
    [startContainer hooks], seccomp, capabilities, user, no_new_privs (security.confine)
    execve(CMD)
    (socket closes on exec: FD_CLOEXEC) -> runtime knows the exec happened

Then the monitor waits for PID 1 (supervise), records its exit code in state.json, restarts
it as the restart policy says -- with a fresh init, since a PID namespace dies with its
PID 1, and the fresh network namespace gets the container's address again -- and tears
down what the ledger lists. For `run -d` and OCI `create` the monitor is a detached process
of its own (monitor.py); for a plain `run` it is the `minibox` process.
"""
import _socket  # socket(2) without socket.py's enums, which cost ~3 ms of every start
import os
import select
import signal
import sys
import time

from . import (cgroups, explain, hooks, images, namespaces, network, portproxy, rootfs, rootless,
               security, state, syscalls)
from . import spec as spec_module
from .errors import (CANNOT_RUN, NOT_FOUND, RUNTIME_ERROR, MiniboxError, bug_line,
                     failure_report, read_failure_report)

# Signals the runtime passes on to the container instead of dying of them.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


class Container:
    """A created container, as seen by its monitor."""

    def __init__(self, spec, directory, pid, channel, cgroup, console=None):
        self.spec = spec
        self.directory = directory
        self.id = directory.id
        self.pid = pid              # the init's PID on the host
        self.channel = channel      # our end of the socketpair
        self.cgroup = cgroup        # cgroups.Cgroup: limits, stats, OOM kills
        self.console = console      # the pty master, with -t


def create(spec, container_id=None):
    """The runtime's story, steps 1-4: from a spec to an init blocked just before execve."""
    namespaces.check_kernel_support()
    if rootless.ENABLED:
        rootless.check_spec(spec)
    if spec.root_path is None:
        rootfs.check_overlay_support()
        _lowerdir(spec)  # an unknown image fails here, before anything is made
    if spec.tty:
        global terminal
        from . import terminal  # now: after pivot_root the init can't import from our tree
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
        directory.save(_initial_state(spec, directory))
        # 2. The cgroup, limits written, before the init exists (cgroups/v1.py, v2.py).
        cgroup = cgroups.cgroup_for(directory.id, spec.cgroup_parent)
        if cgroup.paths():  # none without root (cgroups.NoCgroup)
            directory.record("cgroup", paths=cgroup.paths(), groups=cgroup.groups())
            _create_cgroup(cgroup, spec.limits, "\n              ".join(cgroup.plan(spec.limits)))
        state.replace_file(directory.file("spec.json"), spec.dumps())
        for scratch in ("upper", "work", "rootfs"):
            os.mkdir(directory.file(scratch), 0o755)
        #    Published host ports are bound now, so a busy port fails the run before the
        #    container exists.
        bound_ports = portproxy.bind_ports(spec.publish)
        container = spawn(spec, directory, cgroup)
        network.publish(directory, bound_ports)
        return container
    except BaseException:
        portproxy.close_ports(bound_ports)
        directory.release_all()
        raise


def _lowerdir(spec):
    return ":".join([spec.rootfs] if spec.rootfs else images.image_layers(spec.image))


def spawn(spec, directory, cgroup):
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
        _init(spec, directory, init_end, shared_netns)  # never returns
    if new_pid_namespace:
        namespaces.restore_pid_namespace(own_pid_namespace)
    if shared_netns is not None:
        os.close(shared_netns)
    init_end.close()
    start_time = state.process_start_time(pid)
    directory.record("process", pid=pid, start_time=start_time)
    # 4. Host-side setup while the init waits in its new namespaces. The network first: it
    #    does not care about cgroups, and meanwhile the grace period that the cgroup move
    #    waits for passes (cgroups/grace.py).
    _expect(channel, b"ready", pid)
    networking = network.set_up(spec, directory, pid, shared_address)
    if cgroup.paths():
        _join_cgroup(cgroup, pid)
    # The OCI state JSON, for hooks to read on stdin: only when there are hooks.
    creating = _hook_state(directory, "creating", pid) if spec.hooks else ""
    hooks.run(spec, ("prestart", "createRuntime"), creating)
    channel.send(b"go " + creating.encode())  # the init's own hooks read it too
    if spec.userns:
        _expect(channel, b"userns", pid)
        _map_user_namespace(spec, directory, pid)
        channel.send(b"mapped")
    console = None
    if spec.tty:
        console = _receive_console(channel, pid)
    _expect(channel, b"created", pid)
    directory.update(status="created", pid=pid, pid_start=start_time, network=networking)
    return Container(spec, directory, pid, channel, cgroup, console)


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
    cgroup.add(pid)


def _release_cgroup(entry):
    try:
        cgroups.remove_cgroup_dirs(entry["paths"], groups=entry.get("groups", ()))
    except cgroups.CgroupError as error:
        raise MiniboxError(str(error)) from None


state.RELEASE["cgroup"] = _release_cgroup


def _initial_state(spec, directory):
    return {"id": directory.id, "name": spec.name,
            "image": spec.image or spec.rootfs or spec.root_path, "command": spec.command,
            "hostname": spec.hostname, "created": time.time(), "status": "creating",
            "pid": None, "exit_code": None, "remove": spec.remove, "restarts": 0,
            "bundle": spec.bundle or directory.path, "annotations": spec.annotations,
            "monitor_pid": os.getpid(),
            "monitor_start": state.process_start_time(os.getpid())}


def _hook_state(directory, status, pid):
    """The OCI state JSON a hook reads on its stdin."""
    current = directory.load() or {}
    return oci_state(directory.id, dict(current, status=status, pid=pid))


def oci_state(container_id, current):
    """The OCI runtime spec's state: what `minibox state` prints and hooks read."""
    import json
    status = state.live_status(current)
    status = status if status in ("created", "running", "stopped") else "creating"
    return json.dumps({"ociVersion": spec_module.OCI_VERSION, "id": container_id,
                       "status": status, "pid": current.get("pid") if status != "stopped" else 0,
                       "bundle": current.get("bundle"),
                       "annotations": current.get("annotations") or {}}, indent=2)


def _init(spec, directory, channel, shared_netns=None):
    """Step 5, PID 1's own story: from fork(2) to execve(2). Never returns."""
    exit_code = RUNTIME_ERROR
    try:
        os.setsid()  # a session of our own: signals reach us only as the runtime forwards them
        reset_signals()
        # If the runtime dies, so does the container (and gc finds the ledger).
        syscalls.set_parent_death_signal(signal.SIGKILL)
        _connect_stdio(spec, directory)
        namespaces.enter_namespaces(spec.namespaces)
        if shared_netns is not None:
            network.join_netns(shared_netns)
        channel.send(b"ready")
        go = channel.recv(65536)
        if not go.startswith(b"go "):  # the runtime gave up
            return
        import json
        creating_state = go[3:].decode()  # the OCI state JSON; empty without hooks
        created_state = creating_state and json.dumps(
            dict(json.loads(creating_state), status="created"), indent=2)
        if "cgroup" in spec.namespaces:
            namespaces.enter_cgroup_namespace(spec.namespaces["cgroup"])
        _set_process_limits(spec)
        merged = _build_root(spec, directory)
        hooks.run(spec, ("createContainer",), creating_state)
        if spec.hooks.get("startContainer"):
            import subprocess  # noqa: F401 -- for hooks.run after pivot_root, when our tree is gone
        # Opened now, written after pivot_root through /proc/self/fd: the host path is gone then.
        exec_fifo = os.open(directory.file("exec.fifo"), os.O_PATH | os.O_CLOEXEC)
        joined_user_namespace = spec.namespaces.get("user") and os.open(
            spec.namespaces["user"], os.O_RDONLY | os.O_CLOEXEC)
        if spec.use_chroot:
            rootfs.chroot_to(merged)
        else:
            rootfs.pivot_to(merged)
        if spec.rootfs_propagation:
            rootfs.set_root_propagation(spec.rootfs_propagation)
        if _new_namespace(spec, "uts") and spec.hostname:
            namespaces.set_hostname(spec.hostname)
        if _new_namespace(spec, "network"):
            network.bring_up_loopback()
        if spec.tty:
            terminal.open_console(channel)
        os.chdir(spec.workdir)
        env = spec.env if "HOME" in spec.env else dict(spec.env, HOME=home_directory(spec.user))
        program = find_program(spec.command[0], env.get("PATH", spec_module.DEFAULT_PATH))
        if spec.userns:
            namespaces.enter_user_namespace(joined_user_namespace)
            channel.send(b"userns")
            if channel.recv(16) != b"mapped":
                return
            namespaces.become_namespace_root()
        close_inherited_fds()
        channel.send(b"created")
        _wait_for_start(exec_fifo)
        hooks.run(spec, ("startContainer",), created_state)
        confine(spec)
        exit_code = CANNOT_RUN
        os.execve(program, spec.command, env)
    except MiniboxError as error:
        exit_code = error.exit_code
        _report(channel, exit_code, error)
    except OSError as error:
        _report(channel, exit_code, error)
    except BaseException as error:  # anything else must still end this process, not return
        _report(channel, exit_code, bug_line(error))
    finally:
        os._exit(exit_code)


def reset_signals():
    # An ignored signal stays ignored across execve(2) (signal(7)), and Python ignores
    # SIGPIPE: `yes | head` in the container would then never end by SIGPIPE. A caller
    # started with `nohup` or `&` passes SIG_IGN for SIGHUP/SIGINT down the same way.
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # real-time signals the C library keeps for itself


def _new_namespace(spec, kind):
    return kind in spec.namespaces and spec.namespaces[kind] is None


def _connect_stdio(spec, directory):
    """stdin: /dev/null unless -i/-t; stdout and stderr of a detached container: its log."""
    if not spec.interactive and not spec.tty:
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    if spec.detach:
        log = os.open(directory.file("container.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o640)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)


def _build_root(spec, directory):
    """The container's root filesystem, still seen from the host's tree: returns its path."""
    merged = directory.file("rootfs")
    rootfs.make_mounts_private()
    # `run`: no device node made inside may be opened, unless --privileged (see
    # rootfs.make_default_devices). An OCI bundle says so in its mount options instead.
    nodev = spec.root_path is None and not spec.privileged
    if spec.root_path is None:
        rootfs.mount_overlay(_lowerdir(spec), directory.file("upper"), directory.file("work"),
                             merged, nodev)
    else:
        rootfs.bind_root(spec.root_path, merged)
    for entry in spec.mounts + [volume.mount(nodev) for volume in spec.volumes]:
        rootfs.mount_entry(merged, entry.destination, entry.type, entry.source, entry.options,
                           own_cgroup_namespace="cgroup" in spec.namespaces,
                           own_network_namespace=_new_namespace(spec, "network"))
    for device in spec.devices:
        rootfs.create_device(rootfs.path_in_root(merged, device["path"]), device["type"],
                             device.get("major", 0), device.get("minor", 0),
                             device.get("fileMode", 0o666), device.get("uid", 0),
                             device.get("gid", 0))
    if spec.sysctl:
        rootfs.set_sysctls(merged, spec.sysctl)
    rootfs.mask_paths(merged, spec.masked_paths, spec.readonly_paths)
    # docker run -w and runc both create a missing working directory (before `readonly`).
    os.makedirs(rootfs.path_in_root(merged, spec.workdir), exist_ok=True)
    if spec.read_only:
        rootfs.make_root_read_only(merged, nodev)
    return merged


@explain.step("Set the process's resource limits and OOM score",
              syscall="setrlimit(RLIMIT_*, {{soft, hard}}); write /proc/self/oom_score_adj",
              man="setrlimit(2), proc(5)")
def _set_process_limits(spec):
    if spec.rlimits:  # an OCI bundle's: `run` sets none, and skips the import (~1 ms)
        import resource
        for name, soft, hard in spec.rlimits:
            resource.setrlimit(getattr(resource, name), (soft, hard))
    if spec.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write(str(spec.oom_score_adj))


def confine(spec):
    """The last steps before execve(2), for PID 1 and for `exec`: umask, then what
    security.confine gives up (seccomp, capabilities, user, no_new_privs). Last, so that
    everything before still runs as root with every capability."""
    if spec.umask is not None:
        os.umask(spec.umask)
    security.confine(spec.security or security.SecurityProfile(), spec.user,
                     spec.additional_gids)
    syscalls.set_parent_death_signal(signal.SIGKILL)  # changing uid (--user) cleared it


def _report(channel, exit_code, message):
    try:
        channel.send(failure_report(exit_code, message))
    except OSError:
        pass


def home_directory(user):
    """HOME for a spec that sets none, from the container's /etc/passwd (as runc does)."""
    entry = security.find_entry("/etc/passwd", (user or "0").partition(":")[0])
    return entry[5] if entry and len(entry) > 5 else "/"


def find_program(name, path):
    """Look CMD up in the container's PATH before `created`, as runc does, so that a typo
    fails at create time with 127 instead of after start."""
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in path.split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                raise MiniboxError(f"{name}: permission denied", CANNOT_RUN)
            return candidate
    raise MiniboxError(f"{name}: command not found in the container", NOT_FOUND)


@explain.step("Close every file descriptor inherited from whoever started minibox",
              syscall="close(fd) for each fd > 2 without FD_CLOEXEC", man="close(2), fcntl(2)")
def close_inherited_fds():
    """PID 1 before `created`, and `exec` before it joins anything: the container gets
    stdin, stdout and stderr of our caller, nothing else. Python opens every file of its
    own with O_CLOEXEC (PEP 446), so an fd without it came from the caller."""
    # CVE-2024-21626: runc leaked an fd of the host's /sys/fs/cgroup into the container, and
    # `cwd=/proc/self/fd/7` walked out of the root. An fd of a host directory that a caller
    # of `exec` holds open does the same through /proc/self/fd/N/.. -- and any process of
    # the container can open /proc/<pid>/fd/N of the exec'd one while it runs. So these are
    # closed outright, not only marked close-on-exec: gone before the container can see us.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)
        except OSError:
            pass  # the fd of the listdir itself, already closed


@explain.step("Block until `start`: open exec.fifo for writing (waits for a reader)",
              syscall='open("/proc/self/fd/N", O_WRONLY); write(fd, "0", 1)', man="fifo(7)")
def _wait_for_start(exec_fifo):
    fifo = os.open(f"/proc/self/fd/{exec_fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fifo, b"0")
    os.close(fifo)
    os.close(exec_fifo)


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


@explain.step("Start: open exec.fifo for reading, which lets the init go on to execve(2)",
              syscall='open("exec.fifo", O_RDONLY); read(fd, buf, 1)', man="fifo(7)")
def release_init(directory, pid):
    """Release the init blocked in _wait_for_start (`run`, and `minibox start` for OCI)."""
    gone = MiniboxError(f"container {directory.id[:12]} exited before it was started")
    # The pidfd first: once the fifo is open the init may exec, exit and be reaped before
    # our next line runs, and a reaped process has no pidfd to give any more.
    try:
        init = os.pidfd_open(pid)
    except ProcessLookupError:
        raise gone from None
    try:
        fifo = os.open(directory.file("exec.fifo"), os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        os.close(init)
        raise gone from None  # someone else started it
    try:
        # Poll both: an init killed while blocked would otherwise leave us waiting forever.
        readable, _, _ = select.select([fifo, init], [], [])
        if fifo not in readable or not os.read(fifo, 1):
            raise gone
    finally:
        os.close(fifo)
        os.close(init)
    os.unlink(directory.file("exec.fifo"))


def start(container):
    release_init(container.directory, container.pid)
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
        running = directory.update(only_from=("created",), status="running",
                                   started=time.time())
        if running and container.spec.hooks.get("poststart"):
            hooks.run(container.spec, ("poststart",), oci_state(directory.id, running),
                      fatal=False)


def wait(container):
    """Wait for PID 1 to exit and record how it ended; return its exit code."""
    exit_code = wait_for(container.pid, container.console, container.spec.interactive)
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


def wait_for(pid, console=None, interactive=False):
    """Wait for a child, passing signals and terminal traffic on; return its exit code the
    way a shell reports it: the code, or 128+N when killed by signal N."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        if console is not None:
            from . import terminal
            terminal.relay(console, interactive)
        _, status = os.waitpid(pid, 0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    exit_code = os.waitstatus_to_exitcode(status)
    return 128 - exit_code if exit_code < 0 else exit_code


def supervise(container):
    """Wait for PID 1 and restart it while the restart policy says so (and nobody ran
    `minibox stop`); return the last incarnation and its exit code."""
    directory, spec = container.directory, container.spec
    restarts = 0
    while True:
        exit_code = wait(container)
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
        container = spawn(spec, directory, container.cgroup)
        start(container)


def request_stop(directory):
    """Tell the monitor that PID 1's coming end is wanted (`stop`, `rm -f`): no restart.
    Who asks, not just "yes": the monitor honours it while the asking process lives."""
    directory.update(stop_requested={"pid": os.getpid(),
                                     "start": state.process_start_time(os.getpid())})


def _stop_requested(directory):
    """Did a `minibox stop` ask for this end? Only while that stop still runs: one killed
    half-way (SIGKILL, Ctrl-C) must not disarm the restart policy for good."""
    stopper = (directory.load() or {}).get("stop_requested") or {}
    return state.process_alive(stopper.get("pid"), stopper.get("start"))


def release(container):
    """Tear down what the container held on the host; with --rm, its directory too."""
    keep = () if container.spec.remove else ("dir", "name")
    container.directory.release_all(keep=keep)


def run(spec, container_id=None, ready=None, wait_for_start=False):
    """`minibox run`: create + start + wait (+ delete with --rm), one code path.

    A detached container's monitor (monitor.py) passes `ready`, called once the container is
    up: running, or with wait_for_start only created (OCI `create`: then `minibox start`,
    another process, opens the fifo)."""
    container = create(spec, container_id)
    try:
        if wait_for_start:
            ready(container)
        else:
            release_init(container.directory, container.pid)
        confirm_exec(container)
        if ready is not None and not wait_for_start:
            ready(container)
        container, exit_code = supervise(container)
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


def remove(reference, force=False):
    """`minibox rm`: delete a stopped container's directory (and its name)."""
    directory = state.find(reference)
    try:
        current = directory.load() or {}
    except state.CorruptState:
        if not force:
            raise
        current = {}  # what it held is in the ledger, which release_all undoes
    if state.live_status(current) != "stopped":
        if not force:
            raise MiniboxError(f"container {directory.id[:12]} is {current.get('status')}: "
                               "stop it first (or use rm -f)")
        kill_and_wait(directory, current)
    directory.release_all()
    return directory.id


def kill_and_wait(directory, current, timeout=5.0):
    """SIGKILL the container's PID 1 and wait for its monitor to record the end and tear
    down (no restart), so that nothing writes into the directory while it is removed."""
    if current:
        request_stop(directory)
    if state.process_alive(current.get("pid"), current.get("pid_start")):
        os.kill(current["pid"], signal.SIGKILL)
    wait_for_monitor(current, timeout)


def wait_for_monitor(current, timeout=5.0):
    """Wait until the container's monitor is gone: then PID 1's end is recorded and what the
    container held on the host (proxy, veth, lease, cgroup) is released."""
    deadline = time.monotonic() + timeout
    while state.monitor_alive(current) and time.monotonic() < deadline:
        time.sleep(0.01)


def collect_garbage():
    """`minibox gc`: release what runs whose runtime died (e.g. SIGKILL) left behind.

    A container whose monitor is gone but that never reached `stopped`, or that asked for
    --rm, is torn down from its ledger. Stopped containers kept for inspection stay.
    Returns those ids, and the empty cgroups no container directory knows any more (their
    ledger was deleted with the state directory) that were removed too."""
    cleaned, failed = [], []
    for directory in state.all_containers():
        try:
            current = directory.load()
        except state.CorruptState:
            current = {"remove": True}  # nothing to keep for inspection: its ledger says what to undo
        try:
            if current is None:
                if directory.being_made():
                    continue  # a run that is creating it right now
            elif state.monitor_alive(current) or (current.get("status") == "stopped"
                                                  and not current.get("remove")):
                continue
            if current is None or current.get("remove"):
                directory.release_all()
            else:
                directory.release_all(keep=("dir", "name"))
                directory.update(status="stopped", exit_code=255, finished=time.time())
        except FileNotFoundError:
            continue  # it ended and removed itself meanwhile (--rm)
        except MiniboxError as error:
            failed.append(error)
            continue
        cleaned.append(directory.id)
    known = {directory.id for directory in state.all_containers()}
    probe = cgroups.cgroup_for("gc")
    return cleaned, failed, cgroups.remove_orphans(probe.groups(), known)
