"""ContainerSpec: everything needed to run one container, validated before anything is made.

The CLI builds a spec from flags; each parse_* function turns one flag's text into a value
or raises MiniboxError with one line saying what is wrong.
"""
import os

from .cgroups import limits as cgroup_limits
from .errors import MiniboxError
from .network import NetworkMode

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Volume:
    """-v: a host directory bind-mounted into the container."""

    def __init__(self, host_path, container_path, readonly=False):
        self.host_path = host_path
        self.container_path = container_path
        self.readonly = readonly


class ContainerSpec:
    """What to run and how. (A plain class: dataclasses would import inspect, ~10 ms of
    every container start.)"""

    def __init__(self, command, image=None, rootfs=None, name=None, hostname=None, env=None,
                 workdir="/", volumes=(), interactive=False, tty=False, remove=False,
                 use_chroot=False, user=None, limits=None, cgroup_parent=None, stats=False,
                 security=None, privileged=False, read_only=False, userns=False,
                 network=None, ip=None, publish=()):
        self.command = list(command)
        self.image = image              # a name from the image store, or None with rootfs
        self.rootfs = rootfs            # --rootfs: any directory as the read-only lower layer
        self.name = name
        self.hostname = hostname
        self.env = dict(env or {})
        self.workdir = workdir
        self.volumes = list(volumes)
        self.interactive = interactive  # -i: keep stdin attached
        self.tty = tty                  # -t: a pseudo-terminal made inside the container
        self.remove = remove            # --rm
        self.use_chroot = use_chroot    # --chroot: the escapable way, for the lesson
        self.limits = limits or cgroup_limits.Limits()  # -m, --cpus, --pids-limit ...
        self.cgroup_parent = cgroup_parent  # --cgroup-parent, below each hierarchy's root
        self.stats = stats              # --stats: print peak memory, CPU time, max pids at exit
        self.user = user                # --user or the image's User: USER[:GROUP], names or ids
        self.security = security        # a security.SecurityProfile (None: Docker's defaults)
        self.privileged = privileged    # --privileged: also no masked paths, devices allowed
        self.read_only = read_only      # --read-only: the root read-only, a tmpfs on /tmp
        self.userns = userns            # --userns: container root is host uid 100000
        # --network: a NetworkMode; `run` defaults to bridge, a bare spec gets a netns
        # with lo only (as runc's default config does)
        self.network = network or NetworkMode("none")
        self.ip = ip                    # --ip: a chosen address on the bridge
        self.publish = list(publish)    # -p: PortMappings

    def environment(self, container_id):
        """The command's environment: Docker's defaults, then -e values on top."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname or container_id[:12],
               "HOME": "/root"}
        if self.tty:
            env["TERM"] = "xterm"
        env.update(self.env)
        return env


def parse_env(items, host_env=os.environ):
    """-e KEY=VALUE, or -e KEY to copy the host's value (as docker run does)."""
    env = {}
    for item in items:
        key, has_value, value = item.partition("=")
        if not key or any(c.isspace() for c in key):
            raise MiniboxError(f"invalid environment variable {item!r}: expected KEY=VALUE")
        if has_value:
            env[key] = value
        elif key in host_env:
            env[key] = host_env[key]
    return env


def parse_volume(text):
    """-v HOSTDIR:CONTAINERDIR[:ro|rw]; the host path must exist and both must be absolute."""
    parts = text.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        host, container, mode = parts
    elif len(parts) == 2:
        (host, container), mode = parts, "rw"
    else:
        raise MiniboxError(f"invalid volume {text!r}: expected HOSTDIR:CONTAINERDIR[:ro]")
    if not container.startswith("/"):
        raise MiniboxError(f"invalid volume {text!r}: the container path must be absolute")
    host = os.path.abspath(host)
    if not os.path.exists(host):
        raise MiniboxError(f"invalid volume {text!r}: {host} does not exist on the host")
    return Volume(host, container, mode == "ro")


def check_rootfs(path):
    if not os.path.exists(path):
        raise MiniboxError(f"--rootfs {path}: no such directory")
    if not os.path.isdir(path):
        raise MiniboxError(f"--rootfs {path}: not a directory")
    return os.path.abspath(path)


def check_name(name):
    if name is not None and (not name or "/" in name or name.startswith(".")
                             or not all(c.isalnum() or c in "_.-" for c in name)):
        raise MiniboxError(f"invalid container name {name!r}: use letters, digits, _ . -")
    return name


def parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit):
    """-m, --memory-swap, --cpus, --cpu-shares, --pids-limit -> Limits (cgroups/limits.py)."""
    return _one_line(cgroup_limits.parse_limits, memory, memory_swap, cpus, cpu_shares, pids_limit)


def parse_cgroup_parent(text):
    return None if text is None else _one_line(cgroup_limits.parse_cgroup_parent, text)


def _one_line(parse, *texts):
    try:
        return parse(*texts)
    except ValueError as error:
        raise MiniboxError(str(error)) from None
def check_user(text):
    """--user USER[:GROUP]: ids or names; names are looked up in the container's own
    /etc/passwd and /etc/group at start (security.resolve_user), as docker run does."""
    user, _, group = text.partition(":")
    if not user or ":" in group or any(c.isspace() for c in text):
        raise MiniboxError(f"invalid --user {text!r}: expected USER[:GROUP], e.g. 1000:1000")
    return text


def parse_security_options(options):
    """--security-opt no-new-privileges[=true|false] | seccomp=unconfined
    -> (no_new_privileges, seccomp), both on by default."""
    no_new_privileges, seccomp = True, True
    for option in options:
        key, _, value = option.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            no_new_privileges = value != "false"
        elif key == "seccomp" and value == "unconfined":
            seccomp = False
        elif key == "seccomp":
            raise MiniboxError(f"--security-opt {option}: only seccomp=unconfined is supported "
                               "(the default filter is built into minibox/security.py)")
        else:
            raise MiniboxError(f"invalid --security-opt {option!r}: expected "
                               "no-new-privileges[=true|false] or seccomp=unconfined")
    return no_new_privileges, seccomp


def security_profile(cap_add=(), cap_drop=(), privileged=False, security_options=()):
    """The flags' SecurityProfile. --privileged keeps every capability and, as in Docker, turns
    seccomp off too; capability names are checked here, before anything is made."""
    from . import security
    no_new_privileges, seccomp = parse_security_options(security_options)
    try:
        capabilities = security.resolve_capabilities(cap_add, cap_drop, privileged)
    except ValueError as error:
        raise MiniboxError(str(error)) from None
    return security.SecurityProfile(capabilities, no_new_privileges, seccomp and not privileged)
