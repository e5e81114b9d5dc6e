"""Container start-up: `minibox run --rm busybox /bin/true` against runc, crun and bwrap.

All four start /bin/true from the same busybox root filesystem (minibox's image store) in
new mount, UTS, IPC, network, PID (and cgroup) namespaces. Runs are interleaved, so a
noisy moment of the machine hits every tool alike; the table shows medians and the ratio
to runc. `minibox` is `--network none`, a netns with lo only like runc's default config;
`minibox bridge` is the default network of `run` (a veth pair to minibox0, an address, a
route), on a bridge in a network namespace of the benchmark's own.
Run as root: `sudo .venv/bin/python bench/startup.py [-n 40]`.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SETTLE_SECONDS = 0.1
PROJECT = os.path.dirname(HERE)


def compile_bytecode():
    """Like `make setup`: with PYTHONDONTWRITEBYTECODE set and no .pyc files, every
    minibox start would compile its modules from source again (~40 ms)."""
    import compileall
    compileall.compile_dir(os.path.join(PROJECT, "minibox"), quiet=1)


def busybox_rootfs():
    sys.path.insert(0, PROJECT)
    from minibox import images
    # The store names layers by short symlinks (overlay's lowerdir length limit); runc
    # refuses a symlink as root.path.
    return os.path.realpath(images.layers_of(images.resolve("busybox"))[0])


def oci_bundle(rootfs, workdir):
    """A bundle like `runc spec` makes, running /bin/true without a terminal."""
    subprocess.run(["runc", "spec", "--bundle", workdir], check=True)
    path = os.path.join(workdir, "config.json")
    with open(path) as config_file:
        config = json.load(config_file)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config["root"] = {"path": rootfs, "readonly": True}
    namespaces = config["linux"]["namespaces"]
    if {"type": "cgroup"} not in namespaces:
        namespaces.append({"type": "cgroup"})  # minibox makes one too: compare like for like
    with open(path, "w") as config_file:
        json.dump(config, config_file)
    return workdir


def commands(rootfs, bundle):
    # --network none: like runc's default config, a netns with only lo (the bridge's own
    # share is measured in bench/network.py)
    minibox = [os.path.join(PROJECT, ".venv/bin/minibox"), "run", "--rm", "--network", "none",
               "busybox", "/bin/true"]
    on_bridge = [arg for arg in minibox if arg not in ("--network", "none")]
    tools = {"minibox": lambda i: minibox, "minibox bridge": lambda i: on_bridge}
    if shutil.which("runc"):
        tools["runc"] = lambda i: ["runc", "run", "--bundle", bundle, f"bench-runc-{i}"]
    if shutil.which("crun"):
        tools["crun"] = lambda i: ["crun", "run", "--bundle", bundle, f"bench-crun-{i}"]
    if shutil.which("bwrap"):
        tools["bwrap"] = lambda i: ["bwrap", "--unshare-all", "--bind", rootfs, "/",
                                    "--proc", "/proc", "--dev", "/dev", "/bin/true"]
    return tools


def hide_cgroup2_on_hybrid_hosts():
    """crun refuses hybrid hosts ("cgroups in hybrid mode not supported") while the empty
    cgroup2 mount is visible: run the whole benchmark in a private mount namespace without
    it, so every tool sees the same (v1-only) cgroup setup."""
    unified = "/sys/fs/cgroup/unified"
    if os.path.ismount(unified):
        from minibox import syscalls
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.umount2(unified, syscalls.MNT_DETACH)


def measure(tools, runs):
    times = {name: [] for name in tools}
    for i in range(runs):
        for name, argv in tools.items():
            # A pause, so that no run finds the cgroup lock's readers still on their slow
            # path from the run before (cgroups/grace.py): each one pays its own grace period,
            # as a single start on a quiet machine does.
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            result = subprocess.run(argv(i), stdin=subprocess.DEVNULL, capture_output=True)
            times[name].append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(f"{name} failed: {result.stderr.decode().strip()}")
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def prepare(script, doc):
    """What every benchmark starts with: -n RUNS, root, bytecode, the busybox rootfs, one
    cgroup setup for all tools. Returns (runs, rootfs)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"{script}: must be run as root")
    compile_bytecode()
    rootfs = busybox_rootfs()
    hide_cgroup2_on_hybrid_hosts()
    return args.runs, rootfs


def report(title, medians):
    print(f"{title} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for name, median in medians.items():
        print(f"  {name:14} {median:7.1f} ms")
    if "runc" in medians:
        for name in (name for name in medians if name.startswith("minibox")):
            print(f"{name}/runc = {medians[name] / medians['runc']:.2f}x")


def private_host_network():
    """The bridge of `minibox bridge` in a network namespace of our own, as the tests do: the
    host never sees minibox0. The other tools make their own netns anyway."""
    from minibox import network, syscalls
    syscalls.unshare(syscalls.CLONE_NEWNET)
    network.bring_up_loopback()


def main():
    runs, rootfs = prepare("bench/startup.py", __doc__)
    private_host_network()
    with tempfile.TemporaryDirectory() as workdir:
        tools = commands(rootfs, oci_bundle(rootfs, workdir))
        measure(tools, 3)  # warm the page cache and the image store
        medians = measure(tools, runs)
    from minibox import bridge
    bridge.remove_bridge()
    report(f"median of {runs} interleaved runs, /bin/true in busybox:", medians)


if __name__ == "__main__":
    main()
