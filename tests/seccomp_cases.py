"""Every syscall the default seccomp filter refuses, with arguments that make it harmless.

Shared by the unit test (the filter loaded into a forked child) and the root integration test
(the same calls made from inside a container by a static probe). Pointers are 1 (an unmapped
address: EFAULT) and flags invalid, so that root *without* the filter gets an error other than
EPERM and nothing happens to the machine. Careful: acct(NULL) really turns accounting off and
kexec_file_load's flag 1 really unloads a kexec kernel; neither is used here.
"""
BAD_POINTER = 1

HARMLESS_CALLS = {
    "mount": [BAD_POINTER, BAD_POINTER, BAD_POINTER, 0, BAD_POINTER],
    "umount2": [BAD_POINTER, 0],
    "pivot_root": [BAD_POINTER, BAD_POINTER],
    "open_tree": [-1, BAD_POINTER, 0],
    "move_mount": [-1, BAD_POINTER, -1, BAD_POINTER, 0],
    "fsopen": [BAD_POINTER, 0],
    "fsconfig": [-1, -1, 0, 0, 0],
    "fsmount": [-1, 0, 0],
    "fspick": [-1, BAD_POINTER, 0],
    "mount_setattr": [-1, BAD_POINTER, 0, BAD_POINTER, 0],
    "reboot": [0, 0, 0, 0],                          # bad magic: EINVAL
    "kexec_load": [0, 1, BAD_POINTER, 0],
    "kexec_file_load": [-1, -1, 0, 0, -1],          # invalid flags: EINVAL
    "init_module": [BAD_POINTER, 1, BAD_POINTER],
    "finit_module": [-1, BAD_POINTER, 0],
    "delete_module": [BAD_POINTER, 0],
    "swapon": [BAD_POINTER, 0],
    "swapoff": [BAD_POINTER],
    "acct": [BAD_POINTER],
    "keyctl": [-1, 0, 0, 0, 0],
    "add_key": [BAD_POINTER, BAD_POINTER, BAD_POINTER, 0, 0],
    "request_key": [BAD_POINTER, BAD_POINTER, BAD_POINTER, 0],
    "ptrace": [-1, 0, 0, 0],
    "bpf": [-1, BAD_POINTER, 0],
    "perf_event_open": [BAD_POINTER, 0, -1, -1, 0],
    "userfaultfd": [-1],
    "open_by_handle_at": [-1, BAD_POINTER, 0],
    "settimeofday": [BAD_POINTER, 0],
    "clock_settime": [0, BAD_POINTER],
    "syslog": [-1, 0, 0],
    "setns": [-1, 0],
    "io_uring_setup": [0, BAD_POINTER],             # no entries: EINVAL (or EFAULT)
    "io_uring_enter": [-1, 0, 0, 0, 0, 0],          # not a ring: EBADF
    "io_uring_register": [-1, 0, 0, 0],
}
