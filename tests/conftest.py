"""Shared pytest setup: skip root/vm tests with a clear reason when they can't run here."""
import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    not_root = pytest.mark.skip(reason="needs root: run `sudo make test`")
    no_qemu = pytest.mark.skip(reason="needs qemu-system-x86_64: run `sudo make setup`")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(not_root)
        if "vm" in item.keywords and shutil.which("qemu-system-x86_64") is None:
            item.add_marker(no_qemu)
