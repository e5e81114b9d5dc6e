"""init.new_session() for real, in forked children: the parent death signal (prctl(2)
PR_SET_PDEATHSIG) a process of the container takes from the session it starts."""
import os
import signal

import prctl

from minibox import init, syscalls


def parent_death_signals(die_with_parent):
    """(every signal new_session() asked for, the kernel's setting after it), in a child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            asked, real = [], syscalls.set_parent_death_signal

            def record(signum):  # the child's copy of the module only
                asked.append(int(signum))
                real(signum)
            syscalls.set_parent_death_signal = record
            init.new_session(die_with_parent)
            os.write(write_end, f"{asked} {prctl.get_pdeathsig()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text


def test_an_exec_detach_process_never_dies_with_its_parent_which_returns_at_once():
    """`exec --detach` returns as soon as it forked: had its process taken SIGKILL for a
    moment, a parent gone in that moment killed it (docker exec saw 137, once)."""
    assert parent_death_signals(False) == "[] 0"
    assert parent_death_signals(True) == f"[{int(signal.SIGKILL)}] {int(signal.SIGKILL)}"
