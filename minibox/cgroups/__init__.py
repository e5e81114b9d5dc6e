"""cgroups(7): limit and account what a container's processes may use.

Namespaces decide what a process can *see*; cgroups decide how much it can *use*: memory
(the kernel OOM-kills inside the cgroup when it is over its limit), CPU time (CFS bandwidth:
a quota per period), the number of processes (a fork bomb gets EAGAIN from fork(2)), and a
freezer; and the CPUs, memory nodes, block I/O and huge pages it may use. Two very different
kernel interfaces do this:

- v1 (v1.py): one hierarchy per controller, /sys/fs/cgroup/<controller>/...; still the only
  one usable on a "hybrid" host (v1 controllers + an empty cgroup2).
- v2 (v2.py): one unified hierarchy; the default on current distros.

The runtime only talks to the small interface in base.Cgroup; cgroup_for() picks the backend.
"""
import os

from minibox import rootless, state
from minibox.cgroups import grace
from minibox.cgroups.base import (Cgroup, CgroupError, NoCgroup, Stats, remove_cgroup_dirs,
                                  remove_orphans)
from minibox.cgroups.limits import (Limits, format_size, parse_cgroup_parent, parse_cgroups_path,
                                    parse_limits, parse_size)
from minibox.cgroups.mounts import cgroup_directories
from minibox.errors import MiniboxError

__all__ = [
    "Cgroup", "CgroupError", "Limits", "Stats", "cgroup_at", "cgroup_directories", "cgroup_for",
    "cgroup_version", "format_size",
    "parse_cgroup_parent", "parse_cgroups_path", "parse_limits", "parse_size", "remove_cgroup_dirs", "remove_orphans",
    "start_grace_period",
]

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_version(root: str = CGROUP_ROOT) -> int:
    """2 when `root` is a cgroup2 mount (it has cgroup.controllers), else 1 (v1 or hybrid)."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def cgroup_for(container_id: str, parent: str | None = None, path: str | None = None,
               every_hierarchy: bool = False, needs=()) -> Cgroup:
    """The container's cgroup on this host's cgroup version; nothing is created yet.

    `parent` (from --cgroup-parent, already through parse_cgroup_parent) replaces the default
    place: minibox/ at the v2 root, or minibox/ under the runtime's own v1 cgroups. `path`
    (an OCI cgroupsPath, through parse_cgroups_path) is the container's directory itself.
    `every_hierarchy` (an OCI container): on v1, a directory in every hierarchy mounted, not
    only in those minibox writes limits to, as runc makes them (v1.mounted_hierarchies);
    `needs` (Limits.controllers()): on v1, the hierarchies the limits write to beyond
    minibox's usual ones (cpuset for --cpuset-cpus). Without root (rootless.py): none at all.
    """
    if rootless.ENABLED:
        return NoCgroup()
    if cgroup_version() == 2:
        from minibox.cgroups.v2 import V2Cgroup

        return V2Cgroup(container_id, parent, path=path)
    from minibox.cgroups.v1 import V1Cgroup

    return V1Cgroup(container_id, parent, path=path, every=every_hierarchy, needs=needs)


def cgroup_of(spec, container_id: str) -> Cgroup:
    """The cgroup cgroup_for() gives the container of `spec` (spec.ContainerSpec): the same
    for its runtime, the runtime that resumes its monitor, and `stats`. An OCI bundle's
    container is in every v1 hierarchy, as runc puts it: engines and their tools look for
    it in blkio, cpuset or name=systemd too."""
    return cgroup_for(container_id, spec.cgroup_parent, spec.cgroups_path,
                      every_hierarchy=spec.bundle is not None,
                      needs=spec.limits.controllers())


def cgroup_at(paths: list[str]) -> Cgroup:
    """A container's cgroup where its ledger says it was made. Not cgroup_for(): on v1 that
    is below the *caller's* own cgroups, and the engine process that pauses or updates a
    container (podman) may sit elsewhere than the one that created it (conmon)."""
    if cgroup_version() == 2:
        from minibox.cgroups.v2 import V2Cgroup

        return V2Cgroup.at(paths[0])
    from minibox.cgroups.v1 import V1Cgroup

    return V1Cgroup.at(paths)


def start_grace_period() -> None:
    """Start paying, in a thread, the RCU grace period that moving the container's init
    into its cgroup would wait for (grace.py), unless it runs already; Cgroup.add() ends
    it. Not without root."""
    if rootless.ENABLED or grace.running():
        return
    if cgroup_version() == 2:
        from minibox.cgroups.v2 import own_procs
    else:
        from minibox.cgroups.v1 import own_procs
    procs = own_procs()
    if procs is not None:
        grace.start(procs)


def _release_cgroup(entry):
    """Undo the ledger's "cgroup" entry (state.py): the container's directories, and the
    groups made for it if it was their last container."""
    try:
        remove_cgroup_dirs(entry["paths"], groups=entry.get("groups", ()))
    except CgroupError as error:
        raise MiniboxError(str(error)) from None


state.RELEASE["cgroup"] = _release_cgroup
