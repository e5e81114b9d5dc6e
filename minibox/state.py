"""Container state on disk: /run/minibox/<id>/ with state.json and the ledger.

Layout of one container's directory (MINIBOX_ROOT overrides /run/minibox, as runc's --root;
without root the default is the user's own, rootless.state_root):

    state.json   what `ps`/`state` report: status, pid, exit code (rewritten atomically,
                 under flock(2) on the directory: the monitor, `start`, `stop` all write it)
    spec.json    the ContainerSpec it was created from (config.json edits after create: no effect)
    container.log  stdout and stderr of a detached (-d) container
    hosts, hostname  the container's /etc/hosts and /etc/hostname, bind-mounted in
    ledger       one JSON line per resource, appended *before* the resource is made
    upper/ work/ the overlay's private writable layer and its scratch dir
    rootfs/      where the overlay is mounted (inside the container's mount namespace only)
    exec.fifo    blocks the container before execve until `start` (runc's trick)

The ledger is what makes cleanup crash-proof: teardown and `minibox gc` both walk it in
reverse and release each entry, so a runtime killed at any point leaves a list of exactly
what to undo. Names are symlinks in names/ -> id: symlink(2) is atomic, so two runs racing
for one --name cannot both win.
"""
import contextlib
import fcntl
import json
import os

from . import rootless
from .errors import MiniboxError

ROOT = os.environ.get("MINIBOX_ROOT") or (rootless.state_root() if rootless.ENABLED
                                          else "/run/minibox")
NAMES = os.path.join(ROOT, "names")


def set_root(root):
    """`minibox --root DIR`, as runc's: keep this invocation's containers under DIR."""
    global ROOT, NAMES
    ROOT, NAMES = root, os.path.join(root, "names")


def new_container_id():
    """64 hex digits, like Docker; the first 12 are the short id people type."""
    return os.urandom(32).hex()


def process_start_time(pid):
    """Field 22 of /proc/<pid>/stat (proc(5)): with the pid, it names one process for all
    time. None when there is no such process, or only its zombie: it has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else int(fields[19])  # fields 3 (state) and 22


def process_alive(pid, start_time):
    """True if the process we recorded still runs (and its pid was not reused)."""
    return pid is not None and process_start_time(pid) == start_time


def monitor_alive(state):
    """Does the process that looks after the container (state.json's monitor) still run?"""
    return process_alive(state.get("monitor_pid"), state.get("monitor_start"))


def replace_file(path, data):
    """Write `data` (str or bytes) to a file beside `path`, then rename(2) it over `path`:
    rename is atomic, so a reader sees the old file or the new one, never half of one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb" if isinstance(data, bytes) else "w") as out:
        out.write(data)
    os.replace(temporary, path)


class ContainerDir:
    """One container's directory, its state.json and its ledger."""

    def __init__(self, container_id):
        self.id = container_id
        self.path = os.path.join(ROOT, container_id)

    def file(self, name):
        return os.path.join(self.path, name)

    @classmethod
    def create(cls, container_id, name=None):
        """Make the directory (mkdir(2) fails if the id is taken) and claim the name."""
        if rootless.ENABLED:
            rootless.make_private_directory(ROOT)
        else:
            os.makedirs(ROOT, mode=0o711, exist_ok=True)
        os.makedirs(NAMES, mode=0o711, exist_ok=True)
        directory = cls(container_id)
        try:
            os.mkdir(directory.path, 0o711)
        except FileExistsError:
            raise MiniboxError(f"container id {container_id!r} already exists") from None
        directory.record("dir", path=directory.path)
        if name:
            directory.record("name", name=name, id=container_id)
            try:
                os.symlink(container_id, os.path.join(NAMES, name))
            except FileExistsError:
                directory.release_all()
                raise MiniboxError(f"the container name {name!r} is already in use") from None
        return directory

    # -- state.json -------------------------------------------------------------------------

    def save(self, state):
        """Write state.json atomically: a reader sees the old or the new file, never half."""
        replace_file(self.file("state.json"), json.dumps(state, indent=1))

    def load(self):
        try:
            with open(self.file("state.json")) as state:
                return json.load(state)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @contextlib.contextmanager
    def locked(self):
        """Hold flock(2) on the container's directory: one read-modify-write at a time."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MiniboxError(f"no such container: {self.id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, only_from=None, **changes):
        """Change state.json under the lock. With only_from (a tuple of statuses), change it
        only if the status is one of them; returns the new state, or None if not changed."""
        with self.locked():
            state = self.load() or {}
            if only_from is not None and state.get("status") not in only_from:
                return None
            state.update(changes)
            self.save(state)
            return state

    # -- the ledger -------------------------------------------------------------------------

    def record(self, kind, **what):
        """Append a resource to the ledger before creating it (O_APPEND: whole lines)."""
        with open(self.file("ledger"), "a") as ledger:
            ledger.write(json.dumps({"kind": kind, **what}) + "\n")

    def entries(self):
        try:
            with open(self.file("ledger")) as ledger:
                return [json.loads(line) for line in ledger if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def release_all(self, keep=()):
        """Undo every ledger entry, newest first, except the kinds in `keep`."""
        kept = []
        for entry in reversed(self.entries()):
            if entry["kind"] in keep:
                kept.append(entry)
            else:
                RELEASE[entry["kind"]](entry)
        if kept and os.path.isdir(self.path):
            with open(self.file("ledger"), "w") as ledger:
                ledger.writelines(json.dumps(entry) + "\n" for entry in reversed(kept))


def _kill_process(entry):
    if process_alive(entry["pid"], entry["start_time"]):
        os.kill(entry["pid"], 9)


def _remove_name(entry):
    link = os.path.join(NAMES, entry["name"])
    try:
        if os.readlink(link) == entry["id"]:  # a run that lost the race must not free it
            os.unlink(link)
    except FileNotFoundError:
        pass


def _remove_dir(entry):
    if rootless.ENABLED:
        _open_up(entry["path"])
    _remove_tree(entry["path"])


def _remove_tree(path):
    """`rm -rf path`, leaves first, never following a symbolic link (os.walk lists links to
    directories among the directories, but does not walk into them). Not shutil.rmtree:
    importing shutil loads bz2, lzma and fnmatch, ~5 ms of every `run --rm`. Nothing of
    the container runs any more, so nothing changes the tree while we walk it."""
    for directory, subdirectories, files in os.walk(path, topdown=False):
        for name in files:
            _ignore_error(os.unlink, os.path.join(directory, name))
        for name in subdirectories:
            child = os.path.join(directory, name)
            _ignore_error(os.unlink if os.path.islink(child) else os.rmdir, child)
    _ignore_error(os.rmdir, path)


def _ignore_error(remove, path):
    try:
        remove(path)
    except OSError:
        pass  # gone already, or a mount point of a dying container: the rest still goes


def _open_up(path):
    """Give every directory below `path` u+rwx. overlayfs makes its work/work mode 000, and a
    container may make more: root passes them by with CAP_DAC_OVERRIDE, but a rootless `rm`
    or `gc` is only their owner, who must chmod(2) them first. (Never through a symlink:
    os.walk lists links to directories among them, and chmod would follow one.)"""
    for directory, subdirectories, _ in os.walk(path):
        for name in subdirectories:
            child = os.path.join(directory, name)
            if not os.path.islink(child):
                os.chmod(child, 0o700)


# How to undo each kind of ledger entry. Other modules add their kinds (cgroup, veth...).
RELEASE = {
    "process": _kill_process,
    "name": _remove_name,
    "dir": _remove_dir,
}


def live_status(state):
    """The status as it is now. state.json says what the monitor last wrote; if the process
    it names is gone (killed, or its monitor was SIGKILLed), the container has stopped."""
    status = state.get("status")
    if status == "stopped":
        return status
    if status in ("creating", "restarting"):
        return status if monitor_alive(state) else "stopped"
    if not process_alive(state.get("pid"), state.get("pid_start")):
        return "stopped"
    return status


def all_containers():
    """Every container directory under ROOT, oldest first."""
    try:
        names = os.listdir(ROOT)
    except FileNotFoundError:
        return []
    directories = [ContainerDir(name) for name in names
                   if name != "names" and os.path.isdir(os.path.join(ROOT, name))]
    return sorted(directories, key=lambda d: os.stat(d.path).st_mtime)


def find(reference):
    """A container by name, full id or unique id prefix (as Docker accepts them)."""
    try:
        return ContainerDir(os.readlink(os.path.join(NAMES, reference)))
    except (FileNotFoundError, OSError):
        pass
    if reference and os.path.isdir(os.path.join(ROOT, reference)) and reference != "names":
        return ContainerDir(reference)
    matches = [d for d in all_containers() if reference and d.id.startswith(reference)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MiniboxError(f"container id prefix {reference!r} is ambiguous")
    raise MiniboxError(f"no such container: {reference}")

