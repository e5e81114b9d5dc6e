"""The OCI runtime command line on real containers: create/start/state/kill/delete/spec, the
config.json fields, hooks, the lifecycle rules -- and a differential test against runc."""
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from ..helpers import assert_one_line_error, busybox_layer
from tests.harness import ENGINE_IMAGE, ULIMITS, remove_cgroup_tree, wait_until

pytestmark = pytest.mark.root


@pytest.fixture
def bundle(tmp_path, minibox):
    """A bundle made by `minibox spec`, with the busybox image copied in as rootfs."""
    directory = tmp_path / "bundle"
    directory.mkdir()
    minibox("spec", "--bundle", str(directory))
    # builds the image in the private store (no bridge needed for that)
    minibox("run", "--rm", "--network", "none", "busybox", "true")
    shutil.copytree(busybox_layer(minibox.env["MINIBOX_STORE"]), directory / "rootfs",
                    symlinks=True)
    return directory


def configure(bundle, change):
    """Edit config.json: change(config) modifies the dict in place."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def set_args(bundle, *args):
    configure(bundle, lambda c: c["process"].__setitem__("args", list(args)))


def create(minibox, bundle, container_id, *options):
    """`minibox create`, its stdio on files: the container gets create's stdio, so with pipes
    the caller would wait for the container's end. Returns (stdout path, stderr path)."""
    out, err = bundle.parent / f"{container_id}.out", bundle.parent / f"{container_id}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        minibox("create", "--bundle", str(bundle), *options, container_id, stdout=stdout,
                stderr=stderr)
    return out, err


def oci_state(minibox, container_id):
    return json.loads(minibox("state", container_id).stdout)


def test_spec_writes_a_default_config_and_refuses_to_overwrite(minibox, tmp_path):
    minibox("spec", "--bundle", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"].startswith("1.") and config["root"]["path"] == "rootfs"
    assert {n["type"] for n in config["linux"]["namespaces"]} >= {"pid", "mount", "network"}
    again = minibox("spec", "--bundle", str(tmp_path), check=False)
    assert again.returncode == 125 and "exists" in again.stderr


def test_created_running_stopped_and_the_rules_between(minibox, bundle, tmp_path):
    set_args(bundle, "sleep", "60")
    pid_file = tmp_path / "pid"
    out, _ = create(minibox, bundle, "c1", "--pid-file", str(pid_file))
    assert out.read_text() == ""
    state = oci_state(minibox, "c1")
    assert (state["id"], state["status"], state["bundle"]) == ("c1", "created", str(bundle))
    assert set(state) == {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    pid = state["pid"]
    assert pid_file.read_text() == str(pid)  # the digits only
    # Blocked before exec, in its final namespaces.
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        assert os.stat(f"/proc/{pid}/ns/{kind}").st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino
    assert os.readlink(f"/proc/{pid}/exe") != "/bin/busybox"
    # delete without --force of a created container fails and changes nothing
    refused = minibox("delete", "c1", check=False)
    assert refused.returncode == 125 and oci_state(minibox, "c1")["status"] == "created"
    started = minibox("start", "c1", timeout=10)
    assert started.stdout == ""
    assert oci_state(minibox, "c1")["status"] == "running"
    assert minibox("start", "c1", check=False).returncode == 125
    refused = minibox("delete", "c1", check=False)
    assert refused.returncode == 125 and oci_state(minibox, "c1")["status"] == "running"
    minibox("kill", "c1", "KILL")
    wait_until(lambda: oci_state(minibox, "c1")["status"] == "stopped")
    assert oci_state(minibox, "c1")["pid"] == 0
    for command in (("start", "c1"), ("kill", "c1", "TERM")):
        refused = minibox(*command, check=False)
        assert_one_line_error(refused, 125, "minibox: ")
    assert oci_state(minibox, "c1")["status"] == "stopped"
    assert minibox("delete", "c1").stdout == ""
    gone = minibox("state", "c1", check=False)
    assert gone.returncode == 125 and "no such container" in gone.stderr


def test_create_hands_its_stdio_to_the_container_and_no_command_holds_a_pipe(minibox, bundle,
                                                                           tmp_path):
    set_args(bundle, "sh", "-c", "echo to-stdout; echo to-stderr >&2")
    out, err = create(minibox, bundle, "c2")
    # start/state/delete with pipes: run() reads them to EOF, so each returns only if no
    # process (monitor or container) kept them open.
    assert minibox("start", "c2", timeout=10).stdout == ""
    wait_until(lambda: oci_state(minibox, "c2")["status"] == "stopped")
    assert out.read_text() == "to-stdout\n" and err.read_text() == "to-stderr\n"
    minibox("delete", "c2", timeout=10)


def test_delete_force_of_a_running_container(minibox, bundle):
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "c3")
    minibox("start", "c3")
    pid = oci_state(minibox, "c3")["pid"]
    minibox("delete", "--force", "c3")
    assert minibox("state", "c3", check=False).returncode == 125
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"))


def test_kill_of_a_created_container_and_signal_numbers(minibox, bundle):
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "c4")
    minibox("kill", "c4", "9")
    wait_until(lambda: oci_state(minibox, "c4")["status"] == "stopped")
    minibox("delete", "c4")


def test_config_edits_after_create_have_no_effect(minibox, bundle, tmp_path):
    set_args(bundle, "sh", "-c", "echo original")
    out, _ = create(minibox, bundle, "c5")
    set_args(bundle, "sh", "-c", "echo edited")
    configure(bundle, lambda c: c.__setitem__("hostname", "edited"))
    minibox("start", "c5")
    wait_until(lambda: oci_state(minibox, "c5")["status"] == "stopped")
    assert out.read_text() == "original\n"
    minibox("delete", "c5")


def probe_output(minibox, bundle, tmp_path, container_id, script):
    """Run `sh -c script` in a container from the bundle; return what it printed."""
    set_args(bundle, "sh", "-c", script)
    out, _ = create(minibox, bundle, container_id)
    minibox("start", container_id)
    wait_until(lambda: oci_state(minibox, container_id)["status"] == "stopped")
    minibox("delete", container_id)
    return out.read_text()


def test_config_fields_reach_the_process(minibox, bundle, tmp_path):
    def change(config):
        config["hostname"] = "probe-host"
        config["process"]["env"] = ["PATH=/bin:/usr/bin", "ONLY=this"]
        config["process"]["cwd"] = "/work/dir"
        config["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5],
                                     "umask": 0o27}
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
        config["process"]["oomScoreAdj"] = 500
        config["root"]["readonly"] = True
        config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["nosuid", "size=1m", "mode=1777"]})
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        config["linux"]["maskedPaths"] = ["/proc/kcore", "/etc/hostname-secret"]
        config["linux"]["readonlyPaths"] = ["/proc/sys"]
        config["annotations"] = {"org.example/key": "value"}
        config["someFutureField"] = {"accepted": True}
    configure(bundle, change)
    (bundle / "rootfs/etc/hostname-secret").write_text("secret\n")
    out = probe_output(minibox, bundle, tmp_path, "fields", (
        "echo host=$(hostname) uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,);"
        "echo cwd=$(pwd) umask=$(umask) nofile=$(ulimit -n)/$(ulimit -Hn);"
        "echo oom=$(cat /proc/self/oom_score_adj) forward=$(cat /proc/sys/net/ipv4/ip_forward);"
        "touch /rootfile 2>/dev/null && echo root=rw || echo root=ro;"
        "touch /scratch/f && echo scratch=rw;"
        "echo masked=$(cat /etc/hostname-secret | wc -c)/$(cat /proc/kcore | wc -c);"
        "(echo 0 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && echo sys=rw || echo sys=ro;"
        "env | sort"))
    facts = dict(word.split("=", 1) for line in out.splitlines() for word in line.split())
    assert facts == {
        "host": "probe-host", "uid": "1000", "gid": "1001", "groups": "1001,5",
        "cwd": "/work/dir", "umask": "0027", "nofile": "123/456", "oom": "500",
        "forward": "1", "root": "ro", "scratch": "rw", "masked": "0/0", "sys": "ro",
        # the environment is config.json's, plus what sh itself sets and HOME
        "ONLY": "this", "PATH": "/bin:/usr/bin", "PWD": "/work/dir", "SHLVL": "1",
        "HOME": "/"}  # uid 1000 has no /etc/passwd entry: HOME=/, as runc


def test_exec_takes_pid_1s_steps(minibox, bundle):
    """exec and PID 1 share init.py's steps: an exec'd process gets the config's rlimits,
    OOM score, umask and HOME, as PID 1 does (runc exec the same)."""
    def change(config):
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
        config["process"]["oomScoreAdj"] = 500
        config["process"]["user"] = {"uid": 0, "gid": 0, "umask": 0o27}
        config["process"]["env"] = ["PATH=/bin:/usr/bin"]
    configure(bundle, change)
    set_args(bundle, "sleep", "30")
    create(minibox, bundle, "same-steps")
    minibox("start", "same-steps")
    try:
        probe = 'echo $(ulimit -n)/$(ulimit -Hn) $(cat /proc/self/oom_score_adj) $(umask) "$HOME"'
        pid1 = minibox("exec", "same-steps", "sh", "-c", f"cat /proc/1/limits | grep files; "
                       "cat /proc/1/oom_score_adj; tr '\\0' '\\n' < /proc/1/environ").stdout
        assert "123" in pid1 and "500" in pid1 and "HOME=/root" in pid1
        assert minibox("exec", "same-steps", "sh", "-c", probe).stdout.split() == [
            "123/456", "500", "0027", "/root"]
    finally:
        minibox("delete", "--force", "same-steps")

# runc's AllowedDevices as nodes to make (name, type, major, minor), and /dev/loop-control,
# which is not in it (and opens for anyone allowed to open the node). tty says ENXIO and the pty EIO (no controlling terminal, a locked pty): both
# errors of the driver, so the device cgroup let the open(2) through.
DEVICE_NODES = [("null", "c", 1, 3), ("zero", "c", 1, 5), ("full", "c", 1, 7),
                ("random", "c", 1, 8), ("urandom", "c", 1, 9), ("tty", "c", 5, 0),
                ("ptmx", "c", 5, 2), ("loop-control", "c", 10, 237)]


def open_device_nodes(minibox, bundle, tmp_path, disk, container_id, devices=None):
    """In an OCI container with CAP_MKNOD and a tmpfs mounted WITHOUT nodev (what a bundle
    may ask for): mknod each of DEVICE_NODES and the host disk there, open each.
    Returns {name: "ok" | the shell's error}; the disk reports its first 8 bytes."""
    def change(config):
        for kind in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][kind].append("CAP_MKNOD")
        config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["dev", "mode=755"]})
        if devices is not None:
            config["linux"]["resources"]["devices"] = devices
    configure(bundle, change)
    nodes = DEVICE_NODES + [("disk", "b", *disk)]
    script = ";".join(
        f"mknod /scratch/{name} {kind} {major} {minor};"
        f"(exec 3<>/scratch/{name}) 2>/dev/null && echo {name}=ok || "
        f"echo {name}=$( (exec 3<>/scratch/{name}) 2>&1 | sed 's/.*: //' | tr ' ' _)"
        for name, kind, major, minor in nodes) + ";echo read=$(head -c 8 /scratch/disk)"
    out = probe_output(minibox, bundle, tmp_path, container_id, script)
    return dict(line.split("=", 1) for line in out.splitlines())


def test_default_device_rules_refuse_the_host_disk_on_a_mount_without_nodev(
        minibox, bundle, tmp_path, host_disk):
    """runc's default rules in the container's devices cgroup: nodev is not the only line."""
    opened = open_device_nodes(minibox, bundle, tmp_path, host_disk, "devices-default")
    refused = "Operation_not_permitted"
    assert opened["disk"] == refused and opened["read"] == ""
    assert opened["loop-control"] == refused
    allowed = {name: opened[name] for name in ("null", "zero", "full", "random", "urandom")}
    assert allowed == dict.fromkeys(allowed, "ok")
    assert opened["tty"] == "No_such_device_or_address"  # ENXIO: no controlling terminal
    assert opened["ptmx"] != refused


def test_a_bundle_that_allows_every_device_reads_the_host_disk(minibox, bundle, tmp_path,
                                                                host_disk):
    """The same container with Docker's --privileged rule: proof the refusal was the rule's."""
    opened = open_device_nodes(minibox, bundle, tmp_path, host_disk, "devices-all",
                               devices=[{"allow": True, "access": "rwm"}])
    assert opened["disk"] == "ok" and opened["read"] == "HOSTDISK"
    assert opened["loop-control"] == "ok"


def test_joining_an_existing_network_namespace_and_refusing_a_wrong_type(minibox, bundle,
                                                                         tmp_path):
    holder = minibox.run_detached("busybox", "sleep", "60")
    holder_pid = minibox.state(holder)["pid"]
    net_path = f"/proc/{holder_pid}/ns/net"

    def join(kind, path):
        def change(config):
            for namespace in config["linux"]["namespaces"]:
                if namespace["type"] == kind:
                    namespace["path"] = path
        return change
    configure(bundle, join("network", f"/proc/{holder_pid}/ns/uts"))
    wrong = minibox("create", "--bundle", str(bundle), "wrongtype", check=False)
    assert wrong.returncode == 125 and "another type" in wrong.stderr
    assert "wrongtype" not in minibox.container_dirs()
    configure(bundle, join("network", net_path))
    out = probe_output(minibox, bundle, tmp_path, "joined", "readlink /proc/self/ns/net")
    assert out.strip() == os.readlink(net_path)


def test_joining_ipc_and_cgroup_namespaces_by_path(minibox, bundle):
    """linux.namespaces with a path: setns(2) into that ipc and cgroup namespace, the
    init's /proc/<pid>/ns links then name the holder's."""
    holder = subprocess.Popen(["unshare", "--ipc", "--cgroup", "sleep", "60"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/cgroup")
                   != os.readlink("/proc/self/ns/cgroup"))
        paths = {kind: f"/proc/{holder.pid}/ns/{kind}" for kind in ("ipc", "cgroup")}

        def join(config):
            namespaces = [n for n in config["linux"]["namespaces"] if n["type"] not in paths]
            config["linux"]["namespaces"] = namespaces + [
                {"type": kind, "path": path} for kind, path in paths.items()]
        configure(bundle, join)
        set_args(bundle, "sleep", "60")
        create(minibox, bundle, "ns-joined")
        pid = oci_state(minibox, "ns-joined")["pid"]
        for kind, path in paths.items():
            assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(path) \
                != os.readlink(f"/proc/self/ns/{kind}")
        minibox("delete", "--force", "ns-joined")
    finally:
        holder.kill()
        holder.wait()


def test_joining_another_containers_mount_namespace_by_path(minibox, bundle, tmp_path):
    """The joined namespace's root is the container's: nothing is built or pivoted there,
    so the first container keeps its root and the second sees its files."""
    holder = minibox.run_detached("--network", "none", "busybox", "sleep", "60")
    holder_pid = minibox.state(holder)["pid"]
    minibox("exec", holder, "sh", "-c", "echo from-holder > /shared")
    mnt_path = f"/proc/{holder_pid}/ns/mnt"

    def join(config):
        for namespace in config["linux"]["namespaces"]:
            if namespace["type"] in ("mount", "pid"):
                namespace["path"] = f"/proc/{holder_pid}/ns/" + namespace["type"][:3].replace(
                    "mou", "mnt")
        for field in ("mounts", "maskedPaths", "readonlyPaths"):
            (config if field == "mounts" else config["linux"]).pop(field, None)
        config["root"].pop("readonly", None)
    configure(bundle, join)
    out = probe_output(minibox, bundle, tmp_path, "mnt-joined",
                       "cat /shared; readlink /proc/self/ns/mnt; stat -L -c %i /proc/self/ns/mnt; "
                       "cut -d' ' -f5 /proc/self/mountinfo | tr '\\n' ,")
    seen = minibox("exec", holder, "sh", "-c", "cat /shared; readlink /proc/self/ns/mnt; "
                   "stat -L -c %i /proc/self/ns/mnt; cut -d' ' -f5 /proc/self/mountinfo | "
                   "tr '\\n' ,").stdout
    assert out.split()[:2] == ["from-holder", os.readlink(mnt_path)]
    assert out.split()[2] == str(os.stat(mnt_path).st_ino)
    assert out.split() == seen.split()  # same files, same namespace, same mount table
    assert minibox("exec", holder, "cat", "/shared").stdout == "from-holder\n"
    configure(bundle, lambda c: c.__setitem__("mounts", [
        {"destination": "/x", "type": "tmpfs", "source": "tmpfs"}]))
    refused = minibox("create", "--bundle", str(bundle), "mnt-mounts", check=False)
    assert_one_line_error(refused, 125, "minibox: ", "mounts: minibox mounts nothing in a mount")
    configure(bundle, lambda c: (c.pop("mounts"), [n.__setitem__("path", f"/proc/{holder_pid}/ns/net")
                                                   for n in c["linux"]["namespaces"]
                                                   if n["type"] == "mount"]))
    wrong = minibox("create", "--bundle", str(bundle), "mnt-wrong", check=False)
    assert_one_line_error(wrong, 125, "minibox: ", "is a namespace of another type")
    assert "mnt-mounts" not in minibox.container_dirs()
    minibox("rm", "-f", holder)


def test_the_hostname_is_set_in_a_uts_namespace_joined_by_path(minibox, bundle, tmp_path):
    """As runc and crun: config.json's hostname goes to the joined namespace."""
    holder = minibox.run_detached("--network", "none", "busybox", "sleep", "60")
    uts_path = f"/proc/{minibox.state(holder)['pid']}/ns/uts"
    configure(bundle, lambda c: (c.__setitem__("hostname", "joined-host"), [
        n.__setitem__("path", uts_path) for n in c["linux"]["namespaces"] if n["type"] == "uts"]))
    out = probe_output(minibox, bundle, tmp_path, "uts-joined",
                       "readlink /proc/self/ns/uts; hostname")
    assert out.split() == [os.readlink(uts_path), "joined-host"]
    assert minibox("exec", holder, "hostname").stdout.strip() == "joined-host"
    minibox("rm", "-f", holder)


def test_the_configs_seccomp_rules_are_compiled(minibox, bundle, tmp_path):
    configure(bundle, lambda c: c["linux"].__setitem__("seccomp", {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13},
                     {"names": ["rmdir", "no_such_call_here"], "action": "SCMP_ACT_ERRNO"}]}))
    out = probe_output(minibox, bundle, tmp_path, "filtered", (
        "grep ^Seccomp: /proc/self/status; mkdir /dev/shm/d 2>&1; rmdir /dev/shm 2>&1;"
        "touch /dev/shm/f && echo touch=ok"))
    assert out.splitlines() == [
        "Seccomp:\t2",
        "mkdir: can't create directory '/dev/shm/d': Permission denied",  # errnoRet 13
        "rmdir: '/dev/shm': Operation not permitted",  # the default, EPERM
        "touch=ok"]


def test_a_profile_of_hundreds_of_calls_with_argument_rules_runs(minibox, bundle, tmp_path):
    """Past 127 names a classic BPF conditional jump cannot reach the end of the filter: this
    crashed `start` with "ubyte format requires 0 <= number <= 255" before trampolines."""
    from minibox.syscall_numbers import X86_64
    harmless = sorted(set(X86_64) - {"personality", "mkdir", "mkdirat"})
    configure(bundle, lambda c: c["linux"].__setitem__("seccomp", {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": harmless, "action": "SCMP_ACT_ALLOW"},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
                     {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13, "args": [{"index": 1, "value": 0o700,
                                                "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 0o700}]}]}))
    out = probe_output(minibox, bundle, tmp_path, "long", (
        "grep ^Seccomp: /proc/self/status; mkdir /dev/shm/a 2>&1 && echo a=ok;"
        "touch /dev/shm/b && echo b=ok"))
    assert out.splitlines() == [
        "Seccomp:\t2",
        "mkdir: can't create directory '/dev/shm/a': Permission denied",  # 0o777 & 0o700
        "b=ok"]


def new_user_namespace(uid_base, gid_base):
    """A config.json change: a new user namespace mapping container ids 0-65535 to host
    uids from uid_base and gids from gid_base."""
    def change(config):
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid_base, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid_base, "size": 65536}]
    return change


def test_a_new_user_namespace_gets_the_configs_id_maps(minibox, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    configure(bundle, new_user_namespace(200000, 300000))
    configure(bundle, lambda c: c["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind"]}))
    out = probe_output(minibox, bundle, tmp_path, "mapped",
                       "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /data/by-root")
    uid_map, gid_map, uid = out.splitlines()
    assert (uid_map.split(), gid_map.split(), uid) == (
        ["0", "200000", "65536"], ["0", "300000", "65536"], "0")
    made = (shared / "by-root").stat()
    assert (made.st_uid, made.st_gid) == (200000, 300000)


def test_joining_an_existing_user_namespace_by_path(minibox, bundle, tmp_path):
    configure(bundle, new_user_namespace(200000, 200000))
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "owner")
    owner_pid = oci_state(minibox, "owner")["pid"]
    user_path = f"/proc/{owner_pid}/ns/user"

    def join(config):
        config["linux"]["namespaces"][-1]["path"] = user_path
        del config["linux"]["uidMappings"], config["linux"]["gidMappings"]
    configure(bundle, join)
    out = probe_output(minibox, bundle, tmp_path, "joiner",
                       "readlink /proc/self/ns/user; cat /proc/self/uid_map")
    namespace, uid_map = out.splitlines()
    assert namespace == os.readlink(user_path) and uid_map.split() == ["0", "200000", "65536"]
    minibox("delete", "--force", "owner")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.__setitem__("ociVersion", "0.9"), "unsupported ociVersion"),
    (lambda c: c.__setitem__("ociVersion", 1), "unsupported ociVersion"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NO_SUCH"),
     "unknown capability 'CAP_NO_SUCH'"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}),
     "unknown rlimit 'RLIMIT_NOPE'"),
    (lambda c: c["process"].__setitem__("args", []), "process.args"),
    (lambda c: c["process"].__setitem__("terminal", True), "console socket"),
    (lambda c: c["linux"].__setitem__("sysctl", {"kernel.panic": "1"}),
     "not in a separate kernel namespace"),
    (lambda c: c["root"].__setitem__("path", "nosuchdir"), "root.path"),
    (lambda c: c["linux"].__setitem__("uidMappings", [{"containerID": 0, "hostID": 1, "size": 1}]),
     "need a user namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "maps no container uid 0"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_NOPE"}),
     "defaultAction 'SCMP_ACT_NOPE' is not a seccomp action"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_NOTIFY"}),
     "SCMP_ACT_NOTIFY (a user-space supervisor) is not supported"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}]}),
     "index 6: a system call has arguments 0 to 5"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_XX"}]}]}),
     "op 'SCMP_CMP_XX' is not a comparison"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                                                  "architectures": ["SCMP_ARCH_ARM"]}),
     "architectures: 'SCMP_ARCH_ARM' is not an x86 ABI"),
    (lambda c: c["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                                                  "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}),
     "flags: 'SECCOMP_FILTER_FLAG_NEW_LISTENER' is not supported"),
    (lambda c: (new_user_namespace(200000, 200000)(c),
                c["process"]["user"].__setitem__("uid", 70000)), "maps no container uid 70000"),
    (lambda c: c["mounts"].append({"destination": "/x", "source": "/tmp"}),
     "mounts[7] (/x): no type"),
    (lambda c: c["process"].__setitem__("args", ["echo", "a\0b"]), "process.args[1]"),
    (lambda c: c["process"]["env"].append("A=1\0B=2"), "process.env"),
    (lambda c: c["linux"]["resources"]["devices"].append({"allow": True, "type": "p"}),
     "linux.resources.devices[]: type must be a, b or c, not 'p'"),
    (lambda c: c["linux"]["resources"]["devices"].append({"allow": True, "access": "rx"}),
     "linux.resources.devices[]: access must be letters of rwm, not 'rx'"),
    (lambda c: c["linux"]["resources"]["devices"].append({"type": "c"}),
     "linux.resources.devices[]: allow (true or false) is required"),
    (lambda c: c["linux"]["resources"].__setitem__("hugepageLimits", [
        {"pageSize": "2M", "limit": 1 << 21}]),
     "linux.resources.hugepageLimits[]: pageSize '2M' is not a huge page size"),
    (lambda c: c["linux"]["resources"].__setitem__("blockIO", {"leafWeight": 300}),
     "linux.resources.blockIO.leafWeight is not supported"),
    (lambda c: c["linux"]["resources"].__setitem__("cpu", {"shares": 512, "cpus": "0-"}),
     "linux.resources.cpu.cpus: '0-' is not a list of CPUs"),
    (lambda c: c["linux"]["resources"].__setitem__("cpu", {"realtimeRuntime": 1000}),
     "linux.resources.cpu.realtimeRuntime is not supported"),
    (lambda c: c["linux"]["resources"].__setitem__("memory", {"swappiness": 101}),
     "swappiness must be from 0 to 100, not 101"),
    (lambda c: c["linux"].__setitem__("cgroupsPath", "/a/../b"), "linux.cgroupsPath '/a/../b'"),
    (lambda c: c["mounts"].append({"destination": "/v", "type": "bind", "source": "/tmp",
                                   "options": ["rbind", "rro"]}),
     "mounts[/v]: option 'rro' (mount_setattr(2)) is not supported"),
    (lambda c: c["mounts"].append({"destination": "/v", "type": "bind", "source": "/tmp",
                                   "options": ["bind", "idmap"]}), "option 'idmap'"),
    (lambda c: c["linux"].__setitem__("namespaces", [
        n for n in c["linux"]["namespaces"] if n["type"] != "uts"]),
     "hostname needs a uts namespace (new or joined)"),
    (lambda c: c["linux"].__setitem__("cgroupsPath", "docker:p:x"), "'docker' is not a slice"),
    # runc then mounts in the caller's namespace; minibox refuses in one line
    (lambda c: c["linux"].__setitem__("namespaces", [
        n for n in c["linux"]["namespaces"] if n["type"] != "mount"]),
     "linux.namespaces must include a mount namespace"),
    (lambda c: c["process"]["capabilities"]["effective"].append("CAP_CHOWN"),
     "process.capabilities.effective: CHOWN not in permitted"),
])
def test_invalid_configs_are_refused_with_one_line(minibox, bundle, change, message):
    configure(bundle, change)
    result = minibox("create", "--bundle", str(bundle), "bad", check=False)
    assert_one_line_error(result, 125, "minibox: ", message)
    assert minibox.container_dirs() == []


def test_a_capability_minibox_lacks_is_named(minibox, bundle):
    """A capability outside minibox's own bounding set cannot be granted: one line naming
    it (it was "[Errno 1] Operation not permitted")."""
    from minibox import security
    lacking = sorted(set(security.CAPABILITIES) - security.held_capabilities())
    if not lacking:
        pytest.skip("minibox holds every capability here")
    configure(bundle, lambda c: c["process"]["capabilities"]["bounding"].append(
        f"CAP_{lacking[0]}"))
    result = minibox("create", "--bundle", str(bundle), "bad", check=False)
    assert_one_line_error(result, 125, "minibox: ", f"process.capabilities.bounding: "
                          f"CAP_{lacking[0]} is not in minibox's own bounding set")
    assert minibox.container_dirs() == []


def test_an_rlimit_above_the_hosts_hard_limit_names_both(minibox, bundle):
    """It was "ValueError: not allowed to raise maximum limit"."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard >= 1 << 20:
        pytest.skip("the host's hard RLIMIT_NOFILE is already fs.nr_open's default")
    configure(bundle, lambda c: c["process"].__setitem__("rlimits", [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1 << 20}]))
    result = minibox("create", "--bundle", str(bundle), "bad", check=False)
    assert_one_line_error(result, 125, "minibox: ", f"process.rlimits: RLIMIT_NOFILE hard "
                          f"{1 << 20} (soft 1024) is above the host's hard limit {hard}")
    assert minibox.container_dirs() == []


def test_the_cgroups_path_places_the_container_and_its_limits(minibox, bundle, tmp_path):
    """A relative linux.cgroupsPath: below the runtime's own cgroup (v1), with the limits."""
    from minibox.cgroups.v1 import mounted_hierarchies
    name = f"oci-test-{os.getpid()}"
    configure(bundle, lambda c: (c["linux"].__setitem__("cgroupsPath", f"{name}/inner"),
                                 c["linux"]["resources"].__setitem__("pids", {"limit": 42}),
                                 c["linux"]["resources"].__setitem__(
                                     "memory", {"reservation": 32 << 20, "swappiness": 7})))
    pids = mounted_hierarchies()["pids"]
    memory = mounted_hierarchies()["memory"]
    try:
        out = probe_output(minibox, bundle, tmp_path, "placed", (
            "grep -E ':(pids|memory):' /proc/self/cgroup | sort;"
            f"cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; echo done"))
        assert f"pids:/{pids.own}/{name}/inner".replace("//", "/") in out
        # deleted with the container, its parent (the caller's) stays
        assert not os.path.exists(os.path.join(pids.mountpoint, pids.own, name, "inner"))
        # what was written, read again while a container holds it
        set_args(bundle, "sleep", "60")
        create(minibox, bundle, "placed2")
        directory = os.path.join(memory.mountpoint, memory.own, name, "inner")
        with open(os.path.join(pids.mountpoint, pids.own, name, "inner", "pids.max")) as limit:
            assert limit.read().strip() == "42"
        with open(os.path.join(directory, "memory.soft_limit_in_bytes")) as reservation:
            assert reservation.read().strip() == str(32 << 20)
        with open(os.path.join(directory, "memory.swappiness")) as swappiness:
            assert swappiness.read().strip() == "7"
        # a second container on the same path: refused, the first one's cgroup untouched
        taken = minibox("create", "--bundle", str(bundle), "placed3", check=False)
        assert_one_line_error(taken, 125, "minibox: ", "exists already")
        assert os.path.isdir(directory)
        minibox("delete", "--force", "placed2")
    finally:
        for hierarchy in mounted_hierarchies(every=True).values():
            top = os.path.join(hierarchy.mountpoint, hierarchy.own, name)
            for path in (os.path.join(top, "inner"), top):
                if os.path.isdir(path):
                    os.rmdir(path)


def test_an_oci_container_is_in_every_hierarchy_and_delete_and_gc_remove_them(minibox, bundle):
    """As runc on a v1 host: a directory at the cgroupsPath in every hierarchy mounted
    (blkio, cpuset with its CPUs copied down, name=systemd, a hybrid host's cgroup2), not
    only in those minibox writes limits to; the ledger lists them all, so `delete` and,
    after the init was SIGKILLed, `gc` leave none."""
    from minibox.cgroups import cgroup_version
    from minibox.cgroups.v1 import CONTROLLERS, mounted_hierarchies
    if cgroup_version() == 2:
        pytest.skip("one hierarchy on cgroup v2 (tests/unit/test_cgroups_v2.py)")
    every = mounted_hierarchies(every=True)
    if set(every) <= set(CONTROLLERS):
        pytest.skip("this host mounts no hierarchy beyond minibox's own")
    top = f"minibox-every-{os.getpid()}"
    configure(bundle, lambda c: c["linux"].__setitem__("cgroupsPath", f"/{top}/c"))
    set_args(bundle, "sleep", "60")
    directories = {os.path.join(mountpoint, top, "c") for mountpoint, _ in every.values()}
    try:
        for ending in ("delete", "gc"):
            create(minibox, bundle, ending)
            pid = oci_state(minibox, ending)["pid"]
            with open(f"/proc/{pid}/cgroup") as own:
                assert {line.split(":", 2)[2] for line in own.read().splitlines()} == {f"/{top}/c"}
            assert all(os.path.isdir(directory) for directory in directories)
            if "cpuset" in every:
                with open(os.path.join(every["cpuset"].mountpoint, top, "c", "cpuset.cpus")) as cpus:
                    assert cpus.read().strip()
            if ending == "delete":
                minibox("delete", "--force", ending)
            else:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: oci_state(minibox, ending)["status"] == "stopped")
                minibox("gc")
            assert [directory for directory in directories if os.path.exists(directory)] == []
    finally:
        assert remove_cgroup_tree(top) == []


def a_whole_disk():
    """(major, minor) of a block device blkio/io throttles take (a disk, not a partition)."""
    disks = sorted(os.listdir("/sys/block"), key=lambda name: name.startswith(("loop", "ram")))
    if not disks:
        pytest.skip("this host has no block device")
    with open(f"/sys/block/{disks[0]}/dev") as numbers:
        return [int(number) for number in numbers.read().split(":")]


def test_cpuset_and_block_io_throttles_are_applied(minibox, bundle):
    """linux.resources cpu.cpus/mems and blockIO's throttle lists, written where runc writes
    them (v1: cpuset.*, blkio.throttle.*_device), and the kernel holding the init to its CPU."""
    from minibox.cgroups import cgroup_version
    if cgroup_version() == 2:
        pytest.skip("v2 writes cpuset.* and io.max: tests/unit/test_cgroups_v2.py")
    top = f"minibox-resources-{os.getpid()}"
    cpu = min(os.sched_getaffinity(0))
    major, minor = a_whole_disk()
    configure(bundle, lambda c: (
        c["linux"].__setitem__("cgroupsPath", f"/{top}/c"),
        c["linux"]["resources"].update(cpu={"cpus": str(cpu), "mems": "0"}, blockIO={
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]})))
    set_args(bundle, "sleep", "60")
    try:
        create(minibox, bundle, "pinned")
        pid = oci_state(minibox, "pinned")["pid"]
        with open(f"/proc/{pid}/status") as status:
            assert f"Cpus_allowed_list:\t{cpu}\n" in status.read()
        files = {name: open(f"/sys/fs/cgroup/{name}").read().strip() for name in (
            f"cpuset/{top}/c/cpuset.cpus", f"cpuset/{top}/c/cpuset.mems",
            f"blkio/{top}/c/blkio.throttle.read_bps_device",
            f"blkio/{top}/c/blkio.throttle.write_iops_device")}
        assert list(files.values()) == [str(cpu), "0", f"{major}:{minor} {1 << 20}",
                                        f"{major}:{minor} 100"]
        minibox("delete", "--force", "pinned")
    finally:
        assert remove_cgroup_tree(top) == []


def block_io_weight_files():
    """BFQ's (or CFQ's) weight files, in any blkio cgroup of this host."""
    import glob
    return glob.glob("/sys/fs/cgroup/blkio/*/blkio*.weight") + \
        glob.glob("/sys/fs/cgroup/*/io.bfq.weight")


@pytest.mark.parametrize("resources, message, present", [
    # runc 1.1.5 on this host: "openat2 .../blkio.bfq.weight: no such file or directory"
    ({"blockIO": {"weight": 300}}, "linux.resources.blockIO.weight: this host cannot apply it, "
     "its kernel has no blkio.bfq.weight", block_io_weight_files),
    # runc: "cannot set hugetlb limit: container could not join or create cgroup"
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]},
     "this host lacks the cgroup v1 controller 'hugetlb' (for hugepageLimits)",
     lambda: os.path.isdir("/sys/fs/cgroup/hugetlb")),
])
def test_a_limit_the_host_cannot_apply_is_one_line_and_leaves_nothing(minibox, bundle, resources,
                                                                       message, present):
    """Where runc fails on the host's missing file or controller, minibox refuses before
    the init exists, naming the field: no container, no cgroup at the cgroupsPath."""
    import glob
    from minibox.cgroups import cgroup_version
    if cgroup_version() == 2 or present():
        pytest.skip("this host can apply it (tests/unit/test_cgroups_v*.py cover the files)")
    top = f"minibox-refused-{os.getpid()}"
    configure(bundle, lambda c: (c["linux"].__setitem__("cgroupsPath", f"/{top}/c"),
                                 c["linux"]["resources"].update(resources)))
    try:
        result = minibox("create", "--bundle", str(bundle), "refused", check=False)
        assert_one_line_error(result, 125, "minibox: ", message)
        assert minibox.container_dirs() == []
        # the container's own directory; its parents stay, as runc leaves them
        assert glob.glob(f"/sys/fs/cgroup/*/{top}/c") == []
    finally:
        assert remove_cgroup_tree(top) == []


def test_run_takes_cpuset_cpus_and_refuses_a_blkio_weight_the_host_cannot_apply(minibox):
    cpu = min(os.sched_getaffinity(0))
    out = minibox("run", "--rm", "--network", "none", "--cpuset-cpus", str(cpu), "busybox",
                  "grep", "Cpus_allowed_list", "/proc/self/status").stdout
    assert out.split() == ["Cpus_allowed_list:", str(cpu)]
    from minibox.cgroups import cgroup_version
    if cgroup_version() == 1 and not block_io_weight_files():
        result = minibox("run", "--rm", "--network", "none", "--blkio-weight", "300", "busybox",
                         "true", check=False)
        assert_one_line_error(result, 125, "minibox: ", "blockIO.weight: this host cannot "
                              "apply it")
        assert minibox.container_dirs() == []


def test_malformed_json_is_refused_with_one_line(minibox, bundle):
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2",\n "process": }')
    result = minibox("create", "--bundle", str(bundle), "bad", check=False)
    assert_one_line_error(result, 125, "minibox: ", "invalid JSON at line 2")
    assert minibox.container_dirs() == []


def test_deeply_nested_json_is_refused_with_one_line(minibox, bundle):
    (bundle / "config.json").write_text("[" * 100000 + "]" * 100000)
    result = minibox("create", "--bundle", str(bundle), "bad", check=False)
    assert_one_line_error(result, 125, "minibox: ", "nested too deeply")
    assert minibox.container_dirs() == []


@pytest.mark.parametrize("container_id", ["x" * 300, "../escape", "a/b", "..", "."])
def test_bad_container_ids_are_refused_with_one_line(minibox, bundle, container_id):
    result = minibox("create", "--bundle", str(bundle), container_id, check=False)
    assert_one_line_error(result, 125, "minibox: ", "invalid container id")
    assert minibox.container_dirs() == []


def write_hook(tmp_path, name, body):
    hook = tmp_path / name
    hook.write_text(f"#!/bin/sh\n{body}\n")
    hook.chmod(0o755)
    return str(hook)


def written_json(path):
    """The JSON a hook wrote to path, once it has written all of it."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_hooks_get_the_state_on_stdin(minibox, bundle, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    hooks = {stage: [{"path": write_hook(tmp_path, stage, f"cat > {seen}/{stage}"),
                      "args": [stage, "an-arg"]}]
             for stage in ("prestart", "createRuntime", "poststart", "poststop")}
    configure(bundle, lambda c: c.__setitem__("hooks", hooks))
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "hooked")
    pid = oci_state(minibox, "hooked")["pid"]
    for stage in ("prestart", "createRuntime"):
        state = json.loads((seen / stage).read_text())
        # crun passes "created" here (runc: "creating"), which the conformance checks expect
        assert (state["id"], state["pid"], state["status"]) == ("hooked", pid, "created")
    minibox("start", "hooked")
    poststart = wait_until(lambda: written_json(seen / "poststart"))
    assert poststart["status"] == "running"
    minibox("delete", "--force", "hooked")
    assert json.loads((seen / "poststop").read_text())["status"] == "stopped"


def test_every_hook_stage_gets_the_state_crun_passes(minibox, bundle, tmp_path):
    """crun 1.8, measured: "created" for prestart, createRuntime and createContainer,
    "running" for poststart, "stopped" with pid 0 for poststop. startContainer: crun says
    "starting" with pid 0, which the spec's state schema does not have: "created" and the
    host's PID, as the spec's text reads (hooks.py)."""
    seen = tmp_path / "seen"
    seen.mkdir()
    host_stages = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    hooks = {stage: [{"path": write_hook(tmp_path, stage, f"cat > {seen}/{stage}")}]
             for stage in host_stages}
    start_hook = bundle / "rootfs/start-hook"
    start_hook.write_text("#!/bin/sh\ncat > /dev/shm/state\n")
    start_hook.chmod(0o755)
    hooks["startContainer"] = [{"path": "/start-hook"}]
    configure(bundle, lambda c: c.__setitem__("hooks", hooks))
    set_args(bundle, "sh", "-c", "cat /dev/shm/state; sleep 60")
    out, _ = create(minibox, bundle, "staged")
    pid = oci_state(minibox, "staged")["pid"]
    minibox("start", "staged")
    wait_until(lambda: written_json(seen / "poststart") and written_json(out))
    minibox("delete", "--force", "staged")
    states = {stage: json.loads((seen / stage).read_text()) for stage in host_stages}
    states["startContainer"] = json.loads(out.read_text())
    assert {stage: (state["id"], state["status"], state["pid"], state["bundle"])
            for stage, state in states.items()} == {
        "prestart": ("staged", "created", pid, str(bundle)),
        "createRuntime": ("staged", "created", pid, str(bundle)),
        "createContainer": ("staged", "created", pid, str(bundle)),
        "startContainer": ("staged", "created", pid, str(bundle)),
        "poststart": ("staged", "running", pid, str(bundle)),
        "poststop": ("staged", "stopped", 0, str(bundle))}


def test_a_failing_prestart_hook_aborts_and_leaves_nothing(minibox, bundle, tmp_path):
    hook = write_hook(tmp_path, "fail", "echo no network for you >&2; exit 3")
    configure(bundle, lambda c: c.__setitem__("hooks", {"prestart": [{"path": hook}]}))
    result = minibox("create", "--bundle", str(bundle), "aborted", check=False)
    assert result.returncode == 125
    assert "prestart hook" in result.stderr and "exit code 3" in result.stderr
    assert minibox("state", "aborted", check=False).returncode == 125
    assert minibox.container_dirs() == []


def test_container_hooks_run_in_the_container_namespaces(minibox, bundle, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    # createContainer: the host's path (before pivot_root), in the container's namespaces.
    create_hook = write_hook(tmp_path, "create-hook",
                             f"cat > {seen}/state; readlink /proc/self/ns/mnt > {seen}/mnt")
    # startContainer: the container's path, after `start`: what it leaves in the container's
    # /dev/shm (a tmpfs of the container's own) is there for the command to print.
    start_hook = bundle / "rootfs/start-hook"
    start_hook.write_text("#!/bin/sh\ncat > /dev/shm/state\n")
    start_hook.chmod(0o755)
    configure(bundle, lambda c: c.__setitem__("hooks", {
        "createContainer": [{"path": create_hook}],
        "startContainer": [{"path": "/start-hook"}]}))
    set_args(bundle, "cat", "/dev/shm/state")
    out, _ = create(minibox, bundle, "inside")
    pid = oci_state(minibox, "inside")["pid"]
    state = json.loads((seen / "state").read_text())
    assert (state["id"], state["pid"], state["status"]) == ("inside", pid, "created")
    mnt = (seen / "mnt").read_text().strip()
    assert mnt == os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    minibox("start", "inside")
    wait_until(lambda: oci_state(minibox, "inside")["status"] == "stopped")
    minibox("delete", "inside")
    state = json.loads(out.read_text())
    assert (state["id"], state["pid"], state["status"]) == ("inside", pid, "created")


def test_failing_container_hooks(minibox, bundle, tmp_path):
    hook = write_hook(tmp_path, "fail", "echo no device for you >&2; exit 4")
    configure(bundle, lambda c: c.__setitem__("hooks", {"createContainer": [{"path": hook}]}))
    result = minibox("create", "--bundle", str(bundle), "aborted", check=False)
    assert_one_line_error(result, 125, "minibox: ", "createContainer hook")
    assert "exit code 4" in result.stderr
    assert minibox.container_dirs() == []
    # startContainer: the path is the container's, and the host's hook is not there.
    configure(bundle, lambda c: c.__setitem__("hooks", {"startContainer": [{"path": hook}]}))
    set_args(bundle, "true")
    create(minibox, bundle, "stopped")
    started = minibox("start", "stopped", check=False)
    assert started.returncode != 0 and "startContainer hook" in started.stderr
    assert oci_state(minibox, "stopped")["status"] == "stopped"
    minibox("delete", "stopped")


# -- differential tests against runc: one probe, a corpus of configs -------------------------

PROBE = ("hostname; id -u; id -g; id -G; umask; pwd; env | sort;"
         "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status;"
         "grep -E '^Max (open files|processes|core file size)' /proc/self/limits;"
         "cat /proc/self/oom_score_adj; cat /sys/fs/cgroup/pids/pids.max 2>&1;"
         "cd /sys/fs/cgroup && for f in memory/memory.limit_in_bytes memory/memory.swappiness"
         " memory/memory.memsw.limit_in_bytes"
         " memory/memory.soft_limit_in_bytes cpu/cpu.shares cpu/cpu.cfs_quota_us"
         " cpu/cpu.cfs_period_us cpuset/cpuset.cpus cpuset/cpuset.mems"
         " blkio/blkio.throttle.read_bps_device blkio/blkio.throttle.write_bps_device"
         " blkio/blkio.throttle.read_iops_device blkio/blkio.throttle.write_iops_device; do"
         " echo $f=$(cat $f 2>&1); done; cd /tmp;"
         "sort /sys/fs/cgroup/devices/devices.list | sed 's/^/devices.list: /';"
         "cat /proc/self/cgroup;"
         "awk '{print $5, $(NF-2), $4}' /proc/self/mountinfo | sort;"
         # the root's propagation: the last of its optional fields (shared:N, master:N)
         "awk '$5 == \"/\" {p = \"private\"; for (i = 7; $i != \"-\"; i++) {"
         " split($i, a, \":\"); p = a[1]}; print \"/ propagation\", p}' /proc/self/mountinfo;"
         "stat -c '%n %F %t:%T %a %u:%g' /dev/probe-* 2>/dev/null;"
         # the flags of the variants' own mount (minibox's readonlyPaths add nosuid, nodev
         # and noexec that runc's lack: stricter, and no difference in what may be done)
         "awk '$5 ~ /^\\/scratch/ {print $5, $6, $7}' /proc/self/mountinfo")
# What each line of the probe is, for readable failures.
SECURITY_LINES = ("Cap", "NoNewPrivs", "Seccomp")


def _probe_config(config):
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", PROBE]
    config["process"]["cwd"] = "/tmp"
    config["process"]["env"] = ["PATH=/bin:/usr/bin", "PROBE=1"]
    config["hostname"] = "differential"


def _a_user_with_every_set(config):
    """process.user not root, with groups and a umask, and capabilities in all five sets:
    what it keeps across setuid depends on keepcaps and the ambient set."""
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7],
                                 "umask": 0o27}
    kept = ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"]
    config["process"]["capabilities"] = {
        "bounding": kept + ["CAP_SETUID", "CAP_SETGID"], "effective": kept,
        "permitted": kept, "inheritable": kept[:2], "ambient": kept}
    config["process"]["noNewPrivileges"] = False
    config["process"]["oomScoreAdj"] = 100
    config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosymfollow", "rslave", "noatime", "size=1m"]})
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 200, "hard": 300},
                                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096}]


def _limits_at_a_cgroups_path(config):
    """linux.cgroupsPath and linux.resources (memory, cpu, pids, devices): where the container
    is in every hierarchy, and what its cgroup files say."""
    config["linux"]["cgroupsPath"] = f"/minibox-differential-{os.getpid()}/limits"
    config["linux"]["resources"].update(
        memory={"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10, "swap": 96 << 20},
        cpu={"shares": 512, "quota": 50000, "period": 100000}, pids={"limit": 42})
    config["linux"]["resources"]["devices"].append(  # /dev/loop0, to read only
        {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"})


def _cpus_and_block_io_at_a_cgroups_path(config):
    """linux.resources cpu.cpus/mems and blockIO's four throttle lists (two devices in one),
    what Docker's --cpuset-cpus and --device-read-bps write: the cgroup files must match."""
    config["linux"]["cgroupsPath"] = f"/minibox-differential-{os.getpid()}/cpus-io"
    major, minor = a_whole_disk()
    config["linux"]["resources"].update(
        cpu={"cpus": str(max(os.sched_getaffinity(0))), "mems": "0"},
        blockIO={"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                 "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2 << 20}],
                 "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": 300}],
                 "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]})


def _a_root_with_devices(config):
    """linux.devices, rootfsPropagation, root.readonly, linux.sysctl, and mounts with
    mount(8)'s flag and propagation words."""
    config["linux"]["devices"] = [
        {"path": "/dev/probe-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640,
         "uid": 1000, "gid": 1001},
        {"path": "/dev/probe-fifo", "type": "p", "fileMode": 0o600}]
    config["linux"]["rootfsPropagation"] = "rslave"  # "rshared": see the test after the corpus
    config["mounts"] += [
        {"destination": "/scratch-bind", "type": "bind", "source": "/usr/share",
         "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]},
        {"destination": "/scratch-times", "type": "tmpfs", "source": "tmpfs",
         "options": ["strictatime", "nodiratime", "sync", "dirsync", "mode=700"]},
        {"destination": "/scratch-shared", "type": "tmpfs", "source": "tmpfs",
         "options": ["rshared", "relatime", "nosymfollow"]}]
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    config["root"]["readonly"] = True


def _runc_spec(bundle, *_):
    os.remove(bundle / "config.json")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)


def _podman_config(bundle, tmp_path, _):
    """podman's own config.json for a busybox container: `podman create` then `podman init`
    in a storage of the test's own (the init may fail with podman's runtime: the file is
    written before)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (sudo make setup)")
    import pathlib
    import tempfile
    # podman refuses a runroot longer than 50 characters: not under tmp_path
    top = pathlib.Path(tempfile.mkdtemp(prefix="minibox-podman-", dir="/run"))
    podman = ["podman", "--root", str(top / "root"), "--runroot", str(top / "run"),
              "--tmpdir", str(top / "tmp"), "--cgroup-manager", "cgroupfs",
              "--events-backend", "file"]
    image = subprocess.run(["tar", "-C", str(bundle / "rootfs"), "-c", "."], capture_output=True,
                           check=True).stdout
    try:
        imported = subprocess.run([*podman, "import", "-", "probe:1"], input=image,
                                  capture_output=True)
        assert imported.returncode == 0, imported.stderr.decode()
        container = subprocess.run(
            [*podman, "create", "--network", "none", *ULIMITS, "probe:1", "true"],
            capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([*podman, "init", container], capture_output=True)
        userdata = next(top.glob(f"root/overlay-containers/{container}/userdata"))
        config = json.loads((userdata / "config.json").read_text())
    finally:
        subprocess.run([*podman, "rm", "-a", "-f"], capture_output=True)
        subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
    _make_it_the_tests(config, str(top), bundle, tmp_path / "podman-files", "podman")


def _docker_config(bundle, tmp_path, request):
    """Docker's own config.json for a busybox container: `docker create` and `docker start`
    with runc in the session's private dockerd, the bundle's config.json copied from the
    shim's directory under dockerd's exec-root, then the container removed."""
    argv, top = request.getfixturevalue("dockerd")
    docker = functools.partial(subprocess.run, capture_output=True, text=True, check=True)
    container = docker([*argv, "create", "--network", "none", *ULIMITS, ENGINE_IMAGE,
                        "sleep", "60"]).stdout.strip()
    try:
        docker([*argv, "start", container])
        config = json.loads(open(os.path.join(
            top, "exec/containerd/daemon/io.containerd.runtime.v2.task/moby", container,
            "config.json")).read())
    finally:
        docker([*argv, "rm", "-f", container])
    # The prestart hook runs dockerd's libnetwork-setkey for this container and the network
    # namespace path is its sandbox's: both were the removed container's, and runc would fail
    # on them. Without the path each runtime makes a network namespace of its own.
    del config["hooks"]
    for namespace in config["linux"]["namespaces"]:
        namespace.pop("path", None)
    _make_it_the_tests(config, top, bundle, tmp_path / "docker-files", "docker")


def _make_it_the_tests(config, top, bundle, copies, engine):
    """An engine's config.json, with the root and the cgroup the test's; the engine's bind
    mounts from its temp dir `top` (/etc/hosts, /etc/hostname, /etc/resolv.conf,
    /run/.containerenv, /dev/shm: gone with the container) replaced by copies."""
    copies.mkdir()
    for mount in config["mounts"]:
        if mount.get("type") == "bind" and mount["source"].startswith(top):
            copy = copies / mount["destination"].strip("/").replace("/", "_")
            if mount["destination"] == "/dev/shm":
                copy.mkdir()
            else:
                copy.write_text("probe\n")
            mount["source"] = str(copy)
    config["root"] = {"path": "rootfs"}
    config["linux"]["cgroupsPath"] = f"/minibox-differential-{os.getpid()}/{engine}"
    (bundle / "config.json").write_text(json.dumps(config))


# The corpus: (how the bundle's config.json is made, what is changed in it).
CORPUS = {"runc-spec": (_runc_spec, None),
          "runc-spec-user": (_runc_spec, _a_user_with_every_set),
          "runc-spec-limits": (_runc_spec, _limits_at_a_cgroups_path),
          "runc-spec-cpus-io": (_runc_spec, _cpus_and_block_io_at_a_cgroups_path),
          "runc-spec-root": (_runc_spec, _a_root_with_devices),
          "podman": (_podman_config, None),
          "docker": (_docker_config, None)}


def _split(output, cgroups_path):
    """(the security lines by name, the other lines), each cgroup path made comparable.

    A cgroup appears twice: in /proc/self/cgroup ("9:name=systemd:/path") and as the root of
    the /sys/fs/cgroup/<hierarchy> mount. With a linux.cgroupsPath both runtimes must be at
    that path in every hierarchy, as runc joins them all: the paths are compared relative to
    it. Without one, each puts the container in a cgroup of its own, named differently
    (runc: /<id>, minibox: minibox/<id> below its own cgroup): only the hierarchies count."""
    def place(path):
        if cgroups_path is None:
            return "-"
        inside = path == cgroups_path or path.startswith(cgroups_path + "/")
        return "<cgroupsPath>" + path[len(cgroups_path):] if inside else path

    lines = output.splitlines()
    security = {line.split(":")[0]: line.split()[1] for line in lines
                if line.startswith(SECURITY_LINES)}
    rest = []
    for line in lines:
        if line.startswith(SECURITY_LINES):
            continue
        if line.startswith("/sys/fs/cgroup/"):
            mount_point, fstype, root = line.split()
            line = f"{mount_point} {fstype} {place(root)}"
        elif re.fullmatch(r"\d+:[^:]*:/.*", line):
            hierarchy, controllers, path = line.split(":", 2)
            line = f"{hierarchy}:{controllers}:{place(path)}"
        rest.append(line)
    return security, rest


@pytest.fixture(params=sorted(CORPUS))
def differential(request, tmp_path, minibox, bundle):
    """(runc's output, minibox's output) of the probe, from one bundle of the corpus."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (sudo apt-get install runc)")
    make, change = CORPUS[request.param]
    make(bundle, tmp_path, request)
    configure(bundle, _probe_config)
    if change:
        configure(bundle, change)
    cgroups_path = json.loads((bundle / "config.json").read_text())["linux"].get("cgroupsPath")
    runc_root = tmp_path / "runc-root"
    try:
        runc = subprocess.run(["runc", "--root", str(runc_root), "run", "--bundle", str(bundle),
                               f"diff-{os.getpid()}"], capture_output=True, text=True,
                              timeout=30)
        assert runc.returncode == 0, runc.stderr
        out, _ = create(minibox, bundle, "differential")
        minibox("start", "differential")
        wait_until(lambda: oci_state(minibox, "differential")["status"] == "stopped")
        minibox("delete", "differential")
    finally:
        left = remove_cgroup_tree(f"minibox-differential-{os.getpid()}")
    assert left == [], f"cgroups left behind: {left}"
    return _split(runc.stdout, cgroups_path), _split(out.read_text(), cgroups_path)


def differences(runc, minibox):
    """The lines only one of them printed, each named by who printed it."""
    return ([f"runc only:    {line}" for line in runc if line not in minibox] +
            [f"minibox only: {line}" for line in minibox if line not in runc])


def test_differential_identity_environment_mounts_and_rlimits_match_runc(differential):
    (_, runc_rest), (_, minibox_rest) = differential
    assert minibox_rest == runc_rest, "\n".join(differences(runc_rest, minibox_rest))


def test_differential_capabilities_and_no_new_privs_match_runc(differential):
    (runc_security, _), (minibox_security, _) = differential
    assert minibox_security == runc_security


def test_a_shared_root_propagation_is_the_roots_as_crun_and_the_spec_say(minibox, bundle,
                                                                         tmp_path):
    """rootfsPropagation "sets the rootfs's mount propagation" (runtime spec): crun 1.8 makes
    the container's / shared, runc 1.1.5 leaves it private (it applies the flag before
    binding the rootfs). They differ, so the spec's text decides."""
    configure(bundle, lambda c: c["linux"].__setitem__("rootfsPropagation", "rshared"))
    out = probe_output(minibox, bundle, tmp_path, "shared-root",
                       "awk '$5 == \"/\" {print $7}' /proc/self/mountinfo")
    assert out.startswith("shared:")


# -- runc's contract as engines use it (containerd's shim, conmon: tests/engines/) ------------

def test_runc_global_flags_the_log_file_and_the_version(minibox, tmp_path):
    log = tmp_path / "log.json"
    failed = minibox("--root", str(tmp_path / "state"), "--log", str(log), "--log-format",
                     "json", "--debug", "--systemd-cgroup", "state", "nosuch", check=False)
    assert_one_line_error(failed, 125, "minibox: ", "nosuch")
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and "nosuch" in entry["msg"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["time"])
    quiet = tmp_path / "quiet.json"
    minibox("--log", str(quiet), "--log-format", "json", "features")
    assert quiet.read_text() == ""  # made even when nothing goes wrong: the shim opens it
    version = minibox("--version").stdout.splitlines()
    assert re.fullmatch(r"minibox version \S+", version[0]) and version[1] == "spec: 1.0.2"
    features = json.loads(minibox("features").stdout)
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]


def test_create_leaves_the_init_to_the_caller_and_gc_keeps_it(minibox, bundle):
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "reaped")
    pid = oci_state(minibox, "reaped")["pid"]
    with open(f"/proc/{pid}/stat") as stat:
        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
        assert b"minibox" not in cmdline.read()  # no monitor: whoever reaps orphans has it
    assert "reaped" not in minibox("gc").stdout
    minibox("start", "reaped")
    assert oci_state(minibox, "reaped")["status"] == "running"
    minibox("pause", "reaped")
    assert oci_state(minibox, "reaped")["status"] == "paused"
    with open(f"/proc/{pid}/status") as status:
        assert re.search(r"^State:\s+[DS]", status.read(), re.M)
    minibox("resume", "reaped")
    assert oci_state(minibox, "reaped")["status"] == "running"
    assert json.loads(minibox("ps", "--format", "json", "reaped").stdout) == [pid]
    cgroup_of = {line.split(":")[1]: line.split(":")[2]
                 for line in open(f"/proc/{pid}/cgroup").read().splitlines()}
    device_rules = open(f"/sys/fs/cgroup/devices{cgroup_of['devices']}/devices.list").read()
    resources = bundle.parent / "resources.json"
    # What CRI's UpdateContainerResources sends: the whole object, device rules and huge page
    # limits included, which update leaves as create set them (runc's update does too).
    resources.write_text(json.dumps({
        "pids": {"limit": 42}, "memory": {"limit": 64 << 20, "swap": 0},
        "cpu": {"shares": 512, "quota": 0, "cpus": ""}, "blockIO": {"weight": 0,
                                                                 "throttleReadBpsDevice": []},
        "devices": [{"allow": False, "access": "rwm"}],
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}))
    minibox("update", "--resources", str(resources), "reaped")
    assert open(f"/sys/fs/cgroup/pids{cgroup_of['pids']}/pids.max").read() == "42\n"
    memory = f"/sys/fs/cgroup/memory{cgroup_of['memory']}/memory.limit_in_bytes"
    assert open(memory).read() == f"{64 << 20}\n"
    assert open(f"/sys/fs/cgroup/cpu{cgroup_of['cpu']}/cpu.shares").read() == "512\n"
    assert open(f"/sys/fs/cgroup/devices{cgroup_of['devices']}/devices.list").read() == device_rules
    resources.write_text(json.dumps({"cpu": {"realtimeRuntime": 950000}}))
    refused = minibox("update", "--resources", str(resources), "reaped", check=False)
    assert refused.returncode == 125 and refused.stderr.count("\n") == 1
    assert "linux.resources.cpu.realtimeRuntime is not supported" in refused.stderr
    stats = json.loads(minibox("events", "--stats", "reaped").stdout)
    assert stats["type"] == "stats" and stats["data"]["pids"]["current"] == 1
    minibox("kill", "--all", "reaped", "KILL")
    wait_until(lambda: oci_state(minibox, "reaped")["status"] == "stopped")
    minibox("delete", "reaped")


def test_console_socket_gets_the_terminal_and_preserved_fds_reach_the_command(minibox, bundle,
                                                                            tmp_path):
    kept_read, kept_write = os.pipe()  # the last of the fds from 3 that create passes on
    configure(bundle, lambda c: c["process"].update(
        terminal=True, args=["sh", "-c", f"tty; echo kept >&{kept_write}"]))
    path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    minibox("create", "--bundle", str(bundle), "--console-socket", path, "--preserve-fds",
            str(kept_write - 2), "tty", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(kept_write,))
    os.close(kept_write)
    connection, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(connection, 4096, 1)
    assert message == b"/dev/ptmx" and len(fds) == 1
    minibox("start", "tty")
    output = b""
    while b"\n" not in output:
        output += os.read(fds[0], 1024)
    assert re.match(rb"/dev/pts/\d+\r?\n", output)
    assert os.read(kept_read, 64) == b"kept\n"
    wait_until(lambda: oci_state(minibox, "tty")["status"] == "stopped")
    minibox("delete", "tty")
    without = minibox("create", "--bundle", str(bundle), "nosocket", check=False)
    assert_one_line_error(without, 125, "minibox: ", "console socket")


def test_exec_with_a_process_file_detached(minibox, bundle, tmp_path):
    set_args(bundle, "sleep", "60")
    create(minibox, bundle, "host")
    minibox("start", "host")
    process = tmp_path / "process.json"
    process.write_text(json.dumps({
        "args": ["sh", "-c", "echo $GREETING $(id -u) $(pwd); sleep 30"],
        "env": ["PATH=/bin", "GREETING=hello"], "cwd": "/etc", "user": {"uid": 1, "gid": 1}}))
    pid_file, seen = tmp_path / "exec.pid", tmp_path / "seen"
    with open(seen, "w") as out:  # the detached process keeps exec's stdio, as with runc
        minibox("exec", "--process", str(process), "--detach", "--pid-file", str(pid_file),
                "host", stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=10)
    pid = int(pid_file.read_text())
    container_pid = oci_state(minibox, "host")["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{container_pid}/ns/pid")
    wait_until(lambda: seen.read_text() != "")
    assert seen.read_text() == "hello 1 /etc\n"
    minibox("delete", "--force", "host")
