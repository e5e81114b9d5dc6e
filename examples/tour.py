"""A short container tour: each command is printed, then run for real.

Run as root: `sudo make demo` (or `sudo .venv/bin/python examples/tour.py`).
"""
import os
import shlex
import subprocess
import sys

MINIBOX = [sys.executable, "-m", "minibox"]

STOPS = [
    ("A container is a process with its own view of the system: it is PID 1 and sees "
     "only its own processes, hostname and network devices.",
     ["run", "--rm", "-h", "tour", "busybox", "sh", "-c",
      "echo PID=$$ hostname=$(hostname); ps; ls /sys/class/net"]),
    ("Its namespaces differ from the host's (compare with `readlink /proc/self/ns/*`).",
     ["run", "--rm", "busybox", "sh", "-c", "readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt"]),
    ("Its root is an overlay over the image: writes land in its own layer only.",
     ["run", "--rm", "busybox", "sh", "-c",
      "echo hi > /etc/motd; cat /etc/motd; grep ' / / ' /proc/self/mountinfo | cut -c1-90"]),
    ("The exit code of the command is the exit code of minibox.",
     ["run", "--rm", "busybox", "sh", "-c", "exit 7"]),
    ("--explain narrates every step: the syscall, its man page, and the line of code.",
     ["run", "--rm", "--explain", "busybox", "true"]),
]


def main():
    if os.geteuid() != 0:
        sys.exit("examples/tour.py: must be run as root (try sudo)")
    print(f"host: PID namespace {os.readlink('/proc/self/ns/pid')}, "
          f"mount namespace {os.readlink('/proc/self/ns/mnt')}\n")
    for text, args in STOPS:
        print(f"# {text}\n$ minibox {shlex.join(args)}", flush=True)
        code = subprocess.run(MINIBOX + args).returncode
        print(f"(exit code {code})\n", flush=True)


if __name__ == "__main__":
    main()
