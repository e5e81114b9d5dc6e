"""config.json <-> ContainerSpec: `minibox create` reads an OCI bundle (load_bundle), `minibox
spec` writes runc's default config (write_default_config).

As runc's libcontainer/specconv, this is the one place that knows config.json (with
ociresources.py for linux.resources and linux.cgroupsPath): the fields minibox implements
are checked, each wrong one as one line naming it (the ConfigCheck helper);
any other field is accepted and ignored, as the runtime spec asks
(https://github.com/opencontainers/runtime-spec/blob/main/config.md).
"""
import json
import os
import re

from . import ociresources
from .errors import MiniboxError
from .rootfs import MASKED_PATHS, READONLY_PATHS, UNSUPPORTED_OPTIONS
from .spec import (DEFAULT_MOUNTS, DEFAULT_PATH, NAMESPACE_FILES, OCI_VERSION, ContainerSpec,
                   Mount, check_hostname)
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


class ConfigCheck:
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
    return from_oci_config(_read_json(path, " (`minibox spec` writes a default one)"), bundle,
                           ConfigCheck(path))


def load_process(spec, path):
    """`exec --process FILE`, as runc's: the process object an engine writes for `docker
    exec` and `podman exec` (args, env, cwd, user, terminal, capabilities, noNewPrivileges,
    rlimits) applied to the container's spec, whose seccomp filter the new process keeps.
    Returns the command."""
    check = ConfigCheck(path)
    process = _read_json(path)
    args = check.strings(process, "args")
    if not args:
        check.fail("args must name the command to run")
    uid, gid, spec.additional_gids = _oci_user(process, check)
    spec.user = f"{uid}:{gid}"
    spec.env, spec.workdir = _oci_env(process, check), _oci_cwd(process, check)
    spec.rlimits = _oci_rlimits(process, check)
    spec.tty = check.get(process, "terminal", bool, False)
    kept = spec.security
    spec.security = _oci_security(process, {}, check)
    if kept is not None:
        spec.security.seccomp, spec.security.seccomp_rules = kept.seccomp, kept.seccomp_rules
    return args


def _read_json(path, hint=""):
    """A JSON object from `path`, or one line saying what is wrong with the file."""
    try:
        with open(path) as config_file:
            text = config_file.read()
    except FileNotFoundError:
        raise MiniboxError(f"{path}: no such file{hint}") from None
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
    return config


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
    args = check.strings(process, "args", "process.")
    if not args:
        check.fail("process.args must name the command to run")
    linux = check.get(config, "linux", dict, {})
    namespaces = _oci_namespaces(linux, check)
    if namespaces["mount"] is not None:
        _check_joined_mount_namespace(config, linux, check)
    hostname = check.get(config, "hostname", str)
    if hostname:
        check_hostname(hostname)
    if hostname and "uts" not in namespaces:  # a joined one is set too, as runc and crun do
        check.fail("hostname needs a uts namespace (new or joined) in linux.namespaces")
    uid, gid, additional_gids = _oci_user(process, check)
    user = check.get(process, "user", dict, {}, "process.")
    uid_mappings, gid_mappings = _oci_id_mappings(
        linux, namespaces, {"uid": [0, uid], "gid": [0, gid] + additional_gids}, check)
    root = check.get(config, "root", dict)
    root_path = check.get(root, "path", str, None, "root.")
    if not root_path:
        check.fail("root.path is missing")
    root_path = os.path.join(bundle, root_path)
    if not os.path.isdir(root_path):
        check.fail(f"root.path {root_path} is not a directory")
    cwd = _oci_cwd(process, check)
    return ContainerSpec(
        command=args, root_path=root_path,
        read_only=check.get(root, "readonly", bool, False, "root."),
        hostname=hostname, env=_oci_env(process, check), workdir=cwd,
        # runc hands the caller's stdin through, as stdout and stderr (engine.create)
        interactive=True, tty=check.get(process, "terminal", bool, False, "process."),
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
        security=_oci_security(process, linux, check),
        limits=ociresources.limits(linux, check),
        cgroups_path=ociresources.cgroups_path(linux, check),
        hooks=_oci_hooks(config, check), uid_mappings=uid_mappings, gid_mappings=gid_mappings,
        annotations=check.get(config, "annotations", dict, {}), bundle=bundle)


def _oci_user(process, check):
    """process.user: (uid, gid, additionalGids)."""
    user = check.get(process, "user", dict, {}, "process.")
    uid = check.get(user, "uid", int, 0, "process.user.")
    gid = check.get(user, "gid", int, 0, "process.user.")
    additional_gids = check.get(user, "additionalGids", list, [], "process.user.")
    if not all(isinstance(group, int) for group in additional_gids):
        check.fail("process.user.additionalGids must be a list of numbers")
    return uid, gid, additional_gids


def _oci_cwd(process, check):
    cwd = check.get(process, "cwd", str, "/", "process.")
    if not cwd.startswith("/"):
        check.fail(f"process.cwd must be absolute, not {cwd!r}")
    return cwd


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
            check_namespace_path(kind, path)
        namespaces[kind] = path
    if "mount" not in namespaces:
        check.fail("linux.namespaces must include a mount namespace")
    if namespaces["mount"] is not None and namespaces.get("pid") is None:
        # Its /proc shows its own PID namespace: /proc/self would name no process of ours
        # (runc fails there too, "open /proc/self/mountinfo: no such file or directory").
        check.fail(f"a mount namespace joined by path ({namespaces['mount']}) needs the pid "
                   f"namespace of the same container joined too")
    return namespaces


def _check_joined_mount_namespace(config, linux, check):
    """A joined mount namespace is the container's root as it stands (init.pid1): each
    field that would mount in it, and so change the container that made it, is refused."""
    fields = {"mounts": config.get("mounts"), "root.readonly": (config.get("root") or {}).get(
        "readonly"), "linux.rootfsPropagation": linux.get("rootfsPropagation")}
    fields.update((f"linux.{name}", linux.get(name)) for name in (
        "maskedPaths", "readonlyPaths", "devices", "sysctl"))
    for name, value in fields.items():
        if value:
            check.fail(f"{name}: minibox mounts nothing in a mount namespace joined by path "
                       f"(it belongs to the container that made it): leave {name} out")


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
        unsupported = [word for word in options if word in UNSUPPORTED_OPTIONS]
        if unsupported:
            check.fail(f"mounts[{destination}]: option {unsupported[0]!r} (mount_setattr(2)) "
                       "is not supported")
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
    """process.capabilities (each of the five sets as given), noNewPrivileges, and
    linux.seccomp (_oci_seccomp)."""
    from . import security
    capabilities = check.get(process, "capabilities", dict, {}, "process.")
    held = security.held_capabilities()
    sets = {}
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        sets[kind] = []
        for name in check.strings(capabilities, kind, "process.capabilities."):
            try:
                sets[kind].append(security.capability_name(name))
            except ValueError:
                check.fail(f"unknown capability {name!r} in process.capabilities.{kind}")
            if sets[kind][-1] not in held:  # capset(2) or PR_CAPBSET_DROP would say EPERM
                check.fail(f"process.capabilities.{kind}: {name} is not in minibox's own "
                           "bounding set (CapBnd in /proc/self/status): it cannot be granted")
    extra = sorted(set(sets["effective"]) - set(sets["permitted"]))
    if extra:  # capset(2): EPERM for an effective capability that is not permitted
        check.fail(f"process.capabilities.effective: {', '.join(extra)} not in permitted")
    return security.SecurityProfile(
        sets.pop("bounding"),
        no_new_privileges=check.get(process, "noNewPrivileges", bool, False, "process."),
        seccomp=False, seccomp_rules=_oci_seccomp(linux, check), capability_sets=sets)


def _oci_seccomp(linux, check):
    """linux.seccomp as a seccomp.Profile (None without one: no filter, as with runc)."""
    from . import seccomp
    return seccomp.from_config(check.get(linux, "seccomp", dict, None, "linux."), check)


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
    """What `minibox spec` writes: `runc spec`'s config, but without a terminal (one
    needs --console-socket) -- so `minibox create` takes it as it is."""
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
