"""The guest's first (and only) filesystem: an initramfs that minivm writes itself.

An initramfs is a cpio archive that the kernel unpacks into a RAM filesystem before it runs
`/init` as PID 1 (Documentation/filesystems/ramfs-rootfs-initramfs.rst). The archive format is
cpio "newc", specified in Documentation/driver-api/early-userspace/buffer-format.rst and cpio(5).
The same document says the buffer may hold *several archives one after another*:

    initramfs := ("\\0" | cpio_archive | cpio_compressed_archive)*

minivm uses that: a base archive (busybox-static, its applet links and `/init`) is built once
and cached (cached_base); each run appends a small second archive with that run's command
(`/minivm/run.conf`), its device set-up and the kernel modules it needs. The kernel unpacks
both, later files win.

Nothing is compressed: under TCG the guest would spend longer decompressing than the kernel
spends copying 2 MB.
"""
import os
import stat
import zlib

from minivm import MinivmError

BUSYBOX = "/bin/busybox"

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad4(length: int) -> bytes:
    """newc aligns every header and every file body to 4 bytes (the ALGN(4) of the grammar)."""
    return b"\0" * (-length % 4)


class CpioWriter:
    """Writes a cpio "newc" archive in memory, one entry at a time.

    Each entry is a 110-byte ASCII header, the NUL-terminated name, padding, the data, padding.
    The header is "070701" followed by 13 fields, each 8 hex digits (buffer-format.rst):

        c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize
        c_maj c_min c_rmaj c_rmin c_namesize c_chksum

    c_maj/c_min name the device holding the file (0 here), c_rmaj/c_rmin the device a
    character/block special file stands for, c_namesize counts the trailing NUL, and c_chksum
    is only used by the "crc" variant (070702). Names are relative ("bin/sh", not "/bin/sh").
    Every mtime is 0 and owners are root, so the same inputs give the same bytes and the
    cache key is stable.
    """

    def __init__(self):
        self._chunks: list[bytes] = []
        self._size = 0
        self._next_inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        name_bytes = name.encode() + b"\0"
        # Each file gets its own inode number: the kernel only treats entries with the same
        # inode *and* c_nlink >= 2 as hard links (init/initramfs.c, maybe_link()).
        fields = (self._next_inode, mode, 0, 0, 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(name_bytes), 0)
        self._next_inode += 1
        header = NEWC_MAGIC + b"".join(b"%08x" % field for field in fields)
        self._write(header + name_bytes + _pad4(len(header) + len(name_bytes)))
        self._write(data + _pad4(len(data)))

    def _write(self, chunk: bytes):
        self._chunks.append(chunk)
        self._size += len(chunk)

    def add_dir(self, name: str, perms: int = 0o755):
        self._entry(name, stat.S_IFDIR | perms)

    def add_file(self, name: str, data: bytes, perms: int = 0o644):
        self._entry(name, stat.S_IFREG | perms, data)

    def add_symlink(self, name: str, target: str):
        # A symlink's "data" is its target path (no trailing NUL), as in the on-disk inode.
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, perms: int = 0o600):
        self._entry(name, stat.S_IFCHR | perms, rdev=(major, minor))

    def finish(self) -> bytes:
        """Append the trailer entry that ends the archive and return the archive's bytes."""
        self._entry(TRAILER, 0)
        return b"".join(self._chunks)


# fstab(5), so that one `mount -a` (one process) mounts all three kernel filesystems.
FSTAB = """\
proc      /proc  proc      nosuid,nodev,noexec  0 0
sysfs     /sys   sysfs     nosuid,nodev,noexec  0 0
devtmpfs  /dev   devtmpfs  nosuid               0 0
"""

# PID 1 of the guest. The kernel runs it with /dev/console as stdin, stdout and stderr.
# Everything it needs from the host comes from /minivm/run.conf (see run_archive()); the
# kernel's own command line is not used because the kernel hands unknown parameters to init
# as arguments and environment (Documentation/admin-guide/kernel-parameters.rst).
# The command runs in a subshell so that a shell builtin (`exit 3`, `cd`) cannot end PID 1: the
# kernel panics when init exits. Without -t its output goes through a pipe, as under `docker
# run` without -t: programs see no terminal (no columns, no colours, no CR). Protocol lines
# start with a newline (the command's last line may lack one) and carry a per-run nonce, so
# nothing the command prints can be mistaken for them.
INIT = r"""#!/bin/busybox sh
export PATH=/bin HOME=/root
busybox mount -a
# The boot log came without timestamps when nobody watched it (printk.time=0, qemu.py: fewer
# bytes through the UART); the log keeps them, and dmesg shows them again from here on.
echo Y 2>/dev/null > /sys/module/printk/parameters/time
# Free page reporting (balloon.py) hands back free blocks of every size, not only 4 MiB ones.
echo 0 2>/dev/null > /sys/module/page_reporting/parameters/page_reporting_order
. /minivm/run.conf
if [ "$tty" = 1 ]; then
    stty rows "$rows" cols "$cols"
    export TERM="$term"
elif [ "$stdin" = 1 ]; then
    # Piped input: no echo, and no CR added before LF on output (termios(3): ECHO, OPOST).
    stty -echo -opost
else
    stty -opost
fi
read -r release < /proc/sys/kernel/osrelease
marker() { printf '\nMINIVM:%s:%s\n' "$nonce" "$1"; }
# The end of every run: isa-debug-exit at port 0xf4 (QEMU docs, "isa-debug-exit"): one byte
# written there ends QEMU at once. /dev/port is the kernel's byte-addressed I/O port space
# (mem(4)). If the device is missing, reboot=t + QEMU's -no-reboot end the VM.
leave() {
    printf '\0' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    reboot -f
}
# A step that prepares the guest for the command; if it fails, the host hears why, in one line.
prepare() {
    if ! problem=$("$@" 2>&1); then
        marker "failed=$* failed: $(echo $problem)"
        leave
    fi
}
# Kernel modules the host picked from the kernel package (minivm/modules.py), dependencies
# first. Each gets its `<module>.<param>=` words from the kernel command line, as modprobe(8)
# hands them over: that is how virtio_mmio learns where QEMU put the devices.
read -r cmdline < /proc/cmdline
for module in $modules; do
    options=
    for word in $cmdline; do
        case $word in "$module".*) options="$options ${word#"$module".}" ;; esac
    done
    prepare insmod "/minivm/modules/$module.ko" $options
done
# Devices the host attached may need a command or two each (an address for eth0...).
[ -f /minivm/setup.sh ] && . /minivm/setup.sh
# A detached VM has a second serial port, ttyS1 (a port that exists has a UART type other
# than 0 in sysfs). `minivm stop` writes a line there: then every process but init gets
# SIGTERM (kill(2) with pid -1), as a shutting-down init does, and the run ends as usual.
if read -r uart 2>/dev/null < /sys/class/tty/ttyS1/type && [ "$uart" != 0 ]; then
    ( stty -echo < /dev/ttyS1; read -r request < /dev/ttyS1; kill -TERM -1 ) &
fi
# With pipefail a pipeline's status is its last failing command's: here, the command's.
set -o pipefail
marker "init=$release"
# Console loglevel 1: from here on only kernel emergencies reach the serial line, so kernel
# messages (a late "clocksource: Switched to tsc", an OOM report) never mix into the
# command's output, even with -v; `dmesg` in the guest still has them all
# (syslog(2), /proc/sys/kernel/printk).
echo 1 > /proc/sys/kernel/printk
if [ -n "$root" ]; then
    # minivm sandbox: the command runs in the host's root that setup.sh assembled (shares.py),
    # in the host's working directory and with the host's PATH. chroot(8) changes what / means;
    # the host's own sh looks the command up and runs it there.
    enter='cd -- "$0" 2>/dev/null || cd /'
    env PATH="$path" chroot "$root" /bin/sh -c "$enter; command -v \"\$1\"" "$cwd" "$1" >/dev/null
    found=$?
    set -- env PATH="$path" chroot "$root" /bin/sh -c "$enter; exec \"\$@\"" "$cwd" "$@"
else
    command -v "$1" >/dev/null
    found=$?
fi
if [ "$found" != 0 ]; then
    marker notfound
    status=127
elif [ "$tty" = 1 ]; then
    # setsid + cttyhack make the serial port the command's controlling terminal, so
    # Ctrl-C and job control work (busybox cttyhack opens /dev/ttyS0 behind /dev/console).
    setsid cttyhack "$@"
    status=$?
elif [ "$stdin" = 1 ]; then
    ( "$@" ) 2>&1 | cat
    status=$?
else
    ( "$@" ) </dev/null 2>&1 | cat
    status=$?
fi
# Killed (128 + SIGKILL): if the kernel's OOM killer did it, the host says so, quoting the
# kernel's report ("Out of memory: Killed process ..."), which loglevel 1 kept off the console.
if [ "$status" = 137 ]; then
    killed=$(dmesg | grep 'Out of memory' | tail -n 1)
    [ -n "$killed" ] && marker "oom=$killed"
fi
marker "exit=$status"
leave
"""


def busybox_applets(busybox: str) -> list[str]:
    """The applet names this busybox binary provides (`busybox --list`)."""
    import subprocess  # only when the base archive is built: once per busybox

    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return [name for name in listing.stdout.split() if name != "busybox"]


def base_archive(busybox: str) -> bytes:
    """busybox-static, a /bin link per applet, /etc/fstab and /init, as one newc archive."""
    archive = CpioWriter()
    for directory in ("bin", "dev", "etc", "minivm", "proc", "root", "sys", "tmp"):
        archive.add_dir(directory, 0o1777 if directory == "tmp" else 0o755)
    # The kernel opens /dev/console for init's stdio before init runs (init/main.c,
    # console_on_rootfs()); devtmpfs is only mounted later, by /init.
    archive.add_char_device("dev/console", 5, 1)
    with open(busybox, "rb") as binary:
        archive.add_file("bin/busybox", binary.read(), 0o755)
    for applet in busybox_applets(busybox):
        archive.add_symlink(f"bin/{applet}", "busybox")
    archive.add_file("etc/fstab", FSTAB.encode())
    archive.add_file("init", INIT.encode(), 0o755)
    return archive.finish()


def run_archive(argv: list[str], nonce: str, *, stdin: bool = False, tty: bool = False,
                rows: int = 24, cols: int = 80, term: str = "linux",
                modules: list[tuple[str, bytes]] = (), setup: list[list[str]] = (),
                root: str = "", cwd: str = "/", path: str = "/bin") -> bytes:
    """The per-run archive: /minivm/run.conf, sourced by /init; the kernel modules to load
    (name, .ko bytes; modules.py puts them in load order) and /minivm/setup.sh, the commands
    that prepare the attached devices, each run through /init's `prepare` (an argv list).
    root, cwd, path: a root that setup.sh prepared (`minivm sandbox`) in which the command
    runs, in directory cwd with that PATH.

    The command travels as a shell `set --` line in which every argument that is not made of
    safe characters alone is single-quoted (_quote). Inside single quotes a POSIX shell
    treats every byte literally except the closing quote (sh(1p), "Single-Quotes"), and a
    quote is spelled '"'"' (end the quoted part, a quote inside double quotes, start
    again), so spaces, quotes, `$`, backslashes and newlines all arrive unchanged.
    """
    settings = {"nonce": nonce, "stdin": int(stdin), "tty": int(tty), "rows": rows,
                "cols": cols, "term": term, "modules": " ".join(name for name, _ in modules),
                "root": root, "cwd": cwd, "path": path}
    conf = "".join(f"{key}={_quote(str(value))}\n" for key, value in settings.items())
    conf += f"set -- {_quoted(argv)}\n"
    archive = CpioWriter()
    archive.add_file("minivm/run.conf", conf.encode())
    if modules:
        archive.add_dir("minivm/modules")
    for name, image in modules:
        archive.add_file(f"minivm/modules/{name}.ko", image)
    if setup:
        archive.add_file("minivm/setup.sh", "".join(f"prepare {_quoted(command)}\n"
                                                     for command in setup).encode())
    return archive.finish()


# Characters no POSIX shell gives a meaning to: a word made of them alone needs no quotes.
SAFE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                            "@%+=:,./-_")


def _quote(word: str) -> str:
    """`word` for sh, single-quoted unless it is safe as it is (run_archive's docstring says
    why that is enough): shlex.quote()'s rule, without the re (and enum) shlex imports."""
    if word and SAFE_CHARACTERS.issuperset(word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def _quoted(argv: list[str]) -> str:
    return " ".join(_quote(arg) for arg in argv)


def cached_base(cache_dir: str, busybox: str = BUSYBOX) -> tuple[str, bool]:
    """The base archive from the cache, built first when missing. Returns (path, was_cached).
    Archives of other busybox or minivm versions stay: another minivm may be about to copy
    one (`minivm gc` removes them: prune_bases)."""
    path = _base_path(cache_dir, busybox)
    if os.path.exists(path):
        return path, True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from minibox.shared import replace_file
    replace_file(path, base_archive(busybox))  # atomic: a concurrent run sees all or none
    return path, False


def _base_path(cache_dir: str, busybox: str) -> str:
    """<cache>/initramfs/base-<key>.cpio. The key names everything that goes into the
    archive: the busybox binary (its applet list comes from it), by its size, modification
    time and inode, as make(1) and ccache's direct mode judge a file: one stat(2) per boot
    instead of reading and hashing 2 MB (a package upgrade writes a new file, a new inode);
    and this writer's source, which holds /init and fstab, by a CRC of its text (12 KB): by
    its stat, every checkout and every edit made a 2 MB archive of its own."""
    try:
        info = os.stat(busybox)
    except FileNotFoundError:
        raise MinivmError(f"{busybox} not found: install the busybox-static package "
                          "(apt-get install busybox-static)") from None
    with open(__file__, "rb") as source:
        writer = zlib.crc32(source.read())
    return os.path.join(cache_dir, "initramfs", f"base-{info.st_size:x}-{info.st_mtime_ns:x}-"
                        f"{info.st_ino:x}-{writer:08x}.cpio")


def prune_bases(cache_dir: str, busybox: str = BUSYBOX) -> list[str]:
    """`minivm gc`: remove the base archives this minivm would not use (other busybox or
    minivm versions, older checkouts); returns what it removed. A run of another version
    builds its own again."""
    try:
        current = _base_path(cache_dir, busybox)
    except MinivmError:  # no busybox: every archive is stale
        current = None
    directory = os.path.join(cache_dir, "initramfs")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.startswith("base-") and name.endswith(".cpio") and path != current:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # another minivm's gc was first
            removed.append(path)
    return removed


def write_initrd(base: str, run: bytes, nonce: str, directory: str | None = None) -> str:
    """One file for QEMU's -initrd: the cached base archive followed by this run's archive,
    in `directory` (a detached VM's, which `rm` and `gc` remove with it) or $TMPDIR.

    O_EXCL with mode 0600: never follow a file someone planted in /tmp under this name.
    The caller deletes it when QEMU is done.
    """
    directory = directory or os.environ.get("TMPDIR", "/tmp")
    path = os.path.join(directory, f"minivm-initrd-{os.getpid()}-{nonce}.cpio")
    initrd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(base, "rb") as source:
            # copy_file_range(2): the kernel copies the 2 MB, 5x faster than through Python.
            while os.copy_file_range(source.fileno(), initrd, 1 << 30):
                pass  # until it returns 0: the end of the file
        os.write(initrd, run)
    except BaseException as error:
        os.unlink(path)
        if isinstance(error, FileNotFoundError):  # between cached_base and here
            raise MinivmError(f"{base} was removed while minivm was about to use it "
                              "(`minivm gc` of another minivm version?): run again") from None
        raise
    finally:
        os.close(initrd)
    return path
