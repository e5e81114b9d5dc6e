/* /proc/sys is the kernel's tunables (kernel.core_pattern alone runs a program as host root).
 * The runtime mounts it read-only; with CAP_SYS_ADMIN a container simply remounts it
 * read-write. Proof without harm: write kernel.hostname, which belongs to the container's
 * own UTS namespace. Stopped by: no CAP_SYS_ADMIN, and seccomp refusing mount(2) (EPERM). */
#include "probe.h"
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

int main(void)
{
    const char *how = "/proc/sys was writable";
    int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
    if (fd < 0 && errno == EROFS) {
        if (mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL) != 0)
            blocked("mount(/proc/sys, MS_REMOUNT|MS_BIND) read-write");
        how = "remounted /proc/sys read-write";
        fd = open("/proc/sys/kernel/hostname", O_WRONLY);
    }
    if (fd < 0 || write(fd, "escaped", 7) != 7)
        blocked("write(/proc/sys/kernel/hostname)");
    escaped("%s and wrote kernel.hostname", how);
}
