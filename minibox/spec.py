"""ContainerSpec: everything needed to run one container, validated before anything is made.

Two ways in, one spec out -- the way Docker turns `docker run` flags into an OCI config.json
and hands it to runc:

- `minibox run` builds a spec from flags (each parse_* function turns one flag's text into a
  value or raises MiniboxError with one line saying what is wrong);
- `minibox create` reads a bundle's config.json (load_bundle, the OCI runtime spec:
  https://github.com/opencontainers/runtime-spec/blob/main/config.md).

Either way the runtime only ever sees a ContainerSpec. A copy is saved in the container's
directory at create time (save/load), so editing config.json afterwards changes nothing.
"""
import json
import os
import re

from . import rootless, shared
from .cgroups import limits as cgroup_limits
from .cgroups.devices import container_rules, rule as device_rule
from .errors import MiniboxError
from .network import ETC_FILES, NetworkMode
from .portproxy import PortMapping
from .rootfs import MASKED_PATHS, READONLY_PATHS

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_VERSION = "1.0.2"

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


def docker_mounts(container_dir, privileged=False, read_only=False):
    """`minibox run`'s mounts. /dev is nodev unless --privileged: no device node the
    container makes itself can be opened (rootfs.make_default_devices binds the few it
    needs); --read-only adds a writable tmpfs /tmp.

    /etc/hosts and /etc/hostname are bind mounts of files the runtime writes into the
    container's directory once it knows the address (network.write_etc_files), as Docker's
    are: files in the writable layer would be packed by `minibox commit`, baking one
    container's address into an image (and so `rm /etc/hosts` fails with EBUSY inside)."""
    mounts = [Mount(m.destination, m.type, m.source, _run_mount_options(m, privileged))
              for m in DEFAULT_MOUNTS]
    if read_only:
        mounts.append(Mount("/tmp", "tmpfs", "tmpfs",
                            ["nosuid", "nodev", "mode=1777", "size=65536k"]))
    for name in ETC_FILES:
        mounts.append(Mount(f"/etc/{name}", "bind", os.path.join(container_dir, name),
                            ["rbind", "rw"] + ([] if privileged else ["nodev"])))
    return mounts


def _run_mount_options(mount, privileged):
    options = list(mount.options)
    if mount.destination == "/dev" and not privileged:
        options.append("nodev")
    if mount.type == "devpts" and rootless.ENABLED:
        # Group tty (5) is not mapped in a rootless container's user namespace, and devpts
        # refuses to give its terminals an unmapped group (EINVAL). `runc spec --rootless`
        # drops it too: terminals then belong to the caller's group.
        options.remove("gid=5")
    return options


def docker_namespaces(network, userns=False):
    """`minibox run`'s namespaces: Docker's, but the network namespace only for a network
    of its own. --network host keeps the host's; container:ID joins that container's
    (network.open_shared_netns). --userns adds a user namespace."""
    return [kind for kind in DOCKER_NAMESPACES if kind != "network" or network.new_netns] + \
        (["user"] if userns else [])


def docker_id_mappings(userns):
    """--userns: container ids 0-65535 are host ids 100000-165535 (namespaces.py), for
    uids and gids alike; [[container id, host id, how many]] as in config.json."""
    from .namespaces import USERNS_HOST_BASE, USERNS_SIZE
    return [[0, USERNS_HOST_BASE, USERNS_SIZE]] if userns else []


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


class ContainerSpec:
    """What to run and how: from `minibox run`'s flags or from an OCI config.json.
    (A plain class: dataclasses would import inspect, ~10 ms of every container start.)"""

    def __init__(self, command, image=None, rootfs=None, name=None, hostname=None, env=None,
                 workdir="/", volumes=(), interactive=False, tty=False, remove=False,
                 use_chroot=False, user=None, limits=None, cgroup_parent=None, stats=False,
                 security=None, privileged=False, read_only=False, detach=False,
                 restart=None, root_path=None, mounts=DEFAULT_MOUNTS,
                 namespaces=DOCKER_NAMESPACES, masked_paths=MASKED_PATHS,
                 readonly_paths=READONLY_PATHS, rootfs_propagation=None, sysctl=None,
                 devices=(), additional_gids=(), umask=None, rlimits=(), oom_score_adj=None,
                 hooks=None, annotations=None, bundle=None, network=None, ip=None, publish=(),
                 uid_mappings=(), gid_mappings=()):
        self.command = list(command)
        self.image = image              # a name from the image store, or None with rootfs
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

    def save(self, path):
        """Atomically (shared.replace_file): `inspect` or `exec` may read it meanwhile."""
        shared.replace_file(path, json.dumps(self.to_json(), indent=1))

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


def docker_environment(items, hostname, tty, image_env=None, host_env=os.environ):
    """The command's environment for `minibox run`: Docker's defaults, then the image's
    ENV, then -e values."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root"}
    if tty:
        env["TERM"] = "xterm"
    env.update(image_env or {})
    env.update(parse_env(items, host_env))
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
    container = os.path.normpath(container)
    if container == "/":
        raise MiniboxError(f"invalid volume {text!r}: the container path cannot be /")
    # runc refuses to mount over /proc (CVE-2019-16884, CVE-2019-19921: a bind over procfs
    # files fooled the AppArmor and seccomp set-up that writes to them).
    if container == "/proc" or container.startswith("/proc/"):
        raise MiniboxError(f"invalid volume {text!r}: cannot mount over {container} "
                           "(inside /proc)")
    host = os.path.abspath(host)
    if not os.path.exists(host):
        raise MiniboxError(f"invalid volume {text!r}: {host} does not exist on the host")
    return Volume(host, container, mode == "ro")


def parse_restart(text):
    """--restart no | always | on-failure[:N]"""
    name, _, count = text.partition(":")
    if name in ("no", "always") and not count:
        return RestartPolicy(name)
    if name == "on-failure" and (not count or count.isdigit()):
        return RestartPolicy(name, int(count or 0))
    raise MiniboxError(f"invalid restart policy {text!r}: use no, always or on-failure[:N]")


def check_rootfs(path):
    if not os.path.exists(path):
        raise MiniboxError(f"--rootfs {path}: no such directory")
    if not os.path.isdir(path):
        raise MiniboxError(f"--rootfs {path}: not a directory")
    return os.path.abspath(path)


# Docker's rule for names; at most HOST_NAME_MAX characters, since a name is also the
# container's default hostname (sethostname(2) refuses longer ones with EINVAL).
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
HOST_NAME_MAX = 64


def check_name(name):
    if name is not None and not _CONTAINER_NAME.fullmatch(name):
        raise MiniboxError(f"invalid container name {name!r}: use up to {HOST_NAME_MAX} letters, "
                           "digits, _ . - (starting with a letter or digit)")
    return name


def check_hostname(hostname):
    if len(hostname.encode()) > HOST_NAME_MAX:
        raise MiniboxError(f"invalid hostname {hostname!r}: longer than {HOST_NAME_MAX} "
                           "characters (HOST_NAME_MAX, sethostname(2))")
    return hostname


def check_workdir(path):
    """-w: relative to what? Docker refuses it too."""
    if not path.startswith("/"):
        raise MiniboxError(f"the working directory {path!r} is invalid: it must be an "
                           "absolute path")
    return path


# -- OCI config.json -------------------------------------------------------------------------

# sysctls the kernel keeps per namespace (runc's validator): setting any other one from a
# container would change the host. Each maps to the namespace that must be the container's.
_NAMESPACED_SYSCTLS = {"kernel.msgmax": "ipc", "kernel.msgmnb": "ipc", "kernel.msgmni": "ipc",
                       "kernel.sem": "ipc", "kernel.shmall": "ipc", "kernel.shmmax": "ipc",
                       "kernel.shmmni": "ipc", "kernel.shm_rmid_forced": "ipc",
                       "kernel.hostname": "uts", "kernel.domainname": "uts"}
_NAMESPACED_SYSCTL_PREFIXES = {"fs.mqueue.": "ipc", "net.": "network"}
_HOOK_STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                "poststop")
_CONTAINER_ID = re.compile(r"^[\w+.-]+$")


class _Config:
    """Typed access to config.json: each wrong field is one clear line naming it."""

    def __init__(self, path):
        self.path = path

    def fail(self, message):
        raise MiniboxError(f"{self.path}: {message}")

    def get(self, obj, key, kind, default=None, where=""):
        value = obj.get(key, default) if isinstance(obj, dict) else default
        if value is not default and not isinstance(value, kind):
            self.fail(f"{where}{key} must be a {kind.__name__}, not {type(value).__name__}")
        return value

    def strings(self, obj, key, where=""):
        values = self.get(obj, key, list, [], where)
        if not all(isinstance(value, str) for value in values):
            self.fail(f"{where}{key} must be a list of strings")
        for index, value in enumerate(values):
            if "\0" in value:  # execve(2) and mount(2) take C strings: it would end there
                self.fail(f"{where}{key}[{index}] holds a NUL byte")
        return values


def load_bundle(bundle):
    """The bundle's config.json as a ContainerSpec, or one line saying what is wrong."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as config_file:
            text = config_file.read()
    except FileNotFoundError:
        raise MiniboxError(f"{path}: no such file (`minibox spec` writes a default one)") from None
    except OSError as error:
        raise MiniboxError(f"{path}: {error.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise MiniboxError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: "
                           f"{error.msg}") from None
    except RecursionError:  # the json module recurses once per level of [ or {
        raise MiniboxError(f"{path}: JSON nested too deeply") from None
    if not isinstance(config, dict):
        raise MiniboxError(f"{path}: must hold a JSON object")
    return from_oci_config(config, bundle, _Config(path))


def from_oci_config(config, bundle, check):
    """Validate the fields minibox implements; accept (and ignore) any other field."""
    version = config.get("ociVersion")
    if not isinstance(version, str) or not re.fullmatch(r"1\.\d+\.\d+(-[\w.]+)?(\+[\w.]+)?",
                                                        version):
        check.fail(f"unsupported ociVersion {version!r} (minibox implements 1.x, e.g. "
                   f"{OCI_VERSION!r})")
    process = check.get(config, "process", dict)
    if process is None:
        check.fail("process is missing")
    if check.get(process, "terminal", bool, False, "process."):
        check.fail("process.terminal true needs a console socket, which minibox create does "
                   "not offer: set it to false")
    args = check.strings(process, "args", "process.")
    if not args:
        check.fail("process.args must name the command to run")
    linux = check.get(config, "linux", dict, {})
    namespaces = _oci_namespaces(linux, check)
    hostname = check.get(config, "hostname", str)
    if hostname:
        check_hostname(hostname)
    if hostname and namespaces.get("uts", "host") is not None:
        check.fail("hostname needs a new uts namespace in linux.namespaces")
    user = check.get(process, "user", dict, {}, "process.")
    uid = check.get(user, "uid", int, 0, "process.user.")
    gid = check.get(user, "gid", int, 0, "process.user.")
    additional_gids = check.get(user, "additionalGids", list, [], "process.user.")
    if not all(isinstance(group, int) for group in additional_gids):
        check.fail("process.user.additionalGids must be a list of numbers")
    uid_mappings, gid_mappings = _oci_id_mappings(
        linux, namespaces, {"uid": [0, uid], "gid": [0, gid] + additional_gids}, check)
    root = check.get(config, "root", dict)
    root_path = check.get(root, "path", str, None, "root.")
    if not root_path:
        check.fail("root.path is missing")
    root_path = os.path.join(bundle, root_path)
    if not os.path.isdir(root_path):
        check.fail(f"root.path {root_path} is not a directory")
    cwd = check.get(process, "cwd", str, "/", "process.")
    if not cwd.startswith("/"):
        check.fail(f"process.cwd must be absolute, not {cwd!r}")
    return ContainerSpec(
        command=args, root_path=root_path,
        read_only=check.get(root, "readonly", bool, False, "root."),
        hostname=hostname, env=_oci_env(process, check), workdir=cwd,
        mounts=_oci_mounts(config, bundle, check), namespaces=namespaces,
        masked_paths=check.strings(linux, "maskedPaths", "linux."),
        readonly_paths=check.strings(linux, "readonlyPaths", "linux."),
        rootfs_propagation=_oci_propagation(linux, check),
        sysctl=_oci_sysctl(linux, namespaces, check),
        devices=_oci_devices(linux, check),
        user=f"{uid}:{gid}", additional_gids=additional_gids,
        umask=check.get(user, "umask", int, None, "process.user."),
        rlimits=_oci_rlimits(process, check),
        oom_score_adj=check.get(process, "oomScoreAdj", int, None, "process."),
        security=_oci_security(process, linux, check), limits=_oci_limits(linux, check),
        hooks=_oci_hooks(config, check), uid_mappings=uid_mappings, gid_mappings=gid_mappings,
        annotations=check.get(config, "annotations", dict, {}), bundle=bundle)


def _oci_env(process, check):
    env = {}
    for item in check.strings(process, "env", "process."):
        key, has_value, value = item.partition("=")
        if not key or not has_value:
            check.fail(f"process.env entry {item!r} is not KEY=VALUE")
        env[key] = value
    return env


def _oci_namespaces(linux, check):
    from .namespaces import check_namespace_path
    namespaces = {}
    for entry in check.get(linux, "namespaces", list, [], "linux."):
        kind = check.get(entry, "type", str, None, "linux.namespaces[].")
        if kind not in NAMESPACE_FILES:
            check.fail(f"unknown namespace type {kind!r} (known: {', '.join(NAMESPACE_FILES)})")
        if kind in namespaces:
            check.fail(f"namespace {kind} is listed twice")
        path = check.get(entry, "path", str, None, "linux.namespaces[].") or None
        if path is not None:
            if kind == "mount":
                check.fail("joining an existing mount namespace is not supported: the root "
                           "filesystem is built in a new one")
            check_namespace_path(kind, path)
        namespaces[kind] = path
    if "mount" not in namespaces:
        check.fail("linux.namespaces must include a mount namespace")
    return namespaces


def _oci_id_mappings(linux, namespaces, wanted, check):
    """linux.uidMappings and gidMappings as [[container id, host id, how many]]. A new user
    namespace must map the `wanted` ids: 0 (the init becomes root of the namespace before it
    switches to process.user) and process.user's."""
    mappings = {}
    for kind in ("uid", "gid"):
        key = f"{kind}Mappings"
        mappings[kind] = []
        for entry in check.get(linux, key, list, [], "linux."):
            ids = [check.get(entry, field, int, None, f"linux.{key}[].")
                   for field in ("containerID", "hostID", "size")]
            if None in ids or min(ids) < 0 or ids[2] == 0:
                check.fail(f"linux.{key}: each entry needs containerID, hostID and a "
                           "positive size")
            mappings[kind].append(ids)
    if "user" not in namespaces:
        if mappings["uid"] or mappings["gid"]:
            check.fail("linux.uidMappings/gidMappings need a user namespace in "
                       "linux.namespaces")
    elif namespaces["user"] is not None:
        if mappings["uid"] or mappings["gid"]:
            check.fail("a user namespace joined by path has its own mappings: leave out "
                       "linux.uidMappings/gidMappings")
    else:
        for kind, ids in wanted.items():
            for wanted_id in ids:
                if not any(inside <= wanted_id < inside + size
                           for inside, _, size in mappings[kind]):
                    check.fail(f"linux.{kind}Mappings maps no container {kind} {wanted_id}: "
                               f"a new user namespace must map {kind} 0 and process.user's")
    return mappings["uid"], mappings["gid"]


def _oci_mounts(config, bundle, check):
    mounts = []
    for entry in check.get(config, "mounts", list, []):
        destination = check.get(entry, "destination", str, None, "mounts[].")
        if not destination or not destination.startswith("/"):
            check.fail(f"mount destination {destination!r} must be an absolute path")
        options = check.strings(entry, "options", f"mounts[{destination}].")
        kind = check.get(entry, "type", str, None, f"mounts[{destination}].")
        source = check.get(entry, "source", str, None, f"mounts[{destination}].")
        if "bind" in options or "rbind" in options or kind == "bind":
            if not source:
                check.fail(f"bind mount {destination} has no source")
            source = os.path.join(bundle, source)
            if "bind" not in options and "rbind" not in options:
                options = ["rbind"] + options
        elif not kind:  # mount(2) would answer ENODEV, naming nothing
            check.fail(f"mounts[{len(mounts)}] ({destination}): no type, and no bind option")
        mounts.append(Mount(destination, kind, source, options))
    return mounts


def _oci_propagation(linux, check):
    from .rootfs import PROPAGATION
    propagation = check.get(linux, "rootfsPropagation", str, None, "linux.")
    if propagation is not None and propagation not in PROPAGATION:
        check.fail(f"unknown linux.rootfsPropagation {propagation!r} "
                   f"(one of {', '.join(PROPAGATION)})")
    return propagation


def _oci_sysctl(linux, namespaces, check):
    sysctl = check.get(linux, "sysctl", dict, {}, "linux.")
    for key in sysctl:
        owner = _NAMESPACED_SYSCTLS.get(key) or next(
            (kind for prefix, kind in _NAMESPACED_SYSCTL_PREFIXES.items()
             if key.startswith(prefix)), None)
        if owner is None:
            check.fail(f"sysctl {key!r} is not in a separate kernel namespace: setting it "
                       "would change the host")
        if namespaces.get(owner, "host") is not None:
            check.fail(f"sysctl {key!r} needs a new {owner} namespace")
    return {key: str(value) for key, value in sysctl.items()}


def _oci_devices(linux, check):
    devices = check.get(linux, "devices", list, [], "linux.")
    for device in devices:
        path = check.get(device, "path", str, None, "linux.devices[].")
        if not path or not path.startswith("/dev/"):
            check.fail(f"device path {path!r} must be under /dev/")
        if check.get(device, "type", str, None, "linux.devices[].") not in ("c", "b", "u", "p"):
            check.fail(f"device {path}: type must be c, b, u or p")
    return devices


def _oci_rlimits(process, check):
    import resource
    rlimits = []
    for entry in check.get(process, "rlimits", list, [], "process."):
        name = check.get(entry, "type", str, None, "process.rlimits[].")
        if not name or not name.startswith("RLIMIT_") or not hasattr(resource, name):
            check.fail(f"unknown rlimit {name!r} (see getrlimit(2): RLIMIT_NOFILE, ...)")
        soft = check.get(entry, "soft", int, None, f"process.rlimits[{name}].")
        hard = check.get(entry, "hard", int, None, f"process.rlimits[{name}].")
        if soft is None or hard is None or soft > hard:
            check.fail(f"rlimit {name} needs soft <= hard")
        rlimits.append([name, soft, hard])
    return rlimits


def _oci_security(process, linux, check):
    """process.capabilities (the bounding set: minibox gives every set the same names),
    noNewPrivileges, and linux.seccomp (_oci_seccomp)."""
    from . import security
    capabilities = check.get(process, "capabilities", dict, {}, "process.")
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        for name in check.strings(capabilities, kind, "process.capabilities."):
            try:
                security.capability_name(name)
            except ValueError:
                check.fail(f"unknown capability {name!r} in process.capabilities.{kind}")
    keep = {security.capability_name(n) for n in check.strings(capabilities, "bounding")}
    return security.SecurityProfile(
        keep, no_new_privileges=check.get(process, "noNewPrivileges", bool, False, "process."),
        seccomp=False, seccomp_rules=_oci_seccomp(linux, check))


def _oci_seccomp(linux, check):
    """linux.seccomp as a seccomp.Profile (None without one: no filter, as with runc)."""
    from . import seccomp
    return seccomp.from_config(check.get(linux, "seccomp", dict, None, "linux."), check)


def _oci_limits(linux, check):
    """linux.resources (memory, cpu, pids, devices) as the cgroup module's Limits."""
    resources = check.get(linux, "resources", dict, {}, "linux.")
    memory = check.get(resources, "memory", dict, {}, "linux.resources.")
    cpu = check.get(resources, "cpu", dict, {}, "linux.resources.")
    pids = check.get(resources, "pids", dict, {}, "linux.resources.")
    quota = check.get(cpu, "quota", int, None, "linux.resources.cpu.")
    period = check.get(cpu, "period", int, 100000, "linux.resources.cpu.")
    limits = cgroup_limits.Limits(
        memory=check.get(memory, "limit", int, None, "linux.resources.memory."),
        memory_swap=check.get(memory, "swap", int, None, "linux.resources.memory."),
        cpus=quota / period if quota and quota > 0 and period > 0 else None,
        cpu_shares=check.get(cpu, "shares", int, None, "linux.resources.cpu."),
        pids=check.get(pids, "limit", int, None, "linux.resources.pids."))
    for name, value in vars(limits).items():
        if value is not None and value != -1 and value <= 0:
            check.fail(f"linux.resources: {name} must be positive")
    limits.devices = container_rules(_oci_device_rules(resources, check))
    return limits


def _oci_device_rules(resources, check):
    """linux.resources.devices: [{"allow": true, "type": "c", "major": 1, "minor": 3,
    "access": "rwm"}]; type a (all) unless given, a missing major or minor is any."""
    rules = []
    where = "linux.resources.devices[]."
    for entry in check.get(resources, "devices", list, [], "linux.resources."):
        allow = check.get(entry, "allow", bool, None, where)
        kind = check.get(entry, "type", str, "a", where)
        access = check.get(entry, "access", str, "rwm", where)
        if allow is None:
            check.fail("linux.resources.devices[]: allow (true or false) is required")
        if kind not in ("a", "b", "c"):
            check.fail(f"linux.resources.devices[]: type must be a, b or c, not {kind!r}")
        if not access or set(access) - set("rwm"):
            check.fail(f"linux.resources.devices[]: access must be letters of rwm, not {access!r}")
        rules.append(device_rule(allow, kind, check.get(entry, "major", int, None, where),
                                 check.get(entry, "minor", int, None, where), access))
    return rules


def _oci_hooks(config, check):
    hooks = check.get(config, "hooks", dict, {})
    for stage, entries in hooks.items():
        if stage not in _HOOK_STAGES:
            continue  # an unknown stage of a later spec version: accepted, not run
        for hook in check.get(hooks, stage, list, [], "hooks."):
            path = check.get(hook, "path", str, None, f"hooks.{stage}[].")
            if not path or not path.startswith("/"):
                check.fail(f"hooks.{stage}: path {path!r} must be absolute")
            timeout = check.get(hook, "timeout", int, None, f"hooks.{stage}[].")
            if timeout is not None and timeout <= 0:
                check.fail(f"hooks.{stage}: timeout must be positive")
    return {stage: entries for stage, entries in hooks.items() if stage in _HOOK_STAGES}


def check_container_id(container_id):
    """OCI ids are chosen by the caller: letters, digits and _ + - . (as runc allows), and
    the id names a directory: NAME_MAX (255) at most, never . or .. ."""
    if not _CONTAINER_ID.match(container_id) or len(container_id) > 255 \
            or container_id in ("names", ".", ".."):
        raise MiniboxError(f"invalid container id {container_id!r}: use up to 255 letters, "
                           "digits, _ + - .")
    return container_id


def default_config():
    """What `minibox spec` writes: `runc spec`'s config, but without a terminal (minibox
    create has no console socket) -- so `minibox create` takes it as it is."""
    capabilities = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": OCI_VERSION,
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"], "cwd": "/",
                    "capabilities": {kind: capabilities for kind in
                                     ("bounding", "effective", "permitted", "ambient")},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "minibox",
        "mounts": [vars(m) for m in DEFAULT_MOUNTS] + [
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                  "maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS)},
    }


def write_default_config(bundle):
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise MiniboxError(f"{path} exists: remove it first")
    with open(path, "w") as out:
        json.dump(default_config(), out, indent=2)
        out.write("\n")


def parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit, privileged=False):
    """-m, --memory-swap, --cpus, --cpu-shares, --pids-limit -> Limits (cgroups/limits.py),
    with the default device rules unless --privileged."""
    return _one_line(cgroup_limits.parse_limits, memory, memory_swap, cpus, cpu_shares, pids_limit,
                     privileged)


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
    for part in (user, group):
        # (uid_t)-1 = 4294967295 means "no change" to setresuid(2): the last valid id is one less.
        if part.isdigit() and int(part) >= 2 ** 32 - 1:
            raise MiniboxError(f"invalid --user {text!r}: {part} is not a valid id "
                               "(0 to 4294967294)")
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
