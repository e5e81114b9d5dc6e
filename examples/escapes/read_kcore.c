/* /proc/kcore is the host's physical memory as an ELF core file: kernel memory, other
 * containers' secrets. Stopped by: masking (the runtime bind-mounts /dev/null over it, so it
 * reads as empty) and no CAP_SYS_RAWIO (EPERM on open). */
#include "probe.h"
#include <fcntl.h>
#include <unistd.h>

int main(void)
{
    int fd = open("/proc/kcore", O_RDONLY);
    if (fd < 0)
        blocked("open(/proc/kcore)");
    char header[4];
    if (read(fd, header, 4) != 4) {
        errno = ENODATA;
        blocked("read(/proc/kcore): masked, reads as empty");
    }
    if (memcmp(header, "\177ELF", 4) != 0) {
        errno = EINVAL;
        blocked("read(/proc/kcore): not the kernel's ELF image");
    }
    escaped("read the ELF header of the host's memory image /proc/kcore");
}
