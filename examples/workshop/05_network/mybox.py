"""mybox: a container runtime in one file, written level by level in the workshop.

    sudo python3 mybox.py run [options] -- COMMAND [ARG...]     # levels 00-07
    sudo python3 mybox.py vm --kernel VMLINUX -- COMMAND        # level 08
    sudo python3 mybox.py kvm                                   # level 09

Every level adds one kernel interface (examples/workshop/NN_name/README.md). Every level's
file is made from one reference, examples/workshop/solutions/mybox.py: there level NN's
solution sits between `# >>> NN` and `# <<< NN`, its TODOs in `#~` lines after `# --- NN`,
and levels.py writes level NN's starting file or its solution from it.
"""
import argparse
import ctypes
import os
import sys
import shutil
import tempfile

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWPID = 0x00020000, 0x04000000, 0x20000000
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 0x40000, 2


def check(result, what):
    """Raise OSError with errno's message when a libc call returned -1."""
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


def enter_root(root):
    """Make `root` the container's / with pivot_root(2) and forget the host's tree."""
    # pivot_root fails with EINVAL while / is a shared mount (mount_namespaces(7)): our
    # mounts would propagate back to the host. Make every mount private first.
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # new_root must be a mount point, or pivot_root fails with EBUSY: bind it onto itself.
    check(libc.mount(root.encode(), root.encode(), None, MS_BIND | MS_REC, None), "bind root")
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root on top of the new one (pivot_root(2) NOTES);
    # detaching it leaves nothing of the host reachable, unlike chroot(2).
    check(libc.syscall(155, b".", b"."), "pivot_root")  # 155: pivot_root on x86_64
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    check(libc.mount(b"proc", b"/proc", b"proc", 0, None), "mount /proc")


def mount_overlay(layers, scratch):
    """Stack a writable directory on read-only layers (overlayfs) and return the merged dir."""
    for name in ("upper", "work", "merged"):
        os.mkdir(os.path.join(scratch, name))
    merged = os.path.join(scratch, "merged")
    # lowerdir lists the layers top first; writes go to upperdir, copied up from below.
    options = f"lowerdir={layers},upperdir={scratch}/upper,workdir={scratch}/work"
    check(libc.mount(b"overlay", merged.encode(), b"overlay", 0, options.encode()), "overlay")
    return merged


def make_cgroup(name, memory, pids):
    """Create the container's cgroup with its limits; return its directories (cgroups(7))."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # v2: one tree
        directory = f"/sys/fs/cgroup/{name}"
        os.mkdir(directory)
        dirs = [directory]
        limits = [(directory, "memory.max", memory), (directory, "memory.swap.max", 0),
                  (directory, "pids.max", pids)]
    else:  # v1: one tree per controller; without memsw the hog would swap, not die
        dirs = [f"/sys/fs/cgroup/memory/{name}", f"/sys/fs/cgroup/pids/{name}"]
        for directory in dirs:
            os.mkdir(directory)
        limits = [(dirs[0], "memory.limit_in_bytes", memory),
                  (dirs[0], "memory.memsw.limit_in_bytes", memory), (dirs[1], "pids.max", pids)]
    for directory, name, value in limits:
        if value is not None and os.path.exists(f"{directory}/{name}"):
            with open(f"{directory}/{name}", "w") as limit:
                limit.write(str(value))
    return dirs


def join_cgroup(dirs, pid):
    for directory in dirs:
        with open(f"{directory}/cgroup.procs", "w") as procs:
            procs.write(str(pid))


def connect(pid, name):
    """Host side: a veth pair, one end on the bridge, the other in the container's netns."""
    # TODO 05: with pyroute2's IPRoute: make bridge BRIDGE (BRIDGE_ADDRESS/24, up) unless
    # it exists (EEXIST: another mybox may be making it right now); add veth NAMEh with peer
    # NAMEc in pid's netns (net_ns_pid); NAMEh on the bridge.


def configure_network(address, name):
    """Container side (in its netns): lo up, the veth end renamed eth0 with its address."""
    # TODO 05: lo up; NAMEc renamed eth0, up, with address (e.g. 10.231.0.2/24).




def child(args):
    """The container's first process: isolate, then become the command (execve(2))."""
    os.read(args.go, 1)  # wait until the parent has put us in the cgroup (and the network)
    check(libc.unshare(CLONE_NEWUTS | CLONE_NEWNS), "unshare")
    name = args.hostname.encode()
    check(libc.sethostname(name, len(name)), "sethostname")
    root = args.root
    if ":" in root:  # read-only layers, top first: an overlay on them is the container's root
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        root = mount_overlay(root, args.scratch)
    enter_root(root)
    os.execvp(args.command[0], args.command)


def run(args):
    """Start the container, wait for it, return its exit code (128+N for signal N)."""
    args.go, go_write = os.pipe()
    name = f"mybox-{os.getpid()}"
    dirs = make_cgroup(name, args.memory, args.pids)
    args.scratch = tempfile.mkdtemp(prefix="mybox-")
    check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")  # our next child is PID 1
    pid = os.fork()
    if pid == 0:
        try:
            child(args)
        except OSError as error:
            print(f"mybox: {error}", file=sys.stderr)
        os._exit(127)
    join_cgroup(dirs, pid)
    os.write(go_write, b"g")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    shutil.rmtree(args.scratch)
    for directory in dirs:
        os.rmdir(directory)
    return code if code >= 0 else 128 - code






def main():
    parser = argparse.ArgumentParser(prog="mybox.py")
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run COMMAND in a container")
    run_parser.add_argument("--hostname", default="mybox")
    run_parser.add_argument("--root", required=True, help="the root filesystem (03: LAYER:LAYER)")
    run_parser.add_argument("--memory", type=int, help="memory limit in bytes")
    run_parser.add_argument("--pids", type=int, help="how many processes at most")
    run_parser.add_argument("command", nargs="+")
    actions = {"run": run}
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mybox.py: must be run as root (try sudo)")
    sys.exit(actions[args.action](args))


if __name__ == "__main__":
    main()
