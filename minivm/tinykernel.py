"""`minivm kernel build`: a kernel of minivm's own, small enough to boot in well under a second.

Debian's kernel is built to run anywhere: it probes for hundreds of devices, runs self-tests
and leaves most drivers to modules, so under TCG it spends seconds before /init (bench/README.md). A guest
that only ever sees QEMU's microvm needs a few drivers, all compiled in. The recipe:

1. `make tinyconfig`: every option off that can be (allnoconfig + kernel/configs/tiny.config);
2. `scripts/kconfig/merge_config.sh -m .config minivm/tiny.config`, then `make olddefconfig`:
   switch on what a minivm guest uses (the fragment says who needs each line), let Kconfig
   fill in the dependencies, then check that every line of the fragment survived (Kconfig
   silently drops an option whose dependencies are not met);
3. `make vmlinux`: the uncompressed ELF kernel with its PVH entry point, what QEMU boots;
   no bzImage, so nothing is compressed only to be decompressed again.

The source is Debian's `linux-source` package (/usr/src/linux-source-<version>.tar.xz), the
tools are build-essential, flex, bison, bc, libelf-dev and libssl-dev; the command installs
whatever is missing with apt-get. The result lives in <cache>/tiny/ and is rebuilt only when
the fragment or the source changes. Measured here: ~5 minutes on 2 cores.
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

from minibox.shared import replace_file
from minivm import MinivmError, kernel

FRAGMENT = Path(__file__).with_name("tiny.config")
SOURCE_DIR = Path("/usr/src")
SOURCE_PACKAGE = "linux-source"
BUILD_PACKAGES = ("build-essential", "flex", "bison", "bc", "libelf-dev", "libssl-dev")
PROGRESS_SECONDS = 15


def fragment_options(text: str) -> dict[str, str | None]:
    """{"CONFIG_X": value} for each `CONFIG_X=value` line of a config fragment, and
    {"CONFIG_Y": None} for each `# CONFIG_Y is not set` (Kconfig's way to write "off")."""
    options = {}
    for line in text.splitlines():
        off = re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip())
        if off:
            options[off.group(1)] = None
        elif line.startswith("CONFIG_"):
            name, _, value = line.strip().partition("=")
            options[name] = value
    return options


def dropped_options(fragment: str, config: str) -> list[str]:
    """Fragment lines the final .config does not honour: Kconfig turned an option off because
    something it depends on is off, or on because something selects it (or the option does
    not exist in this source)."""
    final = fragment_options(config)
    return [f"{name}={value}" if value is not None else f"{name} off"
            for name, value in fragment_options(fragment).items() if final.get(name) != value]


def _missing_packages() -> list[str]:
    wanted = (SOURCE_PACKAGE, *BUILD_PACKAGES)
    listing = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *wanted],
                             capture_output=True, text=True)
    installed = {line.split()[0] for line in listing.stdout.splitlines()
                 if line.endswith(" installed")}
    return [package for package in wanted if package not in installed]


def _install_packages(progress):
    missing = _missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise MinivmError(f"building a kernel needs these packages: {' '.join(missing)}; "
                          "install them (apt-get install, as root) and try again")
    progress(f"installing what a kernel build needs with apt-get: {' '.join(missing)}")
    _run(["apt-get", "install", "-y", "-q", *missing], Path("/"),
         env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def source_tarball() -> Path:
    """The newest /usr/src/linux-source-<version>.tar.xz (the linux-source package's file)."""
    found = sorted(SOURCE_DIR.glob("linux-source-*.tar.xz"),
                   key=lambda path: kernel.release_key(path.name), reverse=True)
    if not found:
        raise MinivmError(f"no {SOURCE_DIR}/linux-source-*.tar.xz: install {SOURCE_PACKAGE}")
    return found[0]


def build_key(tarball: Path) -> str:
    """What the result depends on: the fragment's text and which source it was built from."""
    info = tarball.stat()
    return f"{zlib.crc32(FRAGMENT.read_bytes()):08x}-{tarball.name}-{info.st_size}"


def build(cache: str, progress, jobs: int | None = None) -> kernel.Kernel:
    """Build (or find up to date) the tiny kernel in <cache>/tiny/. flock(2) on
    <cache>/build.lock keeps two builds from running at once."""
    cache = Path(cache)
    _install_packages(progress)
    tarball = source_tarball()
    key = build_key(tarball)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = kernel.tiny_kernel(cache)
        record = read_record(kernel.tiny_dir(cache))
        if current and record.get("key") == key:
            progress(f"tiny kernel {current.release} is up to date: {current.vmlinux}")
            return current
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as scratch:
            return _build_in(Path(scratch), tarball, key, cache, progress,
                             jobs or os.cpu_count() or 1)


def read_record(path: str) -> dict:
    try:
        return json.loads((Path(path) / "kernel.json").read_text())
    except (OSError, ValueError):
        return {}


def _build_in(scratch: Path, tarball: Path, key: str, cache: Path, progress,
              jobs: int) -> kernel.Kernel:
    started = time.monotonic()
    progress(f"unpacking {tarball} (~30 s)")
    _run(["tar", "-xf", str(tarball), "-C", str(scratch)], scratch)
    source = next(path for path in scratch.iterdir() if path.is_dir())
    progress(f"configuring: make tinyconfig + {FRAGMENT.name}")
    _run(["make", "-s", "tinyconfig"], source)
    _run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(FRAGMENT)], source)
    _run(["make", "-s", "olddefconfig"], source)
    config = (source / ".config").read_text()
    dropped = dropped_options(FRAGMENT.read_text(), config)
    if dropped:
        raise MinivmError(f"Kconfig dropped these lines of {FRAGMENT} (a dependency is off, "
                          f"or the option does not exist in {tarball.name}): "
                          f"{', '.join(dropped)}")
    progress(f"compiling {source.name} with {jobs} jobs (~5 min on 2 cores)")
    _compile(source, jobs, progress, started)
    release = kernel.vmlinux_release(source / "vmlinux")
    target = Path(kernel.tiny_dir(cache))
    staged = scratch / "result"
    staged.mkdir()
    shutil.copyfile(source / "vmlinux", staged / "vmlinux")
    (staged / "config").write_text(config)
    origin = (f"built by `minivm kernel build` from {tarball} with {FRAGMENT.name}, "
              f"in {target}")
    record = {"release": release, "origin": origin, "vmlinux": str(target / "vmlinux"),
              "key": key}
    replace_file(staged / "kernel.json", json.dumps(record, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.rename(staged, target)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    progress(f"tiny kernel {release} ready in {minutes} min {seconds} s: {target / 'vmlinux'}; "
             "`minivm run` boots it from now on")
    return kernel.entry(target)


def _compile(source: Path, jobs: int, progress, started: float):
    """`make -j vmlinux`, saying every few seconds how many files are compiled. Kbuild prints
    one `  CC      path/file.o` line per object (its quiet mode; V=1 would print commands)."""
    build = subprocess.Popen(["make", f"-j{jobs}", "vmlinux"], cwd=source, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    compiled, last_report, tail = 0, time.monotonic(), []
    try:
        for line in build.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if line.lstrip().startswith("CC "):
                compiled += 1
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                last_report = time.monotonic()
                elapsed = round(last_report - started)
                progress(f"  {elapsed // 60}:{elapsed % 60:02d}  {compiled} files compiled, "
                         f"now {line.split()[-1]}")
    except BaseException:  # Ctrl-C, SIGTERM: stop make (our child, by PID) before cleaning up
        build.terminate()
        build.wait()
        raise
    if build.wait():
        raise MinivmError("make vmlinux failed; its last lines:\n  " + "\n  ".join(tail))


def _run(argv: list[str], cwd: Path, env: dict | None = None):
    """One build step; its output is shown only when it fails."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    except OSError as error:
        raise MinivmError(f"cannot run {argv[0]}: {error.strerror}") from None
    if done.returncode:
        output = (done.stdout + done.stderr).strip().splitlines()[-10:]
        raise MinivmError(f"`{' '.join(argv)}` failed (exit status {done.returncode}):\n  "
                          + "\n  ".join(output))
