"""The escape lab: each classic container escape, run with minibox's protections on and off.

    sudo python examples/escapes/run.py           # a table: which primitive stops which escape
    sudo python examples/escapes/run.py --json    # the same, for tests

Each escape is one small C program in this directory (read them: each says what it tries
and what should stop it), built with `gcc -static` so it runs in the busybox image, and
bind-mounted read-only at /probes. "Protected" is a plain `minibox run`; "unprotected" adds
the flags that turn off exactly the protection that matters (mostly --privileged, which like
Docker's keeps every capability, drops seccomp, the masked /proc paths and nodev).
Every probe is harmless when it succeeds: it reads, or opens without writing, or acts only
on the container itself. An escape this kernel cannot offer at all (no /proc/kcore, no module
support) shows that error in both columns.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PRIVILEGED = ["--privileged"]


def escapes(marker, probes_dir):
    """(name, probe argv after the binary, flags that remove the protection, what protects)."""
    disk = os.stat("/").st_dev
    return [
        ("chroot_escape", [marker], ["--chroot"],
         "pivot_root(2) + detaching the old root (chroot(2) alone is escapable)"),
        ("remount_proc_sys", [], PRIVILEGED, "no CAP_SYS_ADMIN; seccomp: mount(2)"),
        ("sysrq_trigger", [], PRIVILEGED, "read-only bind mount of /proc/sysrq-trigger"),
        ("read_kcore", [], PRIVILEGED, "/proc/kcore masked; no CAP_SYS_RAWIO"),
        ("mknod_disk", [str(os.major(disk)), str(os.minor(disk))], PRIVILEGED,
         "nodev on every mount the container can write to; device cgroup rules (EPERM)"),
        ("reboot", [], PRIVILEGED, "no CAP_SYS_BOOT; seccomp: reboot(2)"),
        ("load_module", [], PRIVILEGED, "no CAP_SYS_MODULE; seccomp: init_module(2)"),
        ("ptrace_outside", [str(os.getpid())], PRIVILEGED,
         "PID namespace (host PIDs unnamed); seccomp: ptrace(2)"),
        ("userns_caps", [], ["--security-opt", "seccomp=unconfined"],
         "seccomp: unshare(CLONE_NEWUSER) (no capability is needed for it)"),
        ("io_uring", [], ["--security-opt", "seccomp=unconfined"],
         "seccomp: io_uring_setup(2) (Docker 25's default profile)"),
        ("open_by_handle", ["/probes", host_file_relative_to_fs_root(probes_dir)], PRIVILEGED,
         "no CAP_DAC_READ_SEARCH; seccomp: open_by_handle_at(2)"),
    ]


def host_file_relative_to_fs_root(directory, wanted="/etc/hostname"):
    """open_by_handle_at opens the root of the filesystem `directory` lives on: name a host
    file relative to that root (the wanted one, if it is on the same filesystem)."""
    root = directory
    while root != "/" and os.stat(os.path.dirname(root)).st_dev == os.stat(directory).st_dev:
        root = os.path.dirname(root)
    if os.stat(wanted).st_dev == os.stat(directory).st_dev:
        return os.path.relpath(wanted, root)
    return os.path.relpath(os.path.join(directory, "open_by_handle"), root)


def build_probes(destination):
    """gcc -static every probe into destination; return it."""
    for source in sorted(os.listdir(HERE)):
        if source.endswith(".c"):
            binary = os.path.join(destination, source[:-2])
            subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", binary,
                            os.path.join(HERE, source)], check=True)
    return destination


def run_probe(probes_dir, name, argv, flags):
    """One probe in one container -> (verdict, line): ESCAPED, BLOCKED or ERROR."""
    result = subprocess.run(
        [sys.executable, "-m", "minibox", "run", "--rm", *flags, "-v", f"{probes_dir}:/probes:ro",
         "busybox", f"/probes/{name}", *argv],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if name == "reboot" and result.returncode == 128 + 1:  # killed by SIGHUP: "rebooted"
        return "ESCAPED", "reboot(2) went through: the kernel killed the container's PID 1 (SIGHUP)"
    verdict = {0: "ESCAPED", 1: "BLOCKED"}.get(result.returncode, "ERROR")
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(verdict + ": ")]
    if verdict == "ERROR" or not verdicts:
        return "ERROR", f"exit {result.returncode}: {(result.stdout + result.stderr).strip()}"
    return verdict, verdicts[-1].removeprefix(verdict + ": ")


def run_lab(probes_dir, marker):
    results = []
    for name, argv, unprotected_flags, protection in escapes(marker, probes_dir):
        results.append({
            "escape": name, "protection": protection, "unprotected_flags": unprotected_flags,
            "protected": run_probe(probes_dir, name, argv, []),
            "unprotected": run_probe(probes_dir, name, argv, unprotected_flags),
        })
    return results


def print_table(results):
    for row in results:
        print(f"{row['escape']}  (stopped by: {row['protection']})")
        print(f"    protected:   {row['protected'][0]:8} {row['protected'][1]}")
        print(f"    {' '.join(row['unprotected_flags']):12} {row['unprotected'][0]:8} "
              f"{row['unprotected'][1]}")


@contextlib.contextmanager
def built_probes():
    """A scratch directory with every probe built and a host marker file; removed after.
    Yields (probes_dir, marker)."""
    work = tempfile.mkdtemp(prefix="minibox-escapes-", dir="/var/tmp")
    try:
        marker = os.path.join(work, "host-marker")
        open(marker, "w").close()
        probes_dir = os.path.join(work, "probes")
        os.mkdir(probes_dir)
        yield build_probes(probes_dir), marker
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        sys.exit("run.py: must be run as root (it runs containers)")
    with built_probes() as (probes_dir, marker):
        results = run_lab(probes_dir, marker)
    if "--json" in sys.argv:
        json.dump(results, sys.stdout, indent=1)
    else:
        print_table(results)


if __name__ == "__main__":
    main()
