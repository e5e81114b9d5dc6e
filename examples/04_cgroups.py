"""Lesson 04: cgroups: a memory limit (the OOM killer), a fork bomb held, a CPU quota.

Namespaces decide what a container can see; cgroups decide how much it can use (cgroups(7)).
minibox writes the limits into the container's cgroup before its first instruction runs;
the kernel does the rest. The narration names each file of this host's cgroup version
(v1: one hierarchy per controller; v2: one unified tree) and its twin in the other.

    sudo .venv/bin/python examples/04_cgroups.py
"""
import re

import lesson

# 3 s of busy CPU; `; true` keeps sh as PID 1, which stops `timeout`'s SIGTERM reaching
# a lone `yes` that would be PID 1 itself (PID 1 ignores unhandled signals: pid_namespaces(7)).
SPIN_3S = "timeout 3 yes > /dev/null; true"


def main():
    lesson.start("Lesson 04: cgroups",
                 "minibox/cgroups/v1.py and v2.py (the files), minibox/cgroups/limits.py, "
                 "minibox/container.py (create_cgroup), cgroups(7)")
    lesson.say("The limits are files in the container's cgroup, written before it starts:")
    explained = lesson.run("minibox", "run", "--rm", "-m", "32m", "--cpus", "0.5",
                           "--pids-limit", "20", "--explain", "busybox", "true", quiet=True)
    for line in explained.stderr.splitlines():
        if line.strip().startswith("echo "):
            print("  " + re.sub(r"/[0-9a-f]{64}/", "/<id>/", line.strip()))
    print(flush=True)
    lesson.say("A memory hog under -m 32m: the kernel's OOM killer ends it (exit 137 = 128+SIGKILL).")
    lesson.run("minibox", "run", "--rm", "-m", "32m", "busybox", "awk",
               'BEGIN { s = "x"; while (1) s = s s }')
    lesson.say("A fork bomb under --pids-limit 20: fork(2) fails with EAGAIN at 20; the host is fine.")
    lesson.run("minibox", "run", "--rm", "--pids-limit", "20", "--stats", "busybox", "sh", "-c",
               "bomb() { bomb | bomb & }; bomb 2>/dev/null; exec sleep 2")
    lesson.say("3 s of spinning under --cpus 0.5: the CFS quota allows 50 ms per 100 ms period.")
    lesson.run("minibox", "run", "--rm", "--cpus", "0.5", "--stats", "busybox", "sh", "-c", SPIN_3S)


if __name__ == "__main__":
    main()
