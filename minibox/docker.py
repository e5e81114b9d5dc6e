"""`minibox run`'s flags -> ContainerSpec, the way `docker run` turns its flags into a
config.json for runc.

spec_from_flags is the whole translation; each parse_*/check_* below it turns one flag's text
into a value or raises MiniboxError with one line naming the flag and the value. Everything
is checked here, before a single directory, cgroup or link exists.
"""
import os
import re
import sys

from . import images, network, portproxy, rootless, state
from .cgroups import limits as cgroup_limits
from .errors import MiniboxError
from .rootfs import MASKED_PATHS, READONLY_PATHS
from .spec import (DEFAULT_MOUNTS, DEFAULT_PATH, DOCKER_NAMESPACES, HOST_NAME_MAX, ContainerSpec,
                   Mount, RestartPolicy, Volume, check_hostname)


def spec_from_flags(container_id, args, *, remove=False, detach=False, restart="no",
                    interactive=False, tty=False, name=None, hostname=None, env=(), workdir=None,
                    entrypoint=None, volume=(), rootfs=None, use_chroot=False, memory=None,
                    memory_swap=None, cpus=None, cpu_shares=None, pids_limit=None,
                    cpuset_cpus=None, blkio_weight=None, cgroup_parent=None, show_stats=False,
                    cap_add=(), cap_drop=(), privileged=False, security_opt=(), read_only=False,
                    user=None, userns=False, network_mode=None, ip=None, publish=()):
    """`minibox run [FLAGS] (IMAGE | --rootfs DIR) [CMD [ARG...]]` -> the ContainerSpec of
    container `container_id`; `args` is IMAGE CMD ARG... as typed. The image's config fills
    what the flags leave out (ENTRYPOINT + CMD, ENV, WorkingDir, User), as in Docker."""
    mode = network.parse_mode(network_mode)
    mappings = [portproxy.parse_mapping(text) for text in publish]
    network.check_options(mode, ip, mappings)
    args = list(args)
    image = None if rootfs else (args.pop(0) if args else None)
    if not rootfs and image is None:
        raise MiniboxError("no image given (usage: minibox run IMAGE [CMD [ARG...]])")
    image_id = resolve_image(image) if image else None
    config = images.run_settings(image_id) if image else {}
    args = images.command_for(config, args, entrypoint)
    if not args:
        raise MiniboxError("no command given, and the image has no default command "
                           "(usage: minibox run IMAGE CMD [ARG...])")
    if detach and (tty or interactive):
        raise MiniboxError("-d cannot be combined with -i or -t (minibox has no attach)")
    if tty and not os.isatty(sys.stdin.fileno()):
        raise MiniboxError("-t needs a terminal on stdin (the input device is not a TTY)")
    policy = parse_restart(restart)
    if remove and policy.name != "no":
        raise MiniboxError("--rm and --restart cannot be combined")
    hostname = hostname or name or container_id[:12]
    return ContainerSpec(
        command=args, image=image, image_id=image_id,
        layers=images.layers_of(image_id) if image else (),
        rootfs=check_rootfs(rootfs) if rootfs else None,
        name=check_name(name), hostname=check_hostname(hostname),
        env=docker_environment(env, hostname, tty, images.environment_of(config)),
        workdir=check_workdir(workdir) if workdir else config.get("WorkingDir") or "/",
        user=check_user(user) if user else config.get("User") or None,
        volumes=[parse_volume(v) for v in volume],
        mounts=docker_mounts(state.ContainerDir(container_id).path, privileged, read_only),
        namespaces=docker_namespaces(mode, userns),
        masked_paths=MASKED_PATHS, readonly_paths=READONLY_PATHS,
        uid_mappings=docker_id_mappings(userns), gid_mappings=docker_id_mappings(userns),
        interactive=interactive, tty=tty, remove=remove, detach=detach, restart=policy,
        use_chroot=use_chroot,
        limits=parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit, privileged,
                            cpuset_cpus, blkio_weight),
        cgroup_parent=parse_cgroup_parent(cgroup_parent), stats=show_stats,
        security=security_profile(cap_add, cap_drop, privileged, security_opt),
        privileged=privileged, read_only=read_only,
        network=mode, ip=ip, publish=mappings)


def resolve_image(name):
    """The id of the image `name` names now: the container keeps it and the image's layers
    (ContainerSpec.image_id, .layers), so that a re-tag later changes nothing it runs on.
    The busybox image is built on first use, as `docker run` pulls a missing image."""
    try:
        return images.resolve(name)
    except images.NoSuchImage:
        if images.normalize(name) != images.BUSYBOX:
            raise
    from .images import store  # the first run only: writing the store imports much more
    return store.build_busybox_image()


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
    for name in network.ETC_FILES:
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


def docker_namespaces(mode, userns=False):
    """`minibox run`'s namespaces: Docker's, but the network namespace only for a network
    of its own. --network host keeps the host's; container:ID joins that container's
    (network.open_shared_netns). --userns adds a user namespace."""
    return [kind for kind in DOCKER_NAMESPACES if kind != "network" or mode.new_netns] + \
        (["user"] if userns else [])


def docker_id_mappings(userns):
    """--userns: container ids 0-65535 are host ids 100000-165535 (namespaces.py), for
    uids and gids alike; [[container id, host id, how many]] as in config.json."""
    from .namespaces import USERNS_HOST_BASE, USERNS_SIZE
    return [[0, USERNS_HOST_BASE, USERNS_SIZE]] if userns else []


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
# container's default hostname.
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")


def check_name(name):
    if name is not None and not _CONTAINER_NAME.fullmatch(name):
        raise MiniboxError(f"invalid container name {name!r}: use up to {HOST_NAME_MAX} letters, "
                           "digits, _ . - (starting with a letter or digit)")
    return name


def check_workdir(path):
    """-w: relative to what? Docker refuses it too."""
    if not path.startswith("/"):
        raise MiniboxError(f"the working directory {path!r} is invalid: it must be an "
                           "absolute path")
    return path



def parse_limits(memory, memory_swap, cpus, cpu_shares, pids_limit, privileged=False,
                 cpuset_cpus=None, blkio_weight=None):
    """-m, --memory-swap, --cpus, --cpu-shares, --pids-limit, --cpuset-cpus, --blkio-weight
    -> Limits (cgroups/limits.py), with the default device rules unless --privileged."""
    return _one_line(cgroup_limits.parse_limits, memory, memory_swap, cpus, cpu_shares, pids_limit,
                     privileged, cpuset_cpus, blkio_weight)


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
