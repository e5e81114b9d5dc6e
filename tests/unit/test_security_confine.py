"""confine() for real, no container: a forked child confines itself, execs cat
/proc/self/status, and the kernel's own view of its capability sets is checked."""
import os

import pytest

from minibox import security

DEFAULT_MASK = security.capability_mask(security.DOCKER_DEFAULT_CAPABILITIES)


def status_after_exec(profile, user=None):
    """The /proc/self/status fields of `cat` exec'd after confine(profile, user)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(write_end, 1)
            security.confine(profile, user)
            os.execv("/bin/cat", ["cat", "/proc/self/status"])
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def masks(fields):
    return {name: int(fields[name], 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


@pytest.mark.root
def test_default_profile_is_dockers():
    fields = status_after_exec(security.SecurityProfile())
    assert masks(fields) == {"CapInh": DEFAULT_MASK, "CapPrm": DEFAULT_MASK,
                             "CapEff": DEFAULT_MASK, "CapBnd": DEFAULT_MASK, "CapAmb": 0}
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


@pytest.mark.root
def test_added_and_dropped_capabilities_show_in_every_set():
    caps = security.resolve_capabilities(cap_add=["NET_ADMIN"], cap_drop=["CHOWN", "MKNOD"])
    expected = security.capability_mask(caps)
    assert expected == (DEFAULT_MASK | 1 << 12) & ~(1 << 0 | 1 << 27)
    got = masks(status_after_exec(security.SecurityProfile(capabilities=caps)))
    assert got == {"CapInh": expected, "CapPrm": expected, "CapEff": expected,
                   "CapBnd": expected, "CapAmb": 0}


@pytest.mark.root
def test_a_user_keeps_the_bounding_set_but_no_capabilities():
    fields = status_after_exec(security.SecurityProfile(), "1000:1000")
    assert masks(fields) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DEFAULT_MASK,
                             "CapAmb": 0}
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1000"] * 4
    assert fields["Groups"].strip() == ""


@pytest.mark.root
def test_unconfined_profile_keeps_seccomp_and_no_new_privs_off():
    fields = status_after_exec(security.SecurityProfile(no_new_privileges=False, seccomp=False))
    assert fields["NoNewPrivs"].strip() == "0"
    assert fields["Seccomp"].strip() == "0"
    assert int(fields["CapEff"], 16) == DEFAULT_MASK


ETC = {"passwd": "root:x:0:0::/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n",
       "group": "root:x:0:\nstaff:x:50:\nalice:x:1001:\n"}


@pytest.mark.parametrize("user, ids", [
    ("alice", (1000, 1001)), ("1000", (1000, 1001)), ("2000", (2000, 0)),
    ("alice:staff", (1000, 50)), ("2000:3000", (2000, 3000)), ("root", (0, 0)),
])
def test_resolve_user_reads_the_containers_passwd_and_group(tmp_path, user, ids):
    for name, text in ETC.items():
        (tmp_path / name).write_text(text)
    assert security.resolve_user(user, str(tmp_path)) == ids


@pytest.mark.parametrize("user, message", [
    ("bob", "unable to find user bob"), ("alice:wheel", "unable to find group wheel")])
def test_unknown_names_are_one_clear_error(tmp_path, user, message):
    for name, text in ETC.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(security.MiniboxError, match=message):
        security.resolve_user(user, str(tmp_path))


OCI_SETS = {"effective": ["NET_ADMIN", "KILL"], "permitted": ["NET_ADMIN", "KILL", "CHOWN"],
            "inheritable": ["NET_ADMIN", "CHOWN"], "ambient": ["NET_ADMIN", "KILL"]}


@pytest.mark.root
@pytest.mark.parametrize("user", [None, "1000:1000"])
def test_an_oci_profile_applies_each_set_as_given_for_root_and_a_user(user):
    """config.json's five sets, as runc applies them: a user keeps them (keepcaps across
    setuid, then capset and the ambient set). KILL cannot be ambient: it is not inheritable."""
    bounding = {"NET_ADMIN", "KILL", "CHOWN", "SETUID", "SETGID"}
    fields = status_after_exec(security.SecurityProfile(
        bounding, no_new_privileges=False, seccomp=False, capability_sets=OCI_SETS), user)
    mask = security.capability_mask
    # What execve(2) makes of them (capabilities(7), "Transformation of capabilities during
    # execve()"): root's file is as if it had every file capability, so P' = the bounding
    # set; a user's plain file gives P' = E' = the ambient set.
    permitted = mask(bounding) if user is None else mask({"NET_ADMIN"})
    assert masks(fields) == {"CapInh": mask({"NET_ADMIN", "CHOWN"}), "CapPrm": permitted,
                             "CapEff": permitted, "CapBnd": mask(bounding),
                             "CapAmb": mask({"NET_ADMIN"})}
