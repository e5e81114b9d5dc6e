"""The checks of each level: what check.py runs, what it expects, the hint, the minibox step.

A check is a name, a function returning (passed, what it saw), a hint, and the name of the
minibox (or minivm) function that does the same step. Each level builds what it needs in a
scratch directory (a busybox root, read-only layers) and clean_up() removes what the
participant's runtime may have left on the host (the level-05 bridge).
"""
import os
import re
import shutil
import signal
import subprocess
import sys

TIMEOUT = 30
SCRATCH_BEFORE = {name for name in os.listdir("/tmp") if name.startswith("mybox-")}
HOST_FILE = "/etc/mybox-check-host-file"  # made by the check; a container must not see it
ESCAPE_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "escapes", "chroot_escape.c")


class Check:
    def __init__(self, name, run, hint, minibox):
        self.name, self.run, self.hint, self.minibox = name, run, hint, minibox


class Runner:
    """Runs the participant's `mybox.py run ...` and keeps what it printed."""

    def __init__(self, program, scratch):
        self.program, self.scratch = program, scratch

    def __call__(self, *args, timeout=TIMEOUT):
        # A session of its own: on a timeout the container goes too, not only mybox.py.
        process = subprocess.Popen([sys.executable, self.program, *args], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return -1, f"no exit after {timeout} s"
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return done.returncode, f"exit {done.returncode}, output {done.stdout.strip()[-200:]!r}" + \
            (f", stderr {last[-200:]!r}" if last else "")

    def output(self, *args):
        try:
            return subprocess.run([sys.executable, self.program, *args], capture_output=True,
                                  text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL).stdout
        except subprocess.TimeoutExpired:
            return ""


def busybox_root(directory, escape=False):
    """A root filesystem: busybox and its applets in /bin, empty /proc, /tmp, /etc."""
    for name in ("bin", "proc", "tmp", "etc", "mnt"):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
    with open("/bin/busybox", "rb") as source, open(f"{directory}/bin/busybox", "wb") as copy:
        copy.write(source.read())
    os.chmod(f"{directory}/bin/busybox", 0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", f"{directory}/bin/{applet}")
    with open(f"{directory}/etc/image-file", "w") as marker:
        marker.write("from the image\n")
    if escape:  # examples/escapes' chroot escape, static so that it runs in busybox's root
        subprocess.run(["gcc", "-static", "-O2", "-o", f"{directory}/bin/chroot_escape",
                        ESCAPE_SOURCE], check=True)
    return directory


def _ran(run, args, expect):
    """(passed, saw): run mybox with args; expect(code, saw) says whether it passed."""
    code, saw = run(*args)
    return expect(code, saw), saw


def level_00(run, root):
    return [
        Check("the command runs and prints", lambda: _ran(
            run, ["run", "--", "echo", "hello"], lambda c, s: c == 0 and "'hello'" in s),
            "fork(), then execvp() in the child; the parent waitpid()s", "spawn"),
        Check("its exit code comes back", lambda: _ran(
            run, ["run", "--", "sh", "-c", "exit 3"], lambda c, s: c == 3),
            "os.waitstatus_to_exitcode(status) is the child's exit code", "waiting.wait_for"),
        Check("killed by SIGKILL gives 137", lambda: _ran(
            run, ["run", "--", "sh", "-c", "kill -9 $$"], lambda c, s: c == 137 and "survived" not in s),
            "a signal N shows as -N from waitstatus_to_exitcode: return 128 + N",
            "waiting.wait_for"),
    ]


def level_01(run, root):
    hostname = os.uname().nodename
    return [
        Check("the command is PID 1", lambda: _ran(
            run, ["run", "--", "sh", "-c", "echo pid=$$"], lambda c, s: "pid=1'" in s),
            "unshare(CLONE_NEWPID) before fork(): the child is PID 1 of the new namespace",
            "new_pid_namespace_for_children"),
        Check("the hostname is its own", lambda: _ran(
            run, ["run", "--hostname", "inbox", "--", "hostname"],
            lambda c, s: "'inbox'" in s and os.uname().nodename == hostname),
            "unshare(CLONE_NEWUTS) in the child, then sethostname()", "set_hostname"),
    ]


def level_02(run, root):
    rooted = ["run", "--root", root, "--"]
    return [
        Check("it sees its own root", lambda: _ran(
            run, rooted + ["cat", "/etc/image-file"], lambda c, s: "from the image" in s),
            "make --root the container's /", "pivot_to"),
        Check("it cannot see a host file", lambda: _ran(
            run, rooted + ["ls", HOST_FILE], lambda c, s: c != 0 and "No such file" in s),
            f"{HOST_FILE} exists on the host only", "pivot_to"),
        Check("a chroot escape stays inside", lambda: _ran(
            run, rooted + ["chroot_escape", HOST_FILE], lambda c, s: c == 1 and "BLOCKED" in s),
            "chroot() leaves the host's root in the mount namespace: pivot_root(\".\", \".\") "
            "and umount2(\".\", MNT_DETACH) remove it", "pivot_to"),
        Check("its mounts stay out of the host's table", lambda: _ran(
            run, rooted + ["true"], lambda c, s: c == 0 and not _host_mounts_under(root)),
            "mount(NULL, \"/\", NULL, MS_REC|MS_PRIVATE) first, or the mounts propagate "
            "(and pivot_root fails with EINVAL)", "make_mounts_private"),
    ]


def level_03(run, root):
    top = os.path.join(os.path.dirname(root), "top-layer")
    os.makedirs(os.path.join(top, "etc"), exist_ok=True)
    with open(os.path.join(top, "etc", "top-file"), "w") as marker:
        marker.write("from the top layer\n")
    layers = ["run", "--root", f"{top}:{root}", "--"]
    return [
        Check("both layers are visible", lambda: _ran(
            run, layers + ["cat", "/etc/top-file", "/etc/image-file"],
            lambda c, s: "from the top layer" in s and "from the image" in s),
            "mount overlay with lowerdir=TOP:BOTTOM and make the merged dir the root",
            "mount_overlay"),
        Check("writes go to the upper dir, not the layers", lambda: _ran(
            run, layers + ["sh", "-c", "echo x > /etc/written && cat /etc/written"],
            lambda c, s: "'x'" in s and not os.path.exists(f"{top}/etc/written")
            and not os.path.exists(f"{root}/etc/written")),
            "give the overlay an upperdir and a workdir (same filesystem, empty)", "mount_overlay"),
    ]


def level_04(run, root):
    rooted = ["--root", root, "--"]
    hog = "x=$(yes 0123456789abcdef | head -c 33554432); echo survived"
    # Ten processes at once through a pipeline: background jobs (`sleep 1 &`) would need
    # the /dev/null this level's container lacks (sh gives one as their stdin), and die at once.
    forks = " | ".join(["sleep 1"] * 10) + "; echo forked"
    return [
        Check("a 32 MiB hog dies under -m 16 MiB", lambda: _ran(
            run, ["run", "--memory", str(16 << 20), *rooted, "sh", "-c", hog],
            lambda c, s: c == 137 and "survived" not in s),
            "write the limit to memory.limit_in_bytes and memory.memsw.limit_in_bytes (v1) or "
            "memory.max and memory.swap.max (v2), and join the cgroup before exec",
            "_create_cgroup"),
        Check("--pids 5 stops the 6th process", lambda: _ran(
            run, ["run", "--pids", "5", *rooted, "sh", "-c", forks],
            lambda c, s: "can't fork" in s or "Resource temporarily" in s),
            "write pids.max and put the child's pid in cgroup.procs", "_join_cgroup"),
        Check("its cgroups are gone afterwards", lambda: (not _cgroups_left(), _cgroups_left()),
              "rmdir the cgroup directories once the child is reaped", "_release_cgroup"),
    ]


def level_05(run, root):
    def two_containers():
        server = subprocess.Popen([sys.executable, run.program, "run", "--net", "10.231.0.2/24",
                                   "--root", root, "--", "sleep", "6"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return run("run", "--net", "10.231.0.3/24", "--root", root, "--", "sh", "-c",
                       "for i in 1 2 3 4 5 6 7 8; do ping -c1 -W1 10.231.0.2 && exit; "
                       "sleep 0.5; done; exit 1")
        finally:
            server.wait(timeout=TIMEOUT)
    return [
        Check("it has eth0 with its address", lambda: _ran(
            run, ["run", "--net", "10.231.0.4/24", "--root", root, "--", "ip", "-o", "-4",
                  "addr", "show", "eth0"], lambda c, s: "10.231.0.4/24" in s),
            "move the veth's peer into the child's netns, rename it eth0, add the address",
            "bridge.connect"),
        Check("it reaches another container", lambda: (two_containers()[0] == 0,
                                                      "ping 10.231.0.2 from 10.231.0.3 failed"),
              "put the host end of each veth on the bridge (master=) and bring it up",
              "bridge.connect"),
    ]


def level_06(run, root):
    status = ["run", "--root", root, "--", "cat", "/proc/self/status"]
    field = lambda name: lambda: _status_field(run.output(*status), name)  # noqa: E731
    return [
        Check("Seccomp: 2 (a filter) in /proc/self/status", lambda: _equals(field("Seccomp"), "2"),
              "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)", "install_filter"),
        Check("NoNewPrivs: 1", lambda: _equals(field("NoNewPrivs"), "1"),
              "prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)", "set_no_new_privs"),
        Check("CAP_SYS_ADMIN is out of the bounding set", lambda: _sys_admin_gone(field("CapBnd")),
              "prctl(PR_CAPBSET_DROP, cap) for each capability not kept", "drop_bounding_set"),
        Check("mount(2) is refused", lambda: _ran(
            run, ["run", "--root", root, "--", "mount", "-t", "tmpfs", "x", "/mnt"],
            lambda c, s: c != 0), "deny mount in the seccomp filter, drop CAP_SYS_ADMIN",
            "install_filter"),
    ]


def level_07(run, root):
    userns = ["run", "--userns", "--root", root, "--"]
    return [
        Check("root inside", lambda: _ran(run, userns + ["id", "-u"], lambda c, s: "'0'" in s),
              "unshare(CLONE_NEWUSER), wait for the maps, setgid(0), setuid(0)",
              "namespaces.enter_user_namespace"),
        Check("nobody outside", lambda: _ran(
            run, userns + ["cat", "/proc/self/uid_map"],
            lambda c, s: re.search(r"'?\s*0\s+([1-9]\d*)\s+\d+", s) is not None),
            "the parent writes '0 HOST_ID 65536' to /proc/PID/uid_map and gid_map, "
            "HOST_ID not 0", "write_id_maps"),
    ]


def level_08(run, root):
    def vm(*args):
        """mybox.py vm with the kernel minivm boots and the accelerator it would pick."""
        from minivm import MinivmError, accel, kernel
        try:
            found = kernel.find(None, kernel.cache_dir(), progress=lambda message: None)
        except MinivmError as error:  # no kernel at hand and none to fetch: `sudo make demo`
            return -1, f"no guest kernel: {error}", None
        code, saw = run("vm", "--kernel", str(found.vmlinux), "--accel",
                        accel.choose("auto").name, *args)
        return code, saw, found.release

    def own_kernel():
        code, saw, release = vm("--", "uname", "-r")
        return code == 0 and f"'{release}'" in saw and release != os.uname().release, saw

    def exit_code():
        code, saw, _ = vm("--", "sh", "-c", "exit 3")
        return code == 3, saw

    def memory():
        _, saw, _ = vm("--memory", "256", "--", "grep", "MemTotal", "/proc/meminfo")
        kib = re.search(r"MemTotal:\s*(\d+) kB", saw)
        return kib is not None and 180 << 10 < int(kib.group(1)) <= 256 << 10, saw
    return [
        Check("the guest boots its own kernel and runs the command", own_kernel,
              "-kernel VMLINUX -initrd INITRD -append 'console=ttyS0 ...' -serial stdio; the "
              "initramfs needs bin/busybox, an executable /init and dev/console", "qemu_options"),
        Check("its exit code comes back from the guest", exit_code,
              "/init prints mybox-exit=$? after the command; boot() reads it", "base_archive"),
        Check("the guest has the RAM --memory asked for", memory,
              "-m MIB: without it QEMU gives the guest 128 MiB", "qemu_options"),
    ]


def level_09(run, root):
    def exits():
        lines = run.output("kvm").splitlines()
        io = [line for line in lines if line.startswith("KVM_EXIT_IO")]
        halted = [line for line in lines if line.startswith("KVM_EXIT")][-1:] == ["KVM_EXIT_HLT"]
        return len(io) == len(b"Hello, KVM!\n") and halted, f"{len(io)} KVM_EXIT_IO lines, " \
            f"last exit {'KVM_EXIT_HLT' if halted else 'not KVM_EXIT_HLT'}"
    return [
        Check("the guest's message comes out of port 0x3f8", lambda: _ran(
            run, ["kvm"], lambda c, s: c == 0 and "wrote 'Hello, KVM!" in s),
            "KVM_CREATE_VM, memory with KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU, CS base 0, "
            "RIP 0x1000, then KVM_RUN: on KVM_EXIT_IO the bytes are at kvm_run + data_offset",
            "run_lesson"),
        Check("one KVM_EXIT_IO per byte, then KVM_EXIT_HLT", exits,
              "call KVM_RUN again after each KVM_EXIT_IO; stop at KVM_EXIT_HLT", "run_lesson"),
    ]


def _host_mounts_under(root):
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if root in line.split()[4]]


def _cgroups_left():
    found = []
    for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        if os.path.isdir(top):
            found += [f"{top}/{name}" for name in os.listdir(top) if name.startswith("mybox-")]
    return found


def _status_field(status, name):
    match = re.search(rf"^{name}:\s*(\S+)", status, re.M)
    return match.group(1) if match else None


def _equals(read, wanted):
    value = read()
    return value == wanted, f"{value!r}"


def _sys_admin_gone(read):
    value = read()
    return value is not None and not int(value, 16) & (1 << 21), f"CapBnd {value!r}"


def for_level(level, program, scratch):
    """The checks of `level`, with what they need made in scratch."""
    with open(HOST_FILE, "w") as marker:
        marker.write("host only\n")
    root = busybox_root(os.path.join(scratch, "root"), escape=level == 2) \
        if 2 <= level <= 7 else None
    makers = [level_00, level_01, level_02, level_03, level_04, level_05, level_06, level_07,
              level_08, level_09]
    return makers[level](Runner(program, scratch), root)


def clean_up(scratch):
    """Remove what a participant's runtime (or this checker) may have left on the host."""
    if os.path.exists(HOST_FILE):
        os.unlink(HOST_FILE)
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        for index in ip.link_lookup(ifname="myboxbr0"):
            ip.link("del", index=index)
    for name in os.listdir("/tmp"):  # a runtime killed on a timeout keeps its scratch dir
        if name.startswith("mybox-") and name not in SCRATCH_BEFORE:
            shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)
    for directory in _cgroups_left():
        try:
            os.rmdir(directory)
        except OSError:
            pass
