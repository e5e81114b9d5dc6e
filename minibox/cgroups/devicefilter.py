"""cgroup v2's device rules: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE, written here.

cgroup v2 has no devices.allow/devices.deny. Instead, on each open(2) and mknod(2) of a device
node the kernel runs the programs attached to the opener's cgroup and its ancestors
(devcgroup_check_permission -> BPF_CGROUP_RUN_PROG_DEVICE_CGROUP, security/device_cgroup.c and
kernel/bpf/cgroup.c); one returning 0 makes the call fail with EPERM. Its input, from
<linux/bpf.h>, is three 32-bit words:

    struct bpf_cgroup_dev_ctx {
        __u32 access_type;  /* offset 0: (access << 16) | type                           */
        __u32 major;        /* offset 4                                                  */
        __u32 minor;        /* offset 8                                                  */
    };

type is BPF_DEVCG_DEV_BLOCK or _CHAR, access the bits BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
(open(2) O_RDWR asks read and write at once; mknod(2) asks mknod alone).

eBPF is not seccomp's classic BPF (seccomp.py): eleven 64-bit registers, r1 holding a pointer
to the input, r0 the result, and 8-byte instructions (Documentation/bpf/standardization/
instruction-set.rst):

    struct bpf_insn { __u8 code; __u8 dst_reg:4, src_reg:4; __s16 off; __s32 imm; };

The program is what runc generates (libcontainer/cgroups/devices/ebpf, devicefilter.go): load
the four fields into r2..r5, then one block per rule, "if the node matches, return allow",
the last rule first -- in cgroup v1 a later line overrides an earlier one -- then the default.
v1's rule language is read as v1 reads it (devices.py): the line "a" resets every rule before
it and sets the default; after it, a deny line only narrows what the allows gave, which
"last matching rule wins" reproduces (more strictly than v1's exact-match removal, never less).
One deliberate difference from runc: a rule with fewer than all of rwm matches only when the
request asks nothing beyond them, as v1's match_exception does; runc's "any bit in common"
would let O_RDWR through a read-only rule.
"""
import struct
from collections import namedtuple

# <linux/bpf.h>: the input's type and access values
DEV_BLOCK = 1
DEV_CHAR = 2
ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
ALL_ACCESS = 7

# eBPF opcodes: class | operation | source (BPF_K: imm, BPF_X: the src register).
_LOAD_WORD = 0x61          # BPF_LDX | BPF_MEM | BPF_W:     dst = *(u32 *)(src + off)
_AND32_IMM = 0x54          # BPF_ALU | BPF_AND | BPF_K:     dst &= imm (32 bits)
_RSHIFT32_IMM = 0x74       # BPF_ALU | BPF_RSH | BPF_K:     dst >>= imm
_MOVE32_IMM = 0xB4         # BPF_ALU | BPF_MOV | BPF_K:     dst = imm
_MOVE32_REG = 0xBC         # BPF_ALU | BPF_MOV | BPF_X:     dst = src
_JUMP_IF_NOT_IMM = 0x55    # BPF_JMP | BPF_JNE | BPF_K:     if dst != imm: skip off instructions
_JUMP_IF_NOT_REG = 0x5D    # BPF_JMP | BPF_JNE | BPF_X:     if dst != src: skip off
_EXIT = 0x95               # BPF_JMP | BPF_EXIT:            return r0
# The names cilium/ebpf prints, which runc's tests use: the reference test compares with them.
_MNEMONICS = {_LOAD_WORD: "LdXMemW", _AND32_IMM: "And32Imm", _RSHIFT32_IMM: "RSh32Imm",
              _MOVE32_IMM: "Mov32Imm", _MOVE32_REG: "Mov32Reg", _JUMP_IF_NOT_IMM: "JNEImm",
              _JUMP_IF_NOT_REG: "JNEReg", _EXIT: "Exit"}

Insn = namedtuple("Insn", "code dst src off imm")

# The registers each field is kept in, as runc keeps them (r1, the input, is reused as scratch
# once the fields are loaded).
_CTX, _TYPE, _ACCESS, _MAJOR, _MINOR = 1, 2, 3, 4, 5

_PROLOGUE = [
    Insn(_LOAD_WORD, _TYPE, _CTX, 0, 0),          # r2 = ctx->access_type
    Insn(_AND32_IMM, _TYPE, 0, 0, 0xFFFF),        # r2 &= 0xffff: the type
    Insn(_LOAD_WORD, _ACCESS, _CTX, 0, 0),        # r3 = ctx->access_type
    Insn(_RSHIFT32_IMM, _ACCESS, 0, 0, 16),       # r3 >>= 16: the access bits
    Insn(_LOAD_WORD, _MAJOR, _CTX, 4, 0),         # r4 = ctx->major
    Insn(_LOAD_WORD, _MINOR, _CTX, 8, 0),         # r5 = ctx->minor
]


def _return(allow):
    return [Insn(_MOVE32_IMM, 0, 0, 0, int(allow)),  # r0 = 1 (allow) or 0 (EPERM)
            Insn(_EXIT, 0, 0, 0, 0)]


def _block(allow, kind, major, minor, access):
    """One rule: each test that fails jumps past the block, to the next rule."""
    tests = [(_JUMP_IF_NOT_IMM, _TYPE, 0, DEV_BLOCK if kind == "b" else DEV_CHAR)]
    mask = sum(ACCESS[letter] for letter in set(access))
    if mask != ALL_ACCESS:  # rwm matches any request: no test
        tests += [(_MOVE32_REG, 1, _ACCESS, None),        # r1 = r3
                  (_AND32_IMM, 1, 0, mask),               # r1 &= the rule's access
                  (_JUMP_IF_NOT_REG, 1, _ACCESS, None)]   # asked more than it gives: next
    if major != "*":
        tests.append((_JUMP_IF_NOT_IMM, _MAJOR, 0, int(major)))
    if minor != "*":
        tests.append((_JUMP_IF_NOT_IMM, _MINOR, 0, int(minor)))
    size = len(tests) + 2  # the tests, then the return
    block = []
    for code, dst, src, imm in tests:
        jumps = code in (_JUMP_IF_NOT_IMM, _JUMP_IF_NOT_REG)
        # A jump's offset counts from the instruction after it: to the end of the block.
        block.append(Insn(code, dst, src, size - len(block) - 1 if jumps else 0, imm or 0))
    return block + _return(allow)


def compile_rules(rules):
    """The program for devices.py's rules, [(allow, "c 1:3 rwm"), ...], as a list of Insn."""
    default, kept = True, []  # a new v1 devices cgroup inherits its parent's: all allowed
    for allow, line in rules:
        if line == "a":
            default, kept = allow, []
        else:
            kept.append((allow, line))
    program = list(_PROLOGUE)
    for allow, line in reversed(kept):  # the last matching rule decides
        kind, numbers, access = line.split()
        major, minor = numbers.split(":")
        program += _block(allow, kind, major, minor, access)
    return program + _return(default)


def encode(program) -> bytes:
    """The bytes bpf(2) BPF_PROG_LOAD takes: struct bpf_insn, little-endian on x86."""
    return b"".join(struct.pack("<BBhi", i.code, i.src << 4 | i.dst, i.off, i.imm)
                    for i in program)


def disassemble(program) -> list[str]:
    """One line per instruction, in cilium/ebpf's notation (runc's tests, bpftool's order)."""
    lines = []
    for index, i in enumerate(program):
        name = _MNEMONICS[i.code]
        if i.code == _EXIT:
            text = name
        elif i.code == _LOAD_WORD:
            text = f"{name} dst: r{i.dst} src: r{i.src} off: {i.off} imm: 0"
        elif i.code == _MOVE32_REG:
            text = f"{name} dst: r{i.dst} src: r{i.src}"
        elif i.code == _JUMP_IF_NOT_REG:
            text = f"{name} dst: r{i.dst} off: {i.off} src: r{i.src}"
        elif i.code == _JUMP_IF_NOT_IMM:
            text = f"{name} dst: r{i.dst} off: {i.off} imm: {i.imm}"
        else:
            text = f"{name} dst: r{i.dst} imm: {i.imm}"
        lines.append(f"{index:3}: {text}")
    return lines
