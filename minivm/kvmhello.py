"""`minivm kvm-hello`: a virtual machine from nothing but /dev/kvm ioctls, in one screen.

QEMU is a large program; underneath, a KVM virtual machine is a handful of ioctl(2) calls on
file descriptors (Documentation/virt/kvm/api.rst, "the KVM API"):

    /dev/kvm --KVM_CREATE_VM--> vm fd --KVM_CREATE_VCPU--> vcpu fd --KVM_RUN--> exit, exit...

This lesson follows kvm-hello-world (github.com/dpw/kvm-hello-world): give the VM 64 KiB of
memory, put 16-bit real-mode code in it, point the vCPU at it and run. The code writes a
greeting to I/O port 0x3f8 (where a PC's first serial port, COM1, lives) and halts. There is
no serial port: each `out` makes KVM_RUN return with KVM_EXIT_IO, and this program plays the
device. `hlt` returns KVM_EXIT_HLT. The constants and struct layouts below are quoted from
include/uapi/linux/kvm.h; ioctl numbers are spelled out as _IO/_IOR/_IOW would compute them
(include/uapi/asm-generic/ioctl.h: dir << 30 | size << 16 | type << 8 | nr, KVMIO = 0xAE).

On this machine /dev/kvm belongs to PVM, a paravirtual KVM that cannot boot a stock Linux
guest (accel.py), yet it runs this real-mode code: the ioctl contract is the same.
"""
import ctypes
import fcntl
import mmap
import os
import struct

from minivm import MinivmError

KVM_GET_API_VERSION = 0xAE00          # _IO(KVMIO, 0x00); always 12 (api.rst 4.1)
KVM_CREATE_VM = 0xAE01                # _IO(KVMIO, 0x01), arg: machine type 0
KVM_GET_VCPU_MMAP_SIZE = 0xAE04       # _IO(KVMIO, 0x04)
KVM_CREATE_VCPU = 0xAE41              # _IO(KVMIO, 0x41), arg: vcpu id
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = 0xAE47             # _IO(KVMIO, 0x47), arg: a guest-physical address
KVM_RUN = 0xAE80                      # _IO(KVMIO, 0x80)
KVM_SET_REGS = 0x4090AE82             # _IOW(KVMIO, 0x82, struct kvm_regs), 144 bytes
KVM_GET_SREGS = 0x8138AE83            # _IOR(KVMIO, 0x83, struct kvm_sregs), 312 bytes
KVM_SET_SREGS = 0x4138AE84            # _IOW(KVMIO, 0x84, struct kvm_sregs)
EXIT_NAMES = {2: "KVM_EXIT_IO", 5: "KVM_EXIT_HLT", 6: "KVM_EXIT_MMIO", 8: "KVM_EXIT_SHUTDOWN",
              9: "KVM_EXIT_FAIL_ENTRY", 17: "KVM_EXIT_INTERNAL_ERROR"}
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5

MEMORY_SIZE = 0x10000
TSS_ADDRESS = 0x7FFFD000  # below 2 GiB: fcntl.ioctl() passes a C int
CODE_AT = 0x1000
MESSAGE = b"Hello, KVM!\n\0"
# 16-bit code at 0x1000, the message right after it at 0x1010:
CODE = bytes([
    0xBE, 0x10, 0x10,   # mov si, 0x1010   ; the message
    0xBA, 0xF8, 0x03,   # mov dx, 0x3f8    ; COM1's data port
    0xAC,               # next: lodsb       ; al = [ds:si++]
    0x84, 0xC0,         # test al, al
    0x74, 0x03,         # jz done           ; the NUL ends the message
    0xEE,               # out dx, al        ; -> KVM_EXIT_IO
    0xEB, 0xF8,         # jmp next
    0xF4,               # done: hlt         ; -> KVM_EXIT_HLT
]).ljust(0x10, b"\x90") + MESSAGE

# struct kvm_userspace_memory_region { __u32 slot; __u32 flags; __u64 guest_phys_addr;
#                                      __u64 memory_size; __u64 userspace_addr; };
MEMORY_REGION = struct.Struct("=IIQQQ")
# struct kvm_run starts: __u8 request_interrupt_window, immediate_exit, padding1[6];
# __u32 exit_reason (offset 8); ... the exit's union at offset 32. For KVM_EXIT_IO:
# struct { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; } io;
# data_offset: where in the kvm_run mapping the bytes of an `out` are (or go, for `in`).
EXIT_REASON, EXIT_IO = struct.Struct("=I"), struct.Struct("=BBHIQ")
# struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags, 18 x __u64.
REGS = struct.Struct("=18Q")
# struct kvm_sregs (312 bytes) begins with struct kvm_segment cs:
# __u64 base; __u32 limit; __u16 selector; then type, present, dpl... as __u8.
SREGS_SIZE, SEGMENT_START = 312, struct.Struct("=QIH")


def run_lesson(say=print) -> bytes:
    """Make the VM, run it to its `hlt`, narrate each step and exit; return what it wrote."""
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        raise MinivmError(f"cannot open /dev/kvm: {error.strerror} (no KVM here, or not "
                          "root)") from None
    say(f"=> open /dev/kvm; KVM_GET_API_VERSION says {fcntl.ioctl(kvm, KVM_GET_API_VERSION)}")
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    say(f"=> KVM_CREATE_VM: fd {vm}, a machine with no memory and no CPU yet")
    # Guest RAM is ordinary memory of this process, shared with the guest: mmap(2) it.
    memory = mmap.mmap(-1, MEMORY_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory[CODE_AT:CODE_AT + len(CODE)] = CODE
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION,
                MEMORY_REGION.pack(0, 0, 0, MEMORY_SIZE, address))
    say(f"=> KVM_SET_USER_MEMORY_REGION: slot 0, guest physical 0x0-{MEMORY_SIZE - 1:#x} is "
        f"this process's memory at {address:#x}; {len(CODE)} bytes of code at {CODE_AT:#x}")
    # Intel VT-x without "unrestricted guest" emulates real mode through a TSS of 3 pages
    # somewhere in guest-physical space outside all memory (api.rst 4.48); others ignore it.
    fcntl.ioctl(vm, KVM_SET_TSS_ADDR, TSS_ADDRESS)
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    say(f"=> KVM_CREATE_VCPU: fd {vcpu}; mmap its struct kvm_run ({run_size} bytes), where "
        "KVM_RUN says why the guest stopped")
    sregs = bytearray(SREGS_SIZE)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
    # A vCPU starts like a PC after reset: real mode, CS base 0xffff0000. Make CS base 0,
    # limit 64 KiB, selector 0, so that RIP is a plain physical address.
    SEGMENT_START.pack_into(sregs, 0, 0, 0xFFFF, 0)
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    registers = [0] * 18
    registers[16], registers[17] = CODE_AT, 0x2  # rip; rflags bit 1 is reserved, always 1
    fcntl.ioctl(vcpu, KVM_SET_REGS, REGS.pack(*registers))
    say(f"=> KVM_GET_SREGS/KVM_SET_SREGS: real mode, CS base 0; KVM_SET_REGS: RIP {CODE_AT:#x}")
    written = b""
    for number in range(1, 100):
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        (reason,) = EXIT_REASON.unpack_from(run, 8)
        name = EXIT_NAMES.get(reason, f"exit reason {reason}")
        if reason == KVM_EXIT_IO:
            direction, size, port, count, offset = EXIT_IO.unpack_from(run, 32)
            data = run[offset:offset + size * count]
            written += data
            say(f"   KVM_RUN exit {number:2}: {name}: out to port {port:#x}, {size} byte: {data!r}")
        elif reason == KVM_EXIT_HLT:
            say(f"   KVM_RUN exit {number:2}: {name}: the guest halted")
            break
        else:
            raise MinivmError(f"KVM_RUN exit {number}: {name}: this KVM did not run the "
                              f"real-mode code (kvm_run bytes 32-63: {run[32:64].hex()})")
    for descriptor in (vcpu, vm, kvm):
        os.close(descriptor)
    return written


WHAT_QEMU_ADDS = """
That was a whole VM: memory, one vCPU, and a loop around KVM_RUN that plays every device.
QEMU is that loop grown up. On top of the same ioctls it adds:
  * devices: a real 16550 UART model instead of print(), a PIT, an interrupt controller
    (KVM_CREATE_IRQCHIP moves the APIC into the kernel), virtio disks, NICs, 9p...;
  * firmware and boot protocols: loading a kernel, setting up protected/long mode, page
    tables, the boot_params or PVH start info (Documentation/arch/x86/boot.rst);
  * more vCPUs, one thread each, and CPUID/MSR setup (KVM_SET_CPUID2) so a kernel trusts the CPU;
  * TCG: the same machine without KVM, translating instructions in software;
  * management: QMP, pause/resume, snapshots, migration (KVM_GET_DIRTY_LOG).
"""


def main():
    print("kvm-hello: a VM made from raw /dev/kvm ioctls (Documentation/virt/kvm/api.rst)")
    try:
        written = run_lesson()
    except OSError as error:  # an ioctl(2) the kernel refused
        raise MinivmError(f"kvm-hello: /dev/kvm refused an ioctl: {error.strerror}") from None
    print(f"\nThe guest wrote {written.decode(errors='replace')!r} to COM1's port 0x3f8.")
    print(WHAT_QEMU_ADDS.rstrip())
