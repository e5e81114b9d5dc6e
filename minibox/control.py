"""Acting on a container that already exists, from any process: start, kill, stop, rm,
delete, gc, state, ps, logs, inspect.

The container's monitor owns it (monitor.py); these commands only read state.json, signal
the container's PID 1 with kill(2), open its exec.fifo, or wait for the monitor to record
what happened. Each one finds the container by name, id or unique id prefix (state.find).
"""
import _signal  # not signal.py: its enums' import (enum, functools) costs each engine call
import os
import time

from . import cjson, execfifo, hooks, shared, state
from .errors import MiniboxError, read_failure_report


def load(reference):
    """(directory, state, live status) of a container, or one clear line if there is none."""
    directory = state.find(reference)
    current = directory.load()
    if current is None:
        raise MiniboxError(f"container {reference} is being created or removed")
    return directory, current, state.live_status(current)


def containers(skipped, include_stopped=False):
    """(directory, state, live status) of every container, oldest first (`ps`); those
    whose state is corrupt go to `skipped` (state.readable_containers)."""
    found = []
    for directory, current in state.readable_containers(skipped):
        status = state.live_status(current)
        if include_stopped or status != "stopped":
            found.append((directory, current, status))
    return found


def oci_state(reference):
    """`minibox state`: the process says created, running or stopped; the freezer, paused."""
    directory, current, status = load(reference)
    return state.oci_state(directory.id, current,
                           paused=status == "running" and cgroup_of(directory).frozen())


def cgroup_of(directory):
    """The container's cgroup, from its ledger (cgroups.cgroup_at says why)."""
    from . import cgroups
    for entry in directory.entries():
        if entry["kind"] == "cgroup":
            return cgroups.cgroup_at(entry["paths"])
    raise MiniboxError(f"container {directory.id[:12]} has no cgroup")


def start(reference):
    """OCI `start`: let a created container exec its command; return once it has, or raise
    why it could not (its init reports on exec.fifo: a startContainer hook failed)."""
    directory, current, status = load(reference)
    if status != "created":
        raise MiniboxError(f"cannot start container {directory.id}: it is {status}, "
                           "not created")
    failure = read_failure_report(execfifo.release_init(directory, current["pid"],
                                                        confirm=True))
    if failure:
        directory.update(status="stopped", exit_code=failure.exit_code, finished=time.time(),
                         error=str(failure))
        raise failure
    # The fifo also closes when the init was killed before `start`: then it does not run.
    if shared.process_alive(current["pid"], current.get("pid_start")):
        execfifo.mark_running(directory, _saved_hooks(directory))


def parse_signal(text):
    """KILL, SIGKILL, kill or 9 -> signal.SIGKILL."""
    import signal
    text = str(text).strip()
    if text.isdigit():
        number = int(text)
        if number not in signal.valid_signals():
            raise MiniboxError(f"invalid signal {text!r}")
        return signal.Signals(number)
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise MiniboxError(f"invalid signal {text!r} (try TERM, KILL, HUP, USR1 or a number)"
                           ) from None


def is_signal(text):
    """Whether parse_signal takes `text`: runc's `kill ID SIG` against Docker's `kill C C`."""
    try:
        parse_signal(text)
    except MiniboxError:
        return False
    return True


def kill(reference, signum, every_process=False):
    """Send a signal to the container's PID 1 (created or running), or with every_process
    (runc's kill --all) to each process in its cgroup."""
    directory, current, status = load(reference)
    if status not in ("created", "running"):
        # "container not running": the words containerd's shim takes for "already gone"
        raise MiniboxError(f"cannot kill container {directory.id[:12]}: container not "
                           f"running (it is {status})")
    pids = cgroup_of(directory).pids() if every_process else [current["pid"]]
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # it ended meanwhile


def stop(reference, timeout=10):
    """SIGTERM, then SIGKILL after `timeout` seconds, as `docker stop` does. PID 1 of a PID
    namespace only gets the signals it has a handler for (pid_namespaces(7)): a plain
    `sleep` ignores SIGTERM and is killed after the timeout. No restart afterwards.

    Returns once the monitor has also released what the container held on the host (its
    veth, address and published ports too), so that the bridge or the port is free right away."""
    directory, first, status = load(reference)
    # A PID 1 that has just ended is stopped, but its monitor may be about to restart it
    # (between the two, it execs the runtime again: supervisor.py): no restart either.
    if status != "stopped" or state.monitor_alive(first):
        request_stop(directory)
        _signal_until_stopped(directory, first, timeout)
    wait_for_monitor(first)
    return directory.id


def _signal_until_stopped(directory, current, timeout):
    for signum, wait_for in ((_signal.SIGTERM, timeout), (_signal.SIGKILL, 10)):
        if shared.process_alive(current.get("pid"), current.get("pid_start")):
            os.kill(current["pid"], signum)
        deadline = time.monotonic() + wait_for
        while time.monotonic() < deadline:
            current = directory.load() or {}
            if state.live_status(current) == "stopped":
                return
            time.sleep(0.02)
    raise MiniboxError(f"container {directory.id[:12]} did not stop")


def request_stop(directory):
    """Tell the monitor that PID 1's coming end is wanted (`stop`, `rm -f`): no restart
    (container.supervise). Who asks, not just "yes": the monitor honours it while the asking
    process lives."""
    directory.update(stop_requested={"pid": os.getpid(),
                                     "start": shared.process_start_time(os.getpid())})


def wait_for_monitor(current, timeout=5.0):
    """Wait until the container's monitor is gone: then PID 1's end is recorded and what the
    container held on the host (ports, veth, lease, cgroup) is released."""
    deadline = time.monotonic() + timeout
    while state.monitor_alive(current) and time.monotonic() < deadline:
        time.sleep(0.01)


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
        _kill_and_wait(directory, current)
    directory.release_all()
    return directory.id


def _kill_and_wait(directory, current, timeout=5.0):
    """SIGKILL the container's PID 1 and wait for its monitor to record the end and tear
    down (no restart), so that nothing writes into the directory while it is removed."""
    if current:
        request_stop(directory)
    if shared.process_alive(current.get("pid"), current.get("pid_start")):
        os.kill(current["pid"], _signal.SIGKILL)
    wait_for_monitor(current, timeout)


def delete(reference, force=False):
    """OCI `delete`: remove a stopped container (created or running only with --force),
    then run its poststop hooks. With --force, one that is gone already is no error: runc
    1.1 and crun 1.8 exit 0 there, and Docker's shim calls `delete --force` after `delete`."""
    try:
        directory, current, status = load(reference)
    except state.NoSuchContainer:
        if force:
            return
        raise
    if status != "stopped" and not force:
        raise MiniboxError(f"cannot delete container {directory.id}: it is {status} "
                           "(stop it, or use --force)")
    configured_hooks = _saved_hooks(directory)
    remove(directory.id, force=True)
    if configured_hooks.get("poststop"):
        stopped = state.oci_state(directory.id, dict(current, status="stopped"))
        hooks.run(configured_hooks, ("poststop",), stopped, fatal=False)


def collect_garbage():
    """`minibox gc`: release what runs whose runtime died (e.g. SIGKILL) left behind.

    A container whose monitor is gone but that never reached `stopped`, or that asked for
    --rm, or whose state.json is corrupt, is torn down from its ledger; one reaped by an
    engine is left alone while its init lives. Stopped containers kept for inspection stay.
    Returns (the ids cleaned, a MiniboxError per container that could not be, the empty
    cgroups no container directory knows any more -- their ledger went with the state
    directory -- that were removed too)."""
    from . import cgroups
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
            elif current.get("caller_reaps") and state.live_status(current) != "stopped":
                continue  # an engine's container: no monitor by design, its init lives
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
    probe = cgroups.cgroup_for("gc", every_hierarchy=True)  # OCI containers' groups too
    return cleaned, failed, cgroups.remove_orphans(probe.groups(), known)


def _saved_spec(directory):
    from .spec import ContainerSpec  # with cgroups/: not for `start`, which needs only hooks
    try:
        return ContainerSpec.load(directory.file("spec.json"))
    except (FileNotFoundError, ValueError):  # ValueError: not JSON
        return None


def _saved_hooks(directory):
    """The saved spec's hooks ({} without one): all that start and delete need of it. Not
    ContainerSpec.load, whose security profile imports security.py (prctl, ctypes): each
    engine call is a process of its own."""
    try:
        with open(directory.file("spec.json"), "rb") as saved:
            return cjson.loads(saved.read()).get("hooks") or {}
    except (FileNotFoundError, ValueError):
        return {}


def logs(reference, out, follow=False, tail=None):
    """Copy the container's log to `out` (a binary stream); with follow, keep copying what
    it writes until its monitor is gone."""
    directory, current, _ = load(reference)
    try:
        log = open(directory.file("container.log"), "rb")
    except FileNotFoundError:
        return
    with log:
        if tail is not None:
            lines = log.read().splitlines(keepends=True)
            out.write(b"".join(lines[len(lines) - tail:] if tail else []))
        while True:
            # Liveness first, then read: what was written before the end is never missed.
            running = follow and state.monitor_alive(current)
            data = log.read()
            if data:
                out.write(data)
                out.flush()
            elif not running:
                return
            else:
                time.sleep(0.1)


def usage(skipped, interval=0.5, references=()):
    """`minibox stats`: per running container, CPU use over `interval` seconds (from the
    cgroup's CPU time: cpuacct.usage on v1, cpu.stat on v2), peak memory and limit, and the
    processes in it now. Returns (directory, name, cpu %, stats, memory limit, pids)."""
    from . import cgroups
    found = [load(r) for r in references] if references else containers(skipped)
    running = [(directory, current) for directory, current, status in found
               if status == "running"]
    groups = []
    for directory, current in running:
        spec = _saved_spec(directory)
        groups.append((directory, current, spec, cgroups.cgroup_of(spec, directory.id)))
    before = [group.stats().cpu_seconds for *_, group in groups]
    time.sleep(interval)
    rows = []
    for (directory, current, spec, group), cpu_before in zip(groups, before):
        try:
            now, pids = group.stats(), len(group.pids())
        except OSError:
            continue  # it stopped meanwhile
        cpu = None if None in (now.cpu_seconds, cpu_before) else \
            100 * (now.cpu_seconds - cpu_before) / interval
        rows.append((directory, current.get("name"), cpu, now, spec.limits.memory, pids))
    return rows


def inspect(reference):
    """What `minibox inspect` prints, in `docker inspect`'s shape and key names (times in
    RFC 3339), so workshop material written for Docker reads the same; plus what minibox
    shows the kernel's side of: Cgroup (/proc/<pid>/cgroup), Mounts (its mountinfo) and
    Addresses (its routing table)."""
    directory, current, status = load(reference)
    spec = _saved_spec(directory)
    pid = current.get("pid") if status in ("created", "running") else None
    network = (current.get("network") or {}) if pid is not None else {}
    command = current.get("command") or []
    return {"Id": directory.id, "Name": current.get("name"),
            "Created": shared.rfc3339(current.get("created")),
            "Path": command[0] if command else "", "Args": command[1:],
            "State": {"Status": status, "Running": status == "running", "Pid": pid or 0,
                      "ExitCode": current.get("exit_code"),
                      "StartedAt": shared.rfc3339(current.get("started")),
                      "FinishedAt": shared.rfc3339(current.get("finished")),
                      "Error": current.get("error") or ""},
            # Docker's Image is the id; Config.Image the name as given. --rootfs, a bundle:
            # the directory.
            "Image": current.get("image_id") or current.get("image"),
            "RestartCount": current.get("restarts", 0),
            "GraphDriver": {"Name": "overlay", "Data": {
                "UpperDir": directory.file("upper"), "WorkDir": directory.file("work"),
                "MergedDir": directory.file("rootfs")}},
            "Config": _docker_config(spec, command),
            "HostConfig": _docker_host_config(spec),
            "NetworkSettings": {"IPAddress": network.get("address") or "",
                                "Ports": _docker_ports(spec) if network else {}},
            "Cgroup": _cgroups(pid), "Mounts": _mounts(pid), "Addresses": _addresses(pid)}


def _docker_config(spec, command):
    if spec is None:  # state.json without its spec.json: a run killed while creating it
        return {"Cmd": command}
    return {"Hostname": spec.hostname or "", "User": spec.user or "",
            "Env": [f"{key}={value}" for key, value in spec.env.items()], "Cmd": spec.command,
            "Image": spec.image or "", "WorkingDir": spec.workdir, "Tty": spec.tty,
            "OpenStdin": spec.interactive}


def _docker_host_config(spec):
    if spec is None:
        return {}
    limits = spec.limits
    return {"NetworkMode": str(spec.network or "none"), "Privileged": spec.privileged,
            "ReadonlyRootfs": spec.read_only, "Memory": limits.memory or 0,
            "MemorySwap": limits.memory_swap or 0, "NanoCpus": int((limits.cpus or 0) * 1e9),
            "CpuShares": limits.cpu_shares or 0, "PidsLimit": limits.pids or 0,
            "RestartPolicy": {"Name": spec.restart.name,
                              "MaximumRetryCount": spec.restart.max_retries},
            "Binds": [f"{v.host_path}:{v.container_path}{':ro' if v.readonly else ''}"
                      for v in spec.volumes]}


def _docker_ports(spec):
    """-p as Docker lists it: {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}."""
    ports = {}
    for mapping in spec.publish if spec else ():
        ports.setdefault(f"{mapping.container_port}/{mapping.protocol}", []).append(
            {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port)})
    return ports


def _read_lines(path):
    try:
        with open(path) as lines:
            return lines.read().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def _cgroups(pid):
    """hierarchy -> path, from the host's view of /proc/<pid>/cgroup."""
    from .cgroups.mounts import memberships
    try:
        entries = memberships(f"/proc/{pid}/cgroup") if pid is not None else []
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        entries = []
    return {controllers or "unified": path for controllers, path in entries}


def _mounts(pid):
    """Mount points and types as the container sees them (proc(5): mountinfo)."""
    from .cgroups.mounts import mount_table
    try:
        table = [] if pid is None else mount_table(f"/proc/{pid}/mountinfo")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        table = []  # it ended meanwhile
    return [{"Destination": mount.mountpoint, "Type": mount.fstype, "Source": mount.source,
             "Options": mount.options} for mount in table]


def _addresses(pid):
    """The IPv4 addresses of the container's network namespace, without netlink: the kernel's
    routing trie in /proc/<pid>/net/fib_trie marks each local address `/32 host LOCAL`."""
    if pid is None:
        return []
    lines = _read_lines(f"/proc/{pid}/net/fib_trie")
    found = {lines[i - 1].split()[-1] for i, line in enumerate(lines)
             if line.strip() == "/32 host LOCAL"}
    return sorted(address for address in found if not address.startswith("127."))
