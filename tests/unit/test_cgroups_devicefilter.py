"""The device program devicefilter.py writes, against runc's own test vectors.

runc's libcontainer/cgroups/devices/ebpf/devicefilter_test.go prints each program in
cilium/ebpf's notation with symbolic jumps ("off: -1 ... <block-3>"); resolve() turns those
into the offsets the kernel sees, so the comparison is instruction by instruction.
"""
import re

from minibox.cgroups.devicefilter import compile_rules, disassemble, encode
from minibox.cgroups.devices import ALLOWED_DEVICES, DENY_ALL, container_rules, rule

PROLOGUE = """
         0: LdXMemW dst: r2 src: r1 off: 0 imm: 0
         1: And32Imm dst: r2 imm: 65535
         2: LdXMemW dst: r3 src: r1 off: 0 imm: 0
         3: RSh32Imm dst: r3 imm: 16
         4: LdXMemW dst: r4 src: r1 off: 4 imm: 0
         5: LdXMemW dst: r5 src: r1 off: 8 imm: 0
"""

# TestDeviceFilter_BuiltInAllowList: runc's AllowedDevices, tun included (runc 1.2.4+).
BUILT_IN_ALLOW_LIST = PROLOGUE + """
block-0:
         6: JNEImm dst: r2 off: -1 imm: 2 <block-1>
         7: JNEImm dst: r4 off: -1 imm: 10 <block-1>
         8: JNEImm dst: r5 off: -1 imm: 200 <block-1>
         9: Mov32Imm dst: r0 imm: 1
        10: Exit
block-1:
        11: JNEImm dst: r2 off: -1 imm: 2 <block-2>
        12: JNEImm dst: r4 off: -1 imm: 5 <block-2>
        13: JNEImm dst: r5 off: -1 imm: 2 <block-2>
        14: Mov32Imm dst: r0 imm: 1
        15: Exit
block-2:
        16: JNEImm dst: r2 off: -1 imm: 2 <block-3>
        17: JNEImm dst: r4 off: -1 imm: 136 <block-3>
        18: Mov32Imm dst: r0 imm: 1
        19: Exit
block-3:
        20: JNEImm dst: r2 off: -1 imm: 2 <block-4>
        21: JNEImm dst: r4 off: -1 imm: 1 <block-4>
        22: JNEImm dst: r5 off: -1 imm: 9 <block-4>
        23: Mov32Imm dst: r0 imm: 1
        24: Exit
block-4:
        25: JNEImm dst: r2 off: -1 imm: 2 <block-5>
        26: JNEImm dst: r4 off: -1 imm: 1 <block-5>
        27: JNEImm dst: r5 off: -1 imm: 5 <block-5>
        28: Mov32Imm dst: r0 imm: 1
        29: Exit
block-5:
        30: JNEImm dst: r2 off: -1 imm: 2 <block-6>
        31: JNEImm dst: r4 off: -1 imm: 5 <block-6>
        32: JNEImm dst: r5 off: -1 imm: 0 <block-6>
        33: Mov32Imm dst: r0 imm: 1
        34: Exit
block-6:
        35: JNEImm dst: r2 off: -1 imm: 2 <block-7>
        36: JNEImm dst: r4 off: -1 imm: 1 <block-7>
        37: JNEImm dst: r5 off: -1 imm: 7 <block-7>
        38: Mov32Imm dst: r0 imm: 1
        39: Exit
block-7:
        40: JNEImm dst: r2 off: -1 imm: 2 <block-8>
        41: JNEImm dst: r4 off: -1 imm: 1 <block-8>
        42: JNEImm dst: r5 off: -1 imm: 8 <block-8>
        43: Mov32Imm dst: r0 imm: 1
        44: Exit
block-8:
        45: JNEImm dst: r2 off: -1 imm: 2 <block-9>
        46: JNEImm dst: r4 off: -1 imm: 1 <block-9>
        47: JNEImm dst: r5 off: -1 imm: 3 <block-9>
        48: Mov32Imm dst: r0 imm: 1
        49: Exit
block-9:
        50: JNEImm dst: r2 off: -1 imm: 1 <block-10>
        51: Mov32Reg dst: r1 src: r3
        52: And32Imm dst: r1 imm: 1
        53: JEqImm dst: r1 off: -1 imm: 0 <block-10>
        54: Mov32Imm dst: r0 imm: 1
        55: Exit
block-10:
        56: JNEImm dst: r2 off: -1 imm: 2 <block-11>
        57: Mov32Reg dst: r1 src: r3
        58: And32Imm dst: r1 imm: 1
        59: JEqImm dst: r1 off: -1 imm: 0 <block-11>
        60: Mov32Imm dst: r0 imm: 1
        61: Exit
block-11:
        62: Mov32Imm dst: r0 imm: 0
        63: Exit
"""

# TestDeviceFilter_PrivilegedExceptSingleDevice and TestDeviceFilter_Weird: "a" resets the
# rules before it; after it, the last matching rule decides.
ALL_BUT_ONE_DISK = PROLOGUE + """
block-0:
         6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
         7: JNEImm dst: r4 off: -1 imm: 8 <block-1>
         8: JNEImm dst: r5 off: -1 imm: {minor} <block-1>
         9: Mov32Imm dst: r0 imm: 0
        10: Exit
block-1:
        11: Mov32Imm dst: r0 imm: 1
        12: Exit
"""


def resolve(vector):
    """runc's listing with each <block-N> jump turned into its offset from the next
    instruction, and its labels dropped."""
    labels, lines = {}, []
    for line in vector.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith(":") and line.startswith("block-"):
            labels[line[:-1]] = len(lines)
        else:
            lines.append(line)
    resolved = []
    for index, line in enumerate(lines):
        target = re.search(r" <(block-\d+)>$", line)
        if target:
            offset = labels[target.group(1)] - index - 1
            line = line[:target.start()].replace("off: -1", f"off: {offset}")
        number, text = line.split(": ", 1)
        resolved.append(f"{int(number):3}: {text}")
    return resolved


def ours(rules):
    return disassemble(compile_rules(rules))


def test_runcs_default_rules_give_runcs_program():
    # The one deliberate difference: for a rule of fewer than all of rwm runc (since 1.0)
    # tests "any access bit in common" (JEqImm r1 0); minibox tests "nothing asked beyond
    # the rule's bits" (JNEReg r1 r3), v1's match_exception. The same program length, and
    # the same answers for these "m" rules: mknod(2) asks m alone, open(2) never asks m.
    vector = BUILT_IN_ALLOW_LIST.replace("JEqImm dst: r1 off: -1 imm: 0",
                                         "JNEReg dst: r1 off: -1 src: r3")
    reference = [line.replace("src: r3 imm: 0", "src: r3")  # the JNEReg's rendering
                 if "JNEReg" in line else line for line in resolve(vector)]
    assert ours(container_rules()) == reference


def test_deny_all_alone_refuses_everything():  # TestDeviceFilter_Nil: runc's empty emulator
    assert ours([DENY_ALL]) == resolve(PROLOGUE + "6: Mov32Imm dst: r0 imm: 0\n7: Exit")


def test_allow_all_is_one_return():  # TestDeviceFilter_Privileged
    assert ours([rule(True)]) == resolve(PROLOGUE + "6: Mov32Imm dst: r0 imm: 1\n7: Exit")


def test_all_but_one_disk():  # TestDeviceFilter_PrivilegedExceptSingleDevice
    rules = [rule(True), rule(False, "b", 8, 0)]
    assert ours(rules) == resolve(ALL_BUT_ONE_DISK.format(minor=0))


def test_rules_before_a_are_forgotten():  # TestDeviceFilter_Weird
    rules = [rule(False, "b", 8, 1), rule(True), rule(False, "b", 8, 2)]
    assert ours(rules) == resolve(ALL_BUT_ONE_DISK.format(minor=2))


def test_encoding_is_struct_bpf_insn():
    program = compile_rules([rule(True)])
    code = encode(program)
    assert len(code) == 8 * len(program)
    # LdXMemW r2, [r1 + 0]: opcode 0x61, src r1 in the high nibble, dst r2 in the low one
    assert code[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])
    assert code[-16:] == bytes([0xB4, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def test_every_rule_of_docker_is_in_the_program():
    # Sanity beyond the vectors: one block per rule after the reset.
    assert len(compile_rules(container_rules())) == 6 + 9 * 5 - 1 + 2 * 6 + 2
    assert len(ALLOWED_DEVICES) == 11
