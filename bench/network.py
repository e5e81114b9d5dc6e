"""Per-container network setup and teardown: minibox against `ip` commands and naive pyroute2.

Setup = what a bridge container needs once its init sits in a new netns: a veth pair with
the host end on minibox0 and the peer named eth0 in the container, an address, eth0 up, a
default route. Teardown = deleting the pair (and, for minibox, releasing the lease).

    minibox        network.connect()/disconnect(): peer created in the netns, the inside
                   configured from a thread that setns(2)'d there, plus the file-locked
                   IPAM lease (flock + JSON read/write)
    ip commands    `ip link add ... netns PID`, then 3 x `nsenter --net ... ip ...`
                   (no IPAM: addresses come from a counter)
    naive pyroute2 the same netlink requests, the inside through IPRoute(netns=PATH), which
                   forks a helper process to open its socket (no IPAM)

As in the runtime, each "container" is a process forked right before setup that has
unshared its netns; methods are interleaved so a noisy moment hits all alike. Everything
happens inside a private network namespace made for the run. Import times are measured
separately in fresh interpreters. Run as root: `sudo .venv/bin/python bench/network.py [-n 40]`.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from minibox import network, syscalls  # noqa: E402  (after the path fix above)


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


def with_minibox(index, pid):
    container_id = f"bench{index:07d}"
    started = time.perf_counter()
    network.connect(container_id, pid)
    set_up = time.perf_counter()
    network.disconnect(container_id)
    return set_up - started, time.perf_counter() - set_up


def with_ip_commands(index, pid):
    name, address = f"mbip{index}", f"10.199.{1 + index // 250}.{2 + index % 250}/16"
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip"]
    started = time.perf_counter()
    for argv in (["ip", "link", "add", name, "master", network.BRIDGE, "up", "type", "veth",
                  "peer", "name", "eth0", "netns", str(pid)],
                 inside + ["addr", "add", address, "dev", "eth0"],
                 inside + ["link", "set", "eth0", "up"],
                 inside + ["route", "add", "default", "via", "10.199.0.1"]):
        subprocess.run(argv, check=True)
    set_up = time.perf_counter()
    subprocess.run(["ip", "link", "del", name], check=True)
    return set_up - started, time.perf_counter() - set_up


def with_naive_pyroute2(index, pid):
    from pyroute2.iproute.linux import IPRoute
    name, address = f"mbpy{index}", f"10.199.{1 + index // 250}.{2 + index % 250}"
    started = time.perf_counter()
    with IPRoute() as host:
        (bridge,) = host.link_lookup(ifname=network.BRIDGE)
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        host.link("add", ifname=name, kind="veth", master=bridge, state="up",
                  peer={"ifname": "eth0", "net_ns_fd": netns})
        os.close(netns)
    with IPRoute(netns=f"/proc/{pid}/ns/net", flags=0) as inside:
        (eth0,) = inside.link_lookup(ifname="eth0")
        inside.addr("add", index=eth0, address=address, prefixlen=16)
        inside.link("set", index=eth0, state="up")
        inside.route("add", dst="default", gateway="10.199.0.1")
    set_up = time.perf_counter()
    with IPRoute() as host:
        host.link("del", ifname=name)
    return set_up - started, time.perf_counter() - set_up


METHODS = {"minibox": with_minibox, "ip commands": with_ip_commands,
           "naive pyroute2 (NetNS fork)": with_naive_pyroute2}


def import_times(runs=7):
    """Median ms to import minibox.network (its own share: the modules every container
    loads anyway come first) and then pyroute2's IPRoute."""
    probe = ("import time, minibox.explain, minibox.namespaces, minibox.state; "
             "t = time.perf_counter(); import minibox.network; "
             "u = time.perf_counter(); from pyroute2.iproute.linux import IPRoute; "
             "print(u - t, time.perf_counter() - u)")
    samples = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True, cwd=PROJECT).stdout.split() for _ in range(runs)]
    return [statistics.median(float(sample[i]) for sample in samples) * 1e3 for i in (0, 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="containers per method")
    rounds = parser.parse_args().n
    if os.geteuid() != 0:
        sys.exit("bench/network.py: must be run as root")
    # A private "host": the bridge and every veth vanish with this process.
    syscalls.unshare(syscalls.CLONE_NEWNET)
    network.bring_up_loopback()
    network.STORE_DIR = f"/tmp/minibox-bench-network-{os.getpid()}"
    os.environ[network.SUBNET_ENV] = "10.199.0.0/16"

    results = {method: ([], []) for method in METHODS}
    warm_up = fork_container()
    network.connect("warmup", warm_up)  # creates minibox0; loads pyroute2 for every method
    network.disconnect("warmup")
    os.kill(warm_up, 9)
    os.waitpid(warm_up, 0)
    for index in range(rounds):
        for method, measure in METHODS.items():
            pid = fork_container()
            try:
                set_up, torn_down = measure(index, pid)
            finally:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            results[method][0].append(set_up)
            results[method][1].append(torn_down)
    network.remove_bridge()
    os.rmdir(network.STORE_DIR)

    module_ms, pyroute2_ms = import_times()
    print(f"{rounds} containers per method, in ms: median [min, p90]; kernel "
          f"{os.uname().release}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| method | setup | teardown | setup + teardown |")
    print("|---|---|---|---|")
    for method, (set_ups, teardowns) in results.items():
        totals = [a + b for a, b in zip(set_ups, teardowns)]
        print(f"| {method} | {ms(set_ups)} | {ms(teardowns)} | {ms(totals)} |")
    print(f"\nimport, fresh interpreter: minibox.network {module_ms:.1f} ms (without pyroute2; "
          f"every container), then pyroute2's IPRoute {pyroute2_ms:.0f} ms (bridge containers)")


def ms(samples):
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"{statistics.median(samples) * 1e3:.1f} [{min(samples) * 1e3:.1f}, {p90 * 1e3:.1f}]"


if __name__ == "__main__":
    main()
