"""`minivm kvm-hello`: a VM from raw /dev/kvm ioctls runs real-mode code; every exit shows."""
import ast
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")
def test_the_guest_writes_hello_through_io_exits_and_halts():
    done = subprocess.run([sys.executable, "-m", "minivm", "kvm-hello"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    io_exits = [line for line in lines if ": KVM_EXIT_IO: out to port 0x3f8, 1 byte: " in line]
    # One KVM_EXIT_IO per `out` instruction, that is per byte of the message, then the hlt.
    written = [ast.literal_eval(line.rsplit(": ", 1)[1]) for line in io_exits]
    assert b"".join(written) == b"Hello, KVM!\n"
    assert lines.index(io_exits[-1]) + 1 == lines.index(
        next(line for line in lines if "KVM_EXIT_HLT: the guest halted" in line))
    for ioctl in ("KVM_GET_API_VERSION says 12", "KVM_CREATE_VM", "KVM_SET_USER_MEMORY_REGION",
                  "KVM_CREATE_VCPU", "KVM_SET_SREGS", "KVM_SET_REGS"):
        assert ioctl in done.stdout
    assert "QEMU is that loop grown up" in done.stdout

