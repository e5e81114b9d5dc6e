"""The tiny kernel that `minivm kernel build` makes, once it is built.

Building takes ~5 minutes on 2 cores (12 under load) plus ~150 MB of apt packages, once per
machine: `make test` (what CI runs) builds it before pytest starts, so these tests run there.
pytest alone does not build it: they skip until `make test`, `make kernel` or `minivm kernel
build` has. Once it is built, `minivm run` boots it by default, so every other VM test runs on
it too.
"""
import os
import struct
from pathlib import Path

import pytest

from minivm import kernel, tinykernel

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def tiny():
    built = kernel.tiny_kernel(kernel.cache_dir())
    if built is None:
        pytest.skip("the tiny kernel is not built: `make test` builds it first (~5 min, "
                    "once), as do `make kernel` and `minivm kernel build`")
    return built


def test_run_boots_the_tiny_kernel_and_explain_says_so(minivm, tiny):
    done = minivm("run", "--explain", "--", "uname", "-r")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{tiny.release}\n" and tiny.release.endswith("-minivm")
    stderr = done.stderr.decode()
    assert f"=> kernel {tiny.release}: {tiny.vmlinux}" in stderr
    assert "built by `minivm kernel build`" in stderr
    assert "noapictimer" in stderr  # the PIT tick, which this kernel takes


def test_kernel_list_marks_it_as_the_default(minivm, tiny):
    first = minivm("kernel", "list").stdout.decode().splitlines()[0].split()
    assert first[:3] == ["*", tiny.release, str(tiny.vmlinux)]


def test_its_config_has_every_line_of_the_fragment(tiny):
    config = (Path(tiny.vmlinux).parent / "config").read_text()
    assert tinykernel.dropped_options(tinykernel.FRAGMENT.read_text(), config) == []


def test_a_second_build_is_the_cached_one(minivm, tiny):
    record = tinykernel.read_record(kernel.tiny_dir(kernel.cache_dir()))
    if record.get("key") != tinykernel.build_key(tinykernel.source_tarball()):
        pytest.skip("minivm/tiny.config or linux-source changed since the tiny kernel was "
                    "built: run `minivm kernel build` again")
    before = os.stat(tiny.vmlinux)
    done = minivm("kernel", "build")
    assert done.returncode == 0, done.stderr
    after = os.stat(tiny.vmlinux)
    # Not rebuilt: the same file, never rewritten (a build replaces it with a new inode).
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert done.stdout.decode() == f"{tiny.release} {tiny.vmlinux}\n"
    assert "is up to date" in done.stderr.decode()


def test_cgroup_v2_and_namespaces_are_there(minivm, tiny):
    """What minibox needs from a kernel: cgroup2 with its controllers, every namespace."""
    done = minivm("run", "--", "sh", "-c",
                  "mount -t cgroup2 none /sys/fs/cgroup && cat /sys/fs/cgroup/cgroup.controllers"
                  " && ls /proc/self/ns | tr '\\n' ' '")
    assert done.returncode == 0, done.stderr
    controllers, namespaces = done.stdout.decode().splitlines()
    assert {"cpu", "memory", "pids"} <= set(controllers.split())
    assert {"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"} <= set(namespaces.split())


def _loaded_span(vmlinux) -> int:
    """Bytes from the first PT_LOAD segment's physical address to the end of the last one's
    memory image: what QEMU's ELF loader writes into guest RAM, zeros included (elf(5))."""
    with open(vmlinux, "rb") as elf:
        header = elf.read(64)
        phoff, = struct.unpack_from("<Q", header, 0x20)
        entry_size, count = struct.unpack_from("<HH", header, 0x36)
        elf.seek(phoff)
        table = elf.read(entry_size * count)
    # Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
    headers = [struct.unpack_from("<IIQQQQQ", table, index * entry_size)
               for index in range(count)]
    loads = [(paddr, memsz) for kind, _, _, _, paddr, _, memsz in headers if kind == 1]  # PT_LOAD
    return max(paddr + memsz for paddr, memsz in loads) - min(paddr for paddr, _ in loads)


def test_the_image_qemu_writes_into_guest_ram_has_no_padding_to_spare(tiny):
    """Every byte QEMU loads stays resident on the host for the VM's life. With under 4 MiB
    of text before the PMD-aligned entry text and no ORC tables the image spans 12.1 MiB;
    with the initramfs decompressors and ORC it spanned 16.1 (bench/README.md, "VM memory").
    Text that grows past 4 MiB again (51K to spare) costs 2 MiB of zeros: this says so."""
    assert _loaded_span(tiny.vmlinux) < 13 * 2**20
