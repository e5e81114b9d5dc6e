"""A classic BPF interpreter for seccomp filters, to read a program's decisions on paper.

Runs a list of (code, jt, jf, k) instructions -- minibox's or libseccomp's (read back with
seccomp_export_bpf(3)) -- on one struct seccomp_data, as the kernel's seccomp_run_filters
would: the loads, ALU, jumps and returns libseccomp and minibox emit (linux/filter.h).
"""
import struct

AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
_MASK32 = 0xFFFFFFFF


def seccomp_data(nr, args=(), arch=AUDIT_ARCH_X86_64):
    """struct seccomp_data for a call: nr, arch, instruction_pointer 0, six 64-bit args."""
    args = [a & 0xFFFFFFFFFFFFFFFF for a in (*args, 0, 0, 0, 0, 0, 0)[:6]]
    return struct.pack("<iIQ6Q", nr, arch, 0, *args)


def run(program, data):
    """The filter's return value for one seccomp_data."""
    pc, a, x, scratch = 0, 0, 0, [0] * 16
    for _ in range(len(program) + 1):  # forward jumps only: never more steps than instructions
        code, jt, jf, k = program[pc]
        pc += 1
        kind = code & 0x07
        if kind == 0x06:                                 # BPF_RET
            return k if code & 0x18 == 0x00 else a       # BPF_K or BPF_A
        if kind == 0x00:                                 # BPF_LD
            mode = code & 0xE0
            a = (struct.unpack_from("<I", data, k)[0] if mode == 0x20 else    # BPF_ABS
                 scratch[k] if mode == 0x60 else k)                          # BPF_MEM / BPF_IMM
        elif kind == 0x01:                               # BPF_LDX
            x = scratch[k] if code & 0xE0 == 0x60 else k
        elif kind == 0x02:                               # BPF_ST
            scratch[k] = a
        elif kind == 0x03:                               # BPF_STX
            scratch[k] = x
        elif kind == 0x04:                               # BPF_ALU
            operand = x if code & 0x08 else k
            a = {0x50: a & operand, 0x40: a | operand, 0x00: a + operand,
                 0x10: a - operand}[code & 0xF0] & _MASK32
        elif kind == 0x07:                               # BPF_MISC: TAX / TXA
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
        else:                                            # BPF_JMP
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:                               # BPF_JA
                pc += k
                continue
            assert 0 <= jt <= 255 and 0 <= jf <= 255, "the kernel's checker refuses this jump"
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand,
                     0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
    raise AssertionError("the program ran off its end")


def decide(program, nr, args=(), arch=AUDIT_ARCH_X86_64):
    return run(program, seccomp_data(nr, args, arch))
