"""Take the real kernel out of a bzImage, the way a bootloader-less VM wants it.

A bzImage (/boot/vmlinuz-*) is three things glued together (Documentation/arch/x86/boot.rst):
the real-mode setup code with its header ("HdrS" at 0x202), a small decompressor, and the
actual kernel — an ELF file called vmlinux — compressed. A bootloader jumps into the setup
code and the decompressor unpacks the kernel at boot time, every time.

Under TCG that decompressor runs emulated and is most of the boot (bench/README.md has a
bzImage against a vmlinux). The header tells where the compressed kernel is, so the
host can unpack it once, with Python's own decompressors, and QEMU can boot the ELF directly.

Header fields used (offsets into the file, little-endian):
    0x1f1  setup_sects     (1 byte)  512-byte sectors of setup code after the boot sector
    0x202  header          (4 bytes) "HdrS"
    0x206  version         (2 bytes) boot protocol version, e.g. 0x020f = 2.15
    0x20e  kernel_version  (2 bytes) pointer, less 0x200, to "6.1.0-56-amd64 (...) #1 SMP ..."
    0x248  payload_offset  (4 bytes) compressed kernel, from the start of protected-mode code
    0x24c  payload_length  (4 bytes) its length
"""
import struct
import zlib

from minivm import MinivmError

# The setup header says "HdrS" at 0x202; the kernel it carries is an ELF file (elf(5)).
BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET = b"HdrS", 0x202
ELF_MAGIC = b"\x7fELF"

# A stripped vmlinux is 63 MB for Debian's kernel. A payload that inflates past this is a
# decompression bomb, not a kernel: stop before it fills the host's memory.
MAX_VMLINUX_BYTES = 512 << 20
# Inflate this much per call: a signal (SIGTERM, --timeout's SIGALRM) is handled between
# two calls, and Python runs signal handlers only between bytecodes, never inside one.
INFLATE_STEP = 16 << 20


def _inflate(decompressor, data: bytes) -> bytes:
    """Run a zlib/lzma/bz2 decompressor over `data` a step at a time, up to the limit.
    zlib keeps the input it has not used in unconsumed_tail; lzma and bz2 keep it inside
    and continue on empty input."""
    parts, size = [], 0
    while not decompressor.eof:
        part = decompressor.decompress(data, max_length=INFLATE_STEP)
        if not part:
            break  # the stream is cut short; the ELF check below says so
        size += len(part)
        if size > MAX_VMLINUX_BYTES:
            raise MinivmError(f"this bzImage's payload inflates to more than "
                              f"{MAX_VMLINUX_BYTES >> 20} MiB: not a kernel")
        parts.append(part)
        data = getattr(decompressor, "unconsumed_tail", b"")
    return b"".join(parts)


class _ToolOutput:
    """A decompressing command's stdout, read the way _inflate reads a decompressor."""

    def __init__(self, stdout):
        self.stdout, self.eof = stdout, False

    def decompress(self, _data, max_length):
        part = self.stdout.read(max_length)
        self.eof = not part
        return part


def _decompress_with(tool: str, data: bytes) -> bytes:
    """zstd and lz4 have no decoder in Python 3.11's standard library: use the command.
    Its output is read a step at a time too, so the size limit holds for it as well."""
    import shutil
    import subprocess
    import tempfile
    if shutil.which(tool) is None:
        raise MinivmError(f"this kernel is {tool}-compressed: install the {tool} package")
    with tempfile.TemporaryFile() as payload, tempfile.TemporaryFile() as errors:
        payload.write(data)
        payload.seek(0)
        with subprocess.Popen([tool, "-dc"], stdin=payload, stdout=subprocess.PIPE,
                              stderr=errors) as child:
            try:
                elf = _inflate(_ToolOutput(child.stdout), b"")
            finally:
                child.kill()  # our own child, by PID; a no-op once it has exited
        errors.seek(0)
        if not elf:
            raise MinivmError(f"{tool} could not decompress the kernel: "
                              f"{errors.read().decode(errors='replace').strip()}")
    return elf


def _lzma(data: bytes, container: str) -> bytes:
    import lzma  # like bz2: loaded when a kernel is extracted, not on every boot
    return _inflate(lzma.LZMADecompressor(getattr(lzma, container)), data)


def _bzip2(data: bytes) -> bytes:
    import bz2
    return _inflate(bz2.BZ2Decompressor(), data)


# Magic numbers at the start of each compressed stream (the list the kernel's own
# scripts/extract-vmlinux searches for), and how to decompress each in Python. The kernel
# appends the uncompressed size after the stream; decompressor objects stop at the stream's
# end and leave those 4 bytes alone.
COMPRESSIONS = {
    b"\xfd7zXZ\x00": ("xz", lambda data: _lzma(data, "FORMAT_XZ")),
    b"\x5d\x00\x00": ("lzma", lambda data: _lzma(data, "FORMAT_ALONE")),
    b"\x1f\x8b": ("gzip", lambda data: _inflate(zlib.decompressobj(wbits=31), data)),
    b"BZh": ("bzip2", _bzip2),
    b"\x28\xb5\x2f\xfd": ("zstd", lambda data: _decompress_with("zstd", data)),
    b"\x02\x21\x4c\x18": ("lz4", lambda data: _decompress_with("lz4", data)),
}


def _setup_header(image: bytes) -> tuple[int, int]:
    """(boot protocol version, start of the protected-mode code) of a bzImage."""
    magic_end = BZIMAGE_MAGIC_OFFSET + len(BZIMAGE_MAGIC)
    if len(image) < 0x250 or image[BZIMAGE_MAGIC_OFFSET:magic_end] != BZIMAGE_MAGIC:
        raise MinivmError("not a bzImage: no 'HdrS' boot header at offset 0x202")
    version = struct.unpack_from("<H", image, 0x206)[0]
    setup_sects = image[0x1F1] or 4  # "if this field is 0, the real value is 4"
    return version, (setup_sects + 1) * 512


def release(image: bytes) -> str:
    """The kernel release (`uname -r`) from the header's kernel_version string."""
    _setup_header(image)
    pointer = struct.unpack_from("<H", image, 0x20E)[0]
    if not pointer:
        raise MinivmError("this bzImage records no kernel version string")
    text = image[pointer + 0x200:pointer + 0x400].split(b"\0")[0].decode(errors="replace")
    return text.split()[0]


def vmlinux(image: bytes) -> tuple[bytes, str]:
    """Decompress the kernel inside a bzImage. Returns (the vmlinux ELF, compression name).

    payload_offset/payload_length exist since boot protocol 2.08 (Linux 2.6.26).
    """
    version, protected_mode_start = _setup_header(image)
    if version < 0x208:
        raise MinivmError(f"boot protocol {version >> 8}.{version & 0xff} is too old "
                          "(2.08+ records where the compressed kernel is)")
    offset, length = struct.unpack_from("<II", image, 0x248)
    payload = image[protected_mode_start + offset:protected_mode_start + offset + length]
    for magic, (name, decompress) in COMPRESSIONS.items():
        if payload.startswith(magic):
            elf = decompress(payload)
            if not elf.startswith(ELF_MAGIC):
                raise MinivmError(f"the {name} payload of this bzImage is not an ELF file")
            return elf, name
    raise MinivmError(f"unknown compression in this bzImage (payload starts {payload[:4].hex()})")
