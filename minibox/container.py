"""The container lifecycle: create -> start -> wait -> delete, and `run` = all four.

Who does what. The runtime process stays in the host's namespaces for the whole life of the
container: it is the container's *monitor* (like conmon or runc's shim), so it can set up the
host side, wait for the container and tear everything down. It forks the container's init,
which enters its new namespaces, builds its root filesystem, and finally execve(2)s the
user's command as PID 1. The two talk over a socketpair (SOCK_SEQPACKET keeps messages apart):

    init                                   runtime
    unshare(mnt, uts, ipc, net)  ----->  "ready"
                                           host side: cgroup, uid maps, veth, proxy
    unshare(cgroup)              <-----  "go"
    overlay, /proc, /dev, /sys, pivot_root, hostname, lo up
    [pty master fd]              ----->  (with -t)
    [unshare(user) with --userns ----->  "userns"; maps written <----- "mapped"]
    blocks on exec.fifo          ----->  "created"          <- `minibox create` ends here
                                 <-----  start: reads exec.fifo
    seccomp, capabilities, user, no_new_privs (security.confine)
    execve(CMD)
    (socket closes on exec: FD_CLOEXEC) -> runtime knows the exec happened
"""
import os
import select
import signal
import socket
import sys
import time

from . import (cgroups, explain, images, namespaces, network, portproxy, rootfs, security, state,
               syscalls)
from .errors import CANNOT_RUN, NOT_FOUND, RUNTIME_ERROR, MiniboxError

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
    rootfs.check_overlay_support()
    if spec.tty:
        global terminal
        from . import terminal  # now: after pivot_root the init can't import from our tree
    # 1. Resolve the image; make the container's directory. Every resource is recorded in
    #    the ledger before it is made, so teardown and `minibox gc` know what to undo.
    layers = [spec.rootfs] if spec.rootfs else images.image_layers(spec.image)
    directory = state.ContainerDir.create(container_id or state.new_container_id(), spec.name)
    bound_ports, shared_netns = [], None
    try:
        spec.hostname = spec.hostname or spec.name or directory.id[:12]
        directory.save(_initial_state(spec, directory))
        for scratch in ("upper", "work", "rootfs"):
            os.mkdir(directory.file(scratch), 0o755)
        os.mkfifo(directory.file("exec.fifo"), 0o600)
        if spec.userns:  # the init opens it as container root, i.e. host uid 100000
            os.chown(directory.file("exec.fifo"), namespaces.USERNS_HOST_BASE,
                     namespaces.USERNS_HOST_BASE)
        # 2. The cgroup, limits written, before the init exists (cgroups/v1.py, v2.py).
        cgroup = cgroups.cgroup_for(directory.id, spec.cgroup_parent)
        directory.record("cgroup", paths=cgroup.paths())
        _create_cgroup(cgroup, spec.limits, "\n              ".join(cgroup.plan(spec.limits)))
        #    Published host ports are bound now, so a busy port fails the run before the
        #    container exists; --network container:ID opens that container's netns now.
        bound_ports = portproxy.bind_ports(spec.publish)
        shared_netns, shared_address = network.open_shared_netns(spec.network)
        # 3. Fork the init into a new PID namespace; it unshares the others itself.
        channel, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        own_pid_namespace = namespaces.new_pid_namespace_for_children()
        pid = os.fork()
        if pid == 0:
            channel.close()
            _init(spec, directory, ":".join(layers), init_end, shared_netns)  # never returns
        namespaces.restore_pid_namespace(own_pid_namespace)
        init_end.close()
        directory.record("process", pid=pid, start_time=state.process_start_time(pid))
        # 4. Host-side setup while the init waits in its new namespaces.
        _expect(channel, b"ready", pid)
        _join_cgroup(cgroup, pid)
        network.set_up(spec, directory, pid, bound_ports, shared_address)
        channel.send(b"go")
        if spec.userns:
            _expect(channel, b"userns", pid)
            namespaces.write_id_maps(pid)
            channel.send(b"mapped")
        console = None
        if spec.tty:
            console = _receive_console(channel, pid)
        _expect(channel, b"created", pid)
        directory.update(status="created", pid=pid, pid_start=state.process_start_time(pid))
        return Container(spec, directory, pid, channel, cgroup, console)
    except BaseException:
        portproxy.close_ports(bound_ports)
        directory.release_all()
        raise
    finally:
        if shared_netns is not None:
            os.close(shared_netns)


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
        cgroups.remove_cgroup_dirs(entry["paths"])
    except cgroups.CgroupError as error:
        raise MiniboxError(str(error)) from None


state.RELEASE["cgroup"] = _release_cgroup


def _initial_state(spec, directory):
    return {"id": directory.id, "name": spec.name, "image": spec.image or spec.rootfs,
            "command": spec.command, "hostname": spec.hostname, "created": time.time(),
            "status": "creating", "pid": None, "exit_code": None, "remove": spec.remove,
            "monitor_pid": os.getpid(),
            "monitor_start": state.process_start_time(os.getpid())}


def _init(spec, directory, lowerdir, channel, shared_netns):
    """Step 5, PID 1's own story: from fork(2) to execve(2). Never returns."""
    exit_code = RUNTIME_ERROR
    try:
        os.setsid()  # a session of our own: signals reach us only as the runtime forwards them
        # If the runtime dies, so does the container (and gc finds the ledger).
        syscalls.set_parent_death_signal(signal.SIGKILL)
        if not spec.interactive and not spec.tty:
            os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        namespaces.enter_namespaces(network.init_namespaces(spec.network))
        if shared_netns is not None:
            network.join_netns(shared_netns)
        channel.send(b"ready")
        if channel.recv(16) != b"go":  # the runtime gave up
            return
        namespaces.enter_cgroup_namespace()
        merged = directory.file("rootfs")
        rootfs.make_mounts_private()
        # No device node made inside may be opened, unless --privileged (rootfs.mount_dev).
        nodev = not spec.privileged
        rootfs.mount_overlay(lowerdir, directory.file("upper"), directory.file("work"), merged,
                             nodev)
        for volume in spec.volumes:
            rootfs.bind_mount(volume.host_path, merged, volume.container_path, volume.readonly,
                              nodev)
        network.mount_etc_files(directory, merged, nodev)
        rootfs.mount_proc(merged)
        rootfs.mount_dev(merged, nodev)
        rootfs.mount_sys(merged)
        if not spec.privileged:
            rootfs.mask_paths(merged)
        if spec.read_only:
            rootfs.make_root_read_only(merged, nodev)
        # Opened now, written after pivot_root through /proc/self/fd: the host path is gone then.
        exec_fifo = os.open(directory.file("exec.fifo"), os.O_PATH | os.O_CLOEXEC)
        if spec.use_chroot:
            rootfs.chroot_to(merged)
        else:
            rootfs.pivot_to(merged)
        namespaces.set_hostname(spec.hostname)
        if spec.network.new_netns:
            network.bring_up_loopback()
        if spec.tty:
            terminal.open_console(channel)
        env = spec.environment(directory.id)
        os.makedirs(spec.workdir, exist_ok=True)  # docker run -w creates it too
        os.chdir(spec.workdir)
        program = _find_program(spec.command[0], env["PATH"])
        if spec.userns:
            namespaces.enter_user_namespace()
            channel.send(b"userns")
            if channel.recv(16) != b"mapped":
                return
            namespaces.become_namespace_root()
        _close_inherited_fds()
        channel.send(b"created")
        _wait_for_start(exec_fifo)
        # Last, so that the steps above still run as root with every capability, and the
        # fifo (owned by the host's root) can be opened whatever --user says.
        security.confine(spec.security or security.SecurityProfile(), spec.user)
        syscalls.set_parent_death_signal(signal.SIGKILL)  # changing uid (--user) cleared it
        exit_code = CANNOT_RUN
        os.execve(program, spec.command, env)
    except MiniboxError as error:
        exit_code = error.exit_code
        _report(channel, exit_code, str(error))
    except OSError as error:
        _report(channel, exit_code, str(error))
    except BaseException as error:  # anything else must still end this process, not return
        _report(channel, exit_code, f"{type(error).__name__}: {error}")
    finally:
        os._exit(exit_code)


def _report(channel, exit_code, message):
    try:
        channel.send(f"error {exit_code} {message}".encode())
    except OSError:
        pass


def _find_program(name, path):
    """Look CMD up in the container's PATH before `created`, as runc does, so that a typo
    fails at create time with 127 instead of after start."""
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in path.split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                raise MiniboxError(f"{name}: permission denied", CANNOT_RUN)
            return candidate
    raise MiniboxError(f"{name}: command not found in the container", NOT_FOUND)


@explain.step("Close every file descriptor the container should not inherit",
              syscall="fcntl(fd, F_SETFD, FD_CLOEXEC) for each fd > 2", man="fcntl(2)")
def _close_inherited_fds():
    # CVE-2024-21626: runc leaked an fd of the host's /sys/fs/cgroup into the container, and
    # `cwd=/proc/self/fd/7` walked out of the root. Anything our caller passed us goes too.
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                os.set_inheritable(int(name), False)
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
    try:
        message, fds, _, _ = socket.recv_fds(channel, 4096, 1)
    except OSError:
        message, fds = b"", []
    if message.startswith(b"error "):
        _reap(pid)
        _, code, text = message.decode(errors="replace").split(" ", 2)
        raise MiniboxError(text, int(code))
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
def start(container):
    """Release the init blocked in _wait_for_start (what `minibox start` does too)."""
    directory = container.directory
    fifo = os.open(directory.file("exec.fifo"), os.O_RDONLY | os.O_NONBLOCK)
    init = os.pidfd_open(container.pid)
    try:
        # Poll both: an init killed while blocked would otherwise leave us waiting forever.
        readable, _, _ = select.select([fifo, init], [], [])
        if fifo not in readable or not os.read(fifo, 1):
            _reap(container.pid)
            raise MiniboxError(f"container {container.id[:12]} exited before it was started")
    finally:
        os.close(fifo)
        os.close(init)
    os.unlink(directory.file("exec.fifo"))
    if container.channel is not None:
        # The init's end closes on a successful execve (FD_CLOEXEC), or reports why not.
        message = container.channel.recv(4096)
        if message.startswith(b"error "):
            _reap(container.pid)
            _, code, text = message.decode(errors="replace").split(" ", 2)
            directory.update(status="stopped", exit_code=int(code), finished=time.time())
            raise MiniboxError(text, int(code))
    directory.update(status="running", started=time.time())


def wait(container):
    """Wait for PID 1 to exit, passing signals and terminal traffic on; return its exit code
    the way a shell reports it: the code, or 128+N when killed by signal N."""
    pid = container.pid

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        if container.console is not None:
            terminal.relay(container.console, container.spec.interactive)
        _, status = os.waitpid(pid, 0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code < 0:
        exit_code = 128 - exit_code
    # Read while the cgroup still exists: `minibox stats` and --stats show these later.
    container.stats, container.oom_kills = container.cgroup.stats(), container.cgroup.oom_kills()
    container.directory.update(status="stopped", exit_code=exit_code, finished=time.time(),
                               stats=vars(container.stats), oom_kills=container.oom_kills)
    return exit_code


def release(container):
    """Tear down what the container held on the host; with --rm, its directory too."""
    keep = () if container.spec.remove else ("dir", "name")
    container.directory.release_all(keep=keep)


def run(spec):
    """`minibox run`: create + start + wait (+ delete with --rm), one code path."""
    container = create(spec)
    try:
        start(container)
        exit_code = wait(container)
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
    current = directory.load() or {}
    if current.get("status") != "stopped" and _monitor_alive(current):
        if not force:
            raise MiniboxError(f"container {directory.id[:12]} is {current.get('status')}: "
                               "stop it first (or use rm -f)")
        os.kill(current["pid"], signal.SIGKILL)
    directory.release_all()
    return directory.id


def _monitor_alive(current):
    return state.process_alive(current.get("monitor_pid"), current.get("monitor_start"))


def collect_garbage():
    """`minibox gc`: release what runs whose runtime died (e.g. SIGKILL) left behind.

    A container whose monitor is gone but that never reached `stopped`, or that asked for
    --rm, is torn down from its ledger. Stopped containers kept for inspection stay."""
    cleaned = []
    for directory in state.all_containers():
        current = directory.load()
        if current is None:
            if time.time() - os.stat(directory.path).st_mtime < 60:
                continue  # a run that is creating its directory right now
        elif _monitor_alive(current) or (current["status"] == "stopped"
                                         and not current.get("remove")):
            continue
        if current is None or current.get("remove"):
            directory.release_all()
        else:
            directory.release_all(keep=("dir", "name"))
            directory.update(status="stopped", exit_code=255, finished=time.time())
        cleaned.append(directory.id)
    return cleaned
