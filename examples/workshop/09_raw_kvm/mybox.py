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
import re
import shlex
import subprocess
import fcntl
import mmap

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWPID = 0x00020000, 0x04000000, 0x20000000
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 0x40000, 2
CLONE_NEWNET = 0x40000000
BRIDGE, BRIDGE_ADDRESS = "myboxbr0", "10.231.0.1"
CLONE_NEWUSER = 0x10000000
HOST_ID = 100000  # container uid/gid 0 is host uid/gid 100000: root inside, nobody outside
# ioctl numbers as _IO/_IOR/_IOW compute them (KVMIO 0xAE; include/uapi/linux/kvm.h)
KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VCPU = 0xAE01, 0xAE04, 0xAE41
KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_RUN = 0x4020AE46, 0xAE47, 0xAE80
KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS = 0x4090AE82, 0x8138AE83, 0x4138AE84
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5
# 16-bit real-mode code: write the message at 0x1010 to port 0x3f8 (COM1) byte by byte, hlt.
GUEST = bytes([0xBE, 0x10, 0x10, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB,
               0xF8, 0xF4, 0x90]) + b"Hello, KVM!\n\0"


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
    if args.userns:
        check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        os.write(args.ready, b"u")
        os.read(args.go, 1)  # the parent writes our uid_map and gid_map
        os.setgid(0)
        os.setuid(0)
    confine()
    os.execvp(args.command[0], args.command)


def run(args):
    """Start the container, wait for it, return its exit code (128+N for signal N)."""
    args.go, go_write = os.pipe()
    name = f"mybox-{os.getpid()}"
    dirs = make_cgroup(name, args.memory, args.pids)
    ready_read, args.ready = os.pipe()
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
    if args.userns and os.read(ready_read, 1):
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{kind}", "w") as id_map:
                id_map.write(f"0 {HOST_ID} 65536")
        os.write(go_write, b"g")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    shutil.rmtree(args.scratch)
    for directory in dirs:
        os.rmdir(directory)
    return code if code >= 0 else 128 - code


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
. /command
"$@"
echo "mybox-exit=$?"
reboot -f
"""


def cpio_entry(name, mode, data=b"", rdev=(0, 0)):
    """One file of a cpio "newc" archive, the format the kernel unpacks into its first root
    (Documentation/driver-api/early-userspace/buffer-format.rst): "070701", 13 fields of 8
    hex digits (ino mode uid gid nlink mtime filesize maj min rmaj rmin namesize check), the
    NUL-terminated name and the data, each padded to 4 bytes."""
    name = name.encode() + b"\0"
    fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name), 0]
    header = b"070701" + b"".join(b"%08x" % field for field in fields) + name
    return header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)


def write_initramfs(path, command):
    """An initramfs of busybox, /init and the command; the kernel runs /init as PID 1."""
    with open("/bin/busybox", "rb") as busybox:
        files = [("bin", 0o040755, b""), ("proc", 0o040755, b""), ("dev", 0o040755, b""),
                 ("bin/busybox", 0o100755, busybox.read()), ("init", 0o100755, INIT.encode()),
                 ("command", 0o100644, f"set -- {shlex.join(command)}\n".encode())]
    archive = [cpio_entry(name, mode, data) for name, mode, data in files]
    # The kernel opens /dev/console as init's stdin and stdout before init runs
    # (init/main.c): without this character device (5, 1) the command prints nowhere.
    archive.append(cpio_entry("dev/console", 0o020600, rdev=(5, 1)))
    with open(path, "wb") as out:
        out.write(b"".join(archive + [cpio_entry("TRAILER!!!", 0)]))


def qemu_argv(args, initrd):
    """QEMU's command line (qemu-system-x86_64(1)): a machine, RAM, a kernel, an initramfs."""
    # reboot=t: /init's `reboot -f` resets by triple fault, which -no-reboot turns into
    # QEMU's exit; panic=-1 does the same for a panic, instead of a hang.
    # loglevel=1: only emergencies on the console, not the kernel's boot story (microvm has
    # no PCI bus, and even that is an error line).
    append = "console=ttyS0 reboot=t panic=-1 loglevel=1"
    cpu = ["-cpu", "host"] if args.accel == "kvm" else []
    if args.accel == "tcg":  # microvm has no timer to calibrate the guest's TSC against, and
        # under TCG it ticks at the host's rate: say which, or some boots stall at calibration.
        with open("/proc/cpuinfo") as cpuinfo:
            mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo.read()).group(1)
        append += f" tsc_early_khz={round(float(mhz) * 1000)}"
    return ["qemu-system-x86_64", "-M", "microvm", "-accel", args.accel, *cpu,
            "-m", f"{args.memory}M", "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", args.kernel, "-initrd", initrd,
            "-append", append]


def boot(args):
    """Boot args.kernel with an initramfs that runs the command; return the command's code."""
    scratch = tempfile.mkdtemp(prefix="mybox-")
    try:
        initrd = os.path.join(scratch, "initrd")
        write_initramfs(initrd, args.command)
        output = subprocess.run(qemu_argv(args, initrd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE).stdout.decode(errors="replace")
    finally:
        shutil.rmtree(scratch)
    printed, _, code = output.replace("\r\n", "\n").partition("mybox-exit=")
    sys.stdout.write(printed)
    return int(re.match(r"\d*", code).group() or 1)  # no mybox-exit=: the guest never got there


def kvm_hello():
    """A VM from /dev/kvm ioctls alone (Documentation/virt/kvm/api.rst): 64 KiB of memory,
    one vCPU in real mode running GUEST, and this loop playing the serial port it writes to."""
    # TODO 09: open /dev/kvm; KVM_CREATE_VM; mmap 64 KiB, GUEST at 0x1000 in it;
    # KVM_SET_USER_MEMORY_REGION (slot 0, guest address 0); KVM_SET_TSS_ADDR 0x7FFFD000;
    # KVM_CREATE_VCPU; mmap its struct kvm_run (KVM_GET_VCPU_MMAP_SIZE); CS base 0 with
    # KVM_GET_SREGS/KVM_SET_SREGS; KVM_SET_REGS with rip 0x1000, rflags 2; then KVM_RUN
    # in a loop: print "KVM_EXIT_IO: ..." for each `out`, "KVM_EXIT_HLT" at the end, and
    # "the guest wrote '...'".
    return 1


def main():
    parser = argparse.ArgumentParser(prog="mybox.py")
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run COMMAND in a container")
    run_parser.add_argument("--hostname", default="mybox")
    run_parser.add_argument("--root", required=True, help="the root filesystem (03: LAYER:LAYER)")
    run_parser.add_argument("--memory", type=int, help="memory limit in bytes")
    run_parser.add_argument("--pids", type=int, help="how many processes at most")
    run_parser.add_argument("--net", help="ADDRESS/PREFIX on the bridge, e.g. 10.231.0.2/24")
    run_parser.add_argument("--userns", action="store_true", help="root inside, nobody outside")
    run_parser.add_argument("command", nargs="+")
    actions = {"run": run}
    vm_parser = commands.add_parser("vm", help="run COMMAND in a virtual machine (QEMU)")
    vm_parser.add_argument("--kernel", required=True, help="an uncompressed vmlinux (PVH)")
    vm_parser.add_argument("--memory", type=int, default=128, help="guest RAM in MiB")
    vm_parser.add_argument("--accel", choices=("kvm", "tcg"), default="kvm")
    vm_parser.add_argument("command", nargs="+")
    actions["vm"] = boot
    commands.add_parser("kvm", help="a real-mode guest on raw /dev/kvm ioctls")
    actions["kvm"] = lambda args: kvm_hello()
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mybox.py: must be run as root (try sudo)")
    sys.exit(actions[args.action](args))


if __name__ == "__main__":
    main()
