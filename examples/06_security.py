"""Lesson 06: capabilities and seccomp: what root in a container may not do, and why.

Root in a container is root, minus: most capabilities (capabilities(7); minibox keeps
Docker's default 14 of 41), every syscall the seccomp filter refuses (seccomp(2): a BPF
program the kernel runs on each syscall), and the right to gain privileges back
(PR_SET_NO_NEW_PRIVS). Five escapes from the escape lab show which protection stops what:
each runs protected, then with exactly that protection removed. io_uring is the newest
door seccomp closes (Docker 25): no capability guards it, only the filter.

    sudo .venv/bin/python examples/06_security.py
    sudo .venv/bin/python examples/escapes/run.py     # all eleven escapes
"""
import lesson
from minibox.security import CAPABILITIES

ESCAPES = ("remount_proc_sys", "reboot", "userns_caps", "io_uring", "open_by_handle")


def capability_names(mask_hex):
    mask = int(mask_hex, 16)
    names = [name for name, bit in sorted(CAPABILITIES.items(), key=lambda item: item[1])
             if mask >> bit & 1]
    return f"{len(names)} capabilities: " + ", ".join(names)


def show_status(*flags):
    result = lesson.run("minibox", "run", "--rm", *flags, "busybox", "grep", "-E",
                        "^(CapEff|NoNewPrivs|Seccomp):", "/proc/self/status")
    for line in result.stdout.splitlines():
        if line.startswith("CapEff:"):
            print(f"  = {capability_names(line.split()[1])}")
    print(flush=True)


def main():
    lesson.start("Lesson 06: capabilities and seccomp",
                 "minibox/security.py (capabilities, no_new_privs), "
                 "minibox/seccomp.py (the filter), "
                 "examples/escapes/*.c, capabilities(7), seccomp(2)")
    lesson.say("A default container: Docker's 14 capabilities, no_new_privs, seccomp mode 2 "
               "(filter):")
    show_status()
    lesson.say("--privileged keeps every capability and turns seccomp off (Seccomp: 0):")
    show_status("--privileged")
    lab = lesson.escape_lab()
    with lab.built_probes() as (probes, marker):
        lesson.say("Escapes, protected and unprotected:")
        for name, argv, flags, protection in lab.escapes(marker, probes):
            if name not in ESCAPES:
                continue
            print(f"  {name}  (stopped by: {protection})")
            for label, used in (("protected", []), (" ".join(flags), flags)):
                verdict, line = lab.run_probe(probes, name, argv, used)
                print(f"    {label:30} {verdict}: {line}", flush=True)

if __name__ == "__main__":
    main()
