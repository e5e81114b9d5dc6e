"""Small helpers shared by the tests."""
import contextlib
import os


def busybox_layer(store):
    """The busybox image's (one) layer directory in the image store at `store`."""
    import subprocess
    import sys
    code = "from minibox import images; print(images.layers_of(images.resolve('busybox'))[0])"
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, MINIBOX_STORE=store),
                          capture_output=True, text=True, check=True).stdout.strip()


PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_references(narration):
    """Every `(code: path:line)` that `--explain` printed, checked: the file exists in the
    project and the line is real code (not past the end, not blank). Returns [(path, text)]."""
    import re
    found = re.findall(r"\(code: ([\w./-]+\.py):(\d+)\)", narration)
    assert found, "no (code: file:line) references in the narration"
    checked = []
    for path, line in found:
        assert not os.path.isabs(path), f"{path}: absolute; the narration should name project files"
        with open(os.path.join(PROJECT, path)) as source:
            lines = source.read().splitlines()
        assert 1 <= int(line) <= len(lines), f"{path}:{line}: past the end ({len(lines)} lines)"
        text = lines[int(line) - 1]
        assert text.strip(), f"{path}:{line} is a blank line"
        checked.append((path, text))
    return checked


def converse(shell, command, answers, exit_status):
    """Type `command` into an interactive shell (a pexpect child), expect each of `answers`
    in turn, then type `exit <exit_status>`: the session must end with that status."""
    import pexpect
    shell.sendline(command)
    for answer in answers:
        shell.expect(answer)
    shell.sendline(f"exit {exit_status}")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == exit_status


def assert_one_line_error(result, status, start, contains=""):
    """Bad input's contract: exit `status`, one line on stderr beginning with `start` (and
    holding `contains`), no traceback."""
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(start) and contains in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def minivm_leftovers(root, scratch, tag, grace=5.0):
    """What one test's minivm runs left behind, by kind; {} when clean. Scoped so that other
    sessions' VMs on this machine never count: QEMU processes whose environment carries
    `tag`, VM directories under the test's `root`, scratch files (initramfs, overlays) in
    the test's `scratch` directory, and addresses leased to a minivm-... owner whose tap is
    gone (a tap vanishes with its last descriptor, so a lease without one is a dead run's).
    QEMU processes get `grace` seconds to die (PR_SET_PDEATHSIG, the watchdog)."""
    import time
    deadline = time.monotonic() + grace
    while _qemu_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    found = {"qemu": _qemu_tagged(tag),
             "vm dirs": sorted(os.listdir(root)) if os.path.isdir(root) else [],
             "scratch files": sorted(name for name in os.listdir(scratch)
                                     if name.startswith("minivm-")),
             "dead leases": dead_minivm_leases()}
    return {kind: things for kind, things in found.items() if things}


def dead_minivm_leases():
    """{address: owner} of minivm leases in this netns's pool whose tap is gone."""
    from minibox import bridge
    pool = bridge.address_pool()
    if not pool.exists():
        return {}
    from pyroute2.iproute.linux import IPRoute
    with IPRoute() as ipr, pool.locked() as table:
        leases = table.leases
        live = bridge.live_ports(ipr, leases)
    return {address: owner for address, owner in leases.items()
            if owner.startswith("minivm-") and address not in live}


def _qemu_tagged(tag):
    mark = f"\0{tag}\0".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if not cmdline.read().startswith(b"qemu-system"):
                    continue
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if mark in b"\0" + environ.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def small_tmpfs(path, options="size=32m"):
    """A tmpfs mounted at `path` (made if missing) for the block: a small disk to fill. It is
    unmounted afterwards, whatever the block left in it."""
    import subprocess
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)
