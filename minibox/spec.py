"""ContainerSpec: everything needed to run one container, validated before anything is made.

The CLI builds a spec from flags; each parse_* function turns one flag's text into a value
or raises MiniboxError with one line saying what is wrong.
"""
import os

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
                 use_chroot=False, network=None, ip=None, publish=()):
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
