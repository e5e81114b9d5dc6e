"""Helpers for the VM tests: find a minivm's QEMU and leftovers, wait for a condition."""
import os
import time
from pathlib import Path


def qemu_pids_of(minivm_pid: int) -> list[int]:
    """QEMU processes started by that minivm: their -initrd names the minivm's PID."""
    mark = f"minivm-initrd-{minivm_pid}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"qemu-system") and mark in cmdline:
                found.append(int(entry.name))
    return found


def initrds_of(minivm_pid: int) -> list[Path]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return list(tmp.glob(f"minivm-initrd-{minivm_pid}-*.cpio"))


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def debian_kernel() -> Path:
    """Debian's kernel (modules for 9p and overlayfs, ACPI), even when the tiny kernel is
    built and would be the default: for tests of the distribution-kernel path."""
    import sys

    from minivm import kernel
    found = kernel.find(None, kernel.cache_dir(), lambda message: print(message, file=sys.stderr),
                        tiny=False)
    return Path(found.vmlinux)
