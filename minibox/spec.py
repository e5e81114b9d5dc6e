"""ContainerSpec: everything needed to run one container -- the data only.

Two ways in, one spec out -- the way Docker turns `docker run` flags into an OCI config.json
and hands it to runc, and runc's specconv turns that into its own config:

- docker.py: `minibox run`'s flags -> ContainerSpec (each parse_*/check_* turns one flag's
  text into a value or raises MiniboxError with one line saying what is wrong);
- oci.py: a bundle's config.json -> ContainerSpec (the OCI runtime spec:
  https://github.com/opencontainers/runtime-spec/blob/main/config.md), and `minibox spec`'s
  default config.

Either way the runtime only ever sees a ContainerSpec, and this module imports nothing of the
runtime. A copy is saved in the container's directory at create time (dumps/load), so editing
config.json afterwards changes nothing.
"""
import json

from .cgroups import limits as cgroup_limits
from .errors import MiniboxError
from .state import OCI_VERSION  # noqa: F401  (spec.OCI_VERSION: oci.py's, engine.py's)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# OCI namespace type -> the name under /proc/<pid>/ns/.
NAMESPACE_FILES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net", "pid": "pid",
                   "cgroup": "cgroup", "user": "user"}
DOCKER_NAMESPACES = ("mount", "uts", "ipc", "network", "pid", "cgroup")


class Mount:
    """One entry of config.json's `mounts` (mount(8) options as a list of words)."""

    def __init__(self, destination, type=None, source=None, options=()):
        self.destination = destination
        self.type = type
        self.source = source
        self.options = list(options)


# Docker's (and `runc spec`'s) filesystems under /proc, /dev and /sys. Never the host's /dev:
# it holds the host's disks.
DEFAULT_MOUNTS = (
    Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
    Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    Mount("/dev/pts", "devpts", "devpts",
          ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
    Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
    Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
    Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
)


class Volume:
    """-v: a host directory bind-mounted into the container."""

    def __init__(self, host_path, container_path, readonly=False):
        self.host_path = host_path
        self.container_path = container_path
        self.readonly = readonly

    def mount(self, nodev=True):
        """The same as an OCI mount entry."""
        return Mount(self.container_path, "bind", self.host_path,
                     ["rbind", "ro" if self.readonly else "rw"] + (["nodev"] if nodev else []))


class RestartPolicy:
    """--restart: no | on-failure[:N] | always, carried out by the container's monitor."""

    def __init__(self, name="no", max_retries=0):
        self.name = name
        self.max_retries = max_retries  # on-failure:N; 0 means no limit

    def should_restart(self, exit_code, restarts):
        if self.name == "always":
            return True
        if self.name == "on-failure" and exit_code != 0:
            return self.max_retries == 0 or restarts < self.max_retries
        return False


class NetworkMode:
    """What `--network` asked for (network.parse_mode reads the flag); `container` is the ID
    or name for container:ID."""

    def __init__(self, kind, container=None):
        self.kind = kind
        self.container = container

    def __str__(self):
        return f"container:{self.container}" if self.kind == "container" else self.kind

    @property
    def new_netns(self):
        """Does the container get a network namespace of its own (CLONE_NEWNET)?"""
        return self.kind in ("bridge", "none")


class PortMapping:
    """One `-p` (portproxy.parse_mapping reads the flag): where the host listens and which
    container port it forwards to."""

    def __init__(self, host_ip, host_port, container_port, protocol="tcp"):
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_port = container_port
        self.protocol = protocol

    def __eq__(self, other):
        return isinstance(other, PortMapping) and str(self) == str(other)

    def __repr__(self):
        return f"PortMapping({self})"

    def __str__(self):
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


class ContainerSpec:
    """What to run and how: from `minibox run`'s flags or from an OCI config.json.
    (A plain class: dataclasses would import inspect, a large module, on every container start.)"""

    def __init__(self, command, image=None, image_id=None, layers=(), rootfs=None, name=None, hostname=None, env=None,
                 workdir="/", volumes=(), interactive=False, tty=False, remove=False,
                 use_chroot=False, user=None, limits=None, cgroup_parent=None, cgroups_path=None,
                 stats=False,
                 security=None, privileged=False, read_only=False, detach=False,
                 restart=None, root_path=None, mounts=DEFAULT_MOUNTS,
                 namespaces=DOCKER_NAMESPACES, masked_paths=(),
                 readonly_paths=(), rootfs_propagation=None, sysctl=None,
                 devices=(), additional_gids=(), umask=None, rlimits=(), oom_score_adj=None,
                 hooks=None, annotations=None, bundle=None, network=None, ip=None, publish=(),
                 uid_mappings=(), gid_mappings=()):
        self.command = list(command)
        self.image = image              # the image's name as given, or None with rootfs
        # Resolved once, at creation (docker.resolve_image): what the container runs on, even
        # after the name is given to another image.
        self.image_id = image_id
        self.layers = list(layers)      # its layer directories, top first (overlay lowers)
        self.rootfs = rootfs            # --rootfs: any directory as the read-only lower layer
        self.root_path = root_path      # OCI root.path: used in place, no overlay (like runc)
        self.name = name
        self.hostname = hostname
        self.env = dict(env or {})      # the complete environment of the command
        self.workdir = workdir
        self.volumes = list(volumes)    # -v, mounted after `mounts`
        self.mounts = list(mounts)
        # OCI namespace type -> None (a new one) or the path of one to join; a type that is
        # missing stays the host's.
        self.namespaces = dict(namespaces) if isinstance(namespaces, dict) else \
            dict.fromkeys(namespaces)
        self.privileged = privileged    # --privileged: also no masked paths, devices allowed
        self.masked_paths = [] if privileged else list(masked_paths)
        self.readonly_paths = [] if privileged else list(readonly_paths)
        self.rootfs_propagation = rootfs_propagation
        self.sysctl = dict(sysctl or {})
        self.devices = list(devices)    # OCI linux.devices entries
        self.interactive = interactive  # -i: keep stdin attached
        self.tty = tty                  # -t: a pseudo-terminal made inside the container
        self.remove = remove            # --rm
        self.detach = detach            # -d: stdout/stderr go to the container's log file
        self.restart = restart or RestartPolicy()
        self.use_chroot = use_chroot    # --chroot: the escapable way, for the lesson
        self.limits = limits or cgroup_limits.Limits()  # -m, --cpus, --pids-limit ...
        self.cgroup_parent = cgroup_parent  # --cgroup-parent, below each hierarchy's root
        # OCI linux.cgroupsPath (cgroups.parse_cgroups_path): the container's cgroup itself
        self.cgroups_path = cgroups_path
        self.stats = stats              # --stats: print peak memory, CPU time, max pids at exit
        self.user = user                # --user or the image's User: USER[:GROUP], names or ids
        self.additional_gids = list(additional_gids)  # OCI process.user.additionalGids
        self.umask = umask              # OCI process.user.umask
        self.security = security        # a security.SecurityProfile (None: Docker's defaults)
        self.read_only = read_only      # --read-only, OCI root.readonly: the root read-only
        # A new user namespace's [[container id, host id, how many]] (--userns or
        # config.json's linux.uidMappings/gidMappings); a joined one has its own.
        self.uid_mappings = [list(m) for m in uid_mappings]
        self.gid_mappings = [list(m) for m in gid_mappings]
        self.rlimits = [list(r) for r in rlimits]  # [RLIMIT_NAME, soft, hard]
        self.oom_score_adj = oom_score_adj
        self.hooks = dict(hooks or {})  # OCI hooks, by stage
        self.annotations = dict(annotations or {})
        self.bundle = bundle            # OCI: the bundle directory; None for `minibox run`
        # --network, a NetworkMode: what the runtime sets up on the host side. None (an OCI
        # bundle) means none at all: `namespaces` says it all, and a new network namespace
        # has only lo, as with runc, which makes no bridges either.
        self.network = network
        self.ip = ip                    # --ip: a chosen address on the bridge
        self.publish = list(publish)    # -p: PortMappings

    @property
    def userns(self):
        """The init enters a user namespace, last of all (namespaces.enter_user_namespace)."""
        return "user" in self.namespaces

    def to_json(self):
        """A JSON-ready dict (what `inspect` shows and spec.json holds)."""
        fields = dict(vars(self))
        for name in ("mounts", "volumes"):
            fields[name] = [vars(item) for item in fields[name]]
        fields["restart"] = vars(self.restart)
        fields["limits"] = vars(self.limits)
        fields["network"] = self.network and vars(self.network)
        fields["publish"] = [vars(mapping) for mapping in self.publish]
        if self.security is not None:
            fields["security"] = dict(vars(self.security),
                                      capabilities=sorted(self.security.capabilities))
        return fields

    def dumps(self):
        """spec.json's text, which the runtime writes atomically (shared.replace_file):
        `inspect` or `exec` may read it meanwhile."""
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def load(cls, path):
        with open(path) as saved:
            fields = json.load(saved)
        fields["mounts"] = [Mount(**m) for m in fields["mounts"]]
        fields["volumes"] = [Volume(**v) for v in fields["volumes"]]
        fields["restart"] = RestartPolicy(**fields["restart"])
        fields["limits"] = cgroup_limits.Limits(**fields["limits"])
        fields["network"] = fields["network"] and NetworkMode(**fields["network"])
        fields["publish"] = [PortMapping(**mapping) for mapping in fields["publish"]]
        if fields["security"] is not None:
            from . import security
            fields["security"] = security.SecurityProfile(**fields["security"])
        return cls(**fields)


# A name is also the container's default hostname: sethostname(2) refuses one longer than
# HOST_NAME_MAX with EINVAL. Both ways in check it.
HOST_NAME_MAX = 64


def check_hostname(hostname):
    if len(hostname.encode()) > HOST_NAME_MAX:
        raise MiniboxError(f"invalid hostname {hostname!r}: longer than {HOST_NAME_MAX} "
                           "characters (HOST_NAME_MAX, sethostname(2))")
    return hostname
