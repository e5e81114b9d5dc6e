/* unshare(CLONE_NEWUSER) needs no capability at all, and the creator gets every capability
 * inside the new user namespace: root again, over whatever that namespace owns -- and a
 * door to kernel code that only root used to reach (many local exploits start here).
 * Stopped by: seccomp refusing unshare with namespace flags (EPERM). */
#include "probe.h"
#include <sched.h>

int main(void)
{
    if (unshare(CLONE_NEWUSER) != 0)
        blocked("unshare(CLONE_NEWUSER)");
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "CapEff:", 7) == 0)
            escaped("a new user namespace, with %s", strtok(line, "\n"));
    escaped("a new user namespace");
}
