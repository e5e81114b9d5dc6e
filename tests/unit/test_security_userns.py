"""Why a non-root user may not create user namespaces: each cause named from its sysctl."""
import pytest

from minibox import namespaces


@pytest.mark.parametrize("sysctl, value, cause", [
    ("kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone=0"),
    ("user/max_user_namespaces", "0", "user.max_user_namespaces=0"),
    ("kernel/apparmor_restrict_unprivileged_userns", "1", "AppArmor restricts"),
])
def test_each_cause_is_named(tmp_path, sysctl, value, cause):
    (tmp_path / sysctl).parent.mkdir(parents=True)
    (tmp_path / sysctl).write_text(value + "\n")
    assert cause in namespaces.check_unprivileged_user_namespaces(str(tmp_path))


def test_a_host_that_allows_them_gives_no_reason(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user/max_user_namespaces").write_text("96551\n")
    assert namespaces.check_unprivileged_user_namespaces(str(tmp_path)) is None
