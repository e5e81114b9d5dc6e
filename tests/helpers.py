"""Small helpers shared by the tests."""
import contextlib
import os


def container_dirs(root):
    """The container directories under a state root (names/ is bookkeeping, not a container)."""
    try:
        return sorted(name for name in os.listdir(root) if name != "names")
    except FileNotFoundError:
        return []


def busybox_layer(store):
    """The busybox image's (one) layer directory in the image store at `store`."""
    import subprocess
    import sys
    code = "from minibox import images; print(images.image_layers('busybox')[0])"
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


def cgroup_dirs():
    """Every cgroup directory a minibox run from this process could make: below this
    process's own cgroup in each v1 hierarchy (where minibox/ and --cgroup-parent go), or
    below the v2 root's minibox*/ groups."""
    from minibox import cgroups
    from minibox.cgroups.v1 import mounted_hierarchies
    if cgroups.cgroup_version() == 2:
        tops = [entry.path for entry in os.scandir(cgroups.CGROUP_ROOT)
                if entry.is_dir() and entry.name.startswith("minibox")]
    else:
        tops = [os.path.join(mountpoint, own.lstrip("/"))
                for mountpoint, own in mounted_hierarchies().values()]
    found = set()
    for top in tops:
        for directory, subdirs, _ in os.walk(top):
            found.update(os.path.join(directory, name) for name in subdirs)
    return found


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
