/* reboot(2) as PID 1 of a PID namespace. Since Linux 3.4 the kernel does not reboot the
 * machine from a child PID namespace: it kills that namespace's init (exit status: killed by
 * SIGHUP), which is what an unprotected run shows. In the host's PID namespace the same call
 * restarts the machine, so the probe refuses to run unless it is PID 1 of a namespace.
 * Stopped by: no CAP_SYS_BOOT, and seccomp (EPERM). */
#include "probe.h"
#include <linux/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
    if (getpid() != 1) {
        printf("refusing: not PID 1 of a PID namespace, this could restart the machine\n");
        return 2;
    }
    printf("reboot(LINUX_REBOOT_CMD_RESTART) as PID 1 of this PID namespace...\n");
    fflush(stdout);
    syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0);
    blocked("reboot(LINUX_REBOOT_CMD_RESTART)");
}
