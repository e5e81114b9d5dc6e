"""What a container costs in memory outside itself: every process of its monitor's tree that
is not in the container's cgroups -- the monitor, and before issue 19's last step its port
proxy too.

N containers run `busybox httpd` on the bridge with a published port (-p), three ways,
started in turn so a noisy moment hits all alike:

    run -d       the detached monitor: the runtime sets up, then the monitor waits in a bare
                 interpreter (minibox/supervisor.py, waiting.py) that serves the port too
    run          the foreground `minibox run`
    run -t       the foreground run with a terminal (here a pty the script holds), relayed
                 by the same loop

With `--reference DIR` (a minibox tree, e.g. `git archive main minibox | tar -x -C DIR`)
the same containers run from that tree too, interleaved, in their own state root.

For every such process it reads Rss and Pss from /proc/<pid>/smaps_rollup (proc(5)): Rss
counts every page mapped, shared ones too (the interpreter, libc); Pss divides each shared
page among the processes mapping it, so the sum of Pss over N containers is what they cost
together. Medians per container, once each monitor waits (its cmdline names
wait_then_resume; a reference's `run -t` never does: then once it runs).
Everything runs in a private network namespace.
Run as root: `sudo .venv/bin/python bench/container_memory.py [-n 20] [--reference DIR]`.
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
SITE = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"
KINDS = (("run -d", "d"), ("run", "f"), ("run -t", "t"))


def rollup(pid):
    """{"Rss": KiB, "Pss": KiB} of a process."""
    with open(f"/proc/{pid}/smaps_rollup") as lines:
        fields = dict(line.split()[:2] for line in lines if line[:4] in ("Rss:", "Pss:"))
    return {name.rstrip(":"): int(kib) for name, kib in fields.items()}


def outside(monitor, init):
    """The processes of the monitor's tree (it included) not in the init's cgroups."""
    parents = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as stat:
                state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state != "Z":
            parents[int(name)] = int(parent)
    tree, fringe = {monitor}, {monitor}
    while fringe:
        fringe = {pid for pid, parent in parents.items() if parent in fringe} - tree
        tree |= fringe
    with open(f"/proc/{init}/cgroup") as cgroup:
        containers = cgroup.read()
    found = []
    for pid in tree:
        with open(f"/proc/{pid}/cgroup") as cgroup:
            if cgroup.read() != containers:
                found.append(pid)
    return found


class Tree:
    """One minibox tree: its own state root, names and ports."""

    def __init__(self, label, path, root, first_port):
        self.label, self.path, self.root, self.first_port = label, path, root, first_port
        self.foreground, self.terminals = [], []

    def minibox(self, *args, **kwargs):
        env = dict(os.environ, MINIBOX_ROOT=self.root)
        return subprocess.Popen([sys.executable, "-m", "minibox", *args], cwd=self.path,
                                env=env, **kwargs)

    def start(self, i):
        port = self.first_port + 3 * i
        self.minibox("run", "-d", "--name", f"d{i}", "-p", f"{port}:80", "busybox", "sh",
                     "-c", SITE, stdout=subprocess.DEVNULL).wait()
        self.foreground.append(self.minibox("run", "--name", f"f{i}", "-p", f"{port + 1}:80",
                                            "busybox", "sh", "-c", SITE,
                                            stdout=subprocess.DEVNULL))
        master, slave = os.openpty()
        self.terminals.append(master)
        self.foreground.append(self.minibox("run", "-t", "--name", f"t{i}", "-p",
                                            f"{port + 2}:80", "busybox", "sh", "-c", SITE,
                                            stdin=slave, stdout=slave, stderr=slave))
        os.close(slave)

    def measure(self, name, timeout=120):
        """[rollup, ...] of what the container `name` costs outside itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                container_id = os.readlink(os.path.join(self.root, "names", name))
                with open(os.path.join(self.root, container_id, "state.json")) as state:
                    current = json.load(state)
                with open(f"/proc/{current['monitor_pid']}/cmdline", "rb") as cmdline:
                    lean = b"wait_then_resume" in cmdline.read()
                runtime_waits = self.label == "reference" and name.startswith("t")
                if current.get("status") == "running" and (lean or runtime_waits):
                    time.sleep(0.5 if runtime_waits else 0)  # its proxy forked meanwhile
                    return [rollup(pid) for pid in outside(current["monitor_pid"],
                                                           current["pid"])]
            except (OSError, KeyError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.label} {name} never ran")

    def stop(self, n):
        for name in [f"{prefix}{i}" for i in range(n) for _, prefix in KINDS]:
            self.minibox("rm", "-f", name, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).wait()
        for process in self.foreground:
            process.wait()
        for master in self.terminals:
            os.close(master)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="containers of each kind")
    parser.add_argument("--reference", help="a minibox tree to measure too, interleaved")
    options = parser.parse_args()
    n = options.n
    with tempfile.TemporaryDirectory(prefix="minibox-bench-") as roots:
        trees = [Tree("this tree", PROJECT, os.path.join(roots, "this"), 19000)]
        if options.reference:
            trees.append(Tree("reference", options.reference, os.path.join(roots, "ref"), 19100))
        sizes = {(tree.label, kind): [] for tree in trees for kind, _ in KINDS}
        print(f"load at the start: {os.getloadavg()[0]:.2f}")
        try:
            for i in range(n):
                for tree in trees:
                    tree.start(i)
            for i in range(n):
                for tree in trees:
                    for kind, prefix in KINDS:
                        sizes[tree.label, kind].append(tree.measure(f"{prefix}{i}"))
        finally:
            for tree in trees:
                tree.stop(n)
    print(f"{n} containers of each kind, KiB per container outside itself (median); load at "
          f"the end: {os.getloadavg()[0]:.2f}")
    print(f"{'':22} {'processes':>9} {'Rss':>7} {'Pss':>7}")
    for (label, kind), measured in sizes.items():
        count = statistics.median(len(processes) for processes in measured)
        rss = statistics.median(sum(p["Rss"] for p in processes) for processes in measured)
        pss = statistics.median(sum(p["Pss"] for p in processes) for processes in measured)
        print(f"{label + ', ' + kind:22} {count:9.0f} {rss:7.0f} {pss:7.0f}")


if __name__ == "__main__":
    if "MINIBOX_BENCH_NETNS" not in os.environ:  # once: a private netns, then again
        sys.exit(subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "-",
             sys.executable, *sys.argv], cwd=PROJECT,
            env=dict(os.environ, MINIBOX_BENCH_NETNS="1")).returncode)
    main()
