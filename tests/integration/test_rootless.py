"""Rootless mode, for real: minibox run by an unprivileged user (minibox/rootless.py).

Root is needed only to set the stage: a throwaway uid, a home and a runtime directory it
owns. minibox itself then runs as that uid, through setpriv(1), with the distribution's
python3 and the project's venv on PYTHONPATH (the venv's own interpreter may sit under a
directory that only root can enter). Each test checks what the kernel shows: the container's
id maps, its namespaces, who owns the files it writes, and that nothing is left behind.
"""
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from minibox import namespaces
from tests.harness import Minibox, host_mounts, wait_until
from tests.helpers import PROJECT, assert_one_line_error

pytestmark = pytest.mark.root

UID = GID = 61234  # in no passwd file: nothing else on the host runs as it
DEFAULT_CAPS = "00000000a80425fb"  # Docker's 14 (security.DOCKER_DEFAULT_CAPABILITIES)
LIMIT_REFUSED = ("minibox: cgroup limits in rootless mode need a delegated cgroup v2 subtree "
                 "(systemd user session)\n")
# The interpreter the venv was made from, which any user may run: the venv's packages
# (compiled for the same ABI) come in through PYTHONPATH.
PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
# Run argv[1:] (setpriv ... minibox) in a user namespace whose /proc/sys allows no more user
# namespaces. Only the host's root may write a map of two ids (root for setpriv, and UID),
# and only from outside: hence the fork.
NO_USER_NAMESPACES = f"""
import ctypes, os, sys
unshared, unshared_w = os.pipe()
mapped_r, mapped = os.pipe()
child = os.fork()
if child == 0:
    os.close(unshared); os.close(mapped)
    ctypes.CDLL(None, use_errno=True).unshare(0x10000000)
    os.close(unshared_w)
    os.read(mapped_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as limit:
        limit.write("0")
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(unshared_w); os.close(mapped_r)
os.read(unshared, 1)  # end of file: the child is in its user namespace
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{{child}}/{{name}}", "w") as id_map:
        id_map.write("0 0 1\\n{UID} {UID} 1\\n")
os.write(mapped, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
"""


class Rootless(Minibox):
    """`minibox` as UID, with HOME and XDG_RUNTIME_DIR in directories UID owns (its image
    store is under HOME), in an environment of only these."""

    cwd = "/"  # `python -m` looks in the working directory first

    def __init__(self, home, runtime_dir):
        super().__init__(home, os.path.join(runtime_dir, "minibox"))
        self.runtime_dir = runtime_dir

    @property
    def env(self):
        return {"HOME": self.store, "XDG_RUNTIME_DIR": self.runtime_dir, "PATH": "/usr/bin:/bin",
                "PYTHONPATH": f"{PROJECT}:{sysconfig.get_paths()['purelib']}"}

    def command(self, *args, python_options=()):
        return ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", PYTHON,
                *python_options, "-m", "minibox", *args]

    def state(self, container_id):
        """The container's state.json; {} until the runtime has written it, just after it
        made the directory."""
        try:
            return super().state(container_id)
        except FileNotFoundError:
            return {}


def _own(path):
    """Make `path` (if missing) a private directory of UID's."""
    os.makedirs(path, exist_ok=True)
    os.chown(path, UID, GID)
    os.chmod(path, 0o700)
    return path


@pytest.fixture(scope="module")
def home():
    """UID's home, with the image store: the busybox image is built once, by UID."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"no {PYTHON} to run minibox as an unprivileged user")
    reason = namespaces.check_unprivileged_user_namespaces()
    if reason:
        pytest.skip(f"this host forbids rootless mode: {reason}")
    base = tempfile.mkdtemp(prefix="minibox-rootless-")
    os.chmod(base, 0o755)
    yield _own(os.path.join(base, "home"))
    shutil.rmtree(base)


@pytest.fixture
def rootless(home):
    """A fresh runtime directory per test; at the end nothing of UID may be left: no
    process, no container directory, no mount."""
    runtime_dir = _own(tempfile.mkdtemp(prefix="run-", dir=os.path.dirname(home)))
    mounts_before = host_mounts()
    box = Rootless(home, runtime_dir)
    yield box
    box.remove_all()
    assert box.container_dirs() == []
    assert wait_until(lambda: _processes_of_uid() == [], timeout=5)
    assert [m for m in set(host_mounts()) - set(mounts_before) if runtime_dir in m] == []
    shutil.rmtree(runtime_dir)


def _processes_of_uid():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == UID:
                found.append(int(pid))
        except FileNotFoundError:
            pass
    return found


def _namespace(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


# -- what the container is ----------------------------------------------------------------

def test_container_root_is_the_caller(rootless):
    result = rootless("run", "--rm", "busybox", "sh", "-c",
                      "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map")
    assert result.returncode == 0, result.stderr
    uid, gid, uid_map, gid_map = result.stdout.splitlines()
    assert (uid, gid) == ("0", "0")
    assert uid_map.split() == ["0", str(UID), "1"]
    assert gid_map.split() == ["0", str(GID), "1"]
    assert rootless.container_dirs() == []  # --rm


def test_every_namespace_differs_and_the_runtime_shares_the_user_namespace(rootless):
    container_id = rootless.run_detached("busybox", "sleep", "30")
    current = rootless.state(container_id)
    init, monitor = current["pid"], current["monitor_pid"]
    for kind in ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup"):
        assert _namespace(init, kind) != _namespace("self", kind), kind
    # The runtime itself entered the user namespace (it had to, to make the PID namespace)
    # and stayed in the host's others.
    assert _namespace(monitor, "user") == _namespace(init, "user")
    assert _namespace(monitor, "pid") == _namespace("self", "pid")
    # On the host, the container's root is UID, and so is its monitor.
    for pid in (init, monitor):
        with open(f"/proc/{pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert uids == [str(UID)] * 4


def test_a_file_written_to_a_volume_belongs_to_the_caller(rootless, home):
    shared = _own(os.path.join(home, "shared"))
    result = rootless("run", "--rm", "-v", f"{shared}:/data", "busybox", "sh", "-c",
                      "touch /data/made-by-root && ls -n /data/made-by-root")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[2:4] == ["0", "0"]  # root, inside
    made = os.stat(os.path.join(shared, "made-by-root"))
    assert (made.st_uid, made.st_gid) == (UID, GID)


def test_capabilities_no_new_privs_and_seccomp_still_apply(rootless):
    result = rootless("run", "--rm", "busybox", "grep", "-E",
                      "^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    status = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert status == {"CapEff": DEFAULT_CAPS, "CapBnd": DEFAULT_CAPS, "CapInh": DEFAULT_CAPS,
                      "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}


def test_the_default_network_is_loopback_only(rootless):
    result = rootless("run", "--rm", "busybox", "ls", "/sys/class/net")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo"]


def test_the_host_network_comes_with_the_hosts_sys_read_only(rootless):
    # sysfs can't be mounted from a user namespace that doesn't own the network namespace
    result = rootless("run", "--rm", "--network", "host", "busybox", "sh", "-c",
                      "readlink /proc/self/ns/net; ls /sys/class/net; touch /sys/x", check=False)
    assert result.returncode == 1
    net_ns, *interfaces = result.stdout.split()
    assert net_ns == _namespace("self", "net") and "lo" in interfaces
    assert result.stderr == "touch: /sys/x: Read-only file system\n"


def test_removing_an_image_directory_works_in_the_user_namespace(rootless):
    # overlayfs can only mark the new /usr opaque with user.* xattrs (userxattr) here
    result = rootless("run", "--rm", "busybox", "sh", "-c",
                      "rm -rf /usr && mkdir /usr && ls -A /usr | wc -l")
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr


@pytest.mark.parametrize("command, code", [(["sh", "-c", "exit 7"], 7),
                                           (["/etc/passwd"], 126), (["no-such-program"], 127)])
def test_exit_codes(rootless, command, code):
    assert rootless("run", "--rm", "busybox", *command, check=False).returncode == code


# -- managing the user's containers ---------------------------------------------------------

def test_ps_exec_stop_rm_work_from_the_users_state(rootless):
    container_id = rootless.run_detached("--name", "sleeper", "busybox", "sleep", "30")
    assert os.stat(os.path.join(rootless.root, container_id)).st_uid == UID
    assert rootless("ps", "-q").stdout.split() == [container_id[:12]]
    init = rootless.state(container_id)["pid"]
    result = rootless("exec", "sleeper", "sh", "-c",
                      "readlink /proc/self/ns/user; readlink /proc/self/ns/pid; cat /proc/1/cmdline")
    assert result.returncode == 0, result.stderr
    user_ns, pid_ns, cmdline = result.stdout.splitlines()
    assert (user_ns, pid_ns) == (_namespace(init, "user"), _namespace(init, "pid"))
    assert cmdline == "sleep\x0030\x00"
    assert rootless("stop", "-t", "0", "sleeper").returncode == 0
    assert rootless.state(container_id)["status"] == "stopped"
    assert rootless("rm", "sleeper").stdout == "sleeper\n"
    assert rootless.container_dirs() == []


def test_nothing_is_left_after_the_runtime_is_killed_and_gc(rootless):
    run = rootless.popen("run", "busybox", "sh", "-c", "mkdir -m 0 /closed; sleep 30",
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    container_id = wait_until(lambda: rootless.container_dirs())[0]
    init = wait_until(lambda: rootless.state(container_id).get("pid"))
    wait_until(lambda: os.path.exists(os.path.join(rootless.root, container_id, "upper",
                                                   "closed")))
    run.send_signal(signal.SIGKILL)  # setpriv and env exec'd: this is minibox
    run.communicate()
    # Its parent-death signal takes the container with the runtime.
    wait_until(lambda: not os.path.exists(f"/proc/{init}"))
    result = rootless("gc")
    assert result.stdout == f"removed leftovers of {container_id[:12]}\n", result.stderr
    assert rootless("rm", container_id).returncode == 0
    # Its overlay work dir and /closed are mode 000: only a chmod lets their owner in.
    assert not os.path.exists(os.path.join(rootless.root, container_id))


def test_state_falls_back_to_a_private_tmp_directory(rootless):
    fallback = f"/tmp/minibox-{UID}"
    env = {key: value for key, value in rootless.env.items() if key != "XDG_RUNTIME_DIR"}
    try:
        assert rootless("run", "--rm", "busybox", "true", env=env).returncode == 0
        info = os.lstat(fallback)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, UID)
        shutil.rmtree(fallback)
        os.mkdir(fallback, 0o777)  # somebody else's, made first
        result = rootless("run", "--rm", "busybox", "true", env=env, check=False)
        assert_one_line_error(result, 125, f"minibox: refusing to keep containers in {fallback}")
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


# -- what needs root is refused in one line ---------------------------------------------------

@pytest.mark.parametrize("option", [["-m", "64m"], ["--cpus", "0.5"], ["--pids-limit", "10"]])
def test_cgroup_limits_are_refused(rootless, option):
    result = rootless("run", "--rm", *option, "busybox", "true", check=False)
    assert (result.returncode, result.stderr) == (125, LIMIT_REFUSED)


@pytest.mark.parametrize("option, says", [
    (["-p", "8080:80"], "-p needs root"),
    (["--network", "bridge"], "--network bridge needs root"),
    (["--userns"], "--userns maps container root to host uids 100000-165535"),
    (["--restart", "always"], "--restart needs root"),
    (["--user", "1000"], "user '1000': in rootless mode the container has one uid"),
])
def test_what_needs_root_is_one_clear_line(rootless, option, says):
    result = rootless("run", *option, "busybox", "true", check=False)
    assert_one_line_error(result, 125, f"minibox: {says}")
    assert rootless.container_dirs() == []


def test_root_only_commands_say_so(rootless):
    result = rootless("network", "ls", check=False)
    assert result.returncode == 125
    assert result.stderr.startswith("minibox: `minibox network ls` must be run as root")


def test_a_host_without_user_namespaces_is_named(rootless):
    """Real, in a user namespace of the test's own whose user.max_user_namespaces is 0."""
    command = rootless.command("run", "--rm", "busybox", "true")
    result = subprocess.run([sys.executable, "-c", NO_USER_NAMESPACES, *command], cwd="/",
                            env=rootless.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 125
    assert result.stderr == ("minibox: rootless mode needs a user namespace, but user "
                             "namespaces are disabled (sysctl user.max_user_namespaces=0)\n")
