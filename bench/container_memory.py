"""What a container costs in memory outside itself: its monitor and its port proxy.

N containers run `busybox httpd` on the bridge with a published port (-p), three ways,
started in turn so a noisy moment hits all alike:

    run -d       the detached monitor: the runtime sets up, then the monitor waits in a bare
                 interpreter (minibox/supervisor.py, waiting.py); the proxy serves in one
    run          the foreground `minibox run`, which goes lean after its first second
    run -t       the foreground run with a terminal (here a pty the script holds), which
                 relays it and so still waits as the whole runtime, as every monitor did
                 before: the reference

For every process a container costs outside itself (monitor, proxy) it reads Rss and Pss
from /proc/<pid>/smaps_rollup (proc(5)): Rss counts every page mapped, shared ones too
(the interpreter, libc); Pss divides each shared page among the processes mapping it, so
the sum of Pss over N containers is what they cost together. Medians per container.
Everything runs in a private network namespace and a private MINIBOX_ROOT.
Run as root: `sudo .venv/bin/python bench/container_memory.py [-n 20]`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIBOX = [sys.executable, "-m", "minibox"]
SITE = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"


def rollup(pid):
    """{"Rss": KiB, "Pss": KiB} of a process."""
    with open(f"/proc/{pid}/smaps_rollup") as lines:
        fields = dict(line.split()[:2] for line in lines if line[:4] in ("Rss:", "Pss:"))
    return {name.rstrip(":"): int(kib) for name, kib in fields.items()}


def container_state(root, name):
    container_id = os.readlink(os.path.join(root, "names", name))
    with open(os.path.join(root, container_id, "state.json")) as state:
        current = json.load(state)
    with open(os.path.join(root, container_id, "ledger")) as ledger:
        proxy = [entry["pid"] for entry in map(json.loads, ledger) if entry["kind"] == "proxy"]
    return current, proxy


def wait_running(root, name, lean, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            current, proxy = container_state(root, name)
            with open(f"/proc/{current['monitor_pid']}/cmdline", "rb") as cmdline:
                waiting_lean = b"wait_then_resume" in cmdline.read()
            if current.get("status") == "running" and proxy and waiting_lean == lean:
                return current["monitor_pid"], proxy[0]
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{name} never ran")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="containers of each kind")
    n = parser.parse_args().n
    root = os.environ["MINIBOX_ROOT"]
    kinds = (("run -d", "d", True), ("run", "f", True), ("run -t", "t", False))
    foreground, terminals, sizes = [], [], {kind: [] for kind, _, _ in kinds}
    try:
        for i in range(n):
            subprocess.run([*MINIBOX, "run", "-d", "--name", f"d{i}", "-p", f"{19000 + i}:80",
                            "busybox", "sh", "-c", SITE], check=True, stdout=subprocess.DEVNULL)
            foreground.append(subprocess.Popen(
                [*MINIBOX, "run", "--name", f"f{i}", "-p", f"{19200 + i}:80", "busybox", "sh",
                 "-c", SITE], stdout=subprocess.DEVNULL))
            master, slave = os.openpty()
            terminals.append(master)
            foreground.append(subprocess.Popen(
                [*MINIBOX, "run", "-t", "--name", f"t{i}", "-p", f"{19400 + i}:80", "busybox",
                 "sh", "-c", SITE], stdin=slave, stdout=slave, stderr=slave))
            os.close(slave)
        for i in range(n):
            for kind, prefix, lean in kinds:
                monitor, proxy = wait_running(root, f"{prefix}{i}", lean)
                sizes[kind].append((rollup(monitor), rollup(proxy)))
    finally:
        for name in [f"{prefix}{i}" for i in range(n) for _, prefix, _ in kinds]:
            subprocess.run([*MINIBOX, "rm", "-f", name], capture_output=True)
        for process in foreground:
            process.wait()
        for master in terminals:
            os.close(master)
    print(f"{n} containers of each kind, KiB per container (median); load: "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'':8} {'monitor Rss':>12} {'Pss':>7} {'proxy Rss':>10} {'Pss':>7} "
          f"{'sum Rss':>8} {'sum Pss':>8}")
    for kind, measured in sizes.items():
        monitor_rss = statistics.median(m["Rss"] for m, _ in measured)
        monitor_pss = statistics.median(m["Pss"] for m, _ in measured)
        proxy_rss = statistics.median(p["Rss"] for _, p in measured)
        proxy_pss = statistics.median(p["Pss"] for _, p in measured)
        print(f"{kind:8} {monitor_rss:12.0f} {monitor_pss:7.0f} {proxy_rss:10.0f} "
              f"{proxy_pss:7.0f} {monitor_rss + proxy_rss:8.0f} {monitor_pss + proxy_pss:8.0f}")


if __name__ == "__main__":
    if "MINIBOX_ROOT" not in os.environ:  # once: a private netns and state root, then again
        with tempfile.TemporaryDirectory(prefix="minibox-bench-") as private_root:
            sys.exit(subprocess.run(
                ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "-",
                 sys.executable, *sys.argv], cwd=PROJECT,
                env=dict(os.environ, MINIBOX_ROOT=private_root)).returncode)
    main()
