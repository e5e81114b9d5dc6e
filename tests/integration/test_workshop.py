"""The workshop's checker (examples/workshop/check.py) on the real kernel: it passes on each
level's reference solution, fails on the untouched starting file with the level's hint, fails
only the matching check on a deliberately broken solution, and leaves nothing behind."""
import os
import re
import subprocess
import sys

import pytest

from tests.harness import host_mounts

pytestmark = pytest.mark.root
WORKSHOP = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "workshop")
sys.path.insert(0, WORKSHOP)
import levels  # noqa: E402

# level: (a line of the solution, what breaks it, the one check that must then fail)
BROKEN = {
    0: ("return code if code >= 0 else 128 - code", "return code", "killed by SIGKILL"),
    1: ('check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")', "pass",
        "the command is PID 1"),
    2: ('''check(libc.syscall(155, b".", b"."), "pivot_root")  # 155: pivot_root on x86_64
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")''', 'os.chroot(".")',
        "a chroot escape stays inside"),
    3: (",upperdir={scratch}/upper,workdir={scratch}/work", "", "writes go to the upper dir"),
    4: ('(dirs[1], "pids.max", pids)', '(dirs[1], "pids.max", None)', "--pids 5 stops"),
    5: ("master=ip.link_lookup(ifname=BRIDGE)[0], ", "", "it reaches another container"),
    6: ('check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")', "pass",
        "NoNewPrivs: 1"),
    7: ('id_map.write(f"0 {HOST_ID} 65536")', 'id_map.write("0 0 65536")', "nobody outside"),
    8: ('"-m", f"{args.memory}M", ', "", "the guest has the RAM"),
    9: ("written += run[offset:offset + size * count]", "written += run[32:32 + size]",
        "the guest's message comes out"),
}
# level: a check the untouched starting file fails, and words of its hint
STARTING = {0: ("the command runs and prints", "fork()"), 1: ("the command is PID 1",
            "unshare(CLONE_NEWPID)"), 2: ("a chroot escape stays inside", "pivot_root"),
            3: ("both layers are visible", "lowerdir="), 4: ("a 32 MiB hog dies", "memory.max"),
            5: ("it has eth0 with its address", "veth"), 6: ("Seccomp: 2", "PR_SET_SECCOMP"),
            7: ("nobody outside", "uid_map"), 8: ("the guest boots its own kernel", "-initrd"),
            9: ("the guest's message comes out", "KVM_SET_USER_MEMORY_REGION")}
# Levels 08 and 09 need a VM: 08 boots QEMU three times per run (TCG here: ~2 s a boot)
VM_MARKS = {8: [pytest.mark.vm, pytest.mark.slow], 9: [pytest.mark.vm]}


def each_level(levels_):
    return [pytest.param(level, marks=VM_MARKS.get(level, [])) for level in sorted(levels_)]


def check(level, text, tmp_path):
    program = tmp_path / "mybox.py"
    program.write_text(text)
    mounts = [mount for mount in host_mounts() if "mybox" in mount]  # others' tests run too
    done = subprocess.run([sys.executable, os.path.join(WORKSHOP, "check.py"), str(level),
                           str(program)], capture_output=True, text=True, timeout=120)
    assert done.stderr == "", done.stderr  # no traceback, ever
    assert [mount for mount in host_mounts() if "mybox" in mount] == mounts
    assert not [name for name in os.listdir("/sys/class/net")  # level 05's veths, bridge
                if re.fullmatch(r"mb\d+h|myboxbr0", name)]
    for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        if os.path.isdir(top):
            assert not [name for name in os.listdir(top) if name.startswith("mybox-")]
    assert not [name for name in os.listdir("/tmp") if name.startswith("mybox-")]
    return done.returncode, done.stdout.splitlines()


@pytest.mark.parametrize("level", each_level(levels.LEVELS))
def test_reference_solution_passes(level, tmp_path):
    code, lines = check(level, levels.render(level, solved=True), tmp_path)
    assert code == 0 and lines and all(line.startswith("PASS ") for line in lines), lines


@pytest.mark.parametrize("level", each_level(levels.LEVELS))
def test_starting_file_fails_with_the_hint(level, tmp_path):
    code, lines = check(level, levels.render(level, solved=False), tmp_path)
    name, hint = STARTING[level]
    failed = [line for line in lines if line.startswith(f"FAIL {name}")]
    assert code == 1 and failed and hint in failed[0], lines
    assert "minibox does it at minibox/" in failed[0] or "minivm does it at minivm/" in failed[0]


@pytest.mark.parametrize("level", each_level(BROKEN))
def test_broken_solution_fails_only_the_matching_check(level, tmp_path):
    line, broken, name = BROKEN[level]
    solution = levels.render(level, solved=True)
    assert solution.count(line) == 1
    code, lines = check(level, solution.replace(line, broken), tmp_path)
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert code == 1 and len(failed) == 1 and failed[0].startswith(f"FAIL {name}"), lines


def test_every_minibox_step_named_by_a_check_exists(tmp_path):
    import check as checker
    import checks
    for level in levels.LEVELS:
        scratch = tmp_path / str(level)
        scratch.mkdir()
        for item in checks.for_level(level, "/nonexistent", str(scratch)):
            assert "(no function" not in checker.locate(item.minibox), item.minibox


@pytest.mark.parametrize("level", sorted(levels.LEVELS))
def test_each_level_folder_holds_its_generated_starting_file_and_a_readme(level):
    """The committed NN_name/mybox.py is `levels.py start NN`, byte for byte: after changing
    solutions/mybox.py, `python3 examples/workshop/levels.py write` makes them again."""
    folder = levels.folder(level)
    with open(os.path.join(folder, "mybox.py")) as committed:
        assert committed.read() == levels.render(level, solved=False)
    with open(os.path.join(folder, "README.md")) as readme:
        text = readme.read()
    for section in ("## Exercises", "## Check your work", "man"):
        assert section in text, (folder, section)
    assert f"check.py {level:02}" in text
