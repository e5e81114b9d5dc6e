"""The few system calls Python's standard library lacks, wrapped with ctypes.

Python 3.11 has os.fork, os.execvpe, os.chroot, os.mknod and socket.sethostname, but not
mount(2), umount2(2), pivot_root(2), unshare(2), setns(2) (os.unshare/os.setns arrived in
3.12), prctl(2) or bpf(2). Every ctypes call of the project is here. Each wrapper calls libc and turns a -1 return into an OSError that names the call and
its arguments, so a failure reads "mount(overlay -> /run/...): No such device" instead of a
bare errno.
"""
import ctypes
import os
import struct

from .syscall_numbers import X86_64

_libc = ctypes.CDLL(None, use_errno=True)

# mount(2) flags, from <sys/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100  # Linux 5.10
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_DETACH = 0x2

# clone(2) / unshare(2) / setns(2) flags, from <sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl(2) options, from <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_SET_MODE_FILTER = 1  # seccomp(2)'s operation

# bpf(2) commands, program and attach types, from <linux/bpf.h>
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


def _check(result, what):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _bytes(value):
    return None if value is None else os.fsencode(value)


def mount(source, target, fstype, flags=0, data=None):
    """mount(2): attach a filesystem (or a bind/propagation change) at target."""
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype),
                       ctypes.c_ulong(flags), _bytes(data)),
           f"mount({source} -> {target})")


def umount2(target, flags=0):
    """umount2(2): detach the filesystem mounted at target (MNT_DETACH: lazily)."""
    _check(_libc.umount2(_bytes(target), flags), f"umount2({target})")


def pivot_root(new_root, put_old):
    """pivot_root(2): make new_root the root mount of this mount namespace."""
    # glibc has no pivot_root() wrapper: syscall(2) with its number
    _check(_libc.syscall(X86_64["pivot_root"], _bytes(new_root), _bytes(put_old)),
           f"pivot_root({new_root}, {put_old})")


def unshare(flags):
    """unshare(2): move this process into new namespaces of the given CLONE_NEW* types."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd, nstype=0):
    """setns(2): join the namespace that the open /proc/<pid>/ns/* file descriptor fd names."""
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def prctl(option, arg2=0, arg3=0, what="prctl"):
    """prctl(2): the options python-prctl does not wrap (security.py uses it for the
    capability sets)."""
    _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), what)


def set_parent_death_signal(signum):
    """prctl(2) PR_SET_PDEATHSIG: the kernel sends signum to us when our parent exits."""
    prctl(PR_SET_PDEATHSIG, signum, what="prctl(PR_SET_PDEATHSIG)")


def clear_ambient_capabilities():
    """prctl(2) PR_CAP_AMBIENT_CLEAR_ALL: empty the ambient capability set."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def raise_ambient_capability(bit):
    """prctl(2) PR_CAP_AMBIENT_RAISE: add one capability to the ambient set (EPERM unless
    it is both permitted and inheritable)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, bit, what="prctl(PR_CAP_AMBIENT_RAISE)")


def set_seccomp_filter(program, flags=0):
    """seccomp(2) SECCOMP_SET_MODE_FILTER with `flags` (SECCOMP_FILTER_FLAG_*): load a
    classic BPF program, a list of (code, jt, jf, k) instructions, as this thread's filter.
    (prctl(PR_SET_SECCOMP) does the same, but takes no flags.)"""
    # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; } -- 8 bytes each.
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in program))
    fprog = _SockFprog(len(program), ctypes.addressof(filters))
    # EINVAL: a program the kernel's checker refused, or a flag this kernel lacks
    _check(_libc.syscall(X86_64["seccomp"], SECCOMP_SET_MODE_FILTER, ctypes.c_ulong(flags),
                         ctypes.c_void_p(ctypes.addressof(fprog))),
           f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x})")


def bpf_load_cgroup_device(instructions, count, license="GPL"):
    """bpf(2) BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program: `count` eBPF
    instructions (struct bpf_insn bytes). The kernel's verifier checks it first; returns
    the program's file descriptor."""
    code = ctypes.create_string_buffer(instructions)
    licence = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(65536)
    # union bpf_attr's load fields: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf; the rest of the union stays zero, as the kernel requires.
    attr = ctypes.create_string_buffer(struct.pack(
        "=IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, count, ctypes.addressof(code),
        ctypes.addressof(licence), 1, len(log), ctypes.addressof(log)), 128)
    fd = _libc.syscall(X86_64["bpf"], BPF_PROG_LOAD, attr, len(attr))
    if fd == -1:
        err = ctypes.get_errno()
        # EACCES/EINVAL from the verifier: its log's last line says why
        verdict = log.value.decode(errors="replace").strip().splitlines()[-1:]
        raise OSError(err, "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE): "
                      + "; ".join([os.strerror(err), *verdict]))
    return fd


def bpf_attach_cgroup_device(cgroup_fd, program_fd):
    """bpf(2) BPF_PROG_ATTACH of a device program to the cgroup directory open as cgroup_fd.
    BPF_F_ALLOW_MULTI lets the programs of ancestors (systemd's) and descendants run too: each
    must allow a device for it to be opened."""
    # union bpf_attr's attach fields: target_fd, attach_bpf_fd, attach_type, attach_flags
    attr = ctypes.create_string_buffer(struct.pack(
        "=IIII", cgroup_fd, program_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI), 128)
    _check(_libc.syscall(X86_64["bpf"], BPF_PROG_ATTACH, attr, len(attr)),
           "bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)")


class _SockFprog(ctypes.Structure):
    """struct sock_fprog { unsigned short len; struct sock_filter *filter; }"""
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
