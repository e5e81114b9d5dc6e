"""`minibox exec`: start one more process inside a running container.

A container is only a set of namespaces and cgroups that its processes share, so a new
process joins it by joining them, the way nsenter(1) and runc exec do:

0. Close every file descriptor our caller gave us beyond stdio (as PID 1 does, and for
   the same CVE): the container must never hold a way back to the host's files.
1. Open PID 1's /proc/<pid>/ns/* files and its root directory /proc/<pid>/root *first*:
   once we are in the container's mount namespace, the host's /proc is out of reach.
2. Join PID 1's cgroups (write our PID to each cgroup.procs), so the new process is
   limited and counted with the others -- before anything can fork.
3. setns(2) into each namespace that differs from ours (without root, the container's user
   namespace first: it owns the others, rootless.py). setns(CLONE_NEWNS) leaves us at the
   root of the namespace's first mount, not at the container's pivoted root, so fchdir(2)
   to the root fd and chroot(".") follow.
4. fork(2): setns(CLONE_NEWPID) only decides the PID namespace of *children* (like
   unshare, pid_namespaces(7)); the child gets a PID in the container and shows up in its
   `ps`. It takes PID 1's own steps (init.py: limits, working directory, the program,
   fds closed, then capabilities, seccomp, user) and execs the command; we wait, pass
   signals on and exit with its code.
"""
import os

from . import cgroups, init, namespaces, rootless, waiting
# Imported now, before chroot("."): the child's controlling terminal and waiting.wait_for's
# relay need it, and after chroot an import would look in the container's tree.
from . import terminal
from .errors import CANNOT_RUN, MiniboxError
from .explain import step
from .shared import replace_file

# Joined in this order: the mount namespace late, since after it paths mean the container's;
# cgroup once we are in the container's cgroups; user (--userns) last of all, because it
# owns none of the others (namespaces.enter_user_namespace): joined first, it would leave
# us without the capabilities the other setns(2) calls need. Rootless, the other way round.
NAMESPACE_ORDER = ("ipc", "uts", "net", "pid", "mnt", "cgroup", "user")


def exec_in(pid, spec, command, tty=False, interactive=False, pid_file=None,
            console_socket=None, detach=False):
    """Run `command` in the running container whose PID 1 is `pid`, with the environment,
    working directory and user of `spec`; return its exit code (128+N on signal N).

    As runc's exec for an engine: its host PID goes to pid_file, its terminal to
    console_socket (terminal.send_console), and with detach we return 0 at once, leaving
    the process to our caller's child subreaper (engine.py)."""
    init.close_inherited_fds()
    # The pid file's directory, opened while its name still means the host's.
    pid_directory = pid_file and os.open(os.path.dirname(pid_file), os.O_PATH | os.O_CLOEXEC)
    console_socket = console_socket and terminal.connect_console_socket(console_socket)
    if spec.rlimits:
        import resource  # noqa: F401 -- for init.set_process_limits, after chroot
    namespace_fds = _open_namespaces(pid)
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    join_cgroups(pid)
    user_namespace = namespace_fds.pop("user", None)
    if rootless.ENABLED:
        # A rootless container's user namespace owns all its others (rootless.py): joining
        # it first gives us, its creator's uid, every capability the setns(2) calls below
        # need -- over those namespaces only.
        _join("user", user_namespace)
        user_namespace = None
    for kind, fd in namespace_fds.items():
        _join(kind, fd)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    if user_namespace is not None:
        _join("user", user_namespace)
    console = None
    if tty:
        console, terminal_fd = os.openpty()  # from the container's devpts: we are inside now
    child = os.fork()
    if child == 0:
        # Ways back to the host's files (see init.close_inherited_fds), gone before exec.
        if pid_directory:
            os.close(pid_directory)
        if console_socket:
            console_socket.close()
        _exec_child(spec, command, terminal_fd if tty else None, interactive or tty,
                    user_namespace is not None, die_with_parent=not detach)
    if tty:
        os.close(terminal_fd)
    if console_socket:
        terminal.send_console(console_socket, console)
        console = None
    if pid_file:
        replace_file(os.path.basename(pid_file), str(child), dir_fd=pid_directory)
        os.close(pid_directory)
    return 0 if detach else waiting.wait_for(child, console, interactive)


def _open_namespaces(pid):
    opened = {}
    for kind in NAMESPACE_ORDER:
        ours = "pid_for_children" if kind == "pid" else kind
        try:
            if os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{ours}").st_ino:
                continue  # shared with the host (or not asked for in config.json)
            opened[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MiniboxError("the container stopped") from None
    return opened


@step("Join the container's {kind} namespace", syscall="setns(fd of /proc/<pid>/ns/{kind}, 0)",
      man="setns(2), nsenter(1)")
def _join(kind, fd):
    namespaces.join_fd(fd)


@step("Join the container's cgroups", syscall='write("<cgroup dir>/cgroup.procs", "<our pid>")',
      man="cgroups(7)")
def join_cgroups(pid):
    ours = set(cgroups.cgroup_directories("self"))
    # A move costs the kernel an RCU grace period (cgroups/grace.py) even when it moves us
    # nowhere: only write where the container's cgroup is not already ours.
    for _, _, directory in set(cgroups.cgroup_directories(pid)) - ours:
        try:
            with open(os.path.join(directory, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        except OSError as error:
            raise MiniboxError(f"cannot join cgroup {directory}: {error.strerror}") from None


def _exec_child(spec, command, terminal_fd, keep_stdin, in_user_namespace, die_with_parent):
    """In the forked child, now a process of the container: never returns."""
    exit_code = CANNOT_RUN
    try:
        init.new_session(die_with_parent)
        init.set_process_limits(spec)
        if terminal_fd is not None:
            terminal.make_controlling_terminal(terminal_fd)
        elif not keep_stdin:
            init.null_stdin()
        program, env = init.prepare_exec(spec, command)
        if in_user_namespace:
            namespaces.become_namespace_root()
        init.exec_confined(spec, program, command, env, die_with_parent)
    except MiniboxError as error:
        exit_code = error.exit_code
        os.write(2, f"minibox: {error}\n".encode())
    except OSError as error:
        os.write(2, f"minibox: {command[0]}: {error.strerror}\n".encode())
    finally:
        os._exit(exit_code)
