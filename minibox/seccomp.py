"""seccomp(2): the kernel's system call filter, and a small compiler that writes its programs.

A filter is a classic BPF program (the 1992 packet-filter machine; the kernel's contract is
Documentation/userspace-api/seccomp_filter.rst) run before every system call of the process
and all its descendants. Its input is struct seccomp_data; its one register A is loaded from
it with absolute loads:

    struct seccomp_data {
        int   nr;                   /* offset 0: the system call number          */
        __u32 arch;                 /* offset 4: AUDIT_ARCH_* of the calling ABI  */
        __u64 instruction_pointer;  /* offset 8                                  */
        __u64 args[6];              /* offset 16 + 8*i: the arguments            */
    };

Its return value decides the call's fate (SECCOMP_RET_*, below): run it, fail it with an
errno without entering the kernel's syscall code, signal, or kill.

Two programs come from here: the built-in default filter (seccomp_program, hand-written) and
the one config.json's linux.seccomp asks for (from_config parses it, Profile compiles it) --
what runc and crun have libseccomp do, here in plain Python so that `--explain` can print it.
"""
import errno

from . import syscalls
from .explain import enabled as explaining
from .explain import step
from .syscall_numbers import I386, X32, X32_SYSCALL_BIT, X86_64
from .syscalls import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
                       CLONE_NEWUSER, CLONE_NEWUTS)

_SECCOMP_DATA_NR = 0
_SECCOMP_DATA_ARCH = 4
_SECCOMP_DATA_ARGS = 16  # args[i] at 16 + 8*i; x86 is little-endian: the low 32 bits first

# The return values, <linux/seccomp.h>, in the kernel's order of precedence when several
# stacked filters disagree. The low 16 bits are data: the errno, or a tracer's message.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000   # SIGSYS to the thread: deadly unless it has a handler
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000  # a ptrace(2) tracer decides; with none, the call fails with ENOSYS
RET_LOG = 0x7FFC0000    # allowed, and logged to the audit log / kernel log
RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes, from <linux/bpf_common.h> and <linux/filter.h>.
_BPF_LOAD_WORD_ABSOLUTE = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = data[k:k+4]
_BPF_AND = 0x54                 # BPF_ALU | BPF_AND | BPF_K: A &= k
_BPF_JUMP = 0x05                # BPF_JMP | BPF_JA: skip k instructions (32 bits: any length)
_BPF_JUMP_IF_EQUAL = 0x15       # BPF_JMP | BPF_JEQ | BPF_K: A == k ? jt : jf
_BPF_JUMP_IF_GREATER = 0x25     # BPF_JMP | BPF_JGT | BPF_K: A > k ? jt : jf
_BPF_JUMP_IF_AT_LEAST = 0x35    # BPF_JMP | BPF_JGE | BPF_K: A >= k ? jt : jf
_BPF_JUMP_IF_ANY_BIT = 0x45     # BPF_JMP | BPF_JSET | BPF_K: A & k ? jt : jf
_BPF_RETURN = 0x06              # BPF_RET | BPF_K: return k
_MNEMONICS = {_BPF_LOAD_WORD_ABSOLUTE: "ld", _BPF_AND: "and", _BPF_JUMP: "ja",
              _BPF_JUMP_IF_EQUAL: "jeq", _BPF_JUMP_IF_GREATER: "jgt",
              _BPF_JUMP_IF_AT_LEAST: "jge", _BPF_JUMP_IF_ANY_BIT: "jset", _BPF_RETURN: "ret"}

# AUDIT_ARCH_* from <linux/audit.h>: the ABI a call came in through. An x86_64 kernel also
# runs i386 code (int 0x80) and x32 code; x32 shares AUDIT_ARCH_X86_64 and is told apart by
# bit 30 of the number (x32's mount is 0x40000000 + 165), so an arch check alone would let
# x32 walk around every rule written for x86_64.
_AUDIT_ARCH_X86_64 = 0xC000003E
_AUDIT_ARCH_I386 = 0x40000003

# ---------------------------------------------------------------------------------------------
# The built-in filter (no config.json profile): EPERM for what a container has no business
# doing, everything else allowed.

# Refused with EPERM whatever their arguments (numbers: syscall_numbers.X86_64).
BLOCKED_SYSCALLS = {name: X86_64[name] for name in (
    # filesystems: mount anything (a host disk, a fresh /proc/sys) or move the root
    "mount", "umount2", "pivot_root",
    # ... including through the new mount API (Linux 5.2), else blocking mount(2) is a sieve
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # the machine: reboot, replace or extend the running kernel
    "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "acct",
    # the kernel keyring is not namespaced: keys of other containers and the host
    "keyctl", "add_key", "request_key",
    # other processes' memory, kernel internals, and the kernel's attack surface
    "ptrace", "bpf", "perf_event_open", "userfaultfd",
    # io_uring: its ring runs reads, writes, opens, sends as kernel work that seccomp never
    # sees, and its code is a steady source of escapes (60% of the exploits sent to Google's
    # kCTF VRP in 2022-23). Docker 25 dropped all three from its allow list (moby#46762).
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # the shocker exploit (2014): open a host file from a handle, bypassing the mount tree
    "open_by_handle_at",
    # the clock and the kernel log are one for the whole machine
    "settimeofday", "clock_settime", "syslog",
    # setns(fd, 0) joins whatever namespace fd refers to, which a filter cannot read:
    # every successful setns enters a namespace, so all of them are refused.
    "setns",
)}

# CLONE_NEW* from <linux/sched.h>. clone(2)'s low byte is the exit signal, so CLONE_NEWTIME
# (0x80) only means "new time namespace" for unshare(2) and clone3(2).
_CLONE_NEW_NAMESPACES = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                         | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)
_CLONE_NEWTIME = 0x00000080


def load(offset):
    return (_BPF_LOAD_WORD_ABSOLUTE, None, None, offset)


def jump(op, k, if_true, if_false=None):
    """A conditional jump to labels (None: the next instruction)."""
    return (op, if_true, if_false, k)


def ret(value):
    return (_BPF_RETURN, None, None, value)


def seccomp_program():
    """The built-in filter as a list of (code, jump_if_true, jump_if_false, k) instructions.

    Read it as assembly; labels are resolved into the forward jump offsets BPF wants. A plain
    chain of comparisons is fast enough: since Linux 5.11 the kernel notices which syscall
    numbers always get ALLOW regardless of arguments and skips the filter for them entirely.
    """
    return assemble([
        load(_SECCOMP_DATA_ARCH),
        jump(_BPF_JUMP_IF_EQUAL, _AUDIT_ARCH_X86_64, None, "kill"),  # i386 via int 0x80 too
        load(_SECCOMP_DATA_NR),
        jump(_BPF_JUMP_IF_AT_LEAST, X32_SYSCALL_BIT, "kill"),
        jump(_BPF_JUMP_IF_EQUAL, X86_64["clone"], "clone"),
        jump(_BPF_JUMP_IF_EQUAL, X86_64["unshare"], "unshare"),
        # clone3 passes its flags inside a struct in memory, which seccomp cannot read (it sees
        # only the pointer). Saying ENOSYS -- "this kernel has no clone3" -- makes glibc fall
        # back to clone(2), whose flags we can check. Docker does the same.
        jump(_BPF_JUMP_IF_EQUAL, X86_64["clone3"], "enosys"),
        *(jump(_BPF_JUMP_IF_EQUAL, nr, "eperm") for nr in BLOCKED_SYSCALLS.values()),
        ret(RET_ALLOW),
        # Only the low 32 bits of the flags matter: clone uses lower_32_bits(flags) and
        # unshare fails with EINVAL on any higher bit (kernel/fork.c).
        "clone", load(_SECCOMP_DATA_ARGS),
        jump(_BPF_JUMP_IF_ANY_BIT, _CLONE_NEW_NAMESPACES, "eperm", "allow"),
        "unshare", load(_SECCOMP_DATA_ARGS),
        jump(_BPF_JUMP_IF_ANY_BIT, _CLONE_NEW_NAMESPACES | _CLONE_NEWTIME, "eperm", "allow"),
        "allow", ret(RET_ALLOW),
        "eperm", ret(RET_ERRNO | errno.EPERM),
        "enosys", ret(RET_ERRNO | errno.ENOSYS),
        "kill", ret(RET_KILL_PROCESS),
    ])


def assemble(program):
    """Turn labels into jump offsets: BPF jumps only forward, by 'instructions to skip'.

    A conditional jump's offsets are one byte each (struct sock_filter's jt and jf), so it
    reaches at most 255 instructions ahead, and a profile of a few hundred calls needs farther.
    Such a jump is sent to a trampoline placed right after it: an unconditional BPF_JA, whose
    offset is the 32-bit k. Trampolines move what follows them, which may push other jumps out
    of reach: repeat until every one fits.
    """
    program, serial = list(program), 0
    while True:
        labels, places = {}, []  # label -> instruction index; instruction index -> list index
        for place, item in enumerate(program):
            if isinstance(item, str):
                labels[item] = len(places)
            else:
                places.append(place)

        def offset(target, index):
            if target is not None and labels[target] <= index:
                raise ValueError(f"BPF jumps only forward: {target!r} is behind {index}")
            return 0 if target is None else labels[target] - index - 1

        far = [index for index, place in enumerate(places) if program[place][0] != _BPF_JUMP
               and max(offset(program[place][1], index), offset(program[place][2], index)) > 255]
        if not far:
            return [(code, 0, 0, offset(jt, i)) if code == _BPF_JUMP
                    else (code, offset(jt, i), offset(jf, i), k)
                    for i, (code, jt, jf, k) in enumerate(program[p] for p in places)]
        for index in reversed(far):  # from the end: inserting moves only what comes later
            serial += 1
            place = places[index]
            program[place:place + 1] = _trampolines(program[place], f"@{serial}", offset, index)


def _trampolines(instruction, label, offset, index):
    """A far conditional jump rewritten to reach its far targets through BPF_JA."""
    code, if_true, if_false, k = instruction
    near = f"{label}.next"  # "the next instruction" is now after the trampolines
    targets, trampolines = [], []
    for name, target in ((f"{label}.true", if_true), (f"{label}.false", if_false)):
        if offset(target, index) > 255:
            targets.append(name)
            trampolines += [name, (_BPF_JUMP, target, None, 0)]
        else:
            targets.append(near if target is None else target)
    return [(code, *targets, k), *trampolines, near]


def disassemble(program):
    """The program as assembly lines, one per instruction, with jumps as absolute targets."""
    lines = []
    for index, (code, jt, jf, k) in enumerate(program):
        name = _MNEMONICS.get(code, f"op{code:#x}")
        if code == _BPF_LOAD_WORD_ABSOLUTE:
            field = {0: "nr", 4: "arch"}.get(k) or f"args[{(k - 16) // 8}]" + (
                ".high" if k % 8 else ".low")
            text = f"ld   {field}"
        elif code == _BPF_JUMP:
            text = f"ja   {index + 1 + k}"
        elif code & 0x07 == 0x05:
            text = f"{name:4} #{k:#x}, {index + 1 + jt}, {index + 1 + jf}"
        elif code == _BPF_RETURN:
            text = f"ret  {action_name(k)}"
        else:
            text = f"{name:4} #{k:#x}"
        lines.append(f"{index:5}: {text}")
    return lines


def action_name(value):
    """A return value as config.json spells its action: 'SCMP_ACT_ERRNO(1)'."""
    for name, base in ACTIONS.items():
        if value & 0xFFFF0000 == base and name != "SCMP_ACT_KILL":
            data = value & 0xFFFF
            return f"{name}({data})" if base in (RET_ERRNO, RET_TRACE) else name
    return f"{value:#x}"


# config.json's actions (libseccomp's SCMP_ACT_*), as the filter's return values. KILL is
# libseccomp's old name for KILL_THREAD; ERRNO and TRACE take errnoRet in their low 16 bits.
ACTIONS = {"SCMP_ACT_KILL": RET_KILL_THREAD, "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
           "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS, "SCMP_ACT_TRAP": RET_TRAP,
           "SCMP_ACT_ERRNO": RET_ERRNO, "SCMP_ACT_TRACE": RET_TRACE,
           "SCMP_ACT_LOG": RET_LOG, "SCMP_ACT_ALLOW": RET_ALLOW}

# config.json's architectures: the audit arch the kernel reports, the names' numbers, and
# whether an argument is 64 bits wide there. i386's are 32; x32 passes 64-bit registers, but
# its longs and pointers are 32 bits, and libseccomp compares only the low word there too.
ARCHITECTURES = {"SCMP_ARCH_X86_64": (_AUDIT_ARCH_X86_64, X86_64, True),
                 "SCMP_ARCH_X86": (_AUDIT_ARCH_I386, I386, False),
                 "SCMP_ARCH_X32": (_AUDIT_ARCH_X86_64, X32, False)}

# seccomp(2)'s SECCOMP_SET_MODE_FILTER flags that a container config may ask for.
FLAGS = {
    # apply the filter to every thread of the process, not just the caller (one thread here)
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    # log every action but ALLOW (to the audit log, or the kernel log without auditd)
    "SECCOMP_FILTER_FLAG_LOG": 2,
    # keep the Spectre v4 (speculative store bypass) mitigation off, which a filter turns on
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

# SCMP_CMP_*: the comparisons of an argument with `value` (MASKED_EQ: (arg & value) ==
# valueTwo). Each is written as "jump to fail unless it holds" over the two 32-bit halves.
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")


class Profile:
    """config.json's linux.seccomp, checked: what the compiler reads.

    rules: [(names, return value, [(index, op, value, value_two), ...])] in config order;
    a rule matches when all its conditions hold, and the first matching rule decides.
    """

    def __init__(self, default, architectures, rules, flags=0):
        self.default = default
        self.architectures = architectures
        self.rules = rules
        self.flags = flags

    def program(self):
        """The filter: one section per ABI, then per syscall its rules in order.

            ld arch; jeq AUDIT_ARCH_X86_64 -> x86_64/x32; jeq AUDIT_ARCH_I386 -> i386
            ret KILL_THREAD                        (another ABI: libseccomp's bad-arch action)
            ld nr; jge 0x40000000 -> x32 (or KILL_THREAD), else -> x86_64
          x86_64:
            jeq <nr>: each rule: its conditions, each jumping to the next rule on failure;
                      ret <action>.  No rule matched: ret <default>
            ...   ret <default>
        """
        arches = {name: ARCHITECTURES[name] for name in self.architectures or
                  ["SCMP_ARCH_X86_64"]}
        program = [load(_SECCOMP_DATA_ARCH)]
        if {"SCMP_ARCH_X86_64", "SCMP_ARCH_X32"} & set(arches):
            program.append(jump(_BPF_JUMP_IF_EQUAL, _AUDIT_ARCH_X86_64, "AUDIT_ARCH_X86_64"))
        if "SCMP_ARCH_X86" in arches:
            program.append(jump(_BPF_JUMP_IF_EQUAL, _AUDIT_ARCH_I386, "SCMP_ARCH_X86"))
        program.append(ret(RET_KILL_THREAD))
        if {"SCMP_ARCH_X86_64", "SCMP_ARCH_X32"} & set(arches):
            # One audit arch, two ABIs: bit 30 of the number says x32.
            program += ["AUDIT_ARCH_X86_64", load(_SECCOMP_DATA_NR), jump(
                _BPF_JUMP_IF_AT_LEAST, X32_SYSCALL_BIT,
                "SCMP_ARCH_X32" if "SCMP_ARCH_X32" in arches else "bad arch",
                "SCMP_ARCH_X86_64" if "SCMP_ARCH_X86_64" in arches else "bad arch")]
        for name, (_, numbers, wide) in arches.items():
            # A holds the number on entry to x86_64's and x32's sections, not to i386's
            program += [name, *([load(_SECCOMP_DATA_NR)] if name == "SCMP_ARCH_X86" else []),
                        *self._section(name, numbers, wide)]
        return assemble(program + ["bad arch", ret(RET_KILL_THREAD)])

    def _section(self, arch, numbers, wide):
        """One ABI's rules, grouped by syscall number in the order they first appear."""
        by_number = {}
        for names, action, conditions in self.rules:
            # A rule whose action is the default changes nothing; libseccomp refuses it
            # (EACCES) and runc skips it, so a later rule it overlaps decides there too.
            if action == self.default:
                continue
            for name in names:
                if name in numbers:  # a name this ABI lacks is skipped, as runc does
                    by_number.setdefault(numbers[name], []).append((action, conditions))
        out = []
        for number, rules in by_number.items():
            after = f"{arch} after {number}"
            out.append(jump(_BPF_JUMP_IF_EQUAL, number, None, after))
            for index, (action, conditions) in enumerate(rules):
                fail = f"{arch} {number} rule {index + 1}"
                for condition_index, condition in enumerate(conditions):
                    out += _condition(*condition, fail, wide, f"{fail}.{condition_index}")
                out += [ret(action), fail]
                if not conditions:
                    break  # it always matches: rules after it are never reached
            out += [ret(self.default), after]
        return out + [ret(self.default)]


def _condition(index, op, value, value_two, fail, wide, label):
    """Instructions that fall through when args[index] <op> value holds, else jump to fail.

    On x86_64 an argument is 64 bits and A holds 32: compare the high words first, and only
    when they are equal decide on the low words, as libseccomp does. On i386 and x32 the low
    words alone decide and the values' high bits are dropped (libseccomp too).
    """
    low, high = _SECCOMP_DATA_ARGS + 8 * index, _SECCOMP_DATA_ARGS + 8 * index + 4
    if op == "SCMP_CMP_MASKED_EQ":
        halves = [(load(low), (_BPF_AND, None, None, value & 0xFFFFFFFF),
                   jump(_BPF_JUMP_IF_EQUAL, value_two & 0xFFFFFFFF, None, fail))]
        if wide:
            halves.insert(0, (load(high), (_BPF_AND, None, None, value >> 32),
                              jump(_BPF_JUMP_IF_EQUAL, value_two >> 32 & 0xFFFFFFFF, None,
                                   fail)))
        return [instruction for half in halves for instruction in half]
    # Each op is a test on the low word once the high words are equal (EQ, GT, GE), or the
    # negation of one (NE = not EQ, LT = not GE, LE = not GT), as libseccomp builds them.
    test, negate = {"SCMP_CMP_EQ": (_BPF_JUMP_IF_EQUAL, False),
                    "SCMP_CMP_NE": (_BPF_JUMP_IF_EQUAL, True),
                    "SCMP_CMP_GT": (_BPF_JUMP_IF_GREATER, False),
                    "SCMP_CMP_LE": (_BPF_JUMP_IF_GREATER, True),
                    "SCMP_CMP_GE": (_BPF_JUMP_IF_AT_LEAST, False),
                    "SCMP_CMP_LT": (_BPF_JUMP_IF_AT_LEAST, True)}[op]
    if_true, if_false = (fail, label) if negate else (label, fail)  # where the test sends
    out = []
    if wide:
        high_value = value >> 32 & 0xFFFFFFFF
        out += [load(high)]
        if test != _BPF_JUMP_IF_EQUAL:  # a higher high word decides GT/GE (and LT/LE) alone
            out.append(jump(_BPF_JUMP_IF_GREATER, high_value, if_true))
        out.append(jump(_BPF_JUMP_IF_EQUAL, high_value, None, if_false))
    return out + [load(low), jump(test, value & 0xFFFFFFFF, if_true, if_false), label]


def from_config(seccomp, check):
    """config.json's linux.seccomp as a Profile's fields, or None without one (no filter, as
    runc). A plain dict: it travels in spec.json from `create` to the container's init.

    `check` is spec's config checker: every wrong field is one line naming it. Names this
    kernel ABI does not know are skipped, as runc skips what libseccomp cannot resolve.
    """
    if seccomp is None:
        return None
    where = "linux.seccomp."
    architectures = check.strings(seccomp, "architectures", where)
    for name in architectures:
        if name not in ARCHITECTURES:
            check.fail(f"{where}architectures: {name!r} is not an x86 ABI this machine runs "
                       f"(minibox compiles {', '.join(ARCHITECTURES)})")
    flags = 0
    for name in check.strings(seccomp, "flags", where):
        if name not in FLAGS:
            check.fail(f"{where}flags: {name!r} is not supported (minibox applies "
                       f"{', '.join(FLAGS)})")
        flags |= FLAGS[name]
    if seccomp.get("listenerPath") or seccomp.get("listenerMetadata"):
        check.fail(f"{where}listenerPath (SCMP_ACT_NOTIFY) is not supported")
    default = _action(seccomp, "defaultAction", where, check, "defaultErrnoRet")
    rules = []
    for entry in check.get(seccomp, "syscalls", list, [], where):
        if not isinstance(entry, dict):
            check.fail(f"{where}syscalls[] must hold objects")
        names = check.strings(entry, "names", f"{where}syscalls[].")
        action = _action(entry, "action", f"{where}syscalls[{', '.join(names)}].", check)
        conditions = [_argument(arg, f"{where}syscalls[{', '.join(names)}].args[].", check)
                      for arg in check.get(entry, "args", list, [], where) or []]
        indexes = [index for index, *_ in conditions]
        if len(set(indexes)) < len(indexes):
            # libseccomp refuses two conditions on one argument (EINVAL); runc then makes
            # each condition a rule of its own, ORed, and crun fails. runc's reading is the
            # one engines' profiles were tested with.
            rules += [(names, action, [condition]) for condition in conditions]
        else:
            rules.append((names, action, conditions))
    return {"default": default, "architectures": architectures, "rules": rules, "flags": flags}


def _action(entry, key, where, check, errno_key="errnoRet"):
    name = check.get(entry, key, str, None, where)
    if name == "SCMP_ACT_NOTIFY":
        check.fail(f"{where}{key} SCMP_ACT_NOTIFY (a user-space supervisor) is not supported")
    if name not in ACTIONS:
        check.fail(f"{where}{key} {name!r} is not a seccomp action (one of "
                   f"{', '.join(ACTIONS)})")
    if name not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        return ACTIONS[name]  # runc ignores errnoRet on the other actions: so do we
    # runc's default when errnoRet is absent: EPERM, for ERRNO and TRACE alike.
    errno_ret = check.get(entry, errno_key, int, errno.EPERM, where)
    if not 0 <= errno_ret <= 0xFFFF:  # the return value's 16 data bits
        check.fail(f"{where}{errno_key} {errno_ret} is not between 0 and 65535")
    return ACTIONS[name] | errno_ret


def _argument(arg, where, check):
    if not isinstance(arg, dict):
        check.fail(f"{where[:-1]} must hold objects")
    index = check.get(arg, "index", int, None, where)
    if index is None or not 0 <= index <= 5:
        check.fail(f"{where}index {index!r}: a system call has arguments 0 to 5")
    op = check.get(arg, "op", str, None, where)
    if op not in OPERATORS:
        check.fail(f"{where}op {op!r} is not a comparison (one of {', '.join(OPERATORS)})")
    values = [check.get(arg, key, int, 0, where) for key in ("value", "valueTwo")]
    for key, value in zip(("value", "valueTwo"), values):
        if not 0 <= value < 1 << 64:
            check.fail(f"{where}{key} {value} does not fit in 64 bits")
    return (index, op, *values)


@step("Install the seccomp filter (the built-in one: EPERM for mount, reboot, kexec_load, bpf, "
      "io_uring, ptrace...; or config.json's)",
      syscall="seccomp(SECCOMP_SET_MODE_FILTER, {flags}, &sock_fprog)",
      man="seccomp(2)")
def install_filter(program=None, flags=0):
    """Load the filter into this thread: seccomp(2) SECCOMP_SET_MODE_FILTER with `flags`.

    The kernel copies the program (struct sock_fprog pointing at struct sock_filter[]), checks
    it, and from now on runs it on every system call of this process and all its descendants.
    A filter can never be removed; more filters can only be stacked on top. /proc/self/status
    then shows `Seccomp: 2`. Under --explain the program is printed first, as assembly.
    """
    program = seccomp_program() if program is None else program
    if explaining():
        import sys
        sys.stderr.write(f"     program: {len(program)} instructions\n" + "".join(
            f"     {line}\n" for line in disassemble(program)))
    syscalls.set_seccomp_filter(program, flags)


def install(fields):
    """config.json's profile (from_config's fields) compiled and installed with its flags."""
    profile = Profile(**fields)
    install_filter(profile.program(), profile.flags)


