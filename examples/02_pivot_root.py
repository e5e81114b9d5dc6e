"""Lesson 02: chroot vs pivot_root, with the escape that tells them apart.

chroot(2) changes where "/" resolves for one process, nothing else: the old root is still in
the mount namespace, and a process with CAP_SYS_CHROOT climbs back out (the kernel only stops
".." at the *current* root). pivot_root(2) swaps the root mount of the whole mount namespace;
minibox then detaches the old root (umount2(MNT_DETACH)), so there is nothing left to climb to.

    sudo .venv/bin/python examples/02_pivot_root.py

The escape is examples/escapes/chroot_escape.c, from the escape lab (lesson 06 runs more).
"""
import lesson


def main():
    lesson.start("Lesson 02: chroot vs pivot_root",
                 "minibox/rootfs.py (pivot_root, the old root detached), "
                 "examples/escapes/chroot_escape.c, pivot_root(2), chroot(2)")
    lab = lesson.escape_lab()
    lesson.say("Under pivot_root the container's mount table starts at its own root; the host's "
               "root is not in it.")
    lesson.run("minibox", "run", "--rm", "busybox", "sh", "-c",
               "head -n 1 /proc/self/mountinfo | cut -d' ' -f4-9")
    with lab.built_probes() as (probes, marker):
        lesson.say(f"The escape: chroot into a subdirectory, climb '..' 64 times, chroot('.'), "
                   f"then look for the host file {marker}.")
        for label, flags in (("pivot_root", []), ("--chroot", ["--chroot"])):
            verdict, line = lab.run_probe(probes, "chroot_escape", [marker], flags)
            print(f"  {label:11} {verdict}: {line}", flush=True)

if __name__ == "__main__":
    main()
