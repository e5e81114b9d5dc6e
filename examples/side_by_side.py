"""Containers and virtual machines, side by side: the same probe in a minibox container and
in a minivm guest, one table, every cell measured now.

    sudo .venv/bin/python examples/side_by_side.py          # the table (what `sudo make demo` runs)
    sudo .venv/bin/python examples/side_by_side.py --json   # the same cells and the raw numbers
    sudo .venv/bin/python examples/side_by_side.py -n 5     # 5 containers vs 5 VMs at once
    sudo .venv/bin/python examples/side_by_side.py --html room.html   # a page to project

The probe (PROBE below) is one busybox shell script. It runs as `minibox run -i busybox sh -c
PROBE` and as `minivm run -i -- sh -c PROBE`: same shell, same commands, different isolation.
It prints what it can see in @@sections, writes a file to its own root and one to a folder
shared with the host, starts a web server, says @@ready and waits on stdin. While it waits,
this script measures it from the host (memory, network). Then it tells the probe to crash
(SIGSEGV), starts a replacement at once, like a supervisor or a load balancer would, and the
replacement reports which of the two files survived.

How the cells are measured:
- time to first instruction: from starting `minibox run` / `minivm run` to the probe's first
  line arriving here (so it includes each tool's own Python start-up).
- memory per instance, while the probe waits: container = its cgroup's memory usage (cgroups(7):
  memory.usage_in_bytes on v1, memory.current on v2) + the PSS of its monitor, the `minibox
  run` process, once it waits as it will for the container's life: in a bare interpreter,
  after its first second (minibox/supervisor.py; its cmdline then names wait_then_resume);
  VM = the PSS of the qemu process (proc(5): /proc/PID/smaps_rollup) + the PSS of
  the `minivm run` process that watches it. PSS divides shared pages among their users, so
  the PSS of N instances adds up to what they really take together.
- size deployed: the files of the image's layers vs the guest kernel QEMU loads + initramfs.
- persistent storage: the probe writes one file to its own root and one to a host folder
  shared with it (`-v`: a bind mount for the container, virtio-9p for the VM); the
  replacement reads both back, and this script looks for the shared one on the host.
- networking: both sides join the bridge minibox0 (a veth per container, a virtio NIC on a
  tap per VM, addresses from one pool). The probe lists its interfaces; from the host, this
  script finds each one's other end (the veth peer by its ifindex, the tap in qemu's open
  files) and its bridge, and fetches a page from the probe's busybox httpd over minibox0.
- N instances: N launched at once; the time until each has printed its first line; the sum of
  their memory while all of them run.
A cell that cannot be measured here (no guest kernel, no address) says "not available: <why>".
All network traffic stays between the host and the namespaces or guests started here.
"""
import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

MIB = 1024 * 1024
WEB_PORT = 8080
OWN_FILE, SHARED_FILE = "/side-by-side-own", "/shared/side-by-side-shared"

# $1: "first" (probe, wait, crash) or "again" (the replacement: which file survived?).
PROBE = r"""
echo @@started
section() { echo "@@$1"; }
if [ "$1" = again ]; then
    section own_file; cat OWN_FILE 2>&1
    section shared_file; cat SHARED_FILE 2>&1
    exit 0
fi
section kernel; uname -r
section uptime; cut -d' ' -f1 /proc/uptime
section cpu; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2
section processes; for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done
section dev; ls /dev
section mounts; cat /proc/self/mountinfo
section dmesg; dmesg 2>&1 | head -n 1
section sysctl; ( echo 10 > /proc/sys/vm/swappiness ) 2>&1 && echo changed
cat /proc/sys/vm/swappiness
section net
for dev in /sys/class/net/*; do
    name=${dev##*/}
    driver=$(readlink $dev/device/driver 2>/dev/null)
    echo "$name ifindex=$(cat $dev/ifindex) iflink=$(cat $dev/iflink) driver=${driver##*/}"
done
ip -o -4 addr show | while read -r index name family address rest; do echo "$name $address"; done
mkdir -p /tmp/www && echo side-by-side > /tmp/www/index.html && httpd -p WEB_PORT -h /tmp/www
echo written > OWN_FILE
[ -d /shared ] && echo written > SHARED_FILE
# The empty line: minivm holds a last newline back until more output shows it is not the
# start of its own protocol line (minivm/console.py), so "@@ready" would arrive too late.
section ready; echo
read -r command
# PID 1 of a PID namespace ignores signals it has no handler for (pid_namespaces(7)): the
# crash happens in a child shell, and the probe exits with its status, 128 + SIGSEGV.
sh -c 'kill -SEGV $$'
exit $?
""".replace("OWN_FILE", OWN_FILE).replace("SHARED_FILE", SHARED_FILE).replace(
    "WEB_PORT", str(WEB_PORT))

# The N-instances row: start, say so, wait for a line on stdin, exit.
IDLE = "echo @@started; echo; read -r line"  # the empty line: see PROBE


class NotAvailable(Exception):
    """A capability this checkout does not have yet; the message says which and why."""


class Instance:
    """One container or VM, through the command that runs it: its output lines, in sections,
    with the time each arrived."""

    def __init__(self, argv, env):
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.sections = {}
        self.arrived = {}
        self.errors = []
        threading.Thread(target=self._read, args=(self.process.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.errors.append),
                         daemon=True).start()

    @staticmethod
    def _read(stream, deliver):
        for line in stream:
            deliver((time.monotonic(), line.rstrip("\n")))
        deliver(None)

    def wait_for(self, section, timeout=120):
        """Read output until `section` starts; return when it did (seconds after launch)."""
        current = None
        deadline = time.monotonic() + timeout
        while section not in self.arrived:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no @@{section} within {timeout} s: {self.stderr()}")
            if item is None:
                self.process.wait()
                raise RuntimeError(f"exited {self.process.returncode} before @@{section}: "
                                   f"{self.stderr()}")
            moment, line = item
            if line.startswith("@@"):
                current = line[2:]
                self.arrived[current] = moment - self.started
                self.sections[current] = []
            elif current is not None:
                self.sections[current].append(line)
        return self.arrived[section]

    def rest(self, timeout=60):
        """Everything it prints until it exits; its exit status."""
        status = self.process.wait(timeout=timeout)
        while True:
            item = self.lines.get(timeout=timeout)
            if item is None:
                return status
            moment, line = item
            if line.startswith("@@"):
                self.arrived[line[2:]] = moment - self.started
                self.sections[line[2:]] = []
            elif self.sections:
                self.sections[list(self.sections)[-1]].append(line)

    def send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self):
        """Ends it if it still runs: the runtime's SIGTERM handling tears everything down."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def stderr(self):
        said = [line for item in self.errors if item for line in [item[1]] if line.strip()]
        return said[-1] if said else "(no message)"


# --- what the host can measure about a process ---

def pss_bytes(pid):
    """Proportional set size: private pages + each shared page divided by its sharers."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def wait_lean(monitor, timeout=10):
    """Until a container's monitor has exec'd the bare interpreter it waits in (its first
    second it waits as the whole runtime: a short command ends before it would pay for it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{monitor}/cmdline", "rb") as cmdline:
                if b"wait_then_resume" in cmdline.read():
                    return
        except FileNotFoundError:
            raise NotAvailable("the container's monitor is gone") from None
        if time.monotonic() > deadline:
            raise NotAvailable(f"the monitor did not go lean within {timeout} s")
        time.sleep(0.02)


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # field 4 is the parent; comm (field 2) may hold spaces, so split after ")"
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError):
                continue
    return found


def cgroup_memory_bytes(pid):
    """What the kernel charges to the memory cgroup that pid is in."""
    with open(f"/proc/{pid}/cgroup") as cgroups:
        entries = [line.rstrip("\n").split(":", 2) for line in cgroups]
    for _, controllers, path in entries:
        if "memory" in controllers.split(","):
            with open(f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes") as usage:
                return int(usage.read())
    for hierarchy, _, path in entries:
        if hierarchy == "0" and os.path.exists(f"/sys/fs/cgroup{path}/memory.current"):
            with open(f"/sys/fs/cgroup{path}/memory.current") as current:
                return int(current.read())
    raise NotAvailable(f"PID {pid} is in no memory cgroup")


def tree_size(path):
    total = 0
    for directory, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(directory, name)).st_size for name in files)
    return total


# --- the two sides ---

class ContainerSide:
    title = "minibox container"

    def __init__(self, shared_dir):
        self.shared_dir = shared_dir

    def missing(self):
        return None

    def argv(self, script, *args, shared=False):
        volume = ["-v", f"{self.shared_dir}:/shared"] if shared else []
        # --network's default, bridge: each container gets a veth in minibox0
        return [sys.executable, "-m", "minibox", "run", "--rm", "-i", *volume, "busybox",
                "sh", "-c", script, "probe", *args]

    def memory(self, instance):
        """(bytes, how): the container's cgroup + its monitor (the `minibox run` process),
        once the monitor waits lean."""
        monitor = instance.process.pid
        wait_lean(monitor)
        init = children(monitor)
        if not init:
            raise NotAvailable("the container's PID 1 is gone")
        charged, monitor_pss = cgroup_memory_bytes(init[0]), pss_bytes(monitor)
        return charged + monitor_pss, f"cgroup {charged / MIB:.1f} + monitor {monitor_pss / MIB:.1f}"

    def deployed(self):
        from minibox import images
        layers = images.layers_of(images.resolve("busybox"))
        size = sum(tree_size(layer) for layer in layers)
        return f"busybox image: {size / MIB:.1f} MiB in {len(layers)} layer(s)"

    host_end_kind = "the veth's peer"

    @staticmethod
    def host_end(instance, iflink):
        """The host's end of a container's veth: the interface whose index is the iflink
        seen inside (veth(4): each end's iflink is its peer's ifindex)."""
        for name in os.listdir("/sys/class/net"):
            if _read(f"/sys/class/net/{name}/ifindex") == iflink:
                return name
        return None


class VMSide:
    title = "minivm guest"

    def __init__(self, shared_dir):
        self.shared_dir = shared_dir

    def missing(self):
        try:
            self.guest_kernel()
        except Exception as error:  # a MinivmError, said in one line
            return f"no guest kernel: {error}"
        return None

    @staticmethod
    def guest_kernel():
        from minivm import kernel
        return kernel.find(None, kernel.cache_dir(), lambda message: print(
            f"minivm: {message}", file=sys.stderr))

    def argv(self, script, *args, shared=False):
        share = ["-v", f"{self.shared_dir}:/shared"] if shared else []
        # Like the containers: every guest on minibox0 (a tap per VM).
        return [sys.executable, "-m", "minivm", "run", "-i", *share, "--network", "bridge",
                "--", "sh", "-c", script, "probe", *args]

    def memory(self, instance):
        """(bytes, how): qemu + the `minivm run` process that watches it."""
        watcher = instance.process.pid
        qemu = [pid for pid in children(watcher) if _comm(pid).startswith("qemu")]
        if not qemu:
            raise NotAvailable("the qemu process is gone")
        qemu_pss, watcher_pss = pss_bytes(qemu[0]), pss_bytes(watcher)
        return qemu_pss + watcher_pss, f"qemu {qemu_pss / MIB:.1f} + minivm {watcher_pss / MIB:.1f}"

    def deployed(self):
        from minivm import initramfs, kernel
        vmlinux = self.guest_kernel().vmlinux
        base, _ = initramfs.cached_base(kernel.cache_dir())
        return (f"kernel {os.path.getsize(vmlinux) / MIB:.1f} MiB + initramfs "
                f"{os.path.getsize(base) / MIB:.1f} MiB")

    host_end_kind = "a tap qemu holds"

    @staticmethod
    def host_end(instance, iflink):
        """The host's end of the guest's NIC: the tap qemu holds open (the guest's iflink
        means nothing to the host). proc(5): a /dev/net/tun fd's fdinfo says `iff: <tap>`."""
        for qemu in [pid for pid in children(instance.process.pid)
                     if _comm(pid).startswith("qemu")]:
            for fd in os.listdir(f"/proc/{qemu}/fd"):
                if os.readlink(f"/proc/{qemu}/fd/{fd}") == "/dev/net/tun":
                    return _read(f"/proc/{qemu}/fdinfo/{fd}").split("iff:")[1].split()[0]
        return None


def _comm(pid):
    try:
        return _read(f"/proc/{pid}/comm")
    except OSError:
        return ""


def _read(path):
    with open(path) as file:
        return file.read().strip()


# --- measuring one side ---

def measure(side, instances):
    """All cells of one column, and the raw numbers, as {row key: text}, {name: number}."""
    cells, numbers = {}, {}
    shared_file = os.path.join(side.shared_dir, os.path.basename(SHARED_FILE))
    if os.path.exists(shared_file):
        os.unlink(shared_file)  # the other side's: each side must write its own
    first = Instance(side.argv(PROBE, "first", shared=True), os.environ)
    try:
        first.wait_for("ready")
        numbers["start_seconds"] = first.arrived["started"]
        cells["start"] = f"{first.arrived['started']:.2f} s"
        cells.update(read_probe(first.sections))
        memory, how = side.memory(first)
        numbers["memory_bytes"] = memory
        cells["memory"] = f"{memory / MIB:.1f} MiB ({how})"
        cells.update(network_cells(side, first))
        crashed = time.monotonic()
        first.send("crash")
        status = first.rest()
        again = Instance(side.argv(PROBE, "again", shared=True), os.environ)
        try:
            again.wait_for("started")
            restart = again.started + again.arrived["started"] - crashed
            again.rest()
        finally:
            again.stop()
    finally:
        first.stop()
    numbers["restart_seconds"] = restart
    cells["restart"] = f"crashed (exit {status}), running again {restart:.2f} s later"
    survived = "survives" if again.sections["own_file"] == ["written"] else "is gone"
    cells["own_file"] = f"file written to its own root {survived} in the replacement"
    survived = "survives" if again.sections["shared_file"] == ["written"] else "is gone"
    on_host = "the host reads it" if os.path.exists(shared_file) else "not on the host"
    cells["shared_file"] = f"file written to the shared folder {survived} ({on_host})"
    cells["deployed"] = side.deployed()
    cells.update(many(side, instances, numbers))
    return cells, numbers


def read_probe(sections):
    """The isolation, operating-system and compatibility cells, from the probe's output."""
    host_kernel, host_uptime = os.uname().release, _host_uptime()
    kernel = sections["kernel"][0]
    uptime = float(sections["uptime"][0])
    processes = sections["processes"]
    mounts = sections["mounts"]
    host_paths = [option for line in mounts for option in _options_naming_host_paths(line)]
    revealing = sum(1 for line in mounts if _options_naming_host_paths(line))
    dmesg = sections["dmesg"][0] if sections["dmesg"] else "(empty)"
    ours = _comm(os.getpid())
    cells = {
        "processes": f"{len(processes)} ({_some(sorted(set(processes)))}); this script's "
                     f"process {'SEEN' if ours in processes else 'not among them'}",
        "devices": f"{len(sections['dev'])} in /dev ({_some(sections['dev'])})",
        "mounts": f"{len(mounts)} mounts, its own; "
                  + (f"the options of {revealing} name host paths ({host_paths[0][:40]}...)"
                     if host_paths else "none names a host path"),
        "dmesg": ("the host's kernel log: " if dmesg.startswith("[") and _host_dmesg() == dmesg
                  else "its own kernel log: " if dmesg.startswith("[") else "denied: ")
        + dmesg[:60],
        "kernel": (f"{kernel}: the host's" if kernel == host_kernel
                   else f"{kernel}: its own (the host runs {host_kernel})"),
        "uptime": (f"{uptime:.0f} s: the host's" if abs(uptime - host_uptime) < 60
                   else f"{uptime:.0f} s: its own (the host's is {host_uptime:.0f} s)"),
        "cpu": sections["cpu"][0].strip() if sections["cpu"] else "(none listed)",
        "other_kernel": ("yes: runs " + kernel if kernel != host_kernel
                         else "no: always the host's kernel"),
    }
    answer = sections["sysctl"]
    host_swappiness = _host_swappiness()
    if "changed" in answer:
        cells["sysctl"] = (f"vm.swappiness=10 set in the guest (reads {answer[-1]}); the "
                           f"host's is still {host_swappiness}")
    else:
        cells["sysctl"] = (f"vm.swappiness=10 refused ({answer[0].split(': ')[-1]}); the host's "
                           f"is still {host_swappiness}")
    return cells


def _options_naming_host_paths(mountinfo_line):
    """Mount options like lowerdir=/var/lib/... that name a path existing on the host."""
    options = mountinfo_line.split(" - ")[1].split()[-1].split(",")
    return [option for option in options
            if "=/" in option and os.path.exists(option.split("=", 1)[1].split(":")[0])]


def _some(names, shown=4):
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def network_cells(side, instance):
    """Its interfaces (and their host ends, found from the host), its address, and whether
    the host reaches the web server it started."""
    lines = instance.sections["net"]
    devices = [line.split() for line in lines if "ifindex=" in line]
    addresses = {line.split()[0]: line.split()[1] for line in lines if "ifindex=" not in line}
    described = []
    for name, ifindex, iflink, driver in devices:
        if name == "lo":
            continue
        ifindex, iflink, driver = (field.split("=")[1] for field in (ifindex, iflink, driver))
        kind = driver or ("veth" if ifindex != iflink else "no driver")
        host_end = side.host_end(instance, iflink)
        if host_end is None:
            described.append(f"{name} ({kind}); no end of it found on the host")
            continue
        master = f"/sys/class/net/{host_end}/master"
        plugged = (f"is a port of {os.path.basename(os.readlink(master))}"
                   if os.path.exists(master) else "is in no bridge")
        described.append(f"{name} ({kind}); its host end {host_end} ({side.host_end_kind}) "
                         f"{plugged}")
    outside = {name: address for name, address in addresses.items() if name != "lo"}
    cells = {"interface": "; ".join(described) or "lo only: no network device"}
    if not outside:
        cells["address"] = cells["reachable"] = "not available: no address but loopback"
        return cells
    name, address = next(iter(outside.items()))
    cells["address"] = f"{address} on {name}"
    cells["reachable"] = http_get(address.split("/")[0])
    return cells


def http_get(address):
    """One HTTP request from the host to the probe's web server (no proxy, this link only)."""
    started = time.monotonic()
    try:
        with socket.create_connection((address, WEB_PORT), timeout=5) as connection:
            connection.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := connection.recv(4096):
                reply += chunk
    except OSError as error:
        return f"no: {error}"
    answered = "side-by-side" in reply.decode(errors="replace")
    return (f"yes: HTTP from the host in {(time.monotonic() - started) * 1000:.1f} ms"
            if answered else f"connected, but the reply was {reply[:40]!r}")


def many(side, count, numbers):
    """N instances launched at once: time until all run, and their memory together."""
    launched = time.monotonic()
    instances = [Instance(side.argv(IDLE), os.environ) for _ in range(count)]
    try:
        for instance in instances:
            instance.wait_for("started")
        all_up = time.monotonic() - launched
        total = sum(side.memory(instance)[0] for instance in instances)
        for instance in instances:
            instance.send("done")
        for instance in instances:
            instance.rest()
    finally:
        for instance in instances:
            instance.stop()
    numbers.update(many_seconds=all_up, many_memory_bytes=total)
    return {"rate": f"{count / all_up:.1f} per second ({count} started at once)",
            "many": f"{count} running after {all_up:.2f} s, {total / MIB:.0f} MiB together"}


def _host_uptime():
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0])


def _host_swappiness():
    with open("/proc/sys/vm/swappiness") as swappiness:
        return swappiness.read().strip()


def _host_dmesg():
    lines = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    return lines[0] if lines else ""


# --- the table ---

ROWS = [
    ("Isolation", [("processes", "processes visible"), ("devices", "devices"),
                   ("mounts", "mount table"), ("dmesg", "kernel log (dmesg)")]),
    ("Operating system", [("kernel", "kernel release"), ("uptime", "uptime"),
                          ("cpu", "CPU model")]),
    ("Guest compatibility", [("other_kernel", "a kernel other than the host's"),
                             ("sysctl", "change a kernel setting")]),
    ("Deployment", [("start", "time to first instruction"), ("memory", "memory per instance"),
                    ("deployed", "size deployed")]),
    ("Persistent storage", [("shared_file", "bind mount / shared folder"),
                            ("own_file", "own root (layer / RAM)")]),
    ("Load balancing", [("rate", "instances started per second"),
                        ("restart", "restart after a crash")]),
    ("Networking", [("interface", "interface seen"), ("address", "its address"),
                    ("reachable", "reachable from the host")]),
    ("Containers are lighter?", [("many", "N at once: time, memory")]),
]


def columns(side, count):
    why = side.missing()
    if why:
        return {}, {}, f"not available: {why}"
    try:
        cells, numbers = measure(side, count)
        return cells, numbers, None
    except (NotAvailable, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return {}, {}, f"not available: {error}"


def table(container, vm, widths=(32, 42, 42)):
    (container_cells, container_default), (vm_cells, vm_default) = container, vm
    header = ("", ContainerSide.title, VMSide.title)
    rule = "+".join("-" * (width + 2) for width in widths)
    out = [_row(header, widths), rule]
    for group, items in ROWS:
        out.append(group)
        for key, label in items:
            cells = ("  " + label, container_cells.get(key, container_default),
                     vm_cells.get(key, vm_default))
            out.append(_row(cells, widths))
        out.append(rule)
    return "\n".join(out)


def table_rows(container, vm):
    """The table as dicts, for --json and --html: group, key, item, container, vm."""
    return [{"group": group, "key": key, "item": label,
             "container": container[0].get(key, container[2]), "vm": vm[0].get(key, vm[2])}
            for group, items in ROWS for key, label in items]


def _row(cells, widths):
    wrapped = [textwrap.wrap(cell or "", width) or [""] for cell, width in zip(cells, widths)]
    height = max(map(len, wrapped))
    return "\n".join(" | ".join(lines[i].ljust(width) if i < len(lines) else " " * width
                                for lines, width in zip(wrapped, widths)).rstrip()
                     for i in range(height))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--html", metavar="FILE", help="also write the table and bar charts "
                        "as one self-contained HTML page (side_by_side_html.py)")
    parser.add_argument("-n", "--instances", type=int, default=3,
                        help="how many containers and VMs to start at once (default 3)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("side_by_side.py: must be run as root (try sudo)")
    if not 1 <= args.instances <= 20:
        sys.exit(f"side_by_side.py: -n {args.instances}: choose 1 to 20")
    if args.html and not os.path.isdir(os.path.dirname(os.path.abspath(args.html))):
        sys.exit(f"side_by_side.py: --html {args.html}: no such directory")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as shared_dir:
        os.chmod(shared_dir, 0o777)
        results = {}
        for side in (ContainerSide(shared_dir), VMSide(shared_dir)):
            if not args.json:
                print(f"measuring the {side.title}...", file=sys.stderr, flush=True)
            results[side.title] = columns(side, args.instances)
    elapsed = time.monotonic() - started
    container, vm = results[ContainerSide.title], results[VMSide.title]
    footnote = f"N = {args.instances}; measured in {elapsed:.0f} s on {os.cpu_count()} CPUs, " \
        f"kernel {os.uname().release}"
    if args.html:
        import side_by_side_html
        with open(args.html, "w") as page:
            page.write(side_by_side_html.page(table_rows(container, vm), {
                "container": container[1], "vm": vm[1]}, args.instances, footnote))
    if args.json:
        print(json.dumps({"instances": args.instances, "seconds": round(elapsed, 1),
                          "rows": table_rows(container, vm), "container": container[1],
                          "vm": vm[1]}, indent=2))
        return
    print(table((container[0], container[2]), (vm[0], vm[2])))
    print(footnote)


if __name__ == "__main__":
    main()
