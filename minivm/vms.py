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
so two `run -d --name x` cannot both win. The VM's QEMU is not minivm's child once `run -d`
returns; it is found again by pid *and* start time (/proc/<pid>/stat field 22), so a reused
pid is never mistaken for it, and only that process is ever signalled.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from minibox.state import process_alive, process_start_time, replace_file
from minivm import MinivmError
from minivm.qemu import Option, option

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STOP_REQUEST = b"stop\n"
QMP_START_SECONDS = 10.0


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
    def create(cls, name: str) -> "VMDir":
        directory = cls(name)
        directory.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            directory.path.mkdir(mode=0o700)
        except FileExistsError:
            directory.check_free()
        return directory

    def check_free(self):
        if self.path.exists():
            raise MinivmError(f"the name {self.name} is already in use by a VM: remove it "
                              f"with `minivm rm {self.name}` or choose another --name")

    @classmethod
    def find(cls, name: str) -> "VMDir":
        directory = cls(name)
        if not directory.file("state.json").exists():
            raise MinivmError(f"no VM named {name} (see `minivm ps`)")
        return directory

    def state(self) -> dict:
        return json.loads(self.file("state.json").read_text())

    def save(self, state: dict):
        replace_file(self.file("state.json"), json.dumps(state, indent=1))

    def running(self) -> bool:
        """Is this VM's QEMU (that pid, that start time) still there, and not a zombie?"""
        state = self.state()
        return process_alive(state["pid"], state["pid_start"])

    def status(self) -> str:
        """running/paused as QEMU's QMP says, or exited with the guest command's status."""
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
    """Start QEMU so that it outlives minivm: its own session, no PR_SET_PDEATHSIG, output to
    files; record it and `state` in state.json. Returns once QMP answers, so the VM is
    really there when `run -d` says so."""
    from minivm.qemu import argv
    with open(directory.file("qemu.log"), "wb") as qemu_log:
        try:
            qemu = subprocess.Popen(argv(config), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=qemu_log,
                                    start_new_session=True, pass_fds=config.pass_fds)
        except OSError as error:
            raise MinivmError(f"cannot start QEMU: {error.strerror}") from None
    from minivm import qmp
    deadline = time.monotonic() + QMP_START_SECONDS
    while qemu.poll() is None:
        try:
            qmp.execute(directory.file("qmp.sock"), "query-status")
            directory.save({"name": directory.name, "pid": qemu.pid,
                            "pid_start": process_start_time(qemu.pid), "created": time.time(),
                            **state})
            return
        except MinivmError:
            if time.monotonic() > deadline:
                qemu.kill()
                qemu.wait()
                raise MinivmError(f"QEMU started but its QMP socket did not answer within "
                                  f"{QMP_START_SECONDS:g} s; QEMU was killed") from None
            time.sleep(0.05)
    said = directory.file("qemu.log").read_text(errors="replace").strip().splitlines()
    raise MinivmError(f"QEMU exited at once (status {qemu.returncode}): "
                      f"{said[-1] if said else 'nothing on stderr'}")


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
    if not root().is_dir():
        return []
    return [VMDir(path.name) for path in sorted(root().iterdir())
            if (path / "state.json").exists()]


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
    """Remove a VM that has ended (`force`: kill it first): its address, its directory.
    Its tap device went with its QEMU (nic.py)."""
    if directory.running():
        if not force:
            raise MinivmError(f"{directory.name} is running: `minivm stop {directory.name}` "
                              "first, or `minivm rm -f`")
        _kill(directory)
    owner = directory.state().get("network", {}).get("owner")
    if owner:
        from minivm import nic
        nic.release(owner)
    shutil.rmtree(directory.path)


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
