/* /proc/sysrq-trigger: one byte written here acts on the whole machine ('b' reboots it at
 * once, 'c' crashes it). The runtime makes it read-only. The probe only opens it for writing
 * and never writes. Stopped by: the read-only bind mount (EROFS). */
#include "probe.h"
#include <fcntl.h>
#include <unistd.h>

int main(void)
{
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0)
        blocked("open(/proc/sysrq-trigger, O_WRONLY)");
    close(fd);
    escaped("/proc/sysrq-trigger is open for writing (not written: 'b' would reboot the host)");
}
