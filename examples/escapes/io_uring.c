/* io_uring_setup(2) hands the caller a ring shared with the kernel, through which reads,
 * writes, sends, opens... run as kernel work, never passing through seccomp again. Its code
 * has been a steady source of kernel exploits (60% of the exploits submitted to Google's
 * kCTF VRP used it), so Docker 25 (moby#46762) and containerd block io_uring_setup, io_uring_enter and
 * io_uring_register. The probe only makes a ring of one entry and closes it.
 * Stopped by: seccomp (EPERM). A kernel without io_uring, or with kernel.io_uring_disabled=2,
 * says ENOSYS or EPERM even unprotected. */
#include "probe.h"
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
    /* struct io_uring_params: 120 bytes the kernel fills in; all zero asks for nothing. */
    unsigned char params[120] = {0};
    long ring = syscall(SYS_io_uring_setup, 1, params);
    if (ring < 0)
        blocked("io_uring_setup(1 entry)");
    close(ring);
    escaped("io_uring_setup(2) made a ring (fd %ld): the kernel's io_uring code is reachable",
            ring);
}
