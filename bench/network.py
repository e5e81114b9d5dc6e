"""Per-container network setup and teardown: minibox against `ip` commands and naive pyroute2.

Setup = what a bridge container needs once its init sits in a new netns: a veth pair with
the host end on minibox0 and the peer named eth0 in the container, an address, eth0 up, a
default route. Teardown = from the container's death (its netns goes with it, as when a
container's init exits) until the pair is gone (and, for minibox, the lease released).

    minibox        bridge.connect()/disconnect(): peer created in the netns, the inside
                   configured from a thread that setns(2)'d there, plus the file-locked
                   IPAM lease (flock + JSON read/write); teardown waits for the kernel to
                   delete the pair with the netns
    ip commands    `ip link add ... netns PID`, then 3 x `nsenter --net ... ip ...`
                   (no IPAM: addresses come from a counter); `ip link del`
    naive pyroute2 the same netlink requests, the inside through IPRoute(netns=PATH), which
                   forks a helper process to open its socket (no IPAM); RTM_DELLINK

As in the runtime, every container is measured in a fresh Python process (each `minibox
run` is one) that forks the "container" (a child that unshares its netns) right before
setup, so the copy-on-write faults that fork costs the parent are part of the numbers;
pyroute2 is imported after that fork, as in the runtime, and its import is timed apart.
Methods are interleaved so a noisy moment hits all alike, and everything happens inside
a private network namespace made for the run.
Run as root: `sudo .venv/bin/python bench/network.py [-n 40]`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from minibox import bridge, network, syscalls  # noqa: E402  (after the path fix above)


def fork_container():
    """A child in a new netns, like the init after unshare; returns its PID once it's there."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
            os.write(ready_write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_write)
    os.read(ready_read, 1)
    os.close(ready_read)
    return pid


def end_container(pid):
    """The container exits: SIGKILL, reaped; its netns dies with it."""
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def with_minibox(index, pid):
    container_id = f"bench{index:07d}"
    started = time.perf_counter()
    bridge.connect(container_id, pid)
    set_up = time.perf_counter()
    end_container(pid)
    died = time.perf_counter()
    bridge.disconnect(container_id)
    return set_up - started, time.perf_counter() - died


def with_ip_commands(index, pid):
    name, address = f"mbip{index}", f"10.199.{1 + index // 250}.{2 + index % 250}/16"
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip"]
    started = time.perf_counter()
    for argv in (["ip", "link", "add", name, "master", bridge.BRIDGE, "up", "type", "veth",
                  "peer", "name", "eth0", "netns", str(pid)],
                 inside + ["addr", "add", address, "dev", "eth0"],
                 inside + ["link", "set", "eth0", "up"],
                 inside + ["route", "add", "default", "via", "10.199.0.1"]):
        subprocess.run(argv, check=True)
    set_up = time.perf_counter()
    end_container(pid)
    died = time.perf_counter()
    subprocess.run(["ip", "link", "del", name], stderr=subprocess.DEVNULL)  # maybe gone
    return set_up - started, time.perf_counter() - died


def with_naive_pyroute2(index, pid):
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    name, address = f"mbpy{index}", f"10.199.{1 + index // 250}.{2 + index % 250}"
    started = time.perf_counter()
    with IPRoute() as host:
        (bridge_index,) = host.link_lookup(ifname=bridge.BRIDGE)
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        host.link("add", ifname=name, kind="veth", master=bridge_index, state="up",
                  peer={"ifname": "eth0", "net_ns_fd": netns})
        os.close(netns)
    with IPRoute(netns=f"/proc/{pid}/ns/net", flags=0) as inside:
        (eth0,) = inside.link_lookup(ifname="eth0")
        inside.addr("add", index=eth0, address=address, prefixlen=16)
        inside.link("set", index=eth0, state="up")
        inside.route("add", dst="default", gateway="10.199.0.1")
    set_up = time.perf_counter()
    end_container(pid)
    died = time.perf_counter()
    with IPRoute() as host:
        try:
            host.link("del", ifname=name)
        except NetlinkError:  # ENODEV: the kernel was quicker
            pass
    return set_up - started, time.perf_counter() - died


METHODS = {"minibox": with_minibox, "ip commands": with_ip_commands,
           "naive pyroute2 (NetNS fork)": with_naive_pyroute2}


def import_time(runs=7):
    """Median ms to import minibox.network in a fresh interpreter, after the modules every
    container loads anyway (its own share; pyroute2 is not imported)."""
    probe = ("import time, select, signal, socket, minibox.explain, minibox.namespaces, "
             "minibox.state; "
             "t = time.perf_counter(); import minibox.network; print(time.perf_counter() - t)")
    samples = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                    text=True, check=True, cwd=PROJECT).stdout)
               for _ in range(runs)]
    return statistics.median(samples) * 1e3


def worker(method, index, store_dir):
    """One container, measured in this fresh process; prints {import, setup, teardown} in s."""
    bridge.STORE_DIR = store_dir
    pid = fork_container()
    try:
        started = time.perf_counter()
        if method != "ip commands":
            from pyroute2.iproute.linux import IPRoute  # noqa: F401  (timed: the import)
        imported = time.perf_counter()
        set_up, torn_down = METHODS[method](index, pid)
    finally:
        try:
            end_container(pid)
        except ProcessLookupError:
            pass  # the method ended it (after setup), as it should
    print(json.dumps({"import": imported - started, "setup": set_up, "teardown": torn_down}))


def measure_in_fresh_process(method, index, store_dir):
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(index), store_dir],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="containers per method")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "INDEX", "STORE"),
                        help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        method, index, store_dir = options.worker
        return worker(method, int(index), store_dir)
    if os.geteuid() != 0:
        sys.exit("bench/network.py: must be run as root")
    # A private "host", inherited by the workers: the bridge and every veth vanish with it.
    syscalls.unshare(syscalls.CLONE_NEWNET)
    network.bring_up_loopback()
    store_dir = bridge.STORE_DIR = f"/tmp/minibox-bench-network-{os.getpid()}"
    os.environ[bridge.SUBNET_ENV] = "10.199.0.0/16"

    measure_in_fresh_process("minibox", 0, store_dir)  # creates minibox0 for every method
    results = {method: {"import": [], "setup": [], "teardown": []} for method in METHODS}
    for index in range(1, options.n + 1):
        for method in METHODS:
            for key, seconds in measure_in_fresh_process(method, index, store_dir).items():
                results[method][key].append(seconds)
    bridge.remove_bridge()
    os.rmdir(store_dir)

    print(f"{options.n} containers per method, each in a fresh process, in ms: median "
          f"[min, p90]; kernel {os.uname().release}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| method | setup | teardown | setup + teardown | pyroute2 import |")
    print("|---|---|---|---|---|")
    for method, times in results.items():
        totals = [a + b for a, b in zip(times["setup"], times["teardown"])]
        imports = ms(times["import"]) if method != "ip commands" else "-"
        print(f"| {method} | {ms(times['setup'])} | {ms(times['teardown'])} | {ms(totals)} "
              f"| {imports} |")
    print(f"\nminibox.network itself imports in {import_time():.1f} ms (no pyroute2: what a "
          "container with --network none or host pays)")


def ms(samples):
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"{statistics.median(samples) * 1e3:.1f} [{min(samples) * 1e3:.1f}, {p90 * 1e3:.1f}]"


if __name__ == "__main__":
    main()
