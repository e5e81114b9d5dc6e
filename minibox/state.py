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
import fcntl
import os
import time

from . import cjson, rootless
from .errors import MiniboxError
from .shared import process_alive, process_start_time, replace_file

# The runtime spec version whose config.json and state this runtime speaks (spec.py and oci.py
# take it from here: `minibox state` must not import spec.py, json and all, for one string).
OCI_VERSION = "1.0.2"
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


def monitor_alive(state):
    """Does the process that looks after the container (state.json's monitor) still run?"""
    return process_alive(state.get("monitor_pid"), state.get("monitor_start"))


class CorruptState(MiniboxError):
    """A state.json that is there but holds no container state: one broken container, to be
    reported and skipped by commands that list, and removed by `rm -f` and `gc`."""

    def __init__(self, directory, reason):
        super().__init__(f"container {directory.id[:12]}: unreadable {directory.file('state.json')}"
                         f" ({reason}): remove it with `minibox rm -f {directory.id[:12]}`")


# The fields commands read as numbers or text: anything else in their place is corrupt.
_STATE_FIELDS = {"status": str, "created": (int, float), "pid": int, "pid_start": int,
                 "monitor_pid": int, "monitor_start": int, "exit_code": int}


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
        try:
            if rootless.ENABLED:
                rootless.make_private_directory(ROOT)
            else:
                os.makedirs(ROOT, mode=0o711, exist_ok=True)
            os.makedirs(NAMES, mode=0o711, exist_ok=True)
        except OSError as error:
            raise MiniboxError(f"cannot make the state directory {NAMES}: {error.strerror}"
                               ) from None
        directory = cls(container_id)
        try:
            os.mkdir(directory.path, 0o711)
        except FileExistsError:
            raise MiniboxError(f"container id {container_id!r} already exists") from None
        except OSError as error:
            raise MiniboxError(f"cannot make {directory.path}: {error.strerror}") from None
        try:
            # The directory's owner, for `gc` to tell a run that is still making it (no
            # state.json yet) from one that was killed before it wrote any.
            directory.record("dir", path=directory.path, owner=os.getpid(),
                             owner_start=process_start_time(os.getpid()))
            if name:
                directory.record("name", name=name, id=container_id)
                try:
                    os.symlink(container_id, os.path.join(NAMES, name))
                except FileExistsError:
                    raise MiniboxError(f"the container name {name!r} is already in use"
                                       ) from None
        except BaseException:
            try:
                directory.release_all()
            except MiniboxError:
                pass  # the first error is the one to tell
            raise
        return directory

    # -- state.json -------------------------------------------------------------------------

    def save(self, state):
        """Write state.json atomically: a reader sees the old or the new file, never half."""
        replace_file(self.file("state.json"), cjson.dumps(state))

    def load(self):
        """state.json as a dict; None while it is not written yet (a run creating it).
        Anything else there raises CorruptState."""
        try:
            with open(self.file("state.json"), "rb") as saved:
                state = cjson.loads(saved.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as error:  # UnicodeDecodeError too
            raise CorruptState(self, type(error).__name__) from None
        if not isinstance(state, dict):
            raise CorruptState(self, f"a JSON {type(state).__name__}, not an object")
        if "status" not in state:
            raise CorruptState(self, "no status")
        for field, kind in _STATE_FIELDS.items():
            if state.get(field) is not None and not isinstance(state[field], kind):
                raise CorruptState(self, f"{field}: {state[field]!r}")
        return state

    def _lock(self):
        """flock(2) on the container's directory, held until the returned fd is closed: one
        read-modify-write of state.json at a time."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MiniboxError(f"no such container: {self.id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def update(self, only_from=None, **changes):
        """Change state.json under the lock. With only_from (a tuple of statuses), change it
        only if the status is one of them; returns the new state, or None if not changed."""
        lock = self._lock()
        try:
            state = self.load() or {}
            if only_from is not None and state.get("status") not in only_from:
                return None
            state.update(changes)
            self.save(state)
            return state
        finally:
            os.close(lock)

    # -- the ledger -------------------------------------------------------------------------

    def record(self, kind, **what):
        """Append a resource to the ledger before creating it (O_APPEND: whole lines)."""
        try:
            with open(self.file("ledger"), "a") as ledger:
                ledger.write(cjson.dumps({"kind": kind, **what}) + "\n")
        except OSError as error:  # ENOSPC from write(2) or close(2) names no file
            raise MiniboxError(f"cannot write {self.file('ledger')}: {error.strerror}"
                               ) from None

    def entries(self):
        """The ledger's entries, oldest first. A line that is not a whole entry of a kind we
        know (a write cut short, a damaged file) is passed over: the rest still gets undone."""
        try:
            with open(self.file("ledger"), "rb") as ledger:
                lines = ledger.read().split(b"\n")[:-1]  # the last piece: unfinished
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entry = cjson.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("kind") in (*RELEASE, *RELEASED_BY):
                entries.append(entry)
        return entries

    def release_all(self, keep=()):
        """Undo every ledger entry, newest first, except the kinds in `keep`. Unless "dir"
        is kept, the directory and any name pointing at it go last, whatever the ledger says
        (it may be lost or empty); MiniboxError names what could not be removed."""
        kept = []
        for entry in reversed(self.entries()):
            if entry["kind"] in keep:
                kept.append(entry)
            else:
                _release(entry)
        if "dir" not in keep:
            self._remove()
        elif kept and os.path.isdir(self.path):
            with open(self.file("ledger"), "w") as ledger:
                ledger.writelines(cjson.dumps(entry) + "\n" for entry in reversed(kept))

    def being_made(self):
        """Is the process that made this directory still at work on it (before state.json
        exists)? A directory with no ledger yet: only for the instant after mkdir(2)."""
        for entry in self.entries():
            if entry["kind"] == "dir":
                return process_alive(entry.get("owner"), entry.get("owner_start"))
        try:
            return time.time() - os.stat(self.path).st_mtime < 1
        except FileNotFoundError:
            return False

    def _remove(self):
        for name in names_of(self.id):
            _remove_name({"name": name, "id": self.id})
        if rootless.ENABLED:
            _open_up(self.path)
        # The ledger last: a removal killed half-way leaves it, and with it the dead owner
        # that tells `gc` to finish the job.
        try:
            for entry in os.scandir(self.path):
                if entry.is_dir(follow_symlinks=False):
                    _remove_tree(entry.path)
                elif entry.name != "ledger":
                    _ignore_error(os.unlink, entry.path)
        except FileNotFoundError:
            pass
        _ignore_error(os.unlink, self.file("ledger"))
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:  # e.g. EBUSY: a mount of a container that still runs
            raise MiniboxError(f"cannot remove {self.path}: {error.strerror}") from None


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


def _remove_tree(path):
    """`rm -rf path`, leaves first, never following a symbolic link (os.walk lists links to
    directories among the directories, but does not walk into them). Not shutil.rmtree:
    importing shutil loads bz2, lzma and fnmatch on every `run --rm`. Nothing of
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


def names_of(container_id):
    """The names (symlinks in names/) that lead to this container."""
    try:
        links = os.listdir(NAMES)
    except FileNotFoundError:
        return []
    found = []
    for name in links:
        try:
            if os.readlink(os.path.join(NAMES, name)) == container_id:
                found.append(name)
        except OSError:
            pass
    return found


# How to undo each kind of ledger entry. "dir" is the directory itself: release_all removes
# it last (never the path the entry names, so a damaged ledger can point nowhere else).
RELEASE = {
    "process": _kill_process,
    "name": _remove_name,
    "dir": lambda entry: None,
}
# The kinds other modules add to RELEASE when imported, and which module that is. A process
# that only tears down (an engine's `delete`, `gc`) imports one when its ledger holds such an
# entry: deleting a container without a network never loads network.py.
RELEASED_BY = {"cgroup": "minibox.cgroups", "network": "minibox.network",
               "proxy": "minibox.network"}


def _release(entry):
    if entry["kind"] not in RELEASE:
        __import__(RELEASED_BY[entry["kind"]])  # for what it adds to RELEASE
    RELEASE[entry["kind"]](entry)


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


def oci_state(container_id, current, paused=False):
    """The OCI runtime spec's state: what `minibox state` prints and hooks read (paused: its
    cgroup is frozen, which only the caller knows)."""
    status = live_status(current)
    status = status if status in ("created", "running", "stopped") else "creating"
    status = "paused" if paused and status == "running" else status
    return cjson.dumps({"ociVersion": OCI_VERSION, "id": container_id,
                       "status": status, "pid": current.get("pid") if status != "stopped" else 0,
                       "bundle": current.get("bundle"),
                       "annotations": current.get("annotations") or {}}, indent=2)


def all_containers():
    """Every container directory under ROOT, oldest first. A directory that goes away
    meanwhile (a container with --rm ending) is left out, not an error."""
    try:
        entries = list(os.scandir(ROOT))
    except OSError:  # no ROOT yet, or --root that is no directory
        return []
    dated = []
    for entry in entries:
        try:
            if entry.name != "names" and entry.is_dir(follow_symlinks=False):
                dated.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        except FileNotFoundError:
            pass
    return [ContainerDir(name) for _, name in sorted(dated)]


def readable_containers(skipped):
    """(directory, state) of each container whose state.json is written, oldest first; the
    corrupt ones are appended to `skipped` as CorruptState errors instead: one broken
    container must not stop a command from working for the others."""
    found = []
    for directory in all_containers():
        try:
            current = directory.load()
        except CorruptState as error:
            skipped.append(error)
            continue
        if current is not None:
            found.append((directory, current))
    return found


def _is_reference(text):
    """A name, an id or an id prefix: one path component, never a path (`rm ../../x` must
    not reach x/ledger)."""
    return bool(text) and "/" not in text and text not in (".", "..", "names") \
        and "\0" not in text


class NoSuchContainer(MiniboxError):
    """No container answers to the reference."""

    def __init__(self, reference):
        super().__init__(f"no such container: {reference}")


def find(reference):
    """A container by name, full id or unique id prefix (as Docker accepts them)."""
    if not _is_reference(reference):
        raise NoSuchContainer(reference)
    try:
        return ContainerDir(os.readlink(os.path.join(NAMES, reference)))
    except OSError:  # no such name (or no names/ yet)
        pass
    if os.path.isdir(os.path.join(ROOT, reference)):
        return ContainerDir(reference)
    matches = [d for d in all_containers() if d.id.startswith(reference)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MiniboxError(f"container id prefix {reference!r} is ambiguous")
    raise NoSuchContainer(reference)

