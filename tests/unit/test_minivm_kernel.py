"""Finding a guest kernel and taking the vmlinux out of a bzImage, on bzImages built here."""
import gzip
import json
import lzma
import struct
from pathlib import Path

import pytest

from minivm import MinivmError, bzimage, kernel

ELF = b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 57 + b"Linux version 6.9.9-test (me@here) #1\0"


def fake_bzimage(payload: bytes, version=0x020F, banner=b"6.9.9-test (me@here) #1 SMP"):
    """A bzImage laid out as Documentation/arch/x86/boot.rst says, with `payload` inside."""
    setup_sects = 3
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    image[0x300:0x300 + len(banner) + 1] = banner + b"\0"
    struct.pack_into("<H", image, 0x20E, 0x300 - 0x200)  # kernel_version is "less 0x200"
    decompressor = b"\x90" * 64
    struct.pack_into("<II", image, 0x248, len(decompressor), len(payload))
    # The kernel build appends the uncompressed size after the compressed stream.
    return bytes(image) + decompressor + payload + struct.pack("<I", len(ELF))


@pytest.mark.parametrize("compress,name", [
    (lambda data: lzma.compress(data, format=lzma.FORMAT_XZ), "xz"),
    (gzip.compress, "gzip"),
])
def test_vmlinux_comes_out_of_the_payload(compress, name):
    image = fake_bzimage(compress(ELF))
    assert bzimage.release(image) == "6.9.9-test"
    assert bzimage.vmlinux(image) == (ELF, name)


@pytest.mark.parametrize("image,message", [
    (b"MZ" + b"\0" * 1000, "not a bzImage"),
    (fake_bzimage(gzip.compress(ELF), version=0x0207), "too old"),
    (fake_bzimage(b"\x00\x11\x22\x33 not compressed"), "unknown compression"),
    (fake_bzimage(gzip.compress(b"not an elf")), "not an ELF"),
])
def test_bad_images_are_named(image, message):
    with pytest.raises(MinivmError, match=message):
        bzimage.vmlinux(image)


def test_a_bzimage_is_extracted_once_into_the_cache(tmp_path):
    source = tmp_path / "vmlinuz-6.9.9-test"
    source.write_bytes(fake_bzimage(lzma.compress(ELF, format=lzma.FORMAT_XZ)))
    said = []
    first = kernel.from_file(source, tmp_path / "cache", said.append)
    assert first.release == "6.9.9-test" and Path(first.vmlinux).read_bytes() == ELF
    assert Path(first.vmlinux).is_relative_to(tmp_path / "cache")
    assert len(said) == 1 and "extracting" in said[0]
    again = kernel.from_file(source, tmp_path / "cache", said.append)
    assert again == first and len(said) == 1  # cached: no second extraction


def test_an_elf_vmlinux_is_booted_as_it_is(tmp_path):
    source = tmp_path / "vmlinux"
    source.write_bytes(ELF)
    found = kernel.from_file(source, tmp_path / "cache", print)
    assert found.vmlinux == str(source) and found.release == "6.9.9-test"


def cache_entry(cache, release):
    directory = cache / "kernels" / release
    (directory / "lib" / "modules" / release).mkdir(parents=True)
    (directory / "vmlinux").write_bytes(ELF)
    record = {"release": release, "origin": "test", "vmlinux": str(directory / "vmlinux")}
    (directory / "kernel.json").write_text(json.dumps(record))


def test_order_flag_then_newest_cached_then_boot(tmp_path):
    cache, boot = tmp_path / "cache", tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.9.9-test").write_bytes(fake_bzimage(gzip.compress(ELF)))
    assert kernel.find(None, cache, print, boot).release == "6.9.9-test"  # from /boot
    cache_entry(cache, "6.1.0-9-amd64")
    cache_entry(cache, "6.1.0-56-amd64")
    found = kernel.find(None, cache, print, boot)
    assert found.release == "6.1.0-56-amd64"  # numbers compare as numbers: 56 > 9
    assert found.modules == str(cache / "kernels/6.1.0-56-amd64/lib/modules/6.1.0-56-amd64")
    explicit = tmp_path / "vmlinux"
    explicit.write_bytes(ELF)
    assert kernel.find(explicit, cache, print, boot).vmlinux == str(explicit)


def test_no_kernel_and_no_apt_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get here
    with pytest.raises(MinivmError, match="no guest kernel: .*no apt-get.*--kernel PATH"):
        kernel.find(None, tmp_path / "cache", print, tmp_path)


def test_cache_dir_follows_minivm_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVM_CACHE", str(tmp_path))
    assert kernel.cache_dir() == str(tmp_path)


def tiny_entry(cache, release="6.1.192-minivm"):
    directory = Path(kernel.tiny_dir(cache))
    directory.mkdir(parents=True)
    (directory / "vmlinux").write_bytes(ELF)
    (directory / "config").write_text("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n")
    record = {"release": release, "origin": "built", "vmlinux": str(directory / "vmlinux")}
    (directory / "kernel.json").write_text(json.dumps(record))


def test_the_tiny_kernel_comes_first_once_built_unless_asked_not_to(tmp_path):
    cache = tmp_path / "cache"
    cache_entry(cache, "6.1.0-56-amd64")
    assert kernel.find(None, cache, print, tmp_path).release == "6.1.0-56-amd64"
    tiny_entry(cache)
    found = kernel.find(None, cache, print, tmp_path)
    assert found == kernel.tiny_kernel(cache) and found.release == "6.1.192-minivm"
    assert found.modules is None  # everything built in
    assert kernel.takes_mmio_devices_from_command_line(found)
    assert kernel.find(None, cache, print, tmp_path, tiny=False).release == "6.1.0-56-amd64"


def test_a_cached_vmlinux_named_with_kernel_keeps_its_modules(tmp_path):
    cache = tmp_path / "cache"
    cache_entry(cache, "6.1.0-56-amd64")
    found = kernel.find(cache / "kernels/6.1.0-56-amd64/vmlinux", cache, print, tmp_path)
    assert found.modules == str(cache / "kernels/6.1.0-56-amd64/lib/modules/6.1.0-56-amd64")


def test_a_decompression_bomb_stops_at_the_limit(monkeypatch):
    monkeypatch.setattr(bzimage, "MAX_VMLINUX_BYTES", 1 << 20)
    image = fake_bzimage(gzip.compress(ELF + b"\0" * (4 << 20)))
    with pytest.raises(MinivmError, match="inflates to more than 1 MiB"):
        bzimage.vmlinux(image)
