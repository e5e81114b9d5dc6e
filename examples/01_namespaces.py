"""Lesson 01: namespaces, one at a time, then all of them together in a container.

A namespace gives a process its own copy of one kind of global resource (namespaces(7)).
Here a child process calls unshare(2) with one CLONE_NEW* flag at a time and reports what it
sees, and the host reports what it still sees. Then `minibox run` does all of them at once.

    sudo .venv/bin/python examples/01_namespaces.py
"""
import os
import socket
import tempfile

import lesson
from minibox import syscalls


def in_new_namespace(kind, flag, inside):
    """Fork; the child unshare(2)s one namespace and runs inside(); the parent waits."""
    host_ns = os.readlink(f"/proc/self/ns/{kind}")
    child = os.fork()
    if child == 0:
        try:
            syscalls.unshare(flag)
            print(f"  {kind:7} inside:  {inside()}   [ns {os.readlink(f'/proc/self/ns/{kind}')}]",
                  flush=True)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    return host_ns


def hostname():
    socket.sethostname("lesson-01")
    return f"hostname is {socket.gethostname()}"


def pid():
    # CLONE_NEWPID moves the caller's *children* into the new namespace: the first is PID 1.
    read_end, write_end = os.pipe()
    grandchild = os.fork()
    if grandchild == 0:
        os.write(write_end, str(os.getpid()).encode())
        os._exit(0)
    os.close(write_end)
    inside = os.read(read_end, 16).decode()
    os.waitpid(grandchild, 0)
    return f"my child calls itself PID {inside}; the host calls it PID {grandchild}"


MOUNT_POINT = tempfile.mkdtemp(prefix="lesson-01-")


def mount():
    # Without MS_PRIVATE the new mount would propagate back to the host (mount_namespaces(7)).
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount("tmpfs", MOUNT_POINT, "tmpfs")
    return f"tmpfs on {MOUNT_POINT} in my mountinfo: {'yes' if mounted(MOUNT_POINT) else 'no'}"


def mounted(path):
    with open("/proc/self/mountinfo") as mountinfo:
        return f" {path} " in mountinfo.read()


def net():
    return f"network interfaces: {', '.join(name for _, name in socket.if_nameindex())}"


def make_shared_memory():
    """shmget(2) with IPC_PRIVATE: one new System V segment, in this IPC namespace."""
    import ctypes
    ipc_creat = 0o1000
    ctypes.CDLL(None, use_errno=True).shmget(0, 4096, ipc_creat | 0o600)
    return f"made a segment; {shared_memory()}"


def shared_memory():
    with open("/proc/sysvipc/shm") as shm:
        return f"System V shared memory segments: {len(shm.readlines()) - 1}"


def uid():
    return f"uid {os.getuid()}"


def cgroup():
    with open("/proc/self/cgroup") as cgroups:
        return "my cgroup paths start at: " + ", ".join(
            sorted({line.rstrip().split(":", 2)[2] for line in cgroups}))


CASES = [
    ("uts", syscalls.CLONE_NEWUTS, hostname, lambda: f"hostname is {socket.gethostname()}"),
    ("pid", syscalls.CLONE_NEWPID, pid, lambda: f"this script is PID {os.getpid()}"),
    ("mnt", syscalls.CLONE_NEWNS, mount,
     lambda: f"tmpfs on {MOUNT_POINT} in my mountinfo: {'yes' if mounted(MOUNT_POINT) else 'no'}"),
    ("net", syscalls.CLONE_NEWNET, net, net),
    # the segment dies with the namespace (ipc_namespaces(7))
    ("ipc", syscalls.CLONE_NEWIPC, make_shared_memory, shared_memory),
    ("user", syscalls.CLONE_NEWUSER,
     lambda: f"{uid()}: 'nobody' until a uid_map is written (user_namespaces(7))", uid),
    ("cgroup", syscalls.CLONE_NEWCGROUP, cgroup, cgroup),
]


def main():
    lesson.start("Lesson 01: namespaces one at a time",
                 "minibox/namespaces.py, minibox/syscalls.py (unshare), namespaces(7)")
    lesson.say("Each line pair: a child that unshare(2)d one namespace, then the host after it.")
    try:
        for kind, flag, inside, on_host in CASES:
            host_ns = in_new_namespace(kind, flag, inside)
            print(f"  {kind:7} host:    {on_host()}   [ns {host_ns}]", flush=True)
    finally:
        os.rmdir(MOUNT_POINT)  # the tmpfs died with the child's mount namespace
    print()
    lesson.say("A container is all of them at once (and a cgroup, and its own root):")
    lesson.run("minibox", "run", "--rm", "-h", "lesson-01", "busybox", "sh", "-c",
               "echo PID=$$ hostname=$(hostname); ls /sys/class/net; "
               "for n in pid mnt net uts ipc cgroup; do readlink /proc/self/ns/$n; done")
    lesson.say("--explain narrates each step: the syscall, its man page, the line of code.")
    lesson.run("minibox", "run", "--rm", "--explain", "busybox", "true")


if __name__ == "__main__":
    main()
