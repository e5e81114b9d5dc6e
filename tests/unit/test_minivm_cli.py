"""minivm's bad-input paths: one line on stderr, a non-zero status, no traceback, no boot."""
import bz2
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from minivm import MinivmError, accel, vm
from tests.helpers import assert_one_line_error as one_line_error


def minivm(*args, env=None, cache=None, python=()):
    environment = dict(os.environ, **(env or {}))
    if cache is not None:
        environment["MINIVM_CACHE"] = str(cache)
    return subprocess.run([sys.executable, *python, "-m", "minivm", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, env=environment, timeout=60)


def assert_one_line_error(done, status, message):
    one_line_error(done, status, "minivm: ", message)


HOST_CPUS = os.cpu_count()


@pytest.mark.parametrize("args,message", [
    (["-m", "12X"], "-m 12X: not a memory size"),
    (["-m", "64M"], "at least 96M"),
    (["-m", "100000G"], "more than this host's"),
    (["--cpus", "0"], "--cpus 0: must be at least 1"),
    (["--cpus", str(HOST_CPUS + 1)], f"this host has only {HOST_CPUS} CPUs"),
    (["--timeout", "0"], "must be more than 0 seconds"),
    (["--cpus", "two"], "invalid int value"),
    (["--accel", "xen"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["-v", "/no/such/dir:/x"], "-v /no/such/dir:/x: host directory /no/such/dir does not exist"),
    (["-v", "/tmp"], "-v /tmp: expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"),
])
def test_bad_options_are_one_line(args, message, tmp_path):
    done = minivm("run", *args, "--", "true", cache=tmp_path)
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR, message)


def test_no_command_is_one_line(tmp_path):
    assert_one_line_error(minivm("run", cache=tmp_path), vm.EXIT_MINIVM_ERROR, "no command given")


def test_missing_qemu_names_the_package(tmp_path):
    done = minivm("run", "--", "true", env={"PATH": str(tmp_path)}, cache=tmp_path)
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR,
                          "qemu-system-x86_64 not found: install the qemu-system-x86 package")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu")
def test_no_kernel_and_no_apt_is_one_line(tmp_path):
    if any(os.access(path, os.R_OK) for path in Path("/boot").glob("vmlinuz-*")):
        pytest.skip("this host has a readable /boot/vmlinuz-*, which minivm would use")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").symlink_to(shutil.which("qemu-system-x86_64"))
    done = minivm("run", "--accel", "tcg", "--", "true", env={"PATH": str(bin_dir)},
                  cache=tmp_path / "cache")
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR, "no guest kernel")
    assert "pass --kernel PATH" in done.stderr


@pytest.mark.skipif(accel.kvm_problem() is None, reason="KVM works on this host")
def test_accel_kvm_where_it_cannot_work_says_why(tmp_path):
    done = minivm("run", "--accel", "kvm", "--", "true", cache=tmp_path)
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR,
                          f"--accel kvm cannot work here: {accel.kvm_problem()}")


def test_kernel_list_with_an_empty_cache(tmp_path):
    done = minivm("kernel", "list", cache=tmp_path)
    assert done.returncode == 0
    if not any(os.access(path, os.R_OK) for path in Path("/boot").glob("vmlinuz-*")):
        assert "no kernels yet" in done.stdout and "minivm kernel fetch" in done.stdout


@pytest.mark.parametrize("text,mib", [("256M", 256), ("1G", 1024), ("512", 512),
                                      ("128MiB", 128), ("2g", 2048)])
def test_memory_sizes(text, mib):
    assert vm.memory_mib(text) == mib


def test_guest_memory_is_sized_to_the_kernel_that_will_boot(tmp_path):
    assert vm.guest_memory(None, tmp_path) == vm.DISTRIBUTION_MEMORY  # nothing built
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "vmlinux").write_bytes(b"\x7fELF")
    (tiny / "kernel.json").write_text(json.dumps(
        {"release": "6.1.192-minivm", "origin": "test", "vmlinux": str(tiny / "vmlinux")}))
    assert vm.guest_memory(None, tmp_path) == vm.TINY_MEMORY
    assert vm.guest_memory(tiny / "vmlinux", tmp_path) == vm.TINY_MEMORY
    assert vm.guest_memory(Path("/boot/vmlinuz-6.1"), tmp_path) == vm.DISTRIBUTION_MEMORY
    assert vm.memory_mib("48M", vm.TINY_MEMORY) == 48
    with pytest.raises(MinivmError, match="-m 32M: a guest of the tiny kernel needs at least 40M"):
        vm.memory_mib("32M", vm.TINY_MEMORY)


def test_memory_size_errors_name_the_value():
    for text in ("lots", "512b", "1T", "-5M"):
        with pytest.raises(MinivmError, match=f"-m {text}: not a memory size"):
            vm.memory_mib(text)


def report(capsys, **fields):
    """vm._report on a qemu.Result with these fields; returns (status, stderr)."""
    from argparse import Namespace

    from minivm import kernel, qemu
    result = qemu.Result()
    result.__dict__.update(fields)
    guest = kernel.Kernel(Path("/k"), "6.1.0-56-amd64", "test", None)
    args = Namespace(timings=False, timeout=20.0)
    status = vm._report(result, ["cmd"], guest, args, [])
    return status, capsys.readouterr().err


def test_report_maps_each_ending_to_a_status_and_a_line(capsys):
    assert report(capsys, status=3, guest_release="6.1.0-56-amd64") == (3, "")
    status, err = report(capsys, timed_out=True, kernel_tail=["[ 2.0] Run /init as init process"])
    assert status == vm.EXIT_TIMEOUT
    assert err.startswith("minivm: timeout: the guest did not finish within 20 s")
    assert err.endswith("Last kernel lines:\n  [ 2.0] Run /init as init process\n")
    assert report(capsys, not_found=True, status=127) == (
        127, "minivm: cmd: command not found in the guest\n")
    assert report(capsys, escaped=True)[0] == 130


def test_report_of_a_command_the_guest_kernel_killed_for_memory_is_one_line(capsys):
    killed = "[ 8.2] Out of memory: Killed process 26 (sh) total-vm:75988kB"
    assert report(capsys, status=137, out_of_memory=killed) == (
        137, f"minivm: the guest ran out of memory: its kernel killed the command: {killed}\n")


def test_report_warns_when_the_guest_runs_another_kernel(capsys):
    status, err = report(capsys, status=0, guest_release="6.9.9-other")
    assert status == 0
    assert err == "minivm: warning: expected kernel 6.1.0-56-amd64, but the guest runs 6.9.9-other\n"


def test_report_of_a_guest_that_never_said_its_status_is_an_error(capsys):
    with pytest.raises(MinivmError, match=r"without reporting an exit status \(QEMU exit status "
                       r"0, QEMU said: boom\). Last kernel lines:\n  Kernel panic"):
        report(capsys, qemu_status=0, qemu_errors="boom\n", kernel_tail=["Kernel panic"])


def test_report_of_a_guest_that_could_not_be_prepared_is_one_error(capsys):
    """/init's `prepare` failed (an insmod, an `ip addr add`): its one line becomes the error."""
    with pytest.raises(MinivmError, match=r"^the guest could not be prepared: ip addr add "
                       r"10.199.0.2/24 dev eth0 failed: ip: RTNETLINK answers: File exists$"):
        report(capsys, setup_failed="ip addr add 10.199.0.2/24 dev eth0 failed: ip: RTNETLINK "
               "answers: File exists", guest_release="6.1.0-56-amd64")


def test_the_run_path_imports_no_shutil_and_no_device_modules():
    """`minivm run -- true` pays for every import at each boot (bench/vm_boot.py): the modules
    a plain run uses are loaded and its options parsed; shutil (and the bz2, lzma it loads)
    and the modules of devices it did not ask for stay out of sys.modules."""
    script = ("import sys\n"
              "from minibox import explain\n"
              "from minivm import cli, console, initramfs, kernel, qemu\n"
              "context = cli.minivm.make_context('minivm', ['run', '--', 'true'])\n"
              "cli.run.make_context('run', ['--', 'true'], parent=context)\n"
              "print(' '.join(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    loaded = set(done.stdout.split())
    assert "minivm.cli" in loaded
    unwanted = {"shutil", "bz2", "lzma", "minivm.disk", "minivm.nic", "minivm.shares",
                "minivm.modules", "minivm.vms", "minivm.qmp"}
    assert loaded & unwanted == set()


def test_help_fits_the_width_in_columns():
    done = minivm("run", "--help", env={"COLUMNS": "50"})
    assert done.returncode == 0 and "--timeout" in done.stdout
    # argparse wraps help text, never an option's own spelling (-v HOSTDIR:GUESTDIR[:ro]...)
    text = [line for line in done.stdout.splitlines() if "HOSTDIR:GUESTDIR" not in line]
    assert max(len(line) for line in text) <= 50


def test_tty_without_a_terminal_is_one_line(tmp_path):
    done = minivm("run", "-t", "--", "sh", cache=tmp_path)  # stdin is /dev/null
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR, "-t needs a terminal on stdin")


def sparse(path, size, head=b""):
    with open(path, "wb") as out:
        out.write(head)
        out.truncate(size)
    return path


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu")
@pytest.mark.parametrize("make,message", [
    (lambda tmp: Path("/dev/zero"), "--kernel /dev/zero: not a regular file"),
    (lambda tmp: tmp, "not a regular file"),
    (lambda tmp: sparse(tmp / "notes", 100, b"hello"), "neither an ELF vmlinux nor a bzImage"),
    (lambda tmp: sparse(tmp / "huge-vmlinux", 20 << 30, b"\x7fELF"), "20480 MiB: more than"),
    (lambda tmp: sparse(tmp / "huge-bzImage", 20 << 30, b"\0" * 0x202 + b"HdrS"),
     "20480 MiB: more than"),
])
def test_a_kernel_is_judged_by_its_header_and_size_before_it_is_read(tmp_path, make, message):
    """/dev/zero as the kernel was read whole into memory: 22 GB in 73 s (issue 14)."""
    started = time.monotonic()
    done = minivm("run", "--accel", "tcg", "--kernel", str(make(tmp_path)), "--", "true",
                  cache=tmp_path / "c")
    assert_one_line_error(done, vm.EXIT_MINIVM_ERROR, message)
    assert time.monotonic() - started < 10


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu")
def test_the_timeout_covers_the_kernel_extraction(tmp_path):
    """A bzImage whose payload inflates to 250 MB (~1.5 s of bzip2 here): --timeout 0.3
    ends the run before QEMU ever starts."""
    from tests.unit.test_minivm_kernel import ELF, fake_bzimage
    image = tmp_path / "vmlinuz-slow"
    image.write_bytes(fake_bzimage(bz2.compress(ELF + b"\0" * (250 << 20))))
    started = time.monotonic()
    done = minivm("run", "--accel", "tcg", "--timeout", "0.3", "--kernel", str(image), "--",
                  "true", cache=tmp_path / "cache")
    assert done.returncode == vm.EXIT_TIMEOUT, done.stderr
    assert done.stderr.splitlines() == [
        f"minivm: extracting the uncompressed kernel from {image} (once; cached)",
        "minivm: timeout: the guest did not start within 0.3 s"]
    assert time.monotonic() - started < 5
    assert not list((tmp_path / "cache").glob("extracted/*/vmlinux"))


@pytest.fixture
def ended_vm(tmp_path):
    """A detached VM whose command ended with status 3: its directory as `run -d` left it."""
    root = tmp_path / "vms"
    (root / "web").mkdir(parents=True)
    (root / "web" / "state.json").write_text(json.dumps({
        "name": "web", "starter": 2 ** 22 + 1, "starter_start": 1, "created": 1700000000.0,
        "command": ["sh", "-c", "exit 3"], "nonce": "0123", "pid": 2 ** 22 + 1, "pid_start": 1,
        "started": 1700000001.0, "network": {"owner": "minivm-web", "address": "10.199.0.9"}}))
    (root / "web" / "console.log").write_bytes(b"[    0.0] Linux version 6.1\r\n"
                                               b"\nMINIVM:0123:init=6.1\n\nMINIVM:0123:exit=3\n")
    return {"MINIVM_ROOT": str(root)}


def test_inspect_prints_dockers_shape(ended_vm):
    done = minivm("inspect", "web", env=ended_vm)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["Id"] == record["Name"] == "web"
    assert record["State"] == {"Status": "exited", "Running": False, "Paused": False, "Pid": 0,
                               "ExitCode": 3, "StartedAt": "2023-11-14T22:13:21.000000Z"}
    assert record["Created"] == "2023-11-14T22:13:20.000000Z"
    assert record["Config"] == {"Cmd": ["sh", "-c", "exit 3"]}
    assert record["Path"] == "sh" and record["Args"] == ["-c", "exit 3"]
    assert record["NetworkSettings"] == {"IPAddress": "10.199.0.9"}


def test_inspect_and_ps_take_go_templates(ended_vm):
    done = minivm("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{json .Config.Cmd}}",
                  "web", env=ended_vm)
    assert (done.returncode, done.stdout) == (0, 'exited 3 ["sh","-c","exit 3"]\n')
    done = minivm("ps", "--format", "{{.Name}}: {{.Status}} at {{.Address}}", env=ended_vm)
    assert (done.returncode, done.stdout) == (0, "web: exited (3) at 10.199.0.9\n")
    assert minivm("ps", env=ended_vm).stdout.splitlines()[1].split() == [
        "web", "exited", "(3)", "-", "10.199.0.9", "sh", "-c", "exit", "3"]


@pytest.mark.parametrize("args,message", [
    (["inspect", "-f", "{{.State.Nope}}", "web"], "bad --format template '{{.State.Nope}}': no field .State.Nope"),
    (["inspect", "nosuch"], "no VM named nosuch"),
    (["inspect"], "Missing argument 'NAME...'"),
    ([], "Missing command"),
    (["kernel"], "Missing command"),
    (["stop", "-t", "x", "web"], "invalid float value: 'x'"),
    (["run", "--kern", "x", "--", "true"], "unrecognized arguments: --kern"),  # no abbreviations
])
def test_bad_commands_are_one_line(ended_vm, args, message):
    assert_one_line_error(minivm(*args, env=ended_vm), vm.EXIT_MINIVM_ERROR, message)


def test_every_command_has_help():
    from minivm import cli
    for path in (["run"], ["sandbox"], ["ps"], ["inspect"], ["kernel"], ["kernel", "fetch"]):
        done = minivm(*path, "--help")
        assert done.returncode == 0 and done.stdout.startswith(
            f"Usage: minivm {' '.join(path)} "), done.stderr
    assert set(cli.minivm.commands) >= {"run", "sandbox", "ps", "inspect", "logs", "pause",
                                        "resume", "stop", "rm", "gc", "kvm-hello", "kernel"}


RUN_LINES = [
    ["run", "--", "true"],
    ["run", "uname", "-a"],                        # options end at CMD: -a is uname's
    ["run", "-m", "512M", "--cpus", "2", "--accel", "tcg", "--", "sh", "-c", "x", "--", "y"],
    ["run", "--memory=1G", "--timeout=2.5", "--network", "bridge", "-i", "-t", "true"],
    ["run", "-v", "/a:/b", "--volume", "/c:/d:ro", "--disk", "x.img", "--disk=y.img", "ls"],
    ["run", "-d", "--name", "web", "--append", "quiet loglevel=0", "--verbose", "httpd"],
    ["run", "--kernel", "/k/vmlinux", "--timings", "--explain", "-", "x"],
    ["run", "--cpus", "3", "--cpus", "1", "true"],  # the last one counts, as in click
    ["sandbox", "--network", "none", "--", "pwd"],
    ["run"],
]
CLICKS_ONLY = [  # help, clusters, bad values, unknown options: click's to read or refuse
    ["run", "--help"], ["run", "-h"], ["run", "-it", "sh"], ["run", "-m256M", "true"],
    ["run", "--cpus", "two", "true"], ["run", "--accel", "xen", "true"], ["run", "--kern", "x"],
    ["run", "--name"], ["run", "--name", "-x", "true"], ["run", "--timings=1", "true"],
    ["ps"], ["kernel", "list"], [],
]


def clicks_reading(argv):
    """What click's `minivm run|sandbox` command hands its function for `argv`."""
    from minivm import cli
    command = cli.minivm.commands[argv[0]]
    context = command.make_context(argv[0], list(argv[1:]),
                                   parent=click.Context(cli.minivm, info_name="minivm"))
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in context.params.items()}


def test_run_options_are_one_table_read_alike_with_or_without_click():
    """runcall.OPTIONS builds click's `run` and `sandbox`, and runcall.parse reads each of
    these lines exactly as click does; any other shape is left to click."""
    from minivm import cli, runcall
    for name in runcall.COMMANDS:
        params = cli.minivm.commands[name].params
        assert [(param.name, tuple(param.opts)) for param in params[:-1]] == [
            (option.dest, option.names) for option in runcall.OPTIONS]
        assert params[-1].name == "command"
    for argv in RUN_LINES:
        command, options = runcall.parse(argv)
        assert (command, options) == (argv[0], clicks_reading(argv)), argv
    for argv in CLICKS_ONLY:
        assert runcall.parse(argv) is None, argv


@pytest.mark.skipif(shutil.which("busybox") is None, reason="the initramfs needs busybox")
def test_a_run_loads_no_click(tmp_path):
    """`minivm run` does all of a boot's work with a QEMU that is /bin/true (as
    bench/vm_boot.py's own cost) without importing click, nor the standard library's
    heavier modules whose import each boot would pay (bench/README.md, issue 19); a bad
    value is still click's one line."""
    (tmp_path / "qemu-system-x86_64").symlink_to("/bin/true")
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + bytes(4096) + b"Linux version 6.1.0-test (a@b) #1\0")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "MINIVM_CACHE": str(tmp_path / "c")}
    # The first boot builds the cached initramfs base, with subprocess (`busybox --list`).
    minivm("run", "--accel", "tcg", "--kernel", str(vmlinux), "--", "true", env=env)
    for args, message in ((["--timeout", "5"], "without reporting an exit status"),
                          (["--cpus", "0"], "--cpus 0: must be at least 1")):
        done = minivm("run", "--accel", "tcg", "--kernel", str(vmlinux), *args, "--", "true",
                      env=env, python=("-X", "importtime"))
        imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")]
        errors = [line for line in done.stderr.splitlines() if not line.startswith("import")]
        assert done.returncode == vm.EXIT_MINIVM_ERROR and len(errors) == 1, done.stderr
        assert message in errors[0] and "minivm.vm" in imported
        assert not {"click", "minivm.cli"} & set(imported)
        assert not {"subprocess", "threading", "selectors", "signal", "json"} & set(imported)
    done = minivm("run", "--cpus", "two", "--", "true", env=env, python=("-X", "importtime"))
    assert done.returncode == vm.EXIT_MINIVM_ERROR and "click" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("minivm: argument --cpus: invalid int")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="the initramfs needs busybox")
def test_a_boot_of_the_cached_tiny_kernel_loads_no_pathlib_re_ctypes_or_shlex(tmp_path):
    """The default boot (the tiny kernel from the cache, no -m) leaves out what its work does
    not need (bench/README.md, issue 19, fourth stop): paths are str (pathlib loads re,
    enum, fnmatch and urllib.parse), prctl(2) goes through python-prctl (not ctypes), sh
    quoting needs no shlex (which loads re)."""
    (tmp_path / "qemu-system-x86_64").symlink_to("/bin/true")
    tiny = tmp_path / "c" / "tiny"
    tiny.mkdir(parents=True)
    (tiny / "vmlinux").write_bytes(b"\x7fELF" + bytes(4096))
    (tiny / "kernel.json").write_text(json.dumps({"release": "6.1.0-minivm", "origin": "test",
                                                  "vmlinux": str(tiny / "vmlinux")}))
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "MINIVM_CACHE": str(tmp_path / "c")}
    minivm("run", "--accel", "tcg", "--", "true", env=env)  # builds the initramfs base
    done = minivm("run", "--accel", "tcg", "--", "true", env=env, python=("-X", "importtime"))
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "without reporting an exit status" in done.stderr and "minivm.qemu" in imported
    assert not {"pathlib", "re", "enum", "ctypes", "shlex"} & imported


QEMU_THAT_REPORTS = """#!{python}
import os, sys
import prctl
print("session leader:", os.getsid(0) == os.getpid(), "fds:", sorted(os.listdir("/proc/self/fd")),
      "huge pages:", prctl.get_thp_disable() == 0, "death signal:", prctl.get_pdeathsig(),
      file=sys.stderr if "-qmp" in " ".join(sys.argv) else sys.stdout)
"""


@pytest.mark.skipif(shutil.which("busybox") is None, reason="the initramfs needs busybox")
def test_qemu_runs_in_its_own_session_with_no_descriptor_minivm_inherited(tmp_path):
    """qemu.spawn's fork and exec do what subprocess did: a session of QEMU's own (a Ctrl-C
    reaches minivm first), and no descriptor of minivm's caller left open in QEMU (the
    test's fd, inherited by minivm, would otherwise be); SIGKILL when minivm dies, huge
    pages kept (a foreground boot is faster with them); an exec that fails is one line."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(QEMU_THAT_REPORTS.format(python=sys.executable))
    qemu.chmod(0o755)
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + bytes(4096) + b"Linux version 6.1.0-test (a@b) #1\0")
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}",
               MINIVM_CACHE=str(tmp_path / "c"))
    argv = [sys.executable, "-m", "minivm", "run", "--accel", "tcg", "--kernel", str(vmlinux),
            "--verbose", "--timeout", "20", "--", "true"]
    with open(os.devnull) as inherited:
        os.set_inheritable(inherited.fileno(), True)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                              stdin=subprocess.DEVNULL, pass_fds=(inherited.fileno(),))
    assert done.returncode == vm.EXIT_MINIVM_ERROR
    assert ("[guest] session leader: True fds: ['0', '1', '2', '3'] huge pages: True death "
            "signal: 9") in done.stderr  # fd 3: listdir's
    qemu.write_bytes(b"not a program")  # and no other qemu on PATH for execvp to go on to
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(env, PATH=str(tmp_path)),
                          timeout=60, stdin=subprocess.DEVNULL)
    one_line_error(done, vm.EXIT_MINIVM_ERROR, "minivm: ",
                   "cannot start qemu-system-x86_64: Exec format error")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="the initramfs needs busybox")
def test_a_detached_qemu_is_spawned_alike_but_outlives_minivm_and_logs_to_qemu_log(tmp_path):
    """`run -d` starts QEMU with the same qemu.spawn (its own session, no descriptor of
    minivm's) but without the death signal, since it must outlive the watchdog, without
    transparent huge pages, since it may idle long (a foreground run keeps them: it boots
    faster), and with its stderr in the VM's qemu.log, whose last line a QEMU that exits at
    once becomes."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(QEMU_THAT_REPORTS.format(python=sys.executable))
    qemu.chmod(0o755)
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + bytes(4096) + b"Linux version 6.1.0-test (a@b) #1\0")
    done = minivm("run", "-d", "--accel", "tcg", "--kernel", str(vmlinux), "--", "true",
                  env={"PATH": f"{tmp_path}:{os.environ['PATH']}",
                       "MINIVM_ROOT": str(tmp_path / "vms")}, cache=tmp_path / "c")
    one_line_error(done, vm.EXIT_MINIVM_ERROR, "minivm: ", "QEMU exited at once: session "
                   "leader: True fds: ['0', '1', '2', '3', '4'] huge pages: False death signal: 0")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="the initramfs needs busybox")
def test_a_qemu_that_closes_the_console_but_runs_on_is_killed_at_the_timeout(tmp_path):
    """After the serial port closes, qemu.run waits for QEMU's exit on its pidfd only until
    the deadline; then QEMU is killed and the run is a timeout, not a hang."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nexec >&-\nexec sleep 60\n")
    qemu.chmod(0o755)
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + bytes(4096) + b"Linux version 6.1.0-test (a@b) #1\0")
    done = minivm("run", "--accel", "tcg", "--kernel", str(vmlinux), "--timeout", "2", "--",
                  "true", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}, cache=tmp_path / "c")
    assert done.returncode == vm.EXIT_TIMEOUT, done.stderr  # a hang: minivm()'s TimeoutExpired
    assert "timeout: the guest did not finish within 2 s" in done.stderr
