"""The one way tests run the real `minibox`, wait for it, and check what it left behind.

- Minibox: the CLI as a subprocess, with MINIBOX_ROOT and MINIBOX_STORE of its own
  (conftest's `minibox` fixture makes one per test).
- wait_until: poll a condition until it holds or a timeout says what was awaited.
- private_dockerd(): a dockerd of the test session's own, with the busybox image imported
  (tests/engines/ drive it; test_oci.py reads the config.json it generates for runc).
- snapshot() / leftovers(): the leak check conftest runs after every root test (processes,
  state directories, mounts, cgroups, veths, address leases), scoped to what this test
  session made, so that containers of another session on the same machine never count.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tests import imagebuilder

# Every state root this session makes starts with this, so a process or a mount of another
# test session never matches it. Not under /tmp: anything that reads every file there (a
# grep -r of another session) would open a created container's exec.fifo -- and start it.
ROOT_PREFIX = f"/run/minibox-test-{os.getpid()}-"

MADE = []  # the Minibox objects of the current test; conftest's leak check empties it


class Minibox:
    """`minibox` with MINIBOX_ROOT and MINIBOX_STORE in directories of its own. Every call
    runs `python -m minibox` in that environment; `seen` collects the container ids it
    met, so the leak check can look for their cgroups, veths and leases."""

    cwd = None  # where its commands run: the caller's directory

    def __init__(self, store, root=None):
        self.root = root or tempfile.mkdtemp(prefix=os.path.basename(ROOT_PREFIX),
                                             dir=os.path.dirname(ROOT_PREFIX))
        self.store = store
        self.seen = set()
        MADE.append(self)

    @property
    def env(self):
        """The test's environment as it is now (a test may set more), with this root and store."""
        return dict(os.environ, MINIBOX_ROOT=self.root, MINIBOX_STORE=str(self.store))

    def command(self, *args, python_options=()):
        return [sys.executable, *python_options, "-m", "minibox", *args]

    def __call__(self, *args, check=True, timeout=60, python_options=(), **kwargs):
        """Run `minibox ARGS` to its end; the CompletedProcess (text unless text=False).
        With `check`, a non-zero exit fails the test with minibox's stderr."""
        kwargs.setdefault("capture_output", "stdout" not in kwargs)
        kwargs.setdefault("text", True)
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("env", self.env)
        result = subprocess.run(self.command(*args, python_options=python_options),
                                cwd=self.cwd, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
            raise AssertionError(f"minibox {' '.join(map(str, args))} exited "
                                 f"{result.returncode}: {stderr}")
        return result

    def popen(self, *args, **kwargs):
        """Start `minibox ARGS` without waiting for it."""
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.command(*args), env=self.env, cwd=self.cwd, **kwargs)

    def spawn(self, *args, timeout=15):
        """`minibox ARGS` on a pseudo-terminal of its own (a pexpect child)."""
        import pexpect
        command, *argv = self.command(*args)
        return pexpect.spawn(command, argv, env=self.env, cwd=self.cwd, timeout=timeout,
                             encoding="utf-8")

    def run_detached(self, *args):
        """`minibox run -d ARGS`; returns the id."""
        container_id = self("run", "-d", *args).stdout.strip()
        self.seen.add(container_id)
        return container_id

    def state(self, container_id):
        """state.json as the monitor wrote it."""
        with open(os.path.join(self.root, self.full_id(container_id), "state.json")) as saved:
            return json.load(saved)

    def wait_for_state(self, predicate, timeout=10):
        """The state.json of the first container whose state satisfies `predicate`."""
        def matching():
            for container_id in self.container_dirs():
                try:
                    current = self.state(container_id)
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                if predicate(current):
                    return current
            return None
        return wait_until(matching, timeout=timeout)

    def full_id(self, prefix):
        names = os.path.join(self.root, "names", prefix)
        if os.path.islink(names):
            return os.readlink(names)
        matches = [d for d in self.container_dirs() if d.startswith(prefix)]
        assert len(matches) == 1, matches
        return matches[0]

    def status(self, container_id):
        """The STATUS part of `minibox ps -a` for the container."""
        ps = self("ps", "-a").stdout.splitlines()
        return next(line for line in ps if line.startswith(container_id[:12]))

    def container_dirs(self):
        """The container directories under the state root, noted in `seen`."""
        found = container_dirs(self.root)
        self.seen.update(found)
        return found

    def remove_all(self):
        """`rm -f` every container still under the state root."""
        for container_id in self.container_dirs():
            self("rm", "-f", container_id, check=False)


def container_dirs(root):
    """The container directories under a state root (names/ is bookkeeping, not a container)."""
    try:
        return sorted(name for name in os.listdir(root) if name != "names")
    except FileNotFoundError:
        return []


def wait_until(predicate, timeout=10.0, interval=0.02, what=None):
    """The first true value of predicate(), polled every `interval` seconds; after
    `timeout` seconds the test fails saying `what` it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


# The engines' image, their containers' ulimits (the host's hard RLIMIT_NOFILE and NPROC may
# be below the engines' defaults, where runc fails as well), and the runtimes they may use.
ENGINE_IMAGE = "busybox:engine-test"
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
RUNTIMES = {"runc": shutil.which("runc"),
            "minibox": os.path.join(os.path.dirname(sys.executable), "minibox")}


def busybox_rootfs_tar():
    """A root filesystem as a tar: static busybox with every applet, the usual directories."""
    applets = subprocess.run([imagebuilder.BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries = [entry for entry in imagebuilder.busybox_entries() if entry[0] != "symlink"]
    entries += [("symlink", f"bin/{applet}", "/bin/busybox") for applet in applets
                if applet != "busybox"]
    entries += [("dir", name) for name in ("proc", "sys", "dev", "tmp", "root", "var")]
    entries.append(("file", "etc/group", "root:x:0:\n"))
    return imagebuilder.layer_tar(entries)


def remove_engine_dir(top):
    """Remove an engine's temp dir; returns the mounts it had left under it (unmounted now)."""
    with open("/proc/self/mountinfo") as mountinfo:
        left = [line.split()[4] for line in mountinfo if line.split()[4].startswith(top)]
    for mount_point in reversed(left):
        subprocess.run(["umount", "-l", mount_point])
    shutil.rmtree(top, ignore_errors=True)
    return left


@contextlib.contextmanager
def private_dockerd(rootfs_tar):
    """A dockerd of its own (socket, data and exec roots under a temp dir in /run), no host
    network (--bridge=none --iptables=false --ip-forward=false; it starts its own
    containerd), knowing minibox as the runtime `minibox`, with rootfs_tar imported as
    ENGINE_IMAGE. Yields (its `docker -H ...` command line, the temp dir); afterwards
    stopped by its PID, and nothing of it may be left (mounts, its containers' cgroups).

    Its containers' cgroups go below a parent named after the temp dir, not docker/: other
    sessions' dockerds on this machine use docker/ too, and their containers are no leak."""
    top = tempfile.mkdtemp(prefix="minibox-dockerd-", dir="/run")
    socket = os.path.join(top, "docker.sock")
    log = open(os.path.join(top, "dockerd.log"), "w")
    daemon = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none",
         "--data-root", os.path.join(top, "data"), "--exec-root", os.path.join(top, "exec"),
         "--pidfile", os.path.join(top, "dockerd.pid"), "-H", f"unix://{socket}",
         "--add-runtime", f"minibox={RUNTIMES['minibox']}",
         "--cgroup-parent", "/" + os.path.basename(top)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        # It outlives the test that starts it: not that test's MINIBOX_ROOT (its leak check
        # would count dockerd as the test's process, and minibox would keep state there).
        env={name: value for name, value in os.environ.items()
             if not name.startswith("MINIBOX_")})
    argv = ["docker", "-H", f"unix://{socket}"]
    try:
        wait_until(lambda: subprocess.run([*argv, "version"], capture_output=True).returncode
                   == 0 or daemon.poll() is not None, 60, 0.1, "dockerd to answer")
        assert daemon.poll() is None, open(log.name).read()[-2000:]
        subprocess.run([*argv, "import", "-", ENGINE_IMAGE], input=rootfs_tar,
                       capture_output=True, check=True)
        yield argv, top
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        left = remove_engine_dir(top)
        assert left == [], f"dockerd left mounts behind: {left}"
        assert remove_cgroup_tree(os.path.basename(top)) == []


def host_mounts():
    """The host's mount table without mount ids (mountinfo(5) fields 5 and on)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return sorted(" ".join(line.split()[4:]) for line in mountinfo)


def remove_cgroup_tree(name, grace=5.0):
    """rmdir the cgroup `name` (a path below each hierarchy's root: a dockerd's, libpod_parent/,
    a test's own) in every hierarchy, v2's unified one too, leaves first: engines and runc
    leave such parents behind when their last container goes. A process still on its way
    out (conmon ends just after `podman rm -f` returns) keeps its group busy a moment: tried
    again for up to `grace` seconds. Returns what could not be removed: a leak."""
    import glob
    deadline = time.monotonic() + grace
    while True:
        left = []
        for top in glob.glob(f"/sys/fs/cgroup/{name}") + glob.glob(f"/sys/fs/cgroup/*/{name}"):
            for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                try:
                    os.rmdir(directory)
                except OSError:
                    left.append(directory)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def cgroup_dirs():
    """Every cgroup directory a minibox run from this process could make: below this
    process's own cgroup in each v1 hierarchy (where minibox/ and --cgroup-parent go; every
    hierarchy, as an OCI container is in all of them), or below the v2 root's minibox*/
    groups."""
    from minibox import cgroups
    from minibox.cgroups.v1 import mounted_hierarchies
    if cgroups.cgroup_version() == 2:
        tops = [entry.path for entry in os.scandir(cgroups.CGROUP_ROOT)
                if entry.is_dir() and entry.name.startswith("minibox")]
    else:
        tops = [os.path.join(mountpoint, own.lstrip("/"))
                for mountpoint, own in mounted_hierarchies(every=True).values()]
    found = set()
    for top in tops:
        for directory, subdirs, _ in os.walk(top):
            found.update(os.path.join(directory, name) for name in subdirs)
    return found


def snapshot():
    """What leftovers() compares against: the mounts and cgroups before a test."""
    return {"mounts": host_mounts(), "cgroups": cgroup_dirs()}


def leftovers(before, boxes, grace=5.0):
    """Everything `boxes` (Minibox objects) and the test may have left since `before`
    (snapshot()), by kind; {} when clean. Processes get `grace` seconds to be reaped (a
    killed PID namespace empties asynchronously)."""
    from minibox import bridge
    roots = [box.root for box in boxes]
    wait = time.monotonic() + grace
    while _processes_using(roots) and time.monotonic() < wait:
        time.sleep(0.05)
    ids = set().union(*(box.seen for box in boxes), *(box.container_dirs() for box in boxes))
    found = {
        "processes": _processes_using(roots),
        "directories": [d for box in boxes for d in box.container_dirs()],
        "names": [name for root in roots if os.path.isdir(os.path.join(root, "names"))
                  for name in os.listdir(os.path.join(root, "names"))],
        "mounts": sorted(m for m in set(host_mounts()) - set(before["mounts"])
                         if ROOT_PREFIX in m or any(str(box.store) in m for box in boxes)),
        "cgroups": leaked_cgroups(before["cgroups"], ids),
        "veths": [name for name in map(bridge.host_ifname, ids) if bridge.link_exists(name)],
        "leases": [lease.name for lease in bridge.address_pool().directory.glob("*.*.*.*")
                   if lease.read_text() in ids],
    }
    return {kind: things for kind, things in found.items() if things}


def leaked_cgroups(before, ids, grace=2.0):
    """The cgroup directories made since `before` that this session left behind.

    The cgroups live where every minibox on the machine puts them, so another test
    session's containers appear and vanish here too. A new directory is excused when it
    (or one below it) holds a process that is not this session's -- a container of another
    session, or a shared minibox/ group such a container sits in --, when a cgroup of that
    name exists outside the places this process's runs use (another session placed it below
    its own cgroup in some hierarchy), or when it vanishes within `grace` seconds (another
    session tearing down). A directory named after one of `ids` is never excused.
    """
    ours = _session_processes()
    deadline = time.monotonic() + grace
    while True:
        mine = cgroup_dirs()
        suspects = sorted(path for path in mine - before
                          if os.path.basename(path) in ids
                          or not (_foreign_inside(path, ours) or _placed_elsewhere(path, mine)))
        if not suspects or time.monotonic() >= deadline or \
                any(os.path.basename(path) in ids for path in suspects):
            return suspects
        time.sleep(0.1)


def _placed_elsewhere(path, mine):
    """Whether a cgroup named like `path` exists outside `mine` (this process's places)."""
    import glob
    return any(other not in mine for other in
               glob.glob(f"/sys/fs/cgroup/*/**/{os.path.basename(path)}", recursive=True))


def _foreign_inside(cgroup, ours):
    """Whether any process in `cgroup` or below it is not in `ours`."""
    for directory, _, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(directory, "cgroup.procs")) as procs:
                    if any(int(pid) not in ours for pid in procs.read().split()):
                        return True
            except OSError:
                continue
    return False


def _session_processes():
    """PIDs of this session: this process and its descendants, and whatever uses one of
    this session's state roots (detached monitors and containers leave the process tree)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parents[int(pid)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    ours = {os.getpid(), *_processes_using([ROOT_PREFIX])}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= more
        grew = bool(more)
    return ours


def _processes_using(roots):
    """PIDs whose root, cwd or environment points into one of `roots` (path prefixes):
    containers (their root is below it) and monitors (MINIBOX_ROOT in their environment)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(pid) == os.getpid():
                continue
            links = [os.readlink(f"/proc/{pid}/{name}") for name in ("root", "cwd")]
            with open(f"/proc/{pid}/environ", "rb") as environ:
                env = environ.read()
        except OSError:
            continue
        if any(link.startswith(root) for link in links for root in roots) or \
                any(f"\0MINIBOX_ROOT={root}".encode() in b"\0" + env for root in roots):
            found.append(int(pid))
    return found
