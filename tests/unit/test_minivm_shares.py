"""-v HOSTDIR:GUESTDIR[:ro] and `minivm sandbox`: parsing, QEMU options, the guest's mount steps."""
import pytest

from minivm import MinivmError, qemu, shares


def test_a_share_spec_is_parsed_and_resolved(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert shares.parse(f"{tmp_path}/link:/data") == (str(tmp_path / "real"), "/data", False)
    assert shares.parse(f"{tmp_path}/real:/data/:ro").readonly
    assert shares.parse(f"{tmp_path}/real:/a/../b:rw") == (str(tmp_path / "real"), "/b", False)


@pytest.mark.parametrize("spec,message", [
    ("{tmp}", "expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"),
    ("{tmp}:/x:rx", "expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"),
    ("{tmp}::ro", "expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"),
    ("{tmp}:/x:ro:more", "expected HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"),
    ("{tmp}/nope:/x", "host directory {tmp}/nope does not exist"),
    ("{tmp}/file:/x", "host directory {tmp}/file is not a directory"),
    ("{tmp}:relative", "the guest directory must be an absolute path"),
])
def test_bad_specs_say_what_is_wrong(tmp_path, spec, message):
    (tmp_path / "file").write_text("")
    spec, message = spec.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(MinivmError, match="^" + f"-v {spec}: {message}".replace("(", r"\(")
                       .replace(")", r"\)") + "$"):
        shares.parse(spec)


def test_each_share_is_an_fsdev_a_9p_device_and_a_mount(tmp_path):
    folders = [shares.Share("/srv/a,b", "/data", False), shares.Share("/srv/c", "/ro", True)]
    attached = shares.attach(folders, sandbox=False)
    args = [arg for opt in attached.options for arg in opt.args]
    assert args == [
        "-fsdev", "local,id=share0,path=/srv/a,,b,security_model=none,multidevs=remap",
        "-device", "virtio-9p-device,fsdev=share0,mount_tag=share0",
        "-fsdev", "local,id=share1,path=/srv/c,security_model=none,multidevs=remap,readonly=on",
        "-device", "virtio-9p-device,fsdev=share1,mount_tag=share1"]
    assert attached.setup == [
        ["mkdir", "-p", "/data"],
        ["mount", "-t", "9p", "-o", shares.MOUNT_OPTIONS, "share0", "/data"],
        ["mkdir", "-p", "/ro"],
        ["mount", "-t", "9p", "-o", shares.MOUNT_OPTIONS + ",ro", "share1", "/ro"]]
    assert attached.modules == ["virtio_mmio", "9pnet_virtio", "9p"]


def test_a_sandbox_mounts_the_host_root_first_then_shares_inside_it():
    attached = shares.attach([shares.Share("/srv", "/out", False)], sandbox=True)
    args = [arg for opt in attached.options for arg in opt.args]
    assert "local,id=hostroot,path=/,security_model=none,multidevs=remap,readonly=on" in args
    assert "virtio-rng-device" in args  # host programs want getrandom(2) to answer
    mounts = [step for step in attached.setup if step[0] == "mount"]
    assert [step[-1] for step in mounts] == [
        "/sandbox/host", "/sandbox/rw", "/sandbox/root", "/sandbox/root/proc",
        "/sandbox/root/sys", "/sandbox/root/dev", "/sandbox/root/out"]
    overlay = mounts[2]
    assert overlay[:4] == ["mount", "-t", "overlay", "-o"]
    assert overlay[4] == ("lowerdir=/sandbox/host,upperdir=/sandbox/rw/upper,"
                          "workdir=/sandbox/rw/work")
    assert {"overlay", "virtio_rng"} <= set(attached.modules)


def test_the_options_explain_themselves():
    for opt in shares.attach([shares.Share("/srv", "/x", True)], sandbox=True).options:
        assert opt.why and opt.doc and isinstance(opt, qemu.Option)
