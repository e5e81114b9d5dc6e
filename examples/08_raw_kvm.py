"""Lesson 08: raw KVM: a virtual machine made with nothing but ioctls on /dev/kvm.

QEMU (lesson 07) is a big program around a small kernel interface. `minivm kvm-hello` is the
small interface alone: open /dev/kvm, KVM_CREATE_VM, give it memory (KVM_SET_USER_MEMORY_REGION),
KVM_CREATE_VCPU, set its registers, KVM_RUN, and print each VM exit -- a few real-mode
instructions that write to a serial port and halt (Documentation/virt/kvm/api.rst).

    sudo .venv/bin/python examples/08_raw_kvm.py
"""
import lesson


def main():
    lesson.start("Lesson 08: raw KVM",
                 "minivm/kvmhello.py, minivm/accel.py (is KVM usable here?), "
                 "Linux Documentation/virt/kvm/api.rst sections 4.2 (KVM_CREATE_VM) to 4.10 "
                 "(KVM_RUN)")
    lesson.run("minivm", "kvm-hello", check_code=0)
    lesson.say("What minivm decides about this host's KVM for real guests (minivm/accel.py):")
    lesson.run("python", "-c", "from minivm import accel; print(accel.choose('auto').reason)")


if __name__ == "__main__":
    main()
