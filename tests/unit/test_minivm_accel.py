"""KVM-or-TCG detection, on this host and on fake hosts built from files."""
from pathlib import Path

import pytest

from minivm import MinivmError, accel
from minivm.accel import HostPaths


def fake_host(tmp_path, *, kvm=True, pvm=False, flags="fpu vmx sse2"):
    """A host tree: a /dev/kvm stand-in (a plain file opens O_RDWR), /sys/module, cpuinfo."""
    if kvm:
        (tmp_path / "kvm").write_bytes(b"")
    if pvm:
        (tmp_path / "kvm_pvm").mkdir()
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\ncpu MHz\t\t: 2995.123\nflags\t\t: {flags}\n")
    return HostPaths(tmp_path / "kvm", tmp_path / "kvm_pvm", tmp_path / "cpuinfo")


def test_kvm_is_chosen_only_when_every_check_passes(tmp_path):
    choice = accel.choose("auto", fake_host(tmp_path))
    assert choice.name == "kvm"


@pytest.mark.parametrize("host_kwargs,reason", [
    ({"kvm": False}, "does not exist"),
    ({"pvm": True}, "PVM-only"),
    ({"flags": "fpu sse2 hypervisor"}, "neither vmx nor svm"),
])
def test_auto_falls_back_to_tcg_saying_why(tmp_path, host_kwargs, reason):
    choice = accel.choose("auto", fake_host(tmp_path, **host_kwargs))
    assert choice.name == "tcg"
    assert reason in choice.reason


def test_kvm_that_cannot_open_is_named(tmp_path):
    host = fake_host(tmp_path)
    host.dev_kvm.unlink()
    host.dev_kvm.mkdir()  # exists, but open(O_RDWR) fails with EISDIR
    assert "cannot open" in accel.kvm_problem(host)


def test_asking_for_kvm_where_it_cannot_work_fails_with_the_reason(tmp_path):
    with pytest.raises(MinivmError, match="--accel kvm cannot work here: .*PVM-only"):
        accel.choose("kvm", fake_host(tmp_path, pvm=True))
    assert accel.choose("tcg", fake_host(tmp_path)).name == "tcg"


@pytest.mark.skipif(not Path("/sys/module/kvm_pvm").exists(), reason="a PVM host only")
def test_this_pvm_host_gets_tcg_with_the_pvm_reason():
    choice = accel.choose("auto")
    assert choice.name == "tcg"
    assert "PVM-only" in choice.reason and "/sys/module/kvm_pvm" in choice.reason


def test_host_tsc_rate_comes_from_cpuinfo(tmp_path):
    host = fake_host(tmp_path)
    assert accel.host_tsc_khz(host) == 2995123
    host.cpuinfo.write_text("processor\t: 0\n")
    assert accel.host_tsc_khz(host) is None
