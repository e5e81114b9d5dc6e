"""Fixtures for tests that boot guests: one kernel for the whole session, and a runner."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minivm import MinivmError, kernel


@pytest.fixture(scope="session")
def guest_kernel():
    """The kernel minivm boots by default, fetched into the cache once if missing.

    The cache is minivm's own (MINIVM_CACHE, else /var/cache/minivm as root), so a machine
    downloads Debian's kernel once, not once per test run.
    """
    try:
        return kernel.find(None, kernel.cache_dir(), lambda message: print(message, file=sys.stderr))
    except MinivmError as error:
        pytest.skip(f"no guest kernel: {error}")


@pytest.fixture
def minivm(guest_kernel):
    """Run the minivm CLI; returns the CompletedProcess (bytes)."""
    def run(*args, timeout=150, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([sys.executable, "-m", "minivm", *args], timeout=timeout, **kwargs)
    return run


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
