"""Is hardware virtualization (KVM) really usable here, or must QEMU emulate the CPU (TCG)?

KVM runs guest code on the real CPU through /dev/kvm (Documentation/virt/kvm/api.rst); TCG,
QEMU's "Tiny Code Generator", translates guest instructions in software: always available,
some tens of times slower. `auto` picks KVM only when each of these holds:

1. /dev/kvm exists: the kvm module is loaded (and, inside a VM, nested virtualization is on);
2. the host is not PVM-only: a kernel with the kvm_pvm module (/sys/module/kvm_pvm) offers
   /dev/kvm, but only to guests built for PVM ("Pagetable-based Virtual Machine", a
   paravirtual KVM for hosts without VMX/SVM); a stock kernel hangs in it;
3. /dev/kvm opens for reading and writing (root, or the `kvm` group);
4. the CPU flags in /proc/cpuinfo show vmx (Intel VT-x) or svm (AMD-V).

The checks read files only, so they cost well under a millisecond.
"""
import os
from collections import namedtuple

from minivm import MinivmError

CHOICES = ("auto", "kvm", "tcg")


# Where the facts live; tests point these at a tree of their own. (namedtuple, not a
# dataclass: importing dataclasses costs ~8 ms, and minivm's job is booting fast.)
HostPaths = namedtuple("HostPaths", "dev_kvm pvm_module cpuinfo",
                       defaults=("/dev/kvm", "/sys/module/kvm_pvm", "/proc/cpuinfo"))

# name: "kvm" or "tcg", as QEMU's -accel spells it; reason: one line saying why.
Accel = namedtuple("Accel", "name reason")


def kvm_problem(host: HostPaths = HostPaths()) -> str | None:
    """Why KVM cannot run a stock guest kernel here, or None when it can."""
    if not os.path.exists(host.dev_kvm):
        return f"{host.dev_kvm} does not exist (kvm module not loaded, or no nested virtualization)"
    if os.path.exists(host.pvm_module):
        return (f"this host's KVM is PVM-only ({host.pvm_module} exists): it runs only "
                "PVM-enabled guest kernels, and a stock kernel hangs in it")
    try:
        os.close(os.open(host.dev_kvm, os.O_RDWR))
    except OSError as error:
        return f"cannot open {host.dev_kvm}: {error.strerror} (run as root or join the kvm group)"
    flags = _cpu_flags(host.cpuinfo)
    if not flags & {"vmx", "svm"}:
        return f"the CPU flags in {host.cpuinfo} show neither vmx nor svm"
    return None


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in _lines(cpuinfo):
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def choose(requested: str, host: HostPaths = HostPaths()) -> Accel:
    """The accelerator for `--accel requested`; MinivmError when `kvm` is asked for but can't work."""
    if requested == "tcg":
        return Accel("tcg", "TCG (software emulation) as asked by --accel tcg")
    problem = kvm_problem(host)
    if requested == "kvm":
        if problem:
            raise MinivmError(f"--accel kvm cannot work here: {problem}")
        return Accel("kvm", "KVM as asked by --accel kvm")
    if problem:
        return Accel("tcg", f"TCG (software emulation), because {problem}")
    return Accel("kvm", "KVM: /dev/kvm opens and the CPU has hardware virtualization")


def host_tsc_khz(host: HostPaths = HostPaths()) -> int | None:
    """The host's TSC rate in kHz, for the guest's tsc_early_khz=, or None when unknown.

    Under TCG the guest's RDTSC returns the host's own counter (QEMU's cpu_get_host_ticks()),
    so the guest TSC ticks at the host's rate. /proc/cpuinfo's "cpu MHz" is that rate on hosts
    with an invariant TSC reported at base clock (VMs like this one); where it shows the
    current clock instead, guest time may drift, but the boot still cannot stall.
    """
    for line in _lines(host.cpuinfo):
        if line.startswith("cpu MHz"):
            return round(float(line.partition(":")[2]) * 1000)
    return None


def _lines(path: str) -> list[str]:
    with open(path) as text:
        return text.read().splitlines()
