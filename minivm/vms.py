"""Detached VMs (`minivm run -d`): their directories, and ps/pause/resume/stop/rm.

A detached VM outlives the `minivm run` that started it, so everything about it lives in a
directory, /run/minivm/<name>/ (MINIVM_ROOT overrides /run/minivm, as MINIBOX_ROOT does for
containers):

    state.json    name, QEMU's pid and start time, the command, the run's nonce, when it
                  was created, its NIC's lease (--network bridge)
    disk<N>.qcow2 its disk overlays (--disk)
    console.log   everything the guest wrote to its serial console: boot log, the
                  command's output between the nonce's protocol lines (console.py)
    qemu.log      QEMU's own stderr
    qmp.sock      QMP, QEMU's control socket (qmp.py): status, pause, resume, quit
    control.sock  the guest's second serial port, ttyS1: /init waits for a line there and
                  then sends every process SIGTERM, so the command ends and reports its
                  status as usual; that is how `minivm stop` asks the guest to shut down

mkdir(2) of the directory is the name's claim: it fails when the name exists, atomically,
so two `run -d --name x` cannot both win. state.json follows at once, naming the minivm
that is starting the VM (its "starter"), before any tap, lease or overlay exists; QEMU's pid
goes in as soon as QEMU exists, and "started" once QMP answers: that is when the VM is
recorded. A VM without "started" whose starter is gone (a SIGKILLed `run -d`) is half-made:
`ps` shows it, `rm` and `gc` remove it and kill its QEMU.

Until the VM is recorded its QEMU must die with minivm, but PR_SET_PDEATHSIG (prctl(2))
cannot be taken back from a running QEMU. So a watchdog, a fork of minivm, starts QEMU and
waits on a pipe: a "k" (keep) from minivm and it exits, leaving QEMU to run on; end of file
(minivm died, however: the kernel closes a dead process's descriptors) and it kills QEMU.

The VM's QEMU is not minivm's child once `run -d` returns; it is found again by pid *and*
start time (/proc/<pid>/stat field 22), so a reused pid is never mistaken for it, and only
that process is ever signalled.
"""
import json
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

from minibox.shared import process_alive, process_start_time, replace_file
from minivm import MinivmError
from minivm.qemu import Option, option

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STOP_REQUEST = b"stop\n"
QMP_START_SECONDS = 10.0
# A directory younger than this may be between its mkdir(2) and its first state.json.
CLAIM_SECONDS = 10.0


def root() -> Path:
    return Path(os.environ.get("MINIVM_ROOT", "/run/minivm"))


def new_name() -> str:
    return f"vm-{os.urandom(3).hex()}"


class VMDir:
    """One detached VM's directory."""

    def __init__(self, name: str):
        if not NAME_PATTERN.fullmatch(name):
            raise MinivmError(f"bad VM name {name!r}: use letters, digits, _ . - (up to 64), "
                              "starting with a letter or digit")
        self.name = name
        self.path = root() / name

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, name: str, state: dict) -> "VMDir":
        """Claim the name, and record at once who is starting the VM and `state`."""
        directory = cls(name)
        directory.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            directory.path.mkdir(mode=0o700)
        except FileExistsError:
            directory.check_free()
        starter = os.getpid()
        directory.save({"name": name, "starter": starter,
                        "starter_start": process_start_time(starter), "created": time.time(),
                        **state})
        return directory

    def check_free(self):
        if self.path.exists():
            raise MinivmError(f"the name {self.name} is already in use by a VM: remove it "
                              f"with `minivm rm {self.name}` or choose another --name")

    @classmethod
    def find(cls, name: str) -> "VMDir":
        directory = cls(name)
        if not directory.path.is_dir():
            raise MinivmError(f"no VM named {name} (see `minivm ps`)")
        return directory

    def state(self) -> dict:
        """state.json; {} in the instant between the mkdir(2) and its first write."""
        try:
            return json.loads(self.file("state.json").read_text())
        except FileNotFoundError:
            return {}

    def save(self, state: dict):
        replace_file(self.file("state.json"), json.dumps(state, indent=1))

    def running(self) -> bool:
        """Is this VM's QEMU (that pid, that start time) still there, and not a zombie?"""
        state = self.state()
        return process_alive(state.get("pid"), state.get("pid_start"))

    def starting(self) -> bool:
        """Is a `minivm run -d` still starting this VM?"""
        state = self.state()
        if "started" in state:
            return False
        if "starter" not in state:
            return time.time() - self.path.stat().st_mtime < CLAIM_SECONDS
        return process_alive(state["starter"], state["starter_start"])

    def half_made(self) -> bool:
        """Was this VM's start cut short, its starter gone before the VM was recorded?"""
        return "started" not in self.state() and not self.starting()

    def status(self) -> str:
        """running/paused as QEMU's QMP says, or exited with the guest command's status;
        for a VM not yet recorded, starting, or how its start ended."""
        if self.starting():
            return "starting"
        if self.half_made():
            return "start failed"
        if self.running():
            from minivm import qmp
            try:
                return qmp.execute(self.file("qmp.sock"), "query-status")["status"]
            except MinivmError:
                return "running (QMP does not answer)"
        code = exit_status(self.file("console.log"), self.state()["nonce"])
        return "exited" if code is None else f"exited ({code})"


def control_options(directory: VMDir) -> list[Option]:
    """The QEMU options a detached VM gets on top of a foreground one's."""
    return [
        option("-qmp", f"unix:{directory.file('qmp.sock')},server=on,wait=off",
               why="QMP: minivm ps/pause/resume/stop/rm talk to QEMU here",
               doc="QEMU docs/interop/qmp-spec.rst"),
        option("-chardev", f"socket,id=control,path={directory.file('control.sock')},"
               "server=on,wait=off", "-device", "isa-serial,chardev=control,index=1",
               why="a second serial port (ttyS1, I/O port 0x2f8) on which the guest's /init "
               "waits for `minivm stop`", doc="QEMU docs: -chardev socket, isa-serial"),
    ]


def start(config, directory: VMDir, state: dict):
    """Start QEMU so that it outlives minivm, once it is recorded: its own session, output
    to files, started by the watchdog (see the module's docstring); record it and `state`
    in state.json. Returns once QMP answers, so the VM is really there when `run -d` says
    so; on any failure the watchdog kills QEMU. QEMU boots a copy of the kernel that is
    emptied once loaded (kernel_in_memory)."""
    from minibox import explain
    kernel = kernel_in_memory(config.kernel)
    explain.narrate(f"-kernel /proc/self/fd/{kernel}: a copy of {config.kernel} in memory, "
                    "emptied once QEMU loaded it, so QEMU keeps no kernel pages mapped",
                    "memfd_create(2), ftruncate(2)", kernel_in_memory)
    try:
        config.kernel = f"/proc/self/fd/{kernel}"  # QEMU opens its inherited copy
        config.pass_fds += (kernel,)
        _launch_and_record(config, directory, state, kernel)
    finally:
        os.close(kernel)


def _launch_and_record(config, directory: VMDir, state: dict, kernel: int):
    """_launch(), then wait for QMP: record the VM, empty the kernel's copy and tell the
    watchdog to let QEMU run on."""
    from minivm import qmp
    watchdog, keep, qemu = _launch(config, directory)
    try:
        deadline = time.monotonic() + QMP_START_SECONDS
        while directory.running():
            try:
                qmp.execute(directory.file("qmp.sock"), "query-status")
            except MinivmError:
                if time.monotonic() > deadline:
                    raise MinivmError(f"QEMU started but its QMP socket did not answer within "
                                      f"{QMP_START_SECONDS:g} s; QEMU was killed") from None
                time.sleep(0.05)
                continue
            directory.save({**directory.state(), **state, "started": time.time()})
            # QMP answers from QEMU's main loop, which runs after the machine's first reset
            # copied the kernel into guest RAM (hw/core/loader.c, rom_reset()).
            os.ftruncate(kernel, 0)
            os.write(keep, b"k")
            return
        said = directory.file("qemu.log").read_text(errors="replace").strip().splitlines()
        raise MinivmError(f"QEMU exited at once: {said[-1] if said else 'nothing on stderr'}")
    finally:
        os.close(keep)
        os.waitpid(watchdog, 0)


def kernel_in_memory(vmlinux: str) -> int:
    """A copy of the kernel in an anonymous file (memfd_create(2)), for QEMU's -kernel.

    QEMU keeps the ELF file it loaded mapped for the VM's whole life (hw/core/loader.c: a
    ROM keeps its file, to copy it into guest RAM again at each reset), so 13 MiB of the tiny
    kernel's pages (57 of Debian's) stay resident in QEMU beside the copy in guest RAM. A
    reset never comes: -no-reboot turns a reboot, QMP's system_reset too, into QEMU's exit.
    Once QEMU loaded the copy, ftruncate(2) to 0 frees its pages, which also takes them out
    of QEMU's mapping. The copy costs ~10 ms (tiny) to ~50 ms (Debian's) per start, so only a
    detached VM, which lives on, makes it; sendfile(2) copies inside the kernel."""
    copy = os.memfd_create("minivm-vmlinux")  # MFD_CLOEXEC: only QEMU gets it (pass_fds)
    try:
        with open(vmlinux, "rb") as source:
            size, done = os.fstat(source.fileno()).st_size, 0
            while done < size:
                done += os.sendfile(copy, source.fileno(), done, size - done)
    except OSError as error:
        os.close(copy)
        raise MinivmError(f"cannot copy the kernel {vmlinux}: {error.strerror}") from None
    return copy


def _launch(config, directory: VMDir) -> tuple[int, int, int]:
    """Fork the watchdog, which starts QEMU and records its pid. Returns the watchdog's pid,
    the pipe end on which it waits for "k", and QEMU's pid."""
    keep_read, keep = os.pipe()
    report, report_write = os.pipe()
    watchdog = os.fork()
    if watchdog == 0:
        try:
            os.close(keep)
            os.close(report)
            _watch(config, directory, keep_read, report_write)
        finally:
            os._exit(0)
    os.close(keep_read)
    os.close(report_write)
    with open(report, "rb") as reply:
        said = reply.read().decode()
    if not said.isdigit():
        os.close(keep)
        os.waitpid(watchdog, 0)
        raise MinivmError(said or "cannot start QEMU: the watchdog died")
    return watchdog, keep, int(said)


def _watch(config, directory: VMDir, keep_read: int, report: int):
    """The watchdog (a child of minivm): start QEMU (qemu.spawn, its stderr to qemu.log),
    record its pid, say it on `report`, then wait for minivm's "k". Signals are left to
    minivm (a terminal's Ctrl-C reaches both): the watchdog acts on what the pipe says. A
    Python handler, not SIG_IGN, because execve(2) resets handlers to the default but keeps
    a disposition of SIG_IGN."""
    from minivm import qemu
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: None)
    with open(directory.file("qemu.log"), "wb") as qemu_log:
        try:
            pid = qemu.spawn(config, log=qemu_log.fileno()).pid
        except MinivmError as error:
            os.write(report, str(error).encode())
            return
    directory.save({**directory.state(), "pid": pid, "pid_start": process_start_time(pid)})
    os.write(report, str(pid).encode())
    os.close(report)
    if os.read(keep_read, 1) != b"k":  # end of file: minivm is gone or gave up
        os.kill(pid, signal.SIGKILL)  # our own child, not yet reaped: the PID is still its
        os.waitpid(pid, 0)


def exit_status(console_log: Path, nonce: str) -> int | None:
    """The guest command's status from the protocol lines in a console log, if it ended."""
    from minivm.console import ConsoleParser
    try:
        data = console_log.read_bytes()
    except OSError:
        return None
    codes = [event.value for event in ConsoleParser(nonce).feed(data).events
             if event.name == "exit"]
    return int(codes[-1]) if codes else None


def command_output(console_log: Path, nonce: str) -> bytes:
    """What the guest command printed, without the boot log (for `minivm logs`)."""
    from minivm.console import ConsoleParser
    return ConsoleParser(nonce).feed(console_log.read_bytes()).output


def all_vms() -> list[VMDir]:
    """Every VM directory, half-made ones too."""
    if not root().is_dir():
        return []
    return [VMDir(path.name) for path in sorted(root().iterdir())
            if path.is_dir() and NAME_PATTERN.fullmatch(path.name)]


def summary(directory: VMDir) -> dict:
    """One VM's line of `minivm ps`, by the names `ps --format` takes."""
    state = directory.state()
    return {"Name": directory.name, "Status": directory.status(),
            "Pid": state.get("pid") if directory.running() else None,
            "Address": state.get("network", {}).get("address"),
            "Command": " ".join(state.get("command", []))}


def inspect(directory: VMDir) -> dict:
    """`minivm inspect`: the VM's record in `docker inspect`'s shape (Docker's key names and
    status words, times in RFC 3339), so `-f '{{.State.Pid}}'` works as for a container.
    A VM has a name but no hash, so its name is its Id."""
    from minibox.shared import rfc3339
    state, status = directory.state(), directory.status()
    # Docker's words: created (not started yet), running, paused, exited, dead (start failed)
    word = {"starting": "created", "start failed": "dead"}.get(status, status.split()[0])
    exit_code = (exit_status(directory.file("console.log"), state["nonce"])
                 if word == "exited" else None)
    running = word in ("running", "paused")
    command = state.get("command", [])
    return {"Id": directory.name, "Name": directory.name, "Created": rfc3339(state.get("created")),
            "Path": command[0] if command else "", "Args": command[1:],
            "State": {"Status": word, "Running": running, "Paused": word == "paused",
                      "Pid": state.get("pid", 0) if running else 0,
                      "ExitCode": exit_code or 0, "StartedAt": rfc3339(state.get("started"))},
            "Config": {"Cmd": command},
            "NetworkSettings": {"IPAddress": state.get("network", {}).get("address", "")},
            "LogPath": str(directory.file("console.log"))}


def pause(directory: VMDir, paused: bool):
    from minivm import qmp
    if not directory.running():
        raise MinivmError(f"{directory.name} is not running")
    qmp.execute(directory.file("qmp.sock"), "stop" if paused else "cont")


def stop(directory: VMDir, grace_seconds: float) -> str:
    """Ask the guest to end its command; after `grace_seconds`, QMP `quit`. Returns how."""
    from minivm import qmp
    if not directory.running():
        return "not running"
    if qmp.execute(directory.file("qmp.sock"), "query-status")["status"] == "paused":
        qmp.execute(directory.file("qmp.sock"), "cont")  # a paused guest cannot hear it
    try:
        with socket.socket(socket.AF_UNIX) as control:
            control.connect(str(directory.file("control.sock")))
            control.sendall(STOP_REQUEST)
    except OSError:
        pass  # no channel: only quit is left
    if _wait_gone(directory, grace_seconds):
        return "the guest shut down"
    try:
        qmp.execute(directory.file("qmp.sock"), "quit")
    except MinivmError:
        pass
    if not _wait_gone(directory, 5.0):
        _kill(directory)
    return f"the guest did not finish within {grace_seconds:g} s: QEMU was told to quit"


def remove(directory: VMDir, force: bool):
    """Remove a VM that has ended or whose start was cut short (`force`: kill it first):
    its address, its directory. Its tap device went with its QEMU (nic.py)."""
    if directory.running() or directory.starting():
        if not force:
            raise MinivmError(f"{directory.name} is {directory.status()}: `minivm stop "
                              f"{directory.name}` first, or `minivm rm -f`")
        _kill(directory)
    from minivm import nic
    nic.release(lease_owner(directory.name))
    shutil.rmtree(directory.path)


def lease_owner(name: str) -> str:
    """Who holds a detached VM's address in the pool (--network bridge)."""
    return f"minivm-{name}"


def collect_half_made() -> list[str]:
    """For `minivm gc`: remove the VMs whose start was cut short. Returns their names."""
    removed = []
    for directory in all_vms():
        if directory.half_made():
            remove(directory, force=True)
            removed.append(directory.name)
    return removed


def _wait_gone(directory: VMDir, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while directory.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(directory: VMDir):
    """SIGKILL this VM's QEMU: by pid, checked against the recorded start time first."""
    if directory.running():
        os.kill(directory.state()["pid"], signal.SIGKILL)
        _wait_gone(directory, 5.0)
