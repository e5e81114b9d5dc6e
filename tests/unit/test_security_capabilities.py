"""Capability resolution: Docker's rules for --cap-add, --cap-drop and --privileged."""
import pytest

from minibox import security
from minibox.security import DOCKER_DEFAULT_CAPABILITIES as DEFAULT

EVERYTHING = frozenset(security.CAPABILITIES)


def resolve(add=(), drop=(), privileged=False, available=EVERYTHING):
    return security.resolve_capabilities(add, drop, privileged, available)


def test_default_is_dockers_fourteen_and_its_mask():
    assert resolve() == DEFAULT
    assert len(DEFAULT) == 14
    # `docker run --rm busybox grep CapEff /proc/self/status` prints this mask.
    assert security.capability_mask(DEFAULT) == 0x00000000A80425FB


def test_add_and_drop_accept_any_spelling():
    caps = resolve(add=["net_admin", "CAP_SYS_PTRACE"], drop=["Cap_Chown"])
    assert caps == DEFAULT - {"CHOWN"} | {"NET_ADMIN", "SYS_PTRACE"}


def test_drop_all_keeps_only_the_added():
    assert resolve(add=["NET_BIND_SERVICE"], drop=["ALL"]) == {"NET_BIND_SERVICE"}
    assert resolve(drop=["all"]) == frozenset()


def test_add_all_keeps_everything_but_the_dropped():
    assert resolve(add=["ALL"], drop=["SYS_ADMIN"]) == EVERYTHING - {"SYS_ADMIN"}


def test_adding_and_dropping_the_same_capability_keeps_it_like_docker():
    assert "MKNOD" in resolve(add=["MKNOD"], drop=["MKNOD"])


def test_privileged_keeps_what_the_runtime_holds():
    held = EVERYTHING - {"SYS_RESOURCE"}
    assert resolve(privileged=True, available=held) == held
    assert resolve(add=["ALL"], available=held) == held


def test_unknown_name_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown capability 'NET_ADMINN'.*capabilities\(7\)"):
        resolve(add=["NET_ADMINN"])
    with pytest.raises(ValueError, match="unknown capability 'CAP_FOO'"):
        resolve(drop=["CAP_FOO"])


def test_adding_a_capability_the_runtime_lacks_is_refused():
    with pytest.raises(ValueError, match="cannot add SYS_RESOURCE: minibox itself does not hold"):
        resolve(add=["SYS_RESOURCE"], available=EVERYTHING - {"SYS_RESOURCE"})


def test_held_capabilities_is_this_process_bounding_set():
    with open("/proc/self/status") as status:
        bounding = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd"))
    assert security.capability_mask(security.held_capabilities()) == bounding
