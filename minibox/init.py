"""What runs inside the container before execve(2): PID 1's story, and the steps `exec` shares.

runc keeps its runtime (container_linux.go) apart from its init (standard_init_linux.go for
PID 1, setns_init_linux.go for exec); container.py is the runtime's half, this file the
init's. Everything here runs in a process that the runtime forked (container.spawn: PID 1)
or that `minibox exec` forked once inside the container's namespaces (enter.py). Both take
the same steps, in the same order, so that an exec'd process can never hold more than PID 1:

    PID 1 (pid1)                               an exec'd process (enter.py)
    new_session: setsid, signals, pdeathsig    new_session
    enter namespaces; "ready" / "go"           (its parent: setns, chroot into PID 1's root)
    set_process_limits                         set_process_limits
    build the root, pivot_root, hostname, lo
    [a pty as controlling terminal]            [a pty as controlling terminal]
    prepare_exec: workdir, HOME, find the      prepare_exec
      program, close inherited fds
    [user namespace: become its root]          [user namespace: become its root]
    "created"; block on exec.fifo; hooks
    exec_confined: umask, seccomp,             exec_confined
      capabilities, user, no_new_privs; execve

Importing: after pivot_root (or exec's chroot) the process sees the container's files only,
so nothing can be imported from our tree or the standard library any more: every module the
steps after it need is imported before it (module level here, or the lazy imports marked
"before pivot_root").
"""
import os
import signal

from . import explain, hooks, namespaces, network, rootfs, security, syscalls
from .errors import CANNOT_RUN, NOT_FOUND, RUNTIME_ERROR, MiniboxError, bug_line, failure_report
from .spec import DEFAULT_PATH


def pid1(spec, directory, channel, shared_netns=None, caller_reaps=False, preserve_fds=0):
    """PID 1's own story: from fork(2) to execve(2). Never returns.

    caller_reaps: OCI `create` under an engine, which exits at "created" and leaves this
    process to the engine's child subreaper (container.py): then nothing may tie it to
    `create` any more, and nobody reads `channel` after "created". preserve_fds: runc's
    --preserve-fds N, fds 3..3+N-1 of the caller's that the command gets."""
    exit_code = RUNTIME_ERROR
    try:
        new_session()
        _connect_stdio(spec, directory)
        # Opened while the host's paths are in reach: exec.fifo is written after the root
        # changed (through /proc/self/fd), the user namespace is joined after the mounts.
        exec_fifo = os.open(directory.file("exec.fifo"), os.O_PATH | os.O_CLOEXEC)
        joined_user_namespace = spec.namespaces.get("user") and os.open(
            spec.namespaces["user"], os.O_RDONLY | os.O_CLOEXEC)
        joined_root = spec.namespaces.get("mount") is not None
        if joined_root:
            _import_before_leaving_host(spec)  # setns(2) below changes our root at once
        namespaces.enter_namespaces(spec.namespaces)
        if shared_netns is not None:
            network.join_netns(shared_netns)
        channel.send(b"ready")
        go = channel.recv(65536)
        if not go.startswith(b"go "):  # the runtime gave up
            return
        # The OCI state JSON (empty without hooks), "created" for both of our stages, as
        # prestart's (hooks.py says why)
        created_state = go[3:].decode()
        if "cgroup" in spec.namespaces:
            namespaces.enter_cgroup_namespace(spec.namespaces["cgroup"])
        set_process_limits(spec)
        if joined_root:
            # A mount namespace joined by path (OCI linux.namespaces) is shared with whoever
            # made it: its root is the container's root as it stands (setns(2) put us
            # there). runc builds the bundle's root inside it and pivot_root(2)s, which
            # moves the root of every process already in it (runc 1.1.5 here: the first
            # container then no longer sees its own files); crun 1.8 fails at chdir. The
            # runtime spec asks only that the process be placed in the namespace, so
            # minibox builds nothing there and changes no one else's root (oci.py refuses
            # the fields that would need a mount).
            hooks.run(spec.hooks, ("createContainer",), created_state)
        else:
            merged = _build_root(spec, directory)
            hooks.run(spec.hooks, ("createContainer",), created_state)
            _import_before_leaving_host(spec)
            if spec.use_chroot:
                rootfs.chroot_to(merged)
            else:
                rootfs.pivot_to(merged)
            if spec.rootfs_propagation:
                rootfs.set_root_propagation(spec.rootfs_propagation, [
                    (entry.destination, entry.options) for entry in spec.mounts])
        if "uts" in spec.namespaces and spec.hostname:  # new, or joined by path (OCI)
            namespaces.set_hostname(spec.hostname)
        if _new_namespace(spec, "network"):
            network.bring_up_loopback()
        if spec.tty:
            from . import terminal  # imported already: _import_before_leaving_host
            terminal.open_console(channel)
        program, env = prepare_exec(spec, spec.command, preserve_fds)
        if spec.userns:
            namespaces.enter_user_namespace(joined_user_namespace)
            channel.send(b"userns")
            if channel.recv(16) != b"mapped":
                return
            namespaces.become_namespace_root()
        if caller_reaps:
            # `create` exits next: the parent death signal would kill us with it.
            syscalls.set_parent_death_signal(0)
        channel.send(b"created")
        if caller_reaps:
            channel.close()
            channel = None  # `create` has left: nobody reads it any more
        fifo = _wait_for_start(exec_fifo)
        if caller_reaps:
            channel = fifo  # `start` reads on until execve closes it, or our failure report
        else:
            os.close(fifo)
        hooks.run(spec.hooks, ("startContainer",), created_state)
        exec_confined(spec, program, spec.command, env, die_with_parent=not caller_reaps)
    except MiniboxError as error:
        exit_code = error.exit_code
        _report(channel, exit_code, error)
    except OSError as error:
        _report(channel, exit_code, error)
    except BaseException as error:  # anything else must still end this process, not return
        _report(channel, exit_code, bug_line(error))
    finally:
        os._exit(exit_code)


def new_session(die_with_parent=True):
    """The first steps of PID 1 and of an exec'd process, right after fork(2): a session of
    its own (setsid(2): signals reach it only as its parent forwards them), default signal
    dispositions, no signal blocked, and death with its parent (if the runtime dies, so
    does the container, and gc finds the ledger) -- until a process handed to an engine's
    subreaper clears it (pid1's caller_reaps). A process of `exec --detach` never takes it:
    its parent returns at once, and would kill it if it died in between."""
    os.setsid()
    # An ignored signal stays ignored across execve(2) (signal(7)), and Python ignores
    # SIGPIPE: `yes | head` in the container would then never end by SIGPIPE. A caller
    # started with `nohup` or `&` passes SIG_IGN for SIGHUP/SIGINT down the same way.
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # real-time signals the C library keeps for itself
    # The signal mask survives execve(2) too (sigprocmask(2)), and a monitor that came back
    # as the runtime holds the forwarded signals blocked (waiting.exec_blocked).
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if die_with_parent:
        syscalls.set_parent_death_signal(signal.SIGKILL)


def _import_before_leaving_host(spec):
    """What the steps after the root changes import lazily, imported while our tree is in
    reach: hooks run by the init (subprocess) and the pty (terminal). rlimits' `resource`
    too, since a joined mount namespace leaves the host before set_process_limits."""
    if spec.hooks.get("startContainer") or spec.hooks.get("createContainer"):
        import subprocess  # noqa: F401 -- for hooks.run
    if spec.tty:
        from . import terminal  # noqa: F401 -- for open_console
    if spec.rlimits:
        import resource  # noqa: F401 -- for set_process_limits


def _new_namespace(spec, kind):
    return kind in spec.namespaces and spec.namespaces[kind] is None


def _connect_stdio(spec, directory):
    """stdin: /dev/null unless -i/-t; stdout and stderr of a detached container: its log."""
    if not spec.interactive and not spec.tty:
        null_stdin()
    if spec.detach:
        log = os.open(directory.file("container.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o640)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)


def null_stdin():
    """stdin from /dev/null: a command that reads it sees end of file at once, as in Docker
    without -i."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def lowerdir(spec):
    """overlayfs' lowerdir option: the image's layers, top first (or --rootfs)."""
    return ":".join([spec.rootfs] if spec.rootfs else spec.layers)


def _build_root(spec, directory):
    """The container's root filesystem, still seen from the host's tree: returns its path."""
    merged = directory.file("rootfs")
    rootfs.make_mounts_private()
    # `run`: no device node made inside may be opened, unless --privileged (see
    # rootfs.make_default_devices). An OCI bundle says so in its mount options instead.
    nodev = spec.root_path is None and not spec.privileged
    if spec.root_path is None:
        rootfs.mount_overlay(lowerdir(spec), directory.file("upper"), directory.file("work"),
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
def set_process_limits(spec):
    """PID 1 before its root is built; an exec'd process inside the container, whose
    caller imported `resource` before chroot (enter.py)."""
    if spec.rlimits:  # an OCI bundle's: `run` sets none, and skips the import
        import resource
        for name, soft, hard in spec.rlimits:
            try:
                resource.setrlimit(getattr(resource, name), (soft, hard))
            except (ValueError, OSError):
                # EPERM (Python's ValueError "not allowed to raise maximum limit"): above our
                # own hard limit without CAP_SYS_RESOURCE, or RLIMIT_NOFILE above fs.nr_open.
                _, host_hard = resource.getrlimit(getattr(resource, name))
                raise MiniboxError(f"process.rlimits: {name} hard {hard} (soft {soft}) is above "
                                   f"the host's hard limit {host_hard}") from None
    if spec.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write(str(spec.oom_score_adj))


def prepare_exec(spec, command, preserve_fds=0):
    """In the container's root, still with every privilege: go to the working directory,
    find the program, close what the caller passed on (but `preserve_fds` fds from 3).
    Returns (program, environment)."""
    os.chdir(spec.workdir)
    env = spec.env if "HOME" in spec.env else dict(spec.env, HOME=home_directory(spec.user))
    program = find_program(command[0], env.get("PATH", DEFAULT_PATH))
    close_inherited_fds(preserve_fds)
    return program, env


def home_directory(user):
    """HOME for a spec that sets none, from the container's /etc/passwd (as runc does)."""
    entry = security.find_entry("/etc/passwd", (user or "0").partition(":")[0])
    return entry[5] if entry and len(entry) > 5 else "/"


def find_program(name, path):
    """Look CMD up in the container's PATH before `created`, as runc does, so that a typo
    fails at create time with 127 instead of after start. The words are runc's: Docker and
    podman turn "executable file not found" and "no such file or directory" in a runtime's
    error into exit 127, and "permission denied" into 126."""
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in path.split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                raise MiniboxError(f'exec: "{name}": permission denied', CANNOT_RUN)
            return candidate
    if "/" in name:
        raise MiniboxError(f'exec: "{name}": stat {name}: no such file or directory', NOT_FOUND)
    raise MiniboxError(f'exec: "{name}": executable file not found in $PATH', NOT_FOUND)


@explain.step("Close every file descriptor inherited from whoever started minibox",
              syscall="close(fd) for each fd > 2 without FD_CLOEXEC", man="close(2), fcntl(2)")
def close_inherited_fds(preserve_fds=0):
    """PID 1 before `created`, and `exec` before it joins anything and again in the exec'd
    process: the container gets stdin, stdout and stderr of our caller, nothing else (but
    fds 3..2+preserve_fds, which an engine asked for with --preserve-fds, as runc's).
    Python opens every file of its own with O_CLOEXEC (PEP 446), so an fd without it came
    from the caller."""
    # CVE-2024-21626: runc leaked an fd of the host's /sys/fs/cgroup into the container, and
    # `cwd=/proc/self/fd/7` walked out of the root. An fd of a host directory that a caller
    # of `exec` holds open does the same through /proc/self/fd/N/.. -- and any process of
    # the container can open /proc/<pid>/fd/N of the exec'd one while it runs. So these are
    # closed outright, not only marked close-on-exec: gone before the container can see us.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 + preserve_fds and os.get_inheritable(fd):
                os.close(fd)
        except OSError:
            pass  # the fd of the listdir itself, already closed


@explain.step("Block until `start`: open exec.fifo for writing (waits for a reader)",
              syscall='open("/proc/self/fd/N", O_WRONLY); write(fd, "0", 1)', man="fifo(7)")
def _wait_for_start(exec_fifo):
    """Returns the fifo open for writing: close-on-exec, so its reader sees EOF at execve."""
    fifo = os.open(f"/proc/self/fd/{exec_fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fifo, b"0")
    os.close(exec_fifo)
    return fifo


def exec_confined(spec, program, command, env, die_with_parent=True):
    """The last steps of PID 1 and of `exec`: umask, then what security.confine gives up
    (seccomp, capabilities, user, no_new_privs), then execve(2). Last, so that everything
    before still runs as root with every capability. Never returns."""
    if spec.umask is not None:
        os.umask(spec.umask)
    security.confine(spec.security or security.SecurityProfile(), spec.user,
                     spec.additional_gids)
    if die_with_parent:
        syscalls.set_parent_death_signal(signal.SIGKILL)  # changing uid (--user) cleared it
    try:
        os.execve(program, command, env)
    except OSError as error:  # ENOEXEC, or a file that changed since find_program
        raise MiniboxError(f"{command[0]}: {error.strerror}", CANNOT_RUN) from None


def _report(channel, exit_code, message):
    """Why the init failed, to whoever waits for our word: the runtime on the channel or,
    once `create` handed us to an engine and left (caller_reaps), `minibox start` on
    exec.fifo (an fd); nobody while we wait between the two (None)."""
    report = failure_report(exit_code, message)
    try:
        if isinstance(channel, int):
            # A `start` that is gone makes the write fail with EPIPE -- not kill us, by
            # SIGPIPE's default action, before we exit with our own code.
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            os.write(channel, report)
        elif channel is not None:
            channel.send(report)
    except OSError:
        pass
