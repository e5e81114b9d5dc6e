"""The seccomp filter: its logic on paper (a tiny BPF interpreter) and loaded for real.

Loading a filter needs no root: with no_new_privs set, any process may confine itself. Each
real test forks, so the filter (which can never be removed) stays in the child.
"""
import ctypes
import errno
import json
import os
import struct
import threading

import pytest

from minibox import seccomp, security
from tests.seccomp_cases import HARMLESS_CALLS

ALLOW = 0x7FFF0000
KILL = 0x80000000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS
X86_64, I386 = 0xC000003E, 0x40000003
SIGCHLD = 17
CLONE_FILES, CLONE_NEWTIME, CLONE_NEWUTS, CLONE_NEWUSER = 0x400, 0x80, 0x04000000, 0x10000000
SYS = {"getpid": 39, "clone": 56, "unshare": 272, "clone3": 435, "read": 0,
       **seccomp.BLOCKED_SYSCALLS}


def run_filter(nr, args=(), arch=X86_64):
    """Interpret the classic BPF program on one struct seccomp_data, as the kernel would."""
    args = [a & 0xFFFFFFFFFFFFFFFF for a in (*args, 0, 0, 0, 0, 0, 0)[:6]]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    program, pc, a = seccomp.seccomp_program(), 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x06:
            return k
        if code == 0x20:
            a = struct.unpack_from("<I", data, k)[0]
            pc += 1
            continue
        taken = {0x15: a == k, 0x35: a >= k, 0x45: bool(a & k)}[code]
        pc += 1 + (jt if taken else jf)


def test_program_is_small_and_jumps_stay_inside():
    program = seccomp.seccomp_program()
    assert len(program) < 64
    for index, (code, jt, jf, k) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < len(program)
    assert program[-1][0] == 0x06  # ends with a return


@pytest.mark.parametrize("name", sorted(seccomp.BLOCKED_SYSCALLS))
def test_blocked_calls_get_eperm(name):
    assert run_filter(SYS[name]) == EPERM


def test_ordinary_calls_are_allowed():
    assert run_filter(SYS["read"]) == ALLOW
    assert run_filter(SYS["getpid"]) == ALLOW


def test_namespace_flags_decide_clone_and_unshare():
    assert run_filter(SYS["clone"], [SIGCHLD]) == ALLOW                        # fork()
    assert run_filter(SYS["clone"], [CLONE_NEWUSER | SIGCHLD]) == EPERM
    assert run_filter(SYS["clone"], [0x80 | SIGCHLD]) == ALLOW                 # a signal bit
    assert run_filter(SYS["unshare"], [CLONE_FILES]) == ALLOW
    assert run_filter(SYS["unshare"], [CLONE_NEWTIME]) == EPERM
    assert run_filter(SYS["unshare"], [CLONE_NEWUTS | CLONE_FILES]) == EPERM
    assert run_filter(SYS["clone3"], [1, 88]) == ENOSYS


def test_other_architectures_and_x32_are_killed():
    assert run_filter(SYS["getpid"], arch=I386) == KILL
    assert run_filter(0x40000000 + SYS["mount"]) == KILL


def in_child(body):
    """Run body() in a forked child; return what it returned (JSON through a pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            result = {"ok": body()}
        except BaseException as error:  # report, never return into pytest in the child
            result = {"error": repr(error)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = json.loads(pipe.read() or '{"error": "child died"}')
    os.waitpid(pid, 0)
    assert "error" not in result, result.get("error")
    return result["ok"]


_libc = ctypes.CDLL(None, use_errno=True)


def call(name, *args):
    """Make a raw system call; return 0 or the errno name it failed with."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(SYS[name]), *(ctypes.c_long(a) for a in args))
    if result == 0 and name == "clone":  # the filter failed and we are a new child: leave
        os._exit(0)
    return errno.errorcode[ctypes.get_errno()] if result == -1 else 0


def status_field(name):
    with open("/proc/self/status") as status:
        return next(line.split()[1] for line in status if line.startswith(name + ":"))


def confined_child_results():
    security.set_no_new_privs()
    seccomp.install_filter()
    worker = threading.Thread(target=lambda: None)  # glibc tries clone3 first, then clone
    worker.start()
    worker.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return {
        "Seccomp": status_field("Seccomp"),
        "NoNewPrivs": status_field("NoNewPrivs"),
        "getpid": os.getpid() == _libc.syscall(SYS["getpid"]),
        "fork": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]),
        "blocked": {name: call(name, *args) for name, args in HARMLESS_CALLS.items()},
        "unshare CLONE_FILES": call("unshare", CLONE_FILES),
        "unshare CLONE_NEWUTS": call("unshare", CLONE_NEWUTS),
        "unshare CLONE_NEWTIME": call("unshare", CLONE_NEWTIME),
        "clone CLONE_NEWUSER": call("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "clone3": call("clone3", 1, 88),
    }


def test_filter_loaded_for_real():
    results = in_child(confined_child_results)
    assert results["Seccomp"] == "2"
    assert results["NoNewPrivs"] == "1"
    assert results["getpid"] is True
    assert results["fork"] == 7
    assert results["blocked"] == {name: "EPERM" for name in HARMLESS_CALLS}
    assert results["unshare CLONE_FILES"] == 0
    assert results["unshare CLONE_NEWUTS"] == "EPERM"
    assert results["unshare CLONE_NEWTIME"] == "EPERM"
    assert results["clone CLONE_NEWUSER"] == "EPERM"
    assert results["clone3"] == "ENOSYS"


@pytest.mark.root
def test_without_the_filter_root_gets_other_errors():
    """Proof the EPERMs above come from the filter: root, unfiltered, fails differently."""
    unfiltered = in_child(lambda: {name: call(name, *args) for name, args in HARMLESS_CALLS.items()})
    assert not {name: e for name, e in unfiltered.items() if e in ("EPERM", 0)}


def test_explain_prints_the_program_as_assembly(capfd):
    """--explain lists the filter the kernel gets, one instruction a line."""
    from minibox import explain
    program = seccomp.seccomp_program()

    def body():
        explain.configure(True)
        security.set_no_new_privs()
        seccomp.install_filter(program)
        return None
    in_child(body)
    err = capfd.readouterr().err
    assert f"program: {len(program)} instructions" in err
    assert " 0: ld   arch" in err and "jeq  #0xc000003e, 2, 49" in err and "ret  SCMP_ACT_ERRNO(1)" in err
