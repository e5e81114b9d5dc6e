"""VM memory: what an idle `minivm run -d` VM costs the host, against QEMU's line typed by hand.

For each kernel at hand (the tiny one once `minivm kernel build` made it, Debian's stock
kernel), N guests run `sleep 3600` and sit idle: N started by `minivm run -d`, then N started
from the hand-typed QEMU line of bench/vm_boot.py (-m 256M, plain `-accel tcg`: QEMU's
defaults), alternately, round after round. Once every guest's command runs (its init line on
the console) and a moment more, the script reads proc(5)'s /proc/PID/smaps_rollup of every
QEMU and of every minivm process still alive (a supervisor: `run -d` should leave none):

    Rss  every page mapped and resident, shared or not: what one VM alone costs
    Pss  each page divided by the number of processes that map it: the N VMs' Pss adds up
         to what they take together (the QEMU binary, its libraries and the kernel file are
         page cache that N QEMUs share)
    anon / file / shmem   Pss split by what backs the page: guest RAM and TCG's translated
         code are anonymous; the QEMU binary, its libraries and, for the hand-typed line, the
         vmlinux QEMU keeps mapped (hw/core/loader.c keeps a ROM's file to restore it on
         reset; `run -d` boots a memfd copy emptied once loaded) are file pages

With --against CACHE, a third side boots the tiny kernel of another minivm cache (an
earlier build: MINIVM_CACHE=CACHE for that `minivm run -d`), interleaved with the other two:
the before and after of a minivm/tiny.config change. --only picks one kind of kernel.

Then, with --boots, `minivm run -- true` boots each kernel that many times in a row at
minivm's default memory for it: hangs (--timeout 30 ran out) and other failures counted.

    sudo .venv/bin/python bench/vm_memory.py [-n 1] [--rounds 3] [--settle 3] [--boots 50]
                                             [--against CACHE] [--only tiny|debian]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from minivm import accel, initramfs, kernel  # noqa: E402  (after the path is set)
from vm_boot import NONCE, guests, hand_typed  # noqa: E402

MIB = 1024
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")
BOOT_SECONDS = 60


def rollup(pid: int) -> dict:
    """/proc/PID/smaps_rollup's FIELDS, in KiB."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as lines:
        for line in lines:
            name, _, value = line.partition(":")
            if name in FIELDS:
                found[name] = int(value.split()[0])
    return found


def minivm_processes(root: Path) -> set[int]:
    """The processes running minivm (`python -m minivm`, the `minivm` script) with this
    MINIVM_ROOT in their environment: ours, not another user's."""
    found, mark = set(), f"MINIVM_ROOT={root}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                environment = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in environment and any(word == b"minivm" or word.endswith(b"/minivm")
                                           for word in argv[:3]):
                found.add(int(entry))
    return found


def wait_for_command(console: Path, nonce: str, started: float) -> float:
    """Until the guest's /init says it runs the command (console.py's init line); returns
    the seconds since `started`."""
    marker = f"MINIVM:{nonce}:init=".encode()
    while time.monotonic() - started < BOOT_SECONDS:
        if console.exists() and marker in console.read_bytes():
            return time.monotonic() - started
        time.sleep(0.05)
    sys.exit(f"no guest command within {BOOT_SECONDS} s: see {console}")


class MinivmGuests:
    """N `minivm run -d -- sleep 3600`, in a private MINIVM_ROOT; with `cache`, minivm's
    cache (and so its tiny kernel) is that one."""

    def __init__(self, minivm, explicit_kernel, cache: str | None = None):
        self.minivm, self.kernel = minivm, explicit_kernel
        self.name = f"minivm, {Path(cache).name}" if cache else "minivm run -d"
        self.root = Path(tempfile.mkdtemp(prefix="vm-memory-"))
        self.env = dict(os.environ, MINIVM_ROOT=str(self.root))
        if cache:
            self.env["MINIVM_CACHE"] = cache

    def start(self, count: int):
        before = minivm_processes(self.root)
        self.pids, seconds = [], []
        for index in range(count):
            started = time.monotonic()
            subprocess.run(self.minivm + ["run", "-d", "--name", f"m{index}", "--accel", "tcg",
                                          *self.kernel, "--", "sleep", "3600"],
                           env=self.env, check=True, stdout=subprocess.DEVNULL)
            state = json.loads((self.root / f"m{index}" / "state.json").read_text())
            seconds.append(wait_for_command(self.root / f"m{index}" / "console.log",
                                            state["nonce"], started))
            self.pids.append(state["pid"])
        self.supervisors = sorted(minivm_processes(self.root) - before)
        return seconds

    def stop(self):
        for vm_dir in self.root.iterdir():
            subprocess.run(self.minivm + ["rm", "-f", vm_dir.name], env=self.env, check=True)
        self.root.rmdir()


class HandTypedGuests:
    """N QEMUs on bench/vm_boot.py's hand-typed line, each guest running `sleep 3600`."""
    name = "hand-typed qemu"

    def __init__(self, guest, tiny: bool):
        self.guest, self.tiny = guest, tiny
        self.scratch = Path(tempfile.mkdtemp(prefix="vm-memory-"))
        base, _ = initramfs.cached_base(kernel.cache_dir())
        self.initrd = initramfs.write_initrd(
            base, initramfs.run_archive(["sleep", "3600"], NONCE), NONCE, self.scratch)

    def start(self, count: int):
        self.processes, seconds, self.supervisors = [], [], []
        for index in range(count):
            console = self.scratch / f"console{index}.log"
            started = time.monotonic()
            with console.open("wb") as output:
                self.processes.append(subprocess.Popen(
                    hand_typed(self.guest.vmlinux, self.initrd, accel.host_tsc_khz(), self.tiny,
                               qemu_defaults=True),
                    stdin=subprocess.DEVNULL, stdout=output, stderr=output))
            seconds.append(wait_for_command(console, NONCE, started))
        self.pids = [process.pid for process in self.processes]
        return seconds

    def stop(self):
        for process in self.processes:
            process.kill()  # our own child, by PID
            process.wait()
        for console in self.scratch.glob("console*.log"):
            console.unlink()

    def close(self):
        os.unlink(self.initrd)
        self.scratch.rmdir()


def measure(guests, count: int, settle: float) -> dict:
    """Start `count` guests, let them idle, sum their QEMUs' and supervisors' rollups."""
    seconds = guests.start(count)
    try:
        time.sleep(settle)
        qemu = [rollup(pid) for pid in guests.pids]
        supervisors = [rollup(pid) for pid in guests.supervisors]
    finally:
        guests.stop()
    total = {field: sum(one[field] for one in qemu + supervisors) for field in FIELDS}
    total["supervisor Pss"] = sum(one["Pss"] for one in supervisors)
    total["boot"] = statistics.median(seconds)
    return total


def compare(kernels, default, minivm, count: int, rounds: int, settle: float,
            against: str | None):
    """`default`: the kernel minivm boots without --kernel (the tiny one once built)."""
    for kind, guest in kernels.items():
        explicit = [] if guest == default else ["--kernel", str(guest.vmlinux)]
        sides = [MinivmGuests(minivm, explicit), HandTypedGuests(guest, kind == "tiny")]
        if against and kind == "tiny":
            sides.append(MinivmGuests(minivm, [], against))
        results = {side.name: [] for side in sides}
        for _ in range(rounds):
            for side in sides:
                results[side.name].append(measure(side, count, settle))
        sides[1].close()
        print(f"{kind} kernel {guest.release}: {count} idle guest(s), TCG, {rounds} rounds; "
              f"MiB per guest (medians), boot = seconds to the command")
        width = max(len(name) for name in results)
        print(f"  {'':<{width}}" + "".join(f"{field:>10}" for field in FIELDS)
              + f"{'supervisor':>11}{'boot':>7}")
        for name, runs in results.items():
            per_guest = {field: statistics.median(run[field] for run in runs) / count / MIB
                         for field in FIELDS + ("supervisor Pss",)}
            boot = statistics.median(run["boot"] for run in runs)
            print(f"  {name:<{width}}" + "".join(f"{per_guest[field]:10.1f}" for field in FIELDS)
                  + f"{per_guest['supervisor Pss']:11.1f}{boot:7.2f}")


def count_failures(kernels, default, minivm, boots: int):
    """`minivm run -- true` `boots` times in a row per kernel, at minivm's default memory."""
    for kind, guest in kernels.items():
        explicit = [] if guest == default else ["--kernel", str(guest.vmlinux)]
        outcomes = []
        for _ in range(boots):
            done = subprocess.run(minivm + ["run", "--accel", "tcg", "--timeout", "30",
                                            *explicit, "--", "true"],
                                  stdin=subprocess.DEVNULL, capture_output=True)
            outcomes.append({0: "ok", 124: "hang"}.get(done.returncode, done.stderr.decode()))
        failures = [outcome for outcome in outcomes if outcome not in ("ok", "hang")]
        print(f"{kind} kernel: {boots} boots in a row: {outcomes.count('hang')} hangs, "
              f"{len(failures)} other failures{': ' + failures[0].strip() if failures else ''}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1, help="guests at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds of idling before measuring")
    parser.add_argument("--boots", type=int, default=0)
    parser.add_argument("--against", metavar="CACHE",
                        help="also the tiny kernel of this minivm cache (an earlier build)")
    parser.add_argument("--only", choices=("tiny", "debian"))
    args = parser.parse_args()
    minivm = [sys.executable, "-m", "minivm"]
    kernels = guests()
    default = next(iter(kernels.values()))  # minivm's own pick (--only must not change it)
    if args.only:
        kernels = {args.only: kernels[args.only]}
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.rounds:
        compare(kernels, default, minivm, args.n, args.rounds, args.settle, args.against)
    if args.boots:
        count_failures(kernels, default, minivm, args.boots)


if __name__ == "__main__":
    main()
