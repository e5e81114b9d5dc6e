"""ContainerSpec: everything needed to run one container, validated before anything is made.

The CLI builds a spec from flags; each parse_* function turns one flag's text into a value
or raises MiniboxError with one line saying what is wrong.
"""
import dataclasses
import os

from .errors import MiniboxError
from .network import NetworkMode

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class Volume:
    host_path: str
    container_path: str
    readonly: bool = False


@dataclasses.dataclass
class ContainerSpec:
    command: list
    image: str = None          # a name from the image store, or None with rootfs
    rootfs: str = None         # --rootfs: any directory as the read-only lower layer
    name: str = None
    hostname: str = None
    env: dict = dataclasses.field(default_factory=dict)
    workdir: str = "/"
    volumes: list = dataclasses.field(default_factory=list)
    interactive: bool = False  # -i: keep stdin attached
    tty: bool = False          # -t: a pseudo-terminal made inside the container
    remove: bool = False       # --rm
    use_chroot: bool = False   # --chroot: the escapable way, for the lesson
    network: NetworkMode = None  # --network; None: a netns with lo only (as runc's default)
    ip: str = None             # --ip: a chosen address on the bridge
    publish: list = dataclasses.field(default_factory=list)  # -p: PortMappings

    def __post_init__(self):
        self.network = self.network or NetworkMode("none")

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
