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
import struct

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWPID = 0x00020000, 0x04000000, 0x20000000
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 0x40000, 2
CLONE_NEWNET = 0x40000000
BRIDGE, BRIDGE_ADDRESS = "myboxbr0", "10.231.0.1"


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
    from pyroute2 import IPRoute, NetlinkError
    with IPRoute() as ip:
        try:
            ip.link("add", ifname=BRIDGE, kind="bridge")
            bridge = ip.link_lookup(ifname=BRIDGE)[0]
            ip.addr("add", index=bridge, address=BRIDGE_ADDRESS, prefixlen=24)
            ip.link("set", index=bridge, state="up")
        except NetlinkError as error:  # EEXIST: made before, or by a mybox starting with us
            if error.code != 17:  # (looking first and then adding would race with that one)
                raise
        ip.link("add", ifname=f"{name}h", kind="veth",
                peer={"ifname": f"{name}c", "net_ns_pid": pid})
        host_end = ip.link_lookup(ifname=f"{name}h")[0]
        ip.link("set", index=host_end, master=ip.link_lookup(ifname=BRIDGE)[0], state="up")


def configure_network(address, name):
    """Container side (in its netns): lo up, the veth end renamed eth0 with its address."""
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        eth0 = ip.link_lookup(ifname=f"{name}c")[0]
        ip.link("set", index=eth0, ifname="eth0", state="up")
        host, prefix = address.split("/")
        ip.addr("add", index=eth0, address=host, prefixlen=int(prefix))


# Docker's default capabilities; everything else (CAP_SYS_ADMIN, CAP_SYS_MODULE...) goes.
KEEP = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}  # chown dac_override fowner fsetid
# kill setgid setuid setpcap net_bind_service net_raw sys_chroot mknod audit_write setfcap
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 24, 38, 22, 2
DENIED = {165: "mount", 169: "reboot", 246: "kexec_load", 321: "bpf", 272: "unshare"}


def seccomp_filter():
    """A classic BPF program (seccomp(2)): EPERM for the DENIED syscalls, allow the rest."""
    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)
    program = [op(0x20, 4), op(0x15, 0xC000003E, 1, 0), op(0x06, 0)]  # arch must be x86_64
    program.append(op(0x20, 0))  # A = seccomp_data.nr
    for number in DENIED:
        program += [op(0x15, number, 0, 1), op(0x06, 0x00050000 | 1)]  # RET_ERRNO | EPERM
    program.append(op(0x06, 0x7FFF0000))  # SECCOMP_RET_ALLOW
    return b"".join(program)


def confine():
    """Drop capabilities, forbid regaining privileges, then filter syscalls."""
    for cap in range(41):
        if cap not in KEEP:
            check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    # Without no_new_privs, installing a filter needs CAP_SYS_ADMIN (seccomp(2)), and a
    # setuid binary could still gain privileges the filter's author did not expect.
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    program = seccomp_filter()
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0), "seccomp")


def child(args):
    """The container's first process: isolate, then become the command (execve(2))."""
    os.read(args.go, 1)  # wait until the parent has put us in the cgroup (and the network)
    check(libc.unshare(CLONE_NEWUTS | CLONE_NEWNS), "unshare")
    name = args.hostname.encode()
    check(libc.sethostname(name, len(name)), "sethostname")
    if args.net:
        configure_network(args.net, args.link)
    root = args.root
    if ":" in root:  # read-only layers, top first: an overlay on them is the container's root
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        root = mount_overlay(root, args.scratch)
    enter_root(root)
    confine()
    os.execvp(args.command[0], args.command)


def run(args):
    """Start the container, wait for it, return its exit code (128+N for signal N)."""
    args.go, go_write = os.pipe()
    name = f"mybox-{os.getpid()}"
    dirs = make_cgroup(name, args.memory, args.pids)
    args.scratch = tempfile.mkdtemp(prefix="mybox-")
    check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")  # our next child is PID 1
    args.link = f"mb{os.getpid()}"  # the veth's name, NAMEh on the host, NAMEc inside
    if args.net:  # a new netns for the child to inherit; we go back to the host's after fork
        host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    pid = os.fork()
    if pid == 0:
        try:
            child(args)
        except OSError as error:
            print(f"mybox: {error}", file=sys.stderr)
        os._exit(127)
    join_cgroup(dirs, pid)
    if args.net:
        check(libc.setns(host_netns, CLONE_NEWNET), "setns(host netns)")
        connect(pid, args.link)
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
    run_parser.add_argument("--net", help="ADDRESS/PREFIX on the bridge, e.g. 10.231.0.2/24")
    run_parser.add_argument("command", nargs="+")
    actions = {"run": run}
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mybox.py: must be run as root (try sudo)")
    sys.exit(actions[args.action](args))


if __name__ == "__main__":
    main()
