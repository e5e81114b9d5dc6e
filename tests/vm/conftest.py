"""Fixtures for tests that boot guests: one kernel for the whole session, and a runner."""
import subprocess
import sys

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
